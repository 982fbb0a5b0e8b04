"""Validly signed deliveries whose body is broken, names no job, or does not match its job.

Each body is the real prediction of a real job whose own webhook was dropped, changed in one way;
a handler that accepted it would settle that job, so every case also checks it was left alone.

A delivery finds its job one of two ways (README, "How a webhook finds its job"), and the cases say
which one they exercise:

- the query path: the body has no `webhook` field (the service's default, as Replicate's schema);
  the job id comes from the request's own `?job=<id>`, which the signature does not cover, and the
  signed prediction id must be one the job has recorded;
- the signed echo path: the body carries `webhook`; the job id comes from its query alone and the
  request's URL is ignored, so these cases are sent to the real job's own URL, where a handler that
  fell back to it would settle the job.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from bgremove.submit import webhook_url_for
from tests.hostile.support import DELETE, JobPool, PendingJob, deliver, webhook_log
from tests.support import StackClient


@pytest.fixture(scope="module")
def pending(job_pool: JobPool) -> PendingJob:
    return job_pool.take()


def _job_url(stack: StackClient, job_id: str) -> str:
    return webhook_url_for(stack.info.webhook_url, job_id)


def _query_url(stack: StackClient, query: str) -> str:
    return f"{stack.info.webhook_url}?{query}"


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

    answer = pending.deliver(make(pending))

    assert answer.status_code == 400
    assert answer.json() == {"status": 400, "message": "malformed"}
    entry = log.find(reason, outcome="malformed")
    assert entry["severity"] == "WARNING" and entry["message"].startswith("webhook malformed: ")
    pending.assert_untouched()


def test_signed_deeply_nested_json_is_refused_with_400_not_500(main_stack: StackClient, pending: PendingJob) -> None:
    log = webhook_log(main_stack.info)

    answer = pending.deliver(b"[" * 100_000 + b"]" * 100_000)

    assert answer.status_code == 400
    log.find("body is not a valid prediction", outcome="malformed")
    pending.assert_untouched()


NAMES_NO_JOB = "neither the body nor the URL names a job"
NO_RECORD = "no job record for this prediction"

# The signed echo path: (case id, body given the pending job and the stack, what the log says). Each
# body's `webhook` is a string that names no job; the request goes to the pending job's own URL.
ECHO_UNKNOWN: list[tuple[str, Any, str]] = [
    (
        "echo-job-that-does-not-exist",
        lambda job, stack: job.body(webhook=_job_url(stack, secrets.token_hex(32))),
        NO_RECORD,
    ),
    (
        "echo-unknown-prediction-and-job",
        lambda job, stack: job.body(id="unknownprediction", webhook=_job_url(stack, secrets.token_hex(32))),
        NO_RECORD,
    ),
    ("echo-webhook-without-job", lambda job, stack: job.body(webhook=stack.info.webhook_url), NAMES_NO_JOB),
    ("echo-webhook-not-a-url", lambda job, stack: job.body(webhook="not a url"), NAMES_NO_JOB),
    ("echo-webhook-broken-ipv6", lambda job, stack: job.body(webhook="https://[::1/?job=" + job.job_id), NAMES_NO_JOB),
    ("echo-job-not-hex", lambda job, stack: job.body(webhook=_job_url(stack, "z" * 64)), NAMES_NO_JOB),
    ("echo-job-upper-case", lambda job, stack: job.body(webhook=_job_url(stack, job.job_id.upper())), NAMES_NO_JOB),
    ("echo-job-too-short", lambda job, stack: job.body(webhook=_job_url(stack, job.job_id[:63])), NAMES_NO_JOB),
    (
        "echo-job-twice",
        lambda job, stack: job.body(webhook=_job_url(stack, job.job_id) + "&job=" + job.job_id),
        NAMES_NO_JOB,
    ),
    (
        "echo-job-path-traversal",
        lambda job, stack: job.body(webhook=_job_url(stack, "../" + job.job_id)),
        NAMES_NO_JOB,
    ),
    (
        "echo-job-in-fragment",
        lambda job, stack: job.body(webhook=stack.info.webhook_url + "#job=" + job.job_id),
        NAMES_NO_JOB,
    ),
]


@pytest.mark.parametrize(("case", "make", "reason"), ECHO_UNKNOWN, ids=[c[0] for c in ECHO_UNKNOWN])
def test_signed_echo_that_names_no_job_is_refused_with_404_whatever_the_url(
    main_stack: StackClient, pending: PendingJob, case: str, make: Any, reason: str
) -> None:
    log = webhook_log(main_stack.info)

    # To the job's own URL: an echo that names no job must not fall back to the URL's `?job=`.
    answer = pending.deliver(make(pending, main_stack))

    assert answer.status_code == 404
    assert answer.json() == {"status": 404, "message": "unknown_job"}
    assert log.find(reason, outcome="unknown_job")["severity"] == "INFO"
    pending.assert_untouched()


# The query path: (case id, body given the pending job, URL given the job and the stack, what the
# log says). Each body has no `webhook` echo (or one that is not a URL string, which counts as none).
QUERY_UNKNOWN: list[tuple[str, Any, Any, str]] = [
    ("query-missing", lambda job: job.body(), lambda job, stack: stack.info.webhook_url, NAMES_NO_JOB),
    (
        "query-without-job",
        lambda job: job.body(),
        lambda job, stack: _query_url(stack, "prediction=" + job.prediction["id"]),
        NAMES_NO_JOB,
    ),
    ("query-job-empty", lambda job: job.body(), lambda job, stack: _query_url(stack, "job="), NAMES_NO_JOB),
    (
        "query-job-not-hex",
        lambda job: job.body(),
        lambda job, stack: _job_url(stack, "z" * 64),
        NAMES_NO_JOB,
    ),
    (
        "query-job-upper-case",
        lambda job: job.body(),
        lambda job, stack: _job_url(stack, job.job_id.upper()),
        NAMES_NO_JOB,
    ),
    (
        "query-job-too-short",
        lambda job: job.body(),
        lambda job, stack: _job_url(stack, job.job_id[:63]),
        NAMES_NO_JOB,
    ),
    (
        "query-job-too-long",
        lambda job: job.body(),
        lambda job, stack: _job_url(stack, job.job_id + "0"),
        NAMES_NO_JOB,
    ),
    (
        "query-job-with-nul",
        lambda job: job.body(),
        lambda job, stack: _query_url(stack, f"job={job.job_id}%00"),
        NAMES_NO_JOB,
    ),
    (
        "query-job-twice",
        lambda job: job.body(),
        lambda job, stack: _query_url(stack, f"job={job.job_id}&job={job.job_id}"),
        NAMES_NO_JOB,
    ),
    (
        "query-job-and-another-job",
        lambda job: job.body(),
        lambda job, stack: _query_url(stack, f"job={job.job_id}&job={secrets.token_hex(32)}"),
        NAMES_NO_JOB,
    ),
    (
        "query-job-path-traversal",
        lambda job: job.body(),
        lambda job, stack: _query_url(stack, f"job=../{job.job_id}"),
        NAMES_NO_JOB,
    ),
    (
        "query-job-misnamed",
        lambda job: job.body(),
        lambda job, stack: _query_url(stack, f"JOB={job.job_id}&jobs={job.job_id}"),
        NAMES_NO_JOB,
    ),
    (
        "query-job-after-semicolon",
        lambda job: job.body(),
        lambda job, stack: _query_url(stack, f"x=1;job={job.job_id}"),
        NAMES_NO_JOB,
    ),
    (
        "query-job-after-too-many-fields",
        lambda job: job.body(),
        lambda job, stack: _query_url(stack, "&".join(f"x{i}=1" for i in range(25)) + f"&job={job.job_id}"),
        NAMES_NO_JOB,
    ),
    (
        # requests, as every client, never sends the fragment: the function sees no query at all.
        "query-job-in-fragment",
        lambda job: job.body(),
        lambda job, stack: f"{stack.info.webhook_url}#job={job.job_id}",
        NAMES_NO_JOB,
    ),
    (
        "query-echo-null-and-no-query",
        lambda job: job.body(webhook=None),
        lambda job, stack: stack.info.webhook_url,
        NAMES_NO_JOB,
    ),
    (
        "query-echo-number-and-no-query",
        lambda job: job.body(webhook=5),
        lambda job, stack: stack.info.webhook_url,
        NAMES_NO_JOB,
    ),
    (
        "query-job-that-does-not-exist",
        lambda job: job.body(),
        lambda job, stack: _job_url(stack, secrets.token_hex(32)),
        NO_RECORD,
    ),
    (
        "query-unknown-prediction-and-job",
        lambda job: job.body(id="unknownprediction"),
        lambda job, stack: _job_url(stack, secrets.token_hex(32)),
        NO_RECORD,
    ),
]


@pytest.mark.parametrize(("case", "make", "url", "reason"), QUERY_UNKNOWN, ids=[c[0] for c in QUERY_UNKNOWN])
def test_query_that_names_no_job_is_refused_with_404(
    main_stack: StackClient, pending: PendingJob, case: str, make: Any, url: Any, reason: str
) -> None:
    log = webhook_log(main_stack.info)

    answer = deliver(main_stack.info, make(pending), url=url(pending, main_stack))

    assert answer.status_code == 404
    assert answer.json() == {"status": 404, "message": "unknown_job"}
    assert log.find(reason, outcome="unknown_job")["severity"] == "INFO"
    pending.assert_untouched()


OTHER_VERSION = "0" * 64
NOT_ONE_OF = "prediction id is not one of the job's"

# The query path: (case id, body given the pending job and another job, the job whose URL it is sent
# to, what the log says). The job named by the URL is the one the log names and that refuses it.
QUERY_MISMATCHED: list[tuple[str, Any, Any, str]] = [
    ("query-unknown-prediction-id", lambda job, other: job.body(id="notoneofthisjobs"), lambda job, o: job, NOT_ONE_OF),
    (
        "query-other-jobs-prediction-id",
        lambda job, other: job.body(id=other.prediction["id"]),
        lambda job, other: job,
        NOT_ONE_OF,
    ),
    (
        "query-other-model-version",
        lambda job, other: job.body(version=OTHER_VERSION),
        lambda job, other: job,
        "model version differs from the job's",
    ),
    # Another job's genuine signed body, sent with this job's id in the query.
    ("query-other-jobs-body", lambda job, other: other.body(), lambda job, other: job, NOT_ONE_OF),
    # This job's genuine signed body, sent with another job's id in the query.
    ("query-names-another-job", lambda job, other: job.body(), lambda job, other: other, NOT_ONE_OF),
    # A `webhook` that is not a URL string counts as no echo: the query decides, and must be confirmed.
    ("query-echo-number", lambda job, other: job.body(webhook=5), lambda job, other: other, NOT_ONE_OF),
]


@pytest.mark.parametrize(("case", "make", "to", "reason"), QUERY_MISMATCHED, ids=[c[0] for c in QUERY_MISMATCHED])
def test_query_hint_not_confirmed_by_the_prediction_is_refused_with_409(
    main_stack: StackClient, pending: PendingJob, job_pool: Any, case: str, make: Any, to: Any, reason: str
) -> None:
    other: PendingJob = _other(job_pool)
    target: PendingJob = to(pending, other)
    log = webhook_log(main_stack.info)

    answer = target.deliver(make(pending, other))

    assert answer.status_code == 409
    assert answer.json() == {"status": 409, "message": "mismatch"}
    entry = log.find(reason, outcome="mismatch", job_id=target.job_id)
    assert entry["severity"] == "WARNING"
    pending.assert_untouched()
    other.assert_untouched()


# The signed echo path: (case id, body given the pending job and another job, what the log says).
# Each body's `webhook` names the pending job; the request goes to the OTHER job's URL, which is
# ignored: the log names the pending job, and neither job moves.
ECHO_MISMATCHED: list[tuple[str, Any, str]] = [
    ("echo-unknown-prediction-id", lambda job, other: job.echoed(id="notoneofthisjobs"), NOT_ONE_OF),
    ("echo-other-jobs-prediction-id", lambda job, other: job.echoed(id=other.prediction["id"]), NOT_ONE_OF),
    (
        "echo-other-model-version",
        lambda job, other: job.echoed(version=OTHER_VERSION),
        "model version differs from the job's",
    ),
    # Another job's genuine prediction and output, with this job's webhook signed into it.
    ("echo-other-jobs-prediction-and-output", lambda job, other: other.body(webhook=job.url), NOT_ONE_OF),
]


@pytest.mark.parametrize(("case", "make", "reason"), ECHO_MISMATCHED, ids=[c[0] for c in ECHO_MISMATCHED])
def test_signed_echo_prediction_that_does_not_match_its_job_is_refused_with_409(
    main_stack: StackClient, pending: PendingJob, job_pool: Any, case: str, make: Any, reason: str
) -> None:
    other: PendingJob = _other(job_pool)
    log = webhook_log(main_stack.info)

    answer = other.deliver(make(pending, other))

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


@pytest.mark.parametrize("path", ["query", "echo"])
def test_signed_non_terminal_status_changes_nothing(main_stack: StackClient, pending: PendingJob, path: str) -> None:
    log = webhook_log(main_stack.info)
    body = pending.body(status="processing") if path == "query" else pending.echoed(status="processing")

    answer = pending.deliver(body)

    assert (answer.status_code, answer.json()["message"]) == (200, "ignored")
    log.find("is not final", outcome="ignored", job_id=pending.job_id)
    pending.assert_untouched()
