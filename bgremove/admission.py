"""Admission: whether an object is ours to process, and letting it into the submission queue.

`decide` is the one decision, for a storage event (`on_upload`) and for an object an operator's
backfill lists alike: the `Source` to process, with the upload's own overrides, or a typed
`Refusal` (not for us, filtered out, a loop guard, or a failure to record: too old, too large,
bad metadata). `admit` carries a decision out: the job is created `queued` and its submission task
named from the job id, so a duplicate event, a rerun backfill or a retried enqueue makes no second
task; a refusal to record becomes a failure record before any prediction is paid for.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from bgremove import errors, images, jobs, keys, lifecycle, logs, metrics, outcomes, variants
from bgremove.config import Config
from bgremove.deps import Deps
from bgremove.jobs import Decision, Job, Source
from bgremove.objects import Delivery
from bgremove.outcomes import Outcome, Result

FINALIZED = "google.cloud.storage.object.v1.finalized"


@dataclass(frozen=True)
class UploadEvent:
    """What a storage event (or a listing, for backfill) says of one object generation."""

    event_id: str
    event_type: str
    bucket: str
    name: str
    generation: int
    content_type: str
    size: int
    metadata: dict[str, str] = field(default_factory=dict)
    event_time: float | None = None  # None for a listed object: no event age to bound
    cache_control: str = ""
    content_disposition: str = ""
    content_language: str = ""


def listed(
    bucket: str,
    name: str,
    generation: int,
    content_type: str,
    size: int,
    metadata: dict[str, str],
    delivery: Delivery | None = None,
) -> UploadEvent:
    """The event a finalize of a listed object would carry (backfill, `bgremove show`): the same
    decision applies to it, with no event age to bound."""
    d = delivery or Delivery()
    return UploadEvent(
        "listed",
        FINALIZED,
        bucket,
        name,
        generation,
        content_type,
        size,
        dict(metadata),
        cache_control=d.cache_control,
        content_disposition=d.content_disposition,
        content_language=d.content_language,
    )


class Refusal(enum.Enum):
    """Why an object is not admitted. `outcome` says what becomes of it: IGNORED and SKIPPED
    leave no record; FAILED is recorded as a failure whose reason code is the value."""

    NOT_FINALIZED = "not_finalized"
    OTHER_BUCKET = "other_bucket"
    ZERO_BYTES = "zero_bytes"
    OUR_OUTPUT = "our_output"  # loop guard: an object this pipeline wrote
    UNDER_OUTPUT_PREFIX = "under_output_prefix"  # loop guard: where outputs go in a shared bucket
    NOT_INCLUDED = "not_included"
    EXCLUDED = "excluded"
    CONTENT_TYPE = "content_type"
    TOO_OLD = "event_too_old"
    TOO_LARGE = "too_large"
    BAD_METADATA = "bad_metadata"

    @property
    def outcome(self) -> Outcome:
        if self in (Refusal.NOT_FINALIZED, Refusal.OTHER_BUCKET):
            return Outcome.IGNORED
        if self in (Refusal.TOO_OLD, Refusal.TOO_LARGE, Refusal.BAD_METADATA):
            return Outcome.FAILED
        return Outcome.SKIPPED


@dataclass(frozen=True)
class Admission:
    """`decide`'s answer: always the Source the object would be; `refusal` set when it is not
    admitted, with a message for the log (and the failure record)."""

    source: Source
    refusal: Refusal | None = None
    message: str = ""


def source_of(event: UploadEvent) -> Source:
    """The job's Source, carrying the upload's own overrides (its `bgremove-*` metadata) and what
    its outputs copy (delivery headers, the other custom metadata)."""
    return Source(
        event.bucket,
        event.name,
        event.generation,
        event.content_type,
        event.size,
        variants.override_metadata(event.metadata),
        cache_control=event.cache_control,
        content_disposition=event.content_disposition,
        content_language=event.content_language,
        custom={k: v for k, v in event.metadata.items() if not keys.is_ours(k)},
    )


def decide(event: UploadEvent, cfg: Config, now: float) -> Admission:
    """The whole admission decision, pure: nothing is read or written."""
    source = source_of(event)
    refused = _refusal(event, cfg, now)
    if refused is not None:
        return Admission(source, *refused)
    try:
        # Overrides that could never be applied fail here, before a prediction is paid for.
        variants.select(cfg.output_variants, variants.overrides_from_metadata(event.metadata))
    except errors.VariantError as exc:
        return Admission(source, Refusal.BAD_METADATA, str(exc))
    return Admission(source)


def _refusal(event: UploadEvent, cfg: Config, now: float) -> tuple[Refusal, str] | None:
    if event.event_type != FINALIZED:
        return Refusal.NOT_FINALIZED, f"event type {event.event_type!r} is not {FINALIZED}"
    if event.bucket != cfg.upload_bucket:
        return Refusal.OTHER_BUCKET, f"bucket {event.bucket!r} is not the uploads bucket"
    if event.size == 0:
        return Refusal.ZERO_BYTES, "zero-byte object"
    if event.metadata.get(keys.OUTPUT):
        return Refusal.OUR_OUTPUT, "object is one of our outputs"
    if cfg.processed_bucket == event.bucket and event.name.startswith(cfg.output_prefix):
        return Refusal.UNDER_OUTPUT_PREFIX, "object is under the output prefix of this bucket"
    if cfg.include_prefixes and not event.name.startswith(cfg.include_prefixes):
        return Refusal.NOT_INCLUDED, "name matches no INCLUDE_PREFIXES entry"
    if cfg.exclude_prefixes and event.name.startswith(cfg.exclude_prefixes):
        return Refusal.EXCLUDED, "name matches an EXCLUDE_PREFIXES entry"
    if images.normalise_content_type(event.content_type) not in cfg.allowed_content_types:
        return Refusal.CONTENT_TYPE, f"content type {event.content_type or 'none'!r} is not in ALLOWED_CONTENT_TYPES"
    if event.event_time is not None and now - event.event_time > cfg.max_event_age_seconds:
        # Only the event's own redelivery is bounded by age; once queued, the queue's retry
        # settings bound the work instead.
        return Refusal.TOO_OLD, f"event is older than {cfg.max_event_age_seconds}s"
    if event.size > cfg.max_upload_bytes:
        return Refusal.TOO_LARGE, f"{event.size} bytes is over MAX_UPLOAD_BYTES"
    return None


def handle_upload(event: UploadEvent, cfg: Config, deps: Deps, now: float) -> Result:
    """Decide and admit one storage event. Nothing here calls the predictions API."""
    fields = {"object": f"gs://{event.bucket}/{event.name}", "generation": event.generation, "event_id": event.event_id}
    return admit(decide(event, cfg, now), cfg, deps, now, fields)


def admit(admission: Admission, cfg: Config, deps: Deps, now: float, fields: dict[str, Any] | None = None) -> Result:
    """Carry out an admission decision; idempotent."""
    source, refusal = admission.source, admission.refusal
    fields = dict(fields or {"object": f"gs://{source.bucket}/{source.name}", "generation": source.generation})
    if refusal is not None and refusal.outcome is not Outcome.FAILED:
        return _log(Result(refusal.outcome, admission.message), fields)
    fields["job_id"] = source.job_id
    new = jobs.new_queued(source, cfg.model_version, now, cfg.queued_check_seconds)
    if refusal is not None:
        new = jobs.failed(new, refusal.value, admission.message, now)

    def created(current: Job | None) -> Decision[Outcome]:
        if current is None:
            return Decision(Outcome.FAILED if refusal is not None else Outcome.QUEUED, new)
        return Decision(Outcome.DUPLICATE)

    done = deps.store.update(source.job_id, created, absent=True)
    if done.result is Outcome.FAILED:
        logs.warning("upload failed", reason=new.reason, error=new.error, **fields)
        return Result(Outcome.FAILED, new.reason, source.job_id)
    if done.result is Outcome.QUEUED:
        lifecycle.enqueue_submission(new, cfg, deps)
        metrics.emit(metrics.Event.JOB_ADMITTED, "INFO", "upload admitted", **fields)
        return _log(Result(Outcome.QUEUED, "submission task enqueued", source.job_id), fields)
    assert done.job is not None  # a duplicate was decided over an existing record
    if done.job.state != jobs.QUEUED:
        return _log(Result(Outcome.DUPLICATE, f"job is already {done.job.state}", source.job_id), fields)
    # The run that admitted it may have died before enqueueing: enqueue again, under the same task
    # name, so this makes a task only if none was made.
    made = lifecycle.reopen(done.job, cfg, deps)
    return _log(Result(Outcome.DUPLICATE, "already queued" + (" (its task was missing)" if made else "")), fields)


def _log(result: Result, fields: dict[str, Any]) -> Result:
    return outcomes.log("upload", result, fields)
