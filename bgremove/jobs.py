"""Job records: one per upload generation, kept as JSON in the state bucket.

States (the README draws the machine):

    claimed ──> submitted ──> completed
       │            │
       └────────────┴──────> failed

`claimed` carries a lease: a run that dies holding it leaves a claim that expires, and the next
delivery or the reconciler takes it over. `submitted` carries a deadline after which the reconciler
asks the predictions API what happened. `completed` and `failed` are final. Every write is
conditional on the generation that was read, so of two writers exactly one wins.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from bgremove import errors, logs, naming
from bgremove.objects import Objects

CLAIMED = "claimed"
SUBMITTED = "submitted"
COMPLETED = "completed"
FAILED = "failed"
FINAL_STATES = (COMPLETED, FAILED)


@dataclass(frozen=True)
class Source:
    """The upload a job is about."""

    bucket: str
    name: str
    generation: int
    content_type: str = ""
    size: int = 0
    # The upload's per-object output overrides (its `bgremove-*` custom metadata keys, see
    # variants.override_metadata), taken from the storage event at claim time; None when the claim
    # did not record them (then the completion side reads them from the live object).
    metadata: dict[str, str] | None = None

    @property
    def job_id(self) -> str:
        return naming.job_id(self.bucket, self.name, self.generation)

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}#{self.generation}"


@dataclass(frozen=True)
class Job:
    job_id: str
    source: Source
    state: str
    model_version: str
    created_at: float
    updated_at: float
    lease_expires_at: float = 0.0
    deadline_at: float = 0.0
    attempts: int = 0
    prediction_ids: tuple[str, ...] = ()
    output_name: str = ""
    output_generation: int = 0
    reason: str = ""
    error: str = ""
    history: tuple[dict[str, Any], ...] = field(default=())
    # What was written for this job, one entry per output variant in order:
    # {"variant": name, "object": object name, "generation": int}. The first is output_name.
    outputs: tuple[dict[str, Any], ...] = ()

    @property
    def prediction_id(self) -> str:
        return self.prediction_ids[-1] if self.prediction_ids else ""

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def lease_expired(self, now: float) -> bool:
        return self.state == CLAIMED and now >= self.lease_expires_at

    @property
    def due_at(self) -> float:
        """When this job needs attention if nothing else has moved it; 0 for final jobs."""
        if self.state == CLAIMED:
            return self.lease_expires_at
        if self.state == SUBMITTED:
            return self.deadline_at
        return 0.0

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["prediction_ids"] = list(self.prediction_ids)
        data["history"] = list(self.history)
        data["outputs"] = [dict(entry) for entry in self.outputs]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        values = dict(data)
        source_fields = {f.name for f in dataclasses.fields(Source)}
        values["source"] = Source(**{k: v for k, v in values["source"].items() if k in source_fields})
        values["prediction_ids"] = tuple(values.get("prediction_ids", ()))
        values["history"] = tuple(values.get("history", ()))
        values["outputs"] = tuple(dict(o) for o in values.get("outputs") or () if isinstance(o, dict))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# --- transitions: pure functions from one record to the next -------------------------------------


def new_claim(source: Source, model_version: str, now: float, lease_seconds: int) -> Job:
    return Job(
        job_id=source.job_id,
        source=source,
        state=CLAIMED,
        model_version=model_version,
        created_at=now,
        updated_at=now,
        lease_expires_at=now + lease_seconds,
        history=({"state": CLAIMED, "at": now},),
    )


def reclaim(job: Job, now: float, lease_seconds: int, why: str) -> Job:
    """Take over a job whose holder died (expired lease) or whose prediction was lost."""
    return _move(job, CLAIMED, now, why, lease_expires_at=now + lease_seconds, deadline_at=0.0)


def release(job: Job, now: float, why: str) -> Job:
    """Give a claim back at once after a transient failure, so the retried event can take it."""
    return _move(job, CLAIMED, now, why, lease_expires_at=now)


def submitted(job: Job, prediction_id: str, now: float, deadline_seconds: float) -> Job:
    return _move(
        job,
        SUBMITTED,
        now,
        "prediction created",
        prediction_ids=(*job.prediction_ids, prediction_id),
        attempts=job.attempts + 1,
        deadline_at=now + deadline_seconds,
        lease_expires_at=0.0,
    )


def extend_deadline(job: Job, deadline: float, now: float) -> Job:
    """A submitted job whose prediction is still running: look again at `deadline`."""
    return dataclasses.replace(job, deadline_at=deadline, updated_at=now)


def completed(job: Job, prediction_id: str, output_name: str, output_generation: int, now: float) -> Job:
    ids = job.prediction_ids if prediction_id in job.prediction_ids else (*job.prediction_ids, prediction_id)
    return _move(
        job,
        COMPLETED,
        now,
        "output written",
        output_name=output_name,
        output_generation=output_generation,
        prediction_ids=ids,
    )


def failed(job: Job, reason: str, error: str, now: float, prediction_id: str = "") -> Job:
    ids = job.prediction_ids
    if prediction_id and prediction_id not in ids:
        ids = (*ids, prediction_id)
    return _move(job, FAILED, now, reason, reason=reason, error=logs.scrub_urls(error)[:2000], prediction_ids=ids)


def _move(job: Job, state: str, now: float, why: str, **changes: Any) -> Job:
    entry = {"state": state, "at": now, "why": why}
    history = (*job.history, entry)[-20:]
    return dataclasses.replace(job, state=state, updated_at=now, history=history, **changes)


# --- the store: records in the state bucket, written with generation preconditions ----------------


Conflict = errors.Conflict


class JobStore:
    """Job records over the object seam; every write is conditional on the generation read."""

    def __init__(self, objects: Objects, bucket: str) -> None:
        self.objects = objects
        self.bucket = bucket

    def create(self, job: Job) -> int:
        """Create-only: raises Conflict when a record for this upload exists already."""
        return self.save(job, 0)

    def load(self, job_id: str) -> tuple[Job, int] | None:
        found = self.objects.read_json(self.bucket, naming.job_record_name(job_id))
        if found is None:
            return None
        data, generation = found
        return Job.from_json(data), generation

    def save(self, job: Job, generation: int) -> int:
        """Replace the record only if it is still at `generation`."""
        name = naming.job_record_name(job.job_id)
        summary = {"state": job.state, "due_at": f"{job.due_at:.3f}"}
        try:
            return self.objects.write_json(self.bucket, name, job.to_json(), generation, summary)
        except errors.PreconditionFailed as exc:
            raise Conflict(job.job_id) from exc

    def overdue(self, now: float, limit: int) -> list[str]:
        """Ids of up to `limit` unfinished jobs whose lease or deadline has passed, oldest first.
        Reads only the listing (state and due time are in each record's metadata)."""
        due: list[tuple[float, str]] = []
        for name, meta in self.objects.list_with_metadata(self.bucket, naming.JOBS_PREFIX):
            if meta.get("state") in FINAL_STATES or not name.endswith(".json"):
                continue
            try:
                due_at = float(meta.get("due_at", "0"))
            except ValueError:
                due_at = 0.0
            if due_at <= now:
                due.append((due_at, name[len(naming.JOBS_PREFIX) : -len(".json")]))
        return [job_id for _, job_id in sorted(due)[:limit]]


def now() -> float:
    return time.time()
