"""The log events Cloud Monitoring counts.

A line that a log-based metric (infra/modules/pipeline/monitoring.tf) counts carries an `event`
field with one of these values, besides its usual `severity`, `message` and ids; the metric's filter
names `jsonPayload.event` and the fields listed here. tests/pipeline/test_budget.py runs the stack,
captures the functions' lines and checks every metric's filter against them (infra/checks/log_filters.py),
so a renamed event or field fails a test instead of silencing an alert.
"""

from __future__ import annotations

import enum
from typing import Any

from bgremove import logs


class Event(enum.StrEnum):
    JOB_ADMITTED = "job_admitted"  # job_id, object, generation: an upload was queued (on_upload)
    SUBMISSION_DISPATCHED = "submission_dispatched"  # job_id, queue_age_seconds: a submission task ran
    PREDICTION_CREATED = "prediction_created"  # job_id, prediction_id, object: a paid prediction
    JOB_ENDED = "job_ended"  # job_id, object, state, reason: a job reached a final state
    API_THROTTLED = "api_throttled"  # status, method, path: the predictions API answered 429
    BUDGET_HELD = "budget_held"  # job_id, window, window_key, spent, budget: a submission held
    BUDGET_RELEASED = "budget_released"  # job_id, window, held_seconds: a held job went through


def emit(event: Event, severity: str, message: str, **fields: Any) -> None:
    """One structured line for `event` (the message is for people, the fields for metrics),
    written whatever LOG_LEVEL says: the alerts' ratios need every admitted and completed job."""
    logs.log(severity, message, always=True, event=event.value, **fields)
