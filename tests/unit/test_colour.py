"""Colour through the pipeline: an upload's ICC profile from its head to the rendered variants.

The model reads raw pixel values and writes a PNG without the upload's profile (the offline u2netp
model does exactly that: `image.convert("RGB")`, saved without `icc_profile`). The cut-out of a
wide-gamut photo therefore holds that space's values untagged, and viewers read them as sRGB. These
tests make such photos with RGB profiles built here (Display P3 and Adobe RGB (1998): matrix and
curves, as the real profiles are; no profile file ships with anything installed, and nothing is
downloaded), and compare colours in CIE Lab, each image converted through its own profile (an
untagged one through sRGB, as browsers do) with ImageCms.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from typing import Any

import numpy as np
import pillow_heif
import pytest
from PIL import Image, ImageCms, features

from bgremove import images, upright
from bgremove.variants import Variant, render
from tests.photos import sample
from tests.unit.test_upright import decode, encode

pillow_heif.register_heif_opener()

MAX_PIXELS = 40_000_000
D50 = np.array([0.9642, 1.0, 0.8249])
D65 = np.array([0.95047, 1.0, 1.08883])
BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
SRGB_CURVE = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)  # ICC parametric curve, type 3
# (x, y) chromaticities of red, green and blue; white D65 for all three.
SRGB_PRIMARIES = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
P3_PRIMARIES = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
ADOBE_PRIMARIES = ((0.64, 0.33), (0.21, 0.71), (0.15, 0.06))
ADOBE_GAMMA = 563 / 256

# Patch colours, as stored in the wide-gamut photo: skin, foliage, sky, a red shoe, greys, pastels.
# All inside sRGB once converted, so a correct conversion can match them.
SWATCHES = [
    (224, 172, 140), (190, 130, 100), (120, 80, 60), (80, 120, 60), (110, 160, 90), (150, 190, 120),
    (90, 140, 200), (60, 90, 150), (150, 180, 220), (200, 50, 50), (180, 70, 60), (220, 120, 110),
    (230, 200, 80), (200, 160, 60), (120, 60, 140), (170, 120, 190), (100, 160, 160), (130, 190, 180),
    (30, 30, 30), (90, 90, 90), (160, 160, 160), (230, 230, 230), (200, 210, 170), (240, 210, 200),
]  # fmt: skip
PATCH = 40
GRID = (6, 4)
BORDER = 30  # transparent in the cut-out: background in a variant


# --- profiles ------------------------------------------------------------------------------------


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(values: np.ndarray) -> bytes:
    return b"XYZ " + bytes(4) + b"".join(_s15(v) for v in values)


def _mluc(text: str) -> bytes:
    encoded = text.encode("utf-16-be")
    return b"mluc" + bytes(4) + struct.pack(">II2s2sII", 1, 12, b"en", b"US", len(encoded), 28) + encoded


def _colorants(primaries: tuple[tuple[float, float], ...]) -> np.ndarray:
    """RGB -> XYZ (D50) for these primaries under D65, adapted with Bradford, as ICC profiles keep it."""
    xyz = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in primaries]).T
    matrix = xyz * np.linalg.solve(xyz, D65)
    adapt = np.linalg.inv(BRADFORD) @ np.diag((BRADFORD @ D50) / (BRADFORD @ D65)) @ BRADFORD
    result: np.ndarray = adapt @ matrix
    return result


def rgb_profile(
    description: str, primaries: tuple[tuple[float, float], ...], curve: float | tuple[float, ...]
) -> bytes:
    """An ICC v4 display profile, matrix and curves: `curve` is a gamma or parametric type-3 values."""
    if isinstance(curve, tuple):
        trc = b"para" + bytes(4) + struct.pack(">HH", 3, 0) + b"".join(_s15(v) for v in curve)
    else:
        trc = b"curv" + bytes(4) + struct.pack(">IH", 1, round(curve * 256)) + bytes(2)
    colorants = _colorants(primaries)
    tags = [
        (b"desc", _mluc(description)),
        (b"cprt", _mluc("No copyright, test data")),
        (b"wtpt", _xyz(D50)),
        (b"rXYZ", _xyz(colorants[:, 0])),
        (b"gXYZ", _xyz(colorants[:, 1])),
        (b"bXYZ", _xyz(colorants[:, 2])),
        (b"rTRC", trc),
        (b"gTRC", trc),
        (b"bTRC", trc),
    ]
    table, body = b"", b""
    offset = 128 + 4 + 12 * len(tags)
    for signature, payload in tags:
        payload += bytes(-len(payload) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(payload))
        body += payload
    size = offset + len(body)
    header = struct.pack(">I4sI4s4s4s", size, b"lcms", 0x04300000, b"mntr", b"RGB ", b"XYZ ")
    header += bytes(12) + b"acsp" + bytes(24) + struct.pack(">I", 0) + b"".join(_s15(v) for v in D50)
    header += bytes(128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + body


@functools.cache
def display_p3() -> bytes:
    return rgb_profile("Display P3 (test)", P3_PRIMARIES, SRGB_CURVE)


@functools.cache
def adobe_rgb() -> bytes:
    return rgb_profile("Adobe RGB (1998) (test)", ADOBE_PRIMARIES, ADOBE_GAMMA)


def cms(profile: bytes | None) -> ImageCms.ImageCmsProfile:
    if profile is None:
        return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))  # untagged is sRGB
    return ImageCms.ImageCmsProfile(io.BytesIO(profile))


def lab(image: Image.Image, profile: bytes | None) -> np.ndarray:
    """CIE Lab (D50) of an RGB image whose values are in `profile`'s space, as floats."""
    transform = ImageCms.buildTransform(
        cms(profile), ImageCms.createProfile("LAB"), "RGB", "LAB", ImageCms.Intent.RELATIVE_COLORIMETRIC
    )
    raw = np.asarray(ImageCms.applyTransform(image.convert("RGB"), transform))
    # Pillow's LAB mode keeps L as 0..255 for 0..100, and a and b as signed bytes.
    ab = raw[..., 1:].view(np.int8).astype(np.float64)
    return np.concatenate([raw[..., :1] * 100 / 255, ab], axis=-1)


def delta_e(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CIE76 colour difference."""
    result: np.ndarray = np.sqrt(((a - b) ** 2).sum(axis=-1))
    return result


# --- images --------------------------------------------------------------------------------------


def chart() -> Image.Image:
    """The swatches in a grid, framed by a border (transparent in the cut-out)."""
    columns, rows = GRID
    image = Image.new("RGB", (columns * PATCH + 2 * BORDER, rows * PATCH + 2 * BORDER), (128, 128, 128))
    for index, colour in enumerate(SWATCHES):
        x, y = BORDER + (index % columns) * PATCH, BORDER + (index // columns) * PATCH
        image.paste(colour, (x, y, x + PATCH, y + PATCH))
    return image


def patch_means(lab_image: np.ndarray, origin: tuple[int, int] = (BORDER, BORDER), side: int = PATCH) -> np.ndarray:
    """The mean Lab of the middle of each patch (its inner half: JPEG's blocks blur the edges)."""
    columns, _ = GRID
    quarter = side // 4
    means = []
    for index in range(len(SWATCHES)):
        x = origin[0] + (index % columns) * side
        y = origin[1] + (index // columns) * side
        means.append(lab_image[y + quarter : y + side - quarter, x + quarter : x + side - quarter].mean(axis=(0, 1)))
    return np.array(means)


def cutout_of(image: Image.Image, subject: tuple[int, int, int, int] | None = None) -> bytes:
    """The model's output for `image`: the same values, an alpha, no profile (as a model gives)."""
    left, top, right, bottom = subject or (BORDER, BORDER, image.width - BORDER, image.height - BORDER)
    alpha = Image.new("L", image.size, 0)
    alpha.paste(255, (left, top, right, bottom))
    rgba = image.convert("RGBA")
    rgba.putalpha(alpha)
    return encode(rgba, "PNG")


WHITE_JPEG = Variant("white", format="jpeg", background="#ffffff", quality=90)


# --- the profiles built here are what they say -----------------------------------------------------


def test_the_test_profiles_are_rgb_profiles_littlecms_reads() -> None:
    for profile, name in ((display_p3(), "Display P3 (test)"), (adobe_rgb(), "Adobe RGB (1998) (test)")):
        parsed = cms(profile)
        assert parsed.profile.xcolor_space == "RGB " and parsed.profile.profile_description == name
    # Built the same way, sRGB's primaries and curve give LittleCMS's own sRGB: the builder is right.
    ours = rgb_profile("sRGB (test)", SRGB_PRIMARIES, SRGB_CURVE)
    assert delta_e(patch_means(lab(chart(), ours)), patch_means(lab(chart(), None))).max() < 0.6


# --- the white JPEG of a wide-gamut photo ----------------------------------------------------------


@pytest.mark.parametrize("profile", [display_p3, adobe_rgb], ids=["display-p3", "adobe-rgb"])
def test_a_white_jpeg_of_a_wide_gamut_photo_keeps_its_colours(profile: Any, capsys: pytest.CaptureFixture[str]) -> None:
    icc = profile()
    source = chart()
    expected = patch_means(lab(source, icc))  # what the upload shows, through its profile
    png = cutout_of(source)

    before = render(png, WHITE_JPEG, MAX_PIXELS)  # today: no profile, the values read as sRGB
    assert "icc_profile" not in decode(before.data).info
    before_e = delta_e(patch_means(lab(decode(before.data), None)), expected)

    after = render(png, WHITE_JPEG, MAX_PIXELS, icc_profile=icc)
    out = decode(after.data)
    tagged = out.info.get("icc_profile")
    assert cms(tagged).profile.profile_description == "sRGB built-in"
    after_e = delta_e(patch_means(lab(out, tagged)), expected)
    # An untagged reader (a shop that strips profiles) sees the same: the values are sRGB.
    stripped_e = delta_e(patch_means(lab(out, None)), expected)

    with capsys.disabled():
        print(
            f"\n{profile.__name__}: dE76 of {len(SWATCHES)} patches, before max {before_e.max():.1f} "
            f"mean {before_e.mean():.1f}; after max {after_e.max():.2f} mean {after_e.mean():.2f} "
            f"(profile stripped: max {stripped_e.max():.2f})"
        )
    assert after_e.max() <= 3.0 and stripped_e.max() <= 3.0
    assert before_e.max() > 10.0  # the bug: without the profile the colours are visibly off
    # The background is the sRGB colour asked for, not a wide-gamut white.
    corner = np.asarray(out.convert("RGB"))[: BORDER // 2, : BORDER // 2].reshape(-1, 3)
    assert corner.min() >= 253


def test_a_real_photo_and_every_rendered_format(capsys: pytest.CaptureFixture[str]) -> None:
    icc = display_p3()
    source = Image.fromarray(sample("chelsea"))  # 451x300
    subject = (60, 40, 391, 260)
    expected = lab(source, icc)[subject[1] : subject[3], subject[0] : subject[2]]
    png = cutout_of(source, subject)
    lines = []
    for variant in (
        WHITE_JPEG,
        Variant("png", background="#ffffff"),
        Variant("webp", format="webp", background="#ffffff", quality=100),
        Variant("clear", format="png", max_size=451),  # transparent, rendered (not pass-through)
    ):
        out = decode(render(png, variant, MAX_PIXELS, icc_profile=icc).data)
        tagged = out.info.get("icc_profile")
        assert tagged is not None and cms(tagged).profile.profile_description == "sRGB built-in"
        if out.mode == "RGBA":
            assert np.array_equal(np.asarray(out.getchannel("A")), np.asarray(decode(png).getchannel("A")))
        inside = (slice(subject[1], subject[3]), slice(subject[0], subject[2]))
        got = lab(out, tagged)[inside]
        before = lab(decode(render(png, variant, MAX_PIXELS).data), None)[inside]
        # Per pixel (JPEG and lossy WebP add their own noise), and of the mean colour (a cast).
        after_e, before_e = delta_e(got, expected).mean(), delta_e(before, expected).mean()
        cast, before_cast = (delta_e(x.mean(axis=(0, 1)), expected.mean(axis=(0, 1))) for x in (got, before))
        lines.append(f"{variant.name} {before_e:.2f} -> {after_e:.2f} (cast {before_cast:.2f} -> {cast:.2f})")
        assert after_e <= 3.0 and after_e < before_e / 2 and cast <= 1.0
    with capsys.disabled():
        print("\nchelsea in Display P3, mean dE76 per pixel: " + "; ".join(lines))


def test_crop_canvas_and_scaling_convert_the_pixels_they_keep() -> None:
    icc = adobe_rgb()
    source = chart()
    png = cutout_of(source)
    variant = Variant("shop", format="jpeg", background="#ffffff", crop=True, canvas="square", quality=95)
    out = decode(render(png, variant, MAX_PIXELS, icc_profile=icc).data)
    columns, rows = GRID
    assert out.size == (columns * PATCH,) * 2
    top = (columns - rows) * PATCH // 2  # the subject is centred on the square
    got = patch_means(lab(out, out.info["icc_profile"]), origin=(0, top))
    assert delta_e(got, patch_means(lab(source, icc))).max() <= 3.0
    half = Variant("half", format="jpeg", background="#ffffff", max_size=(columns * PATCH + 2 * BORDER) // 2)
    small = decode(render(png, half, MAX_PIXELS, icc_profile=icc).data)
    got = patch_means(lab(small, small.info["icc_profile"]), origin=(BORDER // 2, BORDER // 2), side=PATCH // 2)
    assert delta_e(got, patch_means(lab(source, icc))).max() <= 3.0


def test_a_profile_in_the_models_png_describes_its_own_pixels() -> None:
    # A model that converted to sRGB and said so: its values are sRGB, whatever the upload's profile.
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgba = decode(cutout_of(chart()))
    png = encode(rgba, "PNG", icc_profile=srgb)
    out = decode(render(png, WHITE_JPEG, MAX_PIXELS, icc_profile=adobe_rgb()).data)
    expected = patch_means(lab(chart(), None))
    assert delta_e(patch_means(lab(out, out.info["icc_profile"])), expected).max() <= 3.0


def test_without_a_profile_nothing_changes() -> None:
    png = cutout_of(chart())
    for variant in (WHITE_JPEG, Variant("png", background="#336699"), Variant("mask", mask=True)):
        assert render(png, variant, MAX_PIXELS).data == render(png, variant, MAX_PIXELS, icc_profile=None).data
    # The model's own profile is still embedded as it is when no upload profile is given.
    tagged = encode(decode(png), "PNG", icc_profile=display_p3())
    assert decode(render(tagged, WHITE_JPEG, MAX_PIXELS).data).info.get("icc_profile") == display_p3()


def test_masks_and_passthrough_are_untouched_by_a_profile() -> None:
    png = cutout_of(chart())
    mask = Variant("mask", mask=True)
    assert render(png, mask, MAX_PIXELS, icc_profile=display_p3()).data == render(png, mask, MAX_PIXELS).data
    assert "icc_profile" not in decode(render(png, mask, MAX_PIXELS, icc_profile=display_p3()).data).info
    assert render(png, Variant("cutout"), MAX_PIXELS, icc_profile=display_p3()).data is png


@pytest.mark.parametrize(
    "profile",
    [
        b"not a profile" * 20,
        ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes(),
        display_p3()[:200],
    ],
    ids=["garbage", "lab", "truncated"],
)
def test_an_unusable_profile_renders_as_without_one(profile: bytes) -> None:
    png = cutout_of(chart())
    assert render(png, WHITE_JPEG, MAX_PIXELS, icc_profile=profile).data == render(png, WHITE_JPEG, MAX_PIXELS).data


# --- upright keeps the profile --------------------------------------------------------------------


def _turned_exif() -> bytes:
    tags = Image.Exif()
    tags[upright.ORIENTATION_TAG] = 3
    return tags.tobytes()


def _has_avif() -> bool:
    return bool(features.check("avif"))


@pytest.mark.parametrize(
    ("fmt", "content_type", "options"),
    [
        ("JPEG", "image/jpeg", {"quality": 95, "exif": _turned_exif()}),
        ("PNG", "image/png", {"exif": _turned_exif()}),
        ("WEBP", "image/webp", {"quality": 95, "exif": _turned_exif()}),
        ("WEBP", "image/webp", {"lossless": True, "exif": _turned_exif()}),
        ("HEIF", "image/heic", {"quality": 95}),
        pytest.param(
            "AVIF", "image/avif", {"quality": 95}, marks=pytest.mark.skipif(not _has_avif(), reason="no AVIF")
        ),
    ],
)
def test_a_prepared_copy_keeps_the_uploads_profile_and_values(fmt: str, content_type: str, options: Any) -> None:
    icc = display_p3()
    source = chart()
    data = encode(source, fmt, icc_profile=icc, **options)
    assert images.icc_profile(data[: images.HEAD_BYTES]) == icc  # what the completion side reads
    prepared = upright.prepare(data, content_type, MAX_PIXELS)
    assert prepared is not None
    out = decode(prepared.data)
    # Kept, not converted: the model reads raw values either way, and the completion side converts
    # from the upload's profile, so the prepared copy's values must stay in the upload's space.
    assert out.info.get("icc_profile") == icc
    assert images.icc_profile(prepared.data[: images.HEAD_BYTES]) == icc
    if "exif" in options:
        out = out.rotate(180)
    assert delta_e(patch_means(lab(out, icc)), patch_means(lab(source, icc))).max() <= 3.0


# --- images.icc_profile, container by container ---------------------------------------------------


def small(fmt: str, profile: bytes, **options: Any) -> bytes:
    return encode(chart().resize((64, 48)), fmt, icc_profile=profile, **options)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "HEIF", "AVIF"])
def test_icc_profile_reads_each_container_like_pillow(fmt: str) -> None:
    if fmt == "AVIF" and not _has_avif():
        pytest.skip("no AVIF")
    for profile in (display_p3(), adobe_rgb()):
        data = small(fmt, profile)
        assert images.icc_profile(data) == profile == decode(data).info.get("icc_profile")
        assert images.icc_profile(data[: images.HEAD_BYTES]) == profile
    assert images.icc_profile(encode(chart().resize((64, 48)), fmt)) is None


def test_a_jpeg_profile_in_several_segments_is_joined_in_sequence_order() -> None:
    big = display_p3() + bytes(150_000)  # Pillow splits it into three APP2 segments of 65519 bytes
    data = small("JPEG", big)
    assert images.icc_profile(data) == big == decode(data).info["icc_profile"]
    segments = _jpeg_app2(data)
    assert len(segments) == 3
    # Writers may store them out of order: the sequence numbers decide.
    first, second, third = segments
    reordered = data.replace(first + second + third, third + first + second)
    assert reordered != data and images.icc_profile(reordered) == big == decode(reordered).info["icc_profile"]
    # A missing piece, or a head that ends inside the profile: None, never part of a profile.
    assert images.icc_profile(data.replace(second, b"")) is None
    assert images.icc_profile(data[: data.index(third) + 100]) is None
    assert images.icc_profile(data[: data.index(third)]) is None


def _jpeg_app2(data: bytes) -> list[bytes]:
    segments, at = [], 2
    while data[at] == 0xFF and data[at + 1] != 0xDA:
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if data[at + 1] == 0xE2:
            segments.append(data[at : at + 2 + length])
        at += 2 + length
    return segments


def test_png_iccp_is_inflated_and_bounded() -> None:
    data = small("PNG", adobe_rgb())
    chunk = data.index(b"iCCP") - 4
    length = int.from_bytes(data[chunk : chunk + 4], "big")
    assert images.icc_profile(data[: chunk + 12 + length]) == adobe_rgb()
    assert images.icc_profile(data[: chunk + 8 + length - 1]) is None  # cut inside the chunk
    sig, ihdr = data[:8], data[8:33]

    def with_iccp(payload: bytes) -> bytes:
        body = struct.pack(">I", len(payload)) + b"iCCP" + payload + struct.pack(">I", zlib.crc32(b"iCCP" + payload))
        return sig + ihdr + body

    bomb = zlib.compress(adobe_rgb() + bytes(2 * images.MAX_ICC_BYTES))
    assert len(bomb) < 10_000 and images.icc_profile(with_iccp(b"x\x00\x00" + bomb)) is None
    assert images.icc_profile(with_iccp(b"x\x00\x00" + zlib.compress(adobe_rgb())[:-10])) is None  # cut stream
    assert images.icc_profile(with_iccp(b"x\x00\x01" + zlib.compress(adobe_rgb()))) is None  # method 1
    assert images.icc_profile(with_iccp(b"x\x00\x00" + zlib.compress(b"not a profile" * 20))) is None
    assert images.icc_profile(with_iccp(b"x\x00\x00" + zlib.compress(adobe_rgb()))) == adobe_rgb()


def test_webp_iccp_only_in_an_extended_file_and_whole() -> None:
    data = small("WEBP", display_p3())
    assert data[12:16] == b"VP8X"
    end = data.index(b"ICCP") + 8 + len(display_p3())
    assert images.icc_profile(data[:end]) == display_p3()
    assert images.icc_profile(data[: end - 1]) is None


def test_heif_colr_of_the_primary_item_only() -> None:
    data = small("HEIF", display_p3())
    assert images.icc_profile(data) == display_p3()
    # nclx (coded primaries) is not a profile.
    assert images.icc_profile(data.replace(b"colrprof", b"colrnclx")) is None
    # A head that ends inside `meta` cannot tell which item the profile belongs to.
    meta = data.index(b"meta") - 4
    assert images.icc_profile(data[: meta + 40]) is None


def test_icc_profile_never_raises_on_hostile_bytes() -> None:
    for head in (
        b"",
        b"\xff\xd8\xff",
        b"\xff\xd8" + b"\xff\xe2\x00\x10ICC_PROFILE\x00\x01\x01" * 10_000,
        b"\xff\xd8\xff\xe2\x00\x0eICC_PROFILE\x00",
        b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x03iCCPx\x00\x00\x00\x00\x00\x00" * 100,
        b"RIFF\xff\xff\xff\xffWEBPVP8X\x0a\x00\x00\x00" + bytes(10) + b"ICCP\xff\xff\xff\xff",
    ):
        assert images.icc_profile(head) is None
