"""RFC 3339 timestamps, as the storage events, the predictions API and the completion events
write them ("2026-12-03T06:40:01.123Z")."""

from __future__ import annotations

from datetime import UTC, datetime


def parse(value: object) -> float | None:
    """Unix seconds of an RFC 3339 string, or None for anything else."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def format(when: float) -> str:
    """Unix seconds as RFC 3339 in UTC, to the millisecond."""
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
