"""Output files on disk, one directory per prediction, served under /delivery/."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

OUTPUT_NAME = "output.png"
# Ids are generated here; anything else in a delivery path must never reach the filesystem.
_SAFE_ID = re.compile(r"[a-z0-9]{1,64}")


class OutputFiles:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, prediction_id: str) -> Path:
        if not _SAFE_ID.fullmatch(prediction_id):
            raise FileNotFoundError(prediction_id)
        return self.root / prediction_id / OUTPUT_NAME

    def write(self, prediction_id: str, data: bytes) -> None:
        path = self._path(prediction_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a reader never sees half a PNG.
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as tmp:
            tmp.write(data)
        os.replace(tmp.name, path)

    def open(self, prediction_id: str) -> BinaryIO:
        """Raises FileNotFoundError when absent; an open file survives a later delete."""
        return self._path(prediction_id).open("rb")

    def delete(self, prediction_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self._path(prediction_id).parent)
