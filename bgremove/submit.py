"""The upload side: decide whether an uploaded object is ours to process, admit it into the
submission queue, and — when the queue dispatches its task — submit it to the predictions API with
a webhook that will bring the result back.

Admission (`handle_upload`, `admit`) creates the job `queued` and one submission task named from the
job id, so a duplicate event or a retried enqueue makes no second task. The queue's dispatch rate
and concurrency match the API's create limit; the task handler (`handle_submit_task`) makes one API
call, never sleeps, and turns a throttled or unavailable API into the task's retry.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from bgremove import errors, images, inputs, jobs, logs, variants
from bgremove.config import Config
from bgremove.deps import Deps, PredictionsApi
from bgremove.errors import RetryLater
from bgremove.jobs import Job, JobStore, Source
from bgremove.tasks import Task

FINALIZED = "google.cloud.storage.object.v1.finalized"
OUTPUT_MARKER = "bgremove-output"


class Outcome(enum.Enum):
    IGNORED = "ignored"  # not an event for us
    SKIPPED = "skipped"  # filtered out by configuration; no record
    DUPLICATE = "duplicate"  # another delivery owns or finished this upload
    QUEUED = "queued"  # admitted: the submission task is in the queue
    SUBMITTED = "submitted"
    FAILED = "failed"  # ended in a failure record


@dataclass(frozen=True)
class UploadEvent:
    event_id: str
    event_type: str
    bucket: str
    name: str
    generation: int
    content_type: str
    size: int
    metadata: dict[str, str] = field(default_factory=dict)
    event_time: float | None = None


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    reason: str
    job_id: str = ""
    prediction_id: str = ""


def webhook_url_for(base: str, job_id: str) -> str:
    """The webhook URL carries the job id. The query string is not signed, so the webhook handler
    treats it as a hint that signed data must confirm (see complete.handle_webhook)."""
    return f"{base}{'&' if '?' in base else '?'}{urlencode({'job': job_id})}"


def filter_reason(event: UploadEvent, cfg: Config) -> str:
    """Why configuration says to leave this object alone, or '' to process it."""
    if event.size == 0:
        return "zero-byte object"
    if event.metadata.get(OUTPUT_MARKER):
        return "object is one of our outputs"
    if cfg.processed_bucket == event.bucket and event.name.startswith(cfg.output_prefix):
        return "object is under the output prefix of this bucket"
    if cfg.include_prefixes and not event.name.startswith(cfg.include_prefixes):
        return "name matches no INCLUDE_PREFIXES entry"
    if cfg.exclude_prefixes and event.name.startswith(cfg.exclude_prefixes):
        return "name matches an EXCLUDE_PREFIXES entry"
    if images.normalise_content_type(event.content_type) not in cfg.allowed_content_types:
        return f"content type {event.content_type or 'none'!r} is not in ALLOWED_CONTENT_TYPES"
    return ""


def handle_upload(event: UploadEvent, cfg: Config, deps: Deps, now: float) -> Result:
    """Decide and admit one upload event. Nothing here calls the predictions API."""
    fields: dict[str, Any] = {
        "object": f"gs://{event.bucket}/{event.name}",
        "generation": event.generation,
        "event_id": event.event_id,
    }
    if event.event_type != FINALIZED:
        return _log(Result(Outcome.IGNORED, f"event type {event.event_type!r} is not {FINALIZED}"), fields)
    if event.bucket != cfg.upload_bucket:
        return _log(Result(Outcome.IGNORED, f"bucket {event.bucket!r} is not the uploads bucket"), fields)
    reason = filter_reason(event, cfg)
    if reason:
        return _log(Result(Outcome.SKIPPED, reason), fields)
    refusal = ""
    if event.event_time is not None and now - event.event_time > cfg.max_event_age_seconds:
        # Only the event's own redelivery is bounded by age; once queued, the queue's retry
        # settings bound the work instead.
        refusal = f"event_too_old: event is older than {cfg.max_event_age_seconds}s"
    elif event.size > cfg.max_upload_bytes:
        refusal = f"too_large: {event.size} bytes is over MAX_UPLOAD_BYTES"
    # The upload's own overrides (bgremove-background, bgremove-variants) travel with the job.
    overrides = variants.override_metadata(event.metadata)
    source = Source(event.bucket, event.name, event.generation, event.content_type, event.size, overrides)
    return admit(source, cfg, deps, now, fields, refusal)


def admit(
    source: Source, cfg: Config, deps: Deps, now: float, fields: dict[str, Any] | None = None, refusal: str = ""
) -> Result:
    """Create the job `queued` and enqueue its submission task; idempotent. Used by uploads and by
    operators' backfills. `refusal` ("reason: error") records a failure instead of queueing."""
    fields = dict(fields or {"object": f"gs://{source.bucket}/{source.name}", "generation": source.generation})
    fields["job_id"] = source.job_id
    store = deps.store
    job = jobs.new_queued(source, cfg.model_version, now, cfg.queued_check_seconds)
    try:
        generation = store.create(job)
    except jobs.Conflict:
        loaded = store.load(source.job_id)
        if loaded is None:  # deleted between our create and load: let the retry decide
            raise RetryLater("job record vanished while admitting") from None
        existing, _ = loaded
        if existing.state != jobs.QUEUED:
            return _log(Result(Outcome.DUPLICATE, f"job is already {existing.state}", existing.job_id), fields)
        # The run that admitted it may have died before enqueueing: enqueue again, under the same
        # task name, so this makes a task only if none was made.
        store.ensure_open(existing.job_id, existing.created_at)
        made = enqueue_submission(existing, cfg, deps)
        return _log(Result(Outcome.DUPLICATE, "already queued" + (" (its task was missing)" if made else "")), fields)
    if refusal:
        reason, _, error = refusal.partition(": ")
        return _fail(store, job, generation, reason, error, now, fields)
    enqueue_submission(job, cfg, deps)
    return _log(Result(Outcome.QUEUED, "submission task enqueued", job.job_id), fields)


def enqueue_submission(job: Job, cfg: Config, deps: Deps) -> bool:
    """The job's current submission task; False when it exists already (a duplicate)."""
    body = {"kind": "submit", "job_id": job.job_id}
    return deps.queue().enqueue(Task(cfg.submit_queue, job.submit_task_name, cfg.task_handler_url, body))


def schedule_deadline(job: Job, cfg: Config, deps: Deps) -> None:
    """A delayed task on the deadline queue, due when the job is; the sweep covers a failure here."""
    body = {"kind": "deadline", "job_id": job.job_id}
    task = Task(cfg.deadline_queue, job.deadline_task_name(), cfg.task_handler_url, body, schedule_at=job.due_at)
    try:
        deps.queue().enqueue(task)
    except RetryLater as exc:
        logs.warning("deadline check not scheduled; the sweep will look", job_id=job.job_id, error=str(exc))


def handle_submit_task(job_id: str, cfg: Config, deps: Deps, now: float) -> Result:
    """The submission task: claim the queued job and create its prediction (one API call)."""
    fields: dict[str, Any] = {"job_id": job_id}
    loaded = deps.store.load(job_id)
    if loaded is None:
        return _log(Result(Outcome.IGNORED, "no such job", job_id), fields)
    job, generation = loaded
    fields.update(object=f"gs://{job.source.bucket}/{job.source.name}", generation=job.source.generation)
    if job.state == jobs.CLAIMED and not job.lease_expired(now):
        # Another dispatch of this task is submitting right now; if it dies, the retry takes over.
        raise RetryLater("another dispatch holds the claim")
    if job.state not in (jobs.QUEUED, jobs.CLAIMED):
        return _log(Result(Outcome.DUPLICATE, f"job is already {job.state}", job_id, job.prediction_id), fields)
    why = "submission task" if job.state == jobs.QUEUED else "claim expired; taken over by the task's retry"
    taken = jobs.claim(job, now, cfg.claim_ttl_seconds, why)
    try:
        generation = deps.store.save(taken, generation)
    except jobs.Conflict:
        raise RetryLater("job changed while claiming") from None
    return submit_job(taken, generation, cfg, deps, now, fields)


def submit_job(job: Job, generation: int, cfg: Config, deps: Deps, now: float, fields: dict[str, Any]) -> Result:
    """Create a prediction for a claimed job, record it and schedule its deadline check.

    On anything worth retrying the claim is given back at once (the job is `queued` again, so the
    task's retry can take it) and the RetryLater propagates to the caller."""
    store, source = deps.store, job.source
    if job.attempts >= cfg.max_prediction_attempts:
        return _fail(store, job, generation, "attempts_exhausted", f"{job.attempts} predictions created", now, fields)
    try:
        head = deps.objects.read_head(source.bucket, source.name, source.generation, images.HEAD_BYTES)
        sniffed = images.sniff(head)
        if sniffed is None or sniffed not in cfg.allowed_content_types:
            return _fail(store, job, generation, "not_an_image", f"bytes are {sniffed or 'not an image'}", now, fields)
        size = images.dimensions(head)
        if size is not None and size[0] * size[1] > cfg.max_input_pixels:
            error = f"{size[0]}x{size[1]} is {size[0] * size[1]} pixels, over MAX_INPUT_PIXELS ({cfg.max_input_pixels})"
            return _fail(store, job, generation, "too_many_pixels", error, now, fields)
        image = inputs.image_reference(source, sniffed, cfg, deps.objects, head)
        client: PredictionsApi = deps.predictions()
        prediction = client.create(
            cfg.model_version, image, webhook_url_for(cfg.webhook_url, job.job_id), cfg.cancel_after
        )
    except errors.NotFound:
        return _fail(store, job, generation, "source_gone", "the upload generation no longer exists", now, fields)
    except errors.ApiRefused as exc:
        return _fail(store, job, generation, f"api_{exc.status}", str(exc), now, fields)
    except errors.ImageRefused as exc:
        return _fail(store, job, generation, exc.reason, str(exc), now, fields)
    except RetryLater as exc:
        _release(store, job, generation, now, f"{type(exc).__name__}: {exc}", cfg.queued_check_seconds)
        logs.warning("submission not possible now; it will be retried", error=str(exc), **fields)
        raise
    fields["prediction_id"] = prediction.id

    # The first check comes soon after the webhook should have arrived (the model's few seconds
    # plus the API's minute of webhook retries), so a lost webhook costs minutes, not
    # RECONCILE_AFTER_SECONDS; a prediction still running then is checked every
    # RECONCILE_AFTER_SECONDS (reconcile.reconcile_job).
    deadline = min(cfg.first_check_seconds, cfg.reconcile_after_seconds)
    updated: Job | None = jobs.submitted(job, prediction.id, now, deadline)
    while updated is not None:
        try:
            store.save(updated, generation)
            break
        except jobs.Conflict:
            # Only the webhook can have moved the job meanwhile (it may finish before we record
            # the submission); keep what it wrote and add our prediction id if it is still open.
            loaded = store.load(job.job_id)
            if loaded is None:
                updated = None
                break
            current, generation = loaded
            if current.is_final or prediction.id in current.prediction_ids:
                updated = current
                break
            updated = jobs.submitted(current, prediction.id, now, deadline)
    if updated is not None and not updated.is_final:
        schedule_deadline(updated, cfg, deps)
    return _log(Result(Outcome.SUBMITTED, "prediction created", job.job_id, prediction.id), fields)


def _fail(
    store: JobStore, job: Job, generation: int, reason: str, error: str, now: float, fields: dict[str, Any]
) -> Result:
    try:
        store.save(jobs.failed(job, reason, error, now), generation)
    except jobs.Conflict:
        return _log(Result(Outcome.DUPLICATE, "job changed while recording its failure", job.job_id), fields)
    logs.warning("upload failed", reason=reason, error=error, **fields)
    return Result(Outcome.FAILED, reason, job.job_id)


def _release(store: JobStore, job: Job, generation: int, now: float, why: str, check_seconds: float) -> None:
    try:
        store.save(jobs.release(job, now, why, check_seconds), generation)
    except (RetryLater, errors.Conflict) as exc:  # the claim then expires by itself; say so and carry on
        logs.warning("could not release claim; it will expire", error=type(exc).__name__, job_id=job.job_id)


def _log(result: Result, fields: dict[str, Any]) -> Result:
    extra = {k: v for k, v in fields.items() if k not in ("job_id", "prediction_id")}
    logs.info(
        f"upload {result.outcome.value}: {result.reason}",
        outcome=result.outcome.value,
        job_id=result.job_id or fields.get("job_id"),
        prediction_id=result.prediction_id or fields.get("prediction_id"),
        **extra,
    )
    return result
