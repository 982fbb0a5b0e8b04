"""Standard Webhooks verification: the published test vector, rotation, and agreement with the
reference library."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from bgremove import errors, signatures

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
KEY = signatures.decode_secret(VECTOR_SECRET)


def _headers(sig: str = VECTOR_SIG, ts: int = VECTOR_TS, msg_id: str = VECTOR_ID) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


def test_published_test_vector_verifies_with_an_injected_clock() -> None:
    webhook_id = signatures.verify(_headers(), VECTOR_BODY, [KEY], now=lambda: VECTOR_TS + 10)
    assert webhook_id == VECTOR_ID


def test_our_signature_of_the_vector_matches_the_published_one() -> None:
    assert signatures.sign(KEY, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIG


def test_rotated_secret_is_accepted_among_several() -> None:
    other = signatures.decode_secret("whsec_" + base64.b64encode(b"x" * 32).decode())
    assert signatures.verify(_headers(), VECTOR_BODY, [other, KEY], now=lambda: VECTOR_TS) == VECTOR_ID


def test_any_matching_entry_among_several_signatures_is_enough() -> None:
    sig = f"v1,{base64.b64encode(b'nope' * 8).decode()} v2,whatever {VECTOR_SIG}"
    assert signatures.verify(_headers(sig), VECTOR_BODY, [KEY], now=lambda: VECTOR_TS) == VECTOR_ID


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        (_headers(), b'{"test": 2432232315}', "no signature matches"),
        (_headers(msg_id="msg_other"), VECTOR_BODY, "no signature matches"),
        (_headers(ts=VECTOR_TS + 1), VECTOR_BODY, "no signature matches"),
        (_headers(sig="v2," + VECTOR_SIG[3:]), VECTOR_BODY, "no v1 entry"),
        (
            {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS)},
            VECTOR_BODY,
            "webhook-signature header is missing",
        ),
        (_headers(ts=0) | {"webhook-timestamp": "12a"}, VECTOR_BODY, "not a unix time"),
    ],
)
def test_tampered_or_malformed_deliveries_are_refused(headers: dict[str, str], body: bytes, reason: str) -> None:
    with pytest.raises(errors.SignatureError, match=reason):
        signatures.verify(headers, body, [KEY], now=lambda: VECTOR_TS)


def test_timestamps_outside_five_minutes_are_refused_both_ways() -> None:
    with pytest.raises(errors.SignatureError, match="too old"):
        signatures.verify(_headers(), VECTOR_BODY, [KEY], now=lambda: VECTOR_TS + 301)
    with pytest.raises(errors.SignatureError, match="future"):
        signatures.verify(_headers(), VECTOR_BODY, [KEY], now=lambda: VECTOR_TS - 301)


def test_reference_library_accepts_what_we_sign() -> None:
    now = datetime.now(UTC)
    ts = int(now.timestamp())
    body = b'{"id": "abc", "status": "succeeded"}'
    headers = _headers(signatures.sign(KEY, "msg_1", ts, body), ts, "msg_1")
    assert Webhook(VECTOR_SECRET).verify(body, headers) == {"id": "abc", "status": "succeeded"}
    assert signatures.verify(headers, body, [KEY]) == "msg_1"
