"""Hostile and broken uploads, through the real storage trigger: objects uploaded to the emulator
(delivered by the Eventarc relay) and CloudEvents POSTed to the trigger directly."""

from __future__ import annotations

import io
import unicodedata
import uuid
from typing import Any

import pytest
from PIL import Image

from bgremove import naming
from tests.hostile.support import object_resource, post_event, task_log, trigger_log, webhook_log
from tests.support import StackClient, photo, wait_for

PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n" * 4
HTML = b"<!doctype html><html><body><script>alert(1)</script></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>'
ZIP = b"PK\x03\x04" + bytes(60)


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "GIF")
    return buf.getvalue()


def _delivered(stack: StackClient, name: str) -> dict[str, Any]:
    """Wait until the relay has delivered the upload's event (the trigger has answered)."""
    final = wait_for(lambda: stack.final_deliveries(f"objects/{name}"), 30, f"the event for {name}")
    assert final[0]["result"] == "delivered", final
    return final[0]


def _no_job(stack: StackClient, name: str, generation: int, bucket: str | None = None) -> None:
    assert stack.job(bucket or stack.info.upload_bucket, name, generation) is None
    _no_output(stack, name)


def _no_output(stack: StackClient, name: str) -> None:
    prefix = stack.info.function_env.get("OUTPUT_PREFIX", "")
    output = naming.output_name(name, f"{prefix}/" if prefix else "")
    assert stack.processed(output) is None, f"{output} was written"


# --- what is not an image, on the main stack -----------------------------------------------------

NOT_IMAGES = [
    ("notes.txt", "text/plain", b"just some notes\n"),
    ("doc.pdf", "application/pdf", PDF),
    ("page.html", "text/html", HTML),
    ("vector.svg", "image/svg+xml", SVG),
    ("anim.gif", "image/gif", _gif()),
    ("photo.jpg", "application/octet-stream", photo("coffee", "JPEG", (16, 16))),
    ("archive.zip", "application/zip", ZIP),
]


@pytest.mark.parametrize(("filename", "content_type", "data"), NOT_IMAGES, ids=[c[0] for c in NOT_IMAGES])
def test_non_image_content_type_is_skipped_without_a_job(
    main_stack: StackClient, filename: str, content_type: str, data: bytes
) -> None:
    stack = main_stack
    name = f"not-image/{uuid.uuid4().hex}/{filename}"
    log = trigger_log(stack.info)

    generation = stack.upload(name, data, content_type)
    _delivered(stack, name)

    entry = log.find("is not in ALLOWED_CONTENT_TYPES", object=f"gs://{stack.info.upload_bucket}/{name}")
    assert entry["outcome"] == "skipped" and repr(content_type) in entry["message"]
    _no_job(stack, name, generation)  # no record: the only path that creates predictions never ran


LIARS = [
    ("pdf-as-png", "image/png", PDF, "bytes are not an image"),
    ("html-as-jpeg", "image/jpeg", HTML, "bytes are not an image"),
    ("svg-as-png", "image/png", SVG, "bytes are not an image"),
    ("zip-as-webp", "image/webp", ZIP, "bytes are not an image"),
    ("gif-as-png", "image/png", _gif(), "bytes are image/gif"),
    ("png-signature-only", "image/png", b"\x89PNG", "bytes are not an image"),
]


@pytest.mark.parametrize(("case", "content_type", "data", "error"), LIARS, ids=[c[0] for c in LIARS])
def test_content_type_that_lies_about_the_bytes_fails_without_a_prediction(
    main_stack: StackClient, case: str, content_type: str, data: bytes, error: str
) -> None:
    stack = main_stack
    name = f"liar/{uuid.uuid4().hex}/{case}"
    log = task_log(stack.info)  # the bytes are read when the submission task runs

    generation = stack.upload(name, data, content_type)
    job = stack.wait_job(name, generation)

    assert (job["state"], job["reason"], job["error"]) == ("failed", "not_an_image", error)
    assert (job["attempts"], job["prediction_ids"]) == (0, [])  # no prediction was created
    # The record is written just before the log line: wait for the line.
    entry = log.wait_for("upload failed", reason="not_an_image", object=f"gs://{stack.info.upload_bucket}/{name}")
    assert entry["severity"] == "WARNING"
    _no_output(stack, name)


def test_image_declared_as_another_image_type_goes_as_what_its_bytes_are(main_stack: StackClient) -> None:
    stack = main_stack
    name = f"mislabelled/{uuid.uuid4().hex}.png"

    generation = stack.upload(name, photo("coffee", "JPEG", (48, 32)), "image/png")
    job = stack.wait_job(name, generation)

    assert job["state"] == "completed", job
    sent = stack.api("GET", f"/v1/predictions/{job['prediction_ids'][-1]}").json()["input"]["image"]
    assert sent.startswith("data:image/jpeg;base64,")  # the sniffed type, not the declared one


def test_zero_byte_upload_is_skipped_without_a_job(main_stack: StackClient) -> None:
    stack = main_stack
    name = f"empty/{uuid.uuid4().hex}.jpg"
    log = trigger_log(stack.info)

    generation = stack.upload(name, b"", "image/jpeg")
    _delivered(stack, name)

    entry = log.find("zero-byte object", object=f"gs://{stack.info.upload_bucket}/{name}")
    assert entry["outcome"] == "skipped"
    _no_job(stack, name, generation)


def test_our_own_output_uploaded_again_is_skipped(main_stack: StackClient) -> None:
    stack = main_stack
    name = f"loop/{uuid.uuid4().hex}.png"
    log = trigger_log(stack.info)

    generation = stack.upload(name, photo("coffee", "PNG", (16, 16)), "image/png", {"bgremove-output": "true"})
    _delivered(stack, name)

    assert log.find("object is one of our outputs", object=f"gs://{stack.info.upload_bucket}/{name}")
    _no_job(stack, name, generation)


# --- forged CloudEvents ------------------------------------------------------------------------


def _resource(bucket: str, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "bucket": bucket,
        "name": name,
        "generation": "1700000000000001",
        "metageneration": "1",
        "contentType": "image/jpeg",
        "size": "1000",
        **extra,
    }


def test_event_for_another_bucket_is_ignored(main_stack: StackClient) -> None:
    stack = main_stack
    name = f"elsewhere/{uuid.uuid4().hex}.jpg"
    log = trigger_log(stack.info)

    for bucket in ("someone-elses-bucket", stack.info.processed_bucket, stack.info.state_bucket):
        answer = post_event(stack.info, _resource(bucket, name), bucket=bucket, name=name)
        assert answer.status_code == 200
        entry = log.find(f"bucket {bucket!r} is not the uploads bucket", object=f"gs://{bucket}/{name}")
        assert entry["outcome"] == "ignored"
        _no_job(stack, name, 1700000000000001, bucket)


@pytest.mark.parametrize(
    "event_type",
    [
        "google.cloud.storage.object.v1.deleted",
        "google.cloud.storage.object.v1.metadataUpdated",
        "google.cloud.storage.object.v1.archived",
        "google.cloud.pubsub.topic.v1.messagePublished",
    ],
)
def test_event_of_another_type_is_ignored(main_stack: StackClient, event_type: str) -> None:
    stack = main_stack
    name = f"other-type/{uuid.uuid4().hex}.jpg"
    generation = stack.upload(name, photo("coffee", "JPEG", (16, 16)), "text/plain")  # skipped by the relay's event
    _delivered(stack, name)
    log = trigger_log(stack.info)
    data = object_resource(stack, name) | {"contentType": "image/jpeg"}

    answer = post_event(stack.info, data, name=name, headers={"ce-type": event_type})

    assert answer.status_code == 200
    assert log.find(f"event type {event_type!r} is not", outcome="ignored")
    _no_job(stack, name, generation)


NOT_OBJECTS = [
    ("list", [1, 2]),
    ("string", "gs://uploads/x.jpg"),
    ("null", None),
    ("no-name", {"bucket": "uploads", "generation": "1"}),
    ("name-not-a-string", {"bucket": "uploads", "name": 123, "generation": "1"}),
    ("no-bucket", {"name": "x.jpg", "generation": "1"}),
    ("generation-not-a-number", {"bucket": "uploads", "name": "x.jpg", "generation": "latest"}),
    ("size-not-a-number", {"bucket": "uploads", "name": "x.jpg", "generation": "1", "size": "big"}),
]


@pytest.mark.parametrize(("case", "data"), NOT_OBJECTS, ids=[c[0] for c in NOT_OBJECTS])
def test_event_whose_data_is_not_a_storage_object_is_ignored(main_stack: StackClient, case: str, data: Any) -> None:
    stack = main_stack
    event_id = f"not-an-object-{uuid.uuid4().hex}"
    log = trigger_log(stack.info)

    answer = post_event(stack.info, data, event_id=event_id)

    assert answer.status_code == 200
    entry = log.find("data is not a storage object", event_id=event_id)
    assert (entry["outcome"], entry["severity"]) == ("ignored", "WARNING")


def test_event_for_an_object_that_does_not_exist_ends_removed_without_a_prediction(main_stack: StackClient) -> None:
    stack = main_stack
    name = f"ghost/{uuid.uuid4().hex}.jpg"

    log = task_log(stack.info)  # the object is looked up when the submission task runs

    answer = post_event(stack.info, _resource(stack.info.upload_bucket, name), name=name)

    assert answer.status_code == 200
    job = stack.wait_job(name, 1700000000000001, states=("completed", "failed", "removed", "superseded"))
    assert (job["state"], job["reason"]) == ("removed", "removed")  # nothing to make: the upload is gone
    assert (job["attempts"], job["prediction_ids"]) == (0, [])  # no prediction was created
    assert log.wait_for("upload removed", outcome="removed", object=f"gs://{stack.info.upload_bucket}/{name}")
    _no_output(stack, name)


@pytest.mark.parametrize("missing", ["ce-id", "ce-type", "ce-source", "ce-specversion"])
def test_event_without_required_attributes_is_refused(main_stack: StackClient, missing: str) -> None:
    stack = main_stack
    name = f"no-attrs/{uuid.uuid4().hex}.jpg"

    answer = post_event(stack.info, _resource(stack.info.upload_bucket, name), name=name, headers={missing: None})

    assert answer.status_code == 400
    assert stack.job(stack.info.upload_bucket, name, 1700000000000001) is None


# --- limits, prefixes and names, on the stack with OUTPUT_PREFIX=cutouts -------------------------

TINY = photo("coffee", "JPEG", (32, 24))  # its cut-out fits under OUTPUT_MAX_BYTES


def test_upload_over_the_size_limit_fails_without_a_prediction(limits_stack: StackClient) -> None:
    stack = limits_stack
    data = photo("coffee", "JPEG", (400, 300))
    assert len(data) > 20000  # MAX_UPLOAD_BYTES
    name = f"too-big/{uuid.uuid4().hex}.jpg"
    log = trigger_log(stack.info)

    generation = stack.upload(name, data, "image/jpeg")
    job = stack.wait_job(name, generation)

    assert (job["state"], job["reason"]) == ("failed", "too_large")
    assert (job["attempts"], job["prediction_ids"]) == (0, [])  # no prediction was created
    assert log.wait_for("upload failed", reason="too_large", object=f"gs://{stack.info.upload_bucket}/{name}")
    _no_output(stack, name)


@pytest.mark.parametrize("prefix", ["private/", "tmp/", "tmp/nested/deeper/"])
def test_upload_under_an_excluded_prefix_is_skipped(limits_stack: StackClient, prefix: str) -> None:
    stack = limits_stack
    name = f"{prefix}{uuid.uuid4().hex}.jpg"
    log = trigger_log(stack.info)

    generation = stack.upload(name, TINY, "image/jpeg")
    _delivered(stack, name)

    entry = log.find("name matches an EXCLUDE_PREFIXES entry", object=f"gs://{stack.info.upload_bucket}/{name}")
    assert entry["outcome"] == "skipped"
    _no_job(stack, name, generation)


# (case id, name, the output name expected or None when only its properties are checked)
NAMES: list[tuple[str, str, str | None]] = [
    ("spaces", "names/with spaces/my holiday photo.jpg", "cutouts/names/with spaces/my holiday photo.png"),
    ("unicode", "names/café/фото/写真.jpg", "cutouts/names/café/фото/写真.png"),
    ("emoji", "names/🎉 party/🐱.jpg", "cutouts/names/🎉 party/🐱.png"),
    ("dot-dot-segments", "names/../../../etc/passwd.jpg", "cutouts/names/etc/passwd.png"),
    ("dot-segments", "names/./a/.//b.jpg", "cutouts/names/a/b.png"),
    ("leading-slashes", "//names/leading.jpg", "cutouts/names/leading.png"),
    ("escape-the-prefix", "/cutouts/../../names/escape.jpg", "cutouts/cutouts/names/escape.png"),
    ("backslash-traversal", "names\\..\\..\\windows.jpg", "cutouts/names/windows.png"),
    ("tab", "names/tab\there.jpg", "cutouts/names/tabhere.png"),
    ("control-character", "names/bell\x07.jpg", "cutouts/names/bell.png"),
    ("only-dots", "../..", "cutouts/image.png"),
    ("ascii-1024-bytes", "long/" + "a" * 1015 + ".jpg", None),
    ("utf8-1024-bytes", "long/" + "é" * 507 + ".jpg", None),
    ("emoji-1023-bytes", "long/" + "😀" * 253 + ".jpg", None),
    ("many-segments", "/".join(["d"] * 508) + ".jpg", None),
]


@pytest.fixture(scope="module")
def named_jobs(limits_stack: StackClient) -> dict[str, dict[str, Any]]:
    """Upload every name at once (the model runs in parallel), then wait for every job. The stack
    is new each session, so the names need no run id (which would change their lengths)."""
    stack = limits_stack
    # The relay percent-encodes each name in ce-subject, as the CloudEvents HTTP binding requires.
    generations = {name: stack.upload(name, TINY, "image/jpeg") for _, name, _ in NAMES}
    return {name: stack.wait_job(name, generation) for name, generation in generations.items()}


@pytest.mark.parametrize(("case", "name", "expected"), NAMES, ids=[c[0] for c in NAMES])
def test_hostile_name_gives_a_valid_output_name_inside_the_prefix(
    limits_stack: StackClient, named_jobs: dict[str, dict[str, Any]], case: str, name: str, expected: str | None
) -> None:
    job = named_jobs[name]
    output = job.get("output_name", "")

    assert job["state"] == "completed", job
    if expected is not None:
        assert output == expected
    assert len(output.encode()) <= 1024
    assert output.startswith("cutouts/") and output.endswith(".png")
    segments = output.removeprefix("cutouts/").replace("\\", "/").split("/")
    assert all(segment not in ("", ".", "..") for segment in segments), output
    assert not any(unicodedata.category(ch) == "Cc" for ch in output)
    written = limits_stack.processed(output)
    assert written is not None
    assert written.metadata["bgremove-source"] == f"gs://{limits_stack.info.upload_bucket}/{name}"
    assert written.metadata["bgremove-job"] == job["job_id"]


def test_name_that_maps_onto_an_existing_output_never_overwrites_it(limits_stack: StackClient) -> None:
    stack = limits_stack
    folder = f"collide-{uuid.uuid4().hex[:8]}"
    first_name = f"{folder}/photo.jpg"
    first = stack.wait_job(first_name, stack.upload(first_name, TINY, "image/jpeg"))
    assert first["state"] == "completed"
    output = stack.processed(first["output_name"])
    assert output is not None

    log = webhook_log(stack.info)
    # The same output name, reached through a leading slash, a dot segment, an empty segment and
    # other extensions.
    rivals = [f"/{folder}/photo.jpg", f"{folder}/./photo.webp", f"{folder}//photo.png"]
    generations = [stack.upload(name, TINY, "image/jpeg") for name in rivals]
    jobs = [stack.wait_job(name, generation) for name, generation in zip(rivals, generations, strict=True)]

    for job in jobs:
        assert (job["state"], job["reason"]) == ("failed", "output_name_taken"), job
        log.wait_for("job failed: output_name_taken", job_id=job["job_id"])
    again = stack.processed(first["output_name"])
    assert again is not None and again.generation == output.generation
    assert again.metadata["bgremove-job"] == first["job_id"]
    assert again.metadata["bgremove-source"] == f"gs://{stack.info.upload_bucket}/{first_name}"


@pytest.mark.parametrize("name", ["signed/./dot.png", "signed/x/../dot-dot.png"])
def test_name_with_dot_segments_sent_as_a_signed_url_is_processed(main_stack: StackClient, name: str) -> None:
    stack = main_stack
    data = photo("coffee", "PNG")
    assert len(data) > 256 * 1024  # over DATA_URL_MAX_BYTES: `auto` signs a URL

    job = stack.wait_job(name, stack.upload(name, data, "image/png"))

    assert job["state"] == "completed", (job["reason"], job["error"])
