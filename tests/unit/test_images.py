"""Header parsing in bgremove.images, checked against Pillow and pillow_heif as the oracle.

Real photos from skimage.data are encoded by Pillow (JPEG, PNG, WebP, GIF, AVIF) and pillow_heif
(HEIC; its libheif here has an HEVC encoder but no AVIF encoder, so AVIF comes from Pillow's own
libavif plugin). Every case is checked on the whole file and on its first HEAD_BYTES, as the
Cloud Function reads it.
"""

from __future__ import annotations

import functools
import io
import struct
import time
import zlib

import numpy as np
import pillow_heif
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bgremove import images
from tests.photos import sample

pillow_heif.register_heif_opener()

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
TYPES |= {"HEIF": "image/heic", "AVIF": "image/avif"}


@functools.cache
def photo(name: str) -> Image.Image:
    return Image.fromarray(sample(name)).convert("RGB")


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def pillow_exif(orientation: int) -> bytes:
    """An EXIF block as Pillow writes it (little-endian), carrying only the orientation."""
    exif = Image.Exif()
    exif[images.ORIENTATION_TAG] = orientation
    return exif.tobytes()


def tiff_exif(orientation: int, order: str = "MM", thumbnail: bytes = b"") -> bytes:
    """An "Exif\\0\\0" block built by hand: IFD0 with the orientation, and IFD1 with a JPEG thumbnail."""
    e = ">" if order == "MM" else "<"
    head = (b"MM\x00*" if order == "MM" else b"II*\x00") + struct.pack(e + "I", 8)
    ifd1 = 8 + 2 + 12 + 4 if thumbnail else 0
    ifd0 = struct.pack(e + "HHHIHH", 1, images.ORIENTATION_TAG, 3, 1, orientation, 0) + struct.pack(e + "I", ifd1)
    body = head + ifd0
    if thumbnail:
        start = ifd1 + 2 + 2 * 12 + 4
        body += struct.pack(e + "H", 2) + struct.pack(e + "HHII", 0x0201, 4, 1, start)
        body += struct.pack(e + "HHII", 0x0202, 4, 1, len(thumbnail)) + struct.pack(e + "I", 0) + thumbnail
    return b"Exif\x00\x00" + body


def pillow_view(data: bytes) -> tuple[tuple[int, int], int, bool]:
    """Pillow's size, EXIF orientation (1 unless 1..8) and is_animated for the bytes."""
    with Image.open(io.BytesIO(data)) as image:
        orientation = image.getexif().get(images.ORIENTATION_TAG, 1)
        orientation = orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1
        return image.size, orientation, bool(getattr(image, "is_animated", False))


def shown(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """The size a viewer shows: orientations 5..8 turn the image a quarter."""
    return (size[1], size[0]) if orientation >= 5 else size


# --- real photos -----------------------------------------------------------------------------

VARIANTS = (
    *[f"JPEG-{n}" for n in range(9)],  # 0: no EXIF; 1..8: Pillow's EXIF with that orientation
    "JPEG-MM",
    "PNG",
    "PNG-exif",
    "WEBP",
    "WEBP-exif",
    "WEBP-lossless",
    "WEBP-lossless-exif",
    "GIF",
    "HEIF",
    "HEIF-rotated",
    "AVIF",
    "AVIF-rotated",
)


@functools.cache
def case(name: str, variant: str) -> tuple[bytes, str, int]:
    """(bytes, content type, orientation written) for a photo in a variant."""
    image = photo(name).copy()  # getexif() below must not touch the shared photo
    fmt, _, extra = variant.partition("-")
    # A different orientation per photo where only one is written, so all of 2..8 turn up.
    written = 2 + (PHOTOS.index(name) * 2 + len(variant)) % 7
    options: dict[str, object] = {}
    if fmt == "JPEG" and extra.isdigit():
        written = int(extra)
        if written:
            exif = image.getexif()
            exif[images.ORIENTATION_TAG] = written
            options["exif"] = exif.tobytes()
        else:
            written = 1
    elif extra == "MM":
        options["exif"] = tiff_exif(written, "MM")
    elif extra.endswith("exif") or extra == "rotated":
        options["exif"] = pillow_exif(written)
    else:
        written = 1
    if fmt == "PNG":
        options["compress_level"] = 1
    if extra.startswith("lossless"):
        options.update(lossless=True, method=0)
    if fmt == "AVIF":
        options["speed"] = 10
    return encode(image, fmt, **options), TYPES[fmt], written


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", PHOTOS)
def test_real_photos_read_like_pillow_from_the_whole_file_and_from_the_head(name: str, variant: str) -> None:
    data, content_type, written = case(name, variant)
    size, orientation, animated = pillow_view(data)
    head = data[: images.HEAD_BYTES]
    heif = content_type in ("image/heic", "image/avif")

    assert images.sniff(data[: images.SNIFF_BYTES]) == content_type
    assert images.sniff(data) == content_type
    assert not animated and not images.is_animated(data) and not images.is_animated(head)

    if heif:
        # HEIF turns the image by its irot property: dimensions are what is shown, orientation 1.
        # pillow_heif applies irot (orientation 1); Pillow's AVIF plugin reports it as EXIF instead.
        assert images.exif_orientation(data) == 1
        assert images.dimensions(data) == shown(size, orientation)
        assert shown(size, orientation) == shown(photo(name).size, written if variant.endswith("rotated") else 1)
    else:
        assert orientation == (written if content_type != "image/gif" else 1)
        assert images.dimensions(data) == size == photo(name).size
        assert images.exif_orientation(data) == orientation
    assert not images.exif_beyond_head(data)

    # libwebp writes EXIF after the image data, so a large WebP keeps it past the head: the head
    # says so rather than passing 1 off as the answer.
    beyond = content_type == "image/webp" and variant.endswith("exif") and len(data) > images.HEAD_BYTES
    assert images.exif_beyond_head(head) == beyond
    assert images.dimensions(head) == images.dimensions(data)
    assert images.exif_orientation(head) == (1 if beyond else images.exif_orientation(data))


def test_the_head_loses_exif_only_for_large_lossless_webp() -> None:
    """The documented gap, shown on purpose: these photos as lossless WebP outgrow HEAD_BYTES."""
    data, _, written = case("astronaut", "WEBP-lossless-exif")
    assert len(data) > images.HEAD_BYTES and images.exif_orientation(data) == written
    assert images.exif_orientation(data[: images.HEAD_BYTES]) == 1
    assert images.exif_beyond_head(data[: images.HEAD_BYTES])


@functools.cache
def heavy_jpeg() -> bytes:
    """A JPEG whose frame header lies past 128 KiB: an Exif block with a ~40 KB thumbnail (its own
    SOF inside APP1), then a 150 KB ICC profile in three APP2 segments."""
    rng = np.random.default_rng(7)
    noise = Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    thumbnail = encode(noise, "JPEG", quality=95)
    assert 20_000 < len(thumbnail) < 60_000
    exif = tiff_exif(8, "MM", thumbnail)
    icc = bytes(rng.integers(0, 256, 150_000, dtype=np.uint8))
    return encode(photo("chelsea"), "JPEG", exif=exif, icc_profile=icc)


def test_a_jpeg_with_big_app_segments_needs_more_than_64_kib() -> None:
    data = heavy_jpeg()
    width, height = photo("chelsea").size
    sof = data.index(b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", height, width))
    assert sof > 128 * 1024
    assert pillow_view(data) == ((width, height), 8, False)
    for head in (data, data[: images.HEAD_BYTES]):
        assert images.dimensions(head) == (width, height)  # not the thumbnail's 160x120
        assert images.exif_orientation(head) == 8
        assert not images.exif_beyond_head(head)
    assert images.dimensions(data[: 64 * 1024]) is None  # why HEAD_BYTES is not 64 KiB
    assert images.exif_orientation(data[: 64 * 1024]) == 8  # Exif comes first, so it is still there


def test_jpeg_fill_bytes_stray_bytes_comments_and_xmp_before_exif() -> None:
    plain = case("coffee", "JPEG-0")[0]
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta/>"
    app1_xmp = b"\xff\xe1" + struct.pack(">H", len(xmp) + 2) + xmp
    exif = tiff_exif(5, "II")
    app1_exif = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    comment = b"\xff\xfe\x00\x07hello"
    data = plain[:2] + b"\xff\xff\xff" + comment + b"junk" + app1_xmp + b"\xff\xff" + app1_exif + plain[2:]
    assert pillow_view(data) == ((600, 400), 5, False)
    assert images.dimensions(data) == (600, 400)
    assert images.exif_orientation(data) == 5


def test_jpeg_tables_before_the_frame_header_are_skipped() -> None:
    plain = case("rocket", "JPEG-0")[0]
    sof = plain.index(b"\xff\xc0")
    sos = plain.index(b"\xff\xda")
    end = sof + 2 + struct.unpack(">H", plain[sof + 2 : sof + 4])[0]
    assert plain.index(b"\xff\xc4") == end  # libjpeg writes DQT, SOF, DHT: move SOF after DHT
    moved = plain[:sof] + plain[end:sos] + plain[sof:end] + plain[sos:]
    assert moved.index(b"\xff\xc4") < moved.index(b"\xff\xc0")
    assert pillow_view(moved)[0] == images.dimensions(moved) == (640, 427)


def test_png_exif_chunk_after_the_image_data_is_found_within_the_head() -> None:
    data = case("chelsea", "PNG-exif")[0]
    written = case("chelsea", "PNG-exif")[2]
    start = data.index(b"eXIf") - 4
    length = struct.unpack(">I", data[start : start + 4])[0]
    chunk = data[start : start + 12 + length]
    rest = data[:start] + data[start + 12 + length :]
    iend = rest.index(b"IEND") - 4
    moved = rest[:iend] + chunk + rest[iend:]
    assert len(moved) < images.HEAD_BYTES and moved.index(b"eXIf") > moved.index(b"IDAT")
    assert pillow_view(moved)[1] == written
    assert images.exif_orientation(moved) == written


def test_png_exif_chunk_that_keeps_the_jpeg_prefix_is_read() -> None:
    still = case("chelsea", "PNG")[0]
    at = still.index(b"IDAT") - 4
    for prefix in (b"", b"Exif\x00\x00", b"Exif\x00\x00" * 2):
        data = still[:at] + png_chunk(b"eXIf", prefix + tiff_exif(7, "MM")[6:]) + still[at:]
        assert pillow_view(data)[1] == images.exif_orientation(data) == 7


def test_exif_orientation_out_of_range_or_of_the_wrong_type_is_1() -> None:
    plain = case("rocket", "JPEG-0")[0]

    def with_exif(block: bytes) -> bytes:
        return plain[:2] + b"\xff\xe1" + struct.pack(">H", len(block) + 2) + block + plain[2:]

    for value in (0, 9, 0xFFFF):
        assert images.exif_orientation(with_exif(tiff_exif(value, "MM"))) == 1
    ascii_entry = tiff_exif(6, "MM").replace(b"\x01\x12\x00\x03", b"\x01\x12\x00\x02")
    assert images.exif_orientation(with_exif(ascii_entry)) == 1
    two_values = tiff_exif(6, "MM").replace(b"\x00\x03\x00\x00\x00\x01", b"\x00\x03\x00\x00\x00\x02")
    assert images.exif_orientation(with_exif(two_values)) == 1
    assert images.exif_orientation(with_exif(tiff_exif(6, "II"))) == 6


# --- sniffing ISO-BMFF brands ----------------------------------------------------------------


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    payload = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(payload)) + b"ftyp" + payload


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        (ftyp(b"heic", b"mif1", b"heic"), "image/heic"),
        (ftyp(b"heix", b"mif1"), "image/heic"),
        (ftyp(b"hevc", b"msf1"), "image/heic"),
        (ftyp(b"mif1", b"mif1", b"heic"), "image/heic"),
        (ftyp(b"msf1", b"hevx"), "image/heic"),
        (ftyp(b"mif1", b"mif1"), "image/heif"),
        (ftyp(b"msf1"), "image/heif"),
        (ftyp(b"avif", b"avif", b"mif1", b"miaf", b"MA1B"), "image/avif"),
        (ftyp(b"avis", b"msf1"), "image/avif"),
        (ftyp(b"mif1", b"avif", b"mif1"), "image/avif"),
        (ftyp(b"MA1B", b"miaf", b"avif"), "image/avif"),
        (ftyp(b"isom", b"iso2", b"mp41"), None),  # an MP4 video
        (ftyp(b"qt  "), None),
        (ftyp(b"heic")[:11], None),
        (b"\x00\x00\x00\x0cftypheic", None),  # an ftyp too short to hold its fields
        (b"\x00\x00\x00\x18moovheic" + bytes(12), None),
    ],
)
def test_sniff_reads_heif_and_avif_brands(box: bytes, expected: str | None) -> None:
    assert images.sniff(box) == expected
    assert images.sniff(box + bytes(100)) == expected


def test_sniff_keeps_its_answers_for_the_old_formats() -> None:
    assert images.sniff(b"\x89PNG\r\n\x1a\n") == "image/png"
    assert images.sniff(b"\xff\xd8\xff") == "image/jpeg"
    assert images.sniff(b"RIFF\x00\x00\x00\x00WEBP") == "image/webp"
    assert images.sniff(b"GIF87a") == images.sniff(b"GIF89a") == "image/gif"
    for other in (b"", b"\xff\xd8", b"RIFF\x00\x00\x00\x00WAVE", b"BM", b"II*\x00", b"%PDF-1.7"):
        assert images.sniff(other) is None


# --- HEIF structure --------------------------------------------------------------------------


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def full_box(kind: bytes, payload: bytes, version: int = 0, flags: int = 0) -> bytes:
    return box(kind, bytes([version]) + flags.to_bytes(3, "big") + payload)


def ispe(width: int, height: int) -> bytes:
    return full_box(b"ispe", struct.pack(">II", width, height))


def clap(width: int, height: int) -> bytes:
    return box(b"clap", struct.pack(">IIIIiIiI", width, 1, height, 1, 0, 1, 0, 1))


def ipma(entries: dict[int, list[int]], version: int = 0, flags: int = 0) -> bytes:
    body = struct.pack(">I", len(entries))
    for item, indices in entries.items():
        body += struct.pack(">H" if version == 0 else ">I", item) + bytes([len(indices)])
        essential = 0x8000 if flags & 1 else 0x80  # the top bit; decoders must not ignore the property
        body += b"".join(struct.pack(">H" if flags & 1 else ">B", essential | i) for i in indices)
    return full_box(b"ipma", body, version, flags)


def heif(properties: bytes, associations: bytes, primary: int | None = 1, before_meta: bytes = b"") -> bytes:
    pitm = full_box(b"pitm", struct.pack(">H", primary)) if primary is not None else b""
    hdlr = full_box(b"hdlr", bytes(4) + b"pict" + bytes(13))
    meta = full_box(b"meta", hdlr + pitm + box(b"iprp", box(b"ipco", properties) + associations))
    return ftyp(b"heic", b"mif1", b"heic") + before_meta + meta + box(b"mdat", bytes(64))


# ipco: 1 = full image, 2 = thumbnail, 3 = irot 90, 4 = clap, 5 = a tile
PROPS = ispe(4032, 3024) + ispe(320, 240) + box(b"irot", b"\x01") + clap(4000, 3000) + ispe(512, 512)


def test_heif_dimensions_are_the_primary_items() -> None:
    assert images.dimensions(heif(PROPS, ipma({1: [1], 2: [2]}))) == (4032, 3024)
    assert images.dimensions(heif(PROPS, ipma({1: [1], 2: [2]}), primary=2)) == (320, 240)
    assert images.dimensions(heif(PROPS, ipma({1: [1, 3], 2: [2]}))) == (3024, 4032)
    assert images.dimensions(heif(PROPS, ipma({1: [1, 4, 3], 2: [2]}))) == (3000, 4000)
    assert images.dimensions(heif(PROPS, ipma({2: [2], 7: [1, 3]}, version=1, flags=1), primary=7)) == (3024, 4032)


def test_heif_without_a_primary_item_takes_the_largest_ispe() -> None:
    assert images.dimensions(heif(PROPS, ipma({1: [5], 2: [2]}), primary=None)) == (4032, 3024)
    assert images.dimensions(heif(PROPS, ipma({1: [5]}), primary=3)) == (4032, 3024)  # no associations
    assert images.dimensions(heif(PROPS, ipma({1: [2]}), primary=1)) == (320, 240)  # the primary's wins


def test_heif_a_real_collection_reports_its_primary_image_not_the_largest() -> None:
    small, large = photo("chelsea"), photo("astronaut")
    for primary, expected in ((0, small.size), (1, large.size)):
        data = encode(small, "HEIF", save_all=True, append_images=[large], primary_index=primary, quality=30)
        assert pillow_view(data)[0] == expected
        assert images.dimensions(data) == images.dimensions(data[: images.HEAD_BYTES]) == expected
    with_thumbnail = encode(small, "HEIF", thumbnails=[96], quality=30)
    assert with_thumbnail.count(b"ispe") == 2 and images.dimensions(with_thumbnail) == small.size


def test_heif_that_the_head_cannot_settle_is_none() -> None:
    good = heif(PROPS, ipma({1: [1]}))
    meta_end = good.index(b"mdat") - 4
    assert images.dimensions(good[:meta_end]) == (4032, 3024)
    for cut in range(len(good[:meta_end])):
        assert images.dimensions(good[:cut]) is None
    mdat_first = heif(PROPS, ipma({1: [1]}), before_meta=struct.pack(">I", 10_000_000) + b"mdat")
    assert images.dimensions(mdat_first) is None
    large_size = struct.pack(">I", 1) + b"free" + struct.pack(">Q", 24) + bytes(8)
    assert images.dimensions(heif(PROPS, ipma({1: [1]}), before_meta=large_size)) == (4032, 3024)
    assert images.dimensions(heif(ispe(0, 10), ipma({1: [1]}))) is None
    assert images.dimensions(heif(ispe(100, 100) + clap(101, 100), ipma({1: [1, 2]}))) is None


# --- animation -------------------------------------------------------------------------------


@functools.cache
def frames() -> list[Image.Image]:
    return [photo("chelsea").rotate(angle).resize((150, 100)) for angle in (0, 10, 20)]


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animations_are_detected_and_stills_are_not(fmt: str) -> None:
    first, *rest = frames()
    animated = encode(first, fmt, save_all=True, append_images=rest, duration=100, loop=0)
    still = encode(first, fmt)
    assert pillow_view(animated)[2] and not pillow_view(still)[2]
    assert images.is_animated(animated) and images.is_animated(animated[: images.HEAD_BYTES])
    assert not images.is_animated(still)
    assert images.dimensions(animated) == (150, 100)
    if fmt == "PNG":
        assert animated.index(b"acTL") < animated.index(b"IDAT")
    for cut in range(0, len(still), 97):
        assert not images.is_animated(still[:cut])


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


@pytest.mark.filterwarnings("ignore:Invalid APNG:UserWarning")
def test_apng_frames_are_counted_as_pillow_counts_them() -> None:
    still = encode(frames()[0], "PNG")
    at = still.index(b"IDAT") - 4
    width, height = frames()[0].size

    def with_chunks(*chunks: bytes) -> bytes:
        return still[:at] + b"".join(chunks) + still[at:]

    def actl(count: int) -> bytes:
        return png_chunk(b"acTL", struct.pack(">II", count, 0))

    fctl = png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", 0, width, height, 0, 0, 1, 10, 0, 0))
    expected = {
        "one frame, the IDAT image": (with_chunks(actl(1), fctl), False),
        "one frame after a default image": (with_chunks(actl(1)), True),
        "two frames": (with_chunks(actl(2), fctl), True),
        "a second acTL cancels the first": (with_chunks(actl(2), actl(2), fctl), False),
        "no frames is ignored": (with_chunks(actl(0), fctl), False),
    }
    for what, (data, animated) in expected.items():
        assert pillow_view(data)[2] == animated, what
        assert images.is_animated(data) == animated, what
    after_idat = still[: still.index(b"IEND") - 4] + png_chunk(b"acTL", struct.pack(">II", 3, 0)) + still[-12:]
    assert not images.is_animated(after_idat)


def riff(*chunks: tuple[bytes, bytes]) -> bytes:
    body = b"WEBP" + b"".join(kind + struct.pack("<I", len(p)) + p + b"\x00" * (len(p) & 1) for kind, p in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_webp_animation_flag_with_a_single_frame_in_a_whole_file_is_still() -> None:
    vp8x = (b"VP8X", bytes([images._VP8X_ANIMATION, 0, 0, 0]) + (99).to_bytes(3, "little") * 2)
    anmf = (b"ANMF", bytes(16) + b"VP8L" + bytes(4))
    one = riff(vp8x, (b"ANIM", bytes(6)), anmf)
    two = riff(vp8x, (b"ANIM", bytes(6)), anmf, anmf)
    assert images.dimensions(one) == (100, 100)
    assert not images.is_animated(one) and images.is_animated(two)
    assert images.is_animated(one[:-10])  # the head ends early: the flag is believed


def test_a_gif_whose_first_frame_outgrows_the_head_is_not_seen_as_animated() -> None:
    rng = np.random.default_rng(3)
    noisy = [Image.fromarray(rng.integers(0, 256, (640, 640), dtype=np.uint8), "L") for _ in range(2)]
    data = encode(noisy[0], "GIF", save_all=True, append_images=noisy[1:])
    assert pillow_view(data)[2] and images.is_animated(data)
    assert len(data) // 2 > images.HEAD_BYTES  # each frame is larger than the head
    assert not images.is_animated(data[: images.HEAD_BYTES])  # best effort, as documented


def test_gif_size_grows_to_the_first_frame_as_in_pillow() -> None:
    data = bytearray(encode(frames()[0], "GIF"))
    data[6:10] = struct.pack("<HH", 50, 40)  # a logical screen smaller than the frame
    assert pillow_view(bytes(data))[0] == images.dimensions(bytes(data)) == (150, 100)
    assert images.dimensions(bytes(data[:13])) is None


# --- hostile bytes ---------------------------------------------------------------------------


def check(head: bytes) -> None:
    """The API answers every head with a value of the promised kind."""
    assert images.sniff(head) in (None, *TYPES.values(), "image/heif")
    size = images.dimensions(head)
    assert size is None or (
        isinstance(size, tuple) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)
    )
    assert images.exif_orientation(head) in range(1, 9)
    assert isinstance(images.exif_beyond_head(head), bool)
    assert isinstance(images.is_animated(head), bool)
    profile = images.icc_profile(head)
    assert profile is None or (isinstance(profile, bytes) and profile[36:40] == b"acsp")


SIGNATURES = [
    b"\x89PNG\r\n\x1a\n",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR",
    b"\xff\xd8\xff",
    b"\xff\xd8\xff\xe1",
    b"RIFF\xff\xff\xff\x7fWEBPVP8X",
    b"RIFF\xff\xff\xff\x7fWEBPVP8 ",
    b"RIFF\xff\xff\xff\x7fWEBPVP8L",
    b"GIF89a",
    ftyp(b"heic", b"mif1"),
    ftyp(b"avif") + b"\x00\x00\x01\x00meta\x00\x00\x00\x00",
]


@functools.cache
def small_files() -> list[bytes]:
    """Small real files of each kind, to mutate."""
    image = photo("coffee").resize((48, 32))
    exif = pillow_exif(6)
    first, *rest = frames()
    return [
        encode(image, "JPEG", exif=exif),
        encode(image, "JPEG", exif=tiff_exif(3, "MM", encode(image.resize((16, 12)), "JPEG"))),
        encode(image, "PNG", exif=exif),
        encode(image, "WEBP", exif=exif),
        encode(image, "WEBP", lossless=True, exif=exif),
        encode(image, "GIF"),
        encode(image, "HEIF", exif=exif, quality=30),
        encode(image, "AVIF", exif=exif, speed=10),
        encode(first.resize((30, 20)), "GIF", save_all=True, append_images=[f.resize((30, 20)) for f in rest]),
        encode(first.resize((30, 20)), "PNG", save_all=True, append_images=[f.resize((30, 20)) for f in rest]),
        heif(PROPS, ipma({1: [1, 4, 3], 2: [2]})),
    ]


FUZZ = settings(
    max_examples=300, derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_never_raise(head: bytes) -> None:
    check(head)


@FUZZ
@given(st.sampled_from(SIGNATURES), st.binary(max_size=600))
def test_random_bytes_after_a_signature_never_raise(signature: bytes, body: bytes) -> None:
    check(signature + body)


@FUZZ
@given(st.data())
def test_truncated_and_mutated_files_never_raise(draw: st.DataObject) -> None:
    original = draw.draw(st.sampled_from(small_files()))
    data = bytearray(original)
    for _ in range(draw.draw(st.integers(0, 6))):
        if not data:
            break
        at = draw.draw(st.integers(0, min(len(data) - 1, 400)))
        action = draw.draw(st.sampled_from(["set", "insert", "delete"]))
        byte = draw.draw(st.sampled_from([0x00, 0x01, 0x02, 0x08, 0x7F, 0x80, 0xFE, 0xFF, 0x2C, 0x21]))
        if action == "set":
            data[at] = byte
        elif action == "insert":
            data[at:at] = bytes([byte]) * draw.draw(st.integers(1, 4))
        else:
            del data[at : at + draw.draw(st.integers(1, 4))]
    cut = draw.draw(st.integers(0, len(data)))
    check(bytes(data[:cut]))


@settings(max_examples=150, derandomize=True, database=None, deadline=None)
@given(st.sampled_from(range(11)), st.integers(0, 100_000))
def test_a_truncated_file_says_none_or_the_truth(which: int, cut: int) -> None:
    data = small_files()[which]
    head = data[:cut]
    check(head)
    assert images.dimensions(head) in (None, images.dimensions(data))
    assert images.exif_orientation(head) in (1, images.exif_orientation(data))
    assert not images.is_animated(head) or images.is_animated(data)
    assert images.icc_profile(head) in (None, images.icc_profile(data))


@functools.cache
def hostile_heads() -> dict[str, bytes]:
    n = images.HEAD_BYTES
    soi = b"\xff\xd8"
    sig = b"\x89PNG\r\n\x1a\n"
    meta_children = box(b"iprp", box(b"ipco", b"\x00\x00\x00\x08free" * 8000) + full_box(b"ipma", b"\xff" * 4))
    vp8x = b"VP8X\x0a\x00\x00\x00" + bytes([images._VP8X_EXIF]) + bytes(9)
    exif_loop = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + b"\x01\x12" * (n // 2)
    return {
        "jpeg empty segments": soi + b"\xff\xe0\x00\x02" * (n // 4),
        "jpeg fill bytes": soi + b"\xff" * n,
        "jpeg junk": soi + b"\x00" * n,
        "jpeg short lengths": soi + b"\xff\xe0\x00\x01" * (n // 4),
        "jpeg exif huge ifd": soi + b"\xff\xe1\xff\xff" + exif_loop[:65533] + b"\xff\xc0\x00\x11\x08",
        "png empty chunks": sig + b"\x00\x00\x00\x00tEXt\x00\x00\x00\x00" * (n // 12),
        "png exif of prefixes": sig + struct.pack(">I", n) + b"eXIf" + b"Exif\x00\x00" * (n // 6),
        "png lying length": sig + b"\xff\xff\xff\xffIHDR" + bytes(n),
        "webp empty chunks": b"RIFF\xff\xff\xff\xffWEBP" + vp8x + b"EXIF\x00\x00\x00\x00" * (n // 8),
        "gif descriptors": b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + bytes(6) + (b"\x2c" + bytes(11)) * (n // 12),
        "gif extensions": b"GIF89a\x01\x00\x01\x00\x00\x00\x00" + b"\x21\xf9\x01\x00" * (n // 4),
        "gif sub-blocks": b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x21\xfe" + b"\x01\x00" * n,
        "heif empty boxes": ftyp(b"heic") + b"\x00\x00\x00\x08free" * (n // 8),
        "heif nested": ftyp(b"heic") + full_box(b"meta", meta_children),
        "heif brands": struct.pack(">I", n) + b"ftypmif1" + b"mif1" * (n // 4),
        "heif ipma count": heif(ispe(1, 1), full_box(b"ipma", b"\xff\xff\xff\xff" + b"\x00\x02\x00" * (n // 3))),
    }


@pytest.mark.parametrize("name", sorted(hostile_heads()))
def test_hostile_heads_are_answered_quickly(name: str) -> None:
    head = hostile_heads()[name][: images.HEAD_BYTES]
    started = time.perf_counter()
    check(head)
    assert time.perf_counter() - started < 2.0
