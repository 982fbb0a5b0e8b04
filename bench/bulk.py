"""Figure "bulk": a drop of 10x the API's per-minute create limit, admitted through the Cloud Tasks
submission queue (the pipeline) against direct submission from the storage trigger (the design
before the queue, bench/baseline_direct.py), one after the other in the same run.

Scaled down so it ends in minutes: the predictions service limits creates to LIMIT a minute with a
burst of LIMIT (Replicate: 600 and about as much), the drop is 10 x LIMIT images, and the
submission queue dispatches LIMIT/60 a second, as infra/ sets it to the API's rate. The model is
the service's fleet stand-in (`--fleet-latency`: each prediction takes a sampled time and returns a
small labelled PNG, not a cut-out), so the machine's two cores measure the pipeline, not u2netp.

Each design gets a stack of its own with the same options (fresh rate-limit buckets, fresh logs):

- queue: the stack as the launcher starts it: on_upload admits, on_task submits, the webhook
  writes, each submission schedules a deadline check.
- direct: the same stack, whose `on_upload` process (main.py) the bench stops and replaces, on the
  same port, by `functions-framework --target on_upload_direct --source bench/baseline_direct.py`:
  the Eventarc relay, unchanged, delivers every upload event to the baseline and redelivers with
  production's backoff (10 s doubling to 600 s, no attempt cap) whenever it answers 5xx. The task
  handler of that stack gets nothing.

Billed function seconds are the sum of the durations of every function invocation, each timed by
its caller (no function code is instrumented): the relay's delivery log for the trigger
(`duration_seconds` of each attempt), the Cloud Tasks emulator's dispatch log for on_task (each
dispatch, submissions and deadline checks), the predictions service's webhook delivery records for
the webhook. 429s are the service's own count of throttled creates (`/_admin/stats`). Wall time is
from the first upload to the last job record turning final. Every figure counts only the drop's
images (a warm-up image per stack goes first, so each function has built its clients).

RECONCILE_AFTER_SECONDS is 90 (CANCEL_AFTER 30s) in both stacks, so each image's deadline check,
which the queue design dispatches 15 minutes after its submission in production, runs inside the
measurement and is billed; the direct design schedules none (its sweep, not per image, is left out
of both). Both stacks run one instance of each function with 8 threads, and the relay delivers at
most 8 events at once: in production every throttled event has its own instance, so the direct
design's storm is, if anything, smaller here.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from bench import common
from bgremove import jobs, naming
from offline_cloud import verify
from offline_cloud.stack import ROOT, Stack, die_with_parent

TARGET_RATIO = 10.0
# The old design's client settings (bgremove/config.py defaults before the queue).
DIRECT_ENV = {"API_MAX_ATTEMPTS": "4", "API_BACKOFF_SECONDS": "0.5", "API_BACKOFF_MAX_SECONDS": "8"}


def plan(quick: bool) -> dict[str, Any]:
    if quick:
        # A smoke run: 12 images against 60/min with a burst of 3, short relay and queue backoffs.
        return {
            "images": 12,
            "limit_per_minute": 60.0,
            "burst": 3,
            "fleet_latency": "fixed:0.5",
            "reconcile_after_seconds": 5,
            "relay_min_backoff": 1.0,
            "relay_max_backoff": 4.0,
            "tasks_min_backoff": 1.0,
            "tasks_max_backoff": 4.0,
            "timeout_seconds": 240.0,
            "poll_seconds": 0.25,
        }
    return {
        "images": 600,
        "limit_per_minute": 60.0,
        "burst": 60,
        "fleet_latency": "lognormal:3,0.5",
        "reconcile_after_seconds": 90,
        # Production's: Eventarc with RETRY_POLICY_RETRY, and the queues as infra/ sets them.
        "relay_min_backoff": 10.0,
        "relay_max_backoff": 600.0,
        "tasks_min_backoff": 10.0,
        "tasks_max_backoff": 600.0,
        "timeout_seconds": 5400.0,
        "poll_seconds": 2.0,
    }


def run(ctx: common.Context) -> dict[str, Any]:
    p = plan(ctx.quick)
    designs: dict[str, Any] = {}
    for design in ("queue", "direct"):
        ctx.log(f"bulk: {design}: starting its stack ({p['limit_per_minute']:g} creates/min, burst {p['burst']})")
        stack = common.start_stack(ctx.work_dir / f"bulk-{design}", **_stack_options(p))
        try:
            if design == "direct":
                _replace_trigger(stack, ctx)
            info = stack.info
            assert info is not None
            common.warm_up(info)
            time.sleep(2 * 60.0 / p["limit_per_minute"])  # the warm-up's token comes back
            designs[design] = _drop(ctx, stack, design, p)
        finally:
            stack.stop()
    return _summarise(designs, p, ctx.quick)


def _stack_options(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "create_limit_per_minute": p["limit_per_minute"],
        "create_burst": p["burst"],
        "submit_rate_per_second": p["limit_per_minute"] / 60.0,
        "fleet_latency": p["fleet_latency"],
        "relay_min_backoff": p["relay_min_backoff"],
        "relay_max_backoff": p["relay_max_backoff"],
        "tasks_min_backoff": p["tasks_min_backoff"],
        "tasks_max_backoff": p["tasks_max_backoff"],
        "function_env": {"CANCEL_AFTER": "30s", "RECONCILE_AFTER_SECONDS": str(p["reconcile_after_seconds"])},
    }


def _replace_trigger(stack: Stack, ctx: common.Context) -> None:
    """Stop the stack's on_upload and start the baseline on its port: the relay delivers there."""
    info = stack.info
    assert info is not None
    common.stop_process(stack.processes.pop("function-trigger"))
    port = urlsplit(info.trigger_url).port
    argv = [
        common.FUNCTIONS_FRAMEWORK, "--target", "on_upload_direct", "--source",
        str(common.BENCH_DIR / "baseline_direct.py"), "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    log = stack.options.directory / "logs" / "function-trigger-direct.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=common.function_env(info, DIRECT_ENV),
            cwd=ROOT,
            preexec_fn=die_with_parent,
        )
    stack.processes["function-trigger-direct"] = proc  # stopped with the stack
    common.wait_http(info.trigger_url, proc, timeout=60, interval=0.05)
    ctx.log(f"bulk: direct: on_upload_direct (bench/baseline_direct.py) answers on {info.trigger_url}")


# --- one drop -------------------------------------------------------------------------------------


def _drop(ctx: common.Context, stack: Stack, design: str, p: dict[str, Any]) -> dict[str, Any]:
    info = stack.info
    assert info is not None
    count = p["images"]
    client = common.gcs(info)
    client._http.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=32))
    photos = [common.small_jpeg(i) for i in range(4)]
    prefix = f"bench/bulk/{design}-{uuid.uuid4().hex[:6]}/"
    before = common.api(info, "GET", "/_admin/stats")
    ctx.log(f"bulk: {design}: dropping {count} images at once")
    began = time.time()

    def upload(i: int) -> tuple[str, str]:
        name = f"{prefix}{i:05d}.jpg"
        blob = client.bucket(info.upload_bucket).blob(name)
        blob.upload_from_string(photos[i % 4], content_type="image/jpeg")
        return name, naming.job_id(info.upload_bucket, name, int(blob.generation))

    with ThreadPoolExecutor(16) as pool:
        uploads = dict(pool.map(upload, range(count)))  # name -> job id
    uploaded = time.time()
    ctx.log(f"bulk: {design}: uploaded in {uploaded - began:.1f} s; waiting for every job to end")
    states = _wait_final(ctx, client, info.state_bucket, set(uploads.values()), began, p)
    records = _records(client, info.state_bucket, [j for j, s in states.items() if s in jobs.FINAL_STATES])
    final_at = max((r["updated_at"] for r in records.values()), default=uploaded)

    submitted_jobs = {j for j, r in records.items() if r.get("prediction_ids")}
    if design == "queue":
        # Each submission scheduled one deadline check, due RECONCILE_AFTER_SECONDS later.
        ctx.log(f"bulk: queue: waiting for the {len(submitted_jobs)} deadline checks to be dispatched")
        _wait_deadline_checks(stack, submitted_jobs, p["reconcile_after_seconds"] + 120)
    _wait_quiet(info)
    predictions = {pid: j for j, r in records.items() for pid in r.get("prediction_ids", [])}
    after = _wait_webhooks(info, set(predictions))
    return _measure(stack, design, uploads, states, records, predictions, before, after, began, uploaded, final_at)


def _wait_final(
    ctx: common.Context, client: Any, bucket: str, wanted: set[str], began: float, p: dict[str, Any]
) -> dict[str, str]:
    """Job id -> state, once every wanted job is final (or at the timeout: the rest are `lost`)."""
    deadline = time.monotonic() + p["timeout_seconds"]
    last_report = time.monotonic()
    while True:
        states = {}
        for blob in client.list_blobs(bucket, prefix=naming.JOBS_PREFIX):
            job_id = blob.name[len(naming.JOBS_PREFIX) :].removesuffix(".json")
            if job_id in wanted:
                states[job_id] = (blob.metadata or {}).get("state", "?")
        done = sum(1 for s in states.values() if s in jobs.FINAL_STATES)
        if done == len(wanted):
            return states
        if time.monotonic() > deadline:
            ctx.log(f"bulk: timed out with {len(wanted) - done} jobs not final: {Counter(states.values())}")
            return {j: states.get(j, "no record") for j in wanted}
        if time.monotonic() - last_report > 60:
            last_report = time.monotonic()
            ctx.log(f"bulk: {time.time() - began:.0f} s: {dict(Counter(states.values()))}")
        time.sleep(p["poll_seconds"])


def _records(client: Any, bucket: str, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    def one(job_id: str) -> tuple[str, dict[str, Any]]:
        return job_id, json.loads(common.read_latest(client, bucket, naming.job_record_name(job_id)))

    with ThreadPoolExecutor(16) as pool:
        return dict(pool.map(one, job_ids))


def _dispatches(stack: Stack) -> list[dict[str, Any]]:
    """Every dispatch the Cloud Tasks emulator made (its JSON-lines log holds them all)."""
    path = stack.options.directory / "logs" / "cloud-tasks-dispatches.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait_deadline_checks(stack: Stack, jobs_: set[str], timeout: float) -> None:
    info = stack.info
    assert info is not None

    def done() -> bool:
        checked = {
            verify.job_of_task(d["task"])
            for d in _dispatches(stack)
            if d["queue"] == info.deadline_queue and d.get("result") == "deleted"
        }
        return jobs_ <= checked

    with contextlib.suppress(TimeoutError):  # measured as far as it went; the figure says what it found
        common.wait_for(done, timeout, "every deadline check", interval=1.0)


def _wait_quiet(info: common.StackInfo, timeout: float = 60.0) -> None:
    """Until the relay has no event still being delivered or waiting for a retry."""

    def quiet() -> bool:
        pending: int = requests.get(info.relay_admin_url + "/deliveries", timeout=30).json()["pending"]
        return pending == 0

    with contextlib.suppress(TimeoutError):
        common.wait_for(quiet, timeout, "the relay to finish", interval=0.5)


def _wait_webhooks(info: common.StackInfo, predictions: set[str]) -> dict[str, Any]:
    """The service's stats once every prediction's completion has a 2xx delivery record."""
    stats: dict[str, Any] = {}

    def delivered() -> bool:
        nonlocal stats
        stats = common.api(info, "GET", "/_admin/stats")
        ok = {
            r["prediction_id"]
            for r in stats["webhook_deliveries"]
            if r["event"] == "completed" and r.get("status_code") and 200 <= r["status_code"] < 300
        }
        return predictions <= ok

    with contextlib.suppress(TimeoutError):
        common.wait_for(delivered, 60, "webhook delivery records", interval=0.5)
    return stats


def _measure(
    stack: Stack,
    design: str,
    uploads: dict[str, str],
    states: dict[str, str],
    records: dict[str, dict[str, Any]],
    predictions: dict[str, str],
    before: dict[str, Any],
    after: dict[str, Any],
    began: float,
    uploaded: float,
    final_at: float,
) -> dict[str, Any]:
    info = stack.info
    assert info is not None
    count = len(uploads)
    names = {f"objects/{name}" for name in uploads}
    jobs_ = set(uploads.values())

    relay = [i for i in verify.trigger_invocations(common.relay_log(info)) if i.subject in names]
    tasks = [i for i in map(verify.task_invocation, _dispatches(stack)) if i.subject in jobs_]
    webhooks = [verify.webhook_invocation(r) for r in after.get("webhook_deliveries", [])]
    calls: dict[str, list[verify.Invocation]] = {
        "on_upload": relay,
        "on_task (submit)": [i for i in tasks if i.queue != info.deadline_queue],
        "on_task (deadline)": [i for i in tasks if i.queue == info.deadline_queue],
        "webhook": [i for i in webhooks if i.subject in predictions],
    }
    attempts_per_event = Counter(i.request for i in relay)

    throttled = after["throttled"]["create"] - before["throttled"]["create"]
    throttled_other = after["throttled"]["other"] - before["throttled"]["other"]
    creates = after["predictions_created"] - before["predictions_created"]
    everything = [i for v in calls.values() for i in v]
    billed = verify.billed_seconds(everything)
    rounded = verify.billed_seconds_rounded(everything)
    invocations = len(everything)
    failed = Counter(r.get("reason") or "?" for r in records.values() if r["state"] == jobs.FAILED)
    final_states = Counter(states.values())
    per_attempt = sorted(attempts_per_event.values())
    return {
        "design": design,
        "images": count,
        "completed": final_states.get(jobs.COMPLETED, 0),
        "failed": dict(failed),
        "lost": count - final_states.get(jobs.COMPLETED, 0) - final_states.get(jobs.FAILED, 0),
        "not_final_states": {s: n for s, n in final_states.items() if s not in jobs.FINAL_STATES},
        "wall_seconds": round(final_at - began, 2),
        "upload_seconds": round(uploaded - began, 2),
        "creates": creates,
        "creates_per_image": round(creates / count, 3),
        "throttled_creates": throttled,
        "throttled_other": throttled_other,
        "throttled_per_image": round(throttled / count, 3),
        "billed_seconds": round(billed, 3),
        "billed_seconds_per_image": round(billed / count, 4),
        "billed_seconds_rounded_per_image": round(rounded / count, 4),
        "invocations": invocations,
        "invocations_per_image": round(invocations / count, 3),
        "by_function": {
            k: {
                "invocations": len(v),
                "invocations_per_image": round(len(v) / count, 3),
                "billed_seconds": round(verify.billed_seconds(v), 3),
                "billed_seconds_per_image": round(verify.billed_seconds(v) / count, 4),
                "duration_seconds": common.summary(i.seconds for i in v) if v else None,
                "answers": dict(Counter(i.answer for i in v)),
            }
            for k, v in calls.items()
            if v or design == "queue"
        },
        "trigger_attempts_per_event": common.summary(per_attempt, 2) if per_attempt else None,
        "fleet_mode": after.get("mode"),
    }


def _summarise(designs: dict[str, Any], p: dict[str, Any], quick: bool) -> dict[str, Any]:
    queue, direct = designs["queue"], designs["direct"]
    value = common.ratio(direct["billed_seconds_per_image"], queue["billed_seconds_per_image"])
    complete = queue["lost"] == 0 and direct["lost"] == 0
    ideal = p["images"] / p["limit_per_minute"] * 60
    return {
        "title": "Bulk drop: queue admission vs direct submission",
        "unit": "seconds per image",
        "method": (
            f"{p['images']} real photos (128x96 JPEG) uploaded at once (16 threads) into a stack whose predictions "
            f"service allows {p['limit_per_minute']:g} creates a minute (burst {p['burst']}), i.e. 10x the per-minute "
            "limit (quick runs: less), the submission queue dispatching at the same "
            f"{p['limit_per_minute'] / 60:g}/s. FLEET STAND-IN, not the model: each prediction takes "
            f"`{p['fleet_latency']}` seconds and returns a small labelled PNG. Queue: the pipeline as deployed. "
            "Direct: bench/baseline_direct.py in place of on_upload (claim, then create the prediction in the "
            "trigger with API_MAX_ATTEMPTS=4, backoff 0.5-8 s and Retry-After, raising for a redelivery). "
            "Billed seconds = sum of every invocation's duration as its caller timed it (relay delivery log, "
            "Cloud Tasks dispatch log, webhook delivery records); 429s = the service's throttled creates. "
            "Ratio = direct billed seconds per image / queue billed seconds per image."
        ),
        "fleet_stand_in": True,
        "fleet_latency": p["fleet_latency"],
        "api_creates_per_minute": p["limit_per_minute"],
        "api_create_burst": p["burst"],
        "submit_rate_per_second": p["limit_per_minute"] / 60,
        "images": p["images"],
        "ideal_seconds": round(ideal, 1),
        "relay_backoff_seconds": [p["relay_min_backoff"], p["relay_max_backoff"]],
        "tasks_backoff_seconds": [p["tasks_min_backoff"], p["tasks_max_backoff"]],
        "reconcile_after_seconds": p["reconcile_after_seconds"],
        "designs": designs,
        "ratio": value,
        "invocations_ratio": common.ratio(direct["invocations_per_image"], queue["invocations_per_image"]),
        "rounded_billing_ratio": common.ratio(
            direct["billed_seconds_rounded_per_image"], queue["billed_seconds_rounded_per_image"]
        ),
        "target": f"billed function seconds per image at least {TARGET_RATIO:g}x lower with the queue",
        "target_met": None if quick else bool(complete and value is not None and value >= TARGET_RATIO),
        "notes": [
            "Billed seconds are raw request durations. Cloud Run bills each instance's busy time rounded up "
            "to 100 ms; `billed_seconds_rounded_per_image` rounds every invocation up to 100 ms as an upper bound "
            "of that effect (it weighs on the queue design's many short invocations).",
            "Offline, each function is one instance with 8 threads and the relay delivers at most 8 events at once; "
            "in production every throttled event gets an instance of its own and sleeps there, so the direct "
            "design's retry storm (and its billed time) is, if anything, larger than measured here.",
            "In the direct design a job reads `queued` while its claim, given back after the in-function retries "
            "were spent (submit_job's release), waits for Eventarc's redelivery of its event.",
        ],
    }
