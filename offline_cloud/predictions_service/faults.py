"""Fault-injection knobs, so clients can be tested against a misbehaving service.

Most rates are rolled afresh at each decision (seeded by ``seed``). The two that play an endpoint
which loses a prediction's webhooks (``webhooks_sent_rate``, ``webhook_301_rate``) are decided
once per prediction, at its create, from a hash of the knob's name and the prediction id
(``per_prediction_draw``), so a test can tell from the id alone which predictions are hit.
``create_answer_shape`` is not a rate but one of ``ANSWER_SHAPES``.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
from typing import Any

DEFAULT_KNOBS: dict[str, Any] = {
    "model_latency_seconds": 0.0,
    "fail_rate": 0.0,
    "create_429_rate": 0.0,
    "create_5xx_rate": 0.0,
    "get_429_rate": 0.0,
    "get_5xx_rate": 0.0,
    "retry_after_seconds": 1.0,
    "webhook_drop_rate": 0.0,
    "webhook_duplicate_rate": 0.0,
    "webhook_delay_seconds": 0.0,
    "webhook_reorder_rate": 0.0,
    # Per prediction: the share whose webhooks are sent at all (1.0: every one, Replicate's own).
    "webhooks_sent_rate": 1.0,
    # Per prediction: the share whose webhook URL answers every delivery 301 (never followed).
    "webhook_301_rate": 0.0,
    "create_answer_shape": "prediction",
    "seed": None,
}
# How a create is answered: Replicate's prediction (201, at once unless ``Prefer: wait``); a
# resale proxy's ``{"created", "data": [{"url"}]}`` beside the prediction fields or alone, both
# after waiting for the outcome; or a shape no client knows, ``{"result": "ok"}``.
ANSWER_SHAPES = ("prediction", "prediction+data", "data_only", "unknown")
CHOICE_KNOBS: dict[str, tuple[str, ...]] = {"create_answer_shape": ANSWER_SHAPES}
RATE_KNOBS = frozenset(name for name in DEFAULT_KNOBS if name.endswith("_rate"))
PER_PREDICTION_KNOBS = frozenset({"webhooks_sent_rate", "webhook_301_rate"})
SECONDS_KNOBS = frozenset(name for name in DEFAULT_KNOBS if name.endswith("_seconds"))


def per_prediction_draw(knob: str, prediction_id: str) -> float:
    """A number in [0, 1) fixed by the knob's name and the prediction id: a per-prediction knob
    hits the prediction when this is below its rate. Independent of ``seed`` and of other knobs."""
    digest = hashlib.sha256(f"{knob}:{prediction_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _validate(name: str, value: Any) -> Any:
    if name not in DEFAULT_KNOBS:
        raise ValueError(f"unknown fault knob {name!r}; known: {sorted(DEFAULT_KNOBS)}")
    if name == "seed":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError("seed must be an integer or null")
        return value
    if name in CHOICE_KNOBS:
        if value not in CHOICE_KNOBS[name]:
            raise ValueError(f"{name} must be one of {list(CHOICE_KNOBS[name])}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number")
    if name in RATE_KNOBS and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1")
    if name in SECONDS_KNOBS and value < 0:
        raise ValueError(f"{name} must not be negative")
    return float(value)


class Faults:
    """Current knobs plus one random stream per rolled rate knob.

    Separate streams keep each knob's sequence of decisions reproducible under a seed even when
    decisions for different knobs interleave across threads.
    """

    def __init__(self, initial: dict[str, Any] | None = None) -> None:
        self._lock = threading.Lock()
        self._knobs = dict(DEFAULT_KNOBS)
        self._rngs: dict[str, random.Random] = {}
        self._reseed(None)
        if initial:
            self.update(initial)

    def _reseed(self, seed: int | None) -> None:
        self._rngs = {
            name: random.Random(None if seed is None else f"{seed}:{name}")
            for name in RATE_KNOBS - PER_PREDICTION_KNOBS
        }

    def get(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._knobs)

    def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge ``changes`` (all validated first, so a bad body changes nothing)."""
        validated = {name: _validate(name, value) for name, value in changes.items()}
        with self._lock:
            self._knobs.update(validated)
            if "seed" in validated:
                self._reseed(validated["seed"])
            return dict(self._knobs)

    def reset(self) -> dict[str, Any]:
        with self._lock:
            self._knobs = dict(DEFAULT_KNOBS)
            self._reseed(None)
            return dict(self._knobs)

    def choice(self, name: str) -> str:
        with self._lock:
            return str(self._knobs[name])

    def seconds(self, name: str) -> float:
        with self._lock:
            return float(self._knobs[name])

    def roll(self, name: str) -> bool:
        """True with probability ``knob``; rates 0 and 1 are exact and consume no randomness."""
        with self._lock:
            rate = float(self._knobs[name])
            if rate <= 0.0:
                return False
            if rate >= 1.0:
                return True
            return self._rngs[name].random() < rate

    def hits(self, name: str, prediction_id: str) -> bool:
        """A per-prediction knob's decision for this prediction; rates 0 and 1 are exact."""
        assert name in PER_PREDICTION_KNOBS
        with self._lock:
            rate = float(self._knobs[name])
        if rate <= 0.0:
            return False
        return rate >= 1.0 or per_prediction_draw(name, prediction_id) < rate
