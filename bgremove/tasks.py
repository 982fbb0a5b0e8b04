"""Cloud Tasks behind a narrow seam: enqueue one named HTTP task, ask whether a task exists.

Uploads are admitted into the submission queue, whose dispatch rate and concurrency match the
predictions API's create limit; deadline checks go to a queue of their own, scheduled for the
moment a job is due, so they never eat the submission rate. Task names are derived from the job
id, so a duplicate event or a retried enqueue cannot make a second task: Cloud Tasks answers
ALREADY_EXISTS, which `enqueue` reports as False.

The client is google-cloud-tasks over gRPC (measured in bench/: +31 ms of imports once the storage
client is built, imported only by the functions that enqueue; its REST transport saves nothing, as
the transports package imports the gRPC one anyway). With
CLOUD_TASKS_EMULATOR_HOST set — the convention of Google's emulators — it talks plaintext gRPC
to that host without credentials, as the offline stack's emulator expects.
"""

from __future__ import annotations

import datetime
import enum
import json
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bgremove import naming
from bgremove.errors import QueueUnavailable

if TYPE_CHECKING:
    from bgremove.config import Config

EMULATOR_HOST_VARIABLE = "CLOUD_TASKS_EMULATOR_HOST"
# How long a task's HTTP target may take before Cloud Tasks counts the attempt failed (the task
# handler's timeout in Terraform must be at least this; infra/checks reads it from here).
DISPATCH_DEADLINE_SECONDS = 60.0


@dataclass(frozen=True)
class Task:
    queue: str  # projects/P/locations/L/queues/Q
    name: str  # the task id within the queue
    url: str
    body: dict[str, Any]
    schedule_at: float | None = None  # unix time; None = now


class Kind(enum.StrEnum):
    """What a task asks of the task handler (`main.on_task`)."""

    SUBMIT = "submit"  # create the job's prediction (the submissions queue)
    DEADLINE = "deadline"  # check on the job at its due time (the deadlines queue)
    NOTIFY = "notify"  # POST a completion event to NOTIFY_URL (the notify queue)


@dataclass(frozen=True)
class Payload:
    """A task's body, as the task handler receives it: `{"kind": ..., "job_id": ...}`, and for a
    notification the event itself (as it was when the job ended)."""

    kind: Kind
    job_id: str
    event: dict[str, Any] | None = None
    # A submission: when its job was queued (unix seconds), for the queue-age metric.
    queued_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": self.kind.value, "job_id": self.job_id}
        if self.event is not None:
            body["event"] = self.event
        if self.queued_at is not None:
            body["queued_at"] = self.queued_at
        return body


def parse_payload(body: object) -> Payload | None:
    """The payload of a task body, or None when it is not one we make (the handler answers 400)."""
    if not isinstance(body, dict):
        return None
    kind, job_id, event = body.get("kind"), body.get("job_id"), body.get("event")
    if kind not in tuple(Kind) or not isinstance(job_id, str) or not naming.is_job_id(job_id):
        return None
    if (kind == Kind.NOTIFY) != isinstance(event, dict):
        return None  # a notification carries its event; nothing else does
    queued_at = body.get("queued_at")
    if not isinstance(queued_at, int | float) or isinstance(queued_at, bool):
        queued_at = None  # optional, and only informative: a task without it is still one
    return Payload(Kind(kind), job_id, event if isinstance(event, dict) else None, queued_at)


def submit_task(job_id: str, name: str, cfg: Config, queued_at: float | None = None) -> Task:
    """A job's submission task, named `name` (jobs.Job.submit_task_name) on the submissions queue."""
    body = Payload(Kind.SUBMIT, job_id, queued_at=queued_at).to_json()
    return Task(cfg.submit_queue, name, cfg.task_handler_url, body)


def deadline_task(job_id: str, name: str, due_at: float, cfg: Config) -> Task:
    """A job's deadline check, delayed until `due_at`, on the deadlines queue."""
    body = Payload(Kind.DEADLINE, job_id).to_json()
    return Task(cfg.deadline_queue, name, cfg.task_handler_url, body, schedule_at=due_at)


def notify_task(job_id: str, name: str, event: dict[str, Any], cfg: Config) -> Task:
    """A job's notification: the event, POSTed to NOTIFY_URL by the task handler."""
    return Task(cfg.notify_queue, name, cfg.task_handler_url, Payload(Kind.NOTIFY, job_id, event).to_json())


class Queue(Protocol):
    def enqueue(self, task: Task) -> bool:
        """Create the task; False when a task of that name exists or existed recently."""
        ...

    def exists(self, queue: str, name: str) -> bool:
        """Whether a task of that name is still in the queue (waiting, or being retried)."""
        ...


class CloudTasksQueue:
    """HTTP tasks with an OIDC token of `service_account` (the task handler is private)."""

    def __init__(
        self, service_account: str, deadline_seconds: float = DISPATCH_DEADLINE_SECONDS, timeout_seconds: float = 10.0
    ) -> None:
        self._service_account = service_account
        self._deadline = deadline_seconds
        self._timeout = timeout_seconds
        self._lock = threading.Lock()
        self._client: Any = None

    def _tasks(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = new_client(os.environ.get(EMULATOR_HOST_VARIABLE, ""))
            return self._client

    def enqueue(self, task: Task) -> bool:
        from google.api_core import exceptions as gexc
        from google.cloud import tasks_v2
        from google.protobuf import duration_pb2, timestamp_pb2

        http = tasks_v2.HttpRequest(
            url=task.url,
            http_method=tasks_v2.HttpMethod.POST,
            headers={"Content-Type": "application/json"},
            body=json.dumps(task.body, separators=(",", ":")).encode(),
        )
        if self._service_account:
            http.oidc_token = tasks_v2.OidcToken(service_account_email=self._service_account, audience=task.url)
        message = tasks_v2.Task(
            name=f"{task.queue}/tasks/{task.name}",
            http_request=http,
            dispatch_deadline=duration_pb2.Duration(seconds=int(self._deadline)),
        )
        if task.schedule_at is not None:
            when = timestamp_pb2.Timestamp()
            when.FromDatetime(datetime.datetime.fromtimestamp(task.schedule_at, datetime.UTC))
            message.schedule_time = when
        try:
            self._tasks().create_task(parent=task.queue, task=message, timeout=self._timeout)
        except gexc.AlreadyExists:
            return False
        except _transient() as exc:
            raise QueueUnavailable(f"{type(exc).__name__} creating task {task.name}") from exc
        return True

    def exists(self, queue: str, name: str) -> bool:
        from google.api_core import exceptions as gexc

        try:
            self._tasks().get_task(name=f"{queue}/tasks/{name}", timeout=self._timeout)
        except gexc.NotFound:
            return False
        except _transient() as exc:
            raise QueueUnavailable(f"{type(exc).__name__} reading task {name}") from exc
        return True


def new_client(emulator_host: str = "") -> Any:
    """A google-cloud-tasks CloudTasksClient: to Cloud Tasks with the ambient credentials, or, given
    an emulator's "host:port", plaintext gRPC without credentials (handing the transport a ready
    channel makes the client skip google.auth.default()). The one place a Tasks client is built:
    the functions, the operators' command and the offline stack's tools all call it.

    The channel has no message-size caps, as the generated transport sets on channels it makes
    itself (a FULL ListTasks page can exceed gRPC's default 4 MB)."""
    from google.cloud import tasks_v2

    if not emulator_host:
        return tasks_v2.CloudTasksClient()
    import grpc
    from google.cloud.tasks_v2.services.cloud_tasks import transports

    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    channel = grpc.insecure_channel(emulator_host, options=options)
    return tasks_v2.CloudTasksClient(transport=transports.CloudTasksGrpcTransport(channel=channel))


def _transient() -> tuple[type[Exception], ...]:
    from google.api_core import exceptions as gexc

    return (
        gexc.ServiceUnavailable,
        gexc.DeadlineExceeded,
        gexc.TooManyRequests,  # RESOURCE_EXHAUSTED: the queue's or project's task quota
        gexc.InternalServerError,
        gexc.RetryError,
        gexc.Aborted,
        gexc.Unknown,
    )
