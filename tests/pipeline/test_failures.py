"""What cannot be processed ends in a failure record (or a logged skip), never in silence."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import requests

from offline_cloud.client import cloud_event_headers
from tests.support import StackClient, photo, wait_for


def test_failed_prediction_leaves_a_failure_record_and_no_output(faults: StackClient) -> None:
    stack = faults
    stack.set_faults(fail_rate=1.0)
    name = f"fail/{uuid.uuid4().hex}.jpg"
    generation = stack.upload(name, photo("coffee", "JPEG", (120, 80)), "image/jpeg")

    job = stack.wait_job(name, generation)

    assert job["state"] == "failed"
    assert job["reason"] == "prediction_failed"
    assert job["error"] == "injected failure"
    assert stack.processed(name.removesuffix(".jpg") + ".png") is None
    assert stack.gcs.bucket(stack.info.upload_bucket).get_blob(name) is not None  # original untouched


def test_non_image_upload_is_skipped_without_a_prediction(stack: StackClient) -> None:
    created_before = stack.stats()["predictions_created"]
    name = f"skip/{uuid.uuid4().hex}.txt"
    generation = stack.upload(name, b"just some notes\n", "text/plain")

    delivered = wait_for(lambda: stack.final_deliveries(f"objects/{name}"), 30, "the event delivery")

    assert delivered[0]["result"] == "delivered"
    assert stack.job(stack.info.upload_bucket, name, generation) is None
    assert stack.stats()["predictions_created"] == created_before
    log = Path(stack.info.logs["function-trigger"]).read_text()
    assert f'"object": "gs://{stack.info.upload_bucket}/{name}"' in log
    assert "is not in ALLOWED_CONTENT_TYPES" in log


def test_content_type_that_lies_about_the_bytes_ends_in_a_failure_record(stack: StackClient) -> None:
    created_before = stack.stats()["predictions_created"]
    name = f"liar/{uuid.uuid4().hex}.png"
    generation = stack.upload(name, b"%PDF-1.7 definitely not a png" * 10, "image/png")

    job = stack.wait_job(name, generation)

    assert job["state"] == "failed" and job["reason"] == "not_an_image"
    assert stack.stats()["predictions_created"] == created_before


def test_event_older_than_the_maximum_age_ends_in_a_failure_record_not_a_retry(stack: StackClient) -> None:
    name = f"stale/{uuid.uuid4().hex}.jpg"
    generation = stack.upload(name, photo("coffee", "JPEG", (120, 80)), "text/plain")  # the trigger skips it
    blob = stack.gcs.bucket(stack.info.upload_bucket).get_blob(name)
    data = {**blob._properties, "contentType": "image/jpeg"}
    headers = cloud_event_headers("stale-1", stack.info.upload_bucket, name)
    headers["ce-time"] = "2020-01-01T00:00:00Z"  # far beyond MAX_EVENT_AGE_SECONDS
    created_before = stack.stats()["predictions_created"]

    answer = requests.post(stack.info.trigger_url, data=json.dumps(data), headers=headers, timeout=30)

    assert answer.status_code == 200  # answered, so the platform stops retrying
    job = stack.job(stack.info.upload_bucket, name, generation)
    assert job is not None and job["state"] == "failed" and job["reason"] == "event_too_old"
    assert stack.stats()["predictions_created"] == created_before
