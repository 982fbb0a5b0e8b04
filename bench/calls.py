"""Figure "calls": storage operations, API calls and Cloud Tasks calls per image, per function.

The storage emulator keeps no request log at the level the stack runs it (`-log-level warn`, and
StackOptions has no option for it), and the functions' code is not instrumented. So the bench runs
the core in its own process, over the same seams `bgremove.runtime` builds (GcsObjects on a
google-cloud-storage client, PredictionsClient, CloudTasksQueue, the output downloader) pointed at
the main stack's real emulators and predictions service, and counts at two levels: each seam
method called (a proxy around each seam) and each HTTP request underneath (the storage client's
and the API client's sessions, the output download's session; for Cloud Tasks, each seam call is
one gRPC call).

One small photo (a data URL input, the common case) goes through the queue design's handlers in
order — `admission.handle_upload` (on_upload), `submit.handle_submit_task` (on_task, submission),
`complete.handle_webhook` with the very request the predictions service sent (captured by a
local HTTP server standing in for the webhook function's URL), `reconcile.handle_deadline_task`
(on_task, the deadline check, which finds the job final) — and another through the direct design
of the bulk figure's baseline (bench/baseline_direct.py, then the same webhook). The queues the
figure enqueues into are its own, created paused, so nothing else dispatches its tasks.

Storage operations are classed as Cloud Storage bills them: class A (inserts, lists, copies,
patches), class B (reads of data or metadata), free (deletes).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import requests

from bench import common
from bgremove import admission, complete, outputs, runtime, submit
from bgremove import reconcile as reconciler
from bgremove.config import Config, load_config
from bgremove.deps import Deps, OutputSource
from bgremove.jobs import JobStore
from bgremove.outcomes import Outcome
from bgremove.signatures import decode_secret
from bgremove.storage import GcsObjects
from bgremove.tasks import EMULATOR_HOST_VARIABLE, CloudTasksQueue
from offline_cloud.stack import TASKS_LOCATION

CALLS_BUCKET = "bench-calls-uploads"


class Tally:
    """Counts per (phase, key); the phase is set by the driver before each handler runs."""

    def __init__(self) -> None:
        self.phase = ""
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def hit(self, key: str) -> None:
        with self._lock:
            self.counts[(self.phase, key)] += 1

    def of(self, phase: str, prefix: str) -> dict[str, int]:
        return {k[len(prefix) :]: n for (p, k), n in sorted(self.counts.items()) if p == phase and k.startswith(prefix)}


class Counted:
    """A seam whose every method call is counted as `seam:<name>.<method>`."""

    def __init__(self, inner: Any, tally: Tally, seam: str) -> None:
        self._inner, self._tally, self._seam = inner, tally, seam

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._tally.hit(f"seam:{self._seam}.{name}")
            return attr(*args, **kwargs)

        return call


def count_requests(session: requests.Session, tally: Tally, kind: str, classify: Callable[[str, str], str]) -> None:
    """Count every HTTP request the session makes, as `<kind>:<class>`."""
    original = session.request

    def request(*args: Any, **kwargs: Any) -> Any:
        method = kwargs.get("method") or (args[0] if args else "")
        url = kwargs.get("url") or (args[1] if len(args) > 1 else "")
        tally.hit(f"{kind}:{classify(str(method).upper(), str(url))}")
        return original(*args, **kwargs)

    session.request = request  # type: ignore[method-assign]


def storage_operation(method: str, url: str) -> str:
    """`class A|B|free <operation>` of one JSON-API request."""
    parts = urlsplit(url)
    path, query = parts.path, parts.query
    if path.startswith("/upload/"):
        return "A insert (upload)"
    if method == "DELETE":
        return "free delete"
    if "/copyTo/" in path or "/rewriteTo/" in path:
        return "A copy"
    if method == "GET" and path.rstrip("/").endswith("/o"):
        return "A list"
    if method in ("PATCH", "PUT"):
        return "A patch"
    if method == "GET" and ("alt=media" in query or path.startswith("/download/")):
        return "B get (data)"
    if method == "GET":
        return "B get (metadata)"
    return f"? {method} {path}"


def api_call(method: str, url: str) -> str:
    path = urlsplit(url).path
    if path.endswith("/predictions") and method == "POST":
        return "create prediction"
    if "/cancel" in path:
        return "cancel prediction"
    if "/predictions/" in path and method == "GET":
        return "get prediction"
    return f"{method} {path}"


class WebhookCatcher:
    """Stands in for the webhook function's URL: keeps each delivery and answers 200."""

    def __init__(self) -> None:
        self.deliveries: list[dict[str, Any]] = []
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                catcher.deliveries.append(
                    {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                )
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", common.port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, prediction_id: str, timeout: float = 60.0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for d in self.deliveries:
                try:
                    if json.loads(d["body"]).get("id") == prediction_id:
                        return d
                except ValueError:
                    continue
            return None

        return common.wait_for(found, timeout, f"the webhook of {prediction_id}", interval=0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run(ctx: common.Context) -> dict[str, Any]:
    info = ctx.info
    common.create_bucket(info, CALLS_BUCKET)
    catcher = WebhookCatcher()
    tasks = _paused_queues(info)
    previous = os.environ.get(EMULATOR_HOST_VARIABLE)
    os.environ[EMULATOR_HOST_VARIABLE] = info.tasks_endpoint  # CloudTasksQueue reads it, as on_upload does
    try:
        env = {
            **info.function_env,
            "UPLOAD_BUCKET": CALLS_BUCKET,
            "WEBHOOK_URL": catcher.url,
            "SUBMIT_QUEUE": tasks["submit"],
            "DEADLINE_QUEUE": tasks["deadline"],
        }
        cfg = load_config(env)
        designs = {}
        for design in ("queue", "direct"):
            ctx.log(f"calls: two images through the {design} design's handlers, counting the second")
            tally = Tally()
            deps = _counting_deps(info, cfg, tally, with_queue=design == "queue")
            # The first image warms the clients up (a new storage client reads each bucket's
            # metadata once, a function instance does so once in its life); the second is counted.
            with contextlib.redirect_stdout(io.StringIO()):  # the core's JSON log lines, not the bench's output
                _one_image(info, cfg, deps, tally, catcher, design)
                tally.counts.clear()
                designs[design] = _one_image(info, cfg, deps, tally, catcher, design)
    finally:
        if previous is None:
            os.environ.pop(EMULATOR_HOST_VARIABLE, None)
        else:
            os.environ[EMULATOR_HOST_VARIABLE] = previous
        catcher.close()
        _delete_queues(info, tasks)
    queue, direct = designs["queue"], designs["direct"]
    return {
        "title": "Storage, API and Cloud Tasks calls per image",
        "unit": "calls per image",
        "method": (
            "The core driven in the bench's process over the seams bgremove.runtime builds, pointed at the main "
            "stack's storage emulator, predictions service and Cloud Tasks emulator, with a counting proxy on each "
            "seam and on each HTTP session (the emulator keeps no request log at -log-level warn). One 128x96 JPEG "
            "(data URL input), after one warm-up image, through handle_upload -> handle_submit_task -> "
            "handle_webhook (the captured real delivery) -> handle_deadline_task, and one through the direct "
            "baseline and the same webhook."
        ),
        "designs": designs,
        "storage_requests_per_image": queue["total"]["storage_requests"],
        "api_requests_per_image": queue["total"]["api_requests"],
        "tasks_calls_per_image": queue["total"]["tasks_calls"],
        "ratio": common.ratio(queue["total"]["storage_requests"], direct["total"]["storage_requests"]),
        "target": "none (a count; ratio = storage requests per image, queue / direct)",
        "target_met": None,
        "no_target": True,
        "notes": [
            "An upload over DATA_URL_MAX_BYTES (256 KiB) is sent as a V4 signed URL instead: its full read "
            "(class B) is replaced by local signing with a key (no request) or one IAM SignBlob call on Cloud "
            "Functions, and the model's own read of the signed URL (class B, billed to the bucket).",
        ],
    }


def _one_image(
    info: common.StackInfo, cfg: Config, deps: Deps, tally: Tally, catcher: WebhookCatcher, design: str
) -> dict[str, Any]:
    client = common.gcs(info)
    name = f"bench/calls/{design}-{uuid.uuid4().hex[:8]}.jpg"
    blob = client.bucket(CALLS_BUCKET).blob(name)
    blob.upload_from_string(common.small_jpeg(1), content_type="image/jpeg")
    event = admission.UploadEvent(
        event_id=f"bench-{uuid.uuid4().hex}",
        event_type=admission.FINALIZED,
        bucket=CALLS_BUCKET,
        name=name,
        generation=int(blob.generation),
        content_type="image/jpeg",
        size=int(blob.size),
        event_time=time.time(),
    )
    outcomes: dict[str, str] = {}
    if design == "queue":
        tally.phase = "on_upload"
        result = admission.handle_upload(event, cfg, deps, time.time())
        outcomes[tally.phase] = result.outcome.value
        tally.phase = "on_task (submit)"
        result = submit.handle_submit_task(result.job_id, cfg, deps, time.time())
        outcomes[tally.phase] = result.outcome.value
    else:
        from bench import baseline_direct

        tally.phase = "on_upload (direct)"
        result = baseline_direct.handle_upload_direct(event, cfg, deps, time.time())
        outcomes[tally.phase] = result.outcome.value
    if result.outcome is not Outcome.SUBMITTED:
        raise RuntimeError(f"{design}: the image was not submitted: {result}")
    job_id, prediction_id = result.job_id, result.prediction_id
    delivery = catcher.wait(prediction_id)
    tally.phase = "webhook"
    query = urlsplit(delivery["path"]).query
    settled = complete.handle_webhook(delivery["headers"], delivery["body"], query, cfg, deps, time.time)
    outcomes[tally.phase] = settled.outcome.value
    if settled.outcome is not Outcome.COMPLETED:
        raise RuntimeError(f"{design}: the webhook did not complete the job: {settled}")
    if design == "queue":
        tally.phase = "on_task (deadline)"
        outcomes[tally.phase] = reconciler.handle_deadline_task(job_id, cfg, deps, time.time())
    phases: dict[str, dict[str, Any]] = {}  # JSON for the report
    for phase in outcomes:
        storage = tally.of(phase, "storage:")
        api = tally.of(phase, "api:")
        downloads = tally.of(phase, "output:")
        seams = tally.of(phase, "seam:")
        tasks = {k: n for k, n in seams.items() if k.startswith("queue.")}
        phases[phase] = {
            "outcome": outcomes[phase],
            "storage_requests": sum(storage.values()),
            "storage_by_operation": storage,
            "storage_class_a": sum(n for k, n in storage.items() if k.startswith("A ")),
            "storage_class_b": sum(n for k, n in storage.items() if k.startswith("B ")),
            "api_requests": sum(api.values()),
            "api_by_call": api,
            "tasks_calls": sum(tasks.values()),
            "output_downloads": sum(downloads.values()),
            "seam_calls": seams,
        }
    keys = ("storage_requests", "storage_class_a", "storage_class_b", "api_requests", "tasks_calls", "output_downloads")
    total = {k: sum(p[k] for p in phases.values()) for k in keys}
    total["function_invocations"] = len(phases)
    return {"job_id": job_id, "prediction_id": prediction_id, "phases": phases, "total": total}


def _counting_deps(info: common.StackInfo, cfg: Config, tally: Tally, with_queue: bool) -> Deps:
    """Deps as bgremove.runtime.deps() builds them, with counters on every seam and session."""
    client = common.gcs(info)
    count_requests(client._http, tally, "storage", storage_operation)
    objects = Counted(GcsObjects(client, cfg.http_timeout_seconds, cfg.storage_retry_seconds), tally, "objects")
    api_session = _session(info)
    count_requests(api_session, tally, "api", api_call)
    api = runtime.new_predictions_client(cfg, api_session)
    predictions = Counted(api, tally, "predictions")
    output_session = _session(info)
    count_requests(output_session, tally, "output", lambda method, url: f"{method} output")

    def open_output(url: str) -> OutputSource:
        tally.hit("seam:open_output")
        return outputs.open_output(
            url, cfg.output_allowed_hosts, cfg.output_max_bytes, cfg.http_timeout_seconds, output_session
        )

    if with_queue:
        queue: Any = Counted(
            CloudTasksQueue(cfg.tasks_service_account, timeout_seconds=cfg.http_timeout_seconds), tally, "queue"
        )
    else:
        from bench.baseline_direct import NoQueue

        queue = NoQueue()
    keys = tuple(decode_secret(s) for s in cfg.webhook_secrets)
    return Deps(
        objects=objects,
        store=JobStore(objects, cfg.state_bucket),
        predictions=lambda: predictions,
        open_output=open_output,
        webhook_keys=lambda: keys,
        queue=lambda: queue,
    )


def _session(info: common.StackInfo) -> requests.Session:
    """A session that trusts the stack's CA, as REQUESTS_CA_BUNDLE makes the functions' sessions do
    (this process's own REQUESTS_CA_BUNDLE, if any, would override a session's `verify`)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = info.ca_bundle
    return session


def _paused_queues(info: common.StackInfo) -> dict[str, str]:
    """A submission and a deadline queue of the figure's own, paused: tasks are made, never sent."""
    from google.cloud import tasks_v2

    from offline_cloud import cloud_tasks

    client = cloud_tasks.client(info.tasks_endpoint)
    tag = uuid.uuid4().hex[:8]
    names = {kind: f"{TASKS_LOCATION}/queues/bench-calls-{kind}-{tag}" for kind in ("submit", "deadline")}
    for name in names.values():
        client.create_queue(parent=TASKS_LOCATION, queue=tasks_v2.Queue(name=name), timeout=10)
        client.pause_queue(name=name, timeout=10)
    return names


def _delete_queues(info: common.StackInfo, names: dict[str, str]) -> None:
    from offline_cloud import cloud_tasks

    client = cloud_tasks.client(info.tasks_endpoint)
    for name in names.values():
        with contextlib.suppress(Exception):  # a queue left behind (paused, empty) harms nothing
            client.delete_queue(name=name, timeout=10)
