"""Counters that tests read through ``GET /_admin/stats``."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

FAULT_COUNTERS = (
    "create_429",
    "create_5xx",
    "get_429",
    "get_5xx",
    "failed_predictions",
    "webhooks_dropped",
    "webhooks_duplicated",
    "webhooks_delayed",
    "webhooks_reordered",
    # Per prediction, counted at its create (only predictions given a webhook).
    "webhooks_not_sent",
    "webhooks_answered_301",
)
THROTTLE_COUNTERS = ("create", "other")
# Bounded so a long soak test cannot grow the process without limit.
MAX_DELIVERIES = 10_000


class Stats:
    def __init__(self, mode: str = "model") -> None:
        # "model" (u2netp runs) or "fleet" (the stand-in): every stats answer says which.
        self.mode = mode
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._created: list[str] = []
            self._faults = dict.fromkeys(FAULT_COUNTERS, 0)
            # Answers of the rate limiter, kept apart from injected faults.
            self._throttled = dict.fromkeys(THROTTLE_COUNTERS, 0)
            self._deliveries: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_DELIVERIES)

    def prediction_created(self, prediction_id: str) -> None:
        with self._lock:
            self._created.append(prediction_id)

    def fault(self, name: str) -> None:
        with self._lock:
            self._faults[name] += 1

    def throttled(self, kind: str) -> None:
        with self._lock:
            self._throttled[kind] += 1

    def delivery(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._deliveries.append(record)

    def snapshot(self, status_of: Callable[[str], str | None]) -> dict[str, Any]:
        """``by_status`` counts the predictions created since the last reset by current status."""
        with self._lock:
            created = list(self._created)
            faults = dict(self._faults)
            throttled = dict(self._throttled)
            deliveries = list(self._deliveries)
        by_status: dict[str, int] = {}
        for prediction_id in created:
            status = status_of(prediction_id)
            if status is not None:
                by_status[status] = by_status.get(status, 0) + 1
        return {
            "mode": self.mode,
            "predictions_created": len(created),
            "by_status": by_status,
            "faults": faults,
            "throttled": throttled,
            "webhook_deliveries": deliveries,
        }
