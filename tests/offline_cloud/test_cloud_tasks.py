"""The offline Cloud Tasks emulator, driven as a subprocess through the real CloudTasksClient, with a
local HTTP receiver standing in for the task handlers.

Timings: assertions give lower bounds (a rate limit must not be beaten) and loose patience only; the
machine is shared and noisy. Queues that retry use short backoffs of their own; the emulator runs
with production defaults except `--min-dispatch-deadline 1`, so a deadline test need not wait 15 s.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from google.api_core import exceptions
from google.cloud import tasks_v2

from offline_cloud import cloud_tasks
from offline_cloud.cloud_tasks import rules
from offline_cloud.stack import ROOT, die_with_parent, free_port

PARENT = "projects/offline-project/locations/us-central1"
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# --- the receiver ---------------------------------------------------------------------------------


@dataclass
class Receiver:
    """Task handlers by path: /ok/KEY answers 200, /status/CODE/KEY answers CODE, /sleep/SECONDS/KEY
    answers 200 after a while, /switch/KEY answers what `switch[KEY]` says (200 by default)."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    switch: dict[str, int] = field(default_factory=dict)
    in_flight: Counter[str] = field(default_factory=Counter)
    max_in_flight: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def of(self, key: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["key"] == key]

    def serve(self) -> ThreadingHTTPServer:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real handler behind a load balancer

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path.strip("/").split("/")
                action, key = parts[0], parts[-1]
                with receiver.lock:
                    receiver.requests.append(
                        {
                            "at": time.time(),
                            "key": key,
                            "method": self.command,
                            "headers": dict(self.headers),
                            "body": body,
                        }
                    )
                    receiver.in_flight[key] += 1
                    receiver.max_in_flight[key] = max(receiver.max_in_flight[key], receiver.in_flight[key])
                status = 200
                if action == "status":
                    status = int(parts[1])
                elif action == "sleep":
                    time.sleep(float(parts[1]))
                elif action == "switch":
                    status = receiver.switch.get(key, 200)
                with receiver.lock:
                    receiver.in_flight[key] -= 1
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the emulator gave up waiting (dispatch deadline)

            do_POST = do_GET = do_PUT = do_DELETE = _handle

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # a burst of dispatches must not overflow the listen backlog
            daemon_threads = True

        server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


# --- the emulator ---------------------------------------------------------------------------------


@dataclass
class Emulator:
    process: subprocess.Popen[bytes]
    endpoint: str
    admin: str
    stderr: Path
    log_file: Path
    client: tasks_v2.CloudTasksClient

    def stats(self, queue: str | None = None) -> dict[str, Any]:
        stats: dict[str, Any] = requests.get(self.admin + "/stats", timeout=5).json()
        return stats["queues"][queue] if queue else stats

    def log(self, queue: str) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = requests.get(self.admin + "/log", params={"queue": queue}, timeout=5).json()
        return records

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=15)


def start_emulator(directory: Path, *flags: str) -> Emulator:
    directory.mkdir(parents=True, exist_ok=True)
    port, admin_port = free_port(), free_port()
    stderr, log_file = directory / "stderr.log", directory / "dispatch.jsonl"
    command = [sys.executable, "-m", "offline_cloud.cloud_tasks", "--port", str(port), "--admin-port", str(admin_port)]
    command += ["--log-file", str(log_file), *flags]
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, preexec_fn=die_with_parent, env=dict(os.environ)
        )
    admin = f"http://127.0.0.1:{admin_port}"

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the emulator exited: {stderr.read_text()}")
        try:
            return requests.get(admin + "/health", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(healthy, 30, "the emulator's /health")
    endpoint = f"127.0.0.1:{port}"
    return Emulator(process, endpoint, admin, stderr, log_file, cloud_tasks.client(endpoint))


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    server = receiver.serve()
    yield receiver
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emulator = start_emulator(tmp_path_factory.mktemp("cloud-tasks"), "--min-dispatch-deadline", "1")
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """Production deadline limits; every successful task dispatched twice; names reserved 1 s."""
    emulator = start_emulator(
        tmp_path_factory.mktemp("cloud-tasks-duplicates"),
        "--faults",
        '{"duplicate_rate": 1, "seed": 7}',
        "--name-reservation-seconds",
        "1",
    )
    yield emulator
    emulator.stop()


def new_queue(
    client: tasks_v2.CloudTasksClient,
    rate: float = 0,
    concurrent: int = 0,
    retry: tasks_v2.RetryConfig | None = None,
) -> tasks_v2.Queue:
    queue = tasks_v2.Queue(
        name=f"{PARENT}/queues/q-{uuid.uuid4().hex[:12]}",
        rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=rate, max_concurrent_dispatches=concurrent),
    )
    if retry is not None:
        queue.retry_config = retry
    return client.create_queue(parent=PARENT, queue=queue)


def http_task(url: str, name: str = "", body: bytes = b"", **fields: Any) -> tasks_v2.Task:
    return tasks_v2.Task(name=name, http_request=tasks_v2.HttpRequest(url=url, body=body), **fields)


def key() -> str:
    return uuid.uuid4().hex[:10]


def fast_retry(**overrides: Any) -> tasks_v2.RetryConfig:
    values: dict[str, Any] = {
        "max_attempts": 3,
        "min_backoff": timedelta(seconds=0.2),
        "max_backoff": timedelta(seconds=10),
        "max_doublings": 2,
    }
    return tasks_v2.RetryConfig(**{**values, **overrides})


# --- rules (pure) ---------------------------------------------------------------------------------


def test_backoff_follows_the_documented_example() -> None:
    intervals = [rules.retry_interval(n, 10, 300, 3) for n in range(1, 10)]
    assert intervals == [10, 20, 40, 80, 160, 240, 300, 300, 300]
    assert [rules.retry_interval(n, 0.2, 10, 2) for n in (1, 2, 3, 4)] == pytest.approx([0.2, 0.4, 0.8, 1.6])


def test_a_task_is_given_up_only_when_both_limits_are_spent() -> None:
    assert rules.gives_up(3, 5.0, 3, 0) and not rules.gives_up(2, 5.0, 3, 0)
    assert not rules.gives_up(3, 5.0, 3, 60) and rules.gives_up(3, 61, 3, 60)
    assert not rules.gives_up(10, 61, 11, 60)
    assert not rules.gives_up(1000, 10**6, -1, 0) and rules.gives_up(1, 61, -1, 60)


def test_burst_size_rule() -> None:
    assert [rules.burst_size(r) for r in (0.5, 1, 10, 10.5, 100, 500)] == [1, 1, 10, 11, 100, 100]


# --- queues ---------------------------------------------------------------------------------------


def test_queue_lifecycle_with_the_real_client(emulator: Emulator, receiver: Receiver) -> None:
    client = emulator.client
    queue = new_queue(client, rate=10, concurrent=7)
    assert queue.state == tasks_v2.Queue.State.RUNNING
    assert queue.rate_limits.max_burst_size == 10
    assert queue.retry_config.max_attempts == 100 and queue.retry_config.max_doublings == 16
    assert client.get_queue(name=queue.name) == queue

    with pytest.raises(exceptions.AlreadyExists):
        client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=queue.name))
    with pytest.raises(exceptions.NotFound):
        client.get_queue(name=f"{PARENT}/queues/no-such-queue")
    with pytest.raises(exceptions.InvalidArgument):
        new_queue(client, rate=501)
    with pytest.raises(exceptions.InvalidArgument):
        new_queue(client, concurrent=5001)
    with pytest.raises(exceptions.InvalidArgument):
        client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=f"{PARENT}/queues/bad_name"))

    updated = client.update_queue(
        queue=tasks_v2.Queue(name=queue.name, rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=2.5)),
        update_mask={"paths": ["rate_limits.max_dispatches_per_second"]},
    )
    assert updated.rate_limits.max_dispatches_per_second == 2.5
    assert updated.rate_limits.max_burst_size == 3  # output only, derived from the new rate
    assert updated.rate_limits.max_concurrent_dispatches == 7  # not in the mask: kept
    updated = client.update_queue(
        queue=tasks_v2.Queue(name=queue.name, retry_config=tasks_v2.RetryConfig(max_attempts=-1)),
        update_mask={"paths": ["retry_config.max_attempts"]},
    )
    assert updated.retry_config.max_attempts == -1 and updated.retry_config.max_doublings == 16
    with pytest.raises(exceptions.InvalidArgument):
        client.update_queue(queue=tasks_v2.Queue(name=queue.name), update_mask={"paths": ["state"]})
    with pytest.raises(exceptions.InvalidArgument):
        client.update_queue(
            queue=tasks_v2.Queue(name=queue.name, rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=600)),
            update_mask={"paths": ["rate_limits"]},
        )

    assert client.pause_queue(name=queue.name).state == tasks_v2.Queue.State.PAUSED
    paused = [q.name for q in client.list_queues(request={"parent": PARENT, "filter": "state: PAUSED"})]
    assert queue.name in paused
    listed = [q.name for q in client.list_queues(request={"parent": PARENT, "page_size": 1})]  # pages of one
    assert queue.name in listed and len(listed) == len(set(listed))

    # A paused queue keeps its tasks; FULL shows the body, BASIC (the default) leaves it out.
    k = key()
    for i in range(5):
        client.create_task(parent=queue.name, task=http_task(f"{receiver.url}/ok/{k}", body=b"payload-%d" % i))
    full = list(client.list_tasks(request={"parent": queue.name, "response_view": tasks_v2.Task.View.FULL}))
    assert len(full) == 5 and all(t.http_request.body.startswith(b"payload-") for t in full)
    assert all(t.view == tasks_v2.Task.View.FULL for t in full)
    basic = list(client.list_tasks(parent=queue.name))
    assert all(t.http_request.body == b"" and t.view == tasks_v2.Task.View.BASIC for t in basic)

    purged = client.purge_queue(name=queue.name)
    assert "purge_time" in purged
    assert list(client.list_tasks(parent=queue.name)) == []
    assert client.resume_queue(name=queue.name).state == tasks_v2.Queue.State.RUNNING
    time.sleep(0.5)
    assert receiver.of(k) == []  # purged tasks are never dispatched

    client.delete_queue(name=queue.name)
    with pytest.raises(exceptions.NotFound):
        client.get_queue(name=queue.name)
    with pytest.raises(exceptions.NotFound):
        client.delete_queue(name=queue.name)
    with pytest.raises(exceptions.NotFound):
        client.create_task(parent=queue.name, task=http_task(f"{receiver.url}/ok/{k}"))

    # UpdateQueue creates a queue that does not exist.
    made = client.update_queue(queue=tasks_v2.Queue(name=f"{PARENT}/queues/made-by-update-{k}"))
    assert made.state == tasks_v2.Queue.State.RUNNING and made.rate_limits.max_dispatches_per_second == 500


# --- tasks ----------------------------------------------------------------------------------------


def test_task_names_are_deduplicated_while_reserved(emulator: Emulator, receiver: Receiver) -> None:
    client = emulator.client
    queue = new_queue(client)
    k = key()
    name = f"{queue.name}/tasks/job-{k}"
    created = client.create_task(parent=queue.name, task=http_task(f"{receiver.url}/ok/{k}", name=name))
    assert created.name == name
    with pytest.raises(exceptions.AlreadyExists):
        client.create_task(parent=queue.name, task=http_task(f"{receiver.url}/ok/{k}", name=name))

    wait_for(lambda: receiver.of(k), 10, "the named task's dispatch")

    def deleted() -> bool:
        try:
            client.get_task(name=name)
        except exceptions.NotFound:
            return True
        return False

    wait_for(deleted, 10, "the executed task to be deleted")
    with pytest.raises(exceptions.AlreadyExists):  # executed and deleted: the name stays reserved
        client.create_task(parent=queue.name, task=http_task(f"{receiver.url}/ok/{k}", name=name))

    client.pause_queue(name=queue.name)
    other = f"{queue.name}/tasks/deleted-{k}"
    client.create_task(parent=queue.name, task=http_task(f"{receiver.url}/ok/{k}", name=other))
    client.delete_task(name=other)
    with pytest.raises(exceptions.NotFound):
        client.delete_task(name=other)
    with pytest.raises(exceptions.AlreadyExists):
        client.create_task(parent=queue.name, task=http_task(f"{receiver.url}/ok/{k}", name=other))
    with pytest.raises(exceptions.InvalidArgument):  # a name in another queue
        client.create_task(
            parent=queue.name, task=http_task(f"{receiver.url}/ok/{k}", name=f"{PARENT}/queues/x/tasks/a")
        )
    generated = client.create_task(parent=queue.name, task=http_task(f"{receiver.url}/ok/{k}"))
    assert generated.name.startswith(f"{queue.name}/tasks/") and generated.name.rsplit("/", 1)[1].isdigit()
    assert len(receiver.of(k)) == 1


def test_schedule_time_headers_body_and_oidc_token(emulator: Emulator, receiver: Receiver) -> None:
    client = emulator.client
    queue = new_queue(client)
    queue_id = queue.name.rsplit("/", 1)[1]
    k = key()
    eta = time.time() + 2.0
    task = tasks_v2.Task(
        name=f"{queue.name}/tasks/hello-{k}",
        schedule_time=datetime.fromtimestamp(eta, UTC),
        http_request=tasks_v2.HttpRequest(
            url=f"{receiver.url}/ok/{k}",
            http_method=tasks_v2.HttpMethod.PUT,
            headers={"Content-Type": "application/json", "X-Custom": "yes", "User-Agent": "mine"},
            body=b'{"image": "gs://uploads/cat.png"}',
            oidc_token=tasks_v2.OidcToken(service_account_email="tasks@offline-project.iam.gserviceaccount.com"),
        ),
    )
    created = client.create_task(parent=queue.name, task=task)
    assert created.schedule_time.timestamp() == pytest.approx(eta, abs=1e-3)
    assert created.dispatch_deadline == timedelta(minutes=10)  # the default for HTTP tasks
    client.create_task(
        parent=queue.name,
        task=tasks_v2.Task(http_request=tasks_v2.HttpRequest(url=f"{receiver.url}/ok/{k}", http_method="GET")),
    )
    with pytest.raises(exceptions.InvalidArgument):  # a body needs POST, PUT or PATCH
        client.create_task(
            parent=queue.name,
            task=tasks_v2.Task(
                http_request=tasks_v2.HttpRequest(url=f"{receiver.url}/ok/{k}", http_method="GET", body=b"x")
            ),
        )

    wait_for(lambda: [r for r in receiver.of(k) if r["method"] == "GET"], 10, "the unscheduled GET task")
    time.sleep(max(0.0, eta - time.time() - 0.5))
    assert [r for r in receiver.of(k) if r["method"] == "PUT"] == []  # not before its schedule_time
    put = wait_for(lambda: [r for r in receiver.of(k) if r["method"] == "PUT"], 15, "the scheduled task")[0]
    assert put["at"] >= eta - 0.01

    headers = put["headers"]
    assert headers["X-CloudTasks-QueueName"] == queue_id
    assert headers["X-CloudTasks-TaskName"] == f"hello-{k}"
    assert headers["X-CloudTasks-TaskRetryCount"] == "0"
    assert headers["X-CloudTasks-TaskExecutionCount"] == "0"
    assert float(headers["X-CloudTasks-TaskETA"]) == pytest.approx(eta, abs=1e-3)
    assert "X-CloudTasks-TaskPreviousResponse" not in headers
    assert headers["User-Agent"] == "Google-Cloud-Tasks"  # replaced, as Cloud Tasks does
    assert headers["X-Custom"] == "yes" and headers["Content-Type"] == "application/json"
    assert put["body"] == b'{"image": "gs://uploads/cat.png"}'
    scheme, token = headers["Authorization"].split(" ")
    _, claims_b64, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(claims_b64 + "=" * (-len(claims_b64) % 4)))
    assert scheme == "Bearer" and signature == ""  # unsigned: not verifiable
    assert claims["aud"] == f"{receiver.url}/ok/{k}"  # the audience defaults to the URL
    assert claims["email"] == "tasks@offline-project.iam.gserviceaccount.com"
    get = [r for r in receiver.of(k) if r["method"] == "GET"][0]
    assert get["body"] == b"" and get["headers"]["X-CloudTasks-TaskName"].isdigit()


# --- dispatch -------------------------------------------------------------------------------------


def test_rate_limit_spaces_dispatches(emulator: Emulator, receiver: Receiver) -> None:
    client = emulator.client
    queue = new_queue(client, rate=10)  # burst 10: ten at once, then one per 0.1 s
    client.pause_queue(name=queue.name)  # all 40 are due together when the queue resumes
    k = key()
    for _ in range(40):
        client.create_task(parent=queue.name, task=http_task(f"{receiver.url}/ok/{k}"))
    client.resume_queue(name=queue.name)
    wait_for(lambda: len(receiver.of(k)) >= 40, 30, "40 dispatches")
    arrivals = sorted(r["at"] for r in receiver.of(k))
    spread = arrivals[-1] - arrivals[0]
    assert spread >= 2.5, f"40 tasks at 10/s with a burst of 10 took {spread:.2f} s"
    assert emulator.stats(queue.name)["max_burst_size"] == 10


def test_concurrency_cap_is_respected(emulator: Emulator, receiver: Receiver) -> None:
    client = emulator.client
    queue = new_queue(client, rate=500, concurrent=3)
    k = key()
    for _ in range(12):
        client.create_task(parent=queue.name, task=http_task(f"{receiver.url}/sleep/0.4/{k}"))
    wait_for(lambda: len(receiver.of(k)) >= 12 and receiver.in_flight[k] == 0, 30, "12 slow tasks")
    assert 2 <= receiver.max_in_flight[k] <= 3
    assert emulator.stats(queue.name)["max_in_flight"] <= 3


def test_retry_schedule_then_drop(emulator: Emulator, receiver: Receiver) -> None:
    client = emulator.client
    queue = new_queue(client, retry=fast_retry())  # 0.2 s, doubling: gaps 0.2, 0.4; 3 attempts
    k5, k4 = key(), key()
    client.create_task(parent=queue.name, task=http_task(f"{receiver.url}/status/500/{k5}"))
    client.create_task(parent=queue.name, task=http_task(f"{receiver.url}/status/404/{k4}"))
    wait_for(lambda: emulator.stats(queue.name)["dropped"] == 2, 20, "both tasks to be dropped")
    time.sleep(1.0)  # no fourth attempt comes
    for k, executions, previous in ((k5, ["0", "0", "0"], "500"), (k4, ["0", "1", "2"], "404")):
        attempts = receiver.of(k)
        assert len(attempts) == 3
        times = [a["at"] for a in attempts]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert gaps[0] >= 0.19 and gaps[1] >= 0.39 and gaps[1] >= gaps[0]
        assert [a["headers"]["X-CloudTasks-TaskRetryCount"] for a in attempts] == ["0", "1", "2"]
        # 5xx answers do not count as executions (Cloud Tasks' header definition); 4xx do.
        assert [a["headers"]["X-CloudTasks-TaskExecutionCount"] for a in attempts] == executions
        assert "X-CloudTasks-TaskPreviousResponse" not in attempts[0]["headers"]
        assert [a["headers"]["X-CloudTasks-TaskPreviousResponse"] for a in attempts[1:]] == [previous] * 2
    assert list(client.list_tasks(parent=queue.name)) == []
    stats = emulator.stats(queue.name)
    assert stats["dispatches"] == 6 and stats["retries"] == 4 and stats["by_status"] == {"500": 3, "404": 3}
    results = [r["result"] for r in emulator.log(queue.name)]
    assert results.count("dropped") == 2 and results.count("retry") == 4
    lines = [json.loads(line) for line in emulator.log_file.read_text().splitlines()]
    assert sum(1 for line in lines if line["queue"] == queue.name) == 6


def test_failed_attempt_is_recorded_on_the_task(emulator: Emulator, receiver: Receiver) -> None:
    client = emulator.client
    queue = new_queue(client, retry=fast_retry(min_backoff=timedelta(seconds=60), max_backoff=timedelta(seconds=60)))
    k = key()
    task = client.create_task(parent=queue.name, task=http_task(f"{receiver.url}/status/500/{k}"))
    wait_for(lambda: receiver.of(k), 10, "the first attempt")

    def answered() -> tasks_v2.Task | None:
        seen = client.get_task(name=task.name)
        return seen if seen.response_count == 1 else None

    seen = wait_for(answered, 10, "the answer to be recorded")
    assert seen.dispatch_count == 1
    assert seen.last_attempt.response_status.code == 13  # INTERNAL, from HTTP 500
    assert "first_attempt" in seen and seen.first_attempt.dispatch_time
    assert seen.schedule_time.timestamp() >= time.time() + 50  # the retry waits min_backoff
    client.delete_task(name=task.name)


def test_429_answers_slow_the_queue_down(emulator: Emulator, receiver: Receiver) -> None:
    client = emulator.client
    retry = fast_retry(max_attempts=-1, min_backoff=timedelta(seconds=0.05), max_backoff=timedelta(seconds=0.05))
    queue = new_queue(client, rate=20, retry=retry)
    k = key()
    receiver.switch[k] = 429
    for _ in range(5):
        client.create_task(parent=queue.name, task=http_task(f"{receiver.url}/switch/{k}"))
    time.sleep(3.0)
    throttled = emulator.stats(queue.name)
    assert throttled["throttled"] > 0
    assert throttled["effective_rate"] <= 5.0  # halved at least twice from 20/s
    # Unthrottled, 5 tasks retried every 0.05 s at 20/s would make ~60 dispatches in 3 s.
    assert throttled["dispatches"] < 40
    receiver.switch[k] = 200
    wait_for(lambda: emulator.stats(queue.name)["successes"] == 5, 30, "the tasks to succeed")
    assert emulator.stats(queue.name)["effective_rate"] > throttled["effective_rate"]  # recovering


def test_paused_queue_dispatches_nothing_until_resumed(emulator: Emulator, receiver: Receiver) -> None:
    client = emulator.client
    queue = new_queue(client)
    client.pause_queue(name=queue.name)
    k = key()
    for _ in range(3):
        client.create_task(parent=queue.name, task=http_task(f"{receiver.url}/ok/{k}"))
    time.sleep(1.0)
    assert receiver.of(k) == []
    stats = emulator.stats(queue.name)
    assert stats["state"] == "PAUSED" and stats["tasks_pending"] == 3
    client.resume_queue(name=queue.name)
    wait_for(lambda: len(receiver.of(k)) == 3, 10, "three tasks after resume")


def test_dispatch_deadline_is_the_http_timeout(emulator: Emulator, receiver: Receiver) -> None:
    client = emulator.client
    queue = new_queue(client, retry=fast_retry(max_attempts=1))
    k = key()
    task = http_task(f"{receiver.url}/sleep/3/{k}", dispatch_deadline=timedelta(seconds=1))  # via the test flag
    client.create_task(parent=queue.name, task=task)
    record = wait_for(lambda: emulator.log(queue.name), 10, "the timed-out attempt")[0]
    assert record["error"] == "timeout" and record["status"] is None and record["result"] == "dropped"
    assert 0.9 <= record["duration_seconds"] < 2.9
    assert emulator.stats(queue.name)["by_status"] == {"timeout": 1}


def test_production_deadline_limits(production: Emulator, receiver: Receiver) -> None:
    client = production.client
    queue = new_queue(client)
    client.pause_queue(name=queue.name)
    for bad in (timedelta(seconds=5), timedelta(minutes=30, seconds=1)):
        with pytest.raises(exceptions.InvalidArgument):
            client.create_task(parent=queue.name, task=http_task(f"{receiver.url}/ok/x", dispatch_deadline=bad))
    for good in (timedelta(seconds=15), timedelta(minutes=30)):
        client.create_task(parent=queue.name, task=http_task(f"{receiver.url}/ok/x", dispatch_deadline=good))
    client.delete_queue(name=queue.name)


def test_duplicate_rate_delivers_each_task_twice(production: Emulator, receiver: Receiver) -> None:
    client = production.client
    queue = new_queue(client)
    k = key()
    names = [f"{queue.name}/tasks/dup-{i}-{k}" for i in range(3)]
    for name in names:
        client.create_task(parent=queue.name, task=http_task(f"{receiver.url}/ok/{k}", name=name))
    wait_for(lambda: len(receiver.of(k)) == 6, 15, "six deliveries of three tasks")
    delivered: defaultdict[str, int] = defaultdict(int)
    for request in receiver.of(k):
        delivered[request["headers"]["X-CloudTasks-TaskName"]] += 1
    assert dict(delivered) == {name.rsplit("/", 1)[1]: 2 for name in names}
    assert production.stats(queue.name)["duplicates_injected"] == 3

    assert (
        requests.post(production.admin + "/faults", json={"duplicate_rate": 0}, timeout=5).json()["duplicate_rate"] == 0
    )
    assert requests.post(production.admin + "/faults", json={"nonsense": 1}, timeout=5).status_code == 400
    once = key()
    client.create_task(parent=queue.name, task=http_task(f"{receiver.url}/ok/{once}"))
    wait_for(lambda: receiver.of(once), 10, "the task after faults were cleared")
    time.sleep(0.5)
    assert len(receiver.of(once)) == 1

    # This emulator reserves names for 1 s only (--name-reservation-seconds 1).
    time.sleep(1.1)
    client.create_task(parent=queue.name, task=http_task(f"{receiver.url}/ok/{once}", name=names[0]))


def test_sigterm_stops_the_emulator_cleanly(tmp_path: Path) -> None:
    emulator = start_emulator(tmp_path)
    queue = new_queue(emulator.client)
    assert emulator.client.get_queue(name=queue.name).name == queue.name
    assert emulator.stop() == 0
    assert emulator.process.stdout is not None and emulator.process.stdout.read() == b""  # nothing on stdout
