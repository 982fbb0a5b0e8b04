"""Completion events: every job's end told to downstream systems, at least once.

When a job ends (completed, failed, superseded, removed), the store's announcer (`Announcer`,
called by `JobStore.update` after the write that ends it) publishes one CloudEvent to the Pub/Sub
topic EVENTS_TOPIC, in the Pub/Sub protocol binding (binary mode: `ce-*` attributes, the data as
the message body), and, when NOTIFY_URL is set, enqueues a task that POSTs the same event to that
endpoint, signed with the Standard Webhooks scheme and NOTIFY_SECRET, retried by the notify
queue while the endpoint answers otherwise than 2xx.

Subscribers de-duplicate by `ce-id`, which is stable per job and outcome (`<job id>.<state>`): a
redelivered webhook, a repeated announcement or a retried task sends the same id again. The job's
open/ entry stays until the announcement went out, so an announcement that failed (Pub/Sub or
the queue unavailable) is made again by the reconciler's sweep: the outcome is never lost, and
nothing sleeps waiting for it.

Pub/Sub is spoken over its REST API with the runtime's credentials (google-cloud-pubsub would add
about 275 ms of imports to the functions that end jobs); with PUBSUB_EMULATOR_HOST set — the
convention of Google's emulators — it is plain HTTP to that host, without credentials.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import quote

import requests

from bgremove import errors, logs, signatures, tasks, times
from bgremove.config import Config
from bgremove.jobs import Job

TYPE_PREFIX = "dev.bgremove.job.v1."
EMULATOR_HOST_VARIABLE = "PUBSUB_EMULATOR_HOST"
PUBSUB_ROOT = "https://pubsub.googleapis.com"


def event_id(job: Job) -> str:
    """Stable per job and outcome: what subscribers de-duplicate by."""
    return f"{job.job_id}.{job.state.value}"


def event_type(job: Job) -> str:
    return TYPE_PREFIX + job.state.value


def source_of_events(cfg: Config) -> str:
    """The CloudEvents `source`: this deployment, named by its state bucket."""
    return f"//bgremove/buckets/{cfg.state_bucket}"


def event_data(job: Job, cfg: Config) -> dict[str, Any]:
    """The event's data: the source, every output, the failure reason and message, the times."""
    source = job.source
    outputs = [
        {
            "variant": entry.get("variant", ""),
            "object": f"gs://{cfg.processed_bucket}/{entry.get('object', '')}",
            "generation": int(entry.get("generation") or 0),
            "url": f"{cfg.output_url_base}/{cfg.processed_bucket}/{quote(str(entry.get('object', '')), safe='/')}",
        }
        for entry in job.outputs
    ]
    return {
        "job_id": job.job_id,
        "state": job.state.value,
        "source": {
            "uri": source.object_uri,
            "bucket": source.bucket,
            "name": source.name,
            "generation": source.generation,
        },
        "outputs": outputs,
        "reason": job.reason,
        "message": job.error,
        "prediction_id": job.prediction_id,
        "created_at": times.format(job.created_at),
        "ended_at": times.format(job.updated_at),
    }


def attributes(job: Job, cfg: Config) -> dict[str, str]:
    """The CloudEvents attributes of the Pub/Sub binding (binary mode)."""
    return {
        "ce-specversion": "1.0",
        "ce-type": event_type(job),
        "ce-source": source_of_events(cfg),
        "ce-id": event_id(job),
        "ce-time": times.format(job.updated_at),
        "ce-subject": f"objects/{job.source.name}",
        "content-type": "application/json",
    }


def structured(job: Job, cfg: Config) -> dict[str, Any]:
    """The same event in structured mode (one JSON document), as NOTIFY_URL receives it."""
    return {
        "specversion": "1.0",
        "type": event_type(job),
        "source": source_of_events(cfg),
        "id": event_id(job),
        "time": times.format(job.updated_at),
        "subject": f"objects/{job.source.name}",
        "datacontenttype": "application/json",
        "data": event_data(job, cfg),
    }


class Publisher(Protocol):
    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        """Publish one message; its message id. Raises errors.EventsUnavailable."""
        ...


class RestPublisher:
    """Pub/Sub's REST `topics.publish`, with the runtime's credentials (none for an emulator)."""

    def __init__(self, timeout_seconds: float, emulator_host: str = "") -> None:
        self._timeout = timeout_seconds
        self._emulator_host = emulator_host
        self._lock = threading.Lock()
        self._session: requests.Session | None = None

    def _authorized(self) -> requests.Session:
        with self._lock:
            if self._session is None:
                if self._emulator_host:
                    self._session = requests.Session()
                else:
                    import google.auth
                    from google.auth.transport.requests import AuthorizedSession

                    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/pubsub"])
                    # google-auth leaves AuthorizedSession unannotated.
                    self._session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
            return self._session

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        root = f"http://{self._emulator_host}" if self._emulator_host else PUBSUB_ROOT
        body = {"messages": [{"data": base64.b64encode(data).decode(), "attributes": dict(attributes)}]}
        try:
            answer = self._authorized().post(f"{root}/v1/{topic}:publish", json=body, timeout=self._timeout)
        except (requests.RequestException, OSError) as exc:
            raise errors.EventsUnavailable(f"{type(exc).__name__} publishing to {topic}") from exc
        if answer.status_code != 200:
            raise errors.EventsUnavailable(f"publishing to {topic} answered {answer.status_code}", answer.status_code)
        ids = answer.json().get("messageIds") or [""]
        return str(ids[0])


class Announcer:
    """Tells the world a job ended: the events topic, and the notify queue when NOTIFY_URL is set.
    True once both are done; False (logged) when either failed, so the sweep tries again."""

    def __init__(self, cfg: Config, publisher: Callable[[], Publisher], queue: Callable[[], tasks.Queue]) -> None:
        self._cfg = cfg
        self._publisher = publisher
        self._queue = queue

    @property
    def active(self) -> bool:
        return bool(self._cfg.events_topic or self._cfg.notify_url)

    def __call__(self, job: Job) -> bool:
        cfg = self._cfg
        fields = {"job_id": job.job_id, "event_id": event_id(job), "object": job.source.object_uri}
        try:
            if cfg.events_topic:
                data = json.dumps(event_data(job, cfg), separators=(",", ":")).encode()
                message = self._publisher().publish(cfg.events_topic, data, attributes(job, cfg))
                fields["message_id"] = message
            if cfg.notify_url:
                name = f"{job.job_id}-n-{job.state.value}"
                self._queue().enqueue(tasks.notify_task(job.job_id, name, structured(job, cfg), cfg))
        except errors.RetryLater as exc:
            logs.warning("job end not announced yet; the sweep will", error=f"{type(exc).__name__}: {exc}", **fields)
            return False
        logs.info(f"job end announced: {job.state.value}", outcome=job.state.value, **fields)
        return True


def emulator_host() -> str:
    """PUBSUB_EMULATOR_HOST, read as Google's client libraries read it (an emulator convention,
    like the other *_EMULATOR_HOST variables, not a setting)."""
    return os.environ.get(EMULATOR_HOST_VARIABLE, "")


Post = Callable[[str, bytes, Mapping[str, str]], int]


def deliver_notification(job_id: str, event: Mapping[str, Any], cfg: Config, post: Post, now: float, key: bytes) -> int:
    """POST one event to NOTIFY_URL, signed (Standard Webhooks: `webhook-id` is the event id, so a
    receiver de-duplicates retries); the HTTP status. A non-2xx answer raises
    errors.NotifyUnavailable, which the task handler turns into the notify queue's retry."""
    body = json.dumps(event, separators=(",", ":")).encode()
    message_id = str(event.get("id") or uuid.uuid4())
    timestamp = int(now)
    headers = {
        "content-type": "application/cloudevents+json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures.sign(key, message_id, timestamp, body),
    }
    try:
        status = post(cfg.notify_url, body, headers)
    except (requests.RequestException, OSError) as exc:
        raise errors.NotifyUnavailable(f"{type(exc).__name__} posting to NOTIFY_URL") from exc
    if not 200 <= status < 300:
        raise errors.NotifyUnavailable(f"NOTIFY_URL answered {status}")
    logs.info("notification delivered", job_id=job_id, event_id=message_id, status=status)
    return status
