"""Turning a prediction's ``image`` input (data URL or http(s) URL) into a decoded image."""

from __future__ import annotations

import base64
import binascii
import io
import time
import urllib.parse
from collections.abc import Callable

import requests
from PIL import Image, ImageOps, UnidentifiedImageError

HTTP_SCHEMES = ("http://", "https://")


class InputError(Exception):
    """The input could not be fetched or decoded; the message becomes the prediction's error."""


def is_supported_url(value: str) -> bool:
    lowered = value[:8].lower()
    return lowered.startswith("data:") or lowered.startswith(HTTP_SCHEMES)


def _data_url_bytes(url: str, max_bytes: int) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep:
        raise InputError("invalid data URL: no ',' separator")
    if header.lower().endswith(";base64"):
        # Base64 is 4/3 the size; check before decoding so a huge input is never held twice.
        if len(payload) * 3 // 4 > max_bytes:
            raise InputError(f"input image larger than {max_bytes} bytes")
        try:
            data = base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise InputError(f"invalid base64 in data URL: {exc}") from exc
    else:
        data = urllib.parse.unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise InputError(f"input image larger than {max_bytes} bytes")
    return data


def _http_bytes(url: str, timeout: float, max_bytes: int) -> bytes:
    # requests' timeout bounds each socket read; the deadline bounds the whole download.
    deadline = time.monotonic() + timeout
    try:
        with requests.get(url, stream=True, timeout=timeout) as response:
            if response.status_code != 200:
                raise InputError(f"could not fetch input image: HTTP {response.status_code}")
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise InputError(f"input image larger than {max_bytes} bytes")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_content(64 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    raise InputError(f"input image larger than {max_bytes} bytes")
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise InputError(f"could not fetch input image: took over {timeout:g} s")
            return b"".join(chunks)
    except requests.RequestException as exc:
        raise InputError(f"could not fetch input image: {type(exc).__name__}: {exc}") from exc


def decode_image(data: bytes, max_pixels: int, draft: tuple[int, int] | None = None) -> Image.Image:
    """``draft`` lets a JPEG decode at a reduced scale no smaller than that size (much cheaper)."""
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise InputError(f"input image too large: {width}x{height} pixels")
        if draft is not None:
            image.draft("RGB", draft)
        image.load()
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"could not decode input image: {exc}") from exc
    # Phone photos store rotation in EXIF; apply it so the mask matches what people see.
    return ImageOps.exif_transpose(image)


# Returns the bytes behind a URL this service serves itself (an uploaded file), or None.
LocalResolver = Callable[[str], bytes | None]


def load_image(
    url: str,
    timeout: float,
    max_bytes: int,
    max_pixels: int,
    local: LocalResolver | None = None,
    draft: tuple[int, int] | None = None,
) -> Image.Image:
    local_data = local(url) if local is not None else None
    if local_data is not None:
        data = local_data
        if len(data) > max_bytes:
            raise InputError(f"input image larger than {max_bytes} bytes")
    elif url[:5].lower() == "data:":
        data = _data_url_bytes(url, max_bytes)
    elif url[:8].lower().startswith(HTTP_SCHEMES):
        data = _http_bytes(url, timeout, max_bytes)
    else:
        raise InputError("image must be a data: URL or an http(s) URL")
    if not data:
        raise InputError("input image is empty")
    return decode_image(data, max_pixels, draft)
