"""Deletions: an original that is deleted takes its cut-outs with it.

Cloud Storage says an object generation stopped being live in two ways (REFERENCE §9): `deleted`
(on a bucket without versioning, for a delete and for the old generation of an overwrite; on a
versioned bucket, only when a version is deleted for good) and `archived` (versioned buckets: the
live version became noncurrent, on an overwrite or a delete). Neither says which it was, and events
come in any order, so `handle_delete` compares the event's generation with the live one (one
metadata read):

- a newer generation is live: an overwrite, not a removal. Its outputs will be replaced by the new
  generation's job (placement.py); an old job still open ends `superseded`, its prediction
  cancelled.
- nothing is live: a removal. The job of that generation ends `removed`: its outputs are deleted,
  each only while it is still the object generation the job wrote (so a newer output, or a user's
  file, is never touched), unless DELETE_OUTPUTS is off; an open job ends `removed` either way,
  its prediction cancelled, since nobody wants a cut-out of a deleted photo.
"""

from __future__ import annotations

from typing import Any

from bgremove import errors, jobs, keys, lifecycle, naming, outcomes, placement
from bgremove.admission import UploadEvent
from bgremove.config import Config
from bgremove.deps import Deps
from bgremove.jobs import Decision, Job
from bgremove.outcomes import Outcome, Result

DELETED = "google.cloud.storage.object.v1.deleted"
ARCHIVED = "google.cloud.storage.object.v1.archived"


def handle_delete(event: UploadEvent, cfg: Config, deps: Deps, now: float) -> Result:
    """One `deleted` or `archived` event of the uploads bucket."""
    fields: dict[str, Any] = {
        "object": f"gs://{event.bucket}/{event.name}",
        "generation": event.generation,
        "event_id": event.event_id,
        "event_type": event.event_type,
    }
    if event.event_type not in (DELETED, ARCHIVED):
        return _log(Result(Outcome.IGNORED, f"event type {event.event_type!r} is not a deletion"), fields)
    if event.bucket != cfg.upload_bucket:
        return _log(Result(Outcome.IGNORED, f"bucket {event.bucket!r} is not the uploads bucket"), fields)
    if event.metadata.get(keys.OUTPUT):
        return _log(Result(Outcome.IGNORED, "object is one of our outputs"), fields)
    job_id = naming.job_id(event.bucket, event.name, event.generation)
    fields["job_id"] = job_id
    live = deps.objects.metadata(event.bucket, event.name)
    if live is not None:
        if live[1] == event.generation:
            return _log(Result(Outcome.IGNORED, "that generation is live"), fields)
        why = errors.Superseded(f"gs://{event.bucket}/{event.name} was replaced by generation {live[1]}")
        ended = lifecycle.end_superseded(job_id, why, deps, now)
        if ended is lifecycle.Ended.ENDED:
            return _log(Result(Outcome.SUPERSEDED, str(why), job_id), fields)
        return _log(Result(Outcome.IGNORED, "replaced; its job had ended (the new one replaces its outputs)"), fields)
    gone = errors.Superseded(f"gs://{event.bucket}/{event.name} was deleted", deleted=True)
    if lifecycle.end_superseded(job_id, gone, deps, now) is lifecycle.Ended.ENDED:
        return _log(Result(Outcome.REMOVED, "deleted before its job ended; nothing was written", job_id), fields)
    if not cfg.delete_outputs:
        return _log(Result(Outcome.IGNORED, "deleted; DELETE_OUTPUTS is off, so its outputs stay"), fields)
    return remove_outputs(job_id, cfg, deps, now, fields)


def remove_outputs(job_id: str, cfg: Config, deps: Deps, now: float, fields: dict[str, Any]) -> Result:
    """Delete what a completed job wrote, then record it `removed` with what was deleted."""
    loaded = deps.store.load(job_id)
    if loaded is None:
        return _log(Result(Outcome.IGNORED, "no job for that generation"), fields)
    job, generation = loaded
    if job.state != jobs.COMPLETED:
        return _log(Result(Outcome.DUPLICATE, f"job is {job.state}: nothing to remove", job_id), fields)
    removed = tuple(entry for entry in _written(job) if placement.delete_if_ours(job.job_id, entry, cfg, deps))

    def record(current: Job | None) -> Decision[bool]:
        if current is None or current.state != jobs.COMPLETED:
            return Decision(False)
        return Decision(True, jobs.removed(current, "the upload was deleted", now, removed))

    if not deps.store.update(job_id, record, read=(job, generation)).result:
        return _log(Result(Outcome.DUPLICATE, "job changed while its outputs were removed", job_id), fields)
    fields["removed"] = len(removed)
    return _log(Result(Outcome.REMOVED, f"{len(removed)} output(s) deleted", job_id), fields)


def _written(job: Job) -> list[dict[str, Any]]:
    """The job's outputs as recorded (records older than variants name only the first)."""
    if job.outputs:
        return [dict(entry) for entry in job.outputs]
    if job.output_name:
        return [{"variant": "", "object": job.output_name, "generation": job.output_generation}]
    return []


def _log(result: Result, fields: dict[str, Any]) -> Result:
    return outcomes.log("deletion", result, fields)
