"""The spend guard over in-memory seams: exact counts, holds that wait for the window (an injected
clock), once per job, refusals withdrawn, races on the shards."""

from __future__ import annotations

import io
import random
import threading
from datetime import UTC, datetime

import pytest
from PIL import Image

from bgremove import admission, budget, errors, jobs, lifecycle, naming, submit
from bgremove.admission import UploadEvent
from tests.unit.fakes import BASE_ENV, World, config

# 2026-12-04 10:00 UTC
NOW = datetime(2026, 12, 4, 10, 0, tzinfo=UTC).timestamp()
DAY = 86400.0


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 120, 40)).save(buf, "JPEG")
    return buf.getvalue()


def upload(world: World, name: str, now: float = NOW) -> str:
    data = jpeg()
    generation = world.objects.put(BASE_ENV["UPLOAD_BUCKET"], name, data, "image/jpeg")
    ev = UploadEvent(
        event_id=f"ev-{name}",
        event_type=admission.FINALIZED,
        bucket=BASE_ENV["UPLOAD_BUCKET"],
        name=name,
        generation=generation,
        content_type="image/jpeg",
        size=len(data),
        metadata={},
        event_time=now - 1,
    )
    admission.handle_upload(ev, config(), world.deps, now)
    return naming.job_id(ev.bucket, ev.name, generation)


def dispatch(world: World, job_id: str, cfg: object, now: float) -> str:
    """Run a submission task as the queue would: its outcome, or "held" for a BudgetSpent."""
    try:
        return submit.handle_submit_task(job_id, cfg, world.deps, now).outcome.value  # type: ignore[arg-type]
    except errors.BudgetSpent:
        return "held"


def job(world: World, job_id: str) -> jobs.Job:
    loaded = world.deps.store.load(job_id)
    assert loaded is not None
    return loaded[0]


def spent(world: World, cfg: object, now: float = NOW) -> list[int]:
    return [s.spent for s in budget.standings(cfg, world.objects, now)]  # type: ignore[arg-type]


def test_without_a_budget_nothing_is_counted_or_held() -> None:
    world, cfg = World(), config()
    ids = [upload(world, f"p{i}.jpg") for i in range(3)]
    assert [dispatch(world, i, cfg, NOW) for i in ids] == ["submitted"] * 3
    assert not any(name.startswith(budget.PREFIX) for name in world.objects.buckets["state"])


def test_a_spent_daily_budget_holds_the_rest_queued_until_the_window_turns() -> None:
    world, cfg = World(), config(DAILY_PREDICTION_BUDGET="3")
    ids = [upload(world, f"p{i}.jpg") for i in range(5)]
    assert [dispatch(world, i, cfg, NOW) for i in ids] == ["submitted"] * 3 + ["held"] * 2
    assert len(world.api.created) == 3 and spent(world, cfg) == [3]
    held = [job(world, i) for i in ids[3:]]
    assert all(j.state == jobs.QUEUED and j.hold == "budget" and j.held_at == NOW for j in held)
    # The listing says so too (what `bgremove status` counts), and a retry still holds.
    metadata = dict(world.objects.list_with_metadata("state", naming.job_record_name(ids[3])))
    assert metadata[naming.job_record_name(ids[3])]["hold"] == "budget"
    assert dispatch(world, ids[3], cfg, NOW + 600) == "held"
    assert job(world, ids[3]).held_at == NOW  # the hold's start is kept
    # The clock moves past midnight: a new window, and the held ones go through.
    tomorrow = NOW + DAY
    assert [dispatch(world, i, cfg, tomorrow) for i in ids[3:]] == ["submitted"] * 2
    assert all(job(world, i).hold == "" and job(world, i).state == jobs.SUBMITTED for i in ids[3:])
    assert spent(world, cfg, tomorrow) == [2] and len(world.api.created) == 5


def test_raising_the_budget_releases_held_submissions_within_the_window() -> None:
    world = World()
    ids = [upload(world, f"p{i}.jpg") for i in range(4)]
    low, high = config(DAILY_PREDICTION_BUDGET="2"), config(DAILY_PREDICTION_BUDGET="10")
    assert [dispatch(world, i, low, NOW) for i in ids] == ["submitted"] * 2 + ["held"] * 2
    assert [dispatch(world, i, high, NOW + 60) for i in ids[2:]] == ["submitted"] * 2
    assert spent(world, high) == [4]


def test_a_monthly_budget_holds_across_days_and_is_counted_with_the_daily_one() -> None:
    world = World()
    cfg = config(DAILY_PREDICTION_BUDGET="5", MONTHLY_PREDICTION_BUDGET="3")
    ids = [upload(world, f"p{i}.jpg") for i in range(4)]
    assert [dispatch(world, i, cfg, NOW) for i in ids] == ["submitted"] * 3 + ["held"]
    assert dispatch(world, ids[3], cfg, NOW + DAY) == "held"  # a new day, the same month
    january = datetime(2027, 1, 1, 0, 5, tzinfo=UTC).timestamp()
    assert dispatch(world, ids[3], cfg, january) == "submitted"


def test_a_retried_task_is_counted_once() -> None:
    world, cfg = World(), config(DAILY_PREDICTION_BUDGET="5")
    [job_id] = [upload(world, "p.jpg")]
    world.api.fail("create", errors.ApiUnavailable("429", 429))
    with pytest.raises(errors.ApiUnavailable):
        submit.handle_submit_task(job_id, cfg, world.deps, NOW)
    assert spent(world, cfg) == [1] and job(world, job_id).state == jobs.QUEUED
    assert dispatch(world, job_id, cfg, NOW + 10) == "submitted"
    assert spent(world, cfg) == [1]


def test_a_resubmission_after_a_lost_prediction_is_counted_as_the_new_prediction_it_is() -> None:
    world, cfg = World(), config(DAILY_PREDICTION_BUDGET="2")
    job_id = upload(world, "p.jpg")
    assert dispatch(world, job_id, cfg, NOW) == "submitted"
    loaded = world.deps.store.load(job_id)
    assert loaded is not None
    # Its prediction was lost: the deadline check puts it back in the queue, and it is predicted again.
    assert lifecycle.resubmit(loaded[0], loaded[1], "prediction lost", cfg, world.deps, NOW + 60).value == "requeued"
    assert dispatch(world, job_id, cfg, NOW + 61) == "submitted"
    assert len(world.api.created) == 2 and spent(world, cfg) == [2]
    # The budget of 2 is spent by those two predictions: another upload is held.
    assert dispatch(world, upload(world, "q.jpg"), cfg, NOW + 62) == "held"


def test_a_crash_between_the_mark_and_the_shard_write_is_counted_by_the_retry() -> None:
    world, cfg = World(), config(DAILY_PREDICTION_BUDGET="5")
    job_id = upload(world, "p.jpg")
    original = world.objects.write_json
    calls = {"n": 0}

    def dies_at_the_shard(bucket: str, name: str, *args: object, **kwargs: object) -> int:
        if name.startswith(budget.PREFIX) and calls["n"] == 0:
            calls["n"] += 1
            raise errors.StorageUnavailable("instance died before the shard write")
        return original(bucket, name, *args, **kwargs)  # type: ignore[arg-type]

    world.objects.write_json = dies_at_the_shard  # type: ignore[method-assign]
    with pytest.raises(errors.StorageUnavailable):
        submit.handle_submit_task(job_id, cfg, world.deps, NOW)
    marked = job(world, job_id)
    assert len(marked.budget_marks) == 1 and spent(world, cfg) == [0]  # marked, not yet counted
    assert dispatch(world, job_id, cfg, NOW + 10) == "submitted"
    assert spent(world, cfg) == [1] and job(world, job_id).budget_marks == marked.budget_marks


def test_a_create_the_api_refused_is_withdrawn_from_the_count() -> None:
    world, cfg = World(), config(DAILY_PREDICTION_BUDGET="5")
    job_id = upload(world, "p.jpg")
    world.api.fail("create", errors.ApiRefused("422 invalid input", 422))
    assert dispatch(world, job_id, cfg, NOW) == "failed"
    assert spent(world, cfg) == [0]


def test_an_upload_that_fails_its_checks_spends_nothing() -> None:
    world, cfg = World(), config(DAILY_PREDICTION_BUDGET="1")
    generation = world.objects.put(BASE_ENV["UPLOAD_BUCKET"], "fake.jpg", b"not an image at all", "image/jpeg")
    ev = UploadEvent(
        "e1", admission.FINALIZED, BASE_ENV["UPLOAD_BUCKET"], "fake.jpg", generation, "image/jpeg", 19, {}, NOW
    )
    admitted = admission.handle_upload(ev, cfg, world.deps, NOW)
    assert dispatch(world, admitted.job_id, cfg, NOW) == "failed"
    assert spent(world, cfg) == [0]
    assert dispatch(world, upload(world, "real.jpg"), cfg, NOW) == "submitted"


@pytest.mark.parametrize("budget_size", [1, 3, 16, 17, 500, 1999, 200_000, 10_000_000])
def test_shard_caps_add_up_to_the_budget_exactly(budget_size: int) -> None:
    window = budget.Window(budget.Period.DAY, "2026-12-04", budget_size, NOW + DAY)
    assert 1 <= window.shards <= budget.MAX_SHARDS
    assert sum(window.cap(k) for k in range(window.shards)) == budget_size
    assert window.shards >= min(budget_size, budget.MIN_SHARDS)


@pytest.mark.parametrize(
    ("offset", "when", "day", "month"),
    [
        ("0", datetime(2026, 12, 31, 23, 59, tzinfo=UTC), "2026-12-31", "2026-12"),
        ("0", datetime(2027, 1, 1, 0, 0, tzinfo=UTC), "2027-01-01", "2027-01"),
        ("-8", datetime(2027, 1, 1, 7, 59, tzinfo=UTC), "2026-12-31", "2026-12"),  # 23:59 in UTC-8
        ("-8", datetime(2027, 1, 1, 8, 0, tzinfo=UTC), "2027-01-01", "2027-01"),
        ("14", datetime(2026, 12, 4, 10, 0, tzinfo=UTC), "2026-12-05", "2026-12"),
    ],
)
def test_windows_begin_at_midnight_in_the_configured_offset(offset: str, when: datetime, day: str, month: str) -> None:
    cfg = config(DAILY_PREDICTION_BUDGET="1", MONTHLY_PREDICTION_BUDGET="1", BUDGET_UTC_OFFSET_HOURS=offset)
    found = budget.windows(cfg, when.timestamp())
    assert [(w.period.value, w.key) for w in found] == [("day", day), ("month", month)]
    assert all(w.ends_at > when.timestamp() for w in found)
    assert found[0].ends_at - when.timestamp() <= DAY


def test_racing_writers_never_count_past_the_budget() -> None:
    """Many threads count jobs against one window at once (the in-memory store's writes are
    conditional like Cloud Storage's): exactly the budget is counted, the rest see it spent."""
    world, cfg = World(), config(DAILY_PREDICTION_BUDGET="40")
    lock = threading.Lock()
    original = world.objects.write_json

    def serialised(*args: object, **kwargs: object) -> int:
        with lock:  # the fake's check-and-put is made atomic, as one storage request is
            return original(*args, **kwargs)  # type: ignore[arg-type]

    world.objects.write_json = serialised  # type: ignore[method-assign]
    [window] = budget.windows(cfg, NOW)
    counted, refused = [], []

    def claim(i: int) -> None:
        record = jobs.new_claim(jobs.Source("uploads", f"p{i}.jpg", 1), "v", NOW, 300)
        generation = world.deps.store.save(record, 0)
        random.seed(i)
        try:
            budget.count(record, generation, cfg, world.deps, NOW)
        except errors.BudgetSpent:
            refused.append(i)
        except errors.Contended:
            refused.append(i)
        else:
            counted.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(120)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert budget.standing(window, world.objects, "state").spent == len(counted) == 40
    assert len(refused) == 80


def test_days_needed_counts_what_today_has_left_first() -> None:
    cfg = config(DAILY_PREDICTION_BUDGET="600")
    assert budget.days_needed(0, cfg) == 0
    assert budget.days_needed(600, cfg) == 1
    assert budget.days_needed(601, cfg) == 2
    assert budget.days_needed(100, cfg, spent_today=550) == 2
    assert budget.days_needed(10_000, cfg) == 17
    assert budget.days_needed(10, config()) is None
