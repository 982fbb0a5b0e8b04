"""Token-bucket rate limits, as Replicate applies them to an account.

Two buckets: prediction creates (600 a minute, burst 600, by default) and every other API call
(3000 a minute, burst 3000). A bucket holds at most ``burst`` tokens, refills at the per-minute
rate and each admitted request takes one token; an empty bucket answers 429 until the next token
arrives. ``6`` a minute with a burst of ``1`` plays an account low on credit.

One lock and a few float operations per request: cheap enough for hundreds of requests a second.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

CREATE = "create"
OTHER = "other"
KINDS = (CREATE, OTHER)


def whole_seconds(seconds: float) -> int:
    """HTTP's Retry-After takes whole seconds only: round up, never below 1.

    The small tolerance keeps float noise (10.000000001) from adding a second.
    """
    return max(1, math.ceil(seconds - 1e-9))


@dataclass(frozen=True)
class Decision:
    allowed: bool
    # Seconds until the next token (0 when allowed and a token is left).
    wait_seconds: float
    # Whole tokens left after this request.
    remaining: int


class TokenBucket:
    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.rate = per_minute / 60.0
        self.capacity = float(burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = self.capacity  # a fresh account starts with its whole burst
        self._updated = clock()

    def take(self) -> Decision:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                wait = 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate
                return Decision(True, wait, int(self._tokens))
            return Decision(False, (1.0 - self._tokens) / self.rate, 0)


class RateLimits:
    """The create and other buckets; a limit of 0 leaves that kind unlimited."""

    def __init__(
        self,
        create_per_minute: float,
        create_burst: int,
        other_per_minute: float,
        other_burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._buckets: dict[str, TokenBucket | None] = {
            CREATE: TokenBucket(create_per_minute, create_burst, clock) if create_per_minute > 0 else None,
            OTHER: TokenBucket(other_per_minute, other_burst, clock) if other_per_minute > 0 else None,
        }
        self.describe = {
            CREATE: f"{create_per_minute:g}/min burst {create_burst}" if create_per_minute > 0 else "unlimited",
            OTHER: f"{other_per_minute:g}/min burst {other_burst}" if other_per_minute > 0 else "unlimited",
        }

    def take(self, kind: str) -> Decision | None:
        """None when ``kind`` is unlimited."""
        bucket = self._buckets[kind]
        return None if bucket is None else bucket.take()
