"""A living catalogue on in-memory seams: the newest generation of an upload wins, a replaced or
deleted upload's work is neither paid for nor written, a user's file is never touched, and outputs
copy the upload's delivery headers and custom metadata."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bgremove import complete, errors, jobs, keys, placement, reconcile
from bgremove.jobs import Job, Source
from bgremove.objects import Delivery
from bgremove.outcomes import Outcome
from bgremove.predictions import Prediction
from tests.unit.fakes import World, config, cutout_png, race_next_save

NOW = 1_700_000_000.0
VERSION = config().model_version
OUTPUT_URL = "https://replicate.delivery/pbxt/abc/output.png"
TWO = json.dumps([{"name": "cutout"}, {"name": "white", "format": "jpeg", "background": "#ffffff"}])


def upload(world: World, name: str = "photos/a.jpg", **source: Any) -> Job:
    """A new generation of `name` in the uploads bucket, and its submitted job."""
    generation = world.objects.put("uploads", name, b"\xff\xd8\xff upload", "image/jpeg")
    job = jobs.submitted(
        jobs.new_claim(Source("uploads", name, generation, "image/jpeg", 1234, {}, **source), VERSION, NOW - 60, 300),
        f"p{generation}",
        NOW - 50,
        900,
    )
    world.put(job)
    return job


def settle(world: World, job: Job, **env: str) -> Outcome:
    world.outputs.files[OUTPUT_URL] = cutout_png()
    pred = Prediction.from_json(
        {"id": job.prediction_id, "status": "succeeded", "version": VERSION, "output": OUTPUT_URL}
    )
    return complete.settle(job.job_id, pred, config(**env), world.deps, NOW).outcome


def state(world: World, job: Job) -> jobs.State:
    loaded = world.deps.store.load(job.job_id)
    assert loaded is not None
    return loaded[0].state


def made_from(world: World, name: str) -> int:
    stored = world.objects.get("processed", name)
    assert stored is not None
    return int(stored.metadata[keys.SOURCE_GENERATION])


# --- judging what an output name holds -------------------------------------------------------------


def test_judge_tells_each_kind_of_object_at_an_output_name() -> None:
    job = jobs.new_claim(Source("uploads", "a.jpg", 10), VERSION, NOW, 300)

    def output(generation: str, source: str = "gs://uploads/a.jpg", job_id: str = "other") -> dict[str, str]:
        return {keys.OUTPUT: "true", keys.SOURCE: source, keys.SOURCE_GENERATION: generation, keys.JOB: job_id}

    cases = [
        (None, placement.Verdict.FREE),
        ((output("10", job_id=job.job_id), 3), placement.Verdict.OURS),
        ((output("9"), 3), placement.Verdict.OLDER),
        ((output("11"), 3), placement.Verdict.NEWER),
        (({"owner": "a person"}, 3), placement.Verdict.FOREIGN),  # a user's own file
        ((output("9", source="gs://uploads/b.jpg"), 3), placement.Verdict.FOREIGN),  # another upload's output
        ((output("not a number"), 3), placement.Verdict.FOREIGN),
        ((output("10"), 3), placement.Verdict.FOREIGN),  # same generation, another job: not ours to replace
    ]
    for found, verdict in cases:
        assert placement.judge(found, job) is verdict, found


# --- replacing an upload ---------------------------------------------------------------------------


@pytest.mark.parametrize("variants", ["", TWO], ids=["pass-through", "two variants"])
def test_a_newer_generation_replaces_every_output_of_the_older_one(variants: str) -> None:
    world = World()
    first = upload(world)
    assert settle(world, first, OUTPUT_VARIANTS=variants) is Outcome.COMPLETED
    names = sorted(world.objects.buckets["processed"])
    before = {n: world.objects.buckets["processed"][n].generation for n in names}
    second = upload(world)  # replaced under the same name
    assert settle(world, second, OUTPUT_VARIANTS=variants) is Outcome.COMPLETED
    assert sorted(world.objects.buckets["processed"]) == names
    for name in names:
        assert made_from(world, name) == second.source.generation
        assert world.objects.buckets["processed"][name].generation != before[name]


def test_a_late_result_of_an_older_generation_changes_nothing() -> None:
    world = World()
    first, third = upload(world), None
    upload(world)
    third = upload(world)
    assert settle(world, third) is Outcome.COMPLETED
    written = dict(world.objects.buckets["processed"])
    assert settle(world, first) is Outcome.SUPERSEDED  # its webhook arrives after generation 3's
    assert world.objects.buckets["processed"] == written and state(world, first) == jobs.SUPERSEDED


def test_an_older_generation_racing_a_newer_one_for_a_name_loses() -> None:
    """Both upload generations were live when their results arrived; the older one's write finds
    the newer one's output at the name (written after its liveness check) and writes nothing."""
    world = World()
    older = upload(world)
    newer_output = {
        keys.OUTPUT: "true",
        keys.SOURCE: older.source.object_uri,
        keys.SOURCE_GENERATION: str(older.source.generation + 5),
        keys.JOB: "f" * 64,
    }
    world.objects.put("processed", "photos/a.png", b"newer cut-out", "image/png", newer_output)
    assert settle(world, older) is Outcome.SUPERSEDED
    stored = world.objects.get("processed", "photos/a.png")
    assert stored is not None and stored.data == b"newer cut-out"


def test_a_replacement_losing_its_conditional_write_judges_again_over_the_winner() -> None:
    world = World()
    first = upload(world)
    assert settle(world, first, OUTPUT_VARIANTS=TWO) is Outcome.COMPLETED
    second = upload(world)
    original = world.objects.create_object
    raced = {"done": False}

    def create_object(bucket: str, name: str, *args: Any, **kwargs: Any) -> int:
        if not raced["done"] and bucket == "processed":
            raced["done"] = True  # a newer generation's output lands just before ours
            newer = {
                **world.objects.buckets[bucket][name].metadata,
                keys.SOURCE_GENERATION: "999999",
                keys.JOB: "e" * 64,
            }
            world.objects.put(bucket, name, b"newest", "image/png", newer)
        return original(bucket, name, *args, **kwargs)

    world.objects.create_object = create_object  # type: ignore[method-assign]
    assert settle(world, second, OUTPUT_VARIANTS=TWO) is Outcome.SUPERSEDED
    assert state(world, second) == jobs.SUPERSEDED


def test_a_users_own_file_at_the_output_name_is_never_touched() -> None:
    world = World()
    world.objects.put("processed", "photos/a.png", b"my own png", "image/png", {"owner": "me"})
    job = upload(world)
    assert settle(world, job) is Outcome.FAILED
    stored = world.objects.get("processed", "photos/a.png")
    assert stored is not None and stored.data == b"my own png" and stored.metadata == {"owner": "me"}
    loaded = world.deps.store.load(job.job_id)
    assert loaded is not None and loaded[0].reason == "output_name_taken"


def test_a_deleted_uploads_result_ends_removed_and_writes_nothing() -> None:
    world = World()
    job = upload(world)
    del world.objects.buckets["uploads"][job.source.name]
    assert settle(world, job) is Outcome.REMOVED
    assert "processed" not in world.objects.buckets and state(world, job) == jobs.REMOVED


def test_deadline_check_of_a_replaced_upload_cancels_its_running_prediction() -> None:
    world = World()
    job = upload(world)
    world.api.predictions[job.prediction_id] = Prediction.from_json({"id": job.prediction_id, "status": "processing"})
    upload(world)  # replaced while it runs
    outcome = reconcile.reconcile_job(job.job_id, config(), world.deps, NOW + 3600)
    assert outcome is Outcome.SETTLED_SUPERSEDED and state(world, job) == jobs.SUPERSEDED
    assert world.api.canceled == [job.prediction_id]


def test_a_webhook_racing_the_end_of_a_superseded_job_leaves_it_ended() -> None:
    world = World()
    job = upload(world)
    upload(world)
    race_next_save(world, job.job_id, lambda j: jobs.superseded(j, "ended by on_delete", NOW))
    assert settle(world, job) is Outcome.DUPLICATE
    assert state(world, job) == jobs.SUPERSEDED


# --- what outputs copy -----------------------------------------------------------------------------


@pytest.mark.parametrize("variants", ["", TWO], ids=["pass-through", "two variants"])
def test_outputs_copy_the_uploads_delivery_headers_and_custom_metadata(variants: str) -> None:
    world = World()
    job = upload(
        world,
        cache_control="public, max-age=600",
        content_disposition='attachment; filename="a.jpg"',
        content_language="fr",
        custom={"sku": "12345", "bgremove-job": "forged"},
    )
    assert settle(world, job, OUTPUT_VARIANTS=variants) is Outcome.COMPLETED
    for name, stored in world.objects.buckets["processed"].items():
        filename = name.rsplit("/", 1)[-1]
        assert stored.delivery == Delivery("public, max-age=600", f'attachment; filename="{filename}"', "fr")
        assert stored.metadata["sku"] == "12345" and stored.metadata[keys.JOB] == job.job_id


def test_cache_control_setting_overrides_the_uploads() -> None:
    world = World()
    job = upload(world, cache_control="no-store")
    assert settle(world, job, CACHE_CONTROL="public, max-age=86400") is Outcome.COMPLETED
    stored = world.objects.get("processed", "photos/a.png")
    assert stored is not None and stored.delivery is not None
    assert stored.delivery.cache_control == "public, max-age=86400"


def test_content_disposition_names_the_output_file_also_when_it_is_not_ascii() -> None:
    job = jobs.new_claim(Source("uploads", "a.jpg", 1, content_disposition="inline; filename=a.jpg"), VERSION, NOW, 300)
    assert placement.delivery(job, "p/a.png", "").content_disposition == 'inline; filename="a.png"'
    assert placement.delivery(job, "p/été.png", "").content_disposition == (
        "inline; filename=\"_t_.png\"; filename*=UTF-8''%C3%A9t%C3%A9.png"
    )
    bare = jobs.new_claim(Source("uploads", "a.jpg", 1), VERSION, NOW, 300)
    assert placement.delivery(bare, "p/a.png", "") == Delivery()


def test_errors_of_superseded_work_are_final_not_retried() -> None:
    assert not issubclass(errors.Superseded, errors.RetryLater)


# --- races with the end of a job ------------------------------------------------------------------


def test_outputs_written_while_the_upload_was_deleted_are_removed_again() -> None:
    """The liveness check passed, then on_delete ended the job while the outputs were written:
    the final save finds it removed, and the outputs it just wrote go too."""
    world = World()
    job = upload(world)
    original = world.objects.create_object

    def create_object(bucket: str, name: str, *args: Any, **kwargs: Any) -> int:
        written = original(bucket, name, *args, **kwargs)
        loaded = world.deps.store.load(job.job_id)
        assert loaded is not None
        if loaded[0].state == jobs.SUBMITTED:  # on_delete, between the write and the final save
            world.write(jobs.removed(loaded[0], "deleted meanwhile", NOW))
        return written

    world.objects.create_object = create_object  # type: ignore[method-assign]
    assert settle(world, job, OUTPUT_VARIANTS=TWO) is Outcome.DUPLICATE
    assert world.objects.buckets.get("processed", {}) == {} and state(world, job) == jobs.REMOVED


def test_a_prediction_created_after_its_upload_was_replaced_is_cancelled() -> None:
    from bgremove import admission, submit

    world = World()
    generation = world.objects.put("uploads", "photos/b.jpg", cutout_png(), "image/png")
    event = admission.UploadEvent("e", admission.FINALIZED, "uploads", "photos/b.jpg", generation, "image/png", 100)
    admission.handle_upload(event, config(), world.deps, NOW)
    job_id = admission.source_of(event).job_id
    original = world.api.create

    def create(*args: Any, **kwargs: Any) -> Prediction:
        made = original(*args, **kwargs)
        loaded = world.deps.store.load(job_id)
        assert loaded is not None
        world.write(jobs.superseded(loaded[0], "replaced meanwhile", NOW))  # on_delete of the overwrite
        return made

    world.api.create = create  # type: ignore[method-assign]
    result = submit.handle_submit_task(job_id, config(), world.deps, NOW)
    assert result.outcome is Outcome.SUPERSEDED and world.api.canceled == ["pred1"]
