"""Hostile webhook deliveries, through the real HTTP function of the offline stack.

Most cases carry the real prediction of a real job whose own webhook was dropped, sent to that job's
own webhook URL (`?job=<id>`, as the pipeline gives it to the API): a handler that skipped a check
would settle that job and write its cut-out, so "still submitted, nothing written" after every
refusal is a meaningful assertion.
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from bgremove import signatures
from tests.hostile.support import (
    UNAUTHORIZED_BODY,
    JobPool,
    PendingJob,
    random_secret,
    record_text,
    signed_headers,
    webhook_log,
)
from tests.support import StackClient

LIMIT = 1024 * 1024  # WEBHOOK_MAX_BODY_BYTES default


@pytest.fixture(scope="module")
def pending(job_pool: JobPool) -> PendingJob:
    return job_pool.take()


def _mac(secret: str, webhook_id: str, ts: int, body: bytes) -> str:
    return signatures.sign(signatures.decode_secret(secret), webhook_id, ts, body).removeprefix("v1,")


# Each case: (headers to send given the real body and the stack's secret, or a different body), reason in the log.
Headers = Callable[[bytes, str], tuple[bytes, dict[str, Any]]]


def _resigned(**changes: Any) -> Headers:
    """Correctly signed, then some headers changed."""

    def build(body: bytes, secret: str) -> tuple[bytes, dict[str, Any]]:
        return body, {**signed_headers(secret, body), **changes}

    return build


def _signed_at(offset: int) -> Headers:
    return lambda body, secret: (body, signed_headers(secret, body, timestamp=int(time.time()) + offset))


def _with_signature(make: Callable[[bytes, str, str, int], str]) -> Headers:
    def build(body: bytes, secret: str) -> tuple[bytes, dict[str, Any]]:
        headers = signed_headers(secret, body)
        ts = int(headers["webhook-timestamp"])
        headers["webhook-signature"] = make(body, secret, headers["webhook-id"], ts)
        return body, headers

    return build


def _body_changed_after_signing(body: bytes, secret: str) -> tuple[bytes, dict[str, Any]]:
    headers = signed_headers(secret, body)
    return body.replace(b'"succeeded"', b'"succeeded" '), headers


def _other_timestamp(body: bytes, secret: str) -> tuple[bytes, dict[str, Any]]:
    headers = signed_headers(secret, body)
    return body, {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 1)}


def _reserialised(body: bytes, secret: str) -> tuple[bytes, dict[str, Any]]:
    headers = signed_headers(secret, body)
    return json.dumps(json.loads(body), indent=1).encode(), headers


UNAUTHORIZED_CASES: list[tuple[str, Headers, str]] = [
    (
        "forged-signature",
        _with_signature(lambda b, s, i, t: "v1," + base64.b64encode(secrets.token_bytes(32)).decode()),
        "no signature matches",
    ),
    ("wrong-secret", lambda body, secret: (body, signed_headers(random_secret(), body)), "no signature matches"),
    ("body-changed-after-signing", _body_changed_after_signing, "no signature matches"),
    ("body-reserialised", _reserialised, "no signature matches"),
    ("other-webhook-id", _resigned(**{"webhook-id": "msg_someone_else"}), "no signature matches"),
    ("other-timestamp", _other_timestamp, "no signature matches"),
    (
        "truncated-mac",
        _with_signature(lambda b, s, i, t: "v1," + base64.b64encode(base64.b64decode(_mac(s, i, t, b))[:16]).decode()),
        "no signature matches",
    ),
    (
        "mac-of-another-body",
        _with_signature(lambda b, s, i, t: "v1," + _mac(s, i, t, b"{}")),
        "no signature matches",
    ),
    (
        "no-webhook-headers",
        _resigned(**{"webhook-id": None, "webhook-timestamp": None, "webhook-signature": None}),
        "webhook-id header is missing",
    ),
    ("missing-webhook-id", _resigned(**{"webhook-id": None}), "webhook-id header is missing"),
    ("missing-webhook-timestamp", _resigned(**{"webhook-timestamp": None}), "webhook-timestamp header is missing"),
    ("missing-webhook-signature", _resigned(**{"webhook-signature": None}), "webhook-signature header is missing"),
    ("empty-webhook-signature", _resigned(**{"webhook-signature": ""}), "webhook-signature header is missing"),
    ("timestamp-not-a-number", _resigned(**{"webhook-timestamp": "soon"}), "webhook-timestamp is not a unix time"),
    ("timestamp-negative", _resigned(**{"webhook-timestamp": "-1"}), "webhook-timestamp is not a unix time"),
    ("timestamp-fractional", _resigned(**{"webhook-timestamp": "1700000000.5"}), "is not a unix time"),
    ("timestamp-400-digits", _resigned(**{"webhook-timestamp": "9" * 400}), "webhook-timestamp is not a unix time"),
    ("timestamp-stale-6-minutes", _signed_at(-360), "webhook-timestamp is too old"),
    ("timestamp-stale-1-day", _signed_at(-86400), "webhook-timestamp is too old"),
    ("timestamp-epoch", _resigned(**{"webhook-timestamp": "0"}), "webhook-timestamp is too old"),
    ("timestamp-future-6-minutes", _signed_at(360), "webhook-timestamp is in the future"),
    ("timestamp-future-1-year", _signed_at(365 * 86400), "webhook-timestamp is in the future"),
    ("signature-without-version", _with_signature(lambda b, s, i, t: _mac(s, i, t, b)), "no v1 entry"),
    ("signature-only-v2", _with_signature(lambda b, s, i, t: "v2," + _mac(s, i, t, b)), "no v1 entry"),
    ("signature-space-not-comma", _with_signature(lambda b, s, i, t: "v1 " + _mac(s, i, t, b)), "no v1 entry"),
    ("signature-empty-v1", _resigned(**{"webhook-signature": "v1,"}), "no v1 entry"),
    ("signature-not-base64", _resigned(**{"webhook-signature": "v1,***not-base64***"}), "no v1 entry"),
    ("signature-header-too-long", _resigned(**{"webhook-signature": "v1," + "A" * 5000}), "header is malformed"),
    ("webhook-id-too-long", _resigned(**{"webhook-id": "m" * 5000}), "webhook-id header is malformed"),
    ("webhook-id-with-tab", _resigned(**{"webhook-id": "msg\tx"}), "webhook-id header is malformed"),
]


@pytest.mark.parametrize(("case", "build", "reason"), UNAUTHORIZED_CASES, ids=[c[0] for c in UNAUTHORIZED_CASES])
def test_bad_signature_is_refused_with_401_that_does_not_say_why(
    main_stack: StackClient, pending: PendingJob, case: str, build: Headers, reason: str
) -> None:
    body, headers = build(pending.body(), main_stack.info.webhook_secret)
    log = webhook_log(main_stack.info)

    answer = pending.deliver(body, headers=headers)

    assert answer.status_code == 401
    assert answer.json() == UNAUTHORIZED_BODY  # the same for every failed check
    assert reason not in answer.text
    entry = log.find(reason, outcome="unauthorized")
    assert entry["severity"] == "WARNING"
    pending.assert_untouched()


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
def test_methods_other_than_post_are_refused_even_when_signed(
    main_stack: StackClient, pending: PendingJob, method: str
) -> None:
    log = webhook_log(main_stack.info)

    answer = pending.deliver(pending.body(), method=method)

    assert answer.status_code == 405
    assert answer.headers["Allow"] == "POST"
    entry = log.find("method not allowed", method=method, outcome="method_not_allowed")
    assert entry["severity"] == "WARNING"
    pending.assert_untouched()


def _padded(body: bytes, size: int) -> bytes:
    """The same JSON, padded with trailing whitespace to exactly `size` bytes."""
    return body + b" " * (size - len(body))


def test_body_over_the_limit_is_refused_with_413_even_when_validly_signed(
    main_stack: StackClient, pending: PendingJob
) -> None:
    body = _padded(pending.body(), LIMIT + 1)
    log = webhook_log(main_stack.info)

    answer = pending.deliver(body)

    assert answer.status_code == 413
    assert log.find("body too large", outcome="too_large", content_length=LIMIT + 1)["severity"] == "WARNING"
    pending.assert_untouched()


def test_chunked_body_over_the_limit_is_refused_with_413(main_stack: StackClient, pending: PendingJob) -> None:
    body = _padded(pending.body(), 4 * LIMIT)
    headers = signed_headers(main_stack.info.webhook_secret, body)
    log = webhook_log(main_stack.info)

    # A generator has no length: requests sends it chunked, with no Content-Length to trust.
    answer = pending.deliver(iter([body[i : i + 65536] for i in range(0, len(body), 65536)]), headers=headers)

    assert answer.status_code == 413
    assert log.find("body too large", outcome="too_large", read=LIMIT + 1)
    pending.assert_untouched()


def test_content_length_claiming_a_huge_body_is_refused_before_reading(
    main_stack: StackClient, pending: PendingJob
) -> None:
    body = pending.body()
    log = webhook_log(main_stack.info)

    # requests always sends the true length, so speak HTTP by hand to lie about it.
    url = urlsplit(pending.url)
    assert url.hostname is not None, pending.url
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.putrequest("POST", f"{url.path or '/'}?{url.query}")
        for name, value in {**signed_headers(main_stack.info.webhook_secret, body), "Content-Length": "10" * 6}.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        answer = connection.getresponse()
        text = record_text(answer.read().decode())
    finally:
        connection.close()

    assert answer.status == 413, text
    assert log.find("body too large", outcome="too_large", content_length=int("10" * 6))
    pending.assert_untouched()


def test_body_of_exactly_the_limit_is_read_and_judged(main_stack: StackClient, pending: PendingJob) -> None:
    # A wrong prediction id keeps the job open: the 409 shows the body got past the size check.
    body = _padded(pending.body(id="not-this-jobs-prediction"), LIMIT)
    log = webhook_log(main_stack.info)

    answer = pending.deliver(body)

    assert answer.status_code == 409
    assert log.find("prediction id is not one of the job's", outcome="mismatch", job_id=pending.job_id)
    pending.assert_untouched()


def test_replayed_delivery_after_completion_has_no_second_effect(main_stack: StackClient, job_pool: Any) -> None:
    job: PendingJob = job_pool.take()
    body = job.body()
    headers = signed_headers(main_stack.info.webhook_secret, body)

    first = job.deliver(body, headers=headers)
    assert (first.status_code, first.json()["message"]) == (200, "completed")
    output = main_stack.processed(job.output_name)
    assert output is not None and output.metadata["bgremove-job"] == job.job_id

    log = webhook_log(main_stack.info)
    replay = job.deliver(body, headers=headers)  # byte for byte the same request
    failed_later = job.deliver(job.body(status="failed", output=None, error="late failure"))
    stale = job.deliver(body, headers=signed_headers(main_stack.info.webhook_secret, body, None, 1))

    assert (replay.status_code, replay.json()["message"]) == (200, "duplicate")
    assert (failed_later.status_code, failed_later.json()["message"]) == (200, "duplicate")
    assert stale.status_code == 401
    assert log.find("job is already completed", outcome="duplicate", job_id=job.job_id)
    log.find("webhook-timestamp is too old", outcome="unauthorized")
    again = main_stack.processed(job.output_name)
    assert again is not None and again.generation == output.generation
    record = job.record()
    assert record["state"] == "completed"
    assert [h["state"] for h in record["history"]].count("completed") == 1
