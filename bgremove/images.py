"""Recognise image formats by their first bytes, so a content type that lies is caught."""

from __future__ import annotations

SNIFF_BYTES = 32


def sniff(head: bytes) -> str | None:
    """The image content type the bytes begin like, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def normalise_content_type(value: str) -> str:
    """`Image/JPEG; charset=x` -> `image/jpeg`; `image/jpg` is a common misspelling of jpeg."""
    base = value.split(";", 1)[0].strip().lower()
    return "image/jpeg" if base in ("image/jpg", "image/pjpeg") else base
