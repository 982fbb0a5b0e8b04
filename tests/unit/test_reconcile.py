"""The reconciler's table, row by row, on in-memory seams (the README's table is the spec)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from bgremove import errors, jobs, reconcile
from bgremove.jobs import Job, Source
from bgremove.predictions import Prediction
from tests.unit.fakes import World, config

NOW = 1_700_000_000.0
CFG = config()
VERSION = CFG.model_version
OUTPUT_URL = "https://replicate.delivery/pbxt/abc/output.png"


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 10), (1, 2, 3)).save(buf, "JPEG")
    return buf.getvalue()


def overdue_job(
    world: World, state: str = jobs.SUBMITTED, name: str = "a.jpg", submitted_at: float = NOW - 1000, attempts: int = 1
) -> Job:
    generation = world.objects.put("uploads", f"photos/{name}", _jpeg(), "image/jpeg")
    src = Source("uploads", f"photos/{name}", generation, "image/jpeg", 100)
    job = jobs.new_claim(src, VERSION, submitted_at - 5, 300)
    for n in range(attempts):
        if n:
            job = jobs.reclaim(job, submitted_at, 300, "again")
        job = jobs.submitted(job, f"p{n + 1}", submitted_at, 900)
    if state == jobs.CLAIMED:
        job = jobs.reclaim(job, submitted_at, 300, "submitter died")
    world.deps.store.create(job)
    return job


def api_has(world: World, pid: str, status: str, **fields: Any) -> None:
    data: dict[str, Any] = {"id": pid, "status": status, "version": VERSION, **fields}
    world.api.predictions[pid] = Prediction.from_json(data)


def record(world: World, job: Job) -> Job:
    loaded = world.deps.store.load(job.job_id)
    assert loaded is not None
    return loaded[0]


ROWS = [
    # (row of the table, job state, API answer for p1 or None for 404, expected outcome, final state)
    ("claimed, lease expired", jobs.CLAIMED, ("succeeded", {"output": OUTPUT_URL}), "resubmitted", jobs.SUBMITTED),
    ("succeeded with output", jobs.SUBMITTED, ("succeeded", {"output": OUTPUT_URL}), "settled_completed", "completed"),
    ("failed", jobs.SUBMITTED, ("failed", {"error": "boom"}), "settled_failed", jobs.FAILED),
    ("canceled", jobs.SUBMITTED, ("canceled", {}), "settled_failed", jobs.FAILED),
    ("aborted", jobs.SUBMITTED, ("aborted", {}), "settled_failed", jobs.FAILED),
    ("unknown (404)", jobs.SUBMITTED, None, "resubmitted", jobs.SUBMITTED),
    ("data removed", jobs.SUBMITTED, ("succeeded", {"data_removed": True}), "resubmitted", jobs.SUBMITTED),
    ("succeeded without output", jobs.SUBMITTED, ("succeeded", {}), "resubmitted", jobs.SUBMITTED),
]


@pytest.mark.parametrize(("row", "state", "answer", "outcome", "final"), ROWS, ids=[r[0] for r in ROWS])
def test_reconciler_table_row(row: str, state: str, answer: Any, outcome: str, final: str) -> None:
    world = World()
    job = overdue_job(world, state)
    if answer is not None:
        api_has(world, "p1", answer[0], **answer[1])
    assert reconcile.reconcile_job(job.job_id, CFG, world.deps, NOW) == outcome
    after = record(world, job)
    assert after.state == final
    if outcome == "resubmitted":
        assert after.prediction_ids[-1] == "pred1" and len(world.api.created) == 1


def test_running_prediction_within_its_deadline_is_looked_at_again_later() -> None:
    world = World()
    job = overdue_job(world, submitted_at=NOW - 950)  # overdue, but CANCEL_AFTER 15m + 60 s not yet passed
    api_has(world, "p1", "processing")
    assert reconcile.reconcile_job(job.job_id, CFG, world.deps, NOW) == "waiting"
    after = record(world, job)
    assert after.state == jobs.SUBMITTED and after.deadline_at == NOW + CFG.reconcile_after_seconds
    assert world.api.created == [] and world.api.canceled == []


@pytest.mark.parametrize("cancel_fails", [False, True])
def test_prediction_stuck_past_its_deadline_is_canceled_and_resubmitted(cancel_fails: bool) -> None:
    world = World()
    job = overdue_job(world, submitted_at=NOW - 2000)
    api_has(world, "p1", "processing")
    if cancel_fails:
        world.api.fail("cancel", errors.ApiUnavailable("503"))
    assert reconcile.reconcile_job(job.job_id, CFG, world.deps, NOW) == "resubmitted"
    assert world.api.canceled == ([] if cancel_fails else ["p1"])
    assert record(world, job).prediction_ids == ("p1", "pred1")


def test_resubmission_stops_at_the_attempt_budget_with_a_failure_record() -> None:
    world = World()
    job = overdue_job(world, attempts=3)
    assert reconcile.reconcile_job(job.job_id, CFG, world.deps, NOW) == "settled_failed"
    assert record(world, job).reason == "attempts_exhausted" and world.api.created == []


@pytest.mark.parametrize(
    ("setup", "outcome"),
    [("missing", "gone"), ("final", "not_due"), ("not_due", "not_due")],
)
def test_jobs_with_nothing_to_do(setup: str, outcome: str) -> None:
    world = World()
    if setup == "missing":
        job_id = "0" * 64
    else:
        job = overdue_job(world, submitted_at=NOW if setup == "not_due" else NOW - 1000)
        if setup == "final":
            loaded = world.deps.store.load(job.job_id)
            assert loaded is not None
            world.deps.store.save(jobs.completed(loaded[0], "p1", "a.png", 3, NOW), loaded[1])
        job_id = job.job_id
    assert reconcile.reconcile_job(job_id, CFG, world.deps, NOW) == outcome
    assert world.api.calls == []


@pytest.mark.parametrize("step", ["reclaim", "extend"])
def test_reconciler_losing_a_race_leaves_the_job_to_the_winner(step: str) -> None:
    world = World()
    job = overdue_job(world, submitted_at=NOW - (950 if step == "extend" else 1000))
    api_has(world, "p1", "processing" if step == "extend" else "aborted")
    if step == "reclaim":
        world.api.predictions.pop("p1")  # 404: the reconciler will try to reclaim
    world.objects.fail("write_json", errors.PreconditionFailed("raced"))
    assert reconcile.reconcile_job(job.job_id, CFG, world.deps, NOW) == "raced"


def test_transient_failure_on_one_job_leaves_it_for_the_next_run_and_the_batch_goes_on() -> None:
    world = World()
    first = overdue_job(world, name="a.jpg", submitted_at=NOW - 1100)
    second = overdue_job(world, name="b.jpg", submitted_at=NOW - 1000)
    third = overdue_job(world, name="c.jpg", submitted_at=NOW - 900)
    for pid in ("p1",):
        api_has(world, pid, "failed")
    # The first job's read hits a storage outage; the second job's API call is throttled.
    world.objects.fail("read_json", errors.StorageUnavailable("RetryError"))
    world.api.fail("get", errors.ApiUnavailable("429", 429), times=1)
    report = reconcile.reconcile(CFG, world.deps, NOW)
    assert report.examined == 3
    assert report.outcomes == {"retry_later": 2, "settled_failed": 1}
    assert record(world, first).state == jobs.SUBMITTED
    assert record(world, second).state == jobs.SUBMITTED
    assert record(world, third).state == jobs.FAILED


def test_api_refusal_on_one_job_is_left_for_the_next_run_too() -> None:
    world = World()
    job = overdue_job(world)
    world.api.fail("get", errors.ApiRefused("401", 401))
    assert reconcile.reconcile(CFG, world.deps, NOW).outcomes == {"retry_later": 1}
    assert record(world, job).state == jobs.SUBMITTED


def test_overdue_reads_only_the_listing_oldest_first_within_the_batch() -> None:
    world = World()
    late = overdue_job(world, name="late.jpg", submitted_at=NOW - 950)
    early = overdue_job(world, name="early.jpg", submitted_at=NOW - 2000)
    overdue_job(world, name="fresh.jpg", submitted_at=NOW)  # not due
    done = overdue_job(world, name="done.jpg", submitted_at=NOW - 3000)
    loaded = world.deps.store.load(done.job_id)
    assert loaded is not None
    world.deps.store.save(jobs.completed(loaded[0], "p1", "done.png", 3, NOW), loaded[1])
    world.objects.calls.clear()
    assert world.deps.store.overdue(NOW, 10) == [early.job_id, late.job_id]
    assert world.deps.store.overdue(NOW, 1) == [early.job_id]
    assert set(world.objects.calls) == {"list_with_metadata"}
