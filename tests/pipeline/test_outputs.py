"""What comes out, end to end through the real functions, emulator, relay and model, checked by pixels
on real photos: upright cut-outs whatever the EXIF orientation, HEIC uploads, every output variant
kind, and per-upload metadata. One stack for the module, configured with one variant of each kind;
uploads that need only the cut-out say so with `bgremove-variants`."""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bgremove import images, naming, variants
from tests.conftest import start_stack
from tests.photos import sample
from tests.support import StackClient

SIZE = (300, 200)
VARIANTS = [
    {"name": "cutout"},
    {"name": "red", "background": "#ff0000"},
    {"name": "white", "format": "jpeg", "background": "#ffffff", "quality": 95},
    {"name": "crop", "crop": True, "margin": 8},
    {"name": "square", "format": "webp", "canvas": "400x400"},
    {"name": "mask", "mask": True},
]
CUTOUT_ONLY = {"bgremove-variants": "cutout"}
T = Image.Transpose
# What a camera stores for each orientation, given the upright scene (the inverse of exif_transpose).
STORED = {1: None, 2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE, 6: T.ROTATE_90}
STORED |= {7: T.TRANSVERSE, 8: T.ROTATE_270}


@pytest.fixture(scope="module")
def outputs_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackClient]:
    running = start_stack(
        tmp_path_factory.mktemp("outputs-stack"), function_env={"OUTPUT_VARIANTS": json.dumps(VARIANTS)}
    )
    try:
        assert running.info is not None
        yield StackClient(running.info)
    finally:
        running.stop()


def scene(size: tuple[int, int] = SIZE) -> Image.Image:
    return Image.fromarray(sample("chelsea")).resize(size, Image.Resampling.LANCZOS)


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def exif(orientation: int) -> bytes:
    tags = Image.Exif()
    tags[0x010F] = "test camera"
    tags[0x0112] = orientation
    return tags.tobytes()


def stored_as(orientation: int, fmt: str = "JPEG", size: tuple[int, int] = SIZE, **options: Any) -> bytes:
    method = STORED[orientation]
    image = scene(size) if method is None else scene(size).transpose(method)
    return encode(image, fmt, exif=exif(orientation), **options)


def decode(blob_bytes: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(blob_bytes))
    image.load()
    return image


def run(stack: StackClient, name: str, body: bytes, content_type: str, metadata: dict[str, str] | None = None) -> int:
    return stack.upload(name, body, content_type, metadata)


def finished(stack: StackClient, name: str, generation: int) -> dict[str, Any]:
    job = stack.wait_job(name, generation, timeout=120)
    return job


def completed(stack: StackClient, name: str, generation: int) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The completed job and its outputs by variant name."""
    job = finished(stack, name, generation)
    assert job["state"] == "completed", job
    found = {}
    for entry in job["outputs"]:
        blob = stack.processed(entry["object"])
        assert blob is not None and blob.generation == entry["generation"], entry
        assert blob.metadata["bgremove-variant"] == entry["variant"]
        assert blob.metadata["bgremove-job"] == job["job_id"]
        found[entry["variant"]] = blob.download_as_bytes()
    assert job["output_name"] == job["outputs"][0]["object"]
    return job, found


def model_input(stack: StackClient, job: dict[str, Any]) -> str:
    image = stack.api("GET", f"/v1/predictions/{job['prediction_ids'][-1]}").json()["input"]["image"]
    assert isinstance(image, str), image
    return image


def alpha(png: bytes) -> np.ndarray:
    return np.asarray(decode(png).convert("RGBA").getchannel("A"))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    x, y = a > 128, b > 128
    return float((x & y).sum() / max(1, (x | y).sum()))


@pytest.fixture(scope="module")
def upright_cutout(outputs_stack: StackClient) -> bytes:
    """The cut-out of the upright photo, uploaded without EXIF: what every orientation must match."""
    name = f"outputs/{uuid.uuid4().hex[:8]}/upright.jpg"
    generation = run(outputs_stack, name, encode(scene(), "JPEG", quality=95), "image/jpeg", CUTOUT_ONLY)
    _, found = completed(outputs_stack, name, generation)
    mask = alpha(found["cutout"])
    assert (mask > 128).mean() > 0.05, "the model found no subject in the upright photo"
    return found["cutout"]


# --- upright, always ---------------------------------------------------------------------------------


def test_every_exif_orientation_gives_an_upright_cutout_matching_the_upright_photos(
    outputs_stack: StackClient, upright_cutout: bytes
) -> None:
    prefix = f"outputs/{uuid.uuid4().hex[:8]}"
    uploads = {}
    for orientation in range(1, 9):
        name = f"{prefix}/orientation-{orientation}.jpg"
        uploads[orientation] = (
            name,
            run(outputs_stack, name, stored_as(orientation, quality=95), "image/jpeg", CUTOUT_ONLY),
        )
    reference = alpha(upright_cutout)
    for orientation, (name, generation) in uploads.items():
        job, found = completed(outputs_stack, name, generation)
        cutout = decode(found["cutout"])
        assert cutout.size == SIZE, (orientation, cutout.size)
        assert iou(alpha(found["cutout"]), reference) > 0.9, orientation
        # The model was sent upright pixels without an orientation to apply (whatever it does with EXIF).
        header, _, payload = model_input(outputs_stack, job).partition(",")
        sent = base64.b64decode(payload)
        assert header == "data:image/jpeg;base64" and decode(sent).size == SIZE
        assert images.exif_orientation(sent) == 1 or orientation == 1


def test_a_turned_upload_too_large_for_a_data_url_goes_as_a_signed_copy_and_stays_untouched(
    outputs_stack: StackClient,
) -> None:
    info = outputs_stack.info
    original = stored_as(6, "PNG", size=(720, 480))
    assert len(original) > 256 * 1024
    name = f"outputs/{uuid.uuid4().hex[:8]}/large-turned.png"
    generation = run(outputs_stack, name, original, "image/png", CUTOUT_ONLY)
    job, found = completed(outputs_stack, name, generation)
    assert decode(found["cutout"]).size == (720, 480)
    sent = model_input(outputs_stack, job)
    assert f"/{info.state_bucket}/{naming.input_copy_name(job['job_id'])}?" in sent and "X-Goog-Signature=" in sent
    copy = outputs_stack.gcs.bucket(info.state_bucket).get_blob(naming.input_copy_name(job["job_id"]))
    assert copy is not None and f"generation={copy.generation}" in sent
    assert decode(copy.download_as_bytes()).size == (720, 480)
    upload = outputs_stack.gcs.bucket(info.upload_bucket).get_blob(name)
    assert upload is not None and upload.generation == generation and upload.download_as_bytes() == original


# --- phone formats -----------------------------------------------------------------------------------


def test_a_heic_upload_gives_a_cutout(outputs_stack: StackClient, upright_cutout: bytes) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    name = f"outputs/{uuid.uuid4().hex[:8]}/IMG_0001.HEIC"
    generation = run(outputs_stack, name, encode(scene(), "HEIF", quality=90), "image/heic", CUTOUT_ONLY)
    job, found = completed(outputs_stack, name, generation)
    assert job["output_name"] == name.removesuffix(".HEIC") + ".png"
    cutout = decode(found["cutout"])
    assert cutout.format == "PNG" and cutout.mode == "RGBA" and cutout.size == SIZE
    assert iou(alpha(found["cutout"]), alpha(upright_cutout)) > 0.85
    assert model_input(outputs_stack, job).startswith("data:image/jpeg;base64,")


# --- every variant kind ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def all_variants(outputs_stack: StackClient) -> dict[str, bytes]:
    name = f"outputs/{uuid.uuid4().hex[:8]}/shop/cat.jpg"
    generation = run(outputs_stack, name, encode(scene(), "JPEG", quality=95), "image/jpeg")
    job, found = completed(outputs_stack, name, generation)
    stem = name.removesuffix(".jpg")
    assert [(o["variant"], o["object"]) for o in job["outputs"]] == [
        ("cutout", f"{stem}.png"),
        ("red", f"{stem}.red.png"),
        ("white", f"{stem}.white.jpg"),
        ("crop", f"{stem}.crop.png"),
        ("square", f"{stem}.square.webp"),
        ("mask", f"{stem}.mask.png"),
    ]
    return found


def variant(name: str) -> variants.Variant:
    (found,) = (v for v in variants.parse_variants(json.dumps(VARIANTS)) if v.name == name)
    return found


def test_colour_backgrounds_fill_where_the_cutout_is_transparent(all_variants: dict[str, bytes]) -> None:
    cutout = np.asarray(decode(all_variants["cutout"]).convert("RGBA"), dtype=np.float32)
    a = cutout[:, :, 3:] / 255
    for name, colour, tolerance in (("red", (255, 0, 0), 1.0), ("white", (255, 255, 255), 8.0)):
        out = decode(all_variants[name])
        assert out.mode == "RGB" and out.size == SIZE and out.format == ("PNG" if name == "red" else "JPEG")
        pixels = np.asarray(out, dtype=np.float32)
        expected = cutout[:, :, :3] * a + np.array(colour, dtype=np.float32) * (1 - a)
        assert float(np.abs(pixels - expected).mean()) < tolerance, name
        h, w = a.shape[:2]
        for y, x in ((0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)):
            if a[y, x, 0] == 0:
                assert np.abs(pixels[y, x] - colour).max() <= 3 * tolerance, (name, y, x, pixels[y, x])


def test_crop_is_the_subjects_alpha_box_plus_the_margin(all_variants: dict[str, bytes]) -> None:
    cutout = decode(all_variants["cutout"]).convert("RGBA")
    box = cutout.getchannel("A").point(lambda v: 255 if v >= variants.CROP_ALPHA_THRESHOLD else 0).getbbox()
    assert box is not None
    margin = 8
    crop = decode(all_variants["crop"]).convert("RGBA")
    assert crop.size == (box[2] - box[0] + 2 * margin, box[3] - box[1] + 2 * margin)
    # The subject's pixels, where the box lies inside the image; the margin past an edge is transparent.
    left, top = box[0] - margin, box[1] - margin
    inside = (max(left, 0), max(top, 0), min(box[2] + margin, SIZE[0]), min(box[3] + margin, SIZE[1]))
    at = (inside[0] - left, inside[1] - top, inside[2] - left, inside[3] - top)
    assert np.array_equal(np.asarray(crop.crop(at)), np.asarray(cutout.crop(inside)))
    whole = np.asarray(crop.getchannel("A"))
    outside = np.ones(whole.shape, bool)
    outside[at[1] : at[3], at[0] : at[2]] = False
    assert not whole[outside].any()


def test_canvas_has_its_size_and_the_image_centred(all_variants: dict[str, bytes]) -> None:
    square = decode(all_variants["square"])
    assert square.format == "WEBP" and square.size == (400, 400)
    layout = variants.plan(*SIZE, None, variant("square"))
    (dx, dy), (w, h) = layout.offset, layout.size
    assert (w, h) == SIZE and (dx, dy) == (50, 100)  # never scaled up: 300x200 centred in 400x400
    a = np.asarray(square.convert("RGBA").getchannel("A"))
    padding = np.ones(a.shape, bool)
    padding[dy : dy + h, dx : dx + w] = False
    assert not a[padding].any()  # the padding is the (transparent) background
    assert iou(a[dy : dy + h, dx : dx + w], alpha(all_variants["cutout"])) > 0.95
    box = Image.fromarray(a).getbbox()
    reference = Image.fromarray(alpha(all_variants["cutout"])).getbbox()
    assert box is not None and reference is not None
    assert (box[0] - reference[0], box[1] - reference[1]) == (dx, dy)  # placed at the centring offset


def test_mask_is_the_cutouts_alpha_in_greyscale(all_variants: dict[str, bytes]) -> None:
    mask = decode(all_variants["mask"])
    assert mask.mode == "L" and mask.size == SIZE
    assert np.array_equal(np.asarray(mask), alpha(all_variants["cutout"]))


def test_the_pass_through_variant_is_the_models_png(outputs_stack: StackClient, all_variants: dict[str, bytes]) -> None:
    cutout = decode(all_variants["cutout"])
    assert cutout.format == "PNG" and cutout.mode == "RGBA" and cutout.size == SIZE


# --- per-upload metadata -----------------------------------------------------------------------------


def test_a_background_override_colours_every_variant_of_that_upload(outputs_stack: StackClient) -> None:
    name = f"outputs/{uuid.uuid4().hex[:8]}/blue.jpg"
    metadata = {"bgremove-background": "#0000FF", "bgremove-variants": "cutout,mask"}
    generation = run(outputs_stack, name, encode(scene(), "JPEG"), "image/jpeg", metadata)
    job, found = completed(outputs_stack, name, generation)
    assert [o["variant"] for o in job["outputs"]] == ["cutout", "mask"]
    cutout, mask = decode(found["cutout"]), decode(found["mask"])
    assert cutout.mode == "RGB" and mask.mode == "L"  # a mask has no colour
    a = np.asarray(mask)
    ys, xs = np.nonzero(a == 0)
    assert len(ys) and all(
        cutout.getpixel((int(x), int(y))) == (0, 0, 255) for y, x in zip(ys[:20], xs[:20], strict=True)
    )


@pytest.mark.parametrize(
    ("metadata", "key"),
    [
        ({"bgremove-background": "blue"}, "bgremove-background"),
        ({"bgremove-variants": "nonesuch"}, "bgremove-variants"),
    ],
)
def test_bad_metadata_ends_in_a_failure_record_naming_the_key(
    outputs_stack: StackClient, metadata: dict[str, str], key: str
) -> None:
    name = f"outputs/{uuid.uuid4().hex[:8]}/bad.jpg"
    generation = run(outputs_stack, name, encode(scene(), "JPEG"), "image/jpeg", metadata)
    job = finished(outputs_stack, name, generation)
    assert (job["state"], job["reason"]) == ("failed", "bad_metadata"), job
    assert key in job["error"]
    stem = name.removesuffix(".jpg")
    assert not [n for n in outputs_stack.processed_names() if n.startswith(stem)]
