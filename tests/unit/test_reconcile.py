"""The reconciler's table, row by row, on in-memory seams (the README's table is the spec)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from PIL import Image

from bgremove import errors, jobs, naming, reconcile
from bgremove.jobs import Job, Source
from bgremove.outcomes import Outcome
from bgremove.predictions import Prediction
from bgremove.tasks import Task
from tests.unit.fakes import Stored, World, config, race_next_save

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
    """A job whose last move was at `submitted_at`; `state` queued/claimed/submitted."""
    generation = world.objects.put("uploads", f"photos/{name}", _jpeg(), "image/jpeg")
    src = Source("uploads", f"photos/{name}", generation, "image/jpeg", 100)
    job = jobs.new_claim(src, VERSION, submitted_at - 5, 300)
    for n in range(attempts):
        if n:
            job = jobs.claim(job, submitted_at, 300, "again")
        job = jobs.submitted(job, f"p{n + 1}", submitted_at, 900)
    if state == jobs.CLAIMED:
        job = jobs.claim(job, submitted_at, 300, "submitter died")
    elif state == jobs.QUEUED:
        job = jobs.requeue(job, submitted_at - 3600, 3600, "queued")
    world.put(job)
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
    ("claimed, lease expired", jobs.CLAIMED, ("succeeded", {"output": OUTPUT_URL}), "requeued", jobs.QUEUED),
    ("succeeded with output", jobs.SUBMITTED, ("succeeded", {"output": OUTPUT_URL}), "settled_completed", "completed"),
    ("failed", jobs.SUBMITTED, ("failed", {"error": "boom"}), "settled_failed", jobs.FAILED),
    ("canceled", jobs.SUBMITTED, ("canceled", {}), "settled_failed", jobs.FAILED),
    ("aborted", jobs.SUBMITTED, ("aborted", {}), "settled_failed", jobs.FAILED),
    ("unknown (404)", jobs.SUBMITTED, None, "requeued", jobs.QUEUED),
    ("data removed", jobs.SUBMITTED, ("succeeded", {"data_removed": True}), "requeued", jobs.QUEUED),
    ("succeeded without output", jobs.SUBMITTED, ("succeeded", {}), "requeued", jobs.QUEUED),
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
    if outcome == "requeued":
        # Back through the submission queue under a new task name: its pace, its retries.
        [task] = world.queue.pending(CFG.submit_queue)
        assert task.name == after.submit_task_name == f"{job.job_id}-s{job.enqueues + 1}"
        assert world.api.created == []


def test_running_prediction_within_its_deadline_is_looked_at_again_later() -> None:
    world = World()
    job = overdue_job(world, submitted_at=NOW - 950)  # overdue, but CANCEL_AFTER 15m + 60 s not yet passed
    api_has(world, "p1", "processing")
    assert reconcile.reconcile_job(job.job_id, CFG, world.deps, NOW) == "waiting"
    after = record(world, job)
    assert after.state == jobs.SUBMITTED and after.deadline_at == NOW + CFG.reconcile_after_seconds
    assert world.api.created == [] and world.api.canceled == []
    [check] = world.queue.pending(CFG.deadline_queue)  # the next look is a delayed task
    assert check.schedule_at == after.deadline_at


@pytest.mark.parametrize("cancel_fails", [False, True])
def test_prediction_stuck_past_its_deadline_is_canceled_and_resubmitted(cancel_fails: bool) -> None:
    world = World()
    job = overdue_job(world, submitted_at=NOW - 2000)
    api_has(world, "p1", "processing")
    if cancel_fails:
        world.api.fail("cancel", errors.ApiUnavailable("503"))
    assert reconcile.reconcile_job(job.job_id, CFG, world.deps, NOW) == "requeued"
    assert world.api.canceled == ([] if cancel_fails else ["p1"])
    assert record(world, job).state == jobs.QUEUED and len(world.queue.pending(CFG.submit_queue)) == 1


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
            world.write(jobs.completed(loaded[0], "p1", "a.png", 3, NOW))
        job_id = job.job_id
    assert reconcile.reconcile_job(job_id, CFG, world.deps, NOW) == outcome
    assert world.api.calls == []


@pytest.mark.parametrize("step", ["reclaim", "extend"])
def test_reconciler_losing_a_race_to_the_webhook_leaves_the_job_to_the_winner(step: str) -> None:
    world = World()
    job = overdue_job(world, submitted_at=NOW - (950 if step == "extend" else 1000))
    api_has(world, "p1", "processing" if step == "extend" else "aborted")
    if step == "reclaim":
        world.api.predictions.pop("p1")  # 404: the reconciler will try to reclaim
    race_next_save(world, job.job_id, lambda j: jobs.completed(j, "p1", "a.png", 3, NOW))
    assert reconcile.reconcile_job(job.job_id, CFG, world.deps, NOW) is Outcome.NOT_DUE
    after = world.deps.store.load(job.job_id)
    assert after is not None and after[0].state == jobs.COMPLETED
    assert not any(world.queue.tasks.values())


@pytest.mark.parametrize("step", ["reclaim", "extend"])
def test_reconciler_conflict_that_changed_nothing_is_decided_again(step: str) -> None:
    world = World()
    job = overdue_job(world, submitted_at=NOW - (950 if step == "extend" else 1000))
    api_has(world, "p1", "processing" if step == "extend" else "aborted")
    if step == "reclaim":
        world.api.predictions.pop("p1")
    world.objects.fail("write_json", errors.PreconditionFailed("spurious"))
    expected = Outcome.WAITING if step == "extend" else Outcome.REQUEUED
    assert reconcile.reconcile_job(job.job_id, CFG, world.deps, NOW) is expected


def test_transient_failure_on_one_job_leaves_it_for_the_next_run_and_the_batch_goes_on() -> None:
    world = World()
    first = overdue_job(world, name="a.jpg", submitted_at=NOW - 1100)
    second = overdue_job(world, name="b.jpg", submitted_at=NOW - 1000)
    third = overdue_job(world, name="c.jpg", submitted_at=NOW - 900)
    for pid in ("p1",):
        api_has(world, pid, "failed")
    # The first job's read hits a storage outage; the second job's API call is throttled.
    world.objects.unreadable.add(naming.job_record_name(first.job_id))
    world.api.fail("get", errors.ApiUnavailable("429", 429), times=1)
    report = reconcile.reconcile(CFG, world.deps, NOW)
    assert report.examined == 3
    assert report.outcomes == {"retry_later": 2, "settled_failed": 1}
    world.objects.unreadable.clear()  # the outage ends
    assert record(world, first).state == jobs.SUBMITTED
    assert record(world, second).state == jobs.SUBMITTED
    assert record(world, third).state == jobs.FAILED


def test_api_refusal_on_one_job_is_left_for_the_next_run_too() -> None:
    world = World()
    job = overdue_job(world)
    world.api.fail("get", errors.ApiRefused("401", 401))
    assert reconcile.reconcile(CFG, world.deps, NOW).outcomes == {"retry_later": 1}
    assert record(world, job).state == jobs.SUBMITTED


@pytest.mark.parametrize("task_exists", [True, False])
def test_queued_job_is_left_waiting_while_its_task_exists_and_given_a_new_task_when_lost(task_exists: bool) -> None:
    world = World()
    job = overdue_job(world, jobs.QUEUED)
    if task_exists:
        world.queue.enqueue(Task(CFG.submit_queue, job.submit_task_name, CFG.task_handler_url, {}))
    outcome = reconcile.reconcile_job(job.job_id, CFG, world.deps, NOW)
    after = record(world, job)
    assert after.state == jobs.QUEUED
    if task_exists:
        assert outcome == "still_queued" and after.deadline_at == NOW + CFG.queued_check_seconds
        assert len(world.queue.pending(CFG.submit_queue)) == 1
    else:
        assert outcome == "requeued" and after.enqueues == job.enqueues + 1
        assert [t.name for t in world.queue.pending(CFG.submit_queue)] == [after.submit_task_name]


def test_deadline_task_settles_its_one_job() -> None:
    world = World()
    job = overdue_job(world)
    api_has(world, "p1", "succeeded", output=OUTPUT_URL)
    assert reconcile.handle_deadline_task(job.job_id, CFG, world.deps, NOW) == "settled_completed"
    assert record(world, job).state == jobs.COMPLETED
    # ... and a duplicate dispatch of it changes nothing.
    assert reconcile.handle_deadline_task(job.job_id, CFG, world.deps, NOW) == "not_due"


def test_sweep_reads_only_open_jobs_with_100000_finished_records_present() -> None:
    world = World()
    finished = jobs.completed(overdue_job(world, name="template.jpg"), "p1", "x.png", 1, NOW - 5000)
    record(world, finished)  # the template itself is open; finish it through the store
    loaded = world.deps.store.load(finished.job_id)
    assert loaded is not None
    world.write(finished)
    body = json.dumps(finished.to_json()).encode()
    bucket = world.objects.buckets["state"]
    for n in range(100_000):  # as the lifecycle keeps them: finished records, no index entries
        bucket[f"jobs/{n:064x}.json"] = Stored(body, 10 + n, "application/json", {"state": "completed"})
    # Overdue, their predictions still running within Cancel-After: each is looked at and left waiting.
    open_jobs = [overdue_job(world, name=f"open{n}.jpg", submitted_at=NOW - 950 + n) for n in range(5)]
    api_has(world, "p1", "processing")
    world.objects.calls.clear()
    report = reconcile.reconcile(CFG, world.deps, NOW)
    assert report.examined == 5
    reads = [c for c in world.objects.calls if c == "read_json"]
    assert len(reads) == 2 * 5  # the sweep's look at each open record, and the settling read
    assert world.objects.calls.count("list_with_metadata") == 1
    assert {j.job_id for j in open_jobs} == set(world.deps.store.open_jobs())


def test_sweep_unlists_finished_and_missing_jobs_it_finds_in_the_index() -> None:
    world = World()
    job = overdue_job(world)
    world.deps.store.ensure_open("f" * 64, NOW)  # an index entry whose record never got written
    loaded = world.deps.store.load(job.job_id)
    assert loaded is not None
    world.objects.fail("delete", errors.StorageUnavailable("503"))  # closing at completion fails ...
    world.write(jobs.completed(loaded[0], "p1", "a.png", 1, NOW))
    assert set(world.deps.store.open_jobs()) == {job.job_id, "f" * 64}
    reconcile.reconcile(CFG, world.deps, NOW)  # ... so the sweep does it
    assert world.deps.store.open_jobs() == []


def test_overdue_reads_only_the_listing_oldest_first_within_the_batch() -> None:
    world = World()
    late = overdue_job(world, name="late.jpg", submitted_at=NOW - 950)
    early = overdue_job(world, name="early.jpg", submitted_at=NOW - 2000)
    overdue_job(world, name="fresh.jpg", submitted_at=NOW)  # not due
    done = overdue_job(world, name="done.jpg", submitted_at=NOW - 3000)
    loaded = world.deps.store.load(done.job_id)
    assert loaded is not None
    world.write(jobs.completed(loaded[0], "p1", "done.png", 3, NOW))
    world.objects.calls.clear()
    assert world.deps.store.overdue(NOW, 10, 100) == [early.job_id, late.job_id]
    assert world.deps.store.overdue(NOW, 1, 100) == [early.job_id]
    assert world.objects.calls.count("list_with_metadata") == 2
