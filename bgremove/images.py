"""Recognise image formats by their first bytes, and read what their headers say about the image.

The Cloud Function reads only the start of an upload ("the head"), so everything here is pure byte
parsing with the standard library: no decoder is imported, nothing is decoded. `sniff` needs
SNIFF_BYTES; `dimensions`, `exif_orientation`, `exif_beyond_head`, `is_animated` and `icc_profile`
want HEAD_BYTES.

Every function takes bytes that may be anything (truncated, lying lengths, hostile) and answers
without raising: None / orientation 1 / False when the head is too short or not understood. Every
loop advances through the head by at least one byte per turn, so none can spin.

Dimensions are the size as stored, before EXIF orientation is applied (the same as Pillow's
`Image.open(...).size` for JPEG, PNG, WebP and GIF). HEIF and AVIF differ: their rotation is not
EXIF metadata but a transform property (`irot`) of the image item, which decoders must apply, so
`dimensions` returns the image as shown (cropped by `clap`, turned by `irot`; what libheif and
pillow_heif report) and `exif_orientation` is 1. Either way, the displayed size is `dimensions`
with width and height swapped when `exif_orientation` is 5..8.
"""

from __future__ import annotations

import zlib
from typing import Literal

SNIFF_BYTES = 32

# How much of an upload to range-read for `dimensions` and `exif_orientation`. A JPEG keeps its
# metadata in APPn segments before the frame header (SOF), each up to 64 KiB (a 16-bit length): an
# Exif block with its thumbnail is commonly 20-64 KiB on its own, and cameras and editors add an
# XMP segment (up to 64 KiB, more with extended XMP), an ICC profile (APP2, split into 64 KiB
# pieces when larger), MPF and Photoshop/IPTC (APP13) blocks, so SOF can lie past 64 KiB in
# ordinary photos and past 128 KiB in heavily tagged ones. 256 KiB holds four full 64 KiB segments ahead of
# SOF. The HEIF `meta` box (with `ispe`) of phone photos is a few KiB right after `ftyp`; PNG's IHDR,
# GIF's screen descriptor and WebP's first chunk are in the first 32 bytes. A 256 KiB range read is
# a few milliseconds inside a region, and a small fraction of a multi-megabyte photo.
HEAD_BYTES = 256 * 1024

ORIENTATION_TAG = 0x0112

# ISO-BMFF (HEIF) brands, from the `ftyp` box.
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis"})
_HEIF_BRANDS = frozenset({b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_ISOBMFF_TYPES = ("image/heic", "image/heif", "image/avif")

# JPEG start-of-frame markers: C0-C3, C5-C7, C9-CB, CD-CF (C4 is DHT, C8 JPG, CC DAC).
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# Markers that stand alone, without a length: TEM, RST0-7, SOI.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8), 0xD8})
_JPEG_SOS, _JPEG_EOI, _JPEG_APP1 = 0xDA, 0xD9, 0xE1

_EXIF_PREFIX = b"Exif\x00\x00"
# TIFF field types that hold one integer in an entry's value field: BYTE, SBYTE, SHORT, SSHORT, LONG,
# SLONG (Pillow reads orientation of any of them; signed values are never 1..8 when negative).
_TIFF_INTEGER_SIZES = {1: 1, 6: 1, 3: 2, 8: 2, 4: 4, 9: 4}

# ICC profiles. A JPEG splits one into APP2 segments that begin with this, then a 1-based sequence
# number and the count of segments; every ICC profile has this signature at byte 36 of its header.
_ICC_PREFIX = b"ICC_PROFILE\x00"
_ICC_SIGNATURE = b"acsp"
_JPEG_APP2 = 0xE2
# A PNG's iCCP is zlib-compressed: it is inflated no further than this (Pillow's own limit for it,
# PngImagePlugin.MAX_TEXT_CHUNK), so a small chunk cannot expand into gigabytes.
MAX_ICC_BYTES = 1024 * 1024

# WebP VP8X flags.
_VP8X_ANIMATION = 0x02
_VP8X_EXIF = 0x08

# A box, chunk or segment: (type, payload start, payload end). The end is what the length field
# says and may lie past the head; readers check against len(head) before reading.
_Part = tuple[bytes, int, int]


def _be(data: bytes, at: int, size: int) -> int:
    return int.from_bytes(data[at : at + size], "big")


def _le(data: bytes, at: int, size: int) -> int:
    return int.from_bytes(data[at : at + size], "little")


# --- sniffing ---------------------------------------------------------------------------------


def sniff(head: bytes) -> str | None:
    """The image content type the bytes begin like, or None.

    PNG, JPEG, WebP and GIF by their signatures; HEIC/HEIF and AVIF by the ISO-BMFF `ftyp` box that
    opens the file (see `_isobmff_type`).
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return _isobmff_type(head)


def _isobmff_type(head: bytes) -> str | None:
    """image/avif, image/heic or image/heif from the `ftyp` box, or None.

    The major brand decides when it names a codec: avif/avis (AVIF still / sequence) -> image/avif;
    heic/heix/heim/heis (HEVC stills) and hevc/hevx (HEVC sequences, whose IANA type is
    image/heic-sequence) -> image/heic. Otherwise (major brand mif1/msf1, or a profile brand such
    as MA1B or miaf) the first compatible brand that names a codec decides the same way, and a
    file that is only mif1/msf1 (HEIF with some other codec) is image/heif. Only the compatible
    brands inside the head count: SNIFF_BYTES holds the major brand and four compatible ones, where
    encoders (libheif, libavif, Apple's) put the codec brand.
    """
    if len(head) < 12 or head[4:8] != b"ftyp":
        return None
    size = _be(head, 0, 4)
    if size < 16:  # size, type, major brand, minor version; 0 and 1 (to-the-end, 64-bit) are not for ftyp
        return None
    brands = [head[8:12]] + [head[at : at + 4] for at in range(16, min(size, len(head)) - 3, 4)]
    for brand in brands:
        if brand in _AVIF_BRANDS:
            return "image/avif"
        if brand in _HEIC_BRANDS:
            return "image/heic"
    if any(brand in _HEIF_BRANDS for brand in brands):
        return "image/heif"
    return None


def normalise_content_type(value: str) -> str:
    """`Image/JPEG; charset=x` -> `image/jpeg`; `image/jpg` is a common misspelling of jpeg."""
    base = value.split(";", 1)[0].strip().lower()
    return "image/jpeg" if base in ("image/jpg", "image/pjpeg") else base


# --- walking containers -----------------------------------------------------------------------


def _jpeg_segments(head: bytes) -> tuple[list[_Part], bool]:
    """The marker segments before the first scan, and whether the walk got to the scan (or EOI).

    Fill bytes (runs of 0xFF before a marker) are skipped, and so are stray bytes between segments,
    as libjpeg and Pillow do; standalone markers (RSTn, TEM, SOI) carry no length.
    """
    segments: list[_Part] = []
    n = len(head)
    at = 2
    while at < n:
        if head[at] != 0xFF:
            at += 1
            continue
        while at < n and head[at] == 0xFF:
            at += 1
        if at >= n:
            break
        marker = head[at]
        at += 1
        if marker == 0x00 or marker in _JPEG_STANDALONE:  # 0xFF00 is an escaped 0xFF: junk here
            continue
        if marker in (_JPEG_SOS, _JPEG_EOI):
            return segments, True
        if at + 2 > n:
            break
        length = _be(head, at, 2)
        if length < 2:
            break
        segments.append((bytes([marker]), at + 2, at + length))
        at += length
    return segments, False


def _png_chunks(head: bytes) -> list[_Part]:
    """The PNG chunks whose headers lie in the head, up to IEND."""
    chunks: list[_Part] = []
    at = 8
    while at + 8 <= len(head):
        length = _be(head, at, 4)
        kind = head[at + 4 : at + 8]
        chunks.append((kind, at + 8, at + 8 + length))
        if kind == b"IEND":
            break
        at += 12 + length  # length, type, data, CRC
    return chunks


def _riff_chunks(head: bytes) -> tuple[list[_Part], bool]:
    """The WebP chunks whose headers lie in the head, and whether the head holds the whole RIFF."""
    chunks: list[_Part] = []
    end = 8 + _le(head, 4, 4)
    limit = min(end, len(head))
    at = 12
    while at + 8 <= limit:
        size = _le(head, at + 4, 4)
        chunks.append((head[at : at + 4], at + 8, at + 8 + size))
        at += 8 + size + (size & 1)  # chunks are padded to an even size
    return chunks, end <= len(head) and at + 8 > end


def _boxes(head: bytes, start: int, end: int) -> list[_Part]:
    """The ISO-BMFF boxes in head[start:end] whose headers lie in the head."""
    boxes: list[_Part] = []
    limit = min(end, len(head))
    at = start
    while at + 8 <= limit:
        size = _be(head, at, 4)
        kind = head[at + 4 : at + 8]
        header = 8
        if size == 1:  # a 64-bit size follows the type
            if at + 16 > limit:
                break
            size = _be(head, at + 8, 8)
            header = 16
        elif size == 0:  # the box runs to the end of its container
            size = end - at
        if size < header:
            break
        boxes.append((kind, at + header, at + size))
        at += size
    return boxes


def _gif_frames(head: bytes) -> list[tuple[int, int, int, int]]:
    """(left, top, width, height) of each image descriptor in the head, in order."""
    n = len(head)
    if n < 13:
        return []
    frames: list[tuple[int, int, int, int]] = []
    at = 13
    if head[10] & 0x80:  # global colour table
        at += 3 << ((head[10] & 7) + 1)
    while at < n:
        block = head[at]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: introducer, label, sub-blocks
            at = _skip_sub_blocks(head, at + 2)
        elif block == 0x2C:  # image descriptor
            if at + 10 > n:
                break
            frames.append((_le(head, at + 1, 2), _le(head, at + 3, 2), _le(head, at + 5, 2), _le(head, at + 7, 2)))
            flags = head[at + 9]
            at += 10
            if flags & 0x80:  # local colour table
                at += 3 << ((flags & 7) + 1)
            at = _skip_sub_blocks(head, at + 1)  # after the LZW minimum code size
        else:
            at += 1  # a stray byte between blocks: Pillow skips it too
    return frames


def _skip_sub_blocks(head: bytes, at: int) -> int:
    """The offset after the data sub-blocks starting at `at` (past the head if they run out)."""
    while at < len(head):
        size = head[at]
        at += 1 + size
        if size == 0:
            break
    return at


# --- dimensions -------------------------------------------------------------------------------


def dimensions(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the header in `head`, or None when it is too short or not understood.

    PNG: IHDR. JPEG: the first SOFn frame header. WebP: the VP8/VP8L frame header or the VP8X
    canvas. GIF: the logical screen, grown to the first frame's extent when that reaches further
    (as Pillow does), so None until the first image descriptor is in the head. HEIC/HEIF/AVIF: the
    primary item's `ispe` in meta/iprp/ipco, cropped by its `clap` and turned by its `irot`; when
    the file names no primary item or gives it no `ispe`, the largest `ispe` (full images are
    never smaller than their thumbnails and tiles); None until the whole `meta` box is in the head.
    A zero width or height is None.
    """
    kind = sniff(head)
    size: tuple[int, int] | None = None
    if kind == "image/png":
        size = _png_size(head)
    elif kind == "image/jpeg":
        size = _jpeg_size(head)
    elif kind == "image/webp":
        size = _webp_size(head)
    elif kind == "image/gif":
        size = _gif_size(head)
    elif kind in _ISOBMFF_TYPES:
        size = _heif_size(head)
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    return size


def _png_size(head: bytes) -> tuple[int, int] | None:
    if len(head) < 24 or head[12:16] != b"IHDR" or _be(head, 8, 4) < 13:
        return None
    return _be(head, 16, 4), _be(head, 20, 4)


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    segments, _ = _jpeg_segments(head)
    for marker, start, _end in segments:
        if marker[0] in _JPEG_SOF:
            if start + 5 > len(head):
                return None
            # precision (1 byte), number of lines (2), samples per line (2)
            return _be(head, start + 3, 2), _be(head, start + 1, 2)
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunks, _ = _riff_chunks(head)
    if not chunks:
        return None
    kind, start, _end = chunks[0]
    if kind == b"VP8 ":
        # frame tag (3 bytes, bit 0 clear on a key frame), start code, 14-bit width and height
        if start + 10 > len(head) or head[start] & 1 or head[start + 3 : start + 6] != b"\x9d\x01\x2a":
            return None
        return _le(head, start + 6, 2) & 0x3FFF, _le(head, start + 8, 2) & 0x3FFF
    if kind == b"VP8L":
        # signature 0x2f, then 14 bits width - 1, 14 bits height - 1, alpha bit, 3-bit version 0
        if start + 5 > len(head) or head[start] != 0x2F:
            return None
        bits = _le(head, start + 1, 4)
        if bits >> 29:
            return None
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X":
        # flags (1 byte), reserved (3), canvas width - 1 (24 bits), canvas height - 1 (24 bits)
        if start + 10 > len(head):
            return None
        return _le(head, start + 4, 3) + 1, _le(head, start + 7, 3) + 1
    return None


def _gif_size(head: bytes) -> tuple[int, int] | None:
    frames = _gif_frames(head)
    if not frames:
        return None
    left, top, width, height = frames[0]
    return max(_le(head, 6, 2), left + width), max(_le(head, 8, 2), top + height)


def _heif_size(head: bytes) -> tuple[int, int] | None:
    found = _heif_properties(head)
    if found is None:
        return None
    properties, associated = found
    if any(prop[0] == b"ispe" for prop in associated):
        return _heif_item_size(head, associated)
    sizes = [size for size in (_ispe(head, prop) for prop in properties) if size is not None]
    return max(sizes, key=lambda size: size[0] * size[1], default=None)


def _heif_properties(head: bytes) -> tuple[list[_Part], list[_Part]] | None:
    """(every property in meta/iprp/ipco, those the primary item is associated with, in order), or
    None until the whole `meta` box is in the head. No primary item, or none associated: []."""
    meta = next((box for box in _boxes(head, 0, len(head)) if box[0] == b"meta"), None)
    if meta is None or meta[2] > len(head):
        return None  # a cut-off meta could hold a thumbnail's ispe and not yet the associations
    primary: int | None = None
    properties: list[_Part] = []
    ipmas: list[_Part] = []
    for kind, start, end in _boxes(head, meta[1] + 4, meta[2]):  # meta is a full box
        if kind == b"pitm" and start < len(head):
            id_size = 2 if head[start] == 0 else 4  # after version and flags
            if start + 4 + id_size <= len(head):
                primary = _be(head, start + 4, id_size)
        elif kind == b"iprp":
            for child in _boxes(head, start, end):
                if child[0] == b"ipco":
                    properties = _boxes(head, child[1], child[2])
                elif child[0] == b"ipma":
                    ipmas.append(child)
    indices = None
    if primary is not None:
        for ipma in ipmas:
            indices = _ipma_indices(head, ipma, primary)
            if indices is not None:
                break
    associated = [properties[i - 1] for i in indices or () if 0 < i <= len(properties)]
    return properties, associated


def _ipma_indices(head: bytes, ipma: _Part, item: int) -> list[int] | None:
    """The 1-based ipco indices that an ipma box associates with `item`, or None if it has none."""
    _, start, end = ipma
    limit = min(end, len(head))
    if start + 8 > limit:
        return None
    version, flags = head[start], _be(head, start + 1, 3)
    id_size = 2 if version == 0 else 4
    index_size = 2 if flags & 1 else 1
    mask = 0x7FFF if flags & 1 else 0x7F  # the top bit says whether the property is essential
    count = _be(head, start + 4, 4)
    at = start + 8
    for _ in range(count):  # each entry takes at least 3 bytes, so this ends with the box
        if at + id_size + 1 > limit:
            return None
        entry = _be(head, at, id_size)
        associations = head[at + id_size]
        at += id_size + 1
        if at + associations * index_size > limit:
            return None
        if entry == item:
            return [_be(head, at + k * index_size, index_size) & mask for k in range(associations)]
        at += associations * index_size
    return None


def _ispe(head: bytes, prop: _Part) -> tuple[int, int] | None:
    kind, start, _end = prop
    if kind != b"ispe" or start + 12 > len(head):
        return None
    return _be(head, start + 4, 4), _be(head, start + 8, 4)  # after version and flags


def _heif_item_size(head: bytes, associated: list[_Part]) -> tuple[int, int] | None:
    """The item's ispe with its transforms applied in order: clap crops, irot 90/270 swaps."""
    size = next((s for s in (_ispe(head, prop) for prop in associated) if s is not None), None)
    if size is None:
        return None
    width, height = size
    for kind, start, _end in associated:
        if kind == b"irot" and start < len(head):
            if head[start] & 1:
                width, height = height, width
        elif kind == b"clap":
            if start + 16 > len(head):
                return None
            # clean aperture width and height, each a numerator and denominator (then the offsets)
            clean_width = _rounded(_be(head, start, 4), _be(head, start + 4, 4))
            clean_height = _rounded(_be(head, start + 8, 4), _be(head, start + 12, 4))
            if not (0 < clean_width <= width and 0 < clean_height <= height):
                return None  # not a crop of the image: not understood
            width, height = clean_width, clean_height
    return width, height


def _rounded(numerator: int, denominator: int) -> int:
    """numerator / denominator to the nearest integer, halves up; 0 when the denominator is 0."""
    return (2 * numerator + denominator) // (2 * denominator) if denominator else 0


# --- EXIF orientation -------------------------------------------------------------------------


def exif_orientation(head: bytes) -> int:
    """The EXIF orientation (tag 0x0112 in IFD0) in `head`: 1..8, and 1 when absent or invalid.

    JPEG: the first APP1 segment that begins "Exif\\0\\0" (Pillow reads the same one). PNG: the eXIf
    chunk. WebP: the EXIF chunk of an extended (VP8X) file. Either byte order (II or MM). Other
    formats are 1 (HEIF's rotation is `irot`, already in `dimensions`). An EXIF block that lies
    past the head reads as 1: see `exif_beyond_head`.
    """
    exif = _exif_block(head)
    return 1 if exif is None else _tiff_orientation(exif)


def exif_beyond_head(head: bytes) -> bool:
    """Whether EXIF may lie past the head, so that `exif_orientation`'s 1 is not the last word.

    True for a WebP whose VP8X header announces EXIF when the head ends before its EXIF chunk
    (libwebp writes EXIF after the image data, so it is past the head in large WebP files); for a
    JPEG when the head ends before the first scan without an Exif segment; for a PNG when the head
    ends before the first IDAT without an eXIf chunk. An eXIf chunk after IDAT (unusual; writers
    put it before) is only found when it is inside the head, and this does not flag it.
    """
    kind = sniff(head)
    if _exif_block(head) is not None:
        return False
    if kind == "image/jpeg":
        _, reached_scan = _jpeg_segments(head)
        return not reached_scan
    if kind == "image/png":
        return not any(chunk[0] in (b"IDAT", b"IEND") for chunk in _png_chunks(head))
    if kind == "image/webp":
        chunks, whole = _riff_chunks(head)
        if not chunks or chunks[0][0] != b"VP8X" or chunks[0][1] >= len(head):
            return False
        return bool(head[chunks[0][1]] & _VP8X_EXIF) and not whole
    return False


def _exif_block(head: bytes) -> bytes | None:
    """The TIFF-structured EXIF data in the head (perhaps cut off by the end of the head), or None."""
    kind = sniff(head)
    if kind == "image/jpeg":
        segments, _ = _jpeg_segments(head)
        for marker, start, end in segments:
            if marker[0] == _JPEG_APP1 and head[start : start + 6] == _EXIF_PREFIX:
                return head[start + 6 : end]
        return None
    if kind == "image/png":
        chunks = _png_chunks(head)
        found = next((head[start:end] for name, start, end in chunks if name == b"eXIf"), None)
    elif kind == "image/webp":
        chunks, _ = _riff_chunks(head)
        if not chunks or chunks[0][0] != b"VP8X":
            return None
        found = next((head[start:end] for name, start, end in chunks if name == b"EXIF"), None)
    else:
        return None
    if found is None:
        return None
    # The chunk holds the TIFF data itself, but some writers keep JPEG's "Exif\0\0" in front of it
    # (Pillow strips any number of them; counted first, so a chunk of nothing else costs one copy).
    at = 0
    while found.startswith(_EXIF_PREFIX, at):
        at += len(_EXIF_PREFIX)
    return found[at:]


def _tiff_orientation(tiff: bytes) -> int:
    """The orientation in IFD0 of TIFF data: 1..8, else 1. The last 0x0112 entry wins (as in Pillow)."""
    order: Literal["little", "big"]
    if tiff[:4] == b"II*\x00":
        order = "little"
    elif tiff[:4] == b"MM\x00*":
        order = "big"
    else:
        return 1

    def number(at: int, size: int) -> int:
        return int.from_bytes(tiff[at : at + size], order)

    ifd = number(4, 4)
    if ifd < 8 or ifd + 2 > len(tiff):
        return 1
    entries = number(ifd, 2)
    value: int | None = None
    for at in range(ifd + 2, min(ifd + 2 + 12 * entries, len(tiff) - 11), 12):
        if number(at, 2) != ORIENTATION_TAG:
            continue
        kind, count = number(at + 2, 2), number(at + 4, 4)
        size = _TIFF_INTEGER_SIZES.get(kind)
        value = number(at + 8, size) if count == 1 and size else None
    return value if value is not None and 1 <= value <= 8 else 1


# --- ICC profiles -----------------------------------------------------------------------------


def icc_profile(head: bytes) -> bytes | None:
    """The ICC profile embedded in `head`, as Pillow's `info["icc_profile"]` (and pillow_heif's) has
    it, or None: no profile, not wholly inside the head, or malformed.

    JPEG: the APP2 "ICC_PROFILE" segments before the frame header, joined in the order of their
    sequence numbers, when there are as many as they declare (as Pillow does); a profile that
    reaches past the head is None, never a part of it. PNG: the first iCCP chunk before the image
    data, inflated (a whole zlib stream of at most MAX_ICC_BYTES). WebP: the ICCP chunk of an
    extended (VP8X) file. HEIC/HEIF and AVIF: the `colr` property of type `prof` or `rICC`
    associated with the primary item (a `colr` of type `nclx` is coded primaries, not a profile:
    None). GIF: None (Pillow reads none). Whatever the container, bytes without an ICC header
    signature ("acsp") are None.
    """
    kind = sniff(head)
    profile: bytes | None = None
    if kind == "image/jpeg":
        profile = _jpeg_icc(head)
    elif kind == "image/png":
        profile = _png_icc(head)
    elif kind == "image/webp":
        chunks, _ = _riff_chunks(head)
        if chunks and chunks[0][0] == b"VP8X":
            found = next(((start, end) for name, start, end in chunks if name == b"ICCP"), None)
            if found is not None and found[1] <= len(head):
                profile = head[found[0] : found[1]]
    elif kind in _ISOBMFF_TYPES:
        profile = _heif_icc(head)
    if profile is None or len(profile) < 128 or profile[36:40] != _ICC_SIGNATURE:
        return None
    return profile


def _jpeg_icc(head: bytes) -> bytes | None:
    # Like Pillow: the segments before the frame header, sorted as bytes (so by sequence number),
    # and the lowest-numbered one's count must be how many there are.
    pieces: list[bytes] = []
    for marker, start, end in _jpeg_segments(head)[0]:
        if marker[0] in _JPEG_SOF:
            break
        if marker[0] != _JPEG_APP2 or not head.startswith(_ICC_PREFIX, start):
            continue
        if end > len(head) or end < start + len(_ICC_PREFIX) + 2:
            return None  # cut off by the end of the head, or too short to hold its numbering
        pieces.append(head[start:end])
    if not pieces:
        return None
    pieces.sort()
    if pieces[0][13] != len(pieces):
        return None
    return b"".join(piece[14:] for piece in pieces)


def _png_icc(head: bytes) -> bytes | None:
    for kind, start, end in _png_chunks(head):
        if kind in (b"IDAT", b"IEND"):
            return None
        if kind != b"iCCP":
            continue
        if end > len(head):
            return None
        # profile name (1-79 bytes), a NUL, compression method 0 (zlib), the compressed profile
        separator = head.find(b"\x00", start, min(end, start + 80))
        if separator < 0 or separator + 1 >= end or head[separator + 1] != 0:
            return None
        inflater = zlib.decompressobj()
        try:
            profile = inflater.decompress(head[separator + 2 : end], MAX_ICC_BYTES)
        except zlib.error:
            return None
        return profile if inflater.eof and not inflater.unconsumed_tail else None
    return None


def _heif_icc(head: bytes) -> bytes | None:
    found = _heif_properties(head)
    if found is None:
        return None
    for kind, start, end in found[1]:
        if kind == b"colr" and end <= len(head) and head[start : start + 4] in (b"prof", b"rICC"):
            return head[start + 4 : end]
    return None


# --- animation --------------------------------------------------------------------------------


def is_animated(head: bytes) -> bool:
    """Whether the head shows an animation (best effort: a False may be a head that is too short).

    GIF: a second image descriptor within the head (a first frame longer than the head hides the
    rest). WebP: the VP8X animation flag, unless the head holds the whole file and it has at most
    one ANMF frame. APNG: an acTL chunk before the first IDAT that makes more than one frame as
    Pillow counts them: num_frames, plus the IDAT image when no fcTL precedes it (then it is not
    part of the animation); a second acTL cancels the first, as in Pillow. Others: False,
    including HEIF/AVIF image sequences, whose frames live in tracks this does not read.
    """
    kind = sniff(head)
    if kind == "image/gif":
        return len(_gif_frames(head)) > 1
    if kind == "image/png":
        frames: int | None = None
        control = False  # an fcTL before IDAT: the IDAT image is the first frame
        for name, start, _end in _png_chunks(head):
            if name == b"IDAT":
                # Without an fcTL before it, the IDAT image is shown only by decoders that do not
                # animate, and is not one of the num_frames: Pillow counts it as one more frame.
                return frames is not None and (frames > 1 or not control)
            if name == b"acTL":
                if start + 8 > len(head):
                    return False
                # Like Pillow: a second acTL cancels the first; num_frames 0 or > 2**31 is ignored.
                count = _be(head, start, 4)
                frames = None if frames is not None else count if 0 < count <= 0x80000000 else None
            elif name == b"fcTL":
                control = True
        return False
    if kind == "image/webp":
        chunks, whole = _riff_chunks(head)
        if not chunks or chunks[0][0] != b"VP8X" or chunks[0][1] >= len(head):
            return False
        if not head[chunks[0][1]] & _VP8X_ANIMATION:
            return False
        return not whole or sum(chunk[0] == b"ANMF" for chunk in chunks) > 1
    return False
