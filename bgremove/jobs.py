"""Job records: one per upload generation, kept as JSON in the state bucket.

States (the README draws the machine):

    queued ──> claimed ──> submitted ──> completed ──> removed
      │  ▲        │            │
      │  └────────┴────────────┘ (released after a transient error; resubmitted)
      └──────────┴─────────────┴──────> failed
      └──────────┴─────────────┴──────> superseded (a newer generation is live) / removed (deleted)

`queued`: admitted, a submission task is in the queue; its check time is when the sweep asks
whether that task still exists. `claimed` carries a lease: a task handler that dies holding it
leaves a claim that expires, and the task's retry (or the sweep) takes it over. `submitted` carries
a deadline, when a delayed task asks the predictions API what happened. `completed`, `failed`,
`superseded` (the upload was replaced by a newer generation before its result was written: nothing
is written for it) and `removed` (the upload was deleted: its cut-outs are removed, or none was
made) are final. Every write is conditional on the generation that was read, so of two writers exactly one
wins: `JobStore.update` is the one way a record changes (read, decide with a pure function, write
conditionally, and on a conflict re-read and decide again), used by every transition.

Open jobs are also listed under `open/` in the state bucket (an empty index object per job, made
with the record and deleted when the job ends), so the sweep reads only open work, however many
finished records the bucket holds. When the job's end is announced (a completion event, see
events.py), its entry stays until the announcement went out, so the sweep retries one that failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from bgremove import errors, logs, naming
from bgremove.objects import Objects


class State(enum.StrEnum):
    QUEUED = "queued"
    CLAIMED = "claimed"
    SUBMITTED = "submitted"
    COMPLETED = "completed"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    REMOVED = "removed"


QUEUED = State.QUEUED
CLAIMED = State.CLAIMED
SUBMITTED = State.SUBMITTED
COMPLETED = State.COMPLETED
FAILED = State.FAILED
SUPERSEDED = State.SUPERSEDED
REMOVED = State.REMOVED
FINAL_STATES = (COMPLETED, FAILED, SUPERSEDED, REMOVED)
OPEN_STATES = (QUEUED, CLAIMED, SUBMITTED)


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
    # What its outputs copy (from the event): delivery headers and custom metadata other than
    # this pipeline's own `bgremove-*` keys.
    cache_control: str = ""
    content_disposition: str = ""
    content_language: str = ""
    custom: dict[str, str] = field(default_factory=dict)

    @property
    def job_id(self) -> str:
        return naming.job_id(self.bucket, self.name, self.generation)

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}#{self.generation}"

    @property
    def object_uri(self) -> str:
        """gs://bucket/name, the name's URI across its generations (what outputs record)."""
        return f"gs://{self.bucket}/{self.name}"


@dataclass(frozen=True)
class Job:
    job_id: str
    source: Source
    state: State
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
    enqueues: int = 0  # submission tasks created for this job; names the next one
    check_interval: float = 0.0  # seconds between the last check (or the creation) and the next one
    # Held by a spend budget (budget.py): "budget" while a queued job waits for its window to turn
    # (or the budget to be raised), since `held_at`; cleared when its prediction is counted.
    hold: str = ""
    held_at: float = 0.0
    held_window: str = ""  # the budget window that held it: "day" or "month"
    # The budget shard chosen in each window (budget.py): where a retried task looks for its count
    # first, so a submission is counted once however often its task runs.
    budget_marks: tuple[str, ...] = ()

    @property
    def submit_task_name(self) -> str:
        """The current submission task's id: a duplicate event re-enqueues under the same name."""
        return f"{self.job_id}-s{self.enqueues}"

    def deadline_task_name(self) -> str:
        """One deadline check per (prediction, due time)."""
        return f"{self.job_id}-d{self.attempts}-{int(self.deadline_at)}"

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
        if self.state in (SUBMITTED, QUEUED):
            return self.deadline_at
        return 0.0

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["prediction_ids"] = list(self.prediction_ids)
        data["budget_marks"] = list(self.budget_marks)
        data["history"] = list(self.history)
        data["outputs"] = [dict(entry) for entry in self.outputs]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        values = dict(data)
        source_fields = {f.name for f in dataclasses.fields(Source)}
        values["source"] = Source(**{k: v for k, v in values["source"].items() if k in source_fields})
        values["state"] = State(values["state"])
        values["prediction_ids"] = tuple(values.get("prediction_ids", ()))
        values["budget_marks"] = tuple(values.get("budget_marks", ()))
        values["history"] = tuple(values.get("history", ()))
        values["outputs"] = tuple(dict(o) for o in values.get("outputs") or () if isinstance(o, dict))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# --- transitions: pure functions from one record to the next -------------------------------------


def new_queued(source: Source, model_version: str, now: float, check_seconds: float) -> Job:
    """Admitted: a submission task (named by `submit_task_name`) is about to be enqueued."""
    return Job(
        job_id=source.job_id,
        source=source,
        state=QUEUED,
        model_version=model_version,
        created_at=now,
        updated_at=now,
        deadline_at=now + check_seconds,
        enqueues=1,
        history=({"state": QUEUED, "at": now},),
    )


def claim(job: Job, now: float, lease_seconds: int, why: str) -> Job:
    """A task handler takes a queued job (or an expired claim) to submit it."""
    return _move(job, CLAIMED, now, why, lease_expires_at=now + lease_seconds, deadline_at=0.0)


def requeue(job: Job, now: float, check_seconds: float, why: str) -> Job:
    """Back into the queue under a new task name: a lost, expired or stuck prediction, a claim
    whose holder died, or a submission task that no longer exists."""
    return _move(
        job, QUEUED, now, why, enqueues=job.enqueues + 1, deadline_at=now + check_seconds, lease_expires_at=0.0
    )


def retried(job: Job, now: float, check_seconds: float, why: str) -> Job:
    """An operator's retry of a failed job (`bgremove retry`): back into the queue under a new task
    name with a fresh budget of predictions. The failure stays in the history (its entry, and `why`,
    which names it); `reason` and `error` are cleared, as they describe only a failed job, and the
    prediction ids are kept, so every prediction ever made for the upload stays on record."""
    if job.state != FAILED:
        raise ValueError(f"only a failed job can be retried, not a {job.state} one")
    return _move(
        job,
        QUEUED,
        now,
        why,
        enqueues=job.enqueues + 1,
        attempts=0,
        deadline_at=now + check_seconds,
        lease_expires_at=0.0,
        reason="",
        error="",
        output_name="",
        output_generation=0,
    )


def check_later(job: Job, now: float, check_seconds: float) -> Job:
    """A queued job whose task still exists: look again later."""
    return dataclasses.replace(job, deadline_at=now + check_seconds, updated_at=now)


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


def release(job: Job, now: float, why: str, check_seconds: float = 0.0) -> Job:
    """Give a claim back after a transient failure: the task's retry takes it again."""
    return _move(job, QUEUED, now, why, lease_expires_at=0.0, deadline_at=now + check_seconds)


def held(job: Job, now: float, why: str, check_seconds: float, window: str) -> Job:
    """Queued and held by a spend budget's `window` (a claim given back, or a queued job marked):
    the task stays in the queue and its retries ask again. `held_at` keeps the start of the hold."""
    since = job.held_at if job.hold else now
    if job.state == QUEUED:
        return dataclasses.replace(job, hold="budget", held_at=since, held_window=window, updated_at=now)
    return dataclasses.replace(
        _move(job, QUEUED, now, why, lease_expires_at=0.0, deadline_at=now + check_seconds),
        hold="budget",
        held_at=since,
        held_window=window,
    )


def counted(job: Job, marks: tuple[str, ...], now: float) -> Job:
    """The budget shards the claimed job's prediction is counted in; a hold ends here."""
    return dataclasses.replace(job, budget_marks=marks, hold="", held_at=0.0, held_window="", updated_at=now)


def submitted(job: Job, prediction_id: str, now: float, deadline_seconds: float) -> Job:
    return _move(
        job,
        SUBMITTED,
        now,
        "prediction created",
        prediction_ids=(*job.prediction_ids, prediction_id),
        attempts=job.attempts + 1,
        deadline_at=now + deadline_seconds,
        check_interval=deadline_seconds,
        lease_expires_at=0.0,
    )


def extend_deadline(job: Job, deadline: float, now: float) -> Job:
    """A submitted job whose prediction is still running: look again at `deadline`."""
    return dataclasses.replace(job, deadline_at=deadline, check_interval=max(0.0, deadline - now), updated_at=now)


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


def superseded(job: Job, why: str, now: float) -> Job:
    """A newer generation of the upload is live: this one's result is not wanted (nothing is
    written for it; a running prediction is cancelled by the caller)."""
    return _move(job, SUPERSEDED, now, why, reason="superseded", error=why, lease_expires_at=0.0, deadline_at=0.0)


def removed(job: Job, why: str, now: float, outputs: tuple[dict[str, Any], ...] | None = None) -> Job:
    """The upload was deleted: its cut-outs are gone (`outputs` lists what was removed), or the
    job ended before making any."""
    kept = job.outputs if outputs is None else outputs
    return _move(
        job, REMOVED, now, why, reason="removed", error=why, outputs=kept, lease_expires_at=0.0, deadline_at=0.0
    )


def _move(job: Job, state: State, now: float, why: str, **changes: Any) -> Job:
    entry = {"state": state, "at": now, "why": why}
    history = (*job.history, entry)[-20:]
    return dataclasses.replace(job, state=state, updated_at=now, history=history, **changes)


# --- the store: records in the state bucket, written with generation preconditions ----------------


T = TypeVar("T")

# How many times `JobStore.update` decides before giving up on a record that keeps changing. Two
# writers race at most a few times (a webhook against the submitter recording its prediction, a
# deadline check against a redelivery); more means something is wrong, and the caller's platform
# retry (task, webhook, event) is the right next step.
UPDATE_ATTEMPTS = 5


@dataclass(frozen=True)
class Decision(Generic[T]):
    """What a transition decided over the record as read: what to report, and the record to
    write in its place (None: write nothing)."""

    result: T
    write: Job | None = None


@dataclass(frozen=True)
class Updated(Generic[T]):
    """What `JobStore.update` ended with: the decision's result, the record as it stands (the one
    written, or the one read when nothing was written; None when there is none) and its generation."""

    result: T
    job: Job | None
    generation: int
    wrote: bool


# A job whose end was not announced is announced again by the sweep once this long has passed
# since the end was written (the writer's own announcement is normally under way before that).
ANNOUNCE_AGAIN_AFTER_SECONDS = 60.0


class JobStore:
    """Job records over the object seam; every write is conditional on the generation read.

    `announce`, when given, is called after every write that ends a job (a new final state): it
    tells the world (events.Announcer) and answers True once it has, and only then is the job's
    open/ entry removed, so an announcement that failed is found and made again by the sweep."""

    def __init__(self, objects: Objects, bucket: str, announce: Callable[[Job], bool] | None = None) -> None:
        self.objects = objects
        self.bucket = bucket
        self.announce = announce

    def update(
        self,
        job_id: str,
        decide: Callable[[Job | None], Decision[T]],
        read: tuple[Job, int] | None = None,
        absent: bool = False,
    ) -> Updated[T]:
        """The one compare-and-swap over a job record: decide over the record as it is, write the
        decision conditionally on the generation read, and on a conflict re-read and decide again
        (at most UPDATE_ATTEMPTS decisions, then `errors.Contended`, a RetryLater).

        `decide` is pure over what it is given (None: no record) and may raise to refuse (a
        RetryLater propagates). `read` is a record the caller has just read, `absent` says the
        caller expects none (a create then costs no read); either saves the first read. A record
        that becomes open (created, or re-opened from a final state) is listed under open/ first,
        so an open job is never missing from the index."""
        current = read
        if current is None and not absent:
            current = self.load(job_id)
        for _ in range(UPDATE_ATTEMPTS):
            job, generation = current if current is not None else (None, 0)
            decision = decide(job)
            if decision.write is None:
                return Updated(decision.result, job, generation, False)
            new = decision.write
            ends = new.is_final and (job is None or job.state != new.state)
            if (job is None or job.is_final) and (not new.is_final or (ends and self.announce is not None)):
                self.ensure_open(new.job_id, new.created_at)
            try:
                written = self.save(new, generation)
            except errors.Conflict:
                current = self.load(job_id)
                continue
            if ends:
                _log_end(new)
                self.ended(new)
            return Updated(decision.result, new, written, True)
        raise errors.Contended(f"job record {job_id} kept changing over {UPDATE_ATTEMPTS} attempts")

    def ensure_open(self, job_id: str, created_at: float) -> None:
        """List the job under open/ (create-only; an existing entry is fine)."""
        name = naming.open_index_name(job_id)
        with contextlib.suppress(errors.PreconditionFailed):
            self.objects.write_json(self.bucket, name, {}, 0, {"created_at": f"{created_at:.3f}"})

    def open_jobs(self) -> list[str]:
        """Ids of every job listed as open, oldest first (one listing of open/, no record reads)."""
        entries = []
        for name, meta in self.objects.list_with_metadata(self.bucket, naming.OPEN_PREFIX):
            try:
                created = float(meta.get("created_at", "0"))
            except ValueError:
                created = 0.0
            entries.append((created, name[len(naming.OPEN_PREFIX) :]))
        return [job_id for _, job_id in sorted(entries)]

    def close(self, job_id: str) -> None:
        """Unlist a finished (or missing) job; a failure leaves it for the next sweep to retry."""
        try:
            self.objects.delete(self.bucket, naming.open_index_name(job_id))
        except errors.RetryLater as exc:
            logs.warning("could not unlist a finished job; the sweep will", job_id=job_id, error=str(exc))

    def load(self, job_id: str) -> tuple[Job, int] | None:
        found = self.objects.read_json(self.bucket, naming.job_record_name(job_id))
        if found is None:
            return None
        data, generation = found
        return Job.from_json(data), generation

    def save(self, job: Job, generation: int) -> int:
        """Replace the record only if it is still at `generation` (0: only if there is none);
        raises errors.Conflict otherwise. Transitions go through `update`, which calls this."""
        name = naming.job_record_name(job.job_id)
        # Listing metadata: `bgremove status` counts states and `bgremove show` finds a name's
        # generations from the listing alone, without reading records.
        summary = {"state": job.state, "due_at": f"{job.due_at:.3f}", "source": job.source.uri}
        if job.hold and job.state == QUEUED:
            summary["hold"] = job.hold
        try:
            written = self.objects.write_json(self.bucket, name, job.to_json(), generation, summary)
        except errors.PreconditionFailed as exc:
            raise errors.Conflict(job.job_id) from exc
        return written

    def ended(self, job: Job) -> None:
        """A job has just ended (or its end was not announced yet): announce it, then unlist it."""
        if self.announce is None or self.announce(job):
            self.close(job.job_id)

    def overdue(self, now: float, limit: int, scan: int) -> list[str]:
        """Ids of up to `limit` open jobs whose check time has passed, oldest first.

        Lists only open/ and reads at most `scan` of those records, oldest first, so a run's cost
        follows open work, not history. Index entries of missing jobs, and of finished jobs with
        nothing to announce, are removed; a finished job whose end was not announced is announced
        again (and then unlisted)."""
        due: list[str] = []
        for job_id in self.open_jobs()[:scan]:
            try:
                loaded = self.load(job_id)
            except errors.RetryLater:
                due.append(job_id)  # unreadable now: its settling will say so, and the batch goes on
                if len(due) >= limit:
                    break
                continue
            if loaded is None:
                self.close(job_id)
                continue
            if loaded[0].is_final:
                if self.announce is None or loaded[0].updated_at + ANNOUNCE_AGAIN_AFTER_SECONDS <= now:
                    self.ended(loaded[0])
                continue
            if loaded[0].due_at <= now:
                due.append(job_id)
                if len(due) >= limit:
                    break
        return due


def _log_end(job: Job) -> None:
    """The one line per job end that the failure and completion metrics count."""
    from bgremove import metrics

    metrics.emit(
        metrics.Event.JOB_ENDED,
        "WARNING" if job.state == FAILED else "INFO",
        f"job ended: {job.state.value}" + (f" ({job.reason})" if job.state == FAILED else ""),
        job_id=job.job_id,
        object=job.source.object_uri,
        generation=job.source.generation,
        state=job.state.value,
        reason=job.reason if job.state == FAILED and job.reason else job.state.value,
        prediction_id=job.prediction_id or None,
    )


def now() -> float:
    return time.time()
