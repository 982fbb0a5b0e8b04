"""Real photographs at the sizes people upload, straddling every threshold on the way: the data-URL
cut-off (DATA_URL_MAX_BYTES, 256 KiB), the webhook body limit (WEBHOOK_MAX_BODY_BYTES, 1 MiB), the
8 MiB single-request upload, up to a 12-megapixel photo of several MB. Each must complete by its
webhook alone: no reconciler run is made here, so a 413 or a lost correlation would time out.

The stack takes results from webhooks alone (RESULT_DELIVERY=webhook): with polling (`auto`, the
default) a large photo's early poll can settle it before its webhook, which is not what is tested
here; and offline the two would then both write a cut-out over 8 MiB, whose create-only
precondition the storage emulator ignores on resumable uploads (README, known differences)."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from tests.conftest import serving
from tests.support import StackClient, photo_near, twelve_megapixel_photo

KIB, MIB = 1024, 1024 * 1024
DATA_URL_CUTOFF = 256 * KIB
WEBHOOK_LIMIT = 1 * MIB
SINGLE_REQUEST = 8 * MIB

SIZES = [
    ("8KB", 8_000, "JPEG"),
    ("180KB", 180_000, "JPEG"),
    ("just-under-data-url-cutoff", 250_000, "JPEG"),
    ("just-over-data-url-cutoff", 275_000, "JPEG"),
    ("over-webhook-limit", 1_150_000, "JPEG"),
    ("just-under-single-request", 7_900_000, "PNG"),
    ("just-over-single-request", 8_800_000, "PNG"),
]


def _assert_cut_out(png: bytes) -> None:
    """Transparent top corners, opaque centre (the astronaut's suit and the coffee cup's table reach
    the bottom edge, which the model rightly keeps)."""
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.mode == "RGBA"
        image.draft("RGBA", (image.width // 4, image.height // 4))
        alpha = np.asarray(image.getchannel("A"))
    h, w = alpha.shape
    assert alpha[0, 0] < 20 and alpha[0, w - 1] < 20, (alpha[0, 0], alpha[0, w - 1])
    assert alpha[h // 2, w // 2] > 200, alpha[h // 2, w // 2]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackClient]:
    with serving(tmp_path_factory.mktemp("webhook-stack"), function_env={"RESULT_DELIVERY": "webhook"}) as client:
        yield client


def _photo(target: int, fmt: str) -> bytes:
    return twelve_megapixel_photo() if target == 0 else photo_near(target, fmt)


@pytest.mark.parametrize(("label", "target", "fmt"), [*SIZES, ("12-megapixel", 0, "JPEG")], ids=lambda v: str(v))
def test_real_photo_of_every_size_completes_by_its_webhook(
    stack: StackClient, label: str, target: int, fmt: str
) -> None:
    data = _photo(target, fmt)
    if label.startswith("just-under-data"):
        assert len(data) <= DATA_URL_CUTOFF
    if label.startswith("just-over-data"):
        assert DATA_URL_CUTOFF < len(data) < WEBHOOK_LIMIT
    if label == "over-webhook-limit":
        assert len(data) > WEBHOOK_LIMIT
    if label == "just-under-single-request":
        assert len(data) < SINGLE_REQUEST
    if label == "just-over-single-request":
        assert len(data) > SINGLE_REQUEST
    ext, content_type = ("png", "image/png") if fmt == "PNG" else ("jpg", "image/jpeg")
    name = f"sizes/{uuid.uuid4().hex[:8]}/{label}.{ext}"
    generation = stack.upload(name, data, content_type)

    job = stack.wait_job(name, generation, timeout=240)

    assert job["state"] == "completed", job
    assert not any("reconciler" in entry.get("why", "") for entry in job["history"]), job["history"]
    assert job["attempts"] == 1 and len(job["prediction_ids"]) == 1
    blob = stack.processed(job["output_name"])
    assert blob is not None and blob.generation == job["output_generation"]
    cutout = blob.download_as_bytes()
    with Image.open(io.BytesIO(data)) as original, Image.open(io.BytesIO(cutout)) as result:
        assert result.size == original.size
    _assert_cut_out(cutout)


def test_upload_over_the_pixel_limit_fails_before_any_prediction(stack: StackClient) -> None:
    """A 6000x5000 PNG of one colour is a few KB on the wire but 30 megapixels, over MAX_INPUT_PIXELS
    (25,000,000): the header says so, and no prediction is paid for."""
    buf = io.BytesIO()
    Image.new("RGB", (6000, 5000), (240, 240, 240)).save(buf, "PNG")
    before = stack.stats()["predictions_created"]
    name = f"sizes/{uuid.uuid4().hex[:8]}/huge.png"
    generation = stack.upload(name, buf.getvalue(), "image/png")

    job = stack.wait_job(name, generation)

    assert job["state"] == "failed" and job["reason"] == "too_many_pixels"
    assert "6000x5000 is 30000000 pixels, over MAX_INPUT_PIXELS (25000000)" in job["error"]
    assert job["prediction_ids"] == []
    assert stack.stats()["predictions_created"] == before
