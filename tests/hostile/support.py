"""Helpers for the hostile-input tests: reading the functions' log lines, delivering webhooks and
CloudEvents with every answer kept, jobs whose real webhook was dropped, and a small HTTPS server
that plays a hostile output host."""

from __future__ import annotations

import base64
import gzip
import json
import ssl
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import requests

from bgremove import naming
from bgremove.submit import webhook_url_for
from offline_cloud.client import cloud_event_headers, webhook_headers
from offline_cloud.stack import StackInfo
from tests.support import StackClient, photo, wait_for

# Every body our functions answered to these tests; the secrets test reads them all.
ANSWERS: list[str] = []
# Every stack these tests ran against; the secrets test reads all their logs.
STACKS: list[StackInfo] = []
DELETE = object()  # as a field value in PendingJob.body: leave the field out

UNAUTHORIZED_BODY = {"status": 401, "message": "unauthorized"}


class Answer(Protocol):
    """A requests response or a werkzeug test response: both give their body as `text`."""

    @property
    def text(self) -> str: ...


AnswerT = TypeVar("AnswerT", bound=Answer)


def record(response: AnswerT) -> AnswerT:
    """Keep the answer body (requests or werkzeug test response) for the secrets test."""
    ANSWERS.append(response.text)
    return response


def record_text(text: str) -> str:
    ANSWERS.append(text)
    return text


# --- logs -------------------------------------------------------------------------------------


class LogCursor:
    """The JSON lines a function wrote after this cursor was made.

    A function writes its log line before it answers, so once the answer is in, the line is too.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def entries(self) -> list[dict[str, Any]]:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            text = f.read().decode("utf-8", errors="replace")
        found = []
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # the server's own lines
            if isinstance(entry, dict):
                found.append(entry)
        return found

    def find(self, contains: str = "", **fields: Any) -> dict[str, Any]:
        """The first new entry whose message contains `contains` and whose fields match."""
        entries = self.entries()
        for entry in entries:
            if contains in entry.get("message", "") and all(entry.get(k) == v for k, v in fields.items()):
                return entry
        shown = "\n".join(json.dumps(e)[:300] for e in entries[-20:])
        raise AssertionError(f"no log entry with {contains!r} and {fields} among {len(entries)} new lines:\n{shown}")

    def wait_for(self, contains: str = "", timeout: float = 30, **fields: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            try:
                return self.find(contains, **fields)
            except AssertionError:
                return None

        return wait_for(found, timeout, f"a log entry with {contains!r} and {fields} in {self.path.name}")


def webhook_log(info: StackInfo) -> LogCursor:
    return LogCursor(info.logs["function-webhook"])


def trigger_log(info: StackInfo) -> LogCursor:
    return LogCursor(info.logs["function-trigger"])


def task_log(info: StackInfo) -> LogCursor:
    """The task handler's log: submission-time decisions (bytes, pixels, API answers) are made there."""
    return LogCursor(info.logs["function-task-handler"])


# --- webhook deliveries -----------------------------------------------------------------------


def signed_headers(
    secret: str, body: bytes, webhook_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for `body`, as the predictions API signs them."""
    return webhook_headers(secret, body, webhook_id, timestamp)


def deliver(
    info: StackInfo,
    body: bytes | Iterable[bytes],
    headers: dict[str, Any] | None = None,
    method: str = "POST",
    secret: str | None = None,
    job: str | None = None,
    url: str | None = None,
    **kwargs: Any,
) -> requests.Response:
    """Send `body` to the real webhook function, signed with the stack's secret (or `secret`).

    `job` sends it to that job's webhook URL, `<WEBHOOK_URL>?job=<job>`, as the pipeline gives it to
    the API (`webhook_url_for`); `url` to any URL (hostile query strings); neither, to the bare
    `WEBHOOK_URL`. Without a signed `webhook` echo in the body, the request's query string is the
    only (unsigned) hint of which job a delivery is for. `headers` override the signed ones; a value
    of None removes that header. A `body` of chunks (sent chunked) is not signed: pass `headers`.
    """
    assert job is None or url is None, "a job's URL or another URL, not both"
    sent = signed_headers(secret or info.webhook_secret, body) if isinstance(body, bytes) else {}
    for name, value in (headers or {}).items():
        if value is None:
            sent.pop(name, None)
        else:
            sent[name] = value
    target = url or (webhook_url_for(info.webhook_url, job) if job is not None else info.webhook_url)
    response = requests.request(method, target, data=body, headers=sent, timeout=30, **kwargs)
    return record(response)


def random_secret() -> str:
    return "whsec_" + base64.b64encode(uuid.uuid4().bytes * 2).decode()


# --- CloudEvents to the trigger ---------------------------------------------------------------


def post_event(
    info: StackInfo,
    data: Any,
    event_id: str | None = None,
    bucket: str | None = None,
    name: str = "x.jpg",
    headers: dict[str, Any] | None = None,
) -> requests.Response:
    """POST a binary-mode CloudEvent to the real trigger function.

    Attribute values are percent-encoded as the CloudEvents HTTP binding requires, so any object
    name can travel in `ce-subject`.
    """
    sent = cloud_event_headers(event_id or f"hostile-{uuid.uuid4().hex}", bucket or info.upload_bucket, name)
    sent["ce-subject"] = "objects/" + quote(name, safe="/")
    for key, value in (headers or {}).items():
        if value is None:
            sent.pop(key, None)
        else:
            sent[key] = value
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    response = requests.post(info.trigger_url, data=body, headers=sent, timeout=30)
    return record(response)


def object_resource(stack: StackClient, name: str) -> dict[str, Any]:
    """The object resource of an upload, as a storage event carries it."""
    blob = stack.gcs.bucket(stack.info.upload_bucket).get_blob(name)
    assert blob is not None, name
    return dict(blob._properties)


# --- jobs whose real webhook never arrives ----------------------------------------------------


@dataclass
class PendingJob:
    """A real job left `submitted`: its prediction succeeded but the webhook was dropped."""

    stack: StackClient
    name: str
    generation: int
    job_id: str
    prediction: dict[str, Any]

    @property
    def output_name(self) -> str:
        prefix = self.stack.info.function_env.get("OUTPUT_PREFIX", "")
        return naming.output_name(self.name, prefix.strip("/") + "/" if prefix.strip("/") else "")

    def body(self, **changes: Any) -> bytes:
        """The real prediction JSON with fields changed (DELETE removes one).

        As the service serves it by default, it has no `webhook` field: delivered to `url`, the
        handler finds the job from the query string and confirms it by the recorded prediction id.
        """
        data = {**self.prediction, **changes}
        return json.dumps({k: v for k, v in data.items() if v is not DELETE}).encode()

    def echoed(self, **changes: Any) -> bytes:
        """`body`, plus the signed `webhook` echo naming this job (what an API that echoes the field
        sends): the handler then reads the job from the body and ignores the request's URL."""
        return self.body(**{"webhook": self.url, **changes})

    @property
    def url(self) -> str:
        """This job's webhook URL, `<WEBHOOK_URL>?job=<job id>`, as the pipeline gave it to the API."""
        return webhook_url_for(self.stack.info.webhook_url, self.job_id)

    def deliver(self, body: bytes | Iterable[bytes], **kwargs: Any) -> requests.Response:
        """`body` delivered to this job's webhook URL (see `deliver`)."""
        return deliver(self.stack.info, body, job=self.job_id, **kwargs)

    @property
    def delivery_url(self) -> str:
        """Where the service serves (or would serve) this prediction's output."""
        return self.prediction.get("output") or (
            f"{self.stack.info.predictions_service_url}/delivery/{self.prediction['id']}/output.png"
        )

    def succeeded(self, output: Any) -> bytes:
        """The real prediction JSON, turned into a success whose output is `output`."""
        return self.body(status="succeeded", output=output, error=None)

    def record(self) -> dict[str, Any]:
        job = self.stack.job(self.stack.info.upload_bucket, self.name, self.generation)
        assert job is not None
        return job

    def assert_untouched(self) -> None:
        """Still waiting for its webhook, and nothing written for it."""
        job = self.record()
        assert job["state"] == "submitted", job
        assert_no_output(self.stack, self.output_name, self.job_id)

    def assert_refused_output(self, error: str) -> None:
        """Settled by a failure record saying why, and nothing written for it."""
        job = self.record()
        assert (job["state"], job["reason"]) == ("failed", "output_refused"), job
        assert error in job["error"], job["error"]
        assert_no_output(self.stack, self.output_name, self.job_id)


def assert_no_output(stack: StackClient, output_name: str, job_id: str) -> None:
    assert stack.processed(output_name) is None, f"{output_name} was written"
    written = [
        b.name
        for b in stack.gcs.list_blobs(stack.info.processed_bucket)
        if (b.metadata or {}).get("bgremove-job") == job_id
    ]
    assert written == [], f"objects written for job {job_id}: {written}"


class JobPool:
    """Makes real jobs in batches, with the predictions service dropping their webhooks.

    `take()` gives a job whose prediction succeeded (the model ran, its output is served);
    `take(succeeded=False)` a cheaper one whose prediction failed at once (no model run), for cases
    that replace the outcome anyway. The fault knobs are set only while a batch is made, and reset
    (as the `faults` fixture does) before `take` returns.
    """

    def __init__(
        self,
        stack: StackClient,
        batch: int = 4,
        fast_batch: int = 12,
        prefix: str = "hostile",
        image: tuple[bytes, str] | None = None,
    ) -> None:
        self.stack = stack
        self.batch = {True: batch, False: fast_batch}
        self.prefix = prefix
        self._ready: dict[bool, list[PendingJob]] = {True: [], False: []}
        self._image, self._content_type = image or (photo("coffee", "JPEG", (48, 32)), "image/jpeg")

    def take(self, succeeded: bool = True) -> PendingJob:
        if not self._ready[succeeded]:
            self._ready[succeeded] = self.make(self.batch[succeeded], succeeded)
        return self._ready[succeeded].pop()

    def make(self, count: int, succeeded: bool = True) -> list[PendingJob]:
        stack = self.stack
        dropped_before = stack.stats()["faults"]["webhooks_dropped"]
        stack.set_faults(webhook_drop_rate=1.0, fail_rate=0.0 if succeeded else 1.0)
        try:
            names = [f"{self.prefix}/{uuid.uuid4().hex}.{self._content_type.split('/')[1]}" for _ in range(count)]
            generations = [stack.upload(name, self._image, self._content_type) for name in names]
            jobs = [stack.wait_job(n, g, states=("submitted",)) for n, g in zip(names, generations, strict=True)]
            # Every terminal webhook has been dropped once the counter says so; only then is it
            # safe to let webhooks through again.
            wait_for(
                lambda: stack.stats()["faults"]["webhooks_dropped"] >= dropped_before + count,
                60,
                f"{count} dropped webhooks",
            )
        finally:
            stack.api("DELETE", "/_admin/faults").raise_for_status()
        made = []
        for name, generation, job in zip(names, generations, jobs, strict=True):
            prediction = stack.api("GET", f"/v1/predictions/{job['prediction_ids'][-1]}").json()
            assert prediction["status"] == ("succeeded" if succeeded else "failed"), prediction
            # The service's default, as Replicate's schema: no `webhook` echo, so bodies built from
            # this prediction reach their job through the (unsigned) query string only.
            assert "webhook" not in prediction, "the stack echoes webhooks; these tests assume it does not"
            made.append(PendingJob(stack, name, generation, job["job_id"], prediction))
        return made


# --- a hostile output host --------------------------------------------------------------------

Route = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class HostileHost:
    """`https://localhost:PORT`, trusted through the stack's own CA, answering scripted routes and
    recording every path it was asked for."""

    tls_dir: Path
    routes: dict[str, Route] = field(default_factory=dict)
    requested: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # the name http.server calls
                host.requested.append(self.path)
                route = host.routes.get(self.path.split("?")[0])
                if route is None:
                    send(self, 404, "text/plain", b"no such route")
                else:
                    route(self)

            def log_message(self, *args: Any) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.tls_dir / "cert.pem", self.tls_dir / "key.pem")
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "localhost") -> str:
        return f"https://{host}:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send(
    handler: BaseHTTPRequestHandler, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Connection", "close")
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)


def answer(status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> Route:
    return lambda handler: send(handler, status, content_type, body, headers)


def redirect(location: str, status: int = 302) -> Route:
    return lambda handler: send(handler, status, "text/plain", b"moved", {"Location": location})


def chunked(content_type: str, chunks: Iterable[bytes]) -> Route:
    """A body without Content-Length, so only a cap counted while streaming can stop it."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        try:
            for chunk in chunks:
                handler.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            handler.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the client stopped reading: what a cap does

    return route


def gzip_bomb(head: bytes, decoded_size: int) -> bytes:
    """`head` then zeros up to `decoded_size`, gzip-compressed to a few kilobytes."""
    return gzip.compress(head + bytes(decoded_size - len(head)), compresslevel=9)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
