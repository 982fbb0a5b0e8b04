"""Standard Webhooks signature verification (the scheme the predictions service signs with).

Verification runs on the raw request bytes before anything is parsed. Every failure raises
SignatureError with a reason for our log; the HTTP answer never says which check failed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping

from bgremove.errors import SignatureError

MAX_HEADER_LENGTH = 4096
# Unix seconds have 10 digits until the year 2286; a longer value cannot be fresh, and one of
# hundreds of digits would overflow the float arithmetic below.
MAX_TIMESTAMP_DIGITS = 12


__all__ = ["SignatureError", "decode_secret", "sign", "verify"]


def decode_secret(secret: str) -> bytes:
    """`whsec_<base64>` -> key bytes. Raises ValueError for a malformed secret."""
    raw = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error as exc:
        raise ValueError("webhook secret is not valid base64") from exc


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` entry for a delivery (used by tests and the offline service alike)."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def verify(
    headers: Mapping[str, str],
    body: bytes,
    keys: Iterable[bytes],
    tolerance_seconds: int = 300,
    now: Callable[[], float] = time.time,
) -> str:
    """Check a delivery; return its webhook-id. Any one matching `v1` signature under any key passes."""
    webhook_id = _header(headers, "webhook-id")
    raw_timestamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    if not raw_timestamp.isascii() or not raw_timestamp.isdigit() or len(raw_timestamp) > MAX_TIMESTAMP_DIGITS:
        raise SignatureError("webhook-timestamp is not a unix time")
    timestamp = int(raw_timestamp)
    skew = now() - timestamp
    if skew > tolerance_seconds:
        raise SignatureError("webhook-timestamp is too old")
    if skew < -tolerance_seconds:
        raise SignatureError("webhook-timestamp is in the future")
    candidates = []
    for entry in signatures.split(" "):
        version, _, value = entry.partition(",")
        if version != "v1" or not value:
            continue
        try:
            candidates.append(base64.b64decode(value, validate=True))
        except binascii.Error:
            continue
    if not candidates:
        raise SignatureError("webhook-signature has no v1 entry")
    content = f"{webhook_id}.{raw_timestamp}.".encode() + body
    for key in keys:
        expected = hmac.new(key, content, hashlib.sha256).digest()
        # Check every candidate so the time taken does not depend on which one matched.
        if any(hmac.compare_digest(expected, candidate) for candidate in candidates):
            return webhook_id
    raise SignatureError("no signature matches")


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise SignatureError(f"{name} header is missing")
    if len(value) > MAX_HEADER_LENGTH or not value.isprintable():
        raise SignatureError(f"{name} header is malformed")
    return value
