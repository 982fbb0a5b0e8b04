"""Output variants, checked by their pixels on a cut-out made from a real photo.

The cut-out is skimage's `chelsea` photo with an alpha we control: an opaque ellipse (so the
subject box is known) and a patch of faint haze below CROP_ALPHA_THRESHOLD in the top-left corner,
like the haze real model mattes leave.

The 25-megapixel renders print their time and peak RSS (not asserted). They run only with
BGREMOVE_LARGE=1 (measurements, not assertions; the unit tier stays fast).
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import gc
import io
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from bgremove import variants
from bgremove.errors import UnsupportedImage, VariantError
from bgremove.naming import MAX_OBJECT_NAME_BYTES
from bgremove.variants import (
    Margin,
    Overrides,
    Variant,
    apply,
    overrides_from_metadata,
    parse_variants,
    plan,
    render,
    select,
    variant_object_name,
)
from tests.photos import sample

REPO = Path(__file__).resolve().parents[2]
MAX_PIXELS = 40_000_000
ELLIPSE = (120, 60, 320, 240)  # ImageDraw includes both ends: the subject box is (120, 60, 321, 241)
SUBJECT = (120, 60, 321, 241)
HAZE = (0, 0, 40, 40)


# --- fixtures and helpers -------------------------------------------------------------------------


def photo() -> Image.Image:
    return Image.fromarray(sample("chelsea"))  # 451x300 RGB


def cutout_alpha(size: tuple[int, int] = (451, 300)) -> Image.Image:
    alpha = Image.new("L", size, 0)
    draw = ImageDraw.Draw(alpha)
    draw.rectangle((HAZE[0], HAZE[1], HAZE[2] - 1, HAZE[3] - 1), fill=variants.CROP_ALPHA_THRESHOLD - 8)
    draw.ellipse(ELLIPSE, fill=255)
    return alpha


def cutout() -> Image.Image:
    image = photo().convert("RGBA")
    image.putalpha(cutout_alpha())
    return image


def encode(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


@pytest.fixture(scope="module")
def png() -> bytes:
    return encode(cutout())


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def subject_box(image: Image.Image) -> tuple[int, int, int, int] | None:
    alpha = image.getchannel("A") if image.mode == "RGBA" else image.convert("L")
    threshold = variants.CROP_ALPHA_THRESHOLD
    return alpha.point([0] * threshold + [255] * (256 - threshold)).getbbox()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def header_only_png(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims `width`x`height` RGBA but whose IDAT holds one empty row: it opens
    (Pillow reads headers only) and fails as soon as anything decodes the pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


# --- the setting ----------------------------------------------------------------------------------


def test_the_empty_setting_is_one_passthrough_cutout() -> None:
    for text in ("", "  \n"):
        assert parse_variants(text) == (Variant(name="cutout"),)
    assert Variant(name="cutout").passthrough


def test_the_documented_example_parses() -> None:
    text = """[{"name": "cutout"},
     {"name": "white", "format": "jpeg", "background": "#FFFFFF", "crop": true, "margin": "5%",
      "canvas": "square", "max_size": 2000, "quality": 88},
     {"name": "mask", "mask": true, "crop": true, "margin": 16}]"""
    cut, white, mask = parse_variants(text)
    assert cut == Variant("cutout") and cut.passthrough
    assert white == Variant(
        "white", "jpeg", "#ffffff", crop=True, margin=Margin(percent=5.0), canvas="square", max_size=2000, quality=88
    )
    assert white.colour == (255, 255, 255) and white.extension == "jpg" and white.content_type == "image/jpeg"
    assert mask == Variant("mask", crop=True, margin=Margin(pixels=16), mask=True)


@pytest.mark.parametrize(
    "changes",
    [
        {"format": "webp"},
        {"background": "#000000"},
        {"crop": True},
        {"canvas": "square"},
        {"max_size": 100},
        {"mask": True},
    ],
)
def test_anything_but_a_plain_transparent_png_is_not_passthrough(changes: dict[str, Any]) -> None:
    assert not Variant("x", **changes).passthrough


ERRORS = [
    ("not json", "{", ["OUTPUT_VARIANTS", "JSON"]),
    ("not an array", '{"name": "a"}', ["OUTPUT_VARIANTS", "array"]),
    ("empty array", "[]", ["OUTPUT_VARIANTS", "no variant"]),
    ("not an object", "[1]", ["OUTPUT_VARIANTS[0]", "object"]),
    ("no name", '[{"format": "png"}]', ["OUTPUT_VARIANTS[0]", "name"]),
    ("bad name", '[{"name": "White"}]', ["OUTPUT_VARIANTS[0]", "name"]),
    ("long name", json.dumps([{"name": "a" * 33}]), ["OUTPUT_VARIANTS[0]", "name"]),
    ("duplicate name", '[{"name": "a"}, {"name": "a"}]', ["OUTPUT_VARIANTS[1]", "name", "earlier"]),
    ("duplicate key", '[{"name": "a", "name": "b"}]', ["OUTPUT_VARIANTS", "'name'", "twice"]),
    ("unknown field", '[{"name": "a", "colour": "#fff"}]', ["OUTPUT_VARIANTS[0]", "'colour'"]),
    ("bad format", '[{"name": "a", "format": "gif"}]', ["OUTPUT_VARIANTS[0] 'a'", "format"]),
    ("bad colour", '[{"name": "a", "background": "red"}]', ["OUTPUT_VARIANTS[0] 'a'", "background"]),
    ("short colour", '[{"name": "a", "background": "#fff"}]', ["OUTPUT_VARIANTS[0] 'a'", "background"]),
    ("jpeg transparent", '[{"name": "a", "format": "jpeg"}]', ["OUTPUT_VARIANTS[0]", "'a'", "background", "jpeg"]),
    ("mask colour", '[{"name": "m", "mask": true, "background": "#ffffff"}]', ["OUTPUT_VARIANTS[0]", "background"]),
    ("crop not bool", '[{"name": "a", "crop": 1}]', ["OUTPUT_VARIANTS[0] 'a'", "crop"]),
    ("mask not bool", '[{"name": "a", "mask": "yes"}]', ["OUTPUT_VARIANTS[0] 'a'", "mask"]),
    ("negative margin", '[{"name": "a", "crop": true, "margin": -1}]', ["OUTPUT_VARIANTS[0] 'a'", "margin"]),
    ("margin no unit", '[{"name": "a", "crop": true, "margin": "5"}]', ["OUTPUT_VARIANTS[0] 'a'", "margin"]),
    ("margin over 100%", '[{"name": "a", "crop": true, "margin": "101%"}]', ["OUTPUT_VARIANTS[0] 'a'", "margin"]),
    ("margin float", '[{"name": "a", "crop": true, "margin": 2.5}]', ["OUTPUT_VARIANTS[0] 'a'", "margin"]),
    ("margin without crop", '[{"name": "a", "margin": 4}]', ["OUTPUT_VARIANTS[0]", "margin", "crop"]),
    ("canvas junk", '[{"name": "a", "canvas": "10x"}]', ["OUTPUT_VARIANTS[0] 'a'", "canvas"]),
    ("canvas zero", '[{"name": "a", "canvas": "0x10"}]', ["OUTPUT_VARIANTS[0] 'a'", "canvas"]),
    ("canvas too big", '[{"name": "a", "canvas": "70000x10"}]', ["OUTPUT_VARIANTS[0]", "canvas"]),
    ("webp canvas", '[{"name": "a", "format": "webp", "canvas": "20000x10"}]', ["OUTPUT_VARIANTS[0]", "canvas"]),
    ("max_size zero", '[{"name": "a", "max_size": 0}]', ["OUTPUT_VARIANTS[0]", "max_size"]),
    ("max_size text", '[{"name": "a", "max_size": "big"}]', ["OUTPUT_VARIANTS[0] 'a'", "max_size"]),
    ("max_size bool", '[{"name": "a", "max_size": true}]', ["OUTPUT_VARIANTS[0] 'a'", "max_size"]),
    ("quality zero", '[{"name": "a", "format": "webp", "quality": 0}]', ["OUTPUT_VARIANTS[0]", "quality"]),
    ("quality 101", '[{"name": "a", "format": "webp", "quality": 101}]', ["OUTPUT_VARIANTS[0]", "quality"]),
    ("quality float", '[{"name": "a", "format": "webp", "quality": 80.5}]', ["OUTPUT_VARIANTS[0] 'a'", "quality"]),
    ("quality on png", '[{"name": "a", "quality": 80}]', ["OUTPUT_VARIANTS[0] 'a'", "quality", "png"]),
    ("too many", json.dumps([{"name": f"v{i}"} for i in range(9)]), ["OUTPUT_VARIANTS", "at most 8"]),
    ("deep nesting", "[" * 5000, ["OUTPUT_VARIANTS", "JSON"]),
    ("huge integer", '[{"name": "a", "max_size": ' + "9" * 5000 + "}]", ["OUTPUT_VARIANTS"]),
]


@pytest.mark.parametrize(("case", "text", "parts"), ERRORS, ids=[case for case, _, _ in ERRORS])
def test_parse_errors_name_the_setting_the_variant_and_the_field(case: str, text: str, parts: list[str]) -> None:
    with pytest.raises(VariantError) as caught:
        parse_variants(text)
    for part in parts:
        assert part in str(caught.value), (case, str(caught.value))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
FIELD_VALUES = st.one_of(
    JSON,
    st.sampled_from(["png", "webp", "jpeg", "transparent", "#ffffff", "#12AB9f", "square", "100x50", "5%", "0.5%"]),
    st.integers(min_value=-2, max_value=70_000),
)
NEAR_VALID = st.lists(
    st.dictionaries(st.sampled_from(variants.FIELDS), FIELD_VALUES, max_size=9).map(
        lambda item: {"name": "v", **item} if "name" not in item else item
    ),
    min_size=1,
    max_size=3,
)


@given(st.one_of(JSON, NEAR_VALID))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_parse_variants_raises_nothing_but_variant_error_on_random_json(value: object) -> None:
    try:
        result = parse_variants(json.dumps(value))
    except VariantError as exc:
        assert "OUTPUT_VARIANTS" in str(exc)
    else:
        assert result and all(isinstance(variant, Variant) for variant in result)


@given(st.text(max_size=40))
@settings(max_examples=200, deadline=None)
def test_parse_variants_raises_nothing_but_variant_error_on_random_text(text: str) -> None:
    with contextlib.suppress(VariantError):
        parse_variants(text)


# --- overrides ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["red", "#fff", "#gggggg", "ffffff", "transparent-ish"])
def test_a_bad_background_override_names_the_key(value: str) -> None:
    with pytest.raises(VariantError, match="bgremove-background"):
        overrides_from_metadata({"bgremove-background": value})


def test_background_override_applies_to_every_variant_but_masks() -> None:
    configured = parse_variants(
        '[{"name": "cutout"}, {"name": "w", "format": "webp"},'
        ' {"name": "j", "format": "jpeg", "background": "#000000"}, {"name": "m", "mask": true}]'
    )
    overrides = overrides_from_metadata({"Bgremove-Background": " #FF8800 ", "other": "x"})
    assert overrides == Overrides(background="#ff8800")
    cut, webp, jpeg, mask = select(configured, overrides)
    assert not cut.passthrough and cut.colour == (255, 136, 0)
    assert webp.background == jpeg.background == "#ff8800"
    assert mask == configured[3]


def test_transparent_override_on_a_jpeg_variant_names_the_key() -> None:
    jpeg = Variant("j", "jpeg", "#ffffff")
    with pytest.raises(VariantError, match="bgremove-background"):
        apply(jpeg, overrides_from_metadata({"bgremove-background": "transparent"}))
    transparent = Overrides(background="transparent")
    assert apply(Variant("cutout"), transparent) == Variant("cutout")  # already transparent: still passthrough
    assert apply(Variant("p", background="#000000"), transparent).passthrough


def test_variants_override_selects_a_subset_in_configured_order() -> None:
    configured = parse_variants('[{"name": "a"}, {"name": "b", "format": "webp"}, {"name": "c", "format": "webp"}]')
    chosen = select(configured, overrides_from_metadata({"bgremove-variants": "c, a,,c"}))
    assert [variant.name for variant in chosen] == ["a", "c"]
    assert select(configured, overrides_from_metadata({})) == configured
    assert overrides_from_metadata({"bgremove-variants": "", "bgremove-background": ""}) == Overrides()
    with pytest.raises(VariantError, match="bgremove-variants"):
        select(configured, overrides_from_metadata({"bgremove-variants": "a,zz"}))
    for bad in ("A", "a b", ",", "x" * 33):
        with pytest.raises(VariantError, match="bgremove-variants"):
            overrides_from_metadata({"bgremove-variants": bad})


# --- names ----------------------------------------------------------------------------------------


def test_object_names() -> None:
    white = Variant("white", "jpeg", "#ffffff")
    assert variant_object_name("shop/shoe.png", Variant("cutout"), is_default=True) == "shop/shoe.png"
    assert variant_object_name("shop/shoe.png", Variant("cutout", crop=True), is_default=True) == "shop/shoe.png"
    assert variant_object_name("shop/shoe.png", white, is_default=False) == "shop/shoe.white.jpg"
    assert variant_object_name("shop/shoe.png", white, is_default=True) == "shop/shoe.white.jpg"
    assert variant_object_name("shoe.png", Variant("small"), is_default=False) == "shoe.small.png"
    assert variant_object_name("a/b.c/x.tar.png", Variant("w", "webp"), is_default=False) == "a/b.c/x.tar.w.webp"


def test_long_object_names_keep_the_suffix_and_stay_distinct() -> None:
    suffix = ".white-background-32-characters.jpg"
    white = Variant("white-background-32-characters", "jpeg", "#ffffff")
    names = set()
    for tail in ("1", "2"):
        base = "prefix/d/" + "é" * 480 + tail + ".png"  # 1,000 bytes: fits today, not with the suffix
        assert len(base.encode()) <= MAX_OBJECT_NAME_BYTES
        name = variant_object_name(base, white, is_default=False)
        assert len(name.encode()) <= MAX_OBJECT_NAME_BYTES and name.endswith(suffix)
        assert name.startswith("prefix/d/éé")
        names.add(name)
    assert len(names) == 2
    # A directory that fills the budget: the digest still lands inside it, with the suffix.
    deep = "p/" + "d" * 1000 + "/a.png"
    name = variant_object_name(deep, white, is_default=False)
    assert len(name.encode()) <= MAX_OBJECT_NAME_BYTES and name.endswith(suffix) and name.startswith("p/ddd")


# --- rendering, by pixels -------------------------------------------------------------------------


def test_passthrough_returns_the_models_bytes(png: bytes) -> None:
    rendered = render(png, Variant("cutout"), MAX_PIXELS)
    assert rendered.data is png
    assert (rendered.content_type, rendered.extension, rendered.width, rendered.height) == (
        "image/png",
        "png",
        451,
        300,
    )


def test_colour_background_is_composited(png: bytes) -> None:
    source = cutout()
    for fmt, tolerance in (("png", 0), ("jpeg", 3), ("webp", 4)):
        rendered = render(png, Variant("c", fmt, "#2060a0"), MAX_PIXELS)
        image = decode(rendered.data)
        assert image.mode == "RGB", fmt  # no alpha left, for any format
        assert image.size == (451, 300) == (rendered.width, rendered.height)
        corner = pixels(image)[-1, -1]  # alpha 0 there: exactly the colour
        assert np.abs(corner - (0x20, 0x60, 0xA0)).max() <= tolerance, (fmt, corner)
        centre = pixels(image)[150, 220]  # alpha 255 there: exactly the photo
        assert np.abs(centre - pixels(source)[150, 220, :3]).max() <= tolerance * 3, fmt
    # Half alpha: halfway between photo and colour (alpha compositing, not a threshold).
    half = source.copy()
    half.putalpha(128)
    image = decode(render(encode(half), Variant("c", background="#000000"), MAX_PIXELS).data)
    expected = (pixels(source)[..., :3] * 128 + 127) // 255
    assert np.abs(pixels(image) - expected).max() <= 1


@pytest.mark.parametrize(("margin", "pixels_"), [(Margin(), 0), (Margin(pixels=12), 12), (Margin(percent=5), 10)])
def test_crop_is_the_subject_box_plus_the_margin(png: bytes, margin: Margin, pixels_: int) -> None:
    width, height = SUBJECT[2] - SUBJECT[0], SUBJECT[3] - SUBJECT[1]  # 201x181: 5% of 201 is 10.05
    assert margin.resolve(width, height) == pixels_
    rendered = render(png, Variant("c", crop=True, margin=margin), MAX_PIXELS)
    image = decode(rendered.data)
    assert image.size == (width + 2 * pixels_, height + 2 * pixels_) == (rendered.width, rendered.height)
    assert subject_box(image) == (pixels_, pixels_, pixels_ + width, pixels_ + height)  # the haze is left out
    inside = np.asarray(image)[pixels_ : pixels_ + height, pixels_ : pixels_ + width]
    assert np.array_equal(inside, np.asarray(cutout().crop(SUBJECT)))


def test_a_margin_past_the_edge_is_padded_with_the_background(png: bytes) -> None:
    image = decode(render(png, Variant("c", "jpeg", "#ffffff", crop=True, margin=Margin(pixels=200)), MAX_PIXELS).data)
    assert image.size == (201 + 400, 181 + 400)
    assert np.abs(pixels(image)[:5, :5] - 255).max() <= 2  # beyond the photo's top-left corner


def test_an_image_without_subject_is_not_cropped() -> None:
    empty = photo().convert("RGBA")
    empty.putalpha(0)
    for variant in (Variant("c", crop=True, margin=Margin(pixels=30)), Variant("m", crop=True, mask=True)):
        rendered = render(encode(empty), variant, MAX_PIXELS)
        assert (rendered.width, rendered.height) == (451, 300)


@pytest.mark.parametrize(
    ("canvas", "crop", "expected"),
    [
        ("square", True, (201, 201)),
        ("square", False, (451, 451)),
        ("1000x800", True, (1000, 800)),
        ("120x90", True, (120, 90)),
    ],
)
def test_canvas_is_exact_and_the_subject_centred(
    png: bytes, canvas: str, crop: bool, expected: tuple[int, int]
) -> None:
    image = decode(render(png, Variant("c", crop=crop, canvas=canvas), MAX_PIXELS).data)
    assert image.size == expected
    if crop:
        box = subject_box(image)
        assert box is not None
        assert abs((box[0] + box[2]) / 2 - expected[0] / 2) <= 1
        assert abs((box[1] + box[3]) / 2 - expected[1] / 2) <= 1
        if expected[0] < 201:  # larger than the canvas: scaled down to fit, aspect kept
            assert abs(box[3] - box[1] - 90) <= 1 and abs((box[2] - box[0]) - 201 * 90 / 181) <= 1
    else:  # the whole image centred: transparent bands above and below
        alpha = np.asarray(image.getchannel("A"))
        assert alpha[:75].max() == 0 and alpha[-76:].max() == 0 and alpha[75:].max() == 255


def test_canvas_padding_takes_the_background(png: bytes) -> None:
    image = decode(render(png, Variant("c", "jpeg", "#00ff00", crop=True, canvas="400x400"), MAX_PIXELS).data)
    assert image.mode == "RGB" and image.size == (400, 400)
    assert np.abs(pixels(image)[0, 0] - (0, 255, 0)).max() <= 3


@pytest.mark.parametrize("max_size", [1, 100, 300, 450, 451, 1000])
def test_max_size_scales_the_longer_side_down_only(png: bytes, max_size: int) -> None:
    rendered = render(png, Variant("s", max_size=max_size), MAX_PIXELS)
    image = decode(rendered.data)
    if max_size >= 451:
        assert image.size == (451, 300)
    else:
        assert image.width == max_size and abs(image.height - 300 * max_size / 451) <= 1


def test_max_size_then_canvas_square(png: bytes) -> None:
    image = decode(render(png, Variant("s", crop=True, max_size=100, canvas="square"), MAX_PIXELS).data)
    assert image.size == (100, 100)


def test_mask_is_the_alpha(png: bytes) -> None:
    alpha = np.asarray(cutout_alpha())
    image = decode(render(png, Variant("m", mask=True), MAX_PIXELS).data)
    assert image.mode == "L" and np.array_equal(np.asarray(image), alpha)
    cropped = decode(render(png, Variant("m", crop=True, mask=True), MAX_PIXELS).data)
    assert np.array_equal(np.asarray(cropped), alpha[SUBJECT[1] : SUBJECT[3], SUBJECT[0] : SUBJECT[2]])
    jpeg = decode(render(png, Variant("m", "jpeg", mask=True), MAX_PIXELS).data)
    assert jpeg.mode == "L" and np.abs(pixels(jpeg) - alpha).mean() < 2
    webp = decode(render(png, Variant("m", "webp", mask=True), MAX_PIXELS).data)  # WebP has no greyscale
    assert np.abs(pixels(webp.convert("L")) - alpha).mean() < 2


def test_webp_and_jpeg_encode_and_decode(png: bytes) -> None:
    webp = render(png, Variant("w", "webp", quality=80), MAX_PIXELS)
    image = decode(webp.data)
    assert (webp.content_type, webp.extension, image.format, image.mode) == ("image/webp", "webp", "WEBP", "RGBA")
    assert np.abs(pixels(image.getchannel("A")) - np.asarray(cutout_alpha())).mean() < 2
    jpeg = render(png, Variant("j", "jpeg", "#ffffff", quality=70), MAX_PIXELS)
    image = decode(jpeg.data)
    assert (jpeg.content_type, jpeg.extension, image.format, image.mode) == ("image/jpeg", "jpg", "JPEG", "RGB")


def test_a_real_model_cutout_crops_to_the_subject_not_the_haze() -> None:
    pytest.importorskip("onnxruntime")
    from offline_cloud.predictions_service.model import BackgroundRemover

    model_png = BackgroundRemover().remove_background(Image.fromarray(sample("rocket")))
    alpha = decode(model_png).getchannel("A")
    loose = alpha.getbbox()  # any alpha above 0: the haze reaches far beyond the rocket
    assert loose is not None
    rendered = render(model_png, Variant("c", crop=True), MAX_PIXELS)
    assert rendered.width < (loose[2] - loose[0]) * 0.5
    assert subject_box(decode(rendered.data)) == (0, 0, rendered.width, rendered.height)


def test_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    # 8000x8000 is under Pillow's own bomb limit: max_pixels refuses it, before decoding (there are
    # no pixels to decode), even with Pillow's global limit switched off.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    for variant in (Variant("c", crop=True), Variant("cutout")):
        with pytest.raises(UnsupportedImage, match="64000000 pixels, over 40000000"):
            render(header_only_png(8000, 8000), variant, MAX_PIXELS)
    with pytest.raises(UnsupportedImage, match="pixels, over"):
        render(header_only_png(100_000, 100_000), Variant("cutout"), MAX_PIXELS)
    monkeypatch.undo()
    with pytest.raises(UnsupportedImage, match="pixels"):  # Pillow's bomb check, now first
        render(header_only_png(100_000, 100_000), Variant("cutout"), 10**12)
    with pytest.raises(UnsupportedImage, match="cannot"):
        render(header_only_png(100, 100), Variant("c", crop=True), MAX_PIXELS)  # no pixel data
    with pytest.raises(UnsupportedImage, match="not a PNG"):
        render(encode(photo(), "JPEG"), Variant("cutout"), MAX_PIXELS)
    with pytest.raises(UnsupportedImage, match="would be"):
        render(encode(cutout()), Variant("c", canvas="9000x9000"), 1_000_000)
    with pytest.raises(UnsupportedImage, match="WebP"):
        render(encode(Image.new("RGBA", (17000, 10))), Variant("w", "webp"), MAX_PIXELS)


SIZES = st.tuples(st.integers(1, 3000), st.integers(1, 3000))
VARIANTS = st.builds(
    Variant,
    name=st.just("v"),
    crop=st.just(True),
    margin=st.one_of(st.builds(Margin, pixels=st.integers(0, 500)), st.builds(Margin, percent=st.floats(0, 100))),
    canvas=st.sampled_from([None, "square", "1x1", "640x480", "100x3000"]),
    max_size=st.one_of(st.none(), st.integers(1, 4000)),
)


@given(SIZES, st.data(), VARIANTS)
@settings(max_examples=300, deadline=None)
def test_plan_geometry_holds_for_any_size(size: tuple[int, int], draw: st.DataObject, variant: Variant) -> None:
    width, height = size
    left, right = sorted(draw.draw(st.tuples(st.integers(0, width), st.integers(0, width))))
    top, bottom = sorted(draw.draw(st.tuples(st.integers(0, height), st.integers(0, height))))
    subject = (left, top, right + 1, bottom + 1) if right < width and bottom < height else None
    layout = plan(width, height, subject, variant)
    x0, y0, x1, y1 = layout.source
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert layout.offset[0] >= 0 and layout.offset[1] >= 0
    assert layout.offset[0] + layout.size[0] <= layout.canvas[0] + 1
    assert layout.offset[1] + layout.size[1] <= layout.canvas[1] + 1
    if variant.max_size is not None and variant.canvas in (None, "square"):
        assert max(layout.canvas) <= variant.max_size
    if variant.canvas not in (None, "square"):
        assert f"{layout.canvas[0]}x{layout.canvas[1]}" == variant.canvas


def test_modules_import_no_pillow_at_module_level() -> None:
    for module in ("bgremove/variants.py", "bgremove/upright.py"):
        tree = ast.parse((REPO / module).read_text())
        imported = {
            alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names
        } | {(node.module or "").split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom)}
        assert not imported & {"PIL", "pillow_heif", "numpy"}, (module, imported)


# --- 25 megapixels: time and peak memory, printed -------------------------------------------------


class PeakRss:
    """Samples this process's RSS every millisecond from a thread: the peak above the start."""

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self._rss()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._done.wait(0.001):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.start) / 1e6


def measure(call: Callable[[], object]) -> tuple[float, float]:
    """Seconds and peak RSS growth in MB of one call."""
    # Hand memory freed by the fixtures back to the system first: reusing it would not show in RSS.
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with PeakRss() as rss:
        started = time.perf_counter()
        call()
        seconds = time.perf_counter() - started
    return seconds, rss.delta_mb


def large_cases(all_cases: list[Any], default: list[Any]) -> Iterator[Any]:
    # Measurements, not assertions, and seconds each: the unit tier must stay fast, so they run
    # only when asked (the figures live in bench/RESULTS.md, figure 6).
    if not os.environ.get("BGREMOVE_LARGE"):
        return
    yield from all_cases


LARGE_VARIANTS = {
    "passthrough": Variant("cutout"),
    "png-crop-margin": Variant("c", crop=True, margin=Margin(percent=5)),
    "jpeg-colour": Variant("j", "jpeg", "#ffffff"),
    "jpeg-colour-crop-square": Variant("j", "jpeg", "#ffffff", crop=True, margin=Margin(pixels=50), canvas="square"),
    "webp": Variant("w", "webp"),
    "canvas-5400x5400": Variant("c", canvas="5400x5400"),
    "max-size-1024": Variant("s", max_size=1024),
    "jpeg-crop-max-size-2000": Variant("j", "jpeg", "#ffffff", crop=True, max_size=2000),
    "mask-png": Variant("m", mask=True),
    "mask-crop-jpeg": Variant("m", "jpeg", crop=True, mask=True),
}


@pytest.fixture(scope="module")
def large_png() -> bytes:
    image = Image.fromarray(sample("astronaut")).resize((5000, 5000), Image.Resampling.BICUBIC).convert("RGBA")
    alpha = Image.new("L", image.size, 0)
    ImageDraw.Draw(alpha).ellipse((400, 300, 4700, 4800), fill=255)
    image.putalpha(alpha)
    return encode(image, compress_level=1)  # fast to make; compression does not change the render


@pytest.mark.parametrize(
    "kind",
    list(large_cases(list(LARGE_VARIANTS), ["jpeg-colour-crop-square"]))
    or [pytest.param("none", marks=pytest.mark.skip(reason="25-megapixel measurements run with BGREMOVE_LARGE=1"))],
)
def test_25_megapixel_render(large_png: bytes, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    variant = LARGE_VARIANTS[kind]
    holder: list[variants.Rendered] = []
    seconds, delta = measure(lambda: holder.append(render(large_png, variant, 30_000_000)))
    rendered = holder[0]
    estimate = variants.peak_bytes_estimate(5000, 5000, variant) / 1e6
    with capsys.disabled():
        print(
            f"\n25 MP render {kind:26} {seconds:5.2f} s  peak RSS +{delta:6.0f} MB  (estimate {estimate:4.0f} MB)"
            f"  -> {rendered.width}x{rendered.height} {len(rendered.data) / 1e6:.1f} MB"
        )
    assert rendered.width > 0
