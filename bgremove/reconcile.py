"""Settling jobs that nothing else will move: one job at its deadline, or a bounded sweep.

`reconcile_job` is what a job's deadline check does (a delayed task on the deadline queue, see
`handle_deadline_task`): a finished prediction goes through the same code as its webhook; a lost,
expired or data-removed one is put back in the submission queue (within MAX_PREDICTION_ATTEMPTS);
a still-running one is looked at again later; a claim whose holder died is queued again; a queued
job whose task no longer exists gets a new task. `reconcile` is the safety net Cloud Scheduler
runs: the same for every overdue job listed as open, a bounded batch per run. Every change is a
conditional write, so it is safe beside webhooks, tasks and other runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bgremove import complete, errors, jobs, lifecycle, logs, schedule
from bgremove.config import Config, duration_seconds
from bgremove.deps import Deps
from bgremove.jobs import Decision, Job
from bgremove.lifecycle import Resubmitted
from bgremove.outcomes import SETTLED, Outcome

# A prediction still running this long after its Cancel-After deadline is treated as stuck.
STUCK_GRACE_SECONDS = 60.0
# A sweep reads at most this many open records per job it may settle (oldest first).
SCAN_FACTOR = 10


@dataclass(frozen=True)
class Report:
    examined: int
    outcomes: dict[str, int]

    def to_json(self) -> dict[str, object]:
        return {"examined": self.examined, "outcomes": self.outcomes}


def reconcile(cfg: Config, deps: Deps, now: float) -> Report:
    """One bounded batch. A transient failure on one job (storage, API, output host) leaves that
    job for the next run and the batch goes on; only the listing itself failing aborts the run."""
    overdue = deps.store.overdue(now, cfg.reconcile_batch_size, cfg.reconcile_batch_size * SCAN_FACTOR)
    outcomes: Counter[str] = Counter()
    for job_id in overdue:
        try:
            outcome = reconcile_job(job_id, cfg, deps, now)
        except (errors.RetryLater, errors.ApiRefused) as exc:
            logs.warning("reconcile: job left for the next run", job_id=job_id, error=f"{type(exc).__name__}: {exc}")
            outcome = Outcome.RETRY_LATER
        outcomes[outcome.value] += 1
    report = Report(len(overdue), dict(outcomes))
    logs.info("reconcile run finished", **report.to_json())
    return report


def handle_deadline_task(job_id: str, cfg: Config, deps: Deps, now: float) -> Outcome:
    """A job's deadline check. A job whose due time moved on (its deadline was extended, or it was
    resubmitted) is checked again by the task that move scheduled, so this one does nothing."""
    outcome = reconcile_job(job_id, cfg, deps, now)
    logs.info(f"deadline check: {outcome.value}", job_id=job_id, outcome=outcome.value)
    return outcome


def reconcile_job(job_id: str, cfg: Config, deps: Deps, now: float) -> Outcome:
    loaded = deps.store.load(job_id)
    if loaded is None:
        return Outcome.GONE
    job, generation = loaded
    if job.is_final or job.due_at > now:
        return Outcome.NOT_DUE
    fields: dict[str, Any] = {"job_id": job_id, "object": f"gs://{job.source.bucket}/{job.source.name}"}
    if job.state == jobs.QUEUED:
        if deps.queue().exists(cfg.submit_queue, job.submit_task_name):
            # Waiting its turn (a slow account can queue for hours): look again later.
            later = _later(
                job, generation, lambda current: jobs.check_later(current, now, cfg.queued_check_seconds), deps
            )
            return Outcome.STILL_QUEUED if later is not None else Outcome.NOT_DUE
        return _resubmit(job, generation, "its submission task is gone", cfg, deps, now, fields)
    if job.state == jobs.CLAIMED:
        # The task handler that claimed it died before recording a prediction.
        return _resubmit(job, generation, "claim expired", cfg, deps, now, fields)

    try:
        lifecycle.check_live(job.source, deps)
    except errors.Superseded as exc:
        # Replaced or deleted while its prediction ran: cancel it (nothing will use the result).
        lifecycle.end_superseded(job_id, exc, deps, now, read=(job, generation))
        return Outcome.SETTLED_REMOVED if exc.deleted else Outcome.SETTLED_SUPERSEDED
    client = deps.predictions()
    prediction = client.get(job.prediction_id)
    if prediction is None or prediction.data_removed or (prediction.status == "succeeded" and not prediction.output):
        return _resubmit(job, generation, "prediction or its output is gone", cfg, deps, now, fields)
    if prediction.is_terminal:
        deps.run_times.observe(prediction.raw)
        settled = complete.settle(job_id, prediction, cfg, deps, now).outcome
        return SETTLED.get(settled, settled)
    submitted_at = _submitted_at(job)
    if now - submitted_at < duration_seconds(cfg.cancel_after) + STUCK_GRACE_SECONDS:
        # Still queued or running within its Cancel-After deadline: look again later, backing off.
        wait = schedule.next_check(cfg, job.check_interval)
        later = _later(job, generation, lambda current: jobs.extend_deadline(current, now + wait, now), deps)
        if later is None:
            return Outcome.NOT_DUE
        lifecycle.schedule_deadline(later, cfg, deps)
        return Outcome.WAITING
    try:
        client.cancel(prediction.id)
    except (errors.RetryLater, errors.ApiRefused) as exc:
        logs.warning("reconcile: cancel failed", prediction_id=prediction.id, error=str(exc), **fields)
    return _resubmit(job, generation, "prediction stuck past its deadline", cfg, deps, now, fields)


def _later(job: Job, generation: int, move: Callable[[Job], Job], deps: Deps) -> Job | None:
    """Move the job's check time on, only while it is as it was read (same state, same prediction,
    still due); None when another writer moved it meanwhile (then its own check covers it)."""

    def decide(current: Job | None) -> Decision[None]:
        unchanged = current is not None and (current.state, current.prediction_id) == (job.state, job.prediction_id)
        if current is None or not unchanged or current.due_at != job.due_at:
            return Decision(None)
        return Decision(None, move(current))

    done = deps.store.update(job.job_id, decide, read=(job, generation))
    return done.job if done.wrote else None


def _resubmit(
    job: Job, generation: int, why: str, cfg: Config, deps: Deps, now: float, fields: dict[str, Any]
) -> Outcome:
    outcome = lifecycle.resubmit(job, generation, f"reconciler: {why}", cfg, deps, now)
    if outcome is Resubmitted.EXHAUSTED:
        logs.warning("job failed: attempts_exhausted", error=f"last: {why}", **fields)
        return Outcome.SETTLED_FAILED
    if outcome is Resubmitted.MOVED:
        return Outcome.NOT_DUE
    logs.info(f"reconcile: queued again ({why})", attempts=job.attempts, **fields)
    return Outcome.REQUEUED


def _submitted_at(job: Job) -> float:
    """When the job's current prediction was created (the last `submitted` transition)."""
    times = [entry["at"] for entry in job.history if entry.get("state") == jobs.SUBMITTED]
    return times[-1] if times else job.created_at
