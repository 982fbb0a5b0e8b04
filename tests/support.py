"""Helpers shared by the tests that run against the offline stack."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import requests
from google.cloud import storage
from PIL import Image

from offline_cloud.client import storage_client, webhook_headers
from offline_cloud.stack import StackInfo
from tests.photos import sample

T = TypeVar("T")


class StackClient:
    """What a test needs to drive a running stack through its real wire protocols."""

    def __init__(self, info: StackInfo) -> None:
        self.info = info
        self.gcs = storage_client(info)
        self.http = requests.Session()

    # storage
    def upload(self, name: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None) -> int:
        blob = self.gcs.bucket(self.info.upload_bucket).blob(name)
        blob.metadata = metadata
        blob.upload_from_string(data, content_type=content_type)
        return int(blob.generation)

    def processed(self, name: str) -> storage.Blob | None:
        return self.gcs.bucket(self.info.processed_bucket).get_blob(name)

    def processed_names(self) -> list[str]:
        return [b.name for b in self.gcs.list_blobs(self.info.processed_bucket)]

    def job(self, bucket: str, name: str, generation: int) -> dict[str, Any] | None:
        from bgremove import naming

        blob = self.gcs.bucket(self.info.state_bucket).get_blob(
            naming.job_record_name(naming.job_id(bucket, name, generation))
        )
        return json.loads(blob.download_as_bytes()) if blob else None

    def wait_job(
        self, name: str, generation: int, states: tuple[str, ...] = ("completed", "failed"), timeout: float = 60
    ) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            job = self.job(self.info.upload_bucket, name, generation)
            return job if job and job["state"] in states else None

        return wait_for(final, timeout, f"job for {name} to reach {states}")

    # predictions service
    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.info.api_token}", **kwargs.pop("headers", {})}
        url = self.info.predictions_service_url + path
        # verify per request: a session-level value loses to REQUESTS_CA_BUNDLE from the environment.
        return self.http.request(method, url, headers=headers, timeout=30, verify=self.info.ca_bundle, **kwargs)

    def set_faults(self, **knobs: Any) -> None:
        self.api("POST", "/_admin/faults", json=knobs).raise_for_status()

    def stats(self) -> dict[str, Any]:
        stats = self.api("GET", "/_admin/stats").json()
        assert isinstance(stats, dict), stats
        return stats

    # cloud tasks
    def tasks_log(self, queue: str = "") -> list[dict[str, Any]]:
        """The Cloud Tasks emulator's dispatch records (of one queue, or all)."""
        params: dict[str, str | int] = {"queue": queue, "limit": 100000} if queue else {"limit": 100000}
        answer = requests.get(self.info.tasks_admin_url + "/log", params=params, timeout=10).json()
        return list(answer if isinstance(answer, list) else answer.get("log", []))

    def pause_queue(self, queue: str) -> None:
        from offline_cloud import cloud_tasks

        cloud_tasks.client(self.info.tasks_endpoint).pause_queue(name=queue)

    def resume_queue(self, queue: str) -> None:
        from offline_cloud import cloud_tasks

        cloud_tasks.client(self.info.tasks_endpoint).resume_queue(name=queue)

    # eventarc relay
    def deliveries(self) -> list[dict[str, Any]]:
        log = requests.get(self.info.relay_admin_url + "/deliveries", timeout=10).json()["log"]
        assert isinstance(log, list), log
        return log

    def final_deliveries(self, subject: str) -> list[dict[str, Any]]:
        return [d for d in self.deliveries() if d["kind"] == "final" and d["subject"] == subject]


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def photo(name: str, fmt: str = "JPEG", size: tuple[int, int] | None = None) -> bytes:
    """A real photograph from skimage.data, encoded as `fmt`."""
    image = Image.fromarray(sample(name)).convert("RGB")
    if size:
        image = image.resize(size)
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def assert_cutout(png: bytes) -> None:
    """An RGBA PNG whose corners are transparent and whose centre is opaque."""
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    assert image.mode == "RGBA"
    alpha = np.asarray(image)[:, :, 3]
    h, w = alpha.shape
    for y, x in ((0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)):
        assert alpha[y, x] < 20, f"corner {(y, x)} alpha {alpha[y, x]}"
    assert alpha[h // 2, w // 2] > 200, f"centre alpha {alpha[h // 2, w // 2]}"


def post_webhook(
    info: StackInfo, body: bytes, webhook_id: str = "msg_test", timestamp: int | None = None, job: str = ""
) -> requests.Response:
    """Deliver `body` to the webhook function, signed with the stack's secret as the API would, at
    the URL the pipeline gave the API for `job` (`?job=<id>`), or the bare URL without one."""
    from bgremove.submit import webhook_url_for

    headers = webhook_headers(info.webhook_secret, body, webhook_id, timestamp)
    url = webhook_url_for(info.webhook_url, job) if job else info.webhook_url
    return requests.post(url, data=body, headers=headers, timeout=30)


def photo_near(target_bytes: int, fmt: str = "JPEG", noise: float = 3.0, name: str = "astronaut") -> bytes:
    """A real photograph, resized (4:3) and given mild sensor-like noise, whose encoding is within
    3 % of `target_bytes`: the size is found by bisecting the width."""
    source = Image.fromarray(sample(name)).convert("RGB")
    rng = np.random.default_rng(target_bytes)

    def encode(width: int) -> bytes:
        image = source.resize((width, width * 3 // 4), Image.Resampling.LANCZOS)
        pixels = np.asarray(image).astype(np.float32) + rng.normal(0.0, noise, (width * 3 // 4, width, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, fmt, quality=90)
        return buf.getvalue()

    low, high = 16, 6000
    best = encode(low)
    for _ in range(24):
        width = (low + high) // 2
        best = encode(width)
        if abs(len(best) - target_bytes) <= target_bytes * 0.03:
            return best
        if len(best) < target_bytes:
            low = width + 1
        else:
            high = width - 1
    raise AssertionError(f"no {fmt} photo within 3% of {target_bytes} bytes (last {len(best)})")


def twelve_megapixel_photo() -> bytes:
    """A 4000x3000 JPEG of a real photo with sensor-like noise: several MB, like a phone's."""
    image = Image.fromarray(sample("coffee")).convert("RGB").resize((4000, 3000), Image.Resampling.LANCZOS)
    pixels = np.asarray(image).astype(np.float32) + np.random.default_rng(12).normal(0.0, 8.0, (3000, 4000, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()
