"""Validly signed deliveries whose body is broken, names no job, or does not match its job.

Each body is the real prediction of a real job whose own webhook was dropped, changed in one way;
a handler that accepted it would settle that job, so every case also checks it was left alone.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from bgremove.submit import webhook_url_for
from tests.hostile.support import DELETE, PendingJob, deliver, webhook_log
from tests.support import StackClient


@pytest.fixture(scope="module")
def pending(job_pool: Any) -> PendingJob:
    return job_pool.take()


def _job_url(stack: StackClient, job_id: str) -> str:
    return webhook_url_for(stack.info.webhook_url, job_id)


# (case id, body given the pending job, what the log says)
MALFORMED: list[tuple[str, Any, str]] = [
    ("empty-body", lambda job: b"", "Expecting value"),
    ("not-json", lambda job: b"this is not json", "Expecting value"),
    ("not-utf8", lambda job: b"\xff\xfe\xfa{]", "body is not a valid prediction"),
    ("truncated-json", lambda job: job.body()[:-20], "body is not a valid prediction"),
    ("json-array", lambda job: b"[" + job.body() + b"]", "prediction is not a JSON object"),
    ("json-string", lambda job: b'"succeeded"', "prediction is not a JSON object"),
    ("json-number", lambda job: b"42", "prediction is not a JSON object"),
    ("json-null", lambda job: b"null", "prediction is not a JSON object"),
    ("json-true", lambda job: b"true", "prediction is not a JSON object"),
    ("id-missing", lambda job: job.body(id=DELETE), "prediction id is missing or not a string"),
    ("id-number", lambda job: job.body(id=12345), "prediction id is missing or not a string"),
    ("id-empty", lambda job: job.body(id=""), "prediction id is missing or not a string"),
    ("id-too-long", lambda job: job.body(id="p" * 129), "prediction id is missing or not a string"),
    ("id-list", lambda job: job.body(id=[job.prediction["id"]]), "prediction id is missing or not a string"),
    ("status-missing", lambda job: job.body(status=DELETE), "prediction status is missing or not a string"),
    ("status-number", lambda job: job.body(status=1), "prediction status is missing or not a string"),
    ("status-list", lambda job: job.body(status=["succeeded"]), "prediction status is missing or not a string"),
    ("status-object", lambda job: job.body(status={"s": 1}), "prediction status is missing or not a string"),
    ("version-number", lambda job: job.body(version=7), "prediction version is not a string"),
    ("version-list", lambda job: job.body(version=[job.prediction["version"]]), "version is not a string"),
    ("output-number", lambda job: job.body(output=42), "prediction output is not a URL string"),
    ("output-object", lambda job: job.body(output={"url": job.prediction["output"]}), "output is not a URL string"),
    ("output-two-urls", lambda job: job.body(output=[job.prediction["output"]] * 2), "output is not a URL string"),
    ("output-empty-list", lambda job: job.body(output=[]), "prediction output is not a URL string"),
    ("output-list-of-number", lambda job: job.body(output=[7]), "prediction output is not a URL string"),
    ("output-true", lambda job: job.body(output=True), "prediction output is not a URL string"),
]


@pytest.mark.parametrize(("case", "make", "reason"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_signed_body_that_is_not_a_prediction_is_refused_with_400(
    main_stack: StackClient, pending: PendingJob, case: str, make: Any, reason: str
) -> None:
    log = webhook_log(main_stack.info)

    answer = deliver(main_stack.info, make(pending))

    assert answer.status_code == 400
    assert answer.json() == {"status": 400, "message": "malformed"}
    entry = log.find(reason, outcome="malformed")
    assert entry["severity"] == "WARNING" and entry["message"].startswith("webhook malformed: ")
    pending.assert_untouched()


def test_signed_deeply_nested_json_is_refused_with_400_not_500(main_stack: StackClient, pending: PendingJob) -> None:
    log = webhook_log(main_stack.info)

    answer = deliver(main_stack.info, b"[" * 100_000 + b"]" * 100_000)

    assert answer.status_code == 400
    log.find("body is not a valid prediction", outcome="malformed")
    pending.assert_untouched()


UNKNOWN: list[tuple[str, Any, str]] = [
    (
        "job-that-does-not-exist",
        lambda job, stack: job.body(webhook=_job_url(stack, secrets.token_hex(32))),
        "no job record for this prediction",
    ),
    (
        "unknown-prediction-and-job",
        lambda job, stack: job.body(id="unknownprediction", webhook=_job_url(stack, secrets.token_hex(32))),
        "no job record for this prediction",
    ),
    ("webhook-missing", lambda job, stack: job.body(webhook=DELETE), "signed body names no job"),
    ("webhook-null", lambda job, stack: job.body(webhook=None), "signed body names no job"),
    ("webhook-number", lambda job, stack: job.body(webhook=5), "signed body names no job"),
    (
        "webhook-without-job",
        lambda job, stack: job.body(webhook=stack.info.webhook_url),
        "signed body names no job",
    ),
    (
        "job-not-hex",
        lambda job, stack: job.body(webhook=_job_url(stack, "z" * 64)),
        "signed body names no job",
    ),
    (
        "job-upper-case",
        lambda job, stack: job.body(webhook=_job_url(stack, job.job_id.upper())),
        "signed body names no job",
    ),
    (
        "job-too-short",
        lambda job, stack: job.body(webhook=_job_url(stack, job.job_id[:63])),
        "signed body names no job",
    ),
    (
        "job-twice",
        lambda job, stack: job.body(webhook=_job_url(stack, job.job_id) + "&job=" + job.job_id),
        "signed body names no job",
    ),
    (
        "job-path-traversal",
        lambda job, stack: job.body(webhook=_job_url(stack, "../" + job.job_id)),
        "signed body names no job",
    ),
    (
        "job-in-fragment",
        lambda job, stack: job.body(webhook=stack.info.webhook_url + "#job=" + job.job_id),
        "signed body names no job",
    ),
]


@pytest.mark.parametrize(("case", "make", "reason"), UNKNOWN, ids=[c[0] for c in UNKNOWN])
def test_signed_prediction_for_no_job_is_refused_with_404(
    main_stack: StackClient, pending: PendingJob, case: str, make: Any, reason: str
) -> None:
    log = webhook_log(main_stack.info)

    answer = deliver(main_stack.info, make(pending, main_stack))

    assert answer.status_code == 404
    assert answer.json() == {"status": 404, "message": "unknown_job"}
    assert log.find(reason, outcome="unknown_job")["severity"] == "INFO"
    pending.assert_untouched()


OTHER_VERSION = "0" * 64

MISMATCHED: list[tuple[str, Any, str]] = [
    ("unknown-prediction-id", lambda job, other: job.body(id="notoneofthisjobs"), "prediction id is not one of"),
    ("other-jobs-prediction-id", lambda job, other: job.body(id=other.prediction["id"]), "prediction id is not one"),
    ("other-model-version", lambda job, other: job.body(version=OTHER_VERSION), "model version differs from the job's"),
    (
        "other-jobs-prediction-and-output",
        lambda job, other: other.body(webhook=job.prediction["webhook"]),
        "prediction id is not one of the job's",
    ),
]


@pytest.mark.parametrize(("case", "make", "reason"), MISMATCHED, ids=[c[0] for c in MISMATCHED])
def test_signed_prediction_that_does_not_match_its_job_is_refused_with_409(
    main_stack: StackClient, pending: PendingJob, job_pool: Any, case: str, make: Any, reason: str
) -> None:
    other: PendingJob = _other(job_pool)
    log = webhook_log(main_stack.info)

    answer = deliver(main_stack.info, make(pending, other))

    assert answer.status_code == 409
    assert answer.json() == {"status": 409, "message": "mismatch"}
    entry = log.find(reason, outcome="mismatch", job_id=pending.job_id)
    assert entry["severity"] == "WARNING"
    pending.assert_untouched()
    other.assert_untouched()


_others: list[PendingJob] = []


def _other(job_pool: Any) -> PendingJob:
    """A second real job, shared by the mismatch cases (none of them may touch it either)."""
    if not _others:
        _others.append(job_pool.take())
    return _others[0]


def test_signed_non_terminal_status_changes_nothing(main_stack: StackClient, pending: PendingJob) -> None:
    log = webhook_log(main_stack.info)

    answer = deliver(main_stack.info, pending.body(status="processing"))

    assert (answer.status_code, answer.json()["message"]) == (200, "ignored")
    log.find("is not final", outcome="ignored", job_id=pending.job_id)
    pending.assert_untouched()
