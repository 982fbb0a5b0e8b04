"""When a submitted job's result is looked for: the deadline checks' schedule.

RESULT_DELIVERY says where results come from:

- `webhook`: the API's completion webhook; the first check comes after FIRST_CHECK_SECONDS (the
  model's seconds plus the API's minute of webhook retries), then every RECONCILE_AFTER_SECONDS.
- `poll`: no webhook URL is sent; checks alone bring the result.
- `auto` (the default): a webhook is asked for, and checks poll on the same schedule as `poll`,
  so an endpoint that never sends webhooks (a resale proxy), sends them for some predictions, or
  loses them (Replicate's retries end a minute after completion) still completes at the model's
  pace. A check of a job the webhook already settled is one record read.

Polling starts at about the model's run time plus a margin — learned from the run times this
instance has seen in finished predictions (`RunTimes`: created→completed, the API's own
timestamps, or `metrics.predict_time`), never earlier than POLL_FIRST_CHECK_SECONDS — and backs
off ×2 with ±20 % jitter up to RECONCILE_AFTER_SECONDS. One delayed task at a time per job, on the
deadlines queue, whose dispatch rate keeps the checks' GETs within the API's budget.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from typing import Any

from bgremove import times
from bgremove.config import Config

WEBHOOK, POLL, AUTO = "webhook", "poll", "auto"
# The first poll waits for the slow end of recent run times (90th percentile), with this margin:
# the created->completed time includes queueing at the API, and a poll too early costs a GET.
MARGIN_FACTOR = 1.25
MARGIN_SECONDS = 2.0
BACKOFF = 2.0
JITTER = 0.2
WINDOW = 64  # run times remembered per instance


class RunTimes:
    """Recent created->completed times of finished predictions seen by this instance."""

    def __init__(self, window: int = WINDOW) -> None:
        self._seen: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def observe(self, raw: dict[str, Any]) -> None:
        """Learn from a finished prediction's body (its timestamps, else its metrics)."""
        seconds = _run_time(raw)
        if seconds is not None:
            with self._lock:
                self._seen.append(seconds)

    def slow_end(self) -> float | None:
        """The 90th percentile of what was seen, or None before anything was."""
        with self._lock:
            seen = sorted(self._seen)
        if not seen:
            return None
        return seen[min(len(seen) - 1, int(0.9 * len(seen)))]


def _run_time(raw: dict[str, Any]) -> float | None:
    created, completed = times.parse(raw.get("created_at")), times.parse(raw.get("completed_at"))
    if created is not None and completed is not None and completed >= created:
        return completed - created
    metrics = raw.get("metrics")
    total = metrics.get("total_time") or metrics.get("predict_time") if isinstance(metrics, dict) else None
    return float(total) if isinstance(total, int | float) and total >= 0 else None


def polls(cfg: Config) -> bool:
    return cfg.result_delivery in (POLL, AUTO)


def first_check(cfg: Config, run_times: RunTimes) -> float:
    """Seconds from a prediction's creation to its first check."""
    if not polls(cfg):
        return float(min(cfg.first_check_seconds, cfg.reconcile_after_seconds))
    learned = run_times.slow_end()
    expected = learned * MARGIN_FACTOR + MARGIN_SECONDS if learned is not None else 0.0
    return float(min(max(cfg.poll_first_check_seconds, expected), cfg.reconcile_after_seconds))


def next_check(cfg: Config, previous: float, rng: random.Random | None = None) -> float:
    """Seconds to the next check of a prediction still running, `previous` after the last."""
    if not polls(cfg) or previous <= 0:
        return float(cfg.reconcile_after_seconds)
    jitter = 1.0 + (rng or random).uniform(-JITTER, JITTER)
    return float(min(previous * BACKOFF * jitter, cfg.reconcile_after_seconds))
