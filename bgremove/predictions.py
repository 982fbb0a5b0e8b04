"""Client for a Replicate-style predictions API (the official one or a compatible proxy).

Transient answers (429, 5xx, connection errors, timeouts) are retried here with capped exponential
backoff and full jitter, honouring a whole-second Retry-After; when the budget is spent,
`errors.ApiUnavailable` (a RetryLater) tells the caller to let the platform retry later. Answers
that will not change on retry (401, 402, 413, 422, other 4xx) raise `errors.ApiRefused` at once.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from bgremove import metrics
from bgremove.errors import ApiAnswerUnknown, ApiRefused, ApiUnavailable

TERMINAL_STATUSES = ("succeeded", "failed", "canceled", "aborted")
RETRYABLE_STATUSES = (408, 429, 500, 502, 503, 504)


# The names callers know the two outcomes by; both live in bgremove.errors.
PermanentError = ApiRefused
TransientError = ApiUnavailable


@dataclass(frozen=True)
class Prediction:
    id: str
    status: str
    version: str = ""
    output: str | None = None
    error: str = ""
    webhook: str = ""
    data_removed: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_json(cls, data: Any) -> Prediction:
        """Parse defensively: unknown fields and statuses are accepted, wrong types refused."""
        if not isinstance(data, dict):
            raise ValueError("prediction is not a JSON object")
        pid, status = data.get("id"), data.get("status")
        if not isinstance(pid, str) or not pid or len(pid) > 128:
            raise ValueError("prediction id is missing or not a string")
        if not isinstance(status, str) or not status:
            raise ValueError("prediction status is missing or not a string")
        version = data.get("version") or ""
        if not isinstance(version, str):
            raise ValueError("prediction version is not a string")
        output = data.get("output")
        # The model returns one URL; accept a one-item list too.
        if isinstance(output, list) and len(output) == 1:
            output = output[0]
        if output is not None and not isinstance(output, str):
            raise ValueError("prediction output is not a URL string")
        error = data.get("error")
        webhook = data.get("webhook") or ""
        return cls(
            id=pid,
            status=status,
            version=version,
            output=output,
            error="" if error is None else str(error),
            webhook=webhook if isinstance(webhook, str) else "",
            data_removed=bool(data.get("data_removed")),
            raw=data,
        )


def from_create_answer(data: Any) -> Prediction:
    """A create's answer: a prediction (Replicate's own), possibly with a resale proxy's
    synchronous result beside it (`{"created": <unix>, "data": [{"url": …}, …]}`), or that result
    alone. A result is a succeeded prediction with those URLs (the model gives one), so the task
    handler settles the job from it with no webhook and no poll; a proxy answer without an id gets
    one derived from its result (stable, so a retried settlement names the same prediction).
    Anything else raises ApiAnswerUnknown quoting the answer's first bytes."""
    urls = _proxy_urls(data)
    if isinstance(data, dict) and isinstance(data.get("id"), str) and data.get("id"):
        if urls and not Prediction.from_json(data).is_terminal:
            return Prediction.from_json({**data, "status": "succeeded", "output": urls[0]})
        return Prediction.from_json(data)
    if urls:
        digest = hashlib.sha256("\n".join(urls).encode()).hexdigest()[:24]
        return Prediction.from_json({"id": f"sync-{digest}", "status": "succeeded", "output": urls[0], **data})
    raise ApiAnswerUnknown(f"the create answer is not a prediction: {_first_bytes(data)}")


def _proxy_urls(data: Any) -> list[str]:
    if not isinstance(data, dict) or not isinstance(data.get("data"), list) or "created" not in data:
        return []
    urls = [item.get("url") for item in data["data"] if isinstance(item, dict)]
    return [u for u in urls if isinstance(u, str) and u]


def _first_bytes(data: Any) -> str:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), default=str)
    return text[:200]


class PredictionsClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        timeout: float = 10.0,
        max_attempts: int = 4,
        backoff_seconds: float = 0.5,
        backoff_max_seconds: float = 8.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.session = session or requests.Session()
        self._sleep = sleep

    def create(
        self, version: str, image: str, webhook: str, cancel_after: str = "", wait_seconds: int = 0
    ) -> Prediction:
        """Create a prediction; without `webhook` none is asked for (RESULT_DELIVERY=poll).
        `wait_seconds` asks for a synchronous answer (`Prefer: wait=N`)."""
        body: dict[str, Any] = {"version": version, "input": {"image": image}}
        if webhook:
            body.update(webhook=webhook, webhook_events_filter=["completed"])
        headers = {"Cancel-After": cancel_after} if cancel_after else {}
        timeout = self.timeout
        if wait_seconds:
            headers["Prefer"] = f"wait={wait_seconds}"
            timeout = max(self.timeout, wait_seconds + self.timeout)
        return from_create_answer(self._call("POST", "/predictions", json=body, headers=headers, timeout=timeout))

    def get(self, prediction_id: str) -> Prediction | None:
        """The prediction, or None when the API no longer knows it (404)."""
        try:
            return Prediction.from_json(self._call("GET", f"/predictions/{prediction_id}"))
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise

    def cancel(self, prediction_id: str) -> Prediction:
        return Prediction.from_json(self._call("POST", f"/predictions/{prediction_id}/cancel"))

    def webhook_secret(self) -> str:
        return str(self._call("GET", "/webhooks/default/secret")["key"])

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self._token}", **kwargs.pop("headers", {})}
        timeout = kwargs.pop("timeout", self.timeout)
        url = self.base_url + path
        last = ""
        retry_after: float | None = None
        status: int | None = None
        for attempt in range(1, self.max_attempts + 1):
            retry_after, status = None, None
            try:
                response = self.session.request(
                    method, url, headers=headers, timeout=timeout, allow_redirects=False, **kwargs
                )
            except requests.RequestException as exc:  # connection, timeout, broken chunked body …
                last = f"{type(exc).__name__} calling {method} {path}"
            else:
                if response.status_code < 300:
                    try:
                        return response.json()
                    except ValueError:
                        if path == "/predictions":  # a create that was answered 2xx is never repeated
                            raise ApiAnswerUnknown(
                                f"{method} {path} answered {response.status_code} with a body that is not JSON: "
                                f"{response.text[:200]!r}"
                            ) from None
                        last = f"{method} {path} answered {response.status_code} with a body that is not JSON"
                elif response.status_code in RETRYABLE_STATUSES:
                    status = response.status_code
                    last = f"{method} {path} answered {status}: {_detail(response)}"
                    retry_after = _retry_after(response)
                    if status == 429:
                        metrics.emit(
                            metrics.Event.API_THROTTLED,
                            "WARNING",
                            f"predictions API throttled {method} {_path_kind(path)}",
                            status=status,
                            method=method,
                            path=_path_kind(path),
                            retry_after=retry_after,
                        )
                else:
                    raise ApiRefused(
                        f"{method} {path} answered {response.status_code}: {_detail(response)}",
                        response.status_code,
                    )
            if attempt < self.max_attempts:
                self._sleep(self._delay(attempt, retry_after))
        raise ApiUnavailable(f"gave up after {self.max_attempts} attempts; last: {last}", status, retry_after)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.backoff_max_seconds * 4)
        cap = min(self.backoff_max_seconds, self.backoff_seconds * 2 ** (attempt - 1))
        return random.uniform(0, cap)


def _path_kind(path: str) -> str:
    """The path without ids, so the line groups by operation ("/predictions/{id}")."""
    parts = path.split("/")
    return "/".join(p if i < 2 or p in ("cancel",) else "{id}" for i, p in enumerate(parts))


def _retry_after(response: requests.Response) -> float | None:
    """A whole-second Retry-After (the only form HTTP allows besides a date, which we ignore)."""
    value = response.headers.get("Retry-After", "").strip()
    if not value.isascii() or not value.isdigit() or len(value) > 6:
        return None
    return float(value)


def _detail(response: requests.Response) -> str:
    """The problem-details text of an error answer, shortened for a log line."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(data, dict):
        return str(data.get("detail") or data.get("title") or data)[:200]
    return str(data)[:200]
