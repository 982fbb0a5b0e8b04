"""Structured JSON log lines for Cloud Logging.

Cloud Logging parses a JSON line on stdout into a structured entry: `severity` and `message` are
recognised, other keys become jsonPayload fields. Callers pass only non-secret fields; URLs pass
through `redact_url` so signed-URL signatures and query tokens never reach the log.
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}
_state = {"level": 20, "events": True}


def set_level(level: str) -> None:
    _state["level"] = _LEVELS.get(level.upper(), 20)


def set_events(on: bool) -> None:
    """Whether `always` lines are written below LOG_LEVEL (yes in the functions, where the metrics
    read them; the operators' command turns them off unless --verbose)."""
    _state["events"] = on


def redact_url(url: str) -> str:
    """Keep scheme, host and path; drop the query and fragment (where signatures live)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.scheme == "data":
        return "data:<redacted>"
    query = "<redacted>" if parts.query else ""
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, query, ""))


_URL = re.compile(r"""(?:https?|data):[^\s'"<>]+""", re.IGNORECASE)


# Query parameters that carry credentials, also when quoted without scheme and host
# (requests says "Max retries exceeded with url: /bucket/object?X-Goog-Signature=...").
_SECRET_PARAM = re.compile(r"(?i)\b(x-goog-signature|x-goog-credential|signature|token|access_token|key)=[^&\s'\"]+")


def scrub_urls(text: str) -> str:
    """Redact every URL inside free text (an error message may quote a signed URL)."""
    return _SECRET_PARAM.sub(r"\1=<redacted>", _URL.sub(lambda m: redact_url(m.group(0)), text))


def log(severity: str, message: str, always: bool = False, **fields: Any) -> None:
    """One line at `severity`, unless LOG_LEVEL is above it; `always` lines are written at any
    LOG_LEVEL (those the log-based metrics count: a quieter log must not blind an alert)."""
    if _LEVELS.get(severity, 20) < _state["level"] and not (always and _state["events"]):
        return
    entry: dict[str, Any] = {"severity": severity, "message": message, "time": _now()}
    entry.update({key: value for key, value in fields.items() if value is not None})
    # Free text (error messages from libraries and the API) may quote a URL with a signature.
    for key in ("message", "error"):
        if isinstance(entry.get(key), str):
            entry[key] = scrub_urls(entry[key])
    sys.stdout.write(json.dumps(entry, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def debug(message: str, **fields: Any) -> None:
    log("DEBUG", message, **fields)


def info(message: str, **fields: Any) -> None:
    log("INFO", message, **fields)


def warning(message: str, **fields: Any) -> None:
    log("WARNING", message, **fields)


def error(message: str, **fields: Any) -> None:
    log("ERROR", message, **fields)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
