"""A virtual environment with the deployed functions' dependencies only (requirements.txt under
constraints.txt), for the cold-start figure.

The development environment also holds the offline cloud's packages, which change what `import main`
costs. (google-api-core imports grpc whenever grpc is installed: once only the relay's
google-cloud-pubsub brought it; since the queue, requirements.txt's google-cloud-tasks does too, so
the deployed functions import it as well.)
Built with pip on first use into .venv-bench-runtime (`make clean` removes it) and rebuilt when
either file changes.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from offline_cloud.stack import ROOT

VENV = ROOT / ".venv-bench-runtime"
FILES = (ROOT / "requirements.txt", ROOT / "constraints.txt")


def _fingerprint() -> str:
    digest = hashlib.sha256(sys.version.encode())
    for path in FILES:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def python(build: bool = True) -> Path | None:
    """The runtime venv's interpreter, built if needed (None when absent and `build` is false)."""
    stamp = VENV / ".bench-fingerprint"
    interpreter = VENV / "bin" / "python"
    if stamp.exists() and stamp.read_text() == _fingerprint() and interpreter.exists():
        return interpreter
    if not build:
        return None
    for argv in (
        [sys.executable, "-m", "venv", "--clear", str(VENV)],
        [str(interpreter), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-c", str(FILES[1]), "-r", str(FILES[0])],
    ):  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise OSError(f"{' '.join(argv[:4])} failed: {(done.stderr or done.stdout)[-1000:]}")
    stamp.write_text(_fingerprint())
    return interpreter
