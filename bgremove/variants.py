"""Output variants: the files written for each cut-out, configured by the OUTPUT_VARIANTS setting.

OUTPUT_VARIANTS is empty (one variant, `cutout`: the model's PNG as it is) or a JSON array of 1 to
8 objects, one per file written for each upload:

    name        required; [a-z0-9-]{1,32}, unique; part of the output object name
    format      "png" (default) | "webp" | "jpeg"
    background  "transparent" (default) | "#RRGGBB"; jpeg has no transparency and needs a colour
    crop        false (default) | true: crop to the subject, the box of pixels whose alpha is at
                least CROP_ALPHA_THRESHOLD (the model's mattes leave a faint haze of low alpha
                that would otherwise widen the box to nearly the whole image); an image with no
                such pixel is not cropped
    margin      0 (default) | pixels (int, 0..10000) | "N%" of the box's longer side (0..100,
                up to two decimals); added on every side of the crop box, which may then reach
                past the image's edges: that part is padded with the background. Needs crop.
    canvas      null (default) | "square" (side = the longer side) | "WxH" (e.g. "1000x1000",
                1..65535, 16383 for webp): the (cropped) image centred and padded with the
                background; an image larger than WxH is first scaled down to fit
    max_size    null (default) | int 1..65535 (16383 for webp): the longer side is scaled down
                (LANCZOS) to this; never up
    mask        false (default) | true: write the alpha alone, as an 8-bit greyscale image
                (encoded in `format`; jpeg needs no colour then, and a background is an error)
    quality     1..100, default 90; jpeg and webp only

Example:

    [{"name": "cutout"},
     {"name": "white", "format": "jpeg", "background": "#ffffff", "crop": true, "margin": "5%",
      "canvas": "square", "max_size": 2000, "quality": 88},
     {"name": "mask", "mask": true, "crop": true, "margin": 16}]

A variant that is a PNG with a transparent background and no crop, canvas, max_size or mask is
`passthrough`: the model's PNG is stored byte for byte and never decoded (the default is one).

Per upload, custom metadata can change what is produced (`overrides_from_metadata`):
`keys.BACKGROUND` ("transparent" or "#RRGGBB") sets the background of every variant of that
upload except masks, and `keys.VARIANTS` (a comma-separated list of configured names) produces
only those.

Object names (`variant_object_name`): the first configured variant keeps today's name, the upload's
path ending in `.png`, when it is a PNG. Every other variant gets `<dir>/<stem>.<name>.<ext>`,
where `<dir>/<stem>.png` is that name and `<ext>` is png, webp or jpg: with `shop/shoe.png`, the
variant `white` as JPEG is `shop/shoe.white.jpg`. A name over Cloud Storage's 1,024-byte limit
loses the end of its stem for a digest of the full name, and keeps its `.<name>.<ext>` suffix.
Like today's names (`a.jpg` and `a.png` both become `a.png`), this can map two uploads onto one
object: `a.x.jpg`'s default output and `a.jpg`'s PNG variant `x` are both `a.x.png`.

Memory (`render`): Pillow holds RGBA and RGB at 4 bytes per pixel and greyscale at 1. The peak is
the decoded PNG plus one working copy, about 8-9 MB per megapixel of the model's output (200-220 MB
at 25 MP; a crop adds a 2-byte transient alpha), and about 5 MB per megapixel for masks. WebP is
the exception: libwebp needs about 15 more bytes per output pixel while encoding with alpha (6
without), so a transparent WebP peaks near 19 MB per megapixel (460 MB at 25 MP). All of this is
on top of the PNG bytes the caller holds and the encoded result; `peak_bytes_estimate` gives the
worst case for one image. Copies are avoided where Pillow allows: no crop copy when the box is the
whole image, the background is composited by pasting onto the output canvas (one allocation, no
RGBA->RGB conversion afterwards), and an output that needs no canvas is encoded from the working
image itself.

Colour (`render`'s `icc_profile`): the model reads an upload's raw pixel values and writes a PNG
without the upload's ICC profile, so a cut-out of an Adobe RGB or Display P3 photo holds that
space's values untagged, which every viewer takes for sRGB: colours shift (reds and greens go
dull). Given the upload's profile (`images.icc_profile` of its head), a rendered variant's pixels
are converted from it to sRGB (LittleCMS through Pillow's ImageCms, relative colorimetric: colours
inside sRGB are kept exactly, those outside it are clipped to its edge) before the background is
composited, and the output embeds an sRGB profile (588 bytes). sRGB rather than the upload's own
profile: shops, CDNs and resizers often strip profiles or assume sRGB, where an sRGB image still
shows right and a tagged Display P3 one does not; and `#RRGGBB` backgrounds are sRGB colours (as in
CSS), which must match the page around the image. The conversion is in place (no more memory) and
takes about 14 ms per megapixel of the output. A model PNG with a profile of its own is converted
from that one (it describes its pixels); a profile that is not an RGB profile LittleCMS can read is
ignored (the variant is rendered as without one). Without `icc_profile` (the default) nothing is
converted and the model's PNG's own profile, if any, is embedded as it is. Masks carry no profile.
A pass-through variant is the model's bytes, untagged: it is not converted.

Pillow is imported inside the functions that decode or encode, so parsing the setting and naming
objects costs nothing at a Cloud Function's cold start.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bgremove import errors, keys
from bgremove.errors import UnsupportedImage, VariantError
from bgremove.naming import MAX_OBJECT_NAME_BYTES

if TYPE_CHECKING:
    from PIL import Image, ImageCms

SETTING = "OUTPUT_VARIANTS"
BACKGROUND_KEY = keys.BACKGROUND
VARIANTS_KEY = keys.VARIANTS
DEFAULT_NAME = "cutout"
TRANSPARENT = "transparent"
FORMATS = ("png", "webp", "jpeg")
CONTENT_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
EXTENSIONS = {"png": "png", "webp": "webp", "jpeg": "jpg"}
DEFAULT_QUALITY = 90
MAX_VARIANTS = 8  # every variant is a full decode-and-encode of the cut-out: keep the work bounded
MAX_SETTING_BYTES = 16 * 1024
MAX_SIDE = 65535  # JPEG's limit on a side
MAX_WEBP_SIDE = 16383  # WebP's limit on a side
MAX_MARGIN_PIXELS = 10_000
# Alpha below this (of 255) is haze, not subject, when finding the crop box: the offline u2netp
# model leaves 1..15 over large parts of the background of some photos.
CROP_ALPHA_THRESHOLD = 16
# zlib level for PNG outputs: Pillow's default, about 4 s for 25 MP; 3 halves that for ~20% more bytes.
PNG_COMPRESS_LEVEL = 6
# libwebp's own working memory per output pixel while encoding (measured, libwebp 1.x, method 4).
WEBP_ENCODER_BYTES = 6
WEBP_ALPHA_ENCODER_BYTES = 15

FIELDS = ("name", "format", "background", "crop", "margin", "canvas", "max_size", "mask", "quality")
_NAME = re.compile(r"[a-z0-9-]{1,32}")
_COLOUR = re.compile(r"#[0-9a-f]{6}")
_CANVAS = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")
_PERCENT = re.compile(r"([0-9]{1,3}(?:\.[0-9]{1,2})?)%")


@dataclass(frozen=True)
class Margin:
    """Space added around the crop box on every side: pixels, or a percentage of its longer side."""

    pixels: int = 0
    percent: float = 0.0

    def resolve(self, box_width: int, box_height: int) -> int:
        """The margin in pixels for a box of this size (percentages round half up)."""
        if self.percent:
            return int(self.percent * max(box_width, box_height) / 100 + 0.5)
        return self.pixels

    def __bool__(self) -> bool:
        return bool(self.pixels or self.percent)


@dataclass(frozen=True)
class Variant:
    """One output file per upload. Construction validates; `background` is lower case."""

    name: str
    format: str = "png"
    background: str = TRANSPARENT
    crop: bool = False
    margin: Margin = Margin()
    canvas: str | None = None
    max_size: int | None = None
    mask: bool = False
    quality: int = DEFAULT_QUALITY

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem is not None:
            field, message = problem
            raise VariantError(f"variant {self.name!r}: {field}: {message}")

    @property
    def passthrough(self) -> bool:
        """True when the model's PNG is this variant byte for byte, so it need not be decoded."""
        return (
            self.format == "png"
            and self.background == TRANSPARENT
            and not self.crop
            and self.canvas is None
            and self.max_size is None
            and not self.mask
        )

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]

    @property
    def colour(self) -> tuple[int, int, int] | None:
        """The background as RGB, None when transparent."""
        if self.background == TRANSPARENT:
            return None
        value = int(self.background[1:], 16)
        return (value >> 16, (value >> 8) & 0xFF, value & 0xFF)


@dataclass(frozen=True)
class Overrides:
    """What one upload's metadata changes: None leaves the configuration as it is."""

    background: str | None = None
    variants: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Rendered:
    data: bytes
    content_type: str
    extension: str
    width: int
    height: int


@dataclass(frozen=True)
class Plan:
    """The geometry of one render, in pixels.

    `source` is the part of the decoded image used (inside it); it is scaled to `size` and pasted
    at `offset` on an output of `canvas` size.
    """

    source: tuple[int, int, int, int]
    size: tuple[int, int]
    canvas: tuple[int, int]
    offset: tuple[int, int]


# --- the setting ----------------------------------------------------------------------------------


def parse_variants(text: str) -> tuple[Variant, ...]:
    """The variants OUTPUT_VARIANTS configures; VariantError names the setting, variant and field."""
    if not text.strip():
        return (Variant(DEFAULT_NAME),)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SETTING_BYTES:
        raise VariantError(f"{SETTING} is longer than {MAX_SETTING_BYTES} bytes")
    try:
        value = json.loads(text, object_pairs_hook=_object_without_duplicates)
    except VariantError:
        raise
    except (ValueError, RecursionError) as exc:
        # RecursionError: deeply nested arrays; ValueError also covers integers too long to convert.
        raise VariantError(f"{SETTING} is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(value, list):
        raise VariantError(f"{SETTING} must be a JSON array of variant objects, not {_kind(value)}")
    if not value:
        raise VariantError(f"{SETTING} lists no variant; leave it empty for the default")
    if len(value) > MAX_VARIANTS:
        raise VariantError(f"{SETTING} lists {len(value)} variants; at most {MAX_VARIANTS} are allowed")
    variants = tuple(_parse_one(index, item) for index, item in enumerate(value))
    seen: set[str] = set()
    for index, variant in enumerate(variants):
        if variant.name in seen:
            raise VariantError(f"{SETTING}[{index}]: name: {variant.name!r} is used by an earlier variant")
        seen.add(variant.name)
    return variants


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys silently; in a setting that hides a mistake.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise VariantError(f"{SETTING}: key {key!r} appears twice in one object")
        result[key] = value
    return result


def _parse_one(index: int, item: object) -> Variant:
    where = f"{SETTING}[{index}]"
    if not isinstance(item, dict):
        raise VariantError(f"{where} must be an object, not {_kind(item)}")
    unknown = sorted(set(item) - set(FIELDS))
    if unknown:
        raise VariantError(f"{where}: unknown field {unknown[0]!r}; the fields are {', '.join(FIELDS)}")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise VariantError(f"{where}: name: required, 1 to 32 of a-z, 0-9 and '-', not {_show(name)}")
    where = f"{where} {name!r}"

    def fail(field: str, message: str) -> VariantError:
        return VariantError(f"{where}: {field}: {message}")

    fmt = item.get("format", "png")
    if fmt not in FORMATS:
        raise fail("format", f"must be one of {', '.join(map(repr, FORMATS))}, not {_show(fmt)}")
    background = _background(item.get("background", TRANSPARENT))
    if background is None:
        raise fail("background", f"must be 'transparent' or a colour like '#ffffff', not {_show(item['background'])}")
    flags: dict[str, bool] = {}
    for field in ("crop", "mask"):
        flag = item.get(field, False)
        if not isinstance(flag, bool):
            raise fail(field, f"must be true or false, not {_show(flag)}")
        flags[field] = flag
    margin = _margin(item.get("margin", 0))
    if margin is None:
        raise fail(
            "margin", f"must be pixels (0..{MAX_MARGIN_PIXELS}) or a percentage like '5%', not {_show(item['margin'])}"
        )
    canvas = item.get("canvas")
    if canvas is not None and not (isinstance(canvas, str) and (canvas == "square" or _CANVAS.fullmatch(canvas))):
        raise fail("canvas", f"must be null, 'square' or 'WxH' like '1000x1000', not {_show(canvas)}")
    max_size = item.get("max_size")
    if max_size is not None and not _is_int(max_size):
        raise fail("max_size", f"must be null or a whole number of pixels, not {_show(max_size)}")
    quality = item.get("quality", DEFAULT_QUALITY)
    if "quality" in item and fmt == "png":
        raise fail("quality", "applies to jpeg and webp only; png is lossless")
    if not _is_int(quality):
        raise fail("quality", f"must be a whole number 1..100, not {_show(quality)}")
    try:
        return Variant(
            name=name,
            format=fmt,
            background=background,
            crop=flags["crop"],
            margin=margin,
            canvas=canvas,
            max_size=max_size,
            mask=flags["mask"],
            quality=quality,
        )
    except VariantError as exc:
        raise VariantError(f"{SETTING}[{index}]: {exc}") from None


def _problem(variant: Variant) -> tuple[str, str] | None:
    """The first invalid field of a variant and what is wrong, or None. Checks values and combinations."""
    if not (isinstance(variant.name, str) and _NAME.fullmatch(variant.name)):
        return "name", "must be 1 to 32 of a-z, 0-9 and '-'"
    if variant.format not in FORMATS:
        return "format", f"must be one of {', '.join(FORMATS)}"
    if variant.background != TRANSPARENT and not (
        isinstance(variant.background, str) and _COLOUR.fullmatch(variant.background)
    ):
        return "background", "must be 'transparent' or a lower-case colour like '#ffffff'"
    if variant.mask and variant.background != TRANSPARENT:
        return "background", "a mask has no colour; remove the background"
    if variant.format == "jpeg" and not variant.mask and variant.background == TRANSPARENT:
        return "background", "jpeg has no transparency; set a colour such as '#ffffff'"
    margin = variant.margin
    if not (isinstance(margin, Margin) and _is_int(margin.pixels) and isinstance(margin.percent, int | float)):
        return "margin", "must be a Margin"
    if margin.pixels and margin.percent:
        return "margin", "either pixels or a percentage, not both"
    if not 0 <= margin.pixels <= MAX_MARGIN_PIXELS or not 0 <= margin.percent <= 100:
        return "margin", f"must be 0..{MAX_MARGIN_PIXELS} pixels or 0..100%"
    if margin and not variant.crop:
        return "margin", "is added around the crop box; it needs crop: true"
    side_limit = MAX_WEBP_SIDE if variant.format == "webp" else MAX_SIDE
    if variant.canvas is not None:
        size = _canvas_size(variant.canvas)
        if variant.canvas != "square" and (size is None or max(size) > side_limit):
            return "canvas", f"must be null, 'square' or 'WxH' with sides 1..{side_limit}"
    if variant.max_size is not None and not (_is_int(variant.max_size) and 1 <= variant.max_size <= side_limit):
        return "max_size", f"must be 1..{side_limit} pixels"
    if not (_is_int(variant.quality) and 1 <= variant.quality <= 100):
        return "quality", "must be 1..100"
    # Typed as bool, but a caller building a Variant by hand may pass 1 or "yes".
    flags: dict[str, object] = {"crop": variant.crop, "mask": variant.mask}
    for field, flag in flags.items():
        if not isinstance(flag, bool):
            return field, "must be true or false"
    return None


def _is_int(value: object) -> bool:
    # bool is an int in Python, but `true` is not a number of pixels.
    return isinstance(value, int) and not isinstance(value, bool)


def _background(value: object) -> str | None:
    """'transparent' or a lower-case '#rrggbb', or None when the value is neither."""
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    return value if value == TRANSPARENT or _COLOUR.fullmatch(value) else None


def _margin(value: object) -> Margin | None:
    if _is_int(value):
        assert isinstance(value, int)
        return Margin(pixels=value) if 0 <= value <= MAX_MARGIN_PIXELS else None
    if isinstance(value, str) and (match := _PERCENT.fullmatch(value)):
        percent = float(match.group(1))
        return Margin(percent=percent) if percent <= 100 else None
    return None


def _canvas_size(canvas: str) -> tuple[int, int] | None:
    match = _CANVAS.fullmatch(canvas)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _show(value: object) -> str:
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- per-upload overrides -------------------------------------------------------------------------


def override_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """The entries of an upload's custom metadata that `overrides_from_metadata` reads, as they
    are (unvalidated): what a job record keeps of the upload's metadata."""
    return {
        str(key): str(value)
        for key, value in metadata.items()
        if isinstance(key, str) and key.strip().lower() in (BACKGROUND_KEY, VARIANTS_KEY)
    }


def overrides_from_metadata(metadata: Mapping[str, str]) -> Overrides:
    """The overrides in an upload's custom metadata; VariantError names the key at fault.

    Keys match case-insensitively (Cloud Storage's XML API lower-cases them, its JSON API does
    not); an empty value counts as absent.
    """
    found: dict[str, str] = {}
    for key, value in metadata.items():
        lowered = key.strip().lower()
        if lowered not in (BACKGROUND_KEY, VARIANTS_KEY):
            continue
        if not isinstance(value, str):
            raise VariantError(f"metadata {lowered}: must be text")
        if lowered in found and found[lowered] != value:
            raise VariantError(f"metadata {lowered}: given twice, with different values")
        found[lowered] = value
    background = None
    raw = found.get(BACKGROUND_KEY, "").strip()
    if raw:
        background = _background(raw)
        if background is None:
            raise VariantError(
                f"metadata {BACKGROUND_KEY}: must be 'transparent' or a colour like '#ffffff', not {_show(raw)}"
            )
    names: tuple[str, ...] | None = None
    raw = found.get(VARIANTS_KEY, "").strip()
    if raw:
        listed = [part.strip() for part in raw.split(",") if part.strip()]
        for name in listed:
            if not _NAME.fullmatch(name):
                raise VariantError(f"metadata {VARIANTS_KEY}: {_show(name)} is not a variant name")
        names = tuple(dict.fromkeys(listed))
        if not names:
            raise VariantError(f"metadata {VARIANTS_KEY}: names no variant")
    return Overrides(background=background, variants=names)


def apply(variant: Variant, overrides: Overrides) -> Variant:
    """The variant with an upload's background override applied.

    A mask has no colour, so it ignores the override. A colour makes a passthrough variant
    non-passthrough; "transparent" on a variant that already is transparent changes nothing.
    """
    if overrides.background is None or variant.mask or overrides.background == variant.background:
        return variant
    if overrides.background == TRANSPARENT and variant.format == "jpeg":
        raise VariantError(
            f"metadata {BACKGROUND_KEY}: 'transparent' is impossible for the jpeg variant {variant.name!r}"
        )
    return replace(variant, background=overrides.background)


def select(configured: Sequence[Variant], overrides: Overrides) -> tuple[Variant, ...]:
    """The variants to produce for one upload, in configured order, with its overrides applied."""
    chosen = tuple(configured)
    if overrides.variants is not None:
        known = {variant.name for variant in configured}
        unknown = [name for name in overrides.variants if name not in known]
        if unknown:
            raise VariantError(
                f"metadata {VARIANTS_KEY}: no variant named {', '.join(map(repr, unknown))}; "
                f"configured: {', '.join(sorted(known))}"
            )
        chosen = tuple(variant for variant in configured if variant.name in overrides.variants)
    return tuple(apply(variant, overrides) for variant in chosen)


# --- names ----------------------------------------------------------------------------------------


def variant_object_name(base_output_name: str, variant: Variant, is_default: bool) -> str:
    """Where a variant is stored, given today's output name (see the module docstring)."""
    if is_default and variant.format == "png":
        return base_output_name
    directory, slash, file = base_output_name.rpartition("/")
    stem = posixpath.splitext(file)[0] or file
    head = directory + slash + stem
    suffix = f".{variant.name}.{variant.extension}"
    name = head + suffix
    if len(name.encode()) <= MAX_OBJECT_NAME_BYTES:
        return name
    # The digest keeps two long names that share their first kilobyte apart.
    digest = hashlib.sha256(base_output_name.encode()).hexdigest()[:16]
    budget = MAX_OBJECT_NAME_BYTES - len(suffix) - len(digest) - 1
    cut = head.encode()[:budget].decode("utf-8", "ignore")  # never half a character
    separator = "" if cut.endswith("/") or not cut else "-"
    return cut + separator + digest + suffix


# --- rendering ------------------------------------------------------------------------------------


def plan(width: int, height: int, subject: tuple[int, int, int, int] | None, variant: Variant) -> Plan:
    """The geometry of rendering a `width`x`height` cut-out whose subject box is `subject`.

    Steps, in order: the crop box (subject plus margin; no crop without a subject), the scale
    (max_size on the box's longer side, then fitting inside a WxH canvas; never up), the canvas
    (the scaled box centred, the remainder left to the background).
    """
    left, top, right, bottom = 0, 0, width, height
    if variant.crop and subject is not None:
        left, top, right, bottom = subject
        margin = variant.margin.resolve(right - left, bottom - top)
        left, top, right, bottom = left - margin, top - margin, right + margin, bottom + margin
    box_w, box_h = right - left, bottom - top
    scale = 1.0
    if variant.max_size is not None and max(box_w, box_h) > variant.max_size:
        scale = variant.max_size / max(box_w, box_h)
    fixed = _canvas_size(variant.canvas) if variant.canvas else None
    if fixed is not None:
        scale = min(scale, fixed[0] / box_w, fixed[1] / box_h)
    out_w, out_h = (box_w, box_h) if scale == 1.0 else (_scaled(box_w, scale), _scaled(box_h, scale))
    if fixed is not None:
        out_w, out_h = min(out_w, fixed[0]), min(out_h, fixed[1])
    # The part of the box inside the image; what lies outside is margin, left to the background.
    src = (max(left, 0), max(top, 0), min(right, width), min(bottom, height))
    x0, x1 = (round((edge - left) * out_w / box_w) for edge in (src[0], src[2]))
    y0, y1 = (round((edge - top) * out_h / box_h) for edge in (src[1], src[3]))
    size = (max(1, x1 - x0), max(1, y1 - y0))
    if variant.canvas == "square":
        canvas = (max(out_w, out_h),) * 2
    elif fixed is not None:
        canvas = fixed
    else:
        canvas = (out_w, out_h)
    dx, dy = (canvas[0] - out_w) // 2, (canvas[1] - out_h) // 2
    return Plan(source=src, size=size, canvas=(canvas[0], canvas[1]), offset=(dx + x0, dy + y0))


def _scaled(length: int, scale: float) -> int:
    return max(1, int(length * scale + 0.5))


def peak_bytes_estimate(width: int, height: int, variant: Variant) -> int:
    """Pillow's pixel memory at the peak of rendering one `width`x`height` cut-out, in bytes.

    The worst case: the subject fills the image (the largest crop). Excludes the input PNG bytes,
    the encoded output and the interpreter. 4 bytes per RGBA/RGB pixel, 1 per greyscale pixel,
    plus libwebp's working memory for WebP outputs.
    """
    if variant.passthrough:
        return 0
    n = width * height
    p = plan(width, height, (0, 0, width, height), variant)
    px = 1 if variant.mask else 4
    work = px * n
    stages = [4 * n + (n if variant.mask else 0)]  # decoded RGBA (+ its alpha, for a mask)
    if variant.crop:
        stages.append(work + 2 * n)  # alpha and its thresholded copy, for the subject box
    src_w, src_h = p.source[2] - p.source[0], p.source[3] - p.source[1]
    region = work
    if (src_w, src_h) != (width, height):
        region = px * src_w * src_h
        stages.append(work + region)
    scaled = px * p.size[0] * p.size[1]
    if p.size != (src_w, src_h):
        # Pillow resizes RGBA premultiplied: a full-size RGBa copy, then the scaled RGBa.
        stages.append(region + (region if not variant.mask else 0) + scaled)
    canvas = px * p.canvas[0] * p.canvas[1]
    if p.canvas != p.size or (variant.colour is not None and not variant.mask):
        stages.append(scaled + canvas)
    if variant.format == "webp":
        out_px = p.canvas[0] * p.canvas[1]
        has_alpha = variant.colour is None and not variant.mask
        encoder = (WEBP_ALPHA_ENCODER_BYTES if has_alpha else WEBP_ENCODER_BYTES) * out_px
        greyscale_copy = 4 * out_px if variant.mask else 0  # WebP has no greyscale: an RGB copy first
        stages.append(canvas + greyscale_copy + encoder)
    return max(stages)


def render(png: bytes, variant: Variant, max_pixels: int, *, icc_profile: bytes | None = None) -> Rendered:
    """Make one variant from the model's PNG (see the module docstring for the steps and memory).

    A passthrough variant returns `png` itself, after reading only its header. An image without a
    subject (nothing at or above CROP_ALPHA_THRESHOLD, e.g. all transparent) is not cropped.
    `icc_profile` is the upload's ICC profile, the colour space of the model's pixel values: given,
    the variant is converted to sRGB and tagged so (see "Colour" in the module docstring).
    """
    from PIL import Image, PngImagePlugin, UnidentifiedImageError

    del PngImagePlugin  # registers PNG without Image.init() importing every plugin
    try:
        image = Image.open(io.BytesIO(png), formats=["PNG"])
    except UnidentifiedImageError:
        raise UnsupportedImage("the model's output is not a PNG") from None
    except errors.decode_errors() as exc:
        raise UnsupportedImage(f"the model's PNG cannot be read ({type(exc).__name__}: {str(exc)[:200]})") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise UnsupportedImage(f"the model's PNG is {width}x{height} = {width * height} pixels, over {max_pixels}")
    if variant.passthrough:
        return Rendered(png, variant.content_type, variant.extension, width, height)
    icc = None if variant.mask else image.info.get("icc_profile")
    to_srgb = None
    if icc_profile is not None and not variant.mask:
        to_srgb = _to_srgb(icc or icc_profile)
        if to_srgb is not None:
            icc = _srgb_profile()
    try:
        image.load()
        work = _working_image(image, variant.mask)
        del image  # when a conversion made `work`, this frees the decoded original
        subject = _subject_box(work) if variant.crop else None
        layout = plan(width, height, subject, variant)
        _check_output(layout, variant, max_pixels)
        if layout.source != (0, 0, width, height):
            work = work.crop(layout.source)  # the old `work` is freed by the rebinding
        if work.size != layout.size:
            work = work.resize(layout.size, Image.Resampling.LANCZOS)
        if to_srgb is not None:
            # After cropping and scaling (fewer pixels), before the background (already sRGB).
            from PIL import ImageCms

            ImageCms.applyTransform(work, to_srgb, inPlace=True)
        out = _compose(work, layout, variant)
        del work
        return _encode(out, variant, icc)
    except UnsupportedImage:
        raise
    except errors.decode_errors() as exc:
        raise UnsupportedImage(f"the model's PNG cannot be rendered ({type(exc).__name__}: {str(exc)[:200]})") from exc


def _to_srgb(profile: bytes) -> ImageCms.ImageCmsTransform | None:
    """An RGBA transform from `profile` to sRGB, or None when it is not a usable RGB profile.

    Built per render (about 3 ms): a LittleCMS transform caches its last pixel as it runs, so one
    shared between requests on several threads would need locking.
    """
    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        if source.profile.xcolor_space != "RGB ":
            return None  # a CMYK, grey or Lab profile does not describe the model's RGB values
        return ImageCms.buildTransform(
            source, ImageCms.createProfile("sRGB"), "RGBA", "RGBA", ImageCms.Intent.RELATIVE_COLORIMETRIC
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def _srgb_profile() -> bytes:
    """The sRGB profile embedded in converted variants: LittleCMS's built-in (ICC v4, 588 bytes).

    A reader that cannot parse a v4 profile treats the image as untagged, which is sRGB as well.
    """
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _working_image(image: Image.Image, mask: bool) -> Image.Image:
    """RGBA (the model's usual mode: no copy), or for a mask the alpha alone (1 byte per pixel)."""
    from PIL import Image

    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if mask:
        if not has_alpha:
            return Image.new("L", image.size, 255)
        source = image if image.mode in ("RGBA", "LA") else image.convert("RGBA")
        return source.getchannel("A")
    return image if image.mode == "RGBA" else image.convert("RGBA")


def _subject_box(work: Image.Image) -> tuple[int, int, int, int] | None:
    alpha = work if work.mode == "L" else work.getchannel("A")
    lut = [0] * CROP_ALPHA_THRESHOLD + [255] * (256 - CROP_ALPHA_THRESHOLD)
    return alpha.point(lut).getbbox()


def _check_output(layout: Plan, variant: Variant, max_pixels: int) -> None:
    width, height = layout.canvas
    if width * height > max_pixels:
        raise UnsupportedImage(
            f"variant {variant.name!r} would be {width}x{height} = {width * height} pixels, over {max_pixels}"
        )
    if variant.format == "webp" and max(width, height) > MAX_WEBP_SIDE:
        raise UnsupportedImage(
            f"variant {variant.name!r} would be {width}x{height}; a WebP side is at most {MAX_WEBP_SIDE} (set max_size)"
        )


def _compose(work: Image.Image, layout: Plan, variant: Variant) -> Image.Image:
    """The output image: `work` itself when it fills a transparent output, else one new canvas."""
    from PIL import Image

    colour = None if variant.mask else variant.colour
    if colour is None and layout.canvas == work.size and layout.offset == (0, 0):
        return work
    if variant.mask:
        out = Image.new("L", layout.canvas, 0)
        out.paste(work, layout.offset)
    elif colour is None:
        out = Image.new("RGBA", layout.canvas, (0, 0, 0, 0))
        out.paste(work, layout.offset)  # no mask: the pixels and their alpha are copied
    else:
        out = Image.new("RGB", layout.canvas, colour)
        # With the image as its own mask, paste is "over" compositing onto the opaque colour.
        out.paste(work, layout.offset, work)
    return out


def _encode(out: Image.Image, variant: Variant, icc: bytes | None) -> Rendered:
    options: dict[str, Any] = {"icc_profile": icc} if icc else {}
    if variant.format == "png":
        options["compress_level"] = PNG_COMPRESS_LEVEL
    else:
        options["quality"] = variant.quality
    buffer = io.BytesIO()
    out.save(buffer, format=variant.format.upper(), **options)
    width, height = out.size
    return Rendered(buffer.getvalue(), variant.content_type, variant.extension, width, height)
