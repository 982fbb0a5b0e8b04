"""What no webhook will settle is settled by the job's deadline check (a delayed task on the
deadline queue), and by the sweep when even that is missing: dropped webhooks, expired outputs and
claims left by a killed task handler."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from bgremove import jobs, naming
from tests.conftest import start_stack
from tests.support import StackClient, photo, wait_for

MODEL_VERSION = "95fcc2a26d3899cd6c2691c900465aaeff466285a65c14638cc5f36f34befaf1"


@pytest.fixture(scope="module")
def rstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackClient]:
    """A stack whose jobs become overdue after a second, with outputs that expire after 4 s."""
    running = start_stack(
        tmp_path_factory.mktemp("reconcile-stack"),
        output_ttl_seconds=4.0,
        function_env={"RECONCILE_AFTER_SECONDS": "1", "CLAIM_TTL_SECONDS": "2"},
    )
    try:
        assert running.info is not None
        yield StackClient(running.info)
    finally:
        running.stop()


@pytest.fixture
def rfaults(rstack: StackClient) -> Iterator[StackClient]:
    yield rstack
    rstack.api("DELETE", "/_admin/faults").raise_for_status()


def reconcile(stack: StackClient) -> dict[str, Any]:
    answer = requests.post(stack.info.reconcile_url, timeout=60)
    assert answer.status_code == 200, answer.text
    summary = answer.json()
    assert isinstance(summary, dict), summary
    return summary


def _submitted_with_dropped_webhook(stack: StackClient) -> tuple[str, int, dict[str, Any]]:
    stack.set_faults(webhook_drop_rate=1.0)
    name = f"reconcile/{uuid.uuid4().hex}.jpg"
    generation = stack.upload(name, photo("coffee", "JPEG", (150, 100)), "image/jpeg")
    job = stack.wait_job(name, generation, ("submitted",))
    prediction_id = job["prediction_ids"][-1]
    wait_for(
        lambda: stack.api("GET", f"/v1/predictions/{prediction_id}").json()["status"] == "succeeded",
        60,
        "the prediction to succeed",
    )
    assert stack.stats()["faults"]["webhooks_dropped"] >= 1
    return name, generation, job


def _deadline_checks(stack: StackClient, job_id: str) -> list[dict[str, Any]]:
    return [r for r in stack.tasks_log(stack.info.deadline_queue) if f"/tasks/{job_id}-d" in r["task"]]


def test_dropped_webhook_is_settled_by_its_deadline_check(rfaults: StackClient) -> None:
    stack = rfaults
    name, generation, job = _submitted_with_dropped_webhook(stack)

    final = stack.wait_job(name, generation, timeout=60)  # no sweep is run here

    assert final["state"] == "completed" and final["attempts"] == 1
    output = stack.processed(final["output_name"])
    assert output is not None and output.metadata["bgremove-prediction-id"] == job["prediction_ids"][-1]
    checks = _deadline_checks(stack, job["job_id"])
    assert checks and checks[0]["status"] == 200


def test_dropped_webhook_and_lost_deadline_check_are_settled_by_the_sweep(rfaults: StackClient) -> None:
    stack = rfaults
    stack.pause_queue(stack.info.deadline_queue)  # the check never runs: only the sweep is left
    try:
        name, generation, job = _submitted_with_dropped_webhook(stack)
        time.sleep(max(0.0, job["deadline_at"] - time.time()) + 0.1)

        report = reconcile(stack)

        assert report["outcomes"].get("settled_completed", 0) >= 1
        final = stack.job(stack.info.upload_bucket, name, generation)
        assert final is not None and final["state"] == "completed" and final["attempts"] == 1
    finally:
        stack.resume_queue(stack.info.deadline_queue)


def test_expired_output_is_resubmitted_through_the_queue_and_then_completed(rfaults: StackClient) -> None:
    stack = rfaults
    stack.pause_queue(stack.info.deadline_queue)
    try:
        name, generation, job = _submitted_with_dropped_webhook(stack)
        prediction_id = job["prediction_ids"][-1]
        wait_for(
            lambda: stack.api("GET", f"/v1/predictions/{prediction_id}").json()["data_removed"],
            30,
            "the output to expire",
        )
        stack.set_faults(webhook_drop_rate=0.0)

        report = reconcile(stack)

        assert report["outcomes"].get("requeued", 0) >= 1
        final = stack.wait_job(name, generation)
        assert final["state"] == "completed" and final["attempts"] == 2 and final["enqueues"] == 2
        assert final["prediction_ids"][0] == prediction_id and len(final["prediction_ids"]) == 2
        submissions = [r for r in stack.tasks_log(stack.info.submit_queue) if job["job_id"] in r["task"]]
        assert {r["task"].rsplit("/", 1)[1] for r in submissions} == {f"{job['job_id']}-s1", f"{job['job_id']}-s2"}
    finally:
        stack.resume_queue(stack.info.deadline_queue)


def test_claim_left_by_a_killed_task_handler_is_settled_by_the_sweep(rstack: StackClient) -> None:
    stack = rstack
    # What a task handler killed between claiming and creating its prediction leaves behind once its
    # task is gone: the upload, the job listed as open, and a claim whose lease has run out.
    name = f"killed/{uuid.uuid4().hex}.jpg"
    generation = stack.upload(name, photo("coffee", "JPEG", (150, 100)), "text/plain")  # the trigger skips it
    source = jobs.Source(stack.info.upload_bucket, name, generation, "image/jpeg", 1)
    claim = jobs.claim(jobs.new_queued(source, MODEL_VERSION, time.time() - 60, 3600), time.time() - 60, 2, "task")
    bucket = stack.gcs.bucket(stack.info.state_bucket)
    index = bucket.blob(naming.open_index_name(claim.job_id))
    index.metadata = {"created_at": str(claim.created_at)}
    index.upload_from_string("{}", if_generation_match=0)
    bucket.blob(naming.job_record_name(claim.job_id)).upload_from_string(
        json.dumps(claim.to_json()), if_generation_match=0
    )

    report = reconcile(stack)

    assert report["outcomes"].get("requeued", 0) >= 1
    final = stack.wait_job(name, generation)
    assert final["state"] == "completed" and final["attempts"] == 1
    assert "reconciler: claim expired" in [h.get("why") for h in final["history"]]
    assert bucket.get_blob(naming.open_index_name(claim.job_id)) is None  # unlisted once final


def test_reconciler_leaves_jobs_that_are_not_due_alone(rstack: StackClient) -> None:
    name = f"fresh/{uuid.uuid4().hex}.jpg"
    generation = rstack.upload(name, photo("coffee", "JPEG", (150, 100)), "image/jpeg")
    done = rstack.wait_job(name, generation)

    reconcile(rstack)

    again = rstack.job(rstack.info.upload_bucket, name, generation)
    assert again == done


def test_reconciler_answers_only_post(rstack: StackClient) -> None:
    assert requests.get(rstack.info.reconcile_url, timeout=10).status_code == 405
