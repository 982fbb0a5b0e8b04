"""The submission step's image preparation, on in-memory seams: what the model is sent for turned,
phone-format and animated uploads, and that everything else goes exactly as before (head only,
nothing decoded). Checked by pixels on a real photo (skimage's chelsea)."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from bgremove import admission, errors, images, inputs, jobs, naming, submit, upright
from bgremove.admission import UploadEvent
from bgremove.jobs import Source
from bgremove.outcomes import Outcome
from tests.photos import sample
from tests.unit.fakes import BASE_ENV, World, config, process

NOW = 1_700_000_000.0
T = Image.Transpose
# What a camera stores for each orientation, given the upright scene (the inverse of exif_transpose).
STORED = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE, 6: T.ROTATE_90}
STORED |= {7: T.TRANSVERSE, 8: T.ROTATE_270}


def scene(size: tuple[int, int] = (150, 100)) -> Image.Image:
    return Image.fromarray(sample("chelsea")).resize(size)


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def exif(orientation: int) -> bytes:
    tags = Image.Exif()
    tags[0x010F] = "test camera"
    tags[0x0112] = orientation
    return tags.tobytes()


def turned(orientation: int, fmt: str = "JPEG", size: tuple[int, int] = (150, 100), **options: Any) -> bytes:
    """The scene stored sideways with the EXIF orientation that makes viewers show it upright."""
    return encode(scene(size).transpose(STORED[orientation]), fmt, exif=exif(orientation), **options)


def heic(image: Image.Image) -> bytes:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    return encode(image, "HEIF", quality=90)


def diff(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size, (a.size, b.size)
    return float(np.abs(np.asarray(a.convert("RGB"), np.float32) - np.asarray(b.convert("RGB"), np.float32)).mean())


def event(world: World, data_: bytes, content_type: str, name: str = "photos/a.jpg", **metadata: str) -> UploadEvent:
    generation = world.objects.put(BASE_ENV["UPLOAD_BUCKET"], name, data_, content_type, metadata)
    return UploadEvent(
        event_id="1",
        event_type=admission.FINALIZED,
        bucket=BASE_ENV["UPLOAD_BUCKET"],
        name=name,
        generation=generation,
        content_type=content_type,
        size=len(data_),
        metadata=dict(metadata),
        event_time=NOW - 1,
    )


def submitted(world: World, ev: UploadEvent, **env: str) -> str:
    """Submit the upload; return the image reference the model was given."""
    result = process(ev, config(**env), world.deps, NOW)
    assert result.outcome is Outcome.SUBMITTED, result
    return world.api.created[-1]["image"]


def data_url_image(reference: str) -> tuple[str, bytes]:
    header, _, payload = reference.partition(",")
    assert header.startswith("data:") and header.endswith(";base64"), header
    return header[len("data:") : -len(";base64")], base64.b64decode(payload)


def job_of(world: World, ev: UploadEvent) -> jobs.Job:
    loaded = world.deps.store.load(naming.job_id(ev.bucket, ev.name, ev.generation))
    assert loaded is not None
    return loaded[0]


def assert_untouched(world: World, ev: UploadEvent, original: bytes) -> None:
    stored = world.objects.get(ev.bucket, ev.name)
    assert stored is not None and stored.generation == ev.generation and stored.data == original
    assert list(world.objects.buckets[ev.bucket]) == [ev.name]


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("upright.prepare must not be called")

    monkeypatch.setattr(upright, "prepare", refuse)


# --- uploads that go as they are --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_", "content_type"),
    [
        (encode(scene(), "JPEG"), "image/jpeg"),
        (encode(scene(), "JPEG", exif=exif(1)), "image/jpeg"),
        (encode(scene(), "PNG"), "image/png"),
        (encode(scene(), "WEBP", exif=exif(1)), "image/webp"),
    ],
    ids=["jpeg", "jpeg-orientation-1", "png", "webp-orientation-1"],
)
@pytest.mark.usefixtures("no_decoding")
def test_upright_upload_goes_as_it_is_reading_only_the_head_for_a_signed_url(data_: bytes, content_type: str) -> None:
    world = World()
    ev = event(world, data_, content_type)
    reference = submitted(world, ev, DATA_URL_MAX_BYTES="10")
    assert reference.endswith(f"/uploads/photos/a.jpg?generation={ev.generation}&X-Goog-Signature=sig")
    assert "read_bytes" not in world.objects.calls and "create_object" not in world.objects.calls
    assert_untouched(world, ev, data_)


@pytest.mark.usefixtures("no_decoding")
def test_small_upright_upload_is_its_own_bytes_as_a_data_url() -> None:
    world = World()
    original = encode(scene(), "JPEG")
    reference = submitted(world, event(world, original, "image/jpeg"))
    assert data_url_image(reference) == ("image/jpeg", original)


# --- EXIF orientation -------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(2, 9))
def test_turned_jpeg_is_sent_upright_as_a_data_url_and_the_original_is_untouched(orientation: int) -> None:
    world = World()
    original = turned(orientation, quality=95)
    ev = event(world, original, "image/jpeg")
    content_type, sent = data_url_image(submitted(world, ev))
    assert content_type == "image/jpeg"
    image = Image.open(io.BytesIO(sent))
    assert image.size == (150, 100) and images.exif_orientation(sent) == 1
    assert diff(image, scene()) < 4
    # What a viewer shows of the original is what the model is sent.
    assert diff(image, ImageOps.exif_transpose(Image.open(io.BytesIO(original)))) < 4
    assert_untouched(world, ev, original)


@pytest.mark.parametrize(
    ("fmt", "content_type", "env"),
    [
        ("JPEG", "image/jpeg", {"DATA_URL_MAX_BYTES": "1000"}),  # the prepared bytes do not fit
        ("PNG", "image/png", {"DATA_URL_MAX_BYTES": "1000"}),
        ("WEBP", "image/webp", {"DATA_URL_MAX_BYTES": "1000"}),
        ("JPEG", "image/jpeg", {"INPUT_MODE": "signed_url"}),
    ],
)
def test_prepared_bytes_that_do_not_go_as_a_data_url_are_a_create_only_copy_in_the_state_bucket(
    fmt: str, content_type: str, env: dict[str, str]
) -> None:
    world = World()
    original = turned(6, fmt)
    ev = event(world, original, content_type)
    reference = submitted(world, ev, **env)
    job_id = naming.job_id(ev.bucket, ev.name, ev.generation)
    copy = world.objects.get("state", f"inputs/{job_id}")
    assert copy is not None and copy.content_type == content_type
    assert reference.endswith(f"/state/inputs/{job_id}?generation={copy.generation}&X-Goog-Signature=sig")
    assert copy.metadata == {
        "bgremove-output": "true",  # never taken for an upload, even if the state bucket were the uploads bucket
        "bgremove-input": "prepared",
        "bgremove-job": job_id,
        "bgremove-source": f"gs://uploads/{ev.name}",
        "bgremove-source-generation": str(ev.generation),
    }
    image = Image.open(io.BytesIO(copy.data))
    assert image.size == (150, 100) and images.exif_orientation(copy.data) == 1
    assert diff(image, scene()) < 4
    assert world.objects.copies == []  # written, not a server-side copy of the original
    assert_untouched(world, ev, original)


def test_data_url_mode_sends_prepared_bytes_inline() -> None:
    world = World()
    ev = event(world, turned(8, "PNG"), "image/png")
    content_type, sent = data_url_image(
        submitted(world, ev, INPUT_MODE="data_url", DATA_URL_MAX_BYTES="0", MAX_UPLOAD_BYTES="500000")
    )
    assert content_type == "image/png" and Image.open(io.BytesIO(sent)).size == (150, 100)


def test_orientation_past_the_head_is_found_by_reading_the_whole_file() -> None:
    """libwebp writes EXIF after the image data: in a large WebP it is past the head."""
    world = World()
    noise = np.random.default_rng(1).integers(0, 256, (400, 600, 3), dtype=np.uint8)
    stored = Image.fromarray(noise).transpose(T.ROTATE_90)
    original = encode(stored, "WEBP", lossless=True, exif=exif(6))
    assert len(original) > images.HEAD_BYTES and images.exif_beyond_head(original[: images.HEAD_BYTES])
    ev = event(world, original, "image/webp")
    reference = submitted(world, ev)
    copy = world.objects.get("state", f"inputs/{naming.job_id(ev.bucket, ev.name, ev.generation)}")
    assert copy is not None and f"generation={copy.generation}" in reference
    sent = Image.open(io.BytesIO(copy.data))
    assert sent.size == (600, 400) and np.array_equal(np.asarray(sent.convert("RGB")), noise)  # lossless stays lossless


def test_whole_file_read_for_exif_past_the_head_that_says_upright_sends_the_original() -> None:
    world = World()
    noise = np.random.default_rng(2).integers(0, 256, (400, 600, 3), dtype=np.uint8)
    original = encode(Image.fromarray(noise), "WEBP", lossless=True, exif=exif(1))
    assert images.exif_beyond_head(original[: images.HEAD_BYTES])
    ev = event(world, original, "image/webp")
    reference = submitted(world, ev)
    assert reference.endswith(f"/uploads/photos/a.jpg?generation={ev.generation}&X-Goog-Signature=sig")
    assert "create_object" not in world.objects.calls


def test_a_retry_reuses_the_prepared_copy_its_first_attempt_wrote() -> None:
    world = World()
    ev = event(world, turned(3), "image/jpeg")
    world.api.fail("create", errors.ApiUnavailable("503"))
    with pytest.raises(errors.RetryLater):
        process(ev, config(INPUT_MODE="signed_url"), world.deps, NOW)
    copy_name = f"inputs/{naming.job_id(ev.bucket, ev.name, ev.generation)}"
    first = world.objects.get("state", copy_name)
    assert first is not None
    reference = submitted(world, ev, INPUT_MODE="signed_url")
    again = world.objects.get("state", copy_name)
    assert again is not None and again.generation == first.generation
    assert f"generation={first.generation}" in reference


def test_a_copy_of_the_original_under_the_name_is_replaced_by_the_prepared_bytes() -> None:
    """A name with dot segments is copied as it is; if an earlier attempt did that, the prepared
    copy replaces it (that copy is still sideways)."""
    world = World()
    original = turned(6)
    ev = event(world, original, "image/jpeg", name="a/../b.jpg")
    copy_name = f"inputs/{naming.job_id(ev.bucket, ev.name, ev.generation)}"
    world.objects.put("state", copy_name, original, "image/jpeg", {})
    submitted(world, ev, INPUT_MODE="signed_url")
    copy = world.objects.get("state", copy_name)
    assert copy is not None and copy.metadata["bgremove-input"] == "prepared"
    assert Image.open(io.BytesIO(copy.data)).size == (150, 100)


# --- phone formats and animations -------------------------------------------------------------------


def test_heic_is_accepted_by_default_and_sent_as_jpeg() -> None:
    world = World()
    original = heic(scene())
    ev = event(world, original, "image/heic", name="photos/IMG_0001.HEIC")
    content_type, sent = data_url_image(submitted(world, ev))
    assert content_type == "image/jpeg"
    assert diff(Image.open(io.BytesIO(sent)), scene()) < 6
    assert_untouched(world, ev, original)


def test_heic_with_alpha_is_sent_as_png() -> None:
    world = World()
    image = scene().convert("RGBA")
    image.putalpha(128)
    ev = event(world, heic(image), "image/heif", name="photos/a.heif")
    content_type, sent = data_url_image(submitted(world, ev))
    assert content_type == "image/png" and Image.open(io.BytesIO(sent)).mode == "RGBA"


def test_heic_uploaded_with_a_wrong_type_is_still_converted() -> None:
    world = World()
    ev = event(world, heic(scene()), "image/jpeg")
    content_type, _ = data_url_image(submitted(world, ev))
    assert content_type == "image/jpeg"


@pytest.mark.parametrize(
    ("fmt", "content_type", "env", "sent_type"),
    [
        ("GIF", "image/gif", {"ALLOWED_CONTENT_TYPES": "image/gif"}, "image/png"),
        ("WEBP", "image/webp", {}, "image/webp"),
        ("PNG", "image/png", {}, "image/png"),  # APNG
    ],
)
def test_animation_is_sent_as_its_first_frame(fmt: str, content_type: str, env: dict[str, str], sent_type: str) -> None:
    world = World()
    first = scene()
    frames = [first, first.transpose(T.ROTATE_180), first.transpose(T.FLIP_LEFT_RIGHT)]
    options: dict[str, Any] = {"lossless": True} if fmt == "WEBP" else {}
    original = encode(first, fmt, save_all=True, append_images=frames[1:], **options)
    assert images.is_animated(original)
    ev = event(world, original, content_type)
    sent_as, sent = data_url_image(submitted(world, ev, **env))
    image = Image.open(io.BytesIO(sent))
    assert sent_as == sent_type and not getattr(image, "is_animated", False)
    assert diff(image, first) < (12 if fmt == "GIF" else 1)  # GIF: a 256-colour palette


# --- refusals, before any prediction ---------------------------------------------------------------


def truncated_turned_jpeg() -> bytes:
    data_ = turned(6)
    return data_[: len(data_) // 2]


@pytest.mark.parametrize(
    ("data_", "content_type"),
    [
        (truncated_turned_jpeg(), "image/jpeg"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, "image/heic"),
    ],
    ids=["truncated-turned-jpeg", "heic-without-an-image"],
)
def test_image_that_cannot_be_prepared_is_refused_naming_unsupported_image(data_: bytes, content_type: str) -> None:
    world = World()
    source = Source("uploads", "a.jpg", world.objects.put("uploads", "a.jpg", data_, content_type), content_type, 10)
    with pytest.raises(errors.ImageRefused) as refused:
        inputs.image_reference(source, images.sniff(data_) or content_type, config(), world.objects)
    assert refused.value.reason == "unsupported_image" and str(refused.value)
    assert "create_object" not in world.objects.calls


@pytest.mark.parametrize(
    ("data_", "content_type"),
    [(truncated_turned_jpeg(), "image/jpeg")],
)
def test_unsupported_upload_ends_in_a_failure_record_before_any_prediction(data_: bytes, content_type: str) -> None:
    """Needs submit_job to record errors.ImageRefused as a failure (see the module doc of inputs)."""
    world = World()
    ev = event(world, data_, content_type)
    result = process(ev, config(DATA_URL_MAX_BYTES="10"), world.deps, NOW)
    assert result.outcome is Outcome.FAILED and result.reason == "unsupported_image"
    job = job_of(world, ev)
    assert job.state == jobs.FAILED and job.reason == "unsupported_image" and "cannot decode" in job.error
    assert world.api.created == [] and "create_object" not in world.objects.calls
    assert_untouched(world, ev, data_)


@pytest.mark.parametrize(
    ("metadata", "key"),
    [
        ({"bgremove-background": "blue"}, "bgremove-background"),
        ({"BGREMOVE-BACKGROUND": "#12345"}, "bgremove-background"),
        ({"bgremove-variants": "nonesuch"}, "bgremove-variants"),
        ({"bgremove-variants": "Not A Name"}, "bgremove-variants"),
    ],
)
def test_overrides_recorded_by_the_claim_are_checked_before_any_prediction(metadata: dict[str, str], key: str) -> None:
    world = World()
    ev = event(world, encode(scene(), "JPEG"), "image/jpeg")
    source = Source(ev.bucket, ev.name, ev.generation, ev.content_type, ev.size, metadata)
    job = jobs.new_claim(source, "v", NOW, 300)
    generation = world.put(job)
    with pytest.raises(errors.ImageRefused) as refused:
        inputs.image_reference(source, "image/jpeg", config(), world.objects)
    assert refused.value.reason == "bad_metadata" and key in str(refused.value)
    # ... and submit_job records it (needs the except clause for errors.ImageRefused).
    result = submit.submit_job(job, generation, config(), world.deps, NOW, {})
    assert result.outcome is Outcome.FAILED and result.reason == "bad_metadata"
    assert key in job_of(world, ev).error and world.api.created == []


def test_good_overrides_pass_and_unknown_keys_are_left_alone() -> None:
    world = World()
    ev = event(world, encode(scene(), "JPEG"), "image/jpeg")
    metadata = {"bgremove-background": "#FFFFFF", "bgremove-variants": "cutout", "owner": "x"}
    source = Source(ev.bucket, ev.name, ev.generation, ev.content_type, ev.size, metadata)
    assert inputs.image_reference(source, "image/jpeg", config(), world.objects).startswith("data:image/jpeg")


def test_claim_keeps_only_the_override_keys_of_the_metadata() -> None:
    from bgremove import variants

    kept = variants.override_metadata({"bgremove-background": "#fff", "Bgremove-Variants": "a", "owner": "x"})
    assert kept == {"bgremove-background": "#fff", "Bgremove-Variants": "a"}


@pytest.mark.parametrize(
    ("head", "content_type", "why"),
    [
        (encode(scene(), "JPEG"), "image/jpeg", ""),
        (turned(5), "image/jpeg", "EXIF orientation 5"),
        (b"\x00\x00\x00\x18ftypheic", "image/heic", "converted"),
        (b"\x00\x00\x00\x18ftypavif", "image/avif", "converted"),
        (b"GIF89a", "image/gif", "converted"),
    ],
)
def test_preparation_is_decided_from_the_head(head: bytes, content_type: str, why: str) -> None:
    found = inputs.preparation_needed(head, content_type)
    assert (why in found) if why else found == ""


def test_the_claim_records_the_overrides_so_a_bad_one_fails_before_any_prediction() -> None:
    """Needs handle_upload to record the event's override keys in the Source (variants.override_metadata)."""
    world = World()
    ev = event(world, encode(scene(), "JPEG"), "image/jpeg", **{"bgremove-background": "blue", "owner": "x"})
    result = process(ev, config(), world.deps, NOW)
    assert result.outcome is Outcome.FAILED and result.reason == "bad_metadata"
    job = job_of(world, ev)
    assert job.source.metadata == {"bgremove-background": "blue"} and "bgremove-background" in job.error
    assert world.api.created == []
