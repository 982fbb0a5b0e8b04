"""Fetch a prediction's output safely: https only, allow-listed hosts only, no IP literals, a size
cap enforced while streaming, and image bytes checked before anything is written.

The body is never held whole in memory: `OutputStream` is a file-like object that the storage
upload reads chunk by chunk.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests

from bgremove import images
from bgremove.errors import OutputRefused, OutputUnavailable

MAX_REDIRECTS = 3


def check_url(url: str, allowed_hosts: tuple[str, ...]) -> str:
    """Return the lower-cased host of `url` or raise OutputRefused saying why."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise OutputRefused("output URL is malformed") from None
    if parts.scheme != "https":
        raise OutputRefused(f"output URL scheme {parts.scheme or 'none'!r} is not https")
    if parts.username is not None or parts.password is not None:
        raise OutputRefused("output URL carries credentials")
    if not host:
        raise OutputRefused("output URL has no host")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        raise OutputRefused("output URL host is an IP address")
    if not any(host == allowed or host.endswith("." + allowed) for allowed in allowed_hosts):
        raise OutputRefused(f"output host {host!r} is not allowed")
    return host


@dataclass
class OutputStream:
    """A capped, sniffed reader over an HTTP response body."""

    response: requests.Response
    content_type: str
    size: int | None
    max_bytes: int
    _head: bytes = b""
    _read: int = 0  # bytes taken from the network so far, the sniffed head included
    _position: int = 0  # bytes handed to the reader so far

    def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes (all that is left when n < 0); fewer only at the end of the body."""
        want = self.max_bytes + 1 if n < 0 else n
        parts = []
        if self._head:
            parts.append(self._head[:want])
            self._head = self._head[want:]
            want -= len(parts[0])
        while want > 0:
            try:
                chunk = self.response.raw.read(min(want, 1024 * 1024), decode_content=True) or b""
            except Exception as exc:  # urllib3 raises its own errors for resets and timeouts
                raise OutputUnavailable(f"output download failed: {type(exc).__name__}") from exc
            if not chunk:
                break
            self._read += len(chunk)
            if self._read > self.max_bytes:
                raise OutputRefused(f"output is larger than {self.max_bytes} bytes")
            parts.append(chunk)
            want -= len(chunk)
        data = b"".join(parts)
        self._position += len(data)
        return data

    def tell(self) -> int:
        """The read position: a resumable upload (the one used when the length is unknown) asks."""
        return self._position

    def close(self) -> None:
        self.response.close()


def open_output(
    url: str,
    allowed_hosts: tuple[str, ...],
    max_bytes: int,
    timeout: float,
    session: requests.Session,
) -> OutputStream:
    """Start downloading an output; the caller streams it and must close it."""
    for _ in range(MAX_REDIRECTS + 1):
        check_url(url, allowed_hosts)
        try:
            response = session.get(url, stream=True, timeout=timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise OutputUnavailable(f"output download failed: {type(exc).__name__}") from exc
        if response.is_redirect:
            location = response.headers.get("Location", "")
            response.close()
            # Each hop passes the same checks, so a redirect cannot lead off the allow-list.
            url = urljoin(url, location)
            continue
        return _open(response, max_bytes)
    raise OutputRefused("output URL redirects too many times")


def _open(response: requests.Response, max_bytes: int) -> OutputStream:
    status = response.status_code
    if status >= 500 or status == 429:
        response.close()
        raise OutputUnavailable(f"output host answered {status}")
    if status != 200:
        response.close()
        raise OutputRefused(f"output host answered {status}")
    size: int | None = None
    length = response.headers.get("Content-Length")
    if length is not None and not response.headers.get("Content-Encoding"):
        try:
            size = int(length)
        except ValueError:
            size = None
        if size is not None and size > max_bytes:
            response.close()
            raise OutputRefused(f"output is {size} bytes, over the {max_bytes}-byte cap")
    try:
        head = response.raw.read(images.SNIFF_BYTES, decode_content=True) or b""
    except Exception as exc:
        response.close()
        raise OutputUnavailable(f"output download failed: {type(exc).__name__}") from exc
    sniffed = images.sniff(head)
    if sniffed is None:
        response.close()
        raise OutputRefused("output is not an image")
    declared = images.normalise_content_type(response.headers.get("Content-Type", ""))
    if declared.startswith("image/") and declared != sniffed:
        response.close()
        raise OutputRefused(f"output bytes are {sniffed} but declared {declared}")
    return OutputStream(response, sniffed, size, max_bytes, _head=head, _read=len(head))
