"""Lifecycle steps more than one path takes: putting a job's task in a queue, sending a job back to
the submission queue (a deadline check's resubmission, an operator's retry), and re-opening a
queued job whose task may be missing. Admission, the task handler, the reconciler and the
operators' command all call these; each record change goes through `JobStore.update`.
"""

from __future__ import annotations

import enum

from bgremove import errors, jobs, logs, tasks
from bgremove.config import Config
from bgremove.deps import Deps
from bgremove.errors import RetryLater
from bgremove.jobs import Decision, Job, Source, Updated


def enqueue_submission(job: Job, cfg: Config, deps: Deps) -> bool:
    """The job's current submission task; False when it exists already (a duplicate)."""
    return deps.queue().enqueue(tasks.submit_task(job.job_id, job.submit_task_name, cfg, queued_at=job.updated_at))


def schedule_deadline(job: Job, cfg: Config, deps: Deps) -> None:
    """A delayed task on the deadline queue, due when the job is; the sweep covers a failure here."""
    task = tasks.deadline_task(job.job_id, job.deadline_task_name(), job.due_at, cfg)
    try:
        deps.queue().enqueue(task)
    except RetryLater as exc:
        logs.warning("deadline check not scheduled; the sweep will look", job_id=job.job_id, error=str(exc))


class Claimed(enum.Enum):
    TAKEN = "taken"  # the caller holds the claim now: it may create the prediction
    DUPLICATE = "duplicate"  # submitted or final already: nothing to do
    NO_JOB = "no_job"


def claim(job_id: str, cfg: Config, deps: Deps, now: float, source: Source | None = None) -> Updated[Claimed]:
    """Take a queued job (or an expired claim) to submit it; a live claim held by another
    dispatch raises RetryLater (if that holder dies, the retry takes over). Given `source`, a
    missing record is created claimed (the bench's direct-submission design claims at the event)."""

    def take(job: Job | None) -> Decision[Claimed]:
        if job is None:
            if source is None:
                return Decision(Claimed.NO_JOB)
            return Decision(Claimed.TAKEN, jobs.new_claim(source, cfg.model_version, now, cfg.claim_ttl_seconds))
        if job.state == jobs.CLAIMED and not job.lease_expired(now):
            raise RetryLater("another dispatch holds the claim")
        if job.state not in (jobs.QUEUED, jobs.CLAIMED):
            return Decision(Claimed.DUPLICATE)
        why = "submission task" if job.state == jobs.QUEUED else "claim expired; taken over by a retry"
        return Decision(Claimed.TAKEN, jobs.claim(job, now, cfg.claim_ttl_seconds, why))

    return deps.store.update(job_id, take, absent=source is not None)


def reopen(job: Job, cfg: Config, deps: Deps) -> bool:
    """A queued job seen again (a duplicate event, a rerun backfill): make sure it is listed open
    and its current submission task exists; True when the task had to be made again."""
    if job.state != jobs.QUEUED:
        return False
    deps.store.ensure_open(job.job_id, job.created_at)
    return enqueue_submission(job, cfg, deps)


class Resubmitted(enum.Enum):
    REQUEUED = "requeued"  # back in the submission queue under a new task
    EXHAUSTED = "exhausted"  # the attempt budget is spent: failed `attempts_exhausted`
    MOVED = "moved"  # someone else moved the job meanwhile: nothing done


def resubmit(job: Job, generation: int, why: str, cfg: Config, deps: Deps, now: float) -> Resubmitted:
    """Back into the submission queue under a new task name (its pace, its retries), or a failure
    record when the attempt budget is spent. Only from the state `job` was read in: a job another
    writer moved meanwhile is left to that writer."""
    expected = (job.state, job.attempts, job.prediction_id)

    def again(current: Job | None) -> Decision[Resubmitted]:
        if current is None or (current.state, current.attempts, current.prediction_id) != expected:
            return Decision(Resubmitted.MOVED)
        if current.attempts >= cfg.max_prediction_attempts:
            error = f"{current.attempts} predictions created; last: {why}"
            return Decision(Resubmitted.EXHAUSTED, jobs.failed(current, "attempts_exhausted", error, now))
        return Decision(Resubmitted.REQUEUED, jobs.requeue(current, now, cfg.queued_check_seconds, why))

    done = deps.store.update(job.job_id, again, read=(job, generation))
    if done.result is Resubmitted.REQUEUED and done.job is not None:
        enqueue_submission(done.job, cfg, deps)
    return done.result


class Retried(enum.Enum):
    RETRIED = "retried"
    NOT_FAILED = "not_failed"  # it is not (or no longer) failed: left alone
    TOO_LARGE = "too_large"  # the upload is still over MAX_UPLOAD_BYTES: a retry would fail again


def retry(job_id: str, why: str, cfg: Config, deps: Deps, now: float, read: tuple[Job, int] | None = None) -> Retried:
    """An operator's retry of a failed job (`bgremove retry`): back into the queue with a fresh
    budget of predictions (jobs.retried), and its next submission task enqueued."""

    def again(current: Job | None) -> Decision[Retried]:
        if current is None or current.state != jobs.FAILED:
            return Decision(Retried.NOT_FAILED)
        if current.source.size > cfg.max_upload_bytes:
            return Decision(Retried.TOO_LARGE)
        return Decision(Retried.RETRIED, jobs.retried(current, now, cfg.queued_check_seconds, why))

    done = deps.store.update(job_id, again, read=read)
    if done.result is Retried.RETRIED and done.job is not None:
        enqueue_submission(done.job, cfg, deps)
    return done.result


def check_live(source: Source, deps: Deps) -> dict[str, str]:
    """The live upload's custom metadata; raises errors.Superseded unless `source` is still the
    live generation of its name (one metadata read): a replaced or deleted upload's work is not
    paid for, and not written."""
    found = deps.objects.metadata(source.bucket, source.name)
    if found is None:
        raise errors.Superseded(f"{source.object_uri} was deleted", deleted=True)
    if found[1] != source.generation:
        raise errors.Superseded(f"{source.object_uri} is now generation {found[1]}, not {source.generation}")
    return found[0]


class Ended(enum.Enum):
    ENDED = "ended"  # superseded or removed now
    MOVED = "moved"  # it was final already, or another writer moved it: nothing done


def end_superseded(
    job_id: str,
    why: errors.Superseded,
    deps: Deps,
    now: float,
    read: tuple[Job, int] | None = None,
    cancel: bool = True,
) -> Ended:
    """End an open job whose upload is no longer live: `removed` when it was deleted, else
    `superseded`. With `cancel` (its prediction may still be running) the prediction is cancelled,
    since nothing will use its result; a failure to cancel only costs that prediction's run."""

    def end(current: Job | None) -> Decision[Job | None]:
        if current is None or current.is_final:
            return Decision(None)
        if why.deleted:
            return Decision(current, jobs.removed(current, str(why), now))
        return Decision(current, jobs.superseded(current, str(why), now))

    done = deps.store.update(job_id, end, read=read)
    before = done.result
    if not done.wrote or before is None:
        return Ended.MOVED
    if cancel and before.state == jobs.SUBMITTED and before.prediction_id:
        try:
            deps.predictions().cancel(before.prediction_id)
        except (errors.RetryLater, errors.ApiRefused) as exc:
            logs.warning("could not cancel a superseded prediction", job_id=job_id, error=str(exc))
    logs.info(
        f"job {done.job.state if done.job else 'ended'}: {why}", job_id=job_id, prediction_id=before.prediction_id
    )
    return Ended.ENDED
