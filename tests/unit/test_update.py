"""JobStore.update, the one compare-and-swap every transition uses: read, decide, write
conditionally, and on a conflict re-read and decide again. Conflicts are injected two ways: a
spurious one (the write fails, the record is unchanged) and a real one (another writer changes the
record first, `race_next_save`)."""

from __future__ import annotations

import pytest

from bgremove import errors, jobs, naming
from bgremove.jobs import Decision, Job, Source
from tests.unit.fakes import BASE_ENV, World, race_next_save

NOW = 1_700_000_000.0
STATE = BASE_ENV["STATE_BUCKET"]
SOURCE = Source("uploads", "a.jpg", 7, "image/jpeg", 100)


def queued() -> Job:
    return jobs.new_queued(SOURCE, "v1", NOW, 3600)


def listed_open(world: World, job_id: str) -> bool:
    return world.objects.metadata(STATE, naming.open_index_name(job_id)) is not None


def test_create_when_absent_costs_no_read_and_lists_the_job_open() -> None:
    world = World()
    new = queued()
    done = world.deps.store.update(new.job_id, lambda current: Decision("made", new), absent=True)
    assert (done.result, done.wrote, done.job) == ("made", True, new)
    assert "read_json" not in world.objects.calls and listed_open(world, new.job_id)
    assert world.deps.store.load(new.job_id) == (new, done.generation)


def test_create_over_an_existing_record_decides_again_over_that_record() -> None:
    world = World()
    first = queued()
    world.put(first)
    seen: list[Job | None] = []

    def decide(current: Job | None) -> Decision[str]:
        seen.append(current)
        return Decision("new", first) if current is None else Decision("duplicate")

    done = world.deps.store.update(first.job_id, decide, absent=True)
    assert seen == [None, first] and done.result == "duplicate" and not done.wrote


def test_a_decision_to_write_nothing_writes_nothing() -> None:
    world = World()
    job = queued()
    generation = world.put(job)
    world.objects.calls.clear()
    done = world.deps.store.update(job.job_id, lambda current: Decision(0))
    assert (done.job, done.generation, done.wrote) == (job, generation, False)
    assert world.objects.calls == ["read_json"]


CONFLICTS = [
    # (how the first write loses, what the second decision sees)
    ("spurious", lambda j: j),
    ("another writer moved the check time", lambda j: jobs.check_later(j, NOW + 5, 60)),
    ("another writer claimed it", lambda j: jobs.claim(j, NOW + 5, 300, "other")),
]


@pytest.mark.parametrize(("label", "move"), CONFLICTS, ids=[c[0] for c in CONFLICTS])
def test_a_conflict_is_decided_again_over_the_record_that_won(label: str, move: object) -> None:
    world = World()
    job = queued()
    world.put(job)
    if label == "spurious":
        world.objects.fail("write_json", errors.PreconditionFailed("spurious"))
    else:
        race_next_save(world, job.job_id, move)  # type: ignore[arg-type]  # a Job -> Job lambda
    seen: list[jobs.State] = []

    def claim(current: Job | None) -> Decision[str]:
        assert current is not None
        seen.append(current.state)
        if current.state != jobs.QUEUED:
            return Decision("lost")
        return Decision("taken", jobs.claim(current, NOW + 10, 300, "me"))

    done = world.deps.store.update(job.job_id, claim)
    expected = "lost" if label == "another writer claimed it" else "taken"
    assert done.result == expected and len(seen) == 2
    loaded = world.deps.store.load(job.job_id)
    assert loaded is not None and loaded[0].state == jobs.CLAIMED
    assert (loaded[0].history[-1]["why"] == "me") == (expected == "taken")


def test_a_record_that_keeps_changing_gives_up_after_the_attempt_limit() -> None:
    world = World()
    job = queued()
    world.put(job)
    race_next_save(world, job.job_id, lambda j: jobs.check_later(j, j.deadline_at + 1, 60), times=jobs.UPDATE_ATTEMPTS)
    decisions = []

    def decide(current: Job | None) -> Decision[None]:
        assert current is not None
        decisions.append(current)
        return Decision(None, jobs.claim(current, NOW, 300, "me"))

    with pytest.raises(errors.Contended):
        world.deps.store.update(job.job_id, decide)
    assert len(decisions) == jobs.UPDATE_ATTEMPTS
    assert errors.Contended.__mro__[1] is errors.RetryLater  # the platform's retry is the next step


def test_a_decision_that_refuses_propagates_and_writes_nothing() -> None:
    world = World()
    job = queued()
    world.put(job)
    world.objects.calls.clear()

    def refuse(current: Job | None) -> Decision[None]:
        raise errors.RetryLater("held by another")

    with pytest.raises(errors.RetryLater, match="held by another"):
        world.deps.store.update(job.job_id, refuse)
    assert "write_json" not in world.objects.calls


def test_a_final_write_unlists_the_job_and_reopening_lists_it_again() -> None:
    world = World()
    job = queued()
    world.put(job)
    done = world.deps.store.update(job.job_id, lambda c: Decision(None, jobs.failed(c or job, "x", "y", NOW)))
    assert done.job is not None and done.job.is_final and not listed_open(world, job.job_id)
    world.deps.store.update(job.job_id, lambda c: Decision(None, jobs.retried(c or job, NOW, 60, "again")))
    assert listed_open(world, job.job_id)
