"""Preparing uploads for the model, checked by pixels on real photos (skimage's chelsea, coffee).

The 25-megapixel runs print their time and peak RSS (not asserted). They run only with
BGREMOVE_LARGE=1 (measurements, not assertions; the unit tier stays fast).
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps, JpegImagePlugin, features

from bgremove import upright
from bgremove.errors import UnsupportedImage
from bgremove.upright import Prepared, orientation_of, prepare
from tests.photos import sample
from tests.unit.test_variants import large_cases, measure

MAX_PIXELS = 40_000_000
T = Image.Transpose
# What a camera stores for each orientation, given the upright scene: the inverse of the transform
# exif_transpose applies (ROTATE_270 and ROTATE_90 undo each other; the others undo themselves).
STORED = {1: None, 2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE}
STORED |= {6: T.ROTATE_90, 7: T.TRANSVERSE, 8: T.ROTATE_270}


def photo() -> Image.Image:
    return Image.fromarray(sample("chelsea"))  # 451x300: odd, not square, not a multiple of 8


def stored_as(image: Image.Image, orientation: int) -> Image.Image:
    method = STORED[orientation]
    return image if method is None else image.transpose(method)


def exif(orientation: int | None) -> bytes:
    tags = Image.Exif()
    tags[0x010F] = "test camera"  # Make, so an EXIF block exists even without an orientation
    if orientation is not None:
        tags[upright.ORIENTATION_TAG] = orientation
    return tags.tobytes()


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def diff(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size
    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


def converted(data: bytes, content_type: str) -> Prepared:
    result = prepare(data, content_type, MAX_PIXELS)
    assert result is not None
    assert orientation_of(result.data) == 1 and "exif" not in decode(result.data).info
    assert (result.width, result.height) == decode(result.data).size
    return result


def heif() -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()


# --- EXIF orientation -----------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_comes_out_upright(orientation: int) -> None:
    scene = photo()
    data_ = encode(stored_as(scene, orientation), "JPEG", quality=95, exif=exif(orientation))
    # The fixture is right: a viewer applying the tag sees the upright scene.
    assert diff(ImageOps.exif_transpose(decode(data_)), scene) < 3
    assert orientation_of(data_) == orientation
    if orientation == 1:
        assert prepare(data_, "image/jpeg", MAX_PIXELS) is None
        return
    result = converted(data_, "image/jpeg")
    assert result.content_type == "image/jpeg" and f"orientation {orientation}" in result.why
    assert (result.width, result.height) == scene.size
    assert diff(decode(result.data), scene) < 3


def test_no_exif_or_no_orientation_passes_through() -> None:
    assert prepare(encode(photo(), "JPEG"), "image/jpeg", MAX_PIXELS) is None
    assert prepare(encode(photo(), "JPEG", exif=exif(None)), "image/jpeg", MAX_PIXELS) is None
    for invalid in (0, 9, 65535):  # viewers ignore these, and so does exif_transpose
        assert prepare(encode(photo(), "JPEG", exif=exif(invalid)), "image/jpeg", MAX_PIXELS) is None


def test_jpeg_keeps_its_subsampling_and_icc_profile() -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for subsampling in (0, 2):  # 4:4:4 and 4:2:0
        data_ = encode(photo(), "JPEG", quality=90, subsampling=subsampling, icc_profile=icc, exif=exif(3))
        out = decode(converted(data_, "image/jpeg").data)
        assert isinstance(out, JpegImagePlugin.JpegImageFile)
        assert JpegImagePlugin.get_sampling(out) == subsampling
        assert out.info.get("icc_profile") == icc


def png_chunks(data_: bytes) -> list[tuple[bytes, bytes]]:
    chunks, position = [], 8
    while position < len(data_):
        length = int.from_bytes(data_[position : position + 4], "big")
        chunks.append((data_[position + 4 : position + 8], data_[position + 8 : position + 8 + length]))
        position += 12 + length
    return chunks


def png_from_chunks(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(
        struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        for kind, payload in chunks
    )
    return b"\x89PNG\r\n\x1a\n" + body


def test_png_orientation_is_found_even_after_the_pixels_and_stays_lossless() -> None:
    scene = photo().convert("RGBA")
    scene.putalpha(200)
    before = encode(stored_as(scene, 6), "PNG", exif=exif(6))
    chunks = png_chunks(before)
    exif_chunk = next(chunk for chunk in chunks if chunk[0] == b"eXIf")
    rest = [chunk for chunk in chunks if chunk[0] != b"eXIf"]
    after = png_from_chunks([*rest[:-1], exif_chunk, rest[-1]])  # eXIf between the IDATs and IEND
    for data_ in (before, after):
        assert orientation_of(data_) == 6
        result = converted(data_, "image/png")
        out = decode(result.data)
        assert result.content_type == "image/png" and out.mode == "RGBA"
        assert np.array_equal(np.asarray(out), np.asarray(scene))  # PNG to PNG: exact
    assert prepare(encode(scene, "PNG"), "image/png", MAX_PIXELS) is None


def webp_codec(data_: bytes) -> bytes:
    return b"VP8L" if b"VP8L" in data_[12:64] else b"VP8 "


@pytest.mark.parametrize("lossless", [True, False])
def test_webp_stays_webp_and_lossless_if_it_was(lossless: bool) -> None:
    scene = photo()
    options = {"lossless": True} if lossless else {"quality": 90}
    data_ = encode(stored_as(scene, 8), "WEBP", exif=exif(8), **options)
    result = converted(data_, "image/webp")
    assert result.content_type == "image/webp"
    assert webp_codec(result.data) == webp_codec(data_) == (b"VP8L" if lossless else b"VP8 ")
    expected = ImageOps.exif_transpose(decode(data_))
    if lossless:
        assert np.array_equal(np.asarray(decode(result.data)), np.asarray(scene))
    else:
        assert diff(decode(result.data), expected) < 3


def test_a_wrong_content_type_gets_the_same_bytes_with_the_right_type() -> None:
    data_ = encode(photo(), "JPEG")
    result = prepare(data_, "image/png", MAX_PIXELS)
    assert result == Prepared(data_, "image/jpeg", 451, 300, "the bytes are image/jpeg, not image/png")
    assert prepare(data_, "Image/JPG; q=1", MAX_PIXELS) is None


def test_mpo_passes_through_as_a_jpeg() -> None:
    data_ = encode(photo(), "MPO", save_all=True, append_images=[photo().rotate(90)])
    assert decode(data_).format == "MPO"
    assert prepare(data_, "image/jpeg", MAX_PIXELS) is None
    rotated = encode(photo(), "MPO", save_all=True, append_images=[photo()], exif=exif(6))
    assert converted(rotated, "image/jpeg").content_type == "image/jpeg"


# --- HEIF and AVIF --------------------------------------------------------------------------------


def test_heic_becomes_jpeg_of_the_same_size() -> None:
    heif()
    scene = photo()
    result = converted(encode(scene, "HEIF", quality=90), "image/heic")
    assert result.content_type == "image/jpeg" and (result.width, result.height) == scene.size
    assert "image/heif converted to image/jpeg" in result.why
    assert diff(decode(result.data), scene) < 4


def test_heic_with_alpha_becomes_png() -> None:
    heif()
    scene = photo().convert("RGBA")
    alpha = Image.linear_gradient("L").resize(scene.size)
    scene.putalpha(alpha)
    result = converted(encode(scene, "HEIF", quality=90), "image/heif")
    out = decode(result.data)
    assert result.content_type == "image/png" and out.mode == "RGBA" and out.size == scene.size
    assert diff(out.getchannel("A"), alpha) < 4


def test_heic_with_an_orientation_comes_out_upright() -> None:
    heif()
    scene = photo()
    # pillow_heif writes the orientation as HEIF rotation boxes, which libheif applies on decode.
    result = converted(encode(stored_as(scene, 6), "HEIF", quality=90, exif=exif(6)), "image/heic")
    assert (result.width, result.height) == scene.size
    assert diff(decode(result.data), scene) < 4


def test_heif_sequence_gives_its_primary_image() -> None:
    heif()
    scene = photo()
    data_ = encode(scene, "HEIF", quality=90, save_all=True, append_images=[ImageOps.invert(scene)])
    result = converted(data_, "image/heif")
    assert "first frame of 2" in result.why
    assert diff(decode(result.data), scene) < 4


def avif() -> None:
    import pillow_heif

    if not features.check("avif") and not pillow_heif.libheif_info().get("AVIF"):
        pytest.skip("neither Pillow nor pillow_heif can encode AVIF here")
    if not features.check("avif"):
        pillow_heif.register_heif_opener()


def test_avif_becomes_jpeg_upright() -> None:
    avif()  # Pillow 12 encodes AVIF itself; this build of pillow_heif has no AVIF codec
    scene = photo()
    result = converted(encode(scene, "AVIF", quality=90), "image/avif")
    assert result.content_type == "image/jpeg" and (result.width, result.height) == scene.size
    assert diff(decode(result.data), scene) < 4
    turned = converted(encode(stored_as(scene, 6), "AVIF", quality=90, exif=exif(6)), "image/avif")
    assert (turned.width, turned.height) == scene.size and diff(decode(turned.data), scene) < 4


# --- several frames -------------------------------------------------------------------------------


def frames() -> list[Image.Image]:
    scene = photo()
    return [scene, ImageOps.invert(scene), scene.rotate(180)]


def test_animated_gif_gives_its_first_frame_as_png() -> None:
    first, *rest = frames()
    data_ = encode(first, "GIF", save_all=True, append_images=rest, duration=100, loop=0)
    result = converted(data_, "image/gif")
    out = decode(result.data)
    assert result.content_type == "image/png" and "first frame of 3" in result.why
    assert not getattr(out, "is_animated", False)
    gif = Image.open(io.BytesIO(data_))
    assert np.array_equal(np.asarray(out.convert("RGB")), np.asarray(gif.convert("RGB")))  # exactly frame 0
    assert diff(out.convert("RGB"), first) < 12  # GIF's 256 colours
    single = converted(encode(first, "GIF"), "image/gif")
    assert single.content_type == "image/png" and "frame" not in single.why


def test_animated_webp_and_apng_give_their_first_frame_in_their_format() -> None:
    first, *rest = frames()
    for fmt, content_type, options in (
        ("WEBP", "image/webp", {"lossless": True}),
        ("PNG", "image/png", {}),
    ):
        data_ = encode(first, fmt, save_all=True, append_images=rest, duration=100, **options)
        assert getattr(decode(data_), "n_frames", 1) == 3
        result = converted(data_, content_type)
        out = decode(result.data)
        assert result.content_type == content_type and "first frame of 3" in result.why
        assert getattr(out, "n_frames", 1) == 1
        assert np.array_equal(np.asarray(out.convert("RGB")), np.asarray(first)), fmt


# --- refusals -------------------------------------------------------------------------------------


def test_over_max_pixels_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # the check is our own, not Pillow's global
    with pytest.raises(UnsupportedImage, match="451x300 = 135300 pixels, over max_pixels 135299"):
        prepare(encode(photo(), "JPEG", exif=exif(6)), "image/jpeg", 135_299)
    # A PNG header claiming 100000x100000 with no pixel data behind it: only the header is read.
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0")
    huge = png_from_chunks([(b"IHDR", ihdr), (b"IDAT", idat), (b"IEND", b"")])
    with pytest.raises(UnsupportedImage, match="over max_pixels"):
        prepare(huge, "image/png", MAX_PIXELS)
    heif()
    with pytest.raises(UnsupportedImage, match="over max_pixels"):
        prepare(encode(photo(), "HEIF"), "image/heic", 100_000)


def test_undecodable_bytes_are_refused() -> None:
    for junk in (b"", b"hello", b"\xff\xd8\xff" + b"\0" * 64, b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 32):
        with pytest.raises(UnsupportedImage):
            prepare(junk, "image/jpeg", MAX_PIXELS)
    with pytest.raises(UnsupportedImage, match="not a JPEG"):  # BMP: a Pillow format, not one accepted
        prepare(encode(photo(), "BMP"), "image/bmp", MAX_PIXELS)
    rotated = encode(photo(), "JPEG", exif=exif(6))
    with pytest.raises(UnsupportedImage, match="cannot decode"):
        prepare(rotated[: len(rotated) // 2], "image/jpeg", MAX_PIXELS)
    # Upright and truncated needs no decoding, so it is not inspected: the model reports it.
    upright_jpeg = encode(photo(), "JPEG")
    assert prepare(upright_jpeg[: len(upright_jpeg) // 2], "image/jpeg", MAX_PIXELS) is None
    heif()
    heic = encode(photo(), "HEIF")
    with pytest.raises(UnsupportedImage):
        prepare(heic[: len(heic) // 2], "image/heic", MAX_PIXELS)


# --- 25 megapixels: time and peak memory, printed -------------------------------------------------


def large_scene() -> Image.Image:
    return Image.fromarray(sample("coffee")).resize((5000, 5000), Image.Resampling.BICUBIC)


def large_jpeg() -> tuple[bytes, str]:
    return encode(stored_as(large_scene(), 6), "JPEG", quality=90, exif=exif(6)), "image/jpeg"


def large_png() -> tuple[bytes, str]:
    return encode(stored_as(large_scene(), 8), "PNG", compress_level=1, exif=exif(8)), "image/png"


def large_webp() -> tuple[bytes, str]:
    return encode(stored_as(large_scene(), 3), "WEBP", quality=90, method=0, exif=exif(3)), "image/webp"


def large_heic() -> tuple[bytes, str]:
    heif()
    return encode(large_scene(), "HEIF", quality=80), "image/heic"


def large_gif() -> tuple[bytes, str]:
    scene = large_scene().quantize(256, method=Image.Quantize.FASTOCTREE)
    return encode(scene, "GIF", save_all=True, append_images=[scene.rotate(180)]), "image/gif"


LARGE = {"jpeg-orientation-6": large_jpeg, "png-orientation-8": large_png, "webp-orientation-3": large_webp}
LARGE |= {"heic": large_heic, "animated-gif": large_gif}


@pytest.mark.parametrize(
    "kind",
    list(large_cases(list(LARGE), ["jpeg-orientation-6"]))
    or [pytest.param("none", marks=pytest.mark.skip(reason="25-megapixel measurements run with BGREMOVE_LARGE=1"))],
)
def test_25_megapixel_prepare(kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    source, content_type = LARGE[kind]()
    holder: list[Prepared | None] = []
    seconds, delta = measure(lambda: holder.append(prepare(source, content_type, 30_000_000)))
    result = holder[0]
    assert result is not None and (result.width, result.height) == (5000, 5000)
    with capsys.disabled():
        print(
            f"\n25 MP prepare {kind:20} {seconds:5.2f} s  peak RSS +{delta:6.0f} MB"
            f"  {len(source) / 1e6:.1f} MB {content_type} -> {len(result.data) / 1e6:.1f} MB {result.content_type}"
        )
