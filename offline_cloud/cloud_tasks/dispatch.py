"""Dispatch: one scheduler thread hands due requests to a bounded pool of sender threads.

The scheduler sleeps on the emulator's condition variable until the earliest due time or token of
any running queue, or until something changes (a task is created, a queue resumed or updated, a
request ends); it never polls. Each sender thread keeps its own requests.Session, so connections to
a target are reused. A queue's concurrency is therefore at most min(max_concurrent_dispatches, pool
size), and all queues share the pool.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

import requests

from offline_cloud.cloud_tasks import rules
from offline_cloud.cloud_tasks.queues import Emulator, Job

log = logging.getLogger("offline_cloud.cloud_tasks")

_MAX_SLEEP = 30.0  # re-check now and then anyway, so a wall-clock jump cannot stall a queue for long


class DispatchLog:
    """The recent dispatch records in memory (for GET /log) and, optionally, as JSON lines in a file."""

    def __init__(self, capacity: int, path: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._records: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._file: IO[str] | None = path.open("a", encoding="utf-8") if path is not None else None

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record)
        with self._lock:
            self._records.append(record)
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()

    def recent(self, queue: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            records = [r for r in self._records if queue is None or r["queue"] == queue]
        return records[-limit:] if limit else records

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class Dispatcher:
    def __init__(self, emulator: Emulator, dispatch_log: DispatchLog) -> None:
        self.emulator = emulator
        self.log = dispatch_log
        self._work: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        size = self.emulator.settings.pool_size
        self._threads = [threading.Thread(target=self._schedule, name="cloud-tasks-scheduler", daemon=True)]
        self._threads += [
            threading.Thread(target=self._send_loop, name=f"cloud-tasks-sender-{i}", daemon=True) for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop handing out requests; senders finish (or abandon, being daemons) what they hold."""
        with self.emulator.cond:
            self.emulator.stopped = True
            self.emulator.cond.notify_all()
        for _ in self._threads[1:]:
            self._work.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _schedule(self) -> None:
        emulator = self.emulator
        while True:
            with emulator.cond:
                if emulator.stopped:
                    return
                now = time.time()
                jobs, wake = emulator.take_ready(now)
                if not jobs:
                    emulator.cond.wait(_MAX_SLEEP if wake is None else min(_MAX_SLEEP, max(0.0, wake - now)))
                    continue
            for job in jobs:
                self._work.put(job)

    def _send_loop(self) -> None:
        session = requests.Session()  # one per thread: Session is not thread-safe, connections reuse
        while True:
            job = self._work.get()
            if job is None:
                session.close()
                return
            try:
                self._send(session, job)
            except Exception:  # a lost sender would shrink the pool for good; log and carry on
                log.exception("cloud tasks: recording the dispatch of %s failed", job.task_name)

    def _send(self, session: requests.Session, job: Job) -> None:
        started = time.time()
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        try:
            # The dispatch deadline is the request's timeout (connect and each read).
            response = session.request(job.method, job.url, headers=job.headers, data=job.body, timeout=job.timeout)
            _ = response.content  # read it all, so the connection goes back to the pool
            status = response.status_code
            retry_after = rules.retry_after_seconds(response.headers.get("Retry-After"))
        except requests.Timeout:
            error = "timeout"
        except Exception as exc:  # refused, reset, a header http.client rejects ...: the attempt failed
            error = type(exc).__name__
        ended = time.time()
        with self.emulator.cond:
            outcome = self.emulator.finish(job, status, error, retry_after, ended)
        record = {
            "at": ended,
            "queue": str(job.queue.name),
            "task": job.task_name,
            "attempt": job.attempt,
            "retry_count": int(job.headers["X-CloudTasks-TaskRetryCount"]),
            "duplicate": job.duplicate,
            "method": job.method,
            "url": job.url,
            "dispatched_at": started,
            "duration_seconds": round(ended - started, 6),
            "status": status,
            "error": error,
            **outcome,
        }
        self.log.write(record)
