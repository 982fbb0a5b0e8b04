"""The submission side: when the queue dispatches a job's submission task, claim the job and
submit its upload to the predictions API with a webhook that will bring the result back.

Admission (admission.py) made the job `queued` and named its task from the job id. The queue's
dispatch rate and concurrency match the API's create limit; the task handler
(`handle_submit_task`) makes one API call, never sleeps, and turns a throttled or unavailable API
into the task's retry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from bgremove import budget, complete, errors, images, inputs, jobs, lifecycle, logs, metrics, outcomes, schedule
from bgremove.config import Config
from bgremove.deps import Deps, PredictionsApi
from bgremove.errors import RetryLater
from bgremove.jobs import Decision, Job
from bgremove.outcomes import Outcome, Result


def webhook_url_for(base: str, job_id: str) -> str:
    """The webhook URL carries the job id. The query string is not signed, so the webhook handler
    treats it as a hint that signed data must confirm (see complete.handle_webhook)."""
    return f"{base}{'&' if '?' in base else '?'}{urlencode({'job': job_id})}"


def handle_submit_task(job_id: str, cfg: Config, deps: Deps, now: float, queued_at: float | None = None) -> Result:
    """The submission task: claim the queued job and create its prediction (one API call).

    A spent budget window holds it first (errors.BudgetSpent, a RetryLater: the task is retried)."""
    fields: dict[str, Any] = {"job_id": job_id}
    age = round(max(0.0, now - queued_at), 3) if queued_at is not None else None
    metrics.emit(
        metrics.Event.SUBMISSION_DISPATCHED, "INFO", "submission task dispatched", job_id=job_id, queue_age_seconds=age
    )
    seen = budget.hold_if_spent(job_id, cfg, deps, now)
    taken = lifecycle.claim(job_id, cfg, deps, now)
    if taken.job is None:
        return _log(Result(Outcome.IGNORED, "no such job", job_id), fields)
    job = taken.job
    fields.update(object=f"gs://{job.source.bucket}/{job.source.name}", generation=job.source.generation)
    if taken.result is lifecycle.Claimed.DUPLICATE:
        return _log(Result(Outcome.DUPLICATE, f"job is already {job.state}", job_id, job.prediction_id), fields)
    return submit_job(job, taken.generation, cfg, deps, now, fields, seen)


def submit_job(
    job: Job,
    generation: int,
    cfg: Config,
    deps: Deps,
    now: float,
    fields: dict[str, Any],
    seen: Mapping[str, budget.Standing] | None = None,
) -> Result:
    """Create a prediction for a claimed job, record it and schedule its deadline check.

    On anything worth retrying the claim is given back at once (the job is `queued` again, so the
    task's retry can take it) and the RetryLater propagates to the caller."""
    store, source = deps.store, job.source

    def fail(reason: str, error: str) -> Result:
        return fail_claimed(job, generation, reason, error, cfg, deps, now, fields)

    if job.attempts >= cfg.max_prediction_attempts:
        return fail("attempts_exhausted", f"{job.attempts} predictions created")
    try:
        # A replaced or deleted upload is not paid for: one metadata read says whether it is live.
        lifecycle.check_live(source, deps)
        head = deps.objects.read_head(source.bucket, source.name, source.generation, images.HEAD_BYTES)
        sniffed = images.sniff(head)
        if sniffed is None or sniffed not in cfg.allowed_content_types:
            return fail("not_an_image", f"bytes are {sniffed or 'not an image'}")
        size = images.dimensions(head)
        if size is not None and size[0] * size[1] > cfg.max_input_pixels:
            error = f"{size[0]}x{size[1]} is {size[0] * size[1]} pixels, over MAX_INPUT_PIXELS ({cfg.max_input_pixels})"
            return fail("too_many_pixels", error)
        image = inputs.image_reference(source, sniffed, cfg, deps.objects, head)
        client: PredictionsApi = deps.predictions()
        webhook = "" if cfg.result_delivery == schedule.POLL else webhook_url_for(cfg.webhook_url, job.job_id)
        # Counted against the spend budget last, after every check that can fail the upload, so
        # only a prediction about to be created is counted.
        job, generation = budget.count(job, generation, cfg, deps, now, seen)
        prediction = client.create(cfg.model_version, image, webhook, cfg.cancel_after, cfg.prefer_wait_seconds)
    except errors.Superseded as exc:
        lifecycle.end_superseded(job.job_id, exc, deps, now, read=(job, generation))
        state = jobs.REMOVED if exc.deleted else jobs.SUPERSEDED
        return _log(Result(Outcome(state.value), str(exc), job.job_id), fields)
    except errors.NotFound:
        return fail("source_gone", "the upload generation no longer exists")
    except errors.ApiRefused as exc:
        budget.withdraw(job, cfg, deps, now)  # nothing was created, nothing is billed
        return fail(f"api_{exc.status}", str(exc))
    except errors.ImageRefused as exc:
        return fail(exc.reason, str(exc))
    except errors.ApiAnswerUnknown as exc:
        return fail(exc.reason, str(exc))
    except errors.BudgetSpent as exc:
        budget.hold_claimed(job, generation, exc, cfg, deps, now)
        raise
    except RetryLater as exc:
        _release(job, generation, f"{type(exc).__name__}: {exc}", cfg, deps, now)
        logs.warning("submission not possible now; it will be retried", error=str(exc), **fields)
        raise
    fields["prediction_id"] = prediction.id
    metrics.emit(metrics.Event.PREDICTION_CREATED, "INFO", "prediction created", **fields)

    # The first check (schedule.py): at about the model's pace when polling, or soon after the
    # webhook should have arrived; a prediction still running then is checked again, backing off.
    deadline = schedule.first_check(cfg, deps.run_times)

    def record(current: Job | None) -> Decision[None]:
        # Only the webhook can have moved the job meanwhile (it may finish before we record the
        # submission); keep what it wrote, and add our prediction id only while the job is open.
        if current is None or current.is_final or prediction.id in current.prediction_ids:
            return Decision(None)
        return Decision(None, jobs.submitted(current, prediction.id, now, deadline))

    recorded = store.update(job.job_id, record, read=(job, generation))
    ended = recorded.job
    if (
        ended is not None
        and ended.state in (jobs.SUPERSEDED, jobs.REMOVED)
        and prediction.id not in ended.prediction_ids
    ):
        # Replaced or deleted between the liveness check and the create: stop the run nobody wants.
        try:
            client.cancel(prediction.id)
        except (RetryLater, errors.ApiRefused) as exc:
            logs.warning("could not cancel the prediction of a superseded upload", error=str(exc), **fields)
        return _log(Result(Outcome(ended.state.value), "ended while its prediction was created", job.job_id), fields)
    if prediction.is_terminal and recorded.job is not None and not recorded.job.is_final:
        # A synchronous answer (Prefer: wait, or a proxy that answers with the result): settled
        # from it as its webhook would be, with no webhook and no poll.
        deps.run_times.observe(prediction.raw)
        fields["delivery"] = "synchronous"
        try:
            settled = complete.settle(job.job_id, prediction, cfg, deps, now)
        except RetryLater as exc:  # e.g. the output host: the deadline check settles it later
            logs.warning("synchronous result not settled now; its check will", error=str(exc), **fields)
        else:
            return _log(Result(settled.outcome, settled.reason, job.job_id, prediction.id), fields)
    if recorded.wrote and recorded.job is not None:
        lifecycle.schedule_deadline(recorded.job, cfg, deps)
    return _log(Result(Outcome.SUBMITTED, "prediction created", job.job_id, prediction.id), fields)


def fail_claimed(
    job: Job, generation: int, reason: str, error: str, cfg: Config, deps: Deps, now: float, fields: dict[str, Any]
) -> Result:
    """A failure record for a job this caller has claimed, unless another writer moved it meanwhile."""

    def fail(current: Job | None) -> Decision[bool]:
        if current is None or current.state != jobs.CLAIMED or current.lease_expires_at != job.lease_expires_at:
            return Decision(False)
        return Decision(True, jobs.failed(current, reason, error, now))

    if not deps.store.update(job.job_id, fail, read=(job, generation)).result:
        return _log(Result(Outcome.DUPLICATE, "job changed while recording its failure", job.job_id), fields)
    logs.warning("upload failed", reason=reason, error=error, **fields)
    return Result(Outcome.FAILED, reason, job.job_id)


def _release(job: Job, generation: int, why: str, cfg: Config, deps: Deps, now: float) -> None:
    """Give our claim back (the job is `queued` again, so the task's retry can take it)."""

    def give_back(current: Job | None) -> Decision[None]:
        if current is None or current.state != jobs.CLAIMED or current.lease_expires_at != job.lease_expires_at:
            return Decision(None)
        return Decision(None, jobs.release(current, now, why, cfg.queued_check_seconds))

    try:
        deps.store.update(job.job_id, give_back, read=(job, generation))
    except RetryLater as exc:  # the claim then expires by itself; say so and carry on
        logs.warning("could not release claim; it will expire", error=type(exc).__name__, job_id=job.job_id)


def _log(result: Result, fields: dict[str, Any]) -> Result:
    return outcomes.log("upload", result, fields)
