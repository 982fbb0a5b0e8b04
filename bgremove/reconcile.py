"""The reconciler: settle jobs that nothing else will move, a bounded batch per run.

Run by Cloud Scheduler through the `reconcile` entry point. It finds unfinished jobs whose claim
lease or submission deadline has passed and settles each: a finished prediction goes through the
same code as its webhook; a lost, expired or data-removed one is resubmitted (within
MAX_PREDICTION_ATTEMPTS); a claim whose submitter died is submitted again. Every change is a
conditional write, so it is safe beside webhooks, uploads and other reconciler runs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from bgremove import complete, errors, jobs, logs, submit
from bgremove.config import Config, duration_seconds
from bgremove.deps import Deps
from bgremove.jobs import Job

# A prediction still running this long after its Cancel-After deadline is treated as stuck.
STUCK_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class Report:
    examined: int
    outcomes: dict[str, int]

    def to_json(self) -> dict[str, object]:
        return {"examined": self.examined, "outcomes": self.outcomes}


def reconcile(cfg: Config, deps: Deps, now: float) -> Report:
    """One bounded batch. A transient failure on one job (storage, API, output host) leaves that
    job for the next run and the batch goes on; only the listing itself failing aborts the run."""
    overdue = deps.store.overdue(now, cfg.reconcile_batch_size)
    outcomes: Counter[str] = Counter()
    for job_id in overdue:
        try:
            outcome = reconcile_job(job_id, cfg, deps, now)
        except (errors.RetryLater, errors.ApiRefused) as exc:
            logs.warning("reconcile: job left for the next run", job_id=job_id, error=f"{type(exc).__name__}: {exc}")
            outcome = "retry_later"
        outcomes[outcome] += 1
    report = Report(len(overdue), dict(outcomes))
    logs.info("reconcile run finished", **report.to_json())
    return report


def reconcile_job(job_id: str, cfg: Config, deps: Deps, now: float) -> str:
    loaded = deps.store.load(job_id)
    if loaded is None:
        return "gone"
    job, generation = loaded
    if job.is_final or job.due_at > now:
        return "not_due"
    fields: dict[str, Any] = {"job_id": job_id, "object": f"gs://{job.source.bucket}/{job.source.name}"}
    if job.state == jobs.CLAIMED:
        # The run that claimed it died before recording a prediction (or gave it back).
        return _resubmit(job, generation, "claim expired", cfg, deps, now, fields)

    client = deps.predictions()
    prediction = client.get(job.prediction_id)
    if prediction is None or prediction.data_removed or (prediction.status == "succeeded" and not prediction.output):
        return _resubmit(job, generation, "prediction or its output is gone", cfg, deps, now, fields)
    if prediction.is_terminal:
        return "settled_" + complete.settle(job_id, prediction, cfg, deps, now).outcome.value
    submitted_at = _submitted_at(job)
    if now - submitted_at < duration_seconds(cfg.cancel_after) + STUCK_GRACE_SECONDS:
        # Still queued or running within its Cancel-After deadline: look again a period later.
        try:
            deps.store.save(jobs.extend_deadline(job, now + cfg.reconcile_after_seconds, now), generation)
        except jobs.Conflict:
            return "raced"
        return "waiting"
    try:
        client.cancel(prediction.id)
    except (errors.RetryLater, errors.ApiRefused) as exc:
        logs.warning("reconcile: cancel failed", prediction_id=prediction.id, error=str(exc), **fields)
    return _resubmit(job, generation, "prediction stuck past its deadline", cfg, deps, now, fields)


def _resubmit(job: Job, generation: int, why: str, cfg: Config, deps: Deps, now: float, fields: dict[str, Any]) -> str:
    taken = jobs.reclaim(job, now, cfg.claim_ttl_seconds, f"reconciler: {why}")
    try:
        generation = deps.store.save(taken, generation)
    except jobs.Conflict:
        return "raced"
    logs.info(f"reconcile: resubmitting ({why})", attempts=job.attempts, **fields)
    result = submit.submit_job(taken, generation, cfg, deps, now, dict(fields))
    return "resubmitted" if result.outcome is submit.Outcome.SUBMITTED else "settled_" + result.outcome.value


def _submitted_at(job: Job) -> float:
    """When the job's current prediction was created (the last `submitted` transition)."""
    times = [entry["at"] for entry in job.history if entry.get("state") == jobs.SUBMITTED]
    return times[-1] if times else job.created_at
