"""The baseline of the bulk figure: direct submission, the design bgremove had before the queue.

Each upload event claims its job and creates the prediction from inside the storage trigger, with
the predictions client's own retries: API_MAX_ATTEMPTS attempts (4, the old default) with capped
exponential backoff and full jitter, sleeping inside the function and honouring Retry-After. When
the budget is spent the claim is given back and the function raises, so functions-framework
answers 500 and Eventarc (offline: the relay) delivers the event again with its own backoff,
10 s doubling to 600 s. That is the retry storm issue 11 describes.

    functions-framework --target on_upload_direct --source bench/baseline_direct.py

It reuses the pipeline's modules unchanged — the filters (`submit.filter_reason`), the job store
and transitions (`jobs`), and the submission itself (`submit.submit_job`: read the head, sniff,
build the image reference, create the prediction with its webhook, record it) — over a `Deps` built
by `bgremove.runtime`, except that the queue seam is a no-op: the old design had no Cloud Tasks, so
no deadline checks are scheduled (its reconciler sweep found overdue jobs instead). The claim is
the old one (bgremove/submit.py before the queue, `_claim`): create-only; a live claim answers
"retry later"; a claim given back after a transient error, or one whose lease expired, is taken
over; anything else is a duplicate. The webhook that completes the job is the pipeline's own.

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

from bgremove import jobs, logs, runtime, submit
from bgremove.config import Config
from bgremove.deps import Deps
from bgremove.errors import RetryLater
from bgremove.jobs import Job, Source
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


def handle_upload_direct(event: submit.UploadEvent, cfg: Config, deps: Deps, now: float) -> submit.Result:
    """Filter, claim, refuse what is too old or too large, then create the prediction at once."""
    fields: dict[str, Any] = {
        "object": f"gs://{event.bucket}/{event.name}",
        "generation": event.generation,
        "event_id": event.event_id,
        "design": "direct submission (bench baseline)",
    }
    if event.event_type != submit.FINALIZED:
        return _log(submit.Result(submit.Outcome.IGNORED, f"event type {event.event_type!r}"), fields)
    if event.bucket != cfg.upload_bucket:
        return _log(submit.Result(submit.Outcome.IGNORED, f"bucket {event.bucket!r}"), fields)
    reason = submit.filter_reason(event, cfg)
    if reason:
        return _log(submit.Result(submit.Outcome.SKIPPED, reason), fields)
    source = Source(event.bucket, event.name, event.generation, event.content_type, event.size)
    fields["job_id"] = source.job_id
    claim = _claim(source, cfg, deps, now)
    if isinstance(claim, submit.Result):
        return _log(claim, fields)
    job, generation = claim
    if event.event_time is not None and now - event.event_time > cfg.max_event_age_seconds:
        return _fail(deps, job, generation, "event_too_old", f"older than {cfg.max_event_age_seconds}s", now, fields)
    if event.size > cfg.max_upload_bytes:
        return _fail(deps, job, generation, "too_large", f"{event.size} bytes is over MAX_UPLOAD_BYTES", now, fields)
    # The API call, with the client's in-function retries; RetryLater propagates (500: redelivery).
    return submit.submit_job(job, generation, cfg, deps, now, fields)


def _claim(source: Source, cfg: Config, deps: Deps, now: float) -> tuple[Job, int] | submit.Result:
    store = deps.store
    job = jobs.new_claim(source, cfg.model_version, now, cfg.claim_ttl_seconds)
    try:
        return job, store.create(job)
    except jobs.Conflict:
        pass
    loaded = store.load(source.job_id)
    if loaded is None:
        raise RetryLater("job record vanished while claiming")
    existing, generation = loaded
    if existing.state == jobs.CLAIMED and not existing.lease_expired(now):
        raise RetryLater("another delivery holds the claim")
    # submit_job gives a claim back as `queued` after a transient error (the old code gave it back
    # as an expired claim): either way the redelivery takes it over.
    if existing.state != jobs.QUEUED and not existing.lease_expired(now):
        return submit.Result(submit.Outcome.DUPLICATE, f"job is already {existing.state}", existing.job_id)
    taken = jobs.claim(existing, now, cfg.claim_ttl_seconds, "taken over by a redelivered event")
    try:
        return taken, store.save(taken, generation)
    except jobs.Conflict:
        return submit.Result(submit.Outcome.DUPLICATE, "another delivery took the claim first", existing.job_id)


def _fail(
    deps: Deps, job: Job, generation: int, reason: str, error: str, now: float, fields: dict[str, Any]
) -> submit.Result:
    try:
        deps.store.save(jobs.failed(job, reason, error, now), generation)
    except jobs.Conflict:
        return _log(submit.Result(submit.Outcome.DUPLICATE, "job changed while recording its failure"), fields)
    logs.warning("upload failed", reason=reason, error=error, **fields)
    return submit.Result(submit.Outcome.FAILED, reason, job.job_id)


def _log(result: submit.Result, fields: dict[str, Any]) -> submit.Result:
    logs.info(f"upload {result.outcome.value}: {result.reason}", outcome=result.outcome.value, **fields)
    return result
