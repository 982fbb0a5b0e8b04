"""The upload side: decide whether an uploaded object is ours to process, claim it, and submit it
to the predictions API with a webhook that will bring the result back."""

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

FINALIZED = "google.cloud.storage.object.v1.finalized"
OUTPUT_MARKER = "bgremove-output"


class Outcome(enum.Enum):
    IGNORED = "ignored"  # not an event for us
    SKIPPED = "skipped"  # filtered out by configuration; no record
    DUPLICATE = "duplicate"  # another delivery owns or finished this upload
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
    """Decide, claim and submit one upload event. The API client is built only when a prediction
    is really to be created, so skipped events never need the API token."""
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

    overrides = variants.override_metadata(event.metadata)
    source = Source(event.bucket, event.name, event.generation, event.content_type, event.size, overrides)
    fields["job_id"] = source.job_id
    store = deps.store
    claim = _claim(source, cfg, store, now)
    if isinstance(claim, Result):
        return _log(claim, fields)
    job, generation = claim

    if event.event_time is not None and now - event.event_time > cfg.max_event_age_seconds:
        return _fail(
            store, job, generation, "event_too_old", f"event is older than {cfg.max_event_age_seconds}s", now, fields
        )
    if event.size > cfg.max_upload_bytes:
        return _fail(store, job, generation, "too_large", f"{event.size} bytes is over MAX_UPLOAD_BYTES", now, fields)
    return submit_job(job, generation, cfg, deps, now, fields)


def submit_job(job: Job, generation: int, cfg: Config, deps: Deps, now: float, fields: dict[str, Any]) -> Result:
    """Create a prediction for a claimed job and record it. Shared with the reconciler.

    On anything worth retrying the claim is given back at once (so the retry can take it) and the
    RetryLater propagates to the caller."""
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
        _release(store, job, generation, now, f"{type(exc).__name__}: {exc}")
        logs.warning("submission not possible now; it will be retried", error=str(exc), **fields)
        raise
    fields["prediction_id"] = prediction.id

    deadline = cfg.reconcile_after_seconds
    updated = jobs.submitted(job, prediction.id, now, deadline)
    while True:
        try:
            store.save(updated, generation)
            break
        except jobs.Conflict:
            # Only the webhook can have moved the job meanwhile (it may finish before we record
            # the submission); keep what it wrote and add our prediction id if it is still open.
            loaded = store.load(job.job_id)
            if loaded is None or loaded[0].is_final or prediction.id in loaded[0].prediction_ids:
                break
            current, generation = loaded
            updated = jobs.submitted(current, prediction.id, now, deadline)
    return _log(Result(Outcome.SUBMITTED, "prediction created", job.job_id, prediction.id), fields)


def _claim(source: Source, cfg: Config, store: JobStore, now: float) -> tuple[Job, int] | Result:
    job = jobs.new_claim(source, cfg.model_version, now, cfg.claim_ttl_seconds)
    try:
        return job, store.create(job)
    except jobs.Conflict:
        pass
    loaded = store.load(source.job_id)
    if loaded is None:  # deleted between our create and load: let the retry decide
        raise RetryLater("job record vanished while claiming")
    existing, generation = loaded
    if existing.state == jobs.CLAIMED and not existing.lease_expired(now):
        # Another delivery is working on it right now. Ask for a redelivery rather than answering
        # 2xx: if that run dies, the retry finds the lease expired and takes over.
        raise RetryLater("another delivery holds the claim")
    if not existing.lease_expired(now):
        return Result(Outcome.DUPLICATE, f"job is already {existing.state}", existing.job_id, existing.prediction_id)
    taken = jobs.reclaim(existing, now, cfg.claim_ttl_seconds, "claim expired; taken over by a new delivery")
    try:
        return taken, store.save(taken, generation)
    except jobs.Conflict:
        return Result(Outcome.DUPLICATE, "another delivery took the expired claim first", existing.job_id)


def _fail(
    store: JobStore, job: Job, generation: int, reason: str, error: str, now: float, fields: dict[str, Any]
) -> Result:
    try:
        store.save(jobs.failed(job, reason, error, now), generation)
    except jobs.Conflict:
        return _log(Result(Outcome.DUPLICATE, "job changed while recording its failure", job.job_id), fields)
    logs.warning("upload failed", reason=reason, error=error, **fields)
    return Result(Outcome.FAILED, reason, job.job_id)


def _release(store: JobStore, job: Job, generation: int, now: float, why: str) -> None:
    try:
        store.save(jobs.release(job, now, why), generation)
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
