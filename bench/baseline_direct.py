"""The baseline of the bulk figure: direct submission, the design bgremove had before the queue.

Each upload event claims its job and creates the prediction from inside the storage trigger, with
the predictions client's own retries: API_MAX_ATTEMPTS attempts (4, the old default) with capped
exponential backoff and full jitter, sleeping inside the function and honouring Retry-After. When
the budget is spent the claim is given back and the function raises, so functions-framework
answers 500 and Eventarc (offline: the relay) delivers the event again with its own backoff,
10 s doubling to 600 s. That is the retry storm issue 11 describes.

    functions-framework --target on_upload_direct --source bench/baseline_direct.py

It reuses the pipeline's modules unchanged — the admission decision (`admission.decide`), the claim
(`lifecycle.claim`, given the source so a missing record is created claimed, as the old design
did), the failure record (`submit.fail_claimed`) and the submission itself (`submit.submit_job`:
read the head, sniff, build the image reference, create the prediction with its webhook, record
it) — over a `Deps` built by `bgremove.runtime`, except that the queue seam is a no-op: the old
design had no Cloud Tasks, so no deadline checks are scheduled (its reconciler sweep found overdue
jobs instead). A live claim answers "retry later"; a claim given back after a transient error, or
one whose lease expired, is taken over; anything else is a duplicate. The webhook that completes
the job is the pipeline's own. This module writes no job record itself.

Environment: the pipeline's (the stack's function environment) with API_MAX_ATTEMPTS=4,
API_BACKOFF_SECONDS=0.5 and API_BACKOFF_MAX_SECONDS=8, the old defaults (the bench sets them).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import functions_framework
from cloudevents.http import CloudEvent

from bgremove import admission, lifecycle, logs, outcomes, runtime, submit
from bgremove.config import Config
from bgremove.deps import Deps
from bgremove.outcomes import Outcome, Result
from bgremove.tasks import Task


class NoQueue:
    """The queue seam of a design without Cloud Tasks: nothing is ever enqueued."""

    def enqueue(self, task: Task) -> bool:
        return False

    def exists(self, queue: str, name: str) -> bool:
        return False


_NO_QUEUE = NoQueue()


@functools.cache
def deps() -> Deps:
    """The pipeline's per-instance clients (bgremove.runtime), without a task queue."""
    return dataclasses.replace(runtime.deps(), queue=lambda: _NO_QUEUE)


@functions_framework.cloud_event
def on_upload_direct(cloud_event: CloudEvent) -> None:
    """Storage trigger: claim and submit in this invocation; raising asks Eventarc to redeliver."""
    # The pipeline's own decoder, so both designs read the same events the same way; imported here,
    # not at the top, because main reads the configuration at import and bench/calls.py imports
    # this module (for NoQueue) in a process without it.
    from main import upload_event

    event = upload_event(cloud_event)
    if event is None:
        logs.warning("event ignored: data is not a storage object", event_id=cloud_event.get("id"), outcome="ignored")
        return
    handle_upload_direct(event, runtime.config(), deps(), time.time())


def handle_upload_direct(event: admission.UploadEvent, cfg: Config, deps: Deps, now: float) -> Result:
    """Decide as uploads are decided, claim, record a refusal, then create the prediction at once."""
    fields: dict[str, Any] = {
        "object": f"gs://{event.bucket}/{event.name}",
        "generation": event.generation,
        "event_id": event.event_id,
        "design": "direct submission (bench baseline)",
    }
    decided = admission.decide(event, cfg, now)
    if decided.refusal is not None and decided.refusal.outcome is not Outcome.FAILED:
        return _log(Result(decided.refusal.outcome, decided.message), fields)
    source = decided.source
    fields["job_id"] = source.job_id
    claim = lifecycle.claim(source.job_id, cfg, deps, now, source=source)
    if claim.result is not lifecycle.Claimed.TAKEN or claim.job is None:
        state = claim.job.state if claim.job is not None else "gone"
        return _log(Result(Outcome.DUPLICATE, f"job is already {state}", source.job_id), fields)
    if decided.refusal is not None:
        reason = decided.refusal.value
        return submit.fail_claimed(claim.job, claim.generation, reason, decided.message, cfg, deps, now, fields)
    # The API call, with the client's in-function retries; RetryLater propagates (500: redelivery).
    return submit.submit_job(claim.job, claim.generation, cfg, deps, now, fields)


def _log(result: Result, fields: dict[str, Any]) -> Result:
    return outcomes.log("upload", result, fields)
