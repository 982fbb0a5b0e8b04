"""One thread that runs callbacks at given times: thousands of pending timers cost a heap entry
each, not a thread each."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, name: str) -> None:
        self._name = name
        self._cond = threading.Condition()
        # (due monotonic time, tie-breaker, callback); the counter keeps equal times in order
        # and spares comparing callbacks.
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._heap)

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the scheduler thread at monotonic time ``when`` (at once if past).

        Callbacks must be quick: a slow one delays every later one.
        """
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._counter), callback))
            if self._heap[0][2] is callback:
                self._cond.notify()  # a new earliest entry: the loop must shorten its sleep

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    self._cond.wait(None if not self._heap else self._heap[0][0] - now)
                if self._stopped:
                    return
                due = []
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
            for callback in due:
                try:
                    callback()
                except Exception:  # one bad callback must not stop the others
                    log.exception("%s: a scheduled callback failed", self._name)
