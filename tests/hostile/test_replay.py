"""Genuine signed deliveries replayed where they do not belong, through the real webhook function.

The service does not echo `webhook` in its bodies (its default, as Replicate's published schema), so
a delivery names its job only by the request's own `?job=<id>`, which the signature does not cover:
anyone holding one captured delivery can send it to any job's URL within the 300-second window.
The handler takes that id as a hint only: the signed prediction id must be one the job has recorded
(a job still `claimed` answers 503, its submitter may be about to record it). So a replay to
another job's URL settles nothing, whatever that job's state; and a body that does carry the signed
echo is settled for the job the echo names, never the one in the URL.

"A" is the job whose genuine delivery is replayed, "B" the job whose URL it is sent to. A and B are
real jobs (their real webhooks dropped) except in the window cases, where B's record is written by
hand as the submitter would have left it (see tests/pipeline/test_idempotency.py).
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from bgremove import jobs, naming
from bgremove.submit import webhook_url_for
from tests.hostile.support import JobPool, LogCursor, PendingJob, assert_no_output, deliver, signed_headers, webhook_log
from tests.support import StackClient, photo

NOT_ONE_OF = "prediction id is not one of the job's"
NOT_YET_RECORDED = "webhook for a prediction its job has not recorded yet; asking for a retry"
RETRY_LATER = "webhook not settled yet; sender will retry"
MISMATCH_ANSWER = {"status": 409, "message": "mismatch"}
RETRY_ANSWER = {"status": 503, "message": "try again later"}


@pytest.fixture(scope="module")
def a(job_pool: JobPool) -> PendingJob:
    """The job whose genuine delivery is replayed elsewhere; every case leaves it untouched."""
    return job_pool.take()


@pytest.fixture(scope="module")
def b(job_pool: JobPool) -> PendingJob:
    """A submitted job whose URL the replays are sent to; every case leaves it untouched."""
    return job_pool.take()


# --- what a case may (not) have changed ---------------------------------------------------------


def _record_blob(stack: StackClient, job_id: str) -> Any:
    blob = stack.gcs.bucket(stack.info.state_bucket).get_blob(naming.job_record_name(job_id))
    assert blob is not None, f"no record for job {job_id}"
    return blob


def _record_generation(stack: StackClient, job_id: str) -> int:
    return int(_record_blob(stack, job_id).generation)


def _outputs_of(stack: StackClient, job_id: str) -> dict[str, int]:
    """Every object in the processed bucket written for `job_id`, with its generation."""
    return {
        blob.name: int(blob.generation)
        for blob in stack.gcs.list_blobs(stack.info.processed_bucket)
        if (blob.metadata or {}).get("bgremove-job") == job_id
    }


@dataclass(frozen=True)
class Snapshot:
    """A job's record generation and its outputs: equal before and after means nothing written."""

    record_generation: int
    outputs: dict[str, int]

    @classmethod
    def of(cls, stack: StackClient, job_id: str) -> Snapshot:
        return cls(_record_generation(stack, job_id), _outputs_of(stack, job_id))


def _never_named(log: LogCursor, job_id: str) -> None:
    """No log line since `log` was made is about `job_id`: the handler never looked at that job."""
    named = [entry["message"] for entry in log.entries() if entry.get("job_id") == job_id]
    assert named == [], f"log lines about job {job_id}: {named}"


def _delivered_to(stack: StackClient, body: bytes, headers: dict[str, str], job_id: str) -> Any:
    return deliver(stack.info, body, headers=headers, job=job_id)


# --- (a) another job's URL, that job waiting for its webhook ------------------------------------


def test_genuine_body_replayed_to_a_submitted_jobs_url_is_refused_with_409(
    main_stack: StackClient, a: PendingJob, b: PendingJob
) -> None:
    body = a.body()  # byte for byte what the API sent for A (no `webhook` echo)
    before_a, before_b = Snapshot.of(main_stack, a.job_id), Snapshot.of(main_stack, b.job_id)
    log = webhook_log(main_stack.info)

    answer = deliver(main_stack.info, body, job=b.job_id)

    assert (answer.status_code, answer.json()) == (409, MISMATCH_ANSWER)
    entry = log.find(NOT_ONE_OF, outcome="mismatch", job_id=b.job_id, prediction_id=a.prediction["id"])
    assert entry["severity"] == "WARNING"
    _never_named(log, a.job_id)
    assert Snapshot.of(main_stack, b.job_id) == before_b
    assert Snapshot.of(main_stack, a.job_id) == before_a
    b.assert_untouched()
    a.assert_untouched()


# --- (b) another job's URL, that job already settled --------------------------------------------


@pytest.mark.parametrize("settled", ["completed", "failed"])
def test_genuine_body_replayed_to_a_settled_jobs_url_changes_nothing(
    main_stack: StackClient, job_pool: JobPool, a: PendingJob, settled: str
) -> None:
    # The hint is confirmed before the job's state is looked at: a settled job answers the same 409
    # as an open one, not a 200 `duplicate` (which would also have changed nothing).
    target = job_pool.take(succeeded=settled == "completed")
    own = target.deliver(target.body())
    assert (own.status_code, own.json()["message"]) == (200, settled)
    assert target.record()["state"] == settled
    before_a, before_b = Snapshot.of(main_stack, a.job_id), Snapshot.of(main_stack, target.job_id)
    assert len(before_b.outputs) == (1 if settled == "completed" else 0)
    log = webhook_log(main_stack.info)

    answer = deliver(main_stack.info, a.body(), job=target.job_id)

    assert (answer.status_code, answer.json()) == (409, MISMATCH_ANSWER)
    entry = log.find(NOT_ONE_OF, outcome="mismatch", job_id=target.job_id, prediction_id=a.prediction["id"])
    assert entry["severity"] == "WARNING"
    _never_named(log, a.job_id)
    assert Snapshot.of(main_stack, target.job_id) == before_b
    assert Snapshot.of(main_stack, a.job_id) == before_a
    assert target.record()["state"] == settled
    a.assert_untouched()


# --- (c) another job's URL, in the window before its submitter records its prediction ------------


@dataclass
class HandMadeJob:
    """A job record written directly in the state bucket, for an upload the trigger skipped."""

    stack: StackClient
    source: jobs.Source

    @property
    def job_id(self) -> str:
        return self.source.job_id

    def load(self) -> tuple[jobs.Job, int]:
        blob = _record_blob(self.stack, self.job_id)
        return jobs.Job.from_json(json.loads(blob.download_as_bytes())), int(blob.generation)

    def write(self, job: jobs.Job, if_generation_match: int) -> int:
        """As JobStore.save writes it: conditional, with state and due time in the metadata."""
        blob = self.stack.gcs.bucket(self.stack.info.state_bucket).blob(naming.job_record_name(self.job_id))
        blob.metadata = {"state": job.state, "due_at": f"{job.due_at:.3f}"}
        blob.upload_from_string(
            json.dumps(job.to_json()), content_type="application/json", if_generation_match=if_generation_match
        )
        return int(blob.generation)

    def output_name(self) -> str:
        return naming.output_name(self.source.name, "")


def _claimed_job(stack: StackClient, model_version: str) -> tuple[HandMadeJob, int]:
    """A job `claimed` with no prediction ids: its submitter is between creating the prediction and
    recording its id. The upload is declared text/plain, so the trigger skips it and makes no job."""
    name = f"replay-window/{uuid.uuid4().hex}.jpg"
    generation = stack.upload(name, photo("coffee", "JPEG", (48, 32)), "text/plain")
    job = HandMadeJob(stack, jobs.Source(stack.info.upload_bucket, name, generation, "image/jpeg", 1))
    claim = jobs.new_claim(job.source, model_version, time.time(), 600)  # a live lease: nobody takes it over
    return job, job.write(claim, 0)


def test_replay_to_a_job_in_the_window_before_it_records_its_prediction_settles_nothing(
    main_stack: StackClient, a: PendingJob
) -> None:
    b, generation = _claimed_job(main_stack, a.record()["model_version"])
    body = a.body()
    headers = signed_headers(main_stack.info.webhook_secret, body)
    before_a = Snapshot.of(main_stack, a.job_id)
    log = webhook_log(main_stack.info)

    # B has recorded nothing yet, so nothing can confirm or refute the hint: ask for a retry.
    early = _delivered_to(main_stack, body, headers, b.job_id)

    assert (early.status_code, early.json()) == (503, RETRY_ANSWER)
    entry = log.find(NOT_YET_RECORDED, job_id=b.job_id, prediction_id=a.prediction["id"])
    assert entry["severity"] == "INFO"
    assert "NotYetRecorded" in log.find(RETRY_LATER)["error"]
    _never_named(log, a.job_id)
    claimed, unchanged = b.load()
    assert (claimed.state, claimed.prediction_ids, unchanged) == ("claimed", (), generation)
    assert_no_output(main_stack, b.output_name(), b.job_id)
    assert Snapshot.of(main_stack, a.job_id) == before_a

    # B's submitter records its own prediction; the sender's retry (the same request) now meets it.
    recorded = jobs.submitted(claimed, "p_" + uuid.uuid4().hex, time.time(), 600)
    generation = b.write(recorded, generation)
    log = webhook_log(main_stack.info)

    late = _delivered_to(main_stack, body, headers, b.job_id)

    assert (late.status_code, late.json()) == (409, MISMATCH_ANSWER)
    entry = log.find(NOT_ONE_OF, outcome="mismatch", job_id=b.job_id, prediction_id=a.prediction["id"])
    assert entry["severity"] == "WARNING"
    _never_named(log, a.job_id)
    after, unchanged = b.load()
    assert (after.state, after.prediction_ids, unchanged) == ("submitted", recorded.prediction_ids, generation)
    assert_no_output(main_stack, b.output_name(), b.job_id)
    assert Snapshot.of(main_stack, a.job_id) == before_a
    a.assert_untouched()


def test_genuine_delivery_that_beats_its_record_is_asked_to_retry_then_completes(
    main_stack: StackClient, job_pool: JobPool
) -> None:
    # The other side of the window: the 503 is a "not yet", not a refusal. A real job is put back
    # to where its submitter was before recording the prediction, then recorded as it would be.
    job = job_pool.take()
    blob = _record_blob(main_stack, job.job_id)
    submitted = jobs.Job.from_json(json.loads(blob.download_as_bytes()))
    window = dataclasses.replace(
        submitted,
        state=jobs.CLAIMED,
        prediction_ids=(),
        attempts=0,
        deadline_at=0.0,
        lease_expires_at=time.time() + 600,
    )
    hand = HandMadeJob(main_stack, submitted.source)
    generation = hand.write(window, int(blob.generation))
    body = job.body()
    headers = signed_headers(main_stack.info.webhook_secret, body)
    log = webhook_log(main_stack.info)

    early = job.deliver(body, headers=headers)

    assert (early.status_code, early.json()) == (503, RETRY_ANSWER)
    log.find(NOT_YET_RECORDED, job_id=job.job_id, prediction_id=job.prediction["id"])
    assert hand.load()[1] == generation
    assert_no_output(main_stack, job.output_name, job.job_id)

    hand.write(jobs.submitted(window, job.prediction["id"], time.time(), 600), generation)
    log = webhook_log(main_stack.info)

    late = job.deliver(body, headers=headers)

    assert (late.status_code, late.json()["message"]) == (200, "completed")
    log.find("webhook completed", outcome="completed", job_id=job.job_id)
    assert list(_outputs_of(main_stack, job.job_id)) == [job.output_name]
    assert job.record()["state"] == "completed"


# --- (d) the signed echo names its job; the URL is ignored --------------------------------------


def test_signed_echo_sent_to_another_jobs_url_settles_the_echoed_job_only(
    main_stack: StackClient, job_pool: JobPool, b: PendingJob
) -> None:
    echoing = job_pool.take()  # its body will carry `webhook` = its own URL, signed
    body = echoing.echoed()
    assert json.loads(body)["webhook"] == webhook_url_for(main_stack.info.webhook_url, echoing.job_id)
    before_b = Snapshot.of(main_stack, b.job_id)
    log = webhook_log(main_stack.info)

    first = deliver(main_stack.info, body, job=b.job_id)

    assert (first.status_code, first.json()["message"]) == (200, "completed")
    log.find("webhook completed", outcome="completed", job_id=echoing.job_id)
    _never_named(log, b.job_id)
    written = _outputs_of(main_stack, echoing.job_id)
    assert list(written) == [echoing.output_name]
    assert echoing.record()["state"] == "completed"
    assert Snapshot.of(main_stack, b.job_id) == before_b
    log = webhook_log(main_stack.info)

    again = deliver(main_stack.info, body, job=b.job_id)

    assert (again.status_code, again.json()["message"]) == (200, "duplicate")
    log.find("job is already completed", outcome="duplicate", job_id=echoing.job_id)
    _never_named(log, b.job_id)
    assert _outputs_of(main_stack, echoing.job_id) == written
    assert Snapshot.of(main_stack, b.job_id) == before_b
    b.assert_untouched()


# --- (e) the genuine case ------------------------------------------------------------------------


def test_genuine_body_to_its_own_jobs_url_completes_once_and_a_replay_is_a_duplicate(
    main_stack: StackClient, job_pool: JobPool
) -> None:
    job = job_pool.take()
    body = job.body()
    headers = signed_headers(main_stack.info.webhook_secret, body)
    log = webhook_log(main_stack.info)

    first = job.deliver(body, headers=headers)

    assert (first.status_code, first.json()["message"]) == (200, "completed")
    entry = log.find("webhook completed", outcome="completed", job_id=job.job_id, prediction_id=job.prediction["id"])
    assert entry["output"] == f"gs://{main_stack.info.processed_bucket}/{job.output_name}"
    written = _outputs_of(main_stack, job.job_id)
    assert list(written) == [job.output_name]
    record = job.record()
    assert (record["state"], record["output_generation"]) == ("completed", written[job.output_name])
    settled = Snapshot.of(main_stack, job.job_id)
    log = webhook_log(main_stack.info)

    replay = job.deliver(body, headers=headers)  # byte for byte the same request

    assert (replay.status_code, replay.json()["message"]) == (200, "duplicate")
    log.find("job is already completed", outcome="duplicate", job_id=job.job_id)
    assert Snapshot.of(main_stack, job.job_id) == settled
    assert [h["state"] for h in job.record()["history"]].count("completed") == 1
