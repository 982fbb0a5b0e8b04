"""The narrow seam between the core and object storage: just what the pipeline needs.

`storage.GcsObjects` implements it over Cloud Storage (and the offline emulator); the unit tests use
an in-memory implementation. Implementations raise only the errors of `bgremove.errors`:
`NotFound`, `PreconditionFailed`, and `StorageUnavailable` for anything worth retrying.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Delivery:
    """The HTTP headers an object is served with (empty: not set)."""

    cache_control: str = ""
    content_disposition: str = ""
    content_language: str = ""


class Readable(Protocol):
    """What an upload reads from: a stream that knows its position (resumable uploads ask)."""

    def read(self, n: int = -1, /) -> bytes: ...

    def tell(self) -> int: ...


class Objects(Protocol):
    def read_head(self, bucket: str, name: str, generation: int, length: int) -> bytes:
        """The first `length` bytes of one object generation (fewer if it is shorter)."""
        ...

    def read_bytes(self, bucket: str, name: str, generation: int) -> bytes:
        """All bytes of one object generation."""
        ...

    def copy(self, bucket: str, name: str, generation: int, to_bucket: str, to_name: str) -> None:
        """Server-side copy of one object generation."""
        ...

    def metadata(self, bucket: str, name: str) -> tuple[dict[str, str], int] | None:
        """The live object's custom metadata and generation, or None when absent."""
        ...

    def read_json(self, bucket: str, name: str) -> tuple[dict[str, Any], int] | None:
        """A JSON record and the generation it was read at, or None when absent."""
        ...

    def write_json(
        self,
        bucket: str,
        name: str,
        record: dict[str, Any],
        if_generation_match: int,
        metadata: dict[str, str] | None = None,
    ) -> int:
        """Write a record only if its generation is still `if_generation_match` (0: only if absent);
        returns the new generation. `metadata` goes into the object's custom metadata."""
        ...

    def delete(self, bucket: str, name: str, if_generation_match: int | None = None) -> None:
        """Delete an object (only at that generation when given); absent is not an error."""
        ...

    def list_with_metadata(self, bucket: str, prefix: str) -> Iterator[tuple[str, dict[str, str]]]:
        """(name, custom metadata) of every live object under `prefix`."""
        ...

    def create_object(
        self,
        bucket: str,
        name: str,
        stream: Readable,
        size: int | None,
        content_type: str,
        metadata: dict[str, str],
        if_generation_match: int = 0,
        delivery: Delivery | None = None,
    ) -> int:
        """Write an object from a stream, only if the live object is at `if_generation_match`
        (0: only if there is none), else PreconditionFailed; returns the new generation."""
        ...

    def signed_url(self, bucket: str, name: str, generation: int | None, ttl_seconds: int, signer_email: str) -> str:
        """A V4 signed GET URL for one object generation (the live one when `generation` is None)."""
        ...
