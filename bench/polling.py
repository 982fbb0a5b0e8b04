"""Figure "polling": results without webhooks — 20 real photos dropped at once, with webhooks and
with none ever sent, side by side on one stack run with the real model.

Both drops run the pipeline's default, RESULT_DELIVERY=auto: a webhook URL is sent with every
create and each job's deadline checks poll at the model's pace anyway (bgremove/schedule.py). The
only difference is the predictions service's `webhooks_sent_rate`: 1 (Replicate's own behaviour,
every webhook sent) or 0 (a resale proxy that forwards none). The drops alternate, webhooks on
first, twice each (once in the quick run), on a stack of their own (StackOptions' defaults: the
real u2netp model, production timings), so that the service's access log holds only this figure's
calls and the task handler starts having learned no run time. The second drop without webhooks
shows what polling learned from the first.

Measured, per image:

- latency, upload -> completed: the upload's `timeCreated` to its cut-out's `timeCreated` (both the
  storage emulator's clock), the moment the result is there for the shop (the job record's own
  `updated_at` is the handler's clock at the start of its request, before it wrote the output);
- the model's run time, from the predictions themselves (one `GET /v1/predictions` listing, read
  after the counts): `created_at` -> `completed_at` (what the API took, its queue behind two model
  workers included: what polling waits for) and `metrics.predict_time` (the model alone);
- API calls: the predictions service's access log (offline_cloud.verify.api_calls), each
  `GET /v1/predictions/{id}` of the drop's predictions a result check, and the creates; read once
  every deadline check of the drop has run (the deadlines queue empty);
- deadline checks: the Cloud Tasks emulator's dispatch log of the deadlines queue.

Target (issue): without webhooks, p95 latency <= 2 x the model's run time + 10 s, and at most 4
API GETs per image. The run time on the right is the p95 of created -> completed in the same drop
(the same percentile as the latency); the verdict against the model's p50 predict_time alone is
given beside it. Ratio = p95 latency without webhooks / p95 with.
"""

from __future__ import annotations

import io
import random
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from bench import common
from bgremove import naming
from bgremove.jobs import Job
from offline_cloud import verify

SOURCES = ("astronaut", "coffee", "chelsea", "rocket")
MAX_GETS_PER_IMAGE = 4.0
MODES = (("webhooks", 1.0), ("no webhooks", 0.0))


def photos(count: int, seed: int) -> list[bytes]:
    """`count` distinct real photos (crops of scikit-image's samples, flipped at random), 480-640 px
    on the long side, JPEG: what a shop's catalogue drop looks like to the model (u2netp scales
    every input to 320x320)."""
    import skimage.data
    from PIL import Image

    rng = random.Random(seed)
    sources = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in SOURCES]
    out = []
    for i in range(count):
        src = sources[i % len(sources)]
        cw, ch = int(src.width * rng.uniform(0.7, 1.0)), int(src.height * rng.uniform(0.7, 1.0))
        x, y = rng.randint(0, src.width - cw), rng.randint(0, src.height - ch)
        side = rng.randint(480, 640)
        scale = side / max(cw, ch)
        image = src.crop((x, y, x + cw, y + ch)).resize((round(cw * scale), round(ch * scale)))
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def run(ctx: common.Context) -> dict[str, Any]:
    images, rounds = (4, 1) if ctx.quick else (20, 2)
    stack = common.start_stack(ctx.work_dir / "polling-stack")
    try:
        info = stack.info
        assert info is not None
        common.warm_up(info)
        drops: list[dict[str, Any]] = []
        for r in range(rounds):
            for mode, rate in MODES:
                ctx.log(f"polling: round {r + 1}, {images} photos at once, {mode}")
                common.set_faults(info, webhooks_sent_rate=rate)
                try:
                    drops.append({"mode": mode, "round": r + 1, **_drop(info, photos(images, 100 * r + int(rate)))})
                finally:
                    common.api(info, "DELETE", "/_admin/faults")
    finally:
        stack.stop()
    modes = {mode: _pooled([d for d in drops if d["mode"] == mode]) for mode, _ in MODES}
    on, off = modes["webhooks"], modes["no webhooks"]
    run_p95 = off["run_seconds"]["p95"]
    predict_p50 = off["predict_seconds"]["p50"]
    bound = 2 * run_p95 + 10
    bound_predict = 2 * predict_p50 + 10
    latency_met = off["latency_seconds"]["p95"] <= bound
    gets_met = off["gets_per_image"] <= MAX_GETS_PER_IMAGE
    return {
        "title": "Results without webhooks: upload -> completed, webhooks sent vs never sent (RESULT_DELIVERY=auto)",
        "unit": "seconds",
        "method": (
            f"{images} real photos (480-640 px JPEGs) uploaded at once, {rounds} round(s) of each mode alternating "
            "(webhooks first), on a stack of this figure's own with the real u2netp model and production timings; "
            "the pipeline at its default RESULT_DELIVERY=auto in both, the predictions service's webhooks_sent_rate "
            "1 (webhooks) or 0 (none ever sent). Latency: upload timeCreated -> cut-out timeCreated. Run time: the "
            "predictions' created_at -> completed_at (and metrics.predict_time). API calls: the service's access "
            "log, read after every deadline check of the drop ran. Ratio = p95 latency without webhooks / with."
        ),
        "images": images,
        "rounds": rounds,
        "result_delivery": "auto",
        "modes": modes,
        "drops": [{k: v for k, v in d.items() if k != "samples"} for d in drops],
        "bound_seconds": round(bound, 3),
        "bound_from_predict_time_seconds": round(bound_predict, 3),
        "latency_target_met": latency_met,
        "latency_target_met_against_predict_time": off["latency_seconds"]["p95"] <= bound_predict,
        "gets_target_met": gets_met,
        "target": "without webhooks: p95 latency <= 2 x the model's run time (p95 created->completed) + 10 s, "
        f"and at most {MAX_GETS_PER_IMAGE:g} API GETs per image",
        "target_met": None if ctx.quick else (latency_met and gets_met),
        "ratio": common.ratio(off["latency_seconds"]["p95"], on["latency_seconds"]["p95"]),
        "samples": {f"{d['mode']} {d['round']}": d["samples"] for d in drops},
    }


def _drop(info: common.StackInfo, payloads: list[bytes]) -> dict[str, Any]:
    client = common.gcs(info)
    prefix = f"bench/polling/{uuid.uuid4().hex[:8]}/"

    def upload(i: int) -> tuple[str, int, float]:
        blob = client.bucket(info.upload_bucket).blob(f"{prefix}{i:02d}.jpg")
        blob.upload_from_string(payloads[i], content_type="image/jpeg")
        return blob.name, int(blob.generation), common.rfc3339(blob._properties["timeCreated"])

    began = time.time()
    with ThreadPoolExecutor(len(payloads)) as pool:
        uploads = list(pool.map(upload, range(len(payloads))))
    with ThreadPoolExecutor(8) as pool:
        finals = list(pool.map(lambda u: common.wait_job(info, client, u[0], u[1], 300), uploads))
        written = list(pool.map(lambda job: written_at(client, info, job), finals))
    _wait_deadlines_drained(info)
    calls = [c for c in verify.api_calls(Path(info.logs["predictions-service"])) if c.at >= began]
    listing = {p["id"]: p for p in common.api(info, "GET", "/v1/predictions")["results"]}
    job_ids = {naming.job_id(info.upload_bucket, u[0], u[1]) for u in uploads}
    checks = Counter(verify.job_of_task(r["task"]) for r in common.task_log(info, info.deadline_queue) if "task" in r)
    gets = verify.result_checks(calls)
    samples = []
    for (name, _, uploaded), job, at in zip(uploads, finals, written, strict=True):
        samples.append(_sample(name, uploaded, at, job, listing.get(job.prediction_id), gets, checks))
    mine = {s["prediction_id"] for s in samples}
    creates = [c for c in calls if c.is_create]
    states = Counter(str(j.state) for j in finals)
    return {
        "completed": states.get("completed", 0),
        "not_completed": {k: v for k, v in states.items() if k != "completed"},
        "attempts_max": max(j.attempts for j in finals),
        "creates": len(creates),
        "gets": sum(gets[p] for p in mine),
        "deadline_checks": sum(checks[j] for j in job_ids),
        "latency_seconds": common.summary(s["latency_seconds"] for s in samples),
        "run_seconds": common.summary(s["run_seconds"] for s in samples if "run_seconds" in s),
        "samples": samples,
    }


def written_at(client: Any, info: common.StackInfo, job: Job) -> float:
    """When the job's cut-out was written: its object's `timeCreated` (the storage emulator's clock)."""
    blob = client.bucket(info.processed_bucket).get_blob(job.output_name)
    if blob is None:
        raise RuntimeError(f"job {job.job_id} is {job.state} but has no output {job.output_name!r}")
    return common.rfc3339(blob._properties["timeCreated"])


def _sample(
    name: str,
    uploaded: float,
    written: float,
    job: Job,
    prediction: dict[str, Any] | None,
    gets: Counter[str],
    checks: Counter[str],
) -> dict[str, Any]:
    sample: dict[str, Any] = {
        "name": name,
        "state": job.state,
        "prediction_id": job.prediction_id,
        "latency_seconds": round(written - uploaded, 4),
        "gets": gets[job.prediction_id],
        "deadline_checks": checks[job.job_id],
    }
    if prediction is not None and prediction.get("completed_at"):
        sample["run_seconds"] = round(
            common.rfc3339(prediction["completed_at"]) - common.rfc3339(prediction["created_at"]), 4
        )
        sample["predict_seconds"] = round(float((prediction.get("metrics") or {}).get("predict_time") or 0.0), 4)
        sample["upload_to_created_seconds"] = round(common.rfc3339(prediction["created_at"]) - uploaded, 4)
        sample["completed_to_written_seconds"] = round(written - common.rfc3339(prediction["completed_at"]), 4)
    return sample


def _wait_deadlines_drained(info: common.StackInfo, timeout: float = 120.0) -> None:
    """Until the deadlines queue holds no task: every check of the drop has run (the first of a
    job settled by its webhook comes POLL_FIRST_CHECK_SECONDS after its create and reads a record)."""

    def drained() -> bool:
        queue = requests.get(info.tasks_admin_url + "/stats", timeout=30).json()["queues"][info.deadline_queue]
        return bool(queue["tasks_pending"] == 0 and queue["in_flight"] == 0)

    common.wait_for(drained, timeout, "the deadlines queue to drain", interval=0.5)


def _pooled(drops: list[dict[str, Any]]) -> dict[str, Any]:
    samples = [s for d in drops for s in d["samples"]]
    timed = [s for s in samples if "run_seconds" in s]
    n = max(1, len(samples))
    return {
        "images": len(samples),
        "completed": sum(d["completed"] for d in drops),
        "latency_seconds": common.summary(s["latency_seconds"] for s in samples),
        "run_seconds": common.summary(s["run_seconds"] for s in timed),
        "predict_seconds": common.summary(s["predict_seconds"] for s in timed),
        "upload_to_created_seconds": common.summary(s["upload_to_created_seconds"] for s in timed),
        "completed_to_written_seconds": common.summary(s["completed_to_written_seconds"] for s in timed),
        "gets_per_image": round(sum(d["gets"] for d in drops) / n, 3),
        "gets_max": max(s["gets"] for s in samples),
        "creates_per_image": round(sum(d["creates"] for d in drops) / n, 3),
        "deadline_checks_per_image": round(sum(d["deadline_checks"] for d in drops) / n, 3),
        "attempts_max": max(d["attempts_max"] for d in drops),
    }
