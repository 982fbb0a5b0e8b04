"""Upload -> cut-out, through the real functions, emulator, relay and predictions service."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from google.cloud import storage

from tests.conftest import start_stack
from tests.support import StackClient, assert_cutout, photo


def _run_one(stack: StackClient, name: str, data: bytes, content_type: str) -> tuple[dict[str, Any], storage.Blob]:
    generation = stack.upload(name, data, content_type)
    job = stack.wait_job(name, generation)
    assert job["state"] == "completed", job
    blob = stack.processed(job["output_name"])
    assert blob is not None
    return job, blob


def _input_of(stack: StackClient, prediction_id: str) -> str:
    image = stack.api("GET", f"/v1/predictions/{prediction_id}").json()["input"]["image"]
    assert isinstance(image, str), image
    return image


def test_small_jpeg_goes_as_data_url_and_comes_back_as_transparent_png(stack: StackClient) -> None:
    name = f"e2e/{uuid.uuid4().hex}/coffee.jpg"
    data = photo("coffee", "JPEG", (300, 200))
    job, blob = _run_one(stack, name, data, "image/jpeg")

    assert job["output_name"] == name.removesuffix(".jpg") + ".png"
    assert blob.content_type == "image/png"
    assert job["output_generation"] == blob.generation
    assert blob.metadata == {
        "bgremove-output": "true",
        "bgremove-source": f"gs://{stack.info.upload_bucket}/{name}",
        "bgremove-source-generation": str(job["source"]["generation"]),
        "bgremove-job": job["job_id"],
        "bgremove-prediction-id": job["prediction_ids"][-1],
        "bgremove-model-version": job["model_version"],
        "bgremove-variant": "cutout",
    }
    assert_cutout(blob.download_as_bytes())
    assert _input_of(stack, job["prediction_ids"][-1]).startswith("data:image/jpeg;base64,")


def test_large_png_goes_as_signed_url_and_comes_back_as_transparent_png(stack: StackClient) -> None:
    name = f"e2e/{uuid.uuid4().hex}/coffee.png"
    data = photo("coffee", "PNG")
    assert len(data) > 256 * 1024  # over DATA_URL_MAX_BYTES, so `auto` signs a URL
    job, blob = _run_one(stack, name, data, "image/png")

    assert_cutout(blob.download_as_bytes())
    image_input = _input_of(stack, job["prediction_ids"][-1])
    assert image_input.startswith(stack.info.storage_emulator_host + f"/{stack.info.upload_bucket}/")
    assert "X-Goog-Signature=" in image_input and "X-Goog-Algorithm=GOOG4-RSA-SHA256" in image_input


@pytest.fixture(scope="module")
def proxy_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackClient]:
    """A stack whose pipeline talks to the predictions API under a proxy-style prefix, and always
    sends signed URLs."""
    running = start_stack(
        tmp_path_factory.mktemp("proxy-stack"), api_prefix="/replicate/v1", function_env={"INPUT_MODE": "signed_url"}
    )
    try:
        assert running.info is not None
        yield StackClient(running.info)
    finally:
        running.stop()


def test_proxy_style_base_url_prefix_works_end_to_end(proxy_stack: StackClient) -> None:
    assert proxy_stack.info.predictions_base_url.endswith("/replicate/v1")
    name = f"e2e/{uuid.uuid4().hex}/coffee.webp"
    job, blob = _run_one(proxy_stack, name, photo("coffee", "WEBP"), "image/webp")

    assert_cutout(blob.download_as_bytes())
    image_input = _input_of(proxy_stack, job["prediction_ids"][-1])
    assert "X-Goog-Signature=" in image_input  # INPUT_MODE=signed_url, even for a small file
