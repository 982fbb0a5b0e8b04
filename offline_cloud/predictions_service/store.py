"""Predictions in memory, with every status change made under one lock."""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})
ALL_EVENTS = ("start", "output", "logs", "completed")
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_prediction_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Prediction:
    id: str
    model: str
    version: str
    input: dict[str, Any]
    prefix: str
    webhook: str | None
    webhook_events_filter: list[str]
    created_at: float = field(default_factory=time.time)
    status: str = "starting"
    logs: str = ""
    output: str | None = None
    error: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    # Wall-clock time Cancel-After ends it (created_at + the header's duration), if given.
    deadline: float | None = None
    data_removed: bool = False
    # Set on every move to a terminal status: it wakes a worker sleeping on a canceled or aborted
    # prediction, and a ``Prefer: wait`` request waiting for the outcome.
    stop: threading.Event = field(default_factory=threading.Event)
    # Decided at create by the per-prediction knobs (faults.py), never shown in the API's view:
    # False when its webhooks are not sent at all (``webhooks_sent_rate``); the redirecting hop's
    # URL its deliveries go to instead of ``webhook`` (``webhook_301_rate``).
    webhooks_sent: bool = True
    webhook_via: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def delivery_url(self) -> str | None:
        """Where its webhook deliveries are posted, or None for none."""
        if self.webhook is None or not self.webhooks_sent:
            return None
        return self.webhook_via or self.webhook

    def to_json(self, public_base: str, echo_webhook: bool = False) -> dict[str, Any]:
        """The API's view. ``webhook`` and ``webhook_events_filter`` only when ``echo_webhook``:
        Replicate's published prediction schema has neither, so clients must not depend on them.
        ``urls.stream`` is left out, not null: the model does not stream, and the official client
        types ``urls`` as ``Dict[str, str]``, so a null value would fail its validation."""
        base = f"{public_base}{self.prefix}/predictions/{self.id}"
        predict_time = total_time = None
        if self.completed_at is not None:
            total_time = round(self.completed_at - self.created_at, 6)
            if self.started_at is not None:
                predict_time = round(self.completed_at - self.started_at, 6)
        body: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "input": self.input,
            "logs": self.logs,
            "output": self.output,
            "error": self.error,
            "status": self.status,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "completed_at": iso(self.completed_at),
            "urls": {"get": base, "cancel": f"{base}/cancel", "web": f"{public_base}/p/{self.id}"},
            "metrics": {"predict_time": predict_time, "total_time": total_time},
            "data_removed": self.data_removed,
            "deadline": iso(self.deadline),
        }
        if echo_webhook:
            body["webhook"] = self.webhook
            body["webhook_events_filter"] = list(self.webhook_events_filter)
        return body


# (event, snapshot, delivery URL, events filter): the URL and filter travel beside the snapshot
# because the snapshot itself may not carry them (see ``Prediction.to_json``). The URL is
# ``Prediction.delivery_url``: the webhook, the 301 hop in front of it, or None (nothing is sent).
EventListener = Callable[[str, dict[str, Any], str | None, tuple[str, ...]], None]


class PredictionStore:
    """``on_event(event, snapshot, webhook, events_filter)`` is called under the lock, so listeners
    see events in the order of the changes; it must not block (the webhook dispatcher only queues)."""

    def __init__(self, public_base: str, on_event: EventListener | None = None, echo_webhook: bool = False) -> None:
        self.public_base = public_base
        self.on_event = on_event
        self.echo_webhook = echo_webhook
        self._lock = threading.Lock()
        self._items: dict[str, Prediction] = {}

    def _emit(self, event: str, prediction: Prediction) -> dict[str, Any]:
        snapshot = self._json(prediction)
        if self.on_event is not None:
            self.on_event(event, snapshot, prediction.delivery_url, tuple(prediction.webhook_events_filter))
        return snapshot

    def _json(self, prediction: Prediction) -> dict[str, Any]:
        return prediction.to_json(self.public_base, self.echo_webhook)

    def add(self, prediction: Prediction) -> dict[str, Any]:
        with self._lock:
            self._items[prediction.id] = prediction
            return self._json(prediction)

    def get(self, prediction_id: str) -> Prediction | None:
        with self._lock:
            return self._items.get(prediction_id)

    def snapshot(self, prediction_id: str) -> dict[str, Any] | None:
        with self._lock:
            prediction = self._items.get(prediction_id)
            return None if prediction is None else self._json(prediction)

    def status_of(self, prediction_id: str) -> str | None:
        with self._lock:
            prediction = self._items.get(prediction_id)
            return None if prediction is None else prediction.status

    def count(self) -> int:
        with self._lock:
            return len(self._items)

    def listing(self) -> list[dict[str, Any]]:
        """Every prediction, newest first."""
        with self._lock:
            items = sorted(self._items.values(), key=lambda p: p.created_at, reverse=True)
            return [self._json(p) for p in items]

    def webhooks(self) -> list[dict[str, Any]]:
        """Every prediction's id, status and the webhook URL it was created with, whatever the echo
        setting: what the service was asked, for tests and soaks that count predictions per job.
        ``webhooks_sent`` (null without a webhook) and ``webhook_answered_301`` say what the
        per-prediction knobs decided for it."""
        with self._lock:
            return [
                {
                    "id": p.id,
                    "status": p.status,
                    "webhook": p.webhook,
                    "webhooks_sent": None if p.webhook is None else p.webhooks_sent,
                    "webhook_answered_301": p.webhook_via is not None,
                }
                for p in self._items.values()
            ]

    def start(self, prediction_id: str) -> dict[str, Any] | None:
        """starting -> processing; None when it was canceled or aborted meanwhile."""
        with self._lock:
            prediction = self._items[prediction_id]
            if prediction.status != "starting":
                return None
            prediction.status = "processing"
            prediction.started_at = time.time()
            return self._emit("start", prediction)

    def log(self, prediction_id: str, line: str) -> dict[str, Any] | None:
        with self._lock:
            prediction = self._items[prediction_id]
            if prediction.terminal:
                return None
            prediction.logs += line + "\n"
            return self._emit("logs", prediction)

    def succeed(self, prediction_id: str, output: str) -> dict[str, Any] | None:
        """Set the output, then finish, under one lock so no cancel can slip in between."""
        with self._lock:
            prediction = self._items[prediction_id]
            if prediction.terminal:
                return None
            prediction.output = output
            self._emit("output", prediction)
            prediction.status = "succeeded"
            prediction.completed_at = time.time()
            prediction.stop.set()
            return self._emit("completed", prediction)

    def finish(
        self,
        prediction_id: str,
        status: str,
        error: str | None = None,
        only_if: frozenset[str] | None = None,
    ) -> dict[str, Any] | None:
        """Move to a terminal ``status`` unless already terminal (or not in ``only_if``)."""
        assert status in TERMINAL_STATUSES
        with self._lock:
            prediction = self._items.get(prediction_id)
            if prediction is None or prediction.terminal:
                return None
            if only_if is not None and prediction.status not in only_if:
                return None
            prediction.status = status
            prediction.error = error
            prediction.completed_at = time.time()
            prediction.stop.set()
            return self._emit("completed", prediction)

    def expire(self, now: float, ttl: float, prediction_id: str | None = None) -> list[str]:
        """Mark data removed on terminal predictions older than ``ttl``; returns their ids."""
        with self._lock:
            if prediction_id is None:
                candidates = list(self._items.values())
            else:
                found = self._items.get(prediction_id)
                candidates = [] if found is None else [found]
            expired = []
            for prediction in candidates:
                if (
                    prediction.terminal
                    and not prediction.data_removed
                    and prediction.completed_at is not None
                    and now - prediction.completed_at >= ttl
                ):
                    prediction.output = None
                    prediction.data_removed = True
                    expired.append(prediction.id)
            return expired
