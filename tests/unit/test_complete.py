"""The completion side, on in-memory seams: correlation and every exit of `settle`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bgremove import complete, errors, jobs, signatures
from bgremove.jobs import Job, Source
from bgremove.outcomes import Outcome, Result
from bgremove.predictions import Prediction
from tests.unit.fakes import World, config, race_next_save

NOW = 1_700_000_000.0
VERSION = config().model_version
OUTPUT_URL = "https://replicate.delivery/pbxt/abc/output.png"


def source(name: str = "photos/a.jpg", generation: int = 7) -> Source:
    return Source("uploads", name, generation, "image/jpeg", 1234)


def stored_job(world: World, state: str = jobs.SUBMITTED, ids: tuple[str, ...] = ("p1",), name: str = "a.jpg") -> Job:
    # The upload itself, live at the job's generation (settling checks that it still is).
    generation = world.objects.put("uploads", f"photos/{name}", b"\xff\xd8\xff upload", "image/jpeg")
    job = jobs.new_claim(source(f"photos/{name}", generation), VERSION, NOW - 60, 300)
    for pid in ids:
        job = jobs.submitted(job, pid, NOW - 50, 900)
    if state == jobs.CLAIMED:
        job = jobs.claim(job, NOW - 10, 300, "resubmitting")
    elif state == jobs.COMPLETED:
        job = jobs.completed(job, ids[-1], "photos/a.png", 5, NOW - 5)
    elif state == jobs.FAILED:
        job = jobs.failed(job, "prediction_failed", "boom", NOW - 5, ids[-1] if ids else "")
    world.put(job)
    return job


def prediction(pid: str = "p1", status: str = "succeeded", **fields: Any) -> Prediction:
    data: dict[str, Any] = {"id": pid, "status": status, "version": VERSION}
    if status == "succeeded":
        data["output"] = OUTPUT_URL
    data.update(fields)
    return Prediction.from_json(data)


def settle(world: World, job: Job, pred: Prediction, confirmed: bool = True) -> Result:
    return complete.settle(job.job_id, pred, config(), world.deps, NOW, confirmed=confirmed)


def record(world: World, job: Job) -> Job:
    loaded = world.deps.store.load(job.job_id)
    assert loaded is not None
    return loaded[0]


# --- every exit of settle ------------------------------------------------------------------------


def test_succeeded_prediction_writes_the_output_create_only_and_completes_the_job() -> None:
    world = World()
    job = stored_job(world)
    result = settle(world, job, prediction())
    assert result.outcome is Outcome.COMPLETED and result.reason == "photos/a.png"
    written = world.objects.get("processed", "photos/a.png")
    assert written is not None and written.metadata["bgremove-job"] == job.job_id
    assert written.metadata["bgremove-prediction-id"] == "p1"
    final = record(world, job)
    assert final.state == jobs.COMPLETED and final.output_generation == written.generation


@pytest.mark.parametrize(
    ("state", "ids", "pred", "outcome"),
    [
        (jobs.COMPLETED, ("p1",), prediction(), Outcome.DUPLICATE),
        (jobs.FAILED, ("p1",), prediction(), Outcome.DUPLICATE),
        (jobs.SUBMITTED, ("p1",), prediction("p9"), Outcome.MISMATCH),
        (jobs.SUBMITTED, ("p1",), prediction(version="f" * 64), Outcome.MISMATCH),
        (jobs.SUBMITTED, ("p1",), prediction(status="processing"), Outcome.IGNORED),
        (jobs.SUBMITTED, ("p1",), prediction(status="some_future_status"), Outcome.IGNORED),
        (jobs.SUBMITTED, ("p1", "p2"), prediction("p1", "failed"), Outcome.IGNORED),  # superseded attempt
    ],
)
def test_settle_outcomes_without_a_write(state: str, ids: tuple[str, ...], pred: Prediction, outcome: Outcome) -> None:
    world = World()
    job = stored_job(world, state, ids)
    before = record(world, job)
    assert settle(world, job, pred).outcome is outcome
    assert record(world, job) == before
    assert world.objects.get("processed", "photos/a.png") is None


@pytest.mark.parametrize(
    ("pred", "reason", "error"),
    [
        (prediction(status="failed", error="CUDA out of memory"), "prediction_failed", "CUDA out of memory"),
        (prediction(status="canceled"), "prediction_canceled", "prediction canceled"),
        (prediction(status="aborted"), "prediction_aborted", "prediction aborted"),
        (prediction(output=None), "no_output", "succeeded without output"),
        (prediction(output="http://replicate.delivery/x.png"), "output_refused", "is not https"),
        (prediction(output="https://evil.example.com/x.png"), "output_refused", "is not allowed"),
    ],
)
def test_settle_outcomes_ending_in_a_failure_record(pred: Prediction, reason: str, error: str) -> None:
    world = World()
    job = stored_job(world)
    result = settle(world, job, pred)
    assert result.outcome is Outcome.FAILED and result.reason == reason
    final = record(world, job)
    assert final.state == jobs.FAILED and final.reason == reason and error in final.error
    assert world.objects.get("processed", "photos/a.png") is None


def test_failure_of_a_prediction_a_claimed_job_has_not_recorded_asks_for_a_retry() -> None:
    world = World()
    job = stored_job(world, jobs.CLAIMED, ("p1",))
    with pytest.raises(errors.RetryLater):
        settle(world, job, prediction("p2", "failed"))
    assert record(world, job).state == jobs.CLAIMED


def test_success_of_a_prediction_the_claimed_job_has_not_recorded_completes_it_when_signed() -> None:
    """The echo names the job (signed), so the early webhook completes it before the submitter's record."""
    world = World()
    job = stored_job(world, jobs.CLAIMED, ())
    assert settle(world, job, prediction("p7")).outcome is Outcome.COMPLETED
    assert record(world, job).prediction_ids == ("p7",)


def test_output_already_written_by_this_job_completes_with_the_writer_prediction() -> None:
    world = World()
    job = stored_job(world, ids=("p1", "p2"))
    world.objects.put(
        "processed", "photos/a.png", b"png", "image/png", {"bgremove-job": job.job_id, "bgremove-prediction-id": "p1"}
    )
    result = settle(world, job, prediction("p2"))
    assert result.outcome is Outcome.COMPLETED
    written = world.objects.get("processed", "photos/a.png")
    assert written is not None and written.data == b"png" and written.metadata["bgremove-prediction-id"] == "p1"
    assert record(world, job).output_generation == written.generation


def test_output_name_held_by_another_object_is_never_overwritten() -> None:
    world = World()
    job = stored_job(world)
    world.objects.put("processed", "photos/a.png", b"a user's file", "image/png", {})
    result = settle(world, job, prediction())
    assert result.outcome is Outcome.FAILED and result.reason == "output_name_taken"
    assert world.objects.get("processed", "photos/a.png").data == b"a user's file"  # type: ignore[union-attr]


def test_output_vanishing_after_a_create_conflict_is_created_again() -> None:
    world = World()
    job = stored_job(world)
    world.objects.fail("create_object", errors.PreconditionFailed("exists"))  # ... and gone when read
    assert settle(world, job, prediction()).outcome is Outcome.COMPLETED


def test_output_name_that_keeps_changing_asks_for_a_retry() -> None:
    world = World()
    job = stored_job(world)
    world.objects.fail("create_object", errors.PreconditionFailed("exists"), times=complete.PLACE_ATTEMPTS)
    with pytest.raises(errors.RetryLater, match="kept changing"):
        settle(world, job, prediction())


TRANSIENT = [
    ("open", errors.OutputUnavailable("output host answered 503")),
    ("create_object", errors.StorageUnavailable("ServiceUnavailable")),
    ("read_json", errors.StorageUnavailable("RetryError")),
    ("write_json", errors.StorageUnavailable("ConnectionError")),
]


@pytest.mark.parametrize(("method", "exc"), TRANSIENT, ids=[m for m, _ in TRANSIENT])
def test_transient_error_while_settling_asks_for_a_retry_and_changes_nothing(method: str, exc: Exception) -> None:
    world = World()
    job = stored_job(world)
    target = world.outputs if method == "open" else world.objects
    target.fail(method, exc)
    with pytest.raises(errors.RetryLater):
        settle(world, job, prediction())
    assert record(world, job).state == jobs.SUBMITTED
    # The sender's retry then settles it, once.
    assert settle(world, job, prediction()).outcome is Outcome.COMPLETED


def test_unknown_job_is_404_material() -> None:
    world = World()
    result = complete.settle("0" * 64, prediction(), config(), world.deps, NOW)
    assert result.outcome is Outcome.UNKNOWN_JOB


def test_final_write_losing_to_another_final_write_is_a_duplicate() -> None:
    world = World()
    job = stored_job(world)
    race_next_save(world, job.job_id, lambda j: jobs.failed(j, "other", "other writer", NOW))
    result = settle(world, job, prediction())
    assert result.outcome is Outcome.DUPLICATE
    assert record(world, job).reason == "other"


def test_final_write_losing_to_the_submitter_is_reapplied_on_its_record() -> None:
    world = World()
    job = stored_job(world, jobs.CLAIMED, ())
    race_next_save(world, job.job_id, lambda j: jobs.submitted(j, "p7", NOW, 900))
    result = settle(world, job, prediction("p7"))
    assert result.outcome is Outcome.COMPLETED
    final = record(world, job)
    assert final.state == jobs.COMPLETED and final.prediction_ids == ("p7",) and final.attempts == 1


def test_failure_write_losing_to_the_submitter_is_reapplied_too() -> None:
    world = World()
    job = stored_job(world, jobs.SUBMITTED, ("p1",))
    race_next_save(world, job.job_id, lambda j: jobs.extend_deadline(j, NOW + 900, NOW))
    result = settle(world, job, prediction(status="failed"))
    assert result.outcome is Outcome.FAILED and record(world, job).state == jobs.FAILED


def test_record_that_keeps_changing_asks_for_a_retry() -> None:
    world = World()
    job = stored_job(world)
    world.objects.fail("write_json", errors.PreconditionFailed("changed"), times=jobs.UPDATE_ATTEMPTS)
    with pytest.raises(errors.Contended, match="kept changing"):
        settle(world, job, prediction())


def test_record_that_changes_fewer_times_than_the_limit_is_settled() -> None:
    world = World()
    job = stored_job(world)
    world.objects.fail("write_json", errors.PreconditionFailed("changed"), times=jobs.UPDATE_ATTEMPTS - 1)
    assert settle(world, job, prediction()).outcome is Outcome.COMPLETED


# --- the webhook: signature, parsing, correlation ---------------------------------------------------


def deliver(
    world: World, body: dict[str, Any] | bytes, query: str = "", key: bytes | None = None, ts: float = NOW
) -> Result:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(ts)),
        "webhook-signature": signatures.sign(key or world.keys[0], "msg_1", int(ts), raw),
    }
    return complete.handle_webhook(headers, raw, query, config(), world.deps, lambda: NOW)


def body_of(pid: str = "p1", webhook: str | None = None, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"id": pid, "status": "succeeded", "version": VERSION, "output": OUTPUT_URL, **fields}
    if webhook is not None:
        data["webhook"] = webhook
    return data


def test_badly_signed_delivery_is_unauthorized_and_changes_nothing() -> None:
    world = World()
    job = stored_job(world)
    result = deliver(world, body_of(), f"job={job.job_id}", key=b"another key")
    assert result.outcome is Outcome.UNAUTHORIZED and record(world, job).state == jobs.SUBMITTED


def test_stale_delivery_is_unauthorized() -> None:
    world = World()
    job = stored_job(world)
    assert deliver(world, body_of(), f"job={job.job_id}", ts=NOW - 301).outcome is Outcome.UNAUTHORIZED


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"id": 5, "status": "succeeded"}', b"[" * 5000 + b"]" * 5000])
def test_signed_but_malformed_body_is_malformed(raw: bytes) -> None:
    world = World()
    assert deliver(world, raw, "job=" + "a" * 64).outcome is Outcome.MALFORMED


@pytest.mark.parametrize("query", ["", "job=short", "job=" + "A" * 64, f"job={'a' * 64}&job={'b' * 64}", "x=%zz"])
def test_delivery_naming_no_well_formed_job_is_unknown(query: str) -> None:
    world = World()
    assert deliver(world, body_of(), query).outcome is Outcome.UNKNOWN_JOB


def test_job_from_the_url_hint_completes_when_the_prediction_is_the_jobs_own() -> None:
    world = World()
    job = stored_job(world)
    assert deliver(world, body_of("p1"), f"job={job.job_id}").outcome is Outcome.COMPLETED


def test_signed_echo_wins_over_the_url() -> None:
    world = World()
    job = stored_job(world, name="a.jpg")
    other = stored_job(world, ids=("q1",), name="b.jpg")
    body = body_of("p1", webhook=f"https://hooks.example.com/webhook?job={job.job_id}")
    result = deliver(world, body, f"job={other.job_id}")
    assert result.outcome is Outcome.COMPLETED and result.job_id == job.job_id
    assert record(world, other).state == jobs.SUBMITTED


def test_signed_echo_without_a_job_is_unknown_even_if_the_url_names_one() -> None:
    world = World()
    job = stored_job(world)
    result = deliver(world, body_of("p1", webhook="https://hooks.example.com/webhook"), f"job={job.job_id}")
    assert result.outcome is Outcome.UNKNOWN_JOB and record(world, job).state == jobs.SUBMITTED


@pytest.mark.parametrize("victim_state", [jobs.SUBMITTED, jobs.COMPLETED, jobs.FAILED])
def test_signed_body_replayed_to_another_jobs_url_settles_nothing(victim_state: str) -> None:
    world = World()
    stored_job(world, ids=("p1",), name="a.jpg")
    victim = stored_job(world, victim_state, ids=("q1",), name="b.jpg")
    before = record(world, victim)
    result = deliver(world, body_of("p1"), f"job={victim.job_id}")
    assert result.outcome is Outcome.MISMATCH
    assert record(world, victim) == before
    assert world.outputs.opened == []


def test_replay_into_the_window_before_the_victim_records_its_prediction_settles_nothing() -> None:
    """The victim is claimed and has recorded no prediction yet: the hint cannot be confirmed, so
    the answer is a retry (503), never a settlement; once the victim records its own prediction,
    the replay is a mismatch."""
    world = World()
    stored_job(world, ids=("p1",), name="a.jpg")
    victim = stored_job(world, jobs.CLAIMED, ids=(), name="b.jpg")
    with pytest.raises(errors.NotYetRecorded):
        deliver(world, body_of("p1"), f"job={victim.job_id}")
    assert record(world, victim).state == jobs.CLAIMED and world.outputs.opened == []
    loaded = world.deps.store.load(victim.job_id)
    assert loaded is not None
    world.deps.store.save(jobs.submitted(loaded[0], "q1", NOW, 900), loaded[1])
    assert deliver(world, body_of("p1"), f"job={victim.job_id}").outcome is Outcome.MISMATCH


def test_genuine_early_webhook_without_the_echo_completes_once_the_submitter_records() -> None:
    world = World()
    job = stored_job(world, jobs.CLAIMED, ids=())
    with pytest.raises(errors.NotYetRecorded):
        deliver(world, body_of("p7"), f"job={job.job_id}")
    loaded = world.deps.store.load(job.job_id)
    assert loaded is not None
    world.deps.store.save(jobs.submitted(loaded[0], "p7", NOW, 900), loaded[1])
    assert deliver(world, body_of("p7"), f"job={job.job_id}").outcome is Outcome.COMPLETED


@pytest.mark.parametrize(
    ("webhook", "query", "expected"),
    [
        (None, "job=" + "a" * 64, complete.Correlation("a" * 64, False)),
        ("https://h/w?job=" + "b" * 64, "job=" + "a" * 64, complete.Correlation("b" * 64, True)),
        ("https://h/w?job=" + "b" * 64 + "&x=1", "", complete.Correlation("b" * 64, True)),
        ("https://h/w", "job=" + "a" * 64, None),
        ("http://[::1", "job=" + "a" * 64, None),
        (None, "", None),
    ],
)
def test_correlation(webhook: str | None, query: str, expected: complete.Correlation | None) -> None:
    data: dict[str, Any] = {"id": "p", "status": "succeeded"}
    if webhook is not None:
        data["webhook"] = webhook
    assert complete.correlate(Prediction.from_json(data), query) == expected
