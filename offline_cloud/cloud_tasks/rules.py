"""Cloud Tasks rules as pure functions: defaults, limits, names, burst size, retry backoff, when a
task is given up, how an HTTP answer reads as a google.rpc status, and the OIDC token's shape.

Kept free of threads and I/O so the unit tests can check each rule against the documented examples.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from dataclasses import dataclass
from datetime import timedelta

from google.rpc import code_pb2  # type: ignore[import-untyped]  # googleapis-common-protos has no type information

# --- limits and defaults (Cloud Tasks v2 reference and quotas page) ------------------------------

MAX_DISPATCHES_PER_SECOND = 500.0
MAX_CONCURRENT_DISPATCHES = 5000
MAX_BURST_SIZE_CAP = 100  # what a default queue (500/s) reports as max_burst_size
# What a queue created without rate_limits / retry_config gets (as `gcloud tasks queues describe`
# shows for a new queue).
DEFAULT_DISPATCHES_PER_SECOND = 500.0
DEFAULT_CONCURRENT_DISPATCHES = 1000
DEFAULT_MAX_ATTEMPTS = 100
DEFAULT_MIN_BACKOFF = 0.1
DEFAULT_MAX_BACKOFF = 3600.0
DEFAULT_MAX_DOUBLINGS = 16

DEFAULT_DISPATCH_DEADLINE = 600.0  # 10 minutes, for HTTP tasks
MIN_DISPATCH_DEADLINE = 15.0
MAX_DISPATCH_DEADLINE = 1800.0
MAX_SCHEDULE_AHEAD = 30 * 24 * 3600.0
MAX_TASK_BYTES = 1_000_000  # 1 MB per task
MAX_HEADER_BYTES = 80 * 1024
MAX_URL_LENGTH = 2083
TASK_RETENTION = 31 * 24 * 3600.0

# Production keeps a deleted or executed task's id reserved "for up to about 24 hours" (older
# documentation said ~1 hour); the emulator's default is the shorter, older figure so a long test run
# does not hold every name for a day, and `--name-reservation-seconds` sets it.
DEFAULT_NAME_RESERVATION = 3600.0

PROJECT_RE = re.compile(r"[A-Za-z0-9\-:.]+")
LOCATION_RE = re.compile(r"[A-Za-z0-9\-]+")
QUEUE_ID_RE = re.compile(r"[A-Za-z0-9\-]{1,100}")
TASK_ID_RE = re.compile(r"[A-Za-z0-9_\-]{1,500}")

# Headers a task may not set: Cloud Tasks computes or replaces them (HttpRequest.headers docs).
_RESERVED_HEADER_PREFIXES = ("x-cloudtasks-", "x-google-", "x-appengine-")
_RESERVED_HEADERS = {"host", "content-length", "user-agent"}

THROTTLING_STATUSES = (429, 503)


class InvalidArgument(ValueError):
    """A request the real service would refuse with INVALID_ARGUMENT."""


# --- names ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueName:
    project: str
    location: str
    queue_id: str

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    def __str__(self) -> str:
        return f"{self.parent}/queues/{self.queue_id}"


def parse_location(parent: str) -> tuple[str, str]:
    parts = parent.split("/")
    if len(parts) != 4 or parts[0] != "projects" or parts[2] != "locations":
        raise InvalidArgument(f"Invalid resource field value in the request: parent {parent!r}")
    if not PROJECT_RE.fullmatch(parts[1]) or not LOCATION_RE.fullmatch(parts[3]):
        raise InvalidArgument(f"Invalid resource field value in the request: parent {parent!r}")
    return parts[1], parts[3]


def parse_queue_name(name: str) -> QueueName:
    parts = name.split("/")
    if len(parts) != 6 or parts[4] != "queues":
        raise InvalidArgument(f"Invalid resource field value in the request: queue name {name!r}")
    project, location = parse_location("/".join(parts[:4]))
    if not QUEUE_ID_RE.fullmatch(parts[5]):
        raise InvalidArgument(f"Queue ID {parts[5]!r} must match [A-Za-z0-9-]{{1,100}}")
    return QueueName(project, location, parts[5])


def parse_task_name(name: str) -> tuple[QueueName, str]:
    queue, sep, task_id = name.partition("/tasks/")
    if not sep or "/" in task_id:
        raise InvalidArgument(f"Invalid resource field value in the request: task name {name!r}")
    if not TASK_ID_RE.fullmatch(task_id):
        raise InvalidArgument(f"Task ID {task_id!r} must match [A-Za-z0-9_-]{{1,500}}")
    return parse_queue_name(queue), task_id


# --- queue settings -------------------------------------------------------------------------------


def burst_size(rate: float) -> int:
    """max_burst_size for a queue dispatching at `rate`/s.

    Cloud Tasks picks it and documents only that it is "generally at least equal to
    max_dispatches_per_second"; a default queue (500/s) reports 100. The rule here meets both: the
    rate rounded up, at least 1, at most 100. (A burst below the rate does not lower throughput: the
    bucket refills continuously.)"""
    return max(1, min(MAX_BURST_SIZE_CAP, math.ceil(rate)))


def retry_interval(retry: int, min_backoff: float, max_backoff: float, max_doublings: int) -> float:
    """Seconds before retry number `retry` (1 = the retry after the first failed attempt).

    The interval starts at min_backoff, doubles max_doublings times, then grows linearly by the
    last doubled step (min_backoff * 2**max_doublings), and is capped at max_backoff: the documented
    example (10 s, 300 s, 3 doublings) gives 10, 20, 40, 80, 160, 240, 300, 300 ..."""
    if retry < 1:
        raise ValueError("retry counts from 1")
    doublings = retry - 1
    if doublings <= max_doublings:
        interval = min_backoff * 2.0**doublings
    else:
        interval = min_backoff * 2.0**max_doublings * (1 + doublings - max_doublings)
    return min(max_backoff, interval)


def gives_up(attempts: int, first_attempt_age: float, max_attempts: int, max_retry_duration: float) -> bool:
    """Whether a task that has failed `attempts` times, the first `first_attempt_age` seconds ago,
    is deleted rather than retried.

    Cloud Tasks stops only when both limits are spent. A limit that is not set (max_attempts -1,
    max_retry_duration 0) imposes nothing, so the other limit alone decides; with neither set the
    task is retried until the 31-day retention ends."""
    attempts_spent = max_attempts != -1 and attempts >= max_attempts
    duration_spent = max_retry_duration > 0 and first_attempt_age >= max_retry_duration
    if max_attempts == -1 and max_retry_duration <= 0:
        return first_attempt_age >= TASK_RETENTION
    if max_attempts == -1:
        return duration_spent
    if max_retry_duration <= 0:
        return attempts_spent
    return attempts_spent and duration_spent


def seconds(value: timedelta | None) -> float:
    return 0.0 if value is None else value.total_seconds()


# --- dispatch -------------------------------------------------------------------------------------


def task_headers(own: dict[str, str]) -> dict[str, str]:
    """The task's own headers without those Cloud Tasks computes or replaces."""
    kept = {}
    for key, value in own.items():
        lower = key.lower()
        if lower in _RESERVED_HEADERS or lower.startswith(_RESERVED_HEADER_PREFIXES):
            continue
        kept[key] = value
    return kept


def rpc_status(http_status: int | None, error: str | None = None) -> tuple[int, str]:
    """The google.rpc code and message Cloud Tasks records in Attempt.response_status."""
    if http_status is None:
        if error == "timeout":
            return code_pb2.DEADLINE_EXCEEDED, "The request deadline was exceeded"
        return code_pb2.UNAVAILABLE, f"The target could not be reached: {error}"
    codes = {
        400: code_pb2.INVALID_ARGUMENT,
        401: code_pb2.UNAUTHENTICATED,
        403: code_pb2.PERMISSION_DENIED,
        404: code_pb2.NOT_FOUND,
        409: code_pb2.ABORTED,
        412: code_pb2.FAILED_PRECONDITION,
        429: code_pb2.RESOURCE_EXHAUSTED,
        499: code_pb2.CANCELLED,
        501: code_pb2.UNIMPLEMENTED,
        503: code_pb2.UNAVAILABLE,
        504: code_pb2.DEADLINE_EXCEEDED,
    }
    if 200 <= http_status < 300:
        code = code_pb2.OK
    elif http_status in codes:
        code = codes[http_status]
    elif 400 <= http_status < 500:
        code = code_pb2.FAILED_PRECONDITION
    elif http_status >= 500:
        code = code_pb2.INTERNAL
    else:
        code = code_pb2.UNKNOWN
    return code, f"{code_pb2.Code.Name(code)}({code}): HTTP status code {http_status}"


def retry_after_seconds(value: str | None) -> float | None:
    """A numeric Retry-After header (Cloud Tasks considers it on 429/503); dates are ignored."""
    if not value:
        return None
    try:
        parsed = float(value.strip())
    except ValueError:
        return None
    return parsed if parsed >= 0 else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def oidc_token(service_account_email: str, audience: str, now: float | None = None) -> str:
    """A JWT with the claims Google puts in a Cloud Tasks OIDC token (aud, email, iss ...).

    It is NOT signed (an RFC 7519 unsecured JWT, alg "none", empty signature), so nothing can verify
    it: a handler that checks signatures must skip that check offline, and must never accept such
    a token in production."""
    issued = int(now if now is not None else time.time())
    header = {"alg": "none", "typ": "JWT"}
    claims = {
        "aud": audience,
        "azp": service_account_email,
        "email": service_account_email,
        "email_verified": True,
        "iat": issued,
        "exp": issued + 3600,
        "iss": "https://accounts.google.com",
        "sub": service_account_email,
    }
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."
