"""Figure "preferwait": is `Prefer: wait` worth asking for by default? PREFER_WAIT_SECONDS=10
against 0 (the default), side by side.

With PREFER_WAIT_SECONDS=N the task handler asks the API to hold the create's answer until the
prediction ends (at most N s), and settles the job from that answer itself: the result no longer
waits for the webhook hop (the API's delivery, then the webhook function), but the task handler is
billed for the model's whole run. With 0 the create is answered at once and the webhook (or a poll)
brings the result.

Two stacks of this figure's own run at once, the same in everything (the real u2netp model,
production timings, RESULT_DELIVERY=auto) but PREFER_WAIT_SECONDS; one real photo at a time goes
to each in turn (the order swapped every round), so both see the same machine and neither queues
behind the other at its model. Per image, from the callers' own timings as in figure 1:
on_upload (the relay's delivery log), on_task (the Cloud Tasks emulator's dispatch log: the
submission and every deadline check), on_prediction_webhook (the predictions service's delivery
records; the API still sends the webhook when the create waited, since a webhook URL is sent in
`auto`) — read once every deadline check has run — and latency, upload `timeCreated` -> the
cut-out's `timeCreated` (the storage emulator's clock).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import requests

from bench import common, polling
from offline_cloud import verify
from offline_cloud.stack import Stack

SETTINGS = (0, 10)  # PREFER_WAIT_SECONDS


def run(ctx: common.Context) -> dict[str, Any]:
    count = 1 if ctx.quick else 6
    stacks: dict[int, Stack] = {}
    try:
        for wait in SETTINGS:
            stacks[wait] = common.start_stack(
                ctx.work_dir / f"preferwait-{wait}", function_env={"PREFER_WAIT_SECONDS": str(wait)}
            )
        infos = {wait: s.info for wait, s in stacks.items() if s.info is not None}
        for info in infos.values():
            common.warm_up(info)
        images: dict[int, list[dict[str, Any]]] = {wait: [] for wait in SETTINGS}
        payloads = polling.photos(count, 7)
        for i in range(count):
            order = SETTINGS if i % 2 == 0 else SETTINGS[::-1]
            for wait in order:
                ctx.log(f"prefer wait: image {i + 1} of {count}, PREFER_WAIT_SECONDS={wait}")
                images[wait].append(_one(infos[wait], payloads[i], i))
        settings = {wait: _account(infos[wait], images[wait]) for wait in SETTINGS}
    finally:
        for s in stacks.values():
            s.stop()
    off, on = settings[0], settings[10]
    billed_ratio = common.ratio(on["billed_seconds"]["p50"], off["billed_seconds"]["p50"])
    latency_saved = round(off["latency_seconds"]["p50"] - on["latency_seconds"]["p50"], 4)
    return {
        "title": "Prefer: wait: PREFER_WAIT_SECONDS=10 vs 0, billed function time and latency per image",
        "unit": "seconds",
        "method": (
            f"{count} real photo(s) (480-640 px JPEGs) to each of two stacks, one at a time, alternating, the same "
            "but for PREFER_WAIT_SECONDS (real u2netp model, production timings, RESULT_DELIVERY=auto). Billed: "
            "each function request's duration as its caller timed it (relay, Cloud Tasks emulator, predictions "
            "service), every deadline check included. Latency: upload timeCreated -> cut-out timeCreated. "
            "Ratio = billed per image p50 with the wait / without."
        ),
        "images": count,
        "settings": {str(wait): s for wait, s in settings.items()},
        "latency_saved_seconds_p50": latency_saved,
        "target": "none (a decision: is the latency saved worth the task handler's billed wait)",
        "no_target": True,
        "target_met": None,
        "ratio": billed_ratio,
    }


def _one(info: common.StackInfo, payload: bytes, index: int) -> dict[str, Any]:
    name = f"bench/preferwait/{index:02d}-{uuid.uuid4().hex[:8]}.jpg"
    blob, job = common.upload_completed(info, name, payload)
    uploaded = common.rfc3339(blob._properties["timeCreated"])
    written = polling.written_at(common.gcs(info), info, job)
    return {
        "name": name,
        "job_id": job.job_id,
        "prediction_ids": list(job.prediction_ids),
        "latency_seconds": round(written - uploaded, 4),
    }


def _account(info: common.StackInfo, images: list[dict[str, Any]]) -> dict[str, Any]:
    """Each image's invocations and billed seconds, once its deadline checks have run and its
    webhook has been answered."""
    polling_drained(info)
    wanted = {pid for image in images for pid in image["prediction_ids"]}

    def deliveries() -> list[dict[str, Any]] | None:
        records: list[dict[str, Any]] = common.api(info, "GET", "/_admin/stats")["webhook_deliveries"]
        done = {r["prediction_id"] for r in records if r.get("status_code") and 200 <= r["status_code"] < 300}
        return records if wanted <= done else None

    webhook_records = common.wait_for(deliveries, 60, "webhook delivery records")
    trigger = verify.by_subject(verify.trigger_invocations(common.relay_log(info)))
    tasks = [
        verify.task_invocation(r) for q in (info.submit_queue, info.deadline_queue) for r in common.task_log(info, q)
    ]
    task = verify.by_subject(tasks)
    webhook = verify.by_subject(verify.webhook_invocation(r) for r in webhook_records if r["event"] == "completed")
    listing = {p["id"]: p for p in common.api(info, "GET", "/v1/predictions")["results"]}
    gets = verify.result_checks(verify.api_calls(Path(info.logs["predictions-service"])))
    for image in images:
        t = trigger.get(f"objects/{image['name']}", [])
        k = task.get(image["job_id"], [])
        submissions = [i for i in k if i.queue == info.submit_queue]
        checks = [i for i in k if i.queue == info.deadline_queue]
        w = [i for pid in image["prediction_ids"] for i in webhook.get(pid, [])]
        prediction = listing.get(image["prediction_ids"][-1], {})
        image.update(
            trigger_seconds=round(verify.billed_seconds(t), 4),
            submission_seconds=round(verify.billed_seconds(submissions), 4),
            deadline_check_seconds=round(verify.billed_seconds(checks), 4),
            webhook_seconds=round(verify.billed_seconds(w), 4),
            invocations=len(t) + len(k) + len(w),
            deadline_checks=len(checks),
            webhook_deliveries=len(w),
            gets=sum(gets[pid] for pid in image["prediction_ids"]),
            run_seconds=round(common.rfc3339(prediction["completed_at"]) - common.rfc3339(prediction["created_at"]), 4)
            if prediction.get("completed_at")
            else None,
        )
        image["billed_seconds"] = round(
            image["trigger_seconds"]
            + image["submission_seconds"]
            + image["deadline_check_seconds"]
            + image["webhook_seconds"],
            4,
        )
    n = len(images)
    return {
        "billed_seconds": common.summary(i["billed_seconds"] for i in images),
        "submission_seconds": common.summary(i["submission_seconds"] for i in images),
        "webhook_seconds": common.summary(i["webhook_seconds"] for i in images),
        "deadline_check_seconds": common.summary(i["deadline_check_seconds"] for i in images),
        "latency_seconds": common.summary(i["latency_seconds"] for i in images),
        "run_seconds": common.summary(i["run_seconds"] for i in images if i["run_seconds"] is not None),
        "invocations_per_image": round(sum(i["invocations"] for i in images) / n, 3),
        "deadline_checks_per_image": round(sum(i["deadline_checks"] for i in images) / n, 3),
        "webhook_deliveries_per_image": round(sum(i["webhook_deliveries"] for i in images) / n, 3),
        "gets_per_image": round(sum(i["gets"] for i in images) / n, 3),
        "samples": images,
    }


def polling_drained(info: common.StackInfo, timeout: float = 120.0) -> None:
    """Until the deadlines queue holds no task (every deadline check has run)."""

    def drained() -> bool:
        queue = requests.get(info.tasks_admin_url + "/stats", timeout=30).json()["queues"][info.deadline_queue]
        return bool(queue["tasks_pending"] == 0 and queue["in_flight"] == 0)

    time.sleep(1)
    common.wait_for(drained, timeout, "the deadlines queue to drain", interval=0.5)
