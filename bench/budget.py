"""Figure "budget": what the spend guard costs a submission. DAILY_PREDICTION_BUDGET set against
unset, side by side, and what a held dispatch costs.

With a budget, each submission lists its window's shards, marks its job record and adds its id to
one shard before the create (bgremove/budget.py): four more storage requests per budgeted window
(the listing, the mark's record write, the shard's read and write). Two stacks of this
figure's own run, the same in everything (the real u2netp model, production timings) but the
budget; one small real photo at a time goes to each in turn (the order swapped every round). The
budgeted stack's budget is the figure's image count, so once those are through, `held` more images
are held: their submission tasks' first dispatch is answered 429 (a listing, a record read and the
hold mark's write; later held dispatches skip the write). Per submission, the Cloud Tasks
emulator's dispatch log gives on_task's request time as the queue saw it (what Cloud Run bills).
"""

from __future__ import annotations

import uuid
from typing import Any

from bench import common, polling
from offline_cloud import verify
from offline_cloud.stack import Stack


def run(ctx: common.Context) -> dict[str, Any]:
    count = 2 if ctx.quick else 12
    held = 1 if ctx.quick else 4
    stacks: dict[str, Stack] = {}
    try:
        stacks["off"] = common.start_stack(ctx.work_dir / "budget-off")
        stacks["on"] = common.start_stack(
            ctx.work_dir / "budget-on", function_env={"DAILY_PREDICTION_BUDGET": str(count + 1)}
        )  # + 1: the warm-up image
        infos = {key: s.info for key, s in stacks.items() if s.info is not None}
        for info in infos.values():
            common.warm_up(info)
        payloads = polling.photos(count + held, 9)
        names: dict[str, list[str]] = {key: [] for key in infos}
        for i in range(count):
            for key in ("off", "on") if i % 2 == 0 else ("on", "off"):
                ctx.log(f"budget: image {i + 1} of {count}, budget {key}")
                names[key].append(_one(infos[key], payloads[i], i))
        on = infos["on"]
        client = common.gcs(on)
        held_jobs = []
        for i in range(held):
            name = f"bench/budget/held-{i}-{uuid.uuid4().hex[:8]}.jpg"
            blob = client.bucket(on.upload_bucket).blob(name)
            blob.upload_from_string(payloads[count + i], content_type="image/jpeg")
            held_jobs.append(naming_job(on, name, int(blob.generation)))
        # Each held task's first dispatch (its retries then wait for Retry-After, capped at 600 s).
        common.wait_for(lambda: _held_answers(on, held_jobs) >= held, 60, "the held dispatches")
        submissions = {key: _submissions(infos[key]) for key in infos}
        held_seconds = [i.seconds for i in submissions["on"] if i.answer == "429" and i.subject in held_jobs]
    finally:
        for s in stacks.values():
            s.stop()
    off = [i.seconds for i in submissions["off"] if i.answer == "200"]
    counted = [i.seconds for i in submissions["on"] if i.answer == "200"]
    result: dict[str, Any] = {
        "off": common.summary(off),
        "on": common.summary(counted),
        "held_dispatch": common.summary(held_seconds) if held_seconds else None,
    }
    ratio = common.ratio(result["on"]["p50"], result["off"]["p50"])
    return {
        "title": "Spend budget: on_task billed time per submission, DAILY_PREDICTION_BUDGET set vs unset",
        "unit": "seconds",
        "method": (
            f"{count} small real photos to each of two stacks, one at a time, alternating, the same but for "
            f"DAILY_PREDICTION_BUDGET (unset vs {count + 1}); then {held} more to the budgeted stack, held. On_task's "
            "request time per submission dispatch from the Cloud Tasks emulator's log (answered 200; held ones "
            "answered 429). Ratio = p50 with the budget / without."
        ),
        "images": count,
        "held_images": held,
        "submission_seconds": result,
        "target": "none (a cost: four more storage requests per submission and budgeted window)",
        "no_target": True,
        "target_met": None,
        "ratio": ratio,
    }


def naming_job(info: common.StackInfo, name: str, generation: int) -> str:
    from bgremove import naming

    return naming.job_id(info.upload_bucket, name, generation)


def _one(info: common.StackInfo, payload: bytes, index: int) -> str:
    name = f"bench/budget/{index:02d}-{uuid.uuid4().hex[:8]}.jpg"
    common.upload_completed(info, name, payload)
    return name


def _held_answers(info: common.StackInfo, job_ids: list[str]) -> int:
    return sum(1 for i in _submissions(info) if i.answer == "429" and i.subject in job_ids)


def _submissions(info: common.StackInfo) -> list[verify.Invocation]:
    """Every submission dispatch but the warm-up's (its clients were cold)."""
    records = common.task_log(info, info.submit_queue)
    first = min((r["dispatched_at"] for r in records), default=0.0)
    return [verify.task_invocation(r) for r in records if r["dispatched_at"] > first]
