"""Figure 1: billed function time per image — ours (storage trigger, task handler, webhook and the
job's deadline check) against a baseline that waits for the model inside one function
(bench/baseline_sync.py).

Billed time is each function request's duration as its caller sees it: the Eventarc relay times
each delivery to the trigger (`duration_seconds` in its delivery log), the Cloud Tasks emulator
times each dispatch of the submission task to on_task (`duration_seconds` in its `/log`), the
predictions service times each webhook delivery (`duration_seconds` in `/_admin/stats`), and the
bench times its own requests to the baseline. The deadline check Cloud Tasks dispatches to on_task
RECONCILE_AFTER_SECONDS (15 min) after the submission, long after this figure ends: the bench sends
that same request to on_task itself once the job is completed, and times it. Images go one at a
time, ours and the baseline alternating, so neither waits in a queue of the model service (it has
two workers).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import requests

from bench import common
from bgremove import jobs
from offline_cloud import verify
from offline_cloud.client import cloud_event_headers

BASELINE_BUCKET = "bench-baseline-uploads"
BASELINE_PREFIX = "bench-baseline/"
POLL_INTERVAL = 0.5  # replicate-python's default poll interval (REPLICATE_POLL_INTERVAL)
TARGET_RATIO = 30.0  # issue 11: "the quiet billed-time ratio against a synchronous function stays at least 30x"


def run(ctx: common.Context) -> dict[str, Any]:
    info = ctx.info
    plan = [(0.5, 1)] if ctx.quick else [(2.0, 5), (10.0, 3)]
    common.create_bucket(info, BASELINE_BUCKET)
    port = common.port()
    baseline = common.start_function(
        "on_upload_sync",
        common.BENCH_DIR / "baseline_sync.py",
        common.function_env(
            info, {"BASELINE_POLL_INTERVAL": str(POLL_INTERVAL), "BASELINE_OUTPUT_PREFIX": BASELINE_PREFIX}
        ),
        port,
        ctx.work_dir / "baseline-function.log",
    )
    client = common.gcs(info)
    runs = []
    try:
        url = f"http://127.0.0.1:{port}/"
        common.wait_http(url, baseline)
        _baseline_one(info, client, url, 0.0, 0)  # warm-up: the baseline builds its clients too
        for latency, count in plan:
            common.set_faults(info, model_latency_seconds=latency)
            ctx.log(f"billed time: model latency {latency:g} s, {count} image(s) each way")
            ours, theirs = [], []
            for i in range(count):
                ours.append(_ours_one(info, client, latency, i))
                theirs.append(_baseline_one(info, client, url, latency, i))
            runs.append({"model_latency_seconds": latency, "ours": ours, "baseline": theirs})
    finally:
        common.set_faults(info, model_latency_seconds=0)
        common.stop_process(baseline)
    _attach_durations(info, runs)
    return _summarise(runs, ctx.quick)


def _ours_one(info: common.StackInfo, client: Any, latency: float, index: int) -> dict[str, Any]:
    name = f"bench/billed/{latency:g}s/{index}-{uuid.uuid4().hex[:8]}.jpg"
    blob = client.bucket(info.upload_bucket).blob(name)
    began = time.monotonic()
    blob.upload_from_string(common.small_jpeg(index), content_type="image/jpeg")
    job = common.wait_job(info, client, name, int(blob.generation), latency + 120)
    if job.state != jobs.COMPLETED:
        raise RuntimeError(f"{name}: job {job.state}: {job.reason} {job.error}")
    wall = round(time.monotonic() - began, 4)
    return {
        "name": name,
        "job_id": job.job_id,
        "prediction_ids": list(job.prediction_ids),
        "wall_seconds": wall,
        "deadline_seconds": _deadline_check(info, job.job_id),
    }


def _deadline_check(info: common.StackInfo, job_id: str) -> float:
    """The job's deadline check, as Cloud Tasks will dispatch it to on_task later; its duration."""
    body = json.dumps({"kind": "deadline", "job_id": job_id}).encode()
    headers = {
        "Content-Type": "application/json",
        "X-CloudTasks-QueueName": info.deadline_queue.rsplit("/", 1)[-1],
        "X-CloudTasks-TaskName": f"{job_id}-bench",
        "X-CloudTasks-TaskRetryCount": "0",
        "X-CloudTasks-TaskExecutionCount": "0",
    }
    began = time.monotonic()
    response = requests.post(info.task_handler_url, data=body, headers=headers, timeout=60)
    duration = time.monotonic() - began
    if response.status_code != 200:
        raise RuntimeError(f"deadline check of {job_id} answered {response.status_code}: {response.text[:200]}")
    return round(duration, 4)


def _baseline_one(info: common.StackInfo, client: Any, url: str, latency: float, index: int) -> dict[str, Any]:
    name = f"bench/billed/{latency:g}s/{index}-{uuid.uuid4().hex[:8]}.jpg"
    blob = client.bucket(BASELINE_BUCKET).blob(name)
    blob.upload_from_string(common.small_jpeg(index), content_type="image/jpeg")
    body = json.dumps(blob._properties).encode()  # the object resource, as Eventarc sends it
    headers = cloud_event_headers(f"bench-{uuid.uuid4().hex}", BASELINE_BUCKET, name)
    began = time.monotonic()
    response = requests.post(url, data=body, headers=headers, timeout=latency + 120)
    duration = time.monotonic() - began
    if not response.ok:
        raise RuntimeError(f"baseline answered {response.status_code} for {name}: {response.text[:300]}")
    output = client.bucket(info.processed_bucket).get_blob(BASELINE_PREFIX + name.removesuffix(".jpg") + ".png")
    if output is None:
        raise RuntimeError(f"baseline wrote no output for {name}")
    return {"name": name, "billed_seconds": round(duration, 4)}


def _attach_durations(info: common.StackInfo, runs: list[dict[str, Any]]) -> None:
    """Each of our images: its trigger attempts (relay log), its submission task's dispatches (Cloud
    Tasks log), its webhook attempts (service stats) and its deadline check (timed by the bench)."""
    wanted = {pid for run in runs for image in run["ours"] for pid in image["prediction_ids"]}

    def deliveries() -> list[dict[str, Any]] | None:
        records = common.api(info, "GET", "/_admin/stats")["webhook_deliveries"]
        done = {r["prediction_id"] for r in records if r.get("status_code") and 200 <= r["status_code"] < 300}
        return records if wanted <= done else None

    webhook_records = common.wait_for(deliveries, 30, "webhook delivery records")
    trigger = verify.by_subject(verify.trigger_invocations(common.relay_log(info)))
    task = verify.by_subject(verify.task_invocation(r) for r in common.task_log(info, info.submit_queue))
    webhook = verify.by_subject(verify.webhook_invocation(r) for r in webhook_records if r["event"] == "completed")
    for run in runs:
        for image in run["ours"]:
            t = trigger.get(f"objects/{image['name']}", [])
            k = task.get(image["job_id"], [])
            w = [i for pid in image["prediction_ids"] for i in webhook.get(pid, [])]
            if not t or not k or not w:
                seconds = {"trigger": t, "task": k, "webhook": w}
                found = ", ".join(f"{kind} {[i.seconds for i in calls]}" for kind, calls in seconds.items())
                raise RuntimeError(f"no recorded invocation for {image['name']}: {found}")
            trigger_seconds, task_seconds = verify.billed_seconds(t), verify.billed_seconds(k)
            webhook_seconds = verify.billed_seconds(w)
            image.update(
                trigger_seconds=round(trigger_seconds, 4),
                trigger_attempts=len(t),
                task_seconds=round(task_seconds, 4),
                task_attempts=len(k),
                webhook_seconds=round(webhook_seconds, 4),
                webhook_attempts=len(w),
                billed_seconds=round(trigger_seconds + task_seconds + webhook_seconds + image["deadline_seconds"], 4),
            )


def _summarise(runs: list[dict[str, Any]], quick: bool) -> dict[str, Any]:
    out_runs = []
    for run in runs:
        ours = common.summary(i["billed_seconds"] for i in run["ours"])
        theirs = common.summary(i["billed_seconds"] for i in run["baseline"])
        out_runs.append(
            {
                "model_latency_seconds": run["model_latency_seconds"],
                "ours_billed_seconds": ours,
                "ours_trigger_seconds": common.summary(i["trigger_seconds"] for i in run["ours"]),
                "ours_task_seconds": common.summary(i["task_seconds"] for i in run["ours"]),
                "ours_deadline_seconds": common.summary(i["deadline_seconds"] for i in run["ours"]),
                "ours_webhook_seconds": common.summary(i["webhook_seconds"] for i in run["ours"]),
                "ours_wall_seconds": common.summary(i["wall_seconds"] for i in run["ours"]),
                "baseline_billed_seconds": theirs,
                "ratio": common.ratio(theirs["p50"], ours["p50"]),
                "images": {"ours": run["ours"], "baseline": run["baseline"]},
            }
        )
    first = out_runs[0]
    return {
        "title": "Billed function time per image",
        "unit": "seconds",
        "method": (
            "Sum of the durations of every function request for one image, timed by the caller: the relay for "
            "on_upload, the Cloud Tasks emulator for on_task's submission, the predictions service for the "
            "webhook, the bench for on_task's deadline check (due 15 min later, sent by the bench once the job is "
            "completed) and for the baseline. Baseline: "
            f"bench/baseline_sync.py, polling every {POLL_INTERVAL} s. Ratio = baseline p50 / ours p50."
        ),
        "baseline_poll_interval_seconds": POLL_INTERVAL,
        "runs": out_runs,
        "ratio": first["ratio"],
        "ratio_at_seconds": first["model_latency_seconds"],
        "target": f"ratio >= {TARGET_RATIO:g} at 2 s model latency",
        "target_met": None if quick else bool(first["ratio"] and first["ratio"] >= TARGET_RATIO),
    }
