"""The upload side, on in-memory seams: filters, claim/takeover/release, every exit of submission."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import pytest
from PIL import Image

from bgremove import admission, errors, jobs, naming, reconcile, submit
from bgremove.admission import UploadEvent
from bgremove.jobs import Source
from bgremove.outcomes import Outcome, Result
from bgremove.predictions import Prediction
from tests.unit.fakes import BASE_ENV, PNG, World, config, race_next_save

NOW = 1_700_000_000.0


def jpeg(size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(buf, "JPEG")
    return buf.getvalue()


def event(world: World, name: str = "photos/a.jpg", data: bytes | None = None, **changes: Any) -> UploadEvent:
    data = jpeg() if data is None else data
    bucket = changes.pop("bucket", BASE_ENV["UPLOAD_BUCKET"])
    content_type = changes.pop("content_type", "image/jpeg")
    generation = world.objects.put(bucket, name, data, content_type)
    values: dict[str, Any] = {
        "event_id": "1234567890123456",
        "event_type": admission.FINALIZED,
        "bucket": bucket,
        "name": name,
        "generation": generation,
        "content_type": content_type,
        "size": len(data),
        "metadata": {},
        "event_time": NOW - 1,
    }
    values.update(changes)
    return UploadEvent(**values)


def process(ev: UploadEvent, cfg: Any, deps: Any, now: float) -> Result:
    """Admit the upload, then run its submission task as the queue would dispatch it."""
    admitted = admission.handle_upload(ev, cfg, deps, now)
    if admitted.outcome is not Outcome.QUEUED:
        return admitted
    return submit.handle_submit_task(admitted.job_id, cfg, deps, now)


def job_of(world: World, ev: UploadEvent) -> jobs.Job:
    loaded = world.deps.store.load(naming.job_id(ev.bucket, ev.name, ev.generation))
    assert loaded is not None
    return loaded[0]


# --- filters: no record, no API call ------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "env", "outcome", "reason"),
    [
        ({"event_type": "google.cloud.storage.object.v1.deleted"}, {}, Outcome.IGNORED, "is not"),
        ({"bucket": "elsewhere"}, {}, Outcome.IGNORED, "not the uploads bucket"),
        ({"size": 0}, {}, Outcome.SKIPPED, "zero-byte"),
        ({"metadata": {"bgremove-output": "true"}}, {}, Outcome.SKIPPED, "one of our outputs"),
        ({"content_type": "text/plain"}, {}, Outcome.SKIPPED, "ALLOWED_CONTENT_TYPES"),
        ({}, {"INCLUDE_PREFIXES": "incoming/"}, Outcome.SKIPPED, "INCLUDE_PREFIXES"),
        ({}, {"EXCLUDE_PREFIXES": "photos/"}, Outcome.SKIPPED, "EXCLUDE_PREFIXES"),
    ],
)
def test_filtered_event_writes_no_record_and_calls_no_api(
    changes: dict[str, Any], env: dict[str, str], outcome: Outcome, reason: str
) -> None:
    world = World()
    result = admission.handle_upload(event(world, **changes), config(**env), world.deps, NOW)
    assert result.outcome is outcome and reason in result.reason
    assert world.objects.buckets.get("state", {}) == {}
    assert world.api.created == []


def test_object_under_the_output_prefix_of_the_uploads_bucket_is_skipped() -> None:
    world = World()
    cfg = config(PROCESSED_BUCKET="uploads", OUTPUT_PREFIX="cutouts")
    result = admission.handle_upload(event(world, name="cutouts/a.png"), cfg, world.deps, NOW)
    assert result.outcome is Outcome.SKIPPED and "output prefix" in result.reason


# --- submission ---------------------------------------------------------------------------------


def test_small_upload_is_submitted_as_a_data_url_with_the_job_in_the_webhook_url() -> None:
    world = World()
    ev = event(world)
    result = process(ev, config(), world.deps, NOW)
    assert result.outcome is Outcome.SUBMITTED
    job = job_of(world, ev)
    assert job.state == jobs.SUBMITTED and job.prediction_ids == ("pred1",) and job.attempts == 1
    assert job.deadline_at == NOW + 5  # POLL_FIRST_CHECK_SECONDS: RESULT_DELIVERY=auto polls too
    created = world.api.created[0]
    assert created["image"].startswith("data:image/jpeg;base64,")
    assert created["webhook"] == f"https://hooks.example.com/webhook?job={job.job_id}"
    assert created["cancel_after"] == "15m"


def test_large_upload_is_submitted_as_a_signed_url_of_its_generation() -> None:
    world = World()
    ev = event(world)
    result = process(ev, config(DATA_URL_MAX_BYTES="10"), world.deps, NOW)
    assert result.outcome is Outcome.SUBMITTED
    assert world.api.created[0]["image"].endswith(f"photos/a.jpg?generation={ev.generation}&X-Goog-Signature=sig")


def test_name_with_dot_segments_is_copied_and_the_copy_is_signed() -> None:
    world = World()
    ev = event(world, name="a/../b.jpg")
    process(ev, config(INPUT_MODE="signed_url"), world.deps, NOW)
    job_id = naming.job_id(ev.bucket, ev.name, ev.generation)
    assert world.objects.copies == [("uploads", "a/../b.jpg", "state", f"inputs/{job_id}")]
    assert f"/state/inputs/{job_id}?generation=None" in world.api.created[0]["image"]


@pytest.mark.parametrize(
    ("data", "env", "changes", "reason"),
    [
        (b"this is not an image at all", {}, {}, "not_an_image"),
        (b"GIF89a" + b"\x00" * 40, {}, {}, "not_an_image"),  # a type the bytes reveal, not allowed
        (None, {"MAX_UPLOAD_BYTES": "100"}, {}, "too_large"),
        (None, {"MAX_EVENT_AGE_SECONDS": "60"}, {"event_time": NOW - 61}, "event_too_old"),
        (None, {"MAX_INPUT_PIXELS": "1000"}, {}, "too_many_pixels"),
    ],
)
def test_upload_that_cannot_be_processed_ends_in_a_failure_record_before_any_prediction(
    data: bytes | None, env: dict[str, str], changes: dict[str, Any], reason: str
) -> None:
    world = World()
    ev = event(world, data=data, **changes)
    result = process(ev, config(**env), world.deps, NOW)
    assert result.outcome is Outcome.FAILED and result.reason == reason
    job = job_of(world, ev)
    assert job.state == jobs.FAILED and job.reason == reason
    assert world.api.created == []


def test_pixel_limit_failure_names_the_size_and_the_setting() -> None:
    world = World()
    ev = event(world, data=jpeg((50, 40)))
    process(ev, config(MAX_INPUT_PIXELS="1999"), world.deps, NOW)
    assert "50x40 is 2000 pixels, over MAX_INPUT_PIXELS (1999)" in job_of(world, ev).error


@pytest.mark.parametrize("then", ["replaced", "deleted"])
def test_upload_no_longer_live_at_its_submission_task_is_settled_without_calling_the_api(then: str) -> None:
    world = World()
    ev = event(world)
    if then == "replaced":
        world.objects.put(ev.bucket, ev.name, jpeg())  # a newer generation under the same name
    else:
        del world.objects.buckets[ev.bucket][ev.name]
    world.objects.calls.clear()
    result = process(ev, config(), world.deps, NOW)
    expected = jobs.SUPERSEDED if then == "replaced" else jobs.REMOVED
    assert result.outcome.value == expected.value and world.api.created == []
    assert job_of(world, ev).state == expected
    assert world.objects.calls.count("metadata") == 1 and "read_head" not in world.objects.calls


@pytest.mark.parametrize("status", [401, 402, 413, 422])
def test_api_refusal_ends_in_a_failure_record_named_for_the_status(status: int) -> None:
    world = World()
    world.api.fail("create", errors.ApiRefused(f"POST /predictions answered {status}", status))
    ev = event(world)
    result = process(ev, config(), world.deps, NOW)
    assert result.outcome is Outcome.FAILED and result.reason == f"api_{status}"


TRANSIENT = [
    ("read_head", errors.StorageUnavailable("ServiceUnavailable on read")),
    ("read_bytes", errors.StorageUnavailable("RetryError on read")),
    ("signed_url", errors.StorageUnavailable("TransportError signing")),
    ("create", errors.ApiUnavailable("gave up after 4 attempts", 429)),
]


@pytest.mark.parametrize(("method", "exc"), TRANSIENT, ids=[m for m, _ in TRANSIENT])
def test_transient_error_releases_the_claim_and_asks_for_a_retry(method: str, exc: Exception) -> None:
    world = World()
    target = world.api if method == "create" else world.objects
    target.fail(method, exc)
    ev = event(world)
    env = {"DATA_URL_MAX_BYTES": "10"} if method == "signed_url" else {}
    with pytest.raises(errors.RetryLater):
        process(ev, config(**env), world.deps, NOW)
    job = job_of(world, ev)
    assert job.state == jobs.QUEUED  # released: the task's retry can take it
    # ... and the queue's retry does.
    assert submit.handle_submit_task(job.job_id, config(**env), world.deps, NOW + 10).outcome is Outcome.SUBMITTED


def test_storage_outage_while_releasing_leaves_a_claim_that_expires() -> None:
    world = World()
    world.api.fail("create", errors.ApiUnavailable("503"))
    ev = event(world)
    world.objects.fail("write_json", errors.StorageUnavailable("down"), times=0)
    # The claim's create succeeds; then the release write fails as well.
    original = world.objects.write_json
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 4:  # index, record, claim, then the release
            raise errors.StorageUnavailable("503 on release")
        return original(*args, **kwargs)

    world.objects.write_json = flaky  # type: ignore[method-assign]
    with pytest.raises(errors.RetryLater):
        process(ev, config(), world.deps, NOW)
    job = job_of(world, ev)
    assert job.state == jobs.CLAIMED and not job.lease_expired(NOW) and job.lease_expired(NOW + 300)
    # The task's retry after the lease takes the claim over.
    assert submit.handle_submit_task(job.job_id, config(), world.deps, NOW + 301).outcome is Outcome.SUBMITTED


def test_storage_outage_while_admitting_asks_for_a_retry_without_a_record() -> None:
    world = World()
    world.objects.fail("write_json", errors.StorageUnavailable("503"))
    ev = event(world)
    with pytest.raises(errors.RetryLater):
        process(ev, config(), world.deps, NOW)
    assert world.objects.buckets.get("state", {}) == {}
    assert world.queue.pending(BASE_ENV["SUBMIT_QUEUE"]) == []


# --- admission, claim, takeover, duplicates -------------------------------------------------------


def test_upload_is_admitted_as_a_queued_job_with_one_named_task_and_no_api_call() -> None:
    world = World()
    ev = event(world)
    result = admission.handle_upload(ev, config(), world.deps, NOW)
    assert result.outcome is Outcome.QUEUED
    job = job_of(world, ev)
    assert job.state == jobs.QUEUED and job.deadline_at == NOW + 3600
    [task] = world.queue.pending(BASE_ENV["SUBMIT_QUEUE"])
    assert task.name == f"{job.job_id}-s1" and task.body == {"kind": "submit", "job_id": job.job_id, "queued_at": NOW}
    assert task.url == BASE_ENV["TASK_HANDLER_URL"]
    assert world.api.created == []
    assert world.objects.get("state", f"open/{job.job_id}") is not None  # listed as open


def test_duplicate_event_makes_no_second_task_and_no_second_prediction() -> None:
    world = World()
    ev = event(world)
    first = process(ev, config(), world.deps, NOW)
    again = admission.handle_upload(ev, config(), world.deps, NOW + 1)
    assert first.outcome is Outcome.SUBMITTED and again.outcome is Outcome.DUPLICATE
    assert len(world.api.created) == 1 and len(world.queue.seen) == 2  # the submission and its deadline


def test_duplicate_event_of_a_queued_job_re_enqueues_under_the_same_name() -> None:
    """The run that admitted it may have died between the record and the task."""
    world = World()
    ev = event(world)
    world.queue.fail("enqueue", errors.QueueUnavailable("UNAVAILABLE"))
    with pytest.raises(errors.RetryLater):
        admission.handle_upload(ev, config(), world.deps, NOW)
    assert world.queue.pending(BASE_ENV["SUBMIT_QUEUE"]) == []
    result = admission.handle_upload(ev, config(), world.deps, NOW + 10)
    assert result.outcome is Outcome.DUPLICATE and "missing" in result.reason
    assert [t.name for t in world.queue.pending(BASE_ENV["SUBMIT_QUEUE"])] == [f"{job_of(world, ev).job_id}-s1"]
    # and a third delivery finds the task: ALREADY_EXISTS, nothing new.
    assert "missing" not in admission.handle_upload(ev, config(), world.deps, NOW + 20).reason
    assert len(world.queue.pending(BASE_ENV["SUBMIT_QUEUE"])) == 1


def test_task_dispatched_while_another_dispatch_holds_a_live_claim_asks_for_a_retry() -> None:
    world = World()
    ev = event(world)
    admission.handle_upload(ev, config(), world.deps, NOW)
    job_id = job_of(world, ev).job_id
    loaded = world.deps.store.load(job_id)
    assert loaded is not None
    world.deps.store.save(jobs.claim(loaded[0], NOW, 300, "another dispatch"), loaded[1])
    with pytest.raises(errors.RetryLater, match="holds the claim"):
        submit.handle_submit_task(job_id, config(), world.deps, NOW + 10)
    assert world.api.created == []


def test_duplicate_dispatch_of_a_submitted_job_has_no_second_effect() -> None:
    world = World()
    ev = event(world)
    first = process(ev, config(), world.deps, NOW)
    again = submit.handle_submit_task(first.job_id, config(), world.deps, NOW + 1)
    assert again.outcome is Outcome.DUPLICATE and len(world.api.created) == 1


def test_task_for_a_missing_job_does_nothing() -> None:
    world = World()
    assert submit.handle_submit_task("0" * 64, config(), world.deps, NOW).outcome is Outcome.IGNORED


def test_claim_losing_to_another_dispatchs_claim_asks_for_a_retry() -> None:
    world = World()
    ev = event(world)
    admission.handle_upload(ev, config(), world.deps, NOW)
    job_id = job_of(world, ev).job_id
    race_next_save(world, job_id, lambda j: jobs.claim(j, NOW, 300, "the other dispatch"))
    with pytest.raises(errors.RetryLater, match="holds the claim"):
        submit.handle_submit_task(job_id, config(), world.deps, NOW)
    assert world.api.calls == []  # no prediction from the loser


def test_claim_after_a_conflict_that_changed_nothing_it_decides_on_goes_ahead() -> None:
    world = World()
    ev = event(world)
    admission.handle_upload(ev, config(), world.deps, NOW)
    job_id = job_of(world, ev).job_id
    race_next_save(world, job_id, lambda j: jobs.check_later(j, NOW, 3600))  # only its check time moved
    assert submit.handle_submit_task(job_id, config(), world.deps, NOW).outcome is Outcome.SUBMITTED


def test_record_vanishing_while_admitting_asks_for_a_retry() -> None:
    world = World()
    ev = event(world)
    admission.handle_upload(ev, config(), world.deps, NOW)
    store = world.deps.store
    deps = dataclasses.replace(world.deps, store=store)
    store.load = lambda job_id: None  # type: ignore[method-assign]
    with pytest.raises(errors.Contended, match="kept changing"):
        admission.handle_upload(ev, config(), deps, NOW)


def test_submission_schedules_its_deadline_check_on_the_deadline_queue() -> None:
    world = World()
    ev = event(world)
    result = process(ev, config(), world.deps, NOW)
    job = job_of(world, ev)
    [check] = world.queue.pending(BASE_ENV["DEADLINE_QUEUE"])
    assert check.schedule_at == job.deadline_at == NOW + 5
    assert check.body == {"kind": "deadline", "job_id": result.job_id}


def test_webhook_mode_first_check_is_after_first_check_seconds_never_later_than_reconcile_after() -> None:
    for env, due in (
        ({"FIRST_CHECK_SECONDS": "120"}, 120),
        ({"FIRST_CHECK_SECONDS": "120", "RECONCILE_AFTER_SECONDS": "60"}, 60),
        ({"RECONCILE_AFTER_SECONDS": "3600"}, 180),
    ):
        env = {**env, "RESULT_DELIVERY": "webhook"}
        world = World()
        process(event(world), config(**env), world.deps, NOW)
        [check] = world.queue.pending(BASE_ENV["DEADLINE_QUEUE"])
        assert check.schedule_at == NOW + due, env


def test_lost_webhook_is_settled_by_the_first_check_within_minutes() -> None:
    world = World()
    ev = event(world)
    cfg = config(RESULT_DELIVERY="webhook")
    process(ev, cfg, world.deps, NOW)
    [check] = world.queue.pending(BASE_ENV["DEADLINE_QUEUE"])
    assert check.schedule_at is not None
    # The prediction succeeded; its webhook never arrives.
    output = "https://replicate.delivery/out/pred1.png"
    world.api.predictions["pred1"] = Prediction.from_json(
        {"id": "pred1", "status": "succeeded", "version": cfg.model_version, "output": output}
    )
    world.outputs.files[output] = PNG
    outcome = reconcile.handle_deadline_task(check.body["job_id"], cfg, world.deps, check.schedule_at)
    assert outcome == "settled_completed" and check.schedule_at - NOW == 180
    assert job_of(world, ev).state == jobs.COMPLETED


def test_deadline_check_that_cannot_be_scheduled_still_leaves_the_job_submitted() -> None:
    world = World()
    ev = event(world)
    admitted = admission.handle_upload(ev, config(), world.deps, NOW)
    world.queue.fail("enqueue", errors.QueueUnavailable("UNAVAILABLE"))
    result = submit.handle_submit_task(admitted.job_id, config(), world.deps, NOW)
    assert result.outcome is Outcome.SUBMITTED and job_of(world, ev).state == jobs.SUBMITTED


def test_attempt_budget_spent_ends_as_attempts_exhausted() -> None:
    world = World()
    ev = event(world)
    source = Source(ev.bucket, ev.name, ev.generation, ev.content_type, ev.size)
    claim = jobs.new_claim(source, "v", NOW, 300)
    job = jobs.claim(jobs.submitted(claim, "p1", NOW, 900), NOW, 300, "again")
    job = jobs.claim(jobs.submitted(job, "p2", NOW, 900), NOW, 300, "again")
    generation = world.put(job)
    result = submit.submit_job(job, generation, config(MAX_PREDICTION_ATTEMPTS="2"), world.deps, NOW, {})
    assert result.outcome is Outcome.FAILED and result.reason == "attempts_exhausted"
    assert world.api.created == []


def test_failure_record_losing_a_race_is_a_duplicate() -> None:
    world = World()
    ev = event(world, data=b"not an image, long enough to sniff....")
    source = Source(ev.bucket, ev.name, ev.generation, ev.content_type, ev.size)
    job = jobs.new_claim(source, "v", NOW, 300)
    generation = world.put(job)
    world.deps.store.save(jobs.failed(job, "other", "someone else", NOW), generation)
    result = submit.submit_job(job, generation, config(), world.deps, NOW, {})
    assert result.outcome is Outcome.DUPLICATE


@pytest.mark.parametrize("webhook_state", ["completed", "submitted_same", "submitted_other"])
def test_submission_record_racing_the_webhook_keeps_what_the_webhook_wrote(webhook_state: str) -> None:
    world = World()
    ev = event(world)
    source = Source(ev.bucket, ev.name, ev.generation, ev.content_type, ev.size)
    job = jobs.new_claim(source, "v", NOW, 300)
    generation = world.put(job)
    # The webhook (or another writer) moves the record while the prediction is being created.
    original_create = world.api.create

    def create_then_race(*args: Any, **kwargs: Any) -> Any:
        prediction = original_create(*args, **kwargs)
        if webhook_state == "completed":
            moved = jobs.completed(job, prediction.id, "a.png", 7, NOW)
        elif webhook_state == "submitted_same":
            moved = jobs.submitted(job, prediction.id, NOW, 900)
        else:
            moved = jobs.extend_deadline(job, NOW + 5, NOW)
        world.deps.store.save(moved, generation)
        return prediction

    world.api.create = create_then_race  # type: ignore[method-assign]
    result = submit.submit_job(job, generation, config(), world.deps, NOW, {})
    assert result.outcome is Outcome.SUBMITTED
    final = job_of(world, ev)
    if webhook_state == "completed":
        assert final.state == jobs.COMPLETED
    else:
        assert final.state == jobs.SUBMITTED and final.prediction_ids == ("pred1",)
