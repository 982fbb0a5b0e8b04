"""Figure 5: webhooks completed per second by one webhook function instance at concurrency 1, 8
and 32, against the storage emulator's own create-object rate at the same concurrency (the ceiling:
every completed webhook creates one object).

For each level the bench prepares N jobs in state `submitted` through the pipeline's own core, in
the bench's process: each upload (a small JPEG in a bucket of its own, which no trigger watches) is
admitted (`admission.handle_upload`) and submitted (`submit.handle_submit_task`) over seams built
as bgremove.runtime builds them, except that the predictions client is a stand-in that answers a
new prediction id without calling the service, and the queue seam is a no-op. It also makes N
prediction bodies whose output is a real 128x96 RGBA PNG served from https://localhost by
bench/output_server.py, then fires the signed webhooks from a thread pool of that size. The
ceiling is N create-only uploads of the same PNG, with the same metadata, through the
google-cloud-storage client from a thread pool of the same size. The two run back to back for
each level.

The stack runs the webhook function as functions-framework does by default: one gunicorn worker
with 4 threads per core (8 here). In production each instance takes one request at a time
(max_instance_request_concurrency = 1 in infra/), so there concurrency means more instances.
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from bench import common
from bgremove import admission, keys, naming, submit
from bgremove.config import load_config
from bgremove.deps import Deps, OutputSource
from bgremove.jobs import JobStore
from bgremove.outcomes import Outcome
from bgremove.predictions import Prediction
from bgremove.storage import GcsObjects
from offline_cloud.client import webhook_headers
from offline_cloud.stack import MODEL_VERSION

TARGET_SHARE = 0.5


def run(ctx: common.Context) -> dict[str, Any]:
    info = ctx.info
    levels = (1, 8, 32)
    count = 8 if ctx.quick else 150
    files_dir = ctx.work_dir / "throughput-outputs"
    files_dir.mkdir(exist_ok=True)
    png = cutout_png()
    (files_dir / "cutout.png").write_bytes(png)
    server, base_url = common.start_output_server(
        files_dir, ctx.stack.options.directory / "tls", ctx.work_dir / "output-server-throughput.log"
    )
    client = common.gcs(info)
    # A pool as large as the thread count, so the ceiling is not throttled by the client's own pool.
    client._http.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=max(levels) * 2))
    runs = []
    try:
        for level in levels:
            tag = f"c{level}-{uuid.uuid4().hex[:6]}"
            ctx.log(f"throughput: concurrency {level}, {count} each of creates, direct calls and webhooks")
            bodies = _prepare(info, client, tag, count, f"{base_url}/cutout.png")
            ceiling = _ceiling(info, client, tag, png, count, level)
            direct = _direct(info, client, tag, count, level, f"{base_url}/cutout.png")
            ours = _fire(info, bodies, level)
            runs.append(
                {
                    "concurrency": level,
                    "webhooks": count,
                    "webhooks_per_second": ours["per_second"],
                    "ceiling_creates_per_second": ceiling["per_second"],
                    "share_of_ceiling": common.ratio(ours["per_second"], ceiling["per_second"]),
                    "same_calls_direct_per_second": direct["per_second"],
                    "share_of_same_calls_direct": common.ratio(ours["per_second"], direct["per_second"]),
                    "webhook_latency_seconds": ours["latency"],
                    "create_latency_seconds": ceiling["latency"],
                }
            )
    finally:
        common.stop_process(server)
    last = runs[-1]
    return {
        "title": "Webhook throughput of one function instance vs the storage emulator's create rate",
        "unit": "per second",
        "method": (
            "N signed webhooks for prepared `submitted` jobs fired from a thread pool of size c at the webhook "
            "function (each downloads a 128x96 cut-out over HTTPS and creates it create-only, reading and writing "
            "the job record), against N create-only uploads of the same PNG with the google-cloud-storage client "
            "at the same c. Ratio = webhooks/s / creates/s. Also: the webhook's four calls (read record, "
            "download, create, write record) made directly from the bench at the same c."
        ),
        "output_png_bytes": len(png),
        "runs": runs,
        "ratio": last["share_of_ceiling"],
        "ratio_at_concurrency": last["concurrency"],
        "target": f"at concurrency 32, at least {TARGET_SHARE:g} of the ceiling",
        "target_met": None
        if ctx.quick
        else bool(last["share_of_ceiling"] and last["share_of_ceiling"] >= TARGET_SHARE),
    }


def cutout_png() -> bytes:
    """A 128x96 RGBA PNG like the model's cut-outs: a photo with an elliptical opaque centre."""
    from PIL import Image, ImageDraw

    image = Image.open(io.BytesIO(common.small_jpeg(0))).convert("RGBA")
    alpha = Image.new("L", image.size, 0)
    ImageDraw.Draw(alpha).ellipse((20, 10, 108, 86), fill=255)
    image.putalpha(alpha)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


THROUGHPUT_BUCKET = "bench-throughput-uploads"


class _Predictions:
    """A predictions client that creates nothing: each create answers a new `starting` prediction,
    so the jobs are `submitted` as the task handler leaves them, with no model run to wait for."""

    def create(
        self, version: str, image: str, webhook: str, cancel_after: str = "", wait_seconds: int = 0
    ) -> Prediction:
        pid = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(26))
        return Prediction.from_json({"id": pid, "status": "starting", "version": version})

    def get(self, prediction_id: str) -> Prediction | None:
        return None

    def cancel(self, prediction_id: str) -> Prediction:
        raise NotImplementedError("the throughput bench cancels nothing")


def _never_settled(url: str) -> OutputSource:
    raise RuntimeError("the bench's preparation settles no job; the webhook function does")


def _prepare(info: common.StackInfo, client: Any, tag: str, count: int, output_url: str) -> list[bytes]:
    """`count` jobs in state `submitted`, made by the core, and the completed prediction bodies for them."""
    from bench.baseline_direct import NoQueue

    common.create_bucket(info, THROUGHPUT_BUCKET)
    cfg = load_config({**info.function_env, "UPLOAD_BUCKET": THROUGHPUT_BUCKET})
    objects = GcsObjects(client, cfg.http_timeout_seconds, cfg.storage_retry_seconds)
    predictions, queue = _Predictions(), NoQueue()
    deps = Deps(
        objects=objects,
        store=JobStore(objects, cfg.state_bucket),
        predictions=lambda: predictions,
        open_output=_never_settled,
        webhook_keys=lambda: (),
        queue=lambda: queue,
    )
    photo = common.small_jpeg(1)
    uploads = client.bucket(THROUGHPUT_BUCKET)

    def one(i: int) -> bytes:
        name = f"bench/throughput/{tag}/{i:04d}.jpg"
        blob = uploads.blob(name)
        blob.upload_from_string(photo, content_type="image/jpeg")
        event = admission.UploadEvent(
            f"bench-{uuid.uuid4().hex}", admission.FINALIZED, THROUGHPUT_BUCKET, name, int(blob.generation),
            "image/jpeg", len(photo), event_time=time.time(),
        )  # fmt: skip
        with contextlib.redirect_stdout(io.StringIO()):  # the core's JSON log lines
            admitted = admission.handle_upload(event, cfg, deps, time.time())
            result = submit.handle_submit_task(admitted.job_id, cfg, deps, time.time())
        if result.outcome is not Outcome.SUBMITTED:
            raise RuntimeError(f"throughput: {name} was not submitted: {result}")
        return json.dumps(
            {
                "id": result.prediction_id,
                "model": "lucataco/remove-bg",
                "version": MODEL_VERSION,
                "input": {"image": "data:image/jpeg;base64,"},
                "status": "succeeded",
                "output": output_url,
                "error": None,
                "logs": "",
                "metrics": {"predict_time": 0.1, "total_time": 0.1},
                "webhook": submit.webhook_url_for(info.webhook_url, result.job_id),
                "webhook_events_filter": ["completed"],
            },
            separators=(",", ":"),
        ).encode()

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def _timed_pool(work: Any, items: list[Any], concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    lock = threading.Lock()

    def timed(item: Any) -> None:
        began = time.monotonic()
        work(item)
        with lock:
            latencies.append(time.monotonic() - began)

    with ThreadPoolExecutor(concurrency) as pool:
        began = time.monotonic()
        list(pool.map(timed, items))
        wall = time.monotonic() - began
    return {"per_second": round(len(items) / wall, 2), "latency": common.summary(latencies)}


def _ceiling(info: common.StackInfo, client: Any, tag: str, png: bytes, count: int, level: int) -> dict[str, Any]:
    bucket = client.bucket(info.processed_bucket)
    metadata = {
        keys.OUTPUT: "true",
        keys.SOURCE: f"gs://{info.upload_bucket}/bench/ceiling/x.jpg",
        keys.SOURCE_GENERATION: "1",
        keys.JOB: "0" * 64,
        keys.PREDICTION_ID: "0" * 26,
        keys.MODEL_VERSION: MODEL_VERSION,
    }

    def create(i: int) -> None:
        blob = bucket.blob(f"bench/ceiling/{tag}/{i:04d}.png")
        blob.metadata = metadata
        blob.upload_from_string(png, content_type="image/png", if_generation_match=0)

    return _timed_pool(create, list(range(count)), level)


def _direct(info: common.StackInfo, client: Any, tag: str, count: int, level: int, output_url: str) -> dict[str, Any]:
    """The calls one webhook makes, made straight from the bench with the same clients: read the job
    record, download the cut-out, create the output (create-only), write the record. Its rate is
    the most the design's four calls allow one Python process; the webhook's distance from it is
    the function's own cost (HTTP serving, signature, parsing, logging)."""
    state, processed = client.bucket(info.state_bucket), client.bucket(info.processed_bucket)
    local = threading.local()
    verify = info.ca_bundle
    records = [naming.job_record_name(job_id) for job_id in _job_ids(client, tag, count)]

    def calls(i: int) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        record = state.blob(records[i]).download_as_bytes()
        name = f"bench/direct/{tag}/{i:04d}"
        response = session.get(output_url, timeout=30, verify=verify)
        response.raise_for_status()
        processed.blob(name + ".png").upload_from_string(
            response.content, content_type="image/png", if_generation_match=0
        )
        state.blob(name + ".json").upload_from_string(record, content_type="application/json", if_generation_match=0)

    return _timed_pool(calls, list(range(count)), level)


def _job_ids(client: Any, tag: str, count: int) -> list[str]:
    """The job ids of the level's uploads, from their live generations."""
    names = [f"bench/throughput/{tag}/{i:04d}.jpg" for i in range(count)]
    bucket = client.bucket(THROUGHPUT_BUCKET)
    return [naming.job_id(THROUGHPUT_BUCKET, n, int(bucket.get_blob(n).generation)) for n in names]


def _fire(info: common.StackInfo, bodies: list[bytes], level: int) -> dict[str, Any]:
    local = threading.local()
    failures: list[str] = []

    def post(body: bytes) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        headers = webhook_headers(info.webhook_secret, body, f"msg_{uuid.uuid4().hex[:20]}")
        response = session.post(info.webhook_url, data=body, headers=headers, timeout=120)
        if response.status_code != 200 or response.json().get("message") != "completed":
            failures.append(f"{response.status_code} {response.text[:200]}")

    result = _timed_pool(post, bodies, level)
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(bodies)} webhooks did not complete; first: {failures[0]}")
    return result
