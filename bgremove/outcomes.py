"""What a handler reports: one family of outcomes for every entry point, and the result record.

`main.py` maps outcomes to HTTP status codes with a table over this enum; logs carry its value
(`outcome` field); the reconciler counts them. The values are plain strings (a StrEnum), so a log
line, a task answer or a JSON report reads the same as before.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from bgremove import logs


class Outcome(enum.StrEnum):
    # Admission (storage events, backfill) and submission tasks.
    IGNORED = "ignored"  # not for us: another event type or bucket, a non-terminal status, a task for no job
    SKIPPED = "skipped"  # filtered out by configuration; no record
    DUPLICATE = "duplicate"  # another delivery owns or finished this job: no second effect
    QUEUED = "queued"  # admitted: the submission task is in the queue
    SUBMITTED = "submitted"  # a prediction was created and recorded
    # Settling (webhook, deadline check, sweep).
    COMPLETED = "completed"  # every output variant written
    FAILED = "failed"  # ended in a failure record
    SUPERSEDED = "superseded"  # a newer generation of the upload is live: nothing written, nothing more paid
    REMOVED = "removed"  # the upload was deleted: its outputs removed (or none made)
    UNAUTHORIZED = "unauthorized"
    MALFORMED = "malformed"
    UNKNOWN_JOB = "unknown_job"
    MISMATCH = "mismatch"
    # A deadline check or a sweep over one job.
    GONE = "gone"  # no record
    NOT_DUE = "not_due"  # final, or something moved it on since the check was scheduled
    STILL_QUEUED = "still_queued"  # its submission task is still waiting its turn
    WAITING = "waiting"  # its prediction is still running: checked again later
    REQUEUED = "requeued"  # back into the submission queue under a new task
    SETTLED_COMPLETED = "settled_completed"  # a finished prediction written as its webhook would
    SETTLED_FAILED = "settled_failed"
    SETTLED_DUPLICATE = "settled_duplicate"
    SETTLED_IGNORED = "settled_ignored"
    SETTLED_MISMATCH = "settled_mismatch"
    SETTLED_SUPERSEDED = "settled_superseded"
    SETTLED_REMOVED = "settled_removed"
    RETRY_LATER = "retry_later"  # a transient failure left it for the next run
    ANNOUNCED = "announced"  # a finished job's end, not announced before, announced now
    NOTIFIED = "notified"  # NOTIFY_URL took the event


# A deadline check that settles a job reports what settling did, marked as the check's doing.
SETTLED = {
    Outcome.COMPLETED: Outcome.SETTLED_COMPLETED,
    Outcome.FAILED: Outcome.SETTLED_FAILED,
    Outcome.DUPLICATE: Outcome.SETTLED_DUPLICATE,
    Outcome.IGNORED: Outcome.SETTLED_IGNORED,
    Outcome.MISMATCH: Outcome.SETTLED_MISMATCH,
    Outcome.SUPERSEDED: Outcome.SETTLED_SUPERSEDED,
    Outcome.REMOVED: Outcome.SETTLED_REMOVED,
    Outcome.UNKNOWN_JOB: Outcome.GONE,
}


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    reason: str
    job_id: str = ""
    prediction_id: str = ""


# Outcomes that are a refusal of a hostile or broken request: logged as warnings.
REFUSALS = (Outcome.UNAUTHORIZED, Outcome.MALFORMED, Outcome.MISMATCH)


def log(side: str, result: Result, fields: dict[str, Any]) -> Result:
    """One structured line for a handler's result ("<side> <outcome>: <reason>"), with the job and
    prediction ids of the result (or of `fields`) and the other fields; returns the result."""
    severity = "WARNING" if result.outcome in REFUSALS else "INFO"
    ids = {
        "job_id": result.job_id or fields.get("job_id"),
        "prediction_id": result.prediction_id or fields.get("prediction_id"),
    }
    logs.log(
        severity, f"{side} {result.outcome.value}: {result.reason}", outcome=result.outcome.value, **{**fields, **ids}
    )
    return result
