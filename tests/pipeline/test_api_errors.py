"""How the upload side meets the predictions API's errors: transient ones are retried in the call
(honouring Retry-After) and then handed back to Eventarc; permanent ones end in a failure record."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from bgremove import naming
from bgremove.predictions import PredictionsClient, TransientError
from tests.conftest import start_stack
from tests.support import StackClient, photo, wait_for

MODEL_VERSION = "95fcc2a26d3899cd6c2691c900465aaeff466285a65c14638cc5f36f34befaf1"


def test_client_honours_retry_after_then_gives_up_with_a_transient_error(
    faults: StackClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = faults
    stack.set_faults(create_429_rate=1.0, retry_after_seconds=1)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", stack.info.ca_bundle)  # as the functions trust the stack's CA
    slept: list[float] = []
    client = PredictionsClient(
        stack.info.predictions_base_url, stack.info.api_token, max_attempts=3, sleep=slept.append
    )
    before = stack.stats()["faults"].get("create_429", 0)

    with pytest.raises(TransientError, match="429"):
        client.create(MODEL_VERSION, "data:image/png;base64,AAAA", stack.info.webhook_url)

    assert slept == [1.0, 1.0]  # the whole-second Retry-After the service sends
    assert stack.stats()["faults"]["create_429"] - before == 3


@pytest.mark.parametrize(("knob", "status"), [("create_5xx_rate", 503), ("create_429_rate", 429)])
def test_unavailable_or_throttled_api_becomes_the_tasks_retry_until_it_recovers(
    faults: StackClient, knob: str, status: int
) -> None:
    stack = faults
    stack.set_faults(**{knob: 1.0})
    name = f"api-{status}/{uuid.uuid4().hex}.jpg"
    generation = stack.upload(name, photo("coffee", "JPEG", (120, 80)), "image/jpeg")
    job_id = naming.job_id(stack.info.upload_bucket, name, generation)
    # The task handler makes one call, answers 503 (or 429, which also slows the queue), and the
    # queue retries the task; the upload event itself was answered at once.
    failed = wait_for(
        lambda: next((r for r in stack.tasks_log(stack.info.submit_queue) if job_id in r["task"]), None),
        30,
        "a failed dispatch",
    )
    assert failed["status"] == status
    job = stack.job(stack.info.upload_bucket, name, generation)
    assert job is not None and job["state"] == "queued" and job["attempts"] == 0  # released, not failed
    stack.set_faults(**{knob: 0.0})

    final = stack.wait_job(name, generation)

    assert final["state"] == "completed" and final["attempts"] == 1
    delivered = stack.final_deliveries(f"objects/{name}")
    assert delivered[0]["result"] == "delivered" and delivered[0]["outcomes"] == ["200"]


@pytest.fixture(scope="module")
def misconfigured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackClient]:
    running = start_stack(
        tmp_path_factory.mktemp("bad-token-stack"), function_env={"PREDICTIONS_API_TOKEN": "r8_not_the_token"}
    )
    try:
        assert running.info is not None
        yield StackClient(running.info)
    finally:
        running.stop()


def test_rejected_token_ends_in_a_failure_record_without_retries(misconfigured: StackClient) -> None:
    stack = misconfigured
    name = f"api-401/{uuid.uuid4().hex}.jpg"
    generation = stack.upload(name, photo("coffee", "JPEG", (120, 80)), "image/jpeg")

    job = stack.wait_job(name, generation)

    assert job["state"] == "failed" and job["reason"] == "api_401"
    assert stack.stats()["predictions_created"] == 0
    delivered = wait_for(lambda: stack.final_deliveries(f"objects/{name}"), 30, "the delivery")
    assert delivered[0]["outcomes"] == ["200"]  # answered once: a retry cannot fix a bad token
