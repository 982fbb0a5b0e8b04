"""Duplicates have no second effect: the same CloudEvent or webhook delivered again changes nothing."""

from __future__ import annotations

import base64
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from bgremove import jobs, naming
from bgremove.submit import webhook_url_for
from offline_cloud.client import cloud_event_headers
from tests.support import StackClient, photo, post_webhook, wait_for

MODEL_VERSION = "95fcc2a26d3899cd6c2691c900465aaeff466285a65c14638cc5f36f34befaf1"


def test_same_cloud_event_delivered_three_times_creates_one_prediction(stack: StackClient) -> None:
    name = f"dup-event/{uuid.uuid4().hex}.jpg"
    # Upload outside the trigger's view first: the relay delivers it once; we then replay the very
    # same event (same id, same data) twice more, concurrently, as at-least-once delivery may.
    generation = stack.upload(name, photo("coffee", "JPEG", (120, 80)), "image/jpeg")
    first = stack.wait_job(name, generation)
    delivered = stack.final_deliveries(f"objects/{name}")
    assert len(delivered) == 1 and delivered[0]["result"] == "delivered"
    blob = stack.gcs.bucket(stack.info.upload_bucket).get_blob(name)
    data = json.dumps(blob._properties).encode()
    headers = cloud_event_headers(delivered[0]["id"], stack.info.upload_bucket, name)
    created_before = stack.stats()["predictions_created"]

    with ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(lambda _: requests.post(stack.info.trigger_url, data=data, headers=headers, timeout=30), range(2))
        )

    assert [a.status_code for a in answers] == [200, 200]
    assert stack.stats()["predictions_created"] == created_before
    job = stack.job(stack.info.upload_bucket, name, generation)
    assert job is not None and job["prediction_ids"] == first["prediction_ids"] and job["attempts"] == 1


def test_same_webhook_delivered_three_times_writes_once(stack: StackClient) -> None:
    name = f"dup-webhook/{uuid.uuid4().hex}.jpg"
    generation = stack.upload(name, photo("coffee", "JPEG", (120, 80)), "image/jpeg")
    job = stack.wait_job(name, generation)
    assert job["state"] == "completed"
    output = stack.processed(job["output_name"])
    assert output is not None
    prediction = stack.api("GET", f"/v1/predictions/{job['prediction_ids'][-1]}").json()
    body = json.dumps(prediction).encode()

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda i: post_webhook(stack.info, body, f"msg_dup_{i}", job=job["job_id"]), range(3)))

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert {a.json()["message"] for a in answers} == {"duplicate"}
    again = stack.processed(job["output_name"])
    assert again is not None and again.generation == output.generation
    final = stack.job(stack.info.upload_bucket, name, generation)
    assert final is not None and [h["state"] for h in final["history"]].count("completed") == 1


def test_webhook_arriving_before_the_submission_is_recorded_still_completes_the_job(stack: StackClient) -> None:
    # Reproduce the race deterministically: a job that is only `claimed` (the submitter has not yet
    # recorded its prediction), and a prediction created for it whose webhook then arrives. The API
    # does not echo `webhook`, so the webhook cannot confirm the job yet: it answers 503, and the
    # API's retry completes the job once the submitter has recorded the prediction id.
    name = f"race/{uuid.uuid4().hex}.jpg"
    generation = stack.upload(name, photo("coffee", "JPEG", (120, 80)), "text/plain")  # skipped by the trigger
    source = jobs.Source(stack.info.upload_bucket, name, generation, "image/jpeg", 1)
    claim = jobs.new_claim(source, MODEL_VERSION, 0, 600)
    record = stack.gcs.bucket(stack.info.state_bucket).blob(naming.job_record_name(claim.job_id))
    record.upload_from_string(json.dumps(claim.to_json()), if_generation_match=0)
    image = stack.gcs.bucket(stack.info.upload_bucket).blob(name).download_as_bytes()
    created = stack.api(
        "POST",
        "/v1/predictions",
        json={
            "version": claim.model_version,
            "input": {"image": "data:image/jpeg;base64," + base64.b64encode(image).decode()},
            "webhook": webhook_url_for(stack.info.webhook_url, claim.job_id),
            "webhook_events_filter": ["completed"],
        },
    )
    assert created.status_code == 201
    prediction_id = created.json()["id"]

    def first_attempt() -> dict[str, Any] | None:
        deliveries: list[dict[str, Any]] = stack.stats()["webhook_deliveries"]
        for delivery in deliveries:
            if delivery["prediction_id"] == prediction_id and delivery["event"] == "completed":
                return delivery
        return None

    early = wait_for(first_attempt, 60, "the first webhook attempt")
    assert early["status_code"] == 503  # not yet recorded: the sender is asked to retry
    claimed = stack.job(stack.info.upload_bucket, name, generation)
    assert claimed is not None and claimed["state"] == "claimed"
    # The submitter records its prediction now, as submit_job does right after the create.
    loaded = stack.gcs.bucket(stack.info.state_bucket).get_blob(naming.job_record_name(claim.job_id))
    recorded = jobs.submitted(claim, prediction_id, time.time(), 900)
    loaded.upload_from_string(json.dumps(recorded.to_json()), if_generation_match=loaded.generation)

    job = stack.wait_job(name, generation)
    assert job["state"] == "completed"
    assert job["prediction_ids"] == [prediction_id]
    assert stack.processed(job["output_name"]) is not None


def test_end_of_a_superseded_prediction_does_not_decide_the_job(stack: StackClient) -> None:
    # A job the reconciler resubmitted: its first prediction was replaced (and canceled).
    name = f"superseded/{uuid.uuid4().hex}.jpg"
    source = jobs.Source(stack.info.upload_bucket, name, 1, "image/jpeg", 1)
    job = jobs.new_claim(source, MODEL_VERSION, time.time(), 600)
    job = jobs.submitted(jobs.submitted(job, "p_old", time.time(), 600), "p_new", time.time(), 600)
    blob = stack.gcs.bucket(stack.info.state_bucket).blob(naming.job_record_name(job.job_id))
    blob.upload_from_string(json.dumps(job.to_json()), if_generation_match=0)
    webhook = webhook_url_for(stack.info.webhook_url, job.job_id)

    def deliver(pid: str, status: str) -> requests.Response:
        body = {"id": pid, "status": status, "version": MODEL_VERSION, "webhook": webhook, "error": "canceled"}
        return post_webhook(stack.info, json.dumps(body).encode(), f"msg_{pid}")

    old = deliver("p_old", "canceled")
    assert (old.status_code, old.json()["message"]) == (200, "ignored")
    ignored = stack.job(stack.info.upload_bucket, name, 1)
    assert ignored is not None and ignored["state"] == "submitted"

    current = deliver("p_new", "failed")
    assert (current.status_code, current.json()["message"]) == (200, "failed")
    failed = stack.job(stack.info.upload_bucket, name, 1)
    assert failed is not None and failed["reason"] == "prediction_failed"
