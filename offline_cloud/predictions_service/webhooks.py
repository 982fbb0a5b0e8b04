"""Signed webhook deliveries (Standard Webhooks), one ordered background queue per prediction."""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Sequence
from typing import Any

import requests

from .faults import Faults
from .stats import Stats
from .store import iso

log = logging.getLogger(__name__)
TERMINAL_EVENT = "completed"


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def new_webhook_id() -> str:
    return "msg_" + secrets.token_hex(12)


def stale_copy(snapshot: dict[str, Any]) -> dict[str, Any]:
    """What an earlier ``start``/``logs`` event carried: still processing, no output yet."""
    stale: dict[str, Any] = json.loads(json.dumps(snapshot))
    stale.update(
        status="processing",
        output=None,
        error=None,
        completed_at=None,
        data_removed=False,
        metrics={"predict_time": None, "total_time": None},
    )
    return stale


class WebhookDispatcher:
    def __init__(
        self,
        secret: str,
        retry_delays: Sequence[float],
        timeout: float,
        faults: Faults,
        stats: Stats,
        stopping: threading.Event,
    ) -> None:
        self.secret = secret
        self.retry_delays = tuple(retry_delays)
        self.timeout = timeout
        self.faults = faults
        self.stats = stats
        self.stopping = stopping
        self._lock = threading.Lock()
        # Pending events of predictions that have a delivery thread right now.
        self._pending: dict[str, collections.deque[tuple[str, dict[str, Any]]]] = {}

    def emit(self, event: str, snapshot: dict[str, Any], url: str | None, events_filter: Sequence[str]) -> None:
        """Queue an event for the prediction's webhook; never blocks the caller.

        Events the filter leaves out are dropped here, so a prediction costs no thread until it
        has something to deliver.
        """
        if not url or event not in events_filter:
            return
        prediction_id = snapshot["id"]
        with self._lock:
            pending = self._pending.get(prediction_id)
            if pending is not None:
                pending.append((event, snapshot))
                return
            self._pending[prediction_id] = collections.deque([(event, snapshot)])
        # At most one thread per prediction keeps its deliveries in order without one slow
        # receiver holding up the webhooks of other predictions. It ends once nothing is
        # pending, so with thousands of predictions in flight only those mid-delivery (or
        # between terminal retries) hold a thread.
        try:
            threading.Thread(
                target=self._run, args=(prediction_id, url), name=f"webhooks-{prediction_id}", daemon=True
            ).start()
        except RuntimeError:  # out of threads: lose these deliveries, as a real sender may
            log.exception("no thread for the webhooks of %s", prediction_id)
            with self._lock:
                self._pending.pop(prediction_id, None)

    def _run(self, prediction_id: str, url: str) -> None:
        while True:
            with self._lock:
                pending = self._pending[prediction_id]
                if not pending:
                    del self._pending[prediction_id]
                    return
                event, snapshot = pending.popleft()
            try:
                if event == TERMINAL_EVENT:
                    self._terminal(url, snapshot)
                else:
                    self._deliver(url, event, snapshot, new_webhook_id(), retries=())
            except Exception:
                log.exception("webhook delivery for %s crashed", prediction_id)

    def _terminal(self, url: str, snapshot: dict[str, Any]) -> None:
        prediction_id = snapshot["id"]
        if self.faults.roll("webhook_drop_rate"):
            self.stats.fault("webhooks_dropped")
            log.info("fault: dropping terminal webhook of %s", prediction_id)
            return
        delay = self.faults.seconds("webhook_delay_seconds")
        if delay > 0:
            self.stats.fault("webhooks_delayed")
            if self.stopping.wait(delay):
                return
        webhook_id = new_webhook_id()
        self._deliver(url, TERMINAL_EVENT, snapshot, webhook_id, retries=self.retry_delays)
        if self.faults.roll("webhook_duplicate_rate"):
            self.stats.fault("webhooks_duplicated")
            self._deliver(url, TERMINAL_EVENT, snapshot, webhook_id, retries=(), kind="duplicate")
        if self.faults.roll("webhook_reorder_rate"):
            self.stats.fault("webhooks_reordered")
            self._deliver(url, "logs", stale_copy(snapshot), new_webhook_id(), retries=(), kind="reordered")

    def _deliver(
        self,
        url: str,
        event: str,
        snapshot: dict[str, Any],
        webhook_id: str,
        retries: Sequence[float],
        kind: str = "delivery",
    ) -> bool:
        """POST with the same webhook-id on every attempt; True once a 2xx answer came."""
        body = json.dumps(snapshot, separators=(",", ":")).encode()
        delays = [0.0, *retries]
        for attempt, delay in enumerate(delays, start=1):
            if delay and self.stopping.wait(delay):
                return False
            timestamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "offline-cloud-predictions/1",
                "webhook-id": webhook_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(self.secret, webhook_id, timestamp, body),
            }
            record: dict[str, Any] = {
                "webhook_id": webhook_id,
                "prediction_id": snapshot["id"],
                "event": event,
                "prediction_status": snapshot["status"],
                "kind": kind,
                "attempt": attempt,
                "status_code": None,
                "error": None,
                # A redirect's Location: recorded, never followed.
                "location": None,
            }
            began = time.monotonic()
            try:
                # A redirect is a failed delivery, as on the real service.
                response = requests.post(url, data=body, headers=headers, timeout=self.timeout, allow_redirects=False)
                response.close()
                record["status_code"] = response.status_code
                if response.is_redirect:
                    record["location"] = response.headers.get("Location")
                ok = 200 <= response.status_code < 300
            except requests.RequestException as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"
                ok = False
            record["at"] = iso(time.time())
            record["duration_seconds"] = round(time.monotonic() - began, 6)
            self.stats.delivery(record)
            log.info(
                "webhook %s (%s %s, %s) attempt %d -> %s%s",
                webhook_id,
                snapshot["id"],
                event,
                kind,
                attempt,
                record["status_code"] or record["error"],
                f" (redirect to {record['location']} not followed: delivery failed)" if record["location"] else "",
            )
            if ok:
                return True
        return False
