"""The emulator's state: queues, their tasks, reserved task names, and each queue's dispatch
bookkeeping (a heap of due times, a token bucket, the in-flight count, the throttled rate).

Every method runs under one condition variable, `Emulator.cond`. The gRPC handlers call the API
methods; the dispatcher (dispatch.py) calls `take_ready` to get the requests that may go out now and
`finish` with each answer, and sleeps on the same condition until the next due time or token, so
an idle queue costs nothing and a queue of 10,000 waiting tasks costs one heap.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.cloud import tasks_v2
from google.rpc import status_pb2  # type: ignore[import-untyped]  # googleapis-common-protos has no type information

from offline_cloud.cloud_tasks import rules
from offline_cloud.cloud_tasks.rules import InvalidArgument

log = logging.getLogger("offline_cloud.cloud_tasks")

HttpMethod = tasks_v2.HttpMethod
_BODY_METHODS = {HttpMethod.POST, HttpMethod.PUT, HttpMethod.PATCH}
_METHOD_NAMES = {
    HttpMethod.POST: "POST",
    HttpMethod.GET: "GET",
    HttpMethod.HEAD: "HEAD",
    HttpMethod.PUT: "PUT",
    HttpMethod.DELETE: "DELETE",
    HttpMethod.PATCH: "PATCH",
    HttpMethod.OPTIONS: "OPTIONS",
}
_UPDATABLE = ("rate_limits", "retry_config", "http_target", "app_engine_routing_override", "stackdriver_logging_config")
_OUTPUT_ONLY = {"name", "state", "purge_time", "rate_limits.max_burst_size"}


class ApiError(Exception):
    """An RPC error with the status code the real service answers."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Settings:
    pool_size: int = 64
    name_reservation_seconds: float = rules.DEFAULT_NAME_RESERVATION
    # Production's floor is 15 s; only a test flag lowers it, so a deadline test need not wait 15 s.
    min_dispatch_deadline: float = rules.MIN_DISPATCH_DEADLINE
    log_file: Path | None = None
    log_capacity: int = 10_000


@dataclass
class Faults:
    """`duplicate_rate`: share of successful tasks dispatched once more (at-least-once delivery)."""

    duplicate_rate: float = 0.0
    seed: int | None = None


@dataclass
class RetryPolicy:
    max_attempts: int
    max_retry_duration: float
    min_backoff: float
    max_backoff: float
    max_doublings: int


@dataclass
class AttemptRecord:
    schedule_time: float
    dispatch_time: float
    response_time: float | None = None
    code: int | None = None
    message: str = ""


@dataclass
class TaskRecord:
    name: str
    task_id: str
    http_request: tasks_v2.HttpRequest
    schedule_time: float
    create_time: float
    dispatch_deadline: float
    retry_config: tasks_v2.RetryConfig | None
    generation: int = 0  # bumped whenever a heap entry for this task stops being current
    dispatch_count: int = 0
    response_count: int = 0
    execution_count: int = 0  # answers below 500: what X-CloudTasks-TaskExecutionCount counts
    first_dispatch: float | None = None
    last_attempt: AttemptRecord | None = None
    previous_response: int | None = None
    in_flight: bool = False


@dataclass
class Job:
    """One HTTP request to send, and what `finish` needs to apply its answer."""

    queue: QueueRecord
    task_name: str
    generation: int
    url: str
    method: str
    headers: dict[str, str]
    body: bytes | None
    timeout: float
    attempt: int  # the task's dispatch_count including this dispatch
    duplicate: bool = False


@dataclass
class QueueStats:
    dispatches: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    successes: int = 0
    failures: int = 0
    retries: int = 0
    throttled: int = 0
    duplicates_injected: int = 0
    dropped: int = 0
    max_in_flight: int = 0


@dataclass
class QueueRecord:
    name: rules.QueueName
    config: tasks_v2.Queue
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    # (due, sequence, task name, generation, duplicate job or None); stale entries are skipped
    heap: list[tuple[float, int, str, int, Job | None]] = field(default_factory=list)
    in_flight: int = 0
    tokens: float = 0.0
    refilled_at: float = 0.0
    effective_rate: float = 0.0
    throttled_at: float = float("-inf")
    stats: QueueStats = field(default_factory=QueueStats)

    @property
    def rate(self) -> float:
        return float(self.config.rate_limits.max_dispatches_per_second)

    @property
    def burst(self) -> int:
        return int(self.config.rate_limits.max_burst_size)

    @property
    def max_concurrent(self) -> int:
        return int(self.config.rate_limits.max_concurrent_dispatches)

    @property
    def running(self) -> bool:
        return self.config.state == tasks_v2.Queue.State.RUNNING

    def reset_rate(self, now: float) -> None:
        """Start (again) at the configured rate with a full bucket: a new or reconfigured queue."""
        self.effective_rate = self.rate
        self.tokens = float(self.burst)
        self.refilled_at = now

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.refilled_at)
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.effective_rate)
        self.refilled_at = now

    def throttle(self, now: float) -> None:
        """A 429 or 503: halve the effective rate and empty the bucket, at most once a second (the
        answers of one overload arrive together and count once), down to 1/64 of the configured rate."""
        if now - self.throttled_at < 1.0:
            return
        self.throttled_at = now
        self.refill(now)
        self.effective_rate = max(self.rate / 64.0, self.effective_rate / 2.0)
        self.tokens = min(self.tokens, 0.0)

    def recover(self, now: float) -> None:
        """A 2xx: win back 1/20 of the configured rate, so ~20 successes restore it fully."""
        if self.effective_rate < self.rate:
            self.refill(now)
            self.effective_rate = min(self.rate, self.effective_rate + self.rate / 20.0)

    def retry_policy(self, task: TaskRecord) -> RetryPolicy:
        queue_config = self.config.retry_config
        own = task.retry_config

        def pick(name: str) -> Any:
            # A task-level RetryConfig overrides the queue's, field by field where it sets one.
            if own is not None and name in own and getattr(own, name):
                return getattr(own, name)
            return getattr(queue_config, name)

        return RetryPolicy(
            max_attempts=int(pick("max_attempts")),
            max_retry_duration=rules.seconds(pick("max_retry_duration")),
            min_backoff=rules.seconds(pick("min_backoff")),
            max_backoff=rules.seconds(pick("max_backoff")),
            max_doublings=int(pick("max_doublings")),
        )


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _snake(path: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in path)


class Emulator:
    def __init__(self, settings: Settings | None = None, faults: Faults | None = None) -> None:
        self.settings = settings or Settings()
        self.faults = faults or Faults()
        self.random = random.Random(self.faults.seed)
        self.cond = threading.Condition()
        self.queues: dict[str, QueueRecord] = {}
        self._reserved: dict[str, float] = {}
        self._reserved_order: deque[tuple[float, str]] = deque()
        self._sequence = itertools.count()
        self.free_workers = self.settings.pool_size
        self.stopped = False

    # --- queues -----------------------------------------------------------------------------------

    def create_queue(self, parent: str, queue: tasks_v2.Queue) -> tasks_v2.Queue:
        name = self._queue_name(queue.name)
        if name.parent != parent:
            rules.parse_location(parent)
            raise InvalidArgument(f"Queue name {queue.name!r} is not in parent {parent!r}")
        config = self._configure(name, None, queue, None)
        with self.cond:
            if str(name) in self.queues:
                raise ApiError(grpc.StatusCode.ALREADY_EXISTS, "Queue already exists")
            self._add_queue(name, config)
            return tasks_v2.Queue(config)

    def update_queue(self, queue: tasks_v2.Queue, paths: list[str] | None) -> tasks_v2.Queue:
        name = self._queue_name(queue.name)
        with self.cond:
            record = self.queues.get(str(name))
            # UpdateQueue creates a queue that does not exist (as the API reference says).
            config = self._configure(name, record.config if record else None, queue, paths)
            if record is None:
                self._add_queue(name, config)
                return tasks_v2.Queue(config)
            rate_changed = config.rate_limits.max_dispatches_per_second != record.rate
            record.config = config
            if rate_changed:
                record.reset_rate(time.time())
            else:
                record.tokens = min(record.tokens, float(record.burst))
            self.cond.notify_all()
            return tasks_v2.Queue(config)

    def get_queue(self, name: str) -> tasks_v2.Queue:
        with self.cond:
            return tasks_v2.Queue(self._queue(name).config)

    def list_queues(
        self, parent: str, filter_: str, page_size: int, page_token: str
    ) -> tuple[list[tasks_v2.Queue], str]:
        rules.parse_location(parent)
        state = self._state_filter(filter_)
        if page_size < 0:
            raise InvalidArgument("page_size must not be negative")
        with self.cond:
            names = sorted(
                n
                for n, q in self.queues.items()
                if q.name.parent == parent and (state is None or q.config.state == state) and n > page_token
            )
            page = names[: page_size or 9800]
            token = page[-1] if len(names) > len(page) else ""
            return [tasks_v2.Queue(self.queues[n].config) for n in page], token

    def delete_queue(self, name: str) -> None:
        with self.cond:
            record = self._queue(name)
            del self.queues[str(record.name)]
            self.cond.notify_all()

    def purge_queue(self, name: str) -> tasks_v2.Queue:
        with self.cond:
            record = self._queue(name)
            now = time.time()
            for task in record.tasks.values():
                self._reserve(task.name, now)
            record.tasks.clear()
            record.heap.clear()
            record.config.purge_time = _dt(now)
            return tasks_v2.Queue(record.config)

    def pause_queue(self, name: str) -> tasks_v2.Queue:
        return self._set_state(name, tasks_v2.Queue.State.PAUSED)

    def resume_queue(self, name: str) -> tasks_v2.Queue:
        return self._set_state(name, tasks_v2.Queue.State.RUNNING)

    # --- tasks ------------------------------------------------------------------------------------

    def create_task(self, parent: str, task: tasks_v2.Task, view: int) -> tasks_v2.Task:
        queue_name = self._queue_name(parent)
        http = self._http_request(task)
        now = time.time()
        schedule = task.schedule_time.timestamp() if "schedule_time" in task else now
        if schedule > now + rules.MAX_SCHEDULE_AHEAD:
            raise InvalidArgument("schedule_time must be at most 30 days in the future")
        deadline = rules.DEFAULT_DISPATCH_DEADLINE
        if "dispatch_deadline" in task:
            deadline = rules.seconds(task.dispatch_deadline)
            low, high = self.settings.min_dispatch_deadline, rules.MAX_DISPATCH_DEADLINE
            if not low <= deadline <= high:
                raise InvalidArgument(f"dispatch_deadline must be between {low:g}s and {high:g}s")
        own_retry = None
        if "retry_config" in task:
            own_retry = tasks_v2.RetryConfig(task.retry_config)
            self._check_retry(own_retry)
        if len(tasks_v2.Task.serialize(task)) > rules.MAX_TASK_BYTES:
            raise InvalidArgument("Task size too large: the maximum is 1 MB")
        with self.cond:
            record = self._queue(str(queue_name))
            if task.name:
                task_queue, task_id = rules.parse_task_name(task.name)
                if task_queue != queue_name:
                    raise InvalidArgument(f"Task name {task.name!r} is not in queue {parent!r}")
                if task.name in record.tasks or self._is_reserved(task.name, now):
                    raise ApiError(grpc.StatusCode.ALREADY_EXISTS, "Requested entity already exists")
                name = task.name
            else:
                # Cloud Tasks' generated ids are long decimal numbers.
                while True:
                    task_id = str(secrets.randbelow(10**19 - 10**18) + 10**18)
                    name = f"{queue_name}/tasks/{task_id}"
                    if name not in record.tasks and not self._is_reserved(name, now):
                        break
            entry = TaskRecord(
                name=name,
                task_id=task_id,
                http_request=http,
                schedule_time=max(schedule, now),  # a past or unset schedule_time means now
                create_time=float(int(now)),  # create_time is truncated to the second
                dispatch_deadline=deadline,
                retry_config=own_retry,
            )
            record.tasks[name] = entry
            self._push(record, entry)
            self.cond.notify_all()
            return self._task_message(entry, view)

    def get_task(self, name: str, view: int) -> tasks_v2.Task:
        queue_name, _ = rules.parse_task_name(name)
        with self.cond:
            task = self._queue(str(queue_name)).tasks.get(name)
            if task is None:
                raise ApiError(grpc.StatusCode.NOT_FOUND, "Requested entity was not found.")
            return self._task_message(task, view)

    def delete_task(self, name: str) -> None:
        queue_name, _ = rules.parse_task_name(name)
        with self.cond:
            record = self._queue(str(queue_name))
            task = record.tasks.pop(name, None)
            if task is None:
                raise ApiError(grpc.StatusCode.NOT_FOUND, "Requested entity was not found.")
            task.generation += 1
            self._reserve(name, time.time())

    def list_tasks(self, parent: str, view: int, page_size: int, page_token: str) -> tuple[list[tasks_v2.Task], str]:
        if page_size < 0:
            raise InvalidArgument("page_size must not be negative")
        with self.cond:
            record = self._queue(str(self._queue_name(parent)))
            # Name order, so a page token (the last name returned) stays valid as tasks come and go.
            names = sorted(n for n in record.tasks if n > page_token)
            page = names[: min(page_size or 1000, 1000)]
            token = page[-1] if len(names) > len(page) else ""
            return [self._task_message(record.tasks[n], view) for n in page], token

    # --- dispatch (called by dispatch.Dispatcher, under self.cond) --------------------------------

    def take_ready(self, now: float) -> tuple[list[Job], float | None]:
        """The requests that may go out now, and when to look again if nothing changes before."""
        jobs: list[Job] = []
        wake: float | None = None
        active = [q for q in self.queues.values() if q.running]
        # One request per queue per round, so queues share a busy pool fairly.
        while active and self.free_workers > 0:
            still = []
            for queue in active:
                if self.free_workers <= 0:
                    break
                job, queue_wake = self._next_job(queue, now)
                if queue_wake is not None:
                    wake = queue_wake if wake is None else min(wake, queue_wake)
                if job is not None:
                    jobs.append(job)
                    self.free_workers -= 1
                    still.append(queue)
            active = still
        return jobs, wake

    def _next_job(self, queue: QueueRecord, now: float) -> tuple[Job | None, float | None]:
        if queue.in_flight >= queue.max_concurrent:
            return None, None  # `finish` wakes the dispatcher when a request ends
        while queue.heap:
            due, _, name, generation, duplicate = queue.heap[0]
            task = queue.tasks.get(name)
            if duplicate is None and (task is None or task.generation != generation or task.in_flight):
                heapq.heappop(queue.heap)
                continue
            if due > now:
                return None, due
            queue.refill(now)
            if queue.tokens < 1.0:
                return None, now + (1.0 - queue.tokens) / queue.effective_rate
            heapq.heappop(queue.heap)
            queue.tokens -= 1.0
            queue.in_flight += 1
            queue.stats.dispatches += 1
            queue.stats.max_in_flight = max(queue.stats.max_in_flight, queue.in_flight)
            if duplicate is not None:
                return duplicate, None
            assert task is not None
            return self._dispatch(queue, task, now), None
        return None, None

    def _dispatch(self, queue: QueueRecord, task: TaskRecord, now: float) -> Job:
        retry_count = task.dispatch_count
        task.dispatch_count += 1
        task.in_flight = True
        if task.first_dispatch is None:
            task.first_dispatch = now
        task.last_attempt = AttemptRecord(schedule_time=task.schedule_time, dispatch_time=now)
        http = task.http_request
        method = HttpMethod(http.http_method)
        headers = rules.task_headers(dict(http.headers))
        headers.update(
            {
                "User-Agent": "Google-Cloud-Tasks",
                "X-CloudTasks-QueueName": queue.name.queue_id,
                "X-CloudTasks-TaskName": task.task_id,
                "X-CloudTasks-TaskRetryCount": str(retry_count),
                "X-CloudTasks-TaskExecutionCount": str(task.execution_count),
                "X-CloudTasks-TaskETA": f"{task.schedule_time:.6f}",
            }
        )
        if task.previous_response is not None:
            headers["X-CloudTasks-TaskPreviousResponse"] = str(task.previous_response)
        if "oidc_token" in http:
            oidc = http.oidc_token
            token = rules.oidc_token(oidc.service_account_email, oidc.audience or http.url, now)  # aud defaults to url
            headers["Authorization"] = f"Bearer {token}"
        elif "oauth_token" in http:
            headers["Authorization"] = "Bearer offline-unverifiable-oauth-access-token"
        return Job(
            queue=queue,
            task_name=task.name,
            generation=task.generation,
            url=http.url,
            method=_METHOD_NAMES.get(method, "POST"),
            headers=headers,
            body=bytes(http.body) if method in _BODY_METHODS else None,
            timeout=task.dispatch_deadline,
            attempt=task.dispatch_count,
        )

    def finish(
        self, job: Job, status: int | None, error: str | None, retry_after: float | None, now: float
    ) -> dict[str, Any]:
        """Apply one answer (or a timeout / connection error) and say what became of the task."""
        queue = job.queue
        queue.in_flight -= 1
        self.free_workers += 1
        self.cond.notify_all()
        stats = queue.stats
        stats.by_status[str(status) if status is not None else error or "error"] += 1
        ok = status is not None and 200 <= status < 300
        if ok:
            stats.successes += 1
            queue.recover(now)
        else:
            stats.failures += 1
            if status in rules.THROTTLING_STATUSES:
                stats.throttled += 1
                queue.throttle(now)
        if job.duplicate:
            return {"result": "duplicate"}
        current = self.queues.get(str(queue.name)) is queue
        task = queue.tasks.get(job.task_name)
        if not current or task is None or task.generation != job.generation:
            return {"result": "gone"}  # deleted or purged while in flight
        task.in_flight = False
        attempt = task.last_attempt
        if attempt is not None:
            attempt.response_time = now if status is not None else None
            attempt.code, attempt.message = rules.rpc_status(status, error)
        if status is not None:
            task.response_count += 1
            task.previous_response = status
            if status < 500:
                task.execution_count += 1
        if ok:
            self._remove(queue, task, now)
            if self.faults.duplicate_rate > 0 and self.random.random() < self.faults.duplicate_rate:
                stats.duplicates_injected += 1
                copy = Job(**{**vars(job), "duplicate": True})
                heapq.heappush(queue.heap, (now, next(self._sequence), task.name, task.generation, copy))
            return {"result": "deleted"}
        policy = queue.retry_policy(task)
        age = now - (task.first_dispatch or now)
        if rules.gives_up(task.dispatch_count, age, policy.max_attempts, policy.max_retry_duration):
            self._remove(queue, task, now)
            stats.dropped += 1
            log.warning(
                "cloud tasks: dropped %s after %d attempts (last: %s)", task.name, task.dispatch_count, status or error
            )
            return {"result": "dropped"}
        delay = rules.retry_interval(task.dispatch_count, policy.min_backoff, policy.max_backoff, policy.max_doublings)
        if retry_after is not None and status in rules.THROTTLING_STATUSES:
            delay = min(policy.max_backoff, max(delay, retry_after))
        task.schedule_time = now + delay
        task.generation += 1
        self._push(queue, task)
        stats.retries += 1
        return {"result": "retry", "retry_in_seconds": round(delay, 6)}

    # --- faults and stats -------------------------------------------------------------------------

    def set_faults(self, values: dict[str, Any]) -> dict[str, Any]:
        with self.cond:
            updated = Faults(**vars(self.faults))
            for key, value in values.items():
                if key == "duplicate_rate":
                    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                        raise ValueError("duplicate_rate must be a number in [0, 1]")
                    updated.duplicate_rate = float(value)
                elif key == "seed":
                    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                        raise ValueError("seed must be an integer or null")
                    updated.seed = value
                else:
                    raise ValueError(f"unknown fault {key!r}")
            self.faults = updated
            if "seed" in values:
                self.random.seed(updated.seed)
            return vars(updated).copy()

    def stats(self) -> dict[str, Any]:
        with self.cond:
            queues = {}
            for name, q in sorted(self.queues.items()):
                s = q.stats
                queues[name] = {
                    "state": tasks_v2.Queue.State(q.config.state).name,
                    "tasks_pending": len(q.tasks),
                    "in_flight": q.in_flight,
                    "max_in_flight": s.max_in_flight,
                    "dispatches": s.dispatches,
                    "by_status": dict(s.by_status),
                    "successes": s.successes,
                    "failures": s.failures,
                    "retries": s.retries,
                    "throttled": s.throttled,
                    "duplicates_injected": s.duplicates_injected,
                    "dropped": s.dropped,
                    "max_dispatches_per_second": q.rate,
                    "effective_rate": round(q.effective_rate, 6),
                    "max_burst_size": q.burst,
                    "max_concurrent_dispatches": q.max_concurrent,
                    "concurrency_cap": min(q.max_concurrent, self.settings.pool_size),
                }
            return {
                "queues": queues,
                "pool": {"size": self.settings.pool_size, "busy": self.settings.pool_size - self.free_workers},
                "reserved_names": len(self._reserved),
                "faults": vars(self.faults).copy(),
            }

    # --- helpers ----------------------------------------------------------------------------------

    def _queue_name(self, name: str) -> rules.QueueName:
        return rules.parse_queue_name(name)

    def _queue(self, name: str) -> QueueRecord:
        record = self.queues.get(str(self._queue_name(name)))
        if record is None:
            raise ApiError(grpc.StatusCode.NOT_FOUND, "Requested entity was not found.")
        return record

    def _add_queue(self, name: rules.QueueName, config: tasks_v2.Queue) -> None:
        config.state = tasks_v2.Queue.State.RUNNING  # type: ignore[assignment]  # proto-plus enums are ints
        record = QueueRecord(name=name, config=config)
        record.reset_rate(time.time())
        self.queues[str(name)] = record

    def _set_state(self, name: str, state: int) -> tasks_v2.Queue:
        with self.cond:
            record = self._queue(name)
            record.config.state = tasks_v2.Queue.State(state)
            self.cond.notify_all()
            return tasks_v2.Queue(record.config)

    def _configure(
        self, name: rules.QueueName, current: tasks_v2.Queue | None, given: tasks_v2.Queue, paths: list[str] | None
    ) -> tasks_v2.Queue:
        """The queue config after applying `given` (all updatable fields, or those in `paths`), with
        Cloud Tasks' defaults for what is unset, validated, and the derived max_burst_size."""
        config = tasks_v2.Queue(current) if current is not None else tasks_v2.Queue(name=str(name))
        for raw in paths if paths else _UPDATABLE:
            path = _snake(raw)
            if path in _OUTPUT_ONLY:
                raise InvalidArgument(f"{raw} is output only and cannot be updated")
            top, _, sub = path.partition(".")
            if top not in _UPDATABLE:
                raise InvalidArgument(f"Unknown field in update_mask: {raw}")
            if not sub:
                if top in given:
                    setattr(config, top, getattr(given, top))
                else:
                    delattr(config, top)  # a listed message field that is unset clears it
                continue
            target, source = getattr(config, top), getattr(given, top)
            if sub not in type(source).meta.fields:
                raise InvalidArgument(f"Unknown field in update_mask: {raw}")
            if sub in source:
                setattr(target, sub, getattr(source, sub))
            else:
                delattr(target, sub)
            setattr(config, top, target)
        self._complete(config)
        return config

    def _complete(self, config: tasks_v2.Queue) -> None:
        limits = config.rate_limits
        if limits.max_dispatches_per_second < 0 or limits.max_dispatches_per_second > rules.MAX_DISPATCHES_PER_SECOND:
            raise InvalidArgument("max_dispatches_per_second must be in (0, 500]")
        if limits.max_concurrent_dispatches < 0 or limits.max_concurrent_dispatches > rules.MAX_CONCURRENT_DISPATCHES:
            raise InvalidArgument("max_concurrent_dispatches must be in (0, 5000]")
        if limits.max_dispatches_per_second == 0:
            limits.max_dispatches_per_second = rules.DEFAULT_DISPATCHES_PER_SECOND
        if limits.max_concurrent_dispatches == 0:
            limits.max_concurrent_dispatches = rules.DEFAULT_CONCURRENT_DISPATCHES
        limits.max_burst_size = rules.burst_size(limits.max_dispatches_per_second)
        config.rate_limits = limits
        retry = config.retry_config
        self._check_retry(retry)
        if retry.max_attempts == 0:
            retry.max_attempts = rules.DEFAULT_MAX_ATTEMPTS
        if "min_backoff" not in retry:
            retry.min_backoff = timedelta(seconds=rules.DEFAULT_MIN_BACKOFF)
        if "max_backoff" not in retry:
            retry.max_backoff = timedelta(seconds=rules.DEFAULT_MAX_BACKOFF)
        if retry.max_doublings == 0:
            retry.max_doublings = rules.DEFAULT_MAX_DOUBLINGS
        if rules.seconds(retry.min_backoff) > rules.seconds(retry.max_backoff):
            raise InvalidArgument("min_backoff must not exceed max_backoff")
        config.retry_config = retry
        if "stackdriver_logging_config" in config:
            ratio = config.stackdriver_logging_config.sampling_ratio
            if not 0 <= ratio <= 1:
                raise InvalidArgument("sampling_ratio must be in [0, 1]")

    def _check_retry(self, retry: tasks_v2.RetryConfig) -> None:
        if retry.max_attempts < -1:
            raise InvalidArgument("max_attempts must be -1 (unlimited) or more")
        if retry.max_doublings < 0:
            raise InvalidArgument("max_doublings must not be negative")
        for name in ("max_retry_duration", "min_backoff", "max_backoff"):
            if name in retry and rules.seconds(getattr(retry, name)) < 0:
                raise InvalidArgument(f"{name} must not be negative")

    def _state_filter(self, filter_: str) -> int | None:
        text = filter_.strip()
        if not text:
            return None
        for sep in (":", "="):
            key, found, value = text.partition(sep)
            if found and key.strip() == "state":
                states = {
                    "RUNNING": tasks_v2.Queue.State.RUNNING,
                    "PAUSED": tasks_v2.Queue.State.PAUSED,
                    "DISABLED": tasks_v2.Queue.State.DISABLED,
                }
                if value.strip() in states:
                    return states[value.strip()]
                break
        raise InvalidArgument(f"Unsupported filter {filter_!r} (the emulator supports 'state: PAUSED' etc.)")

    def _http_request(self, task: tasks_v2.Task) -> tasks_v2.HttpRequest:
        kind = tasks_v2.Task.pb(task).WhichOneof("message_type")
        if kind == "app_engine_http_request":
            raise ApiError(grpc.StatusCode.UNIMPLEMENTED, "App Engine tasks are not emulated; use http_request")
        if kind != "http_request":
            raise InvalidArgument("A task needs an http_request")
        http = tasks_v2.HttpRequest(task.http_request)
        parts = urlsplit(http.url)
        if parts.scheme not in ("http", "https") or not parts.netloc or len(http.url) > rules.MAX_URL_LENGTH:
            raise InvalidArgument(f"HttpRequest.url must be an http:// or https:// URL: {http.url!r}")
        if http.http_method == HttpMethod.HTTP_METHOD_UNSPECIFIED:
            http.http_method = HttpMethod.POST  # type: ignore[assignment]  # proto-plus enums are ints
        if http.body and HttpMethod(http.http_method) not in _BODY_METHODS:
            raise InvalidArgument("A body is allowed only with POST, PUT or PATCH")
        if sum(len(k) + len(v) for k, v in http.headers.items()) >= rules.MAX_HEADER_BYTES:
            raise InvalidArgument("The headers must be smaller than 80 KB")
        return http

    def _task_message(self, task: TaskRecord, view: int) -> tasks_v2.Task:
        full = view == tasks_v2.Task.View.FULL
        http = tasks_v2.HttpRequest(task.http_request)
        if not full:
            http.body = b""  # BASIC leaves out the payload
        message = tasks_v2.Task(
            name=task.name,
            http_request=http,
            schedule_time=_dt(task.schedule_time),
            create_time=_dt(task.create_time),
            dispatch_deadline=timedelta(seconds=task.dispatch_deadline),
            dispatch_count=task.dispatch_count,
            response_count=task.response_count,
            view=tasks_v2.Task.View.FULL if full else tasks_v2.Task.View.BASIC,
        )
        if task.first_dispatch is not None:
            message.first_attempt = tasks_v2.Attempt(dispatch_time=_dt(task.first_dispatch))
        attempt = task.last_attempt
        if attempt is not None:
            last = tasks_v2.Attempt(schedule_time=_dt(attempt.schedule_time), dispatch_time=_dt(attempt.dispatch_time))
            if attempt.response_time is not None:
                last.response_time = _dt(attempt.response_time)
            if attempt.code is not None:
                last.response_status = status_pb2.Status(code=attempt.code, message=attempt.message)
            message.last_attempt = last
        if task.retry_config is not None:
            message.retry_config = task.retry_config
        return message

    def _push(self, queue: QueueRecord, task: TaskRecord) -> None:
        heapq.heappush(queue.heap, (task.schedule_time, next(self._sequence), task.name, task.generation, None))

    def _remove(self, queue: QueueRecord, task: TaskRecord, now: float) -> None:
        queue.tasks.pop(task.name, None)
        task.generation += 1
        self._reserve(task.name, now)

    def _reserve(self, name: str, now: float) -> None:
        window = self.settings.name_reservation_seconds
        if window <= 0:
            return
        self._reserved[name] = now + window
        self._reserved_order.append((now + window, name))

    def _is_reserved(self, name: str, now: float) -> bool:
        # The window is one setting, so reservations expire in the order they were made.
        order = self._reserved_order
        while order and order[0][0] <= now:
            expiry, expired = order.popleft()
            if self._reserved.get(expired) == expiry:
                del self._reserved[expired]
        return name in self._reserved
