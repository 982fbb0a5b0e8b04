"""Uploaded input files: Replicate's ``/v1/files`` API, as the official client uses it.

``replicate.run(..., input={"image": open(...)})`` uploads the file first (multipart field
``content``) and passes the file's ``urls.get`` as the input; the service then reads such a URL
from its own store rather than over HTTP, as Replicate resolves its file URLs internally.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .inputs import InputError
from .store import iso, new_prediction_id

# Replicate keeps uploaded files for a day.
FILE_TTL_SECONDS = 24 * 3600.0


@dataclass
class UploadedFile:
    id: str
    name: str
    content_type: str
    size: int
    md5: str
    sha256: str
    prefix: str
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)

    def to_json(self, public_base: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "content_type": self.content_type,
            "size": self.size,
            "etag": self.md5,
            "checksums": {"sha256": self.sha256, "md5": self.md5},
            "metadata": self.metadata,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.created_at + FILE_TTL_SECONDS),
            "urls": {"get": f"{public_base}{self.prefix}/files/{self.id}"},
        }


class UploadedFiles:
    def __init__(self, root: Path, prefixes: Sequence[str]) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.prefixes = tuple(prefixes)
        # Set once the socket is bound (as PredictionStore.public_base is).
        self.public_base = ""
        self._lock = threading.Lock()
        self._items: dict[str, UploadedFile] = {}

    def _path(self, file_id: str) -> Path:
        return self.root / file_id  # ids are generated here: [a-z0-9]{26}

    def _live(self, file_id: str) -> UploadedFile | None:
        """Under the lock: the file, or None when unknown or expired (expired ones are removed)."""
        item = self._items.get(file_id)
        if item is not None and time.time() - item.created_at >= FILE_TTL_SECONDS:
            del self._items[file_id]
            with contextlib.suppress(FileNotFoundError):
                self._path(file_id).unlink()
            return None
        return item

    def create(
        self, data: bytes, name: str, content_type: str, metadata: dict[str, Any], prefix: str
    ) -> dict[str, Any]:
        item = UploadedFile(
            id=new_prediction_id(),
            name=name,
            content_type=content_type,
            size=len(data),
            # An etag, as Replicate's is: a content fingerprint, not a security measure.
            md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            sha256=hashlib.sha256(data).hexdigest(),
            prefix=prefix,
            metadata=metadata,
        )
        with tempfile.NamedTemporaryFile(dir=self.root, delete=False, suffix=".tmp") as tmp:
            tmp.write(data)
        os.replace(tmp.name, self._path(item.id))
        with self._lock:
            self._items[item.id] = item
            return item.to_json(self.public_base)

    def get(self, file_id: str) -> dict[str, Any] | None:
        with self._lock:
            item = self._live(file_id)
            return None if item is None else item.to_json(self.public_base)

    def listing(self) -> list[dict[str, Any]]:
        with self._lock:
            items = [item for file_id in list(self._items) if (item := self._live(file_id)) is not None]
            items.sort(key=lambda item: item.created_at, reverse=True)
            return [item.to_json(self.public_base) for item in items]

    def delete(self, file_id: str) -> bool:
        with self._lock:
            if self._items.pop(file_id, None) is None:
                return False
        with contextlib.suppress(FileNotFoundError):
            self._path(file_id).unlink()
        return True

    def read(self, file_id: str) -> tuple[bytes, str] | None:
        """The content and content type, or None when unknown or expired."""
        with self._lock:
            item = self._live(file_id)
        if item is None:
            return None
        try:
            return self._path(file_id).read_bytes(), item.content_type
        except FileNotFoundError:  # deleted between the look-up and the read
            return None

    def resolve(self, url: str) -> bytes | None:
        """The bytes behind one of this service's file URLs, or None when ``url`` is not one.

        Raises InputError for a file URL of ours that names no live file.
        """
        if not self.public_base or not url.startswith(self.public_base + "/"):
            return None
        path = urllib.parse.urlsplit(url).path
        for prefix in self.prefixes:
            head = f"{prefix}/files/"
            if path.startswith(head):
                file_id = path[len(head) :].removesuffix("/download")
                found = self.read(file_id) if file_id.isalnum() else None
                if found is None:
                    raise InputError(f"input file {file_id} not found (it may have expired)")
                return found[0]
        return None
