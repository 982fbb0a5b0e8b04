"""Prepare an upload for the model: upright pixels, one frame, in a format the model reads.

The model is sent JPEG, PNG or WebP, and nothing guarantees it applies EXIF orientation: a phone
photo stored sideways could come back as a sideways cut-out, so the pixels are turned here.
`prepare` returns None when the upload can go to the model byte for byte (the common case: nothing
is decoded), and otherwise a re-encoded `Prepared` image:

- EXIF orientation 2..8: the pixels are turned upright with the same transforms as Pillow's
  `ImageOps.exif_transpose`, written without EXIF (so no orientation is left to apply twice) in the
  upload's own format: JPEG at quality 95 with the original's chroma subsampling, PNG, or WebP
  (lossless when the upload was lossless, else quality 95).
- HEIC/HEIF and AVIF: converted to PNG when the image has an alpha channel, else to JPEG at quality
  95, upright. libheif already applies HEIF's own rotation boxes when decoding (pillow_heif then
  reports orientation 1); Pillow's AVIF plugin reports them as an EXIF orientation instead, which
  is applied here like any other.
- GIF: converted to PNG (lossless for palette images).
- Several frames (animated GIF/WebP, APNG, HEIF sequences and collections): the first frame only
  (for HEIF the primary image, the one viewers show), because the model takes one image. A JPEG
  with an MPO extension (phones add depth maps and previews that way) is still a plain JPEG to any
  decoder, so it passes through like one.

Whatever the conversion, the upload's ICC profile is embedded in the prepared copy as it is, and
the pixel values stay in its colour space: never converted, because the model reads raw values
(and drops the profile), and the completion side converts the cut-out from the upload's own
profile (`images.icc_profile` of its head, `variants.render`'s `icc_profile`), so the model must
see the same values whether an upload is prepared or goes as it is.

Refusals raise UnsupportedImage: bytes that are none of these formats or cannot be decoded, and
images whose pixel count exceeds `max_pixels`. The size is read from the header (Pillow's
`Image.open` is lazy) and checked before any pixel is decoded; this check is local, so it holds
whatever `PIL.Image.MAX_IMAGE_PIXELS` is set to (Pillow's own bomb check still runs first, and its
refusal becomes UnsupportedImage too).

Memory: a conversion holds the decoded image and its turned copy (Pillow keeps RGB at 4 bytes per
pixel), about 8 MB per megapixel, 200 MB at 25 MP; the original is released before encoding. A
WebP peaks near 20 MB per megapixel, for libwebp's own decoder and encoder buffers.

Pillow and pillow_heif are imported inside the functions that need them, never at module import,
so a Cloud Function instance that never converts anything does not pay for them at cold start.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bgremove import errors
from bgremove.errors import UnsupportedImage
from bgremove.images import normalise_content_type

if TYPE_CHECKING:
    from PIL import Image, ImageFile

JPEG_QUALITY = 95
WEBP_QUALITY = 95
# The model reads a prepared image once: zlib level 3 takes half the time of Pillow's default 6
# for about 20% more bytes (25 MP: ~1.7 s instead of ~3.8 s).
PNG_COMPRESS_LEVEL = 3
ORIENTATION_TAG = 0x0112

# Formats the model reads as they are, by Pillow's format name.
MODEL_TYPES = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
# Every format accepted at all; anything else (BMP, TIFF, PSD...) is refused rather than handed to
# one of Pillow's rarer decoders.
SOURCE_TYPES = {**MODEL_TYPES, "GIF": "image/gif", "HEIF": "image/heif", "AVIF": "image/avif"}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


@dataclass(frozen=True)
class Prepared:
    """Bytes to send to the model instead of the upload, and why they differ."""

    data: bytes
    content_type: str
    width: int
    height: int
    why: str


def prepare(data: bytes, content_type: str, max_pixels: int) -> Prepared | None:
    """None when `data` can go to the model as it is, else the converted image (see the module doc).

    `content_type` is the type the caller would send with the bytes. When the bytes are a JPEG, PNG
    or WebP that needs no conversion but the type disagrees, the result carries the same bytes with
    the right type, so the model is never told a lie.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be at least 1, not {max_pixels}")
    declared = normalise_content_type(content_type)
    with _open(data, max_pixels) as image:
        fmt = image.format or ""
        orientation = _orientation(image, data)
        if fmt in MODEL_TYPES:
            actual = MODEL_TYPES[fmt]
            # An MPO's extra images are invisible to JPEG decoders: only true animations count.
            animated = fmt != "MPO" and bool(getattr(image, "is_animated", False))
            if orientation not in _TRANSPOSE_NAMES and not animated:
                if declared == actual:
                    return None
                width, height = image.size
                return Prepared(data, actual, width, height, f"the bytes are {actual}, not {declared or 'untyped'}")
        return _convert(image, data, fmt, orientation)


def orientation_of(data: bytes) -> int:
    """The EXIF orientation that viewers apply to `data` (1 when absent or invalid)."""
    with _open(data, None) as image:
        return _orientation(image, data)


# The transforms of ImageOps.exif_transpose: stored pixels -> what a viewer shows.
_TRANSPOSE_NAMES = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}


@functools.cache
def _register_plugins() -> None:
    """Import exactly the Pillow plugins accepted, once.

    Importing a plugin by name registers it, so `Image.open` never falls back to `init()`, which
    would import every Pillow plugin.
    """
    from PIL import GifImagePlugin, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

    del GifImagePlugin, JpegImagePlugin, PngImagePlugin, WebPImagePlugin


@functools.cache
def _isobmff_formats(heif: bool) -> tuple[str, ...]:
    """Pillow format names for HEIF-family containers; registers pillow_heif only when needed."""
    from PIL import AvifImagePlugin, Image

    del AvifImagePlugin
    if heif:
        import pillow_heif

        pillow_heif.register_heif_opener()
    # AVIF first: pillow_heif also claims the generic `mif1` brand, which AVIF files use too.
    return tuple(name for name in ("AVIF", "HEIF") if name in Image.OPEN and (heif or name == "AVIF"))


def _open(data: bytes, max_pixels: int | None) -> ImageFile.ImageFile:
    """Open lazily (header only) and refuse an image over `max_pixels` before its pixels decode."""
    from PIL import Image, UnidentifiedImageError

    _register_plugins()
    formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF")
    if data[4:8] == b"ftyp":
        formats = _isobmff_formats(heif=data[8:12] not in (b"avif", b"avis"))
    try:
        image: ImageFile.ImageFile = Image.open(io.BytesIO(data), formats=list(formats))
    except UnidentifiedImageError:
        raise UnsupportedImage("not a JPEG, PNG, WebP, GIF, HEIF or AVIF image") from None
    except errors.decode_errors() as exc:
        raise UnsupportedImage(f"not a readable JPEG, PNG, WebP, GIF, HEIF or AVIF image ({_describe(exc)})") from exc
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        image.close()
        raise UnsupportedImage(f"image is {width}x{height} = {width * height} pixels, over max_pixels {max_pixels}")
    return image


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _orientation(image: ImageFile.ImageFile, data: bytes) -> int:
    """The EXIF orientation, 1 when absent, malformed or out of range (viewers ignore those too)."""
    from PIL import Image

    try:
        if image.format == "PNG":
            # Pillow's PNG getexif() decodes the whole image to look for an eXIf chunk after the
            # pixels; walking the chunk headers finds it without decoding anything.
            exif = Image.Exif()
            payload = _png_exif(data)
            if payload is not None:
                exif.load(payload)
            elif "Raw profile type exif" in image.info:
                return _orientation_value(image.getexif().get(ORIENTATION_TAG))
            return _orientation_value(exif.get(ORIENTATION_TAG))
        return _orientation_value(image.getexif().get(ORIENTATION_TAG))
    except errors.decode_errors():
        return 1


def _orientation_value(value: object) -> int:
    return value if isinstance(value, int) and value in _TRANSPOSE_NAMES else 1


def _png_exif(data: bytes) -> bytes | None:
    """The payload of the first eXIf chunk, wherever it is, without decompressing anything."""
    position = 8
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        start, end = position + 8, position + 8 + length
        if end > len(data) or kind == b"IEND":
            return None
        if kind == b"eXIf":
            return data[start:end]
        position = end + 4  # skip the CRC
    return None


def _webp_lossless(data: bytes) -> bool:
    """Whether the (first frame of the) WebP is VP8L, the lossless codec; walks RIFF chunk headers."""
    position = 12
    while position + 8 <= len(data):
        kind = data[position : position + 4]
        size = int.from_bytes(data[position + 4 : position + 8], "little")
        if kind == b"VP8L":
            return True
        if kind == b"VP8 ":
            return False
        if kind == b"ANMF":
            # A frame: 16 bytes of placement and timing, then the frame's own chunks.
            position += 8 + 16
            continue
        position += 8 + size + (size & 1)  # chunks are padded to an even length
    return False


def _convert(image: ImageFile.ImageFile, data: bytes, fmt: str, orientation: int) -> Prepared:
    """Decode the current frame (the first, or HEIF's primary), turn it upright and re-encode it."""
    from PIL import Image

    reasons = []
    try:
        if fmt != "MPO" and getattr(image, "is_animated", False):
            reasons.append(f"first frame of {getattr(image, 'n_frames', 'several')} (the model takes one image)")
        image.load()
        frame: Image.Image = image
        if orientation in _TRANSPOSE_NAMES:
            frame = image.transpose(Image.Transpose[_TRANSPOSE_NAMES[orientation]])
            reasons.append(f"EXIF orientation {orientation} turned upright")
        frame, out_format, options = _encoding(image, frame, fmt, data)
        if frame is not image:
            image.close()  # frees the decoded original before the encoder allocates its buffers
        out = io.BytesIO()
        frame.save(out, format=out_format, **options)
    except errors.decode_errors() as exc:
        raise UnsupportedImage(f"cannot decode the {SOURCE_TYPES[fmt]} image ({_describe(exc)})") from exc
    content_type = MODEL_TYPES[out_format]
    if content_type != SOURCE_TYPES[fmt]:
        reasons.insert(0, f"{SOURCE_TYPES[fmt]} converted to {content_type}, a type the model reads")
    width, height = frame.size
    return Prepared(out.getvalue(), content_type, width, height, "; ".join(reasons))


def _encoding(
    source: ImageFile.ImageFile, frame: Image.Image, fmt: str, data: bytes
) -> tuple[Image.Image, str, dict[str, Any]]:
    """The frame (converted if its mode needs it), Pillow format name and save options.

    No `exif` option is ever passed: Pillow writes EXIF only when asked, so the output carries no
    orientation at all.
    """
    options: dict[str, Any] = {}
    icc = source.info.get("icc_profile")
    if icc:
        options["icc_profile"] = icc
    if fmt in ("HEIF", "AVIF"):
        has_alpha = frame.mode in _ALPHA_MODES or "transparency" in frame.info
        fmt = "PNG" if has_alpha else "JPEG"
        if has_alpha and frame.mode not in ("RGBA", "LA"):
            frame = frame.convert("RGBA")
    if fmt in ("JPEG", "MPO"):
        from PIL import JpegImagePlugin

        if frame.mode not in ("L", "RGB", "CMYK"):
            frame = frame.convert("RGB")
        options["quality"] = JPEG_QUALITY
        # Subsampling is only known for a JPEG source; get_sampling answers -1 otherwise.
        sampling = JpegImagePlugin.get_sampling(source)
        if sampling != -1:
            options["subsampling"] = sampling
        return frame, "JPEG", options
    if fmt == "WEBP":
        if _webp_lossless(data):
            # exact: keep the colour under fully transparent pixels, as a lossless source had it.
            options.update(lossless=True, exact=True)
        else:
            options["quality"] = WEBP_QUALITY
        return frame, "WEBP", options
    # PNG, GIF: PNG keeps palettes and their transparency (Pillow copies them from the frame's info).
    options["compress_level"] = PNG_COMPRESS_LEVEL
    return frame, "PNG", options
