"""Output variants on the completion side, on in-memory seams: what is written for a job, under which
names and metadata, exactly once per variant across redeliveries, and every failure it can end in."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bgremove import complete, errors, jobs, variants
from bgremove.jobs import Job, Source
from bgremove.outcomes import Outcome, Result
from bgremove.predictions import Prediction
from tests.unit.fakes import World, config, cutout_png, record_creates

NOW = 1_700_000_000.0
VERSION = config().model_version
OUTPUT_URL = "https://replicate.delivery/pbxt/abc/output.png"
TWO = json.dumps([{"name": "cutout"}, {"name": "white", "format": "jpeg", "background": "#ffffff"}])
KINDS = json.dumps(
    [
        {"name": "cutout"},
        {"name": "red", "background": "#ff0000"},
        {"name": "crop", "crop": True, "margin": 3},
        {"name": "square", "format": "webp", "canvas": "100x100"},
        {"name": "mask", "mask": True},
    ]
)
BOX = (15, 10, 45, 30)  # the subject of cutout_png() in its 60x40 image


def stored_job(world: World, metadata: dict[str, str] | None = None, name: str = "photos/a.jpg") -> Job:
    upload = world.objects.put("uploads", name, b"\xff\xd8\xff upload", "image/jpeg", {"owner": "x"})
    source = Source("uploads", name, upload, "image/jpeg", 1234, metadata)
    job = jobs.submitted(jobs.new_claim(source, VERSION, NOW - 60, 300), "p1", NOW - 50, 900)
    world.put(job)
    return job


def prediction(pid: str = "p1") -> Prediction:
    return Prediction.from_json({"id": pid, "status": "succeeded", "version": VERSION, "output": OUTPUT_URL})


def settle(world: World, job: Job, **env: str) -> Result:
    return complete.settle(job.job_id, prediction(), config(**env), world.deps, NOW)


def record(world: World, job: Job) -> Job:
    loaded = world.deps.store.load(job.job_id)
    assert loaded is not None
    return loaded[0]


def processed(world: World, name: str) -> Any:
    found = world.objects.get("processed", name)
    assert found is not None, f"processed/{name} was not written"
    return found


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.fixture
def world() -> World:
    world = World()
    world.outputs.files[OUTPUT_URL] = cutout_png()
    return world


@pytest.fixture
def no_render(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the pass-through output must never be decoded")

    monkeypatch.setattr(variants, "render", refuse)


# --- the default: one pass-through variant --------------------------------------------------------


@pytest.mark.usefixtures("no_render")
@pytest.mark.parametrize("metadata", [None, {}])
def test_default_writes_the_models_png_byte_for_byte_streamed(world: World, metadata: dict[str, str] | None) -> None:
    job = stored_job(world, metadata)
    result = settle(world, job)
    assert result.outcome is Outcome.COMPLETED and result.reason == "photos/a.png"
    written = processed(world, "photos/a.png")
    assert written.data == cutout_png() and written.content_type == "image/png"
    assert written.metadata == {
        "bgremove-output": "true",
        "bgremove-source": "gs://uploads/photos/a.jpg",
        "bgremove-source-generation": str(job.source.generation),
        "bgremove-job": job.job_id,
        "bgremove-prediction-id": "p1",
        "bgremove-model-version": VERSION,
        "bgremove-variant": "cutout",
    }
    final = record(world, job)
    assert (final.state, final.output_name, final.output_generation) == (
        "completed",
        "photos/a.png",
        written.generation,
    )
    assert final.outputs == (
        {"variant": "cutout", "object": "photos/a.png", "generation": written.generation, "prediction_id": "p1"},
    )
    # Streamed as before: the only processed-bucket call is the create itself.
    assert world.objects.calls.count("create_object") == 1


def test_the_liveness_read_also_serves_overrides_the_claim_did_not_record(world: World) -> None:
    recorded = stored_job(world, {}, name="photos/a.jpg")
    settle(world, recorded)
    assert world.objects.calls.count("metadata") == 1  # is the upload still live?
    world.objects.calls.clear()
    unrecorded = stored_job(world, None, name="photos/b.jpg")
    settle(world, unrecorded)
    assert world.objects.calls.count("metadata") == 1  # the same read gives its overrides


# --- several variants -----------------------------------------------------------------------------


def test_two_variants_are_both_written_with_their_names_and_the_job_lists_them(world: World) -> None:
    job = stored_job(world)
    result = settle(world, job, OUTPUT_VARIANTS=TWO)
    assert result.outcome is Outcome.COMPLETED and result.reason == "photos/a.png"
    cutout, white = processed(world, "photos/a.png"), processed(world, "photos/a.white.jpg")
    assert cutout.data == cutout_png()  # the pass-through one is still the model's bytes
    assert white.content_type == "image/jpeg" and decode(white.data).format == "JPEG"
    assert (cutout.metadata["bgremove-variant"], white.metadata["bgremove-variant"]) == ("cutout", "white")
    assert white.metadata["bgremove-job"] == job.job_id and white.metadata["bgremove-prediction-id"] == "p1"
    final = record(world, job)
    assert [(o["variant"], o["object"], o["generation"]) for o in final.outputs] == [
        ("cutout", "photos/a.png", cutout.generation),
        ("white", "photos/a.white.jpg", white.generation),
    ]
    assert (final.output_name, final.output_generation) == ("photos/a.png", cutout.generation)
    assert world.outputs.opened == [OUTPUT_URL]  # downloaded once for both


def test_each_variant_kind_by_its_pixels(world: World) -> None:
    settle(world, stored_job(world), OUTPUT_VARIANTS=KINDS)
    source = np.asarray(decode(cutout_png()))
    red = np.asarray(decode(processed(world, "photos/a.red.png").data).convert("RGB"))
    assert red[0, 0].tolist() == [255, 0, 0] and red[20, 30].tolist() == [230, 120, 30]
    crop = decode(processed(world, "photos/a.crop.png").data)
    assert crop.size == (BOX[2] - BOX[0] + 6, BOX[3] - BOX[1] + 6)
    assert crop.getchannel("A").getbbox() == (3, 3, 3 + BOX[2] - BOX[0], 3 + BOX[3] - BOX[1])
    square = decode(processed(world, "photos/a.square.webp").data)
    assert square.format == "WEBP" and square.size == (100, 100)
    bbox = square.getchannel("A").getbbox()
    assert bbox is not None
    left, top, right, bottom = bbox  # 60x40 -> 100x67, centred
    assert abs((left + right) / 2 - 50) <= 1 and abs((top + bottom) / 2 - 50) <= 1
    mask = decode(processed(world, "photos/a.mask.png").data)
    assert mask.mode == "L" and np.array_equal(np.asarray(mask), source[:, :, 3])


def test_a_redelivery_after_one_of_two_variants_was_written_writes_only_the_other(world: World) -> None:
    job = stored_job(world)
    # The first delivery writes one variant, then storage fails on the other.
    original = world.objects.create_object
    calls = {"n": 0}

    def failing_second(bucket: str, name: str, *args: Any, **kwargs: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise errors.StorageUnavailable("503 on the second variant")
        return original(bucket, name, *args, **kwargs)

    world.objects.create_object = failing_second  # type: ignore[method-assign]
    creates = record_creates(world.objects)
    with pytest.raises(errors.RetryLater):
        settle(world, job, OUTPUT_VARIANTS=TWO)
    (done,) = world.objects.buckets["processed"]
    (missing,) = {"photos/a.png", "photos/a.white.jpg"} - {done}
    before = processed(world, done).generation
    assert record(world, job).state == jobs.SUBMITTED

    assert settle(world, job, OUTPUT_VARIANTS=TWO).outcome is Outcome.COMPLETED
    assert processed(world, done).generation == before  # not written again
    assert creates == [("processed", done), ("processed", missing), ("processed", missing)]  # the 503, then once
    final = record(world, job)
    assert [o["variant"] for o in final.outputs] == ["cutout", "white"]
    assert {o["object"]: o["generation"] for o in final.outputs}[done] == before


def test_a_redelivery_after_every_variant_was_written_downloads_nothing(world: World) -> None:
    job = stored_job(world)
    for name, variant in (("photos/a.png", "cutout"), ("photos/a.white.jpg", "white")):
        meta = {"bgremove-job": job.job_id, "bgremove-prediction-id": "p0", "bgremove-variant": variant}
        world.objects.put("processed", name, b"earlier", "image/png", meta)
    creates = record_creates(world.objects)
    result = settle(world, job, OUTPUT_VARIANTS=TWO)
    assert result.outcome is Outcome.COMPLETED and world.outputs.opened == [] and creates == []
    assert record(world, job).prediction_ids[-1] == "p0"  # the writer's prediction stands


def test_a_variant_name_held_by_another_object_is_never_overwritten(world: World) -> None:
    job = stored_job(world)
    world.objects.put("processed", "photos/a.white.jpg", b"a user's file", "image/jpeg", {})
    result = settle(world, job, OUTPUT_VARIANTS=TWO)
    assert result.outcome is Outcome.FAILED and result.reason == "output_name_taken"
    assert "photos/a.white.jpg" in record(world, job).error
    assert processed(world, "photos/a.white.jpg").data == b"a user's file"


# --- per-upload overrides -------------------------------------------------------------------------


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded-by-the-claim", "read-from-the-upload"])
@pytest.mark.parametrize(
    ("metadata", "env", "key"),
    [
        ({"bgremove-background": "blue"}, {}, "bgremove-background"),
        ({"bgremove-background": "#ffff"}, {"OUTPUT_VARIANTS": TWO}, "bgremove-background"),
        ({"bgremove-background": "transparent"}, {"OUTPUT_VARIANTS": TWO}, "bgremove-background"),  # jpeg
        ({"bgremove-variants": "cutout,nonesuch"}, {"OUTPUT_VARIANTS": TWO}, "bgremove-variants"),
    ],
)
def test_a_bad_override_ends_in_a_failure_record_naming_the_key(
    world: World, recorded: bool, metadata: dict[str, str], env: dict[str, str], key: str
) -> None:
    job = stored_job(world, metadata if recorded else None)
    if not recorded:
        stored = world.objects.get("uploads", job.source.name)
        assert stored is not None
        stored.metadata.update(metadata)
    result = settle(world, job, **env)
    assert result.outcome is Outcome.FAILED and result.reason == "bad_metadata"
    final = record(world, job)
    assert final.state == jobs.FAILED and key in final.error
    assert world.outputs.opened == [] and world.objects.buckets.get("processed", {}) == {}


def test_a_background_override_applies_to_the_default_variant_too(world: World) -> None:
    job = stored_job(world, {"bgremove-background": "#FF0000"})
    assert settle(world, job).outcome is Outcome.COMPLETED
    written = decode(processed(world, "photos/a.png").data)
    assert written.mode == "RGB" and written.getpixel((0, 0)) == (255, 0, 0)


def test_a_variants_override_writes_only_those_named(world: World) -> None:
    job = stored_job(world, {"bgremove-variants": "white"})
    assert settle(world, job, OUTPUT_VARIANTS=TWO).outcome is Outcome.COMPLETED
    assert list(world.objects.buckets["processed"]) == ["photos/a.white.jpg"]
    final = record(world, job)
    assert final.output_name == "photos/a.white.jpg" and [o["variant"] for o in final.outputs] == ["white"]


def test_an_overwritten_uploads_result_is_superseded_and_writes_nothing(world: World) -> None:
    job = stored_job(world, None)
    world.objects.put("uploads", job.source.name, b"newer", "image/jpeg", {"bgremove-background": "not even valid"})
    assert settle(world, job, OUTPUT_VARIANTS=TWO).outcome is Outcome.SUPERSEDED
    assert "processed" not in world.objects.buckets and record(world, job).state == jobs.SUPERSEDED


# --- outputs that cannot be rendered ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "env", "reason"),
    [
        (cutout_png((60, 40)), {"MAX_INPUT_PIXELS": "2399"}, "output_too_many_pixels"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 64, {}, "output_unsupported"),  # a JPEG, not the model's PNG
        (cutout_png((60, 40))[:80], {}, "output_unsupported"),  # cut off
        (cutout_png(), {"OUTPUT_VARIANTS": json.dumps([{"name": "big", "canvas": "3000x1000"}])}, "output_unsupported"),
    ],
)
def test_an_output_that_cannot_be_rendered_ends_in_a_failure_record(
    world: World, output: bytes, env: dict[str, str], reason: str
) -> None:
    world.outputs.files[OUTPUT_URL] = output
    job = stored_job(world)
    result = settle(world, job, **{"OUTPUT_VARIANTS": TWO, "MAX_INPUT_PIXELS": "2000000", **env})
    assert result.outcome is Outcome.FAILED and result.reason == reason
    assert record(world, job).state == jobs.FAILED
    assert world.objects.buckets.get("processed", {}) == {}


def test_the_default_never_decodes_so_it_keeps_an_output_over_the_pixel_limit(world: World) -> None:
    job = stored_job(world)
    assert settle(world, job, MAX_INPUT_PIXELS="100").outcome is Outcome.COMPLETED


def test_a_failure_after_some_variants_were_written_lists_them(world: World) -> None:
    white = {"name": "white", "format": "jpeg", "background": "#ffffff"}
    bad_second = json.dumps([white, {"name": "big", "canvas": "3000x1000"}])
    job = stored_job(world)
    result = settle(world, job, OUTPUT_VARIANTS=bad_second, MAX_INPUT_PIXELS="2000000")
    assert result.reason == "output_unsupported"
    final = record(world, job)
    assert [o["object"] for o in final.outputs] == ["photos/a.white.jpg"]


def test_completion_losing_a_race_to_the_submitter_keeps_the_outputs(world: World) -> None:
    from tests.unit.fakes import race_next_save

    job = stored_job(world)
    race_next_save(world, job.job_id, lambda j: jobs.extend_deadline(j, NOW + 900, NOW))
    assert settle(world, job, OUTPUT_VARIANTS=TWO).outcome is Outcome.COMPLETED
    assert [o["variant"] for o in record(world, job).outputs] == ["cutout", "white"]


def test_records_without_outputs_or_source_metadata_still_load() -> None:
    job = jobs.new_claim(Source("uploads", "a.jpg", 1), VERSION, NOW, 300)
    data = job.to_json()
    del data["outputs"], data["source"]["metadata"]
    data["source"]["from_a_later_version"] = 1
    loaded = Job.from_json(data)
    assert loaded.outputs == () and loaded.source.metadata is None
    assert Job.from_json(json.loads(json.dumps(job.to_json()))) == job


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("{", "not valid JSON"),
        ('[{"name": "white", "format": "jpeg"}]', "jpeg has no transparency"),
        ('[{"name": "a"}, {"name": "a"}]', "used by an earlier variant"),
    ],
)
def test_a_bad_output_variants_setting_stops_the_function_at_start_naming_it(text: str, part: str) -> None:
    from bgremove.errors import ConfigError

    with pytest.raises(ConfigError, match="OUTPUT_VARIANTS") as raised:
        config(OUTPUT_VARIANTS=text)
    assert part in str(raised.value)


def test_the_default_setting_is_one_pass_through_cutout() -> None:
    (only,) = config().output_variants
    assert only.name == "cutout" and only.passthrough
