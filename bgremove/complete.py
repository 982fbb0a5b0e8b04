"""The completion side: take a verified prediction, find its job, and settle the job by writing the
cut-out (create-only) or a failure record. Shared by the webhook and the reconciler.

How a webhook finds its job: the webhook URL we give the API carries `?job=<id>`. If the signed
body echoes the `webhook` field, the job id is read from there (signed data). The published
prediction schema does not promise that field, so without it the id comes from the request's own
query string, which the signature does not cover: it is only a hint, and the signed prediction id
must then be one the job has recorded. A hinted job that has not recorded any matching prediction
yet (its submitter is between creating the prediction and saving its id) answers 503, so the sender
retries after the id is recorded; a body replayed to another job's URL never matches and settles
nothing.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bgremove import errors, jobs, logs, naming, signatures
from bgremove.config import Config
from bgremove.deps import Deps
from bgremove.errors import RetryLater
from bgremove.jobs import Job, JobStore
from bgremove.predictions import Prediction
from bgremove.submit import OUTPUT_MARKER

FAILED_STATUSES = ("failed", "canceled", "aborted")


class Outcome(enum.Enum):
    COMPLETED = "completed"
    FAILED = "failed"  # a failure record was written
    DUPLICATE = "duplicate"  # the job was settled before: no second effect
    IGNORED = "ignored"  # a non-terminal status: nothing to do yet
    UNAUTHORIZED = "unauthorized"
    MALFORMED = "malformed"
    UNKNOWN_JOB = "unknown_job"
    MISMATCH = "mismatch"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    reason: str
    job_id: str = ""
    prediction_id: str = ""


@dataclass(frozen=True)
class Correlation:
    """Which job a delivery is for, and whether signed data said so (`signed`) or only the
    unsigned query string of the request (`hint`, to be confirmed by the prediction id)."""

    job_id: str
    signed: bool


def handle_webhook(
    headers: Mapping[str, str], body: bytes, query: str, cfg: Config, deps: Deps, now: Callable[[], float]
) -> Result:
    """Verify a delivery on its raw bytes, then parse it, find its job and settle it. `query` is the
    raw query string of the request URL (unsigned)."""
    try:
        signatures.verify(headers, body, deps.webhook_keys(), cfg.webhook_tolerance_seconds, now)
    except signatures.SignatureError as exc:
        return _log(Result(Outcome.UNAUTHORIZED, str(exc)), {})
    try:
        prediction = Prediction.from_json(json.loads(body))
    except (ValueError, RecursionError) as exc:  # JSON and Unicode errors are ValueErrors; deep nesting recurses
        return _log(Result(Outcome.MALFORMED, f"body is not a valid prediction: {exc}"), {})
    correlation = correlate(prediction, query)
    if correlation is None:
        return _log(Result(Outcome.UNKNOWN_JOB, "neither the body nor the URL names a job", "", prediction.id), {})
    return settle(correlation.job_id, prediction, cfg, deps, now(), confirmed=correlation.signed)


def correlate(prediction: Prediction, query: str) -> Correlation | None:
    """The signed `webhook` echo wins; the request's query string is only a hint."""
    if prediction.webhook:
        signed = job_id_from_query(_query_of(prediction.webhook))
        return Correlation(signed, True) if signed else None
    hinted = job_id_from_query(query)
    return Correlation(hinted, False) if hinted else None


def job_id_from_query(query: str) -> str:
    """The one well-formed `job` parameter of a query string, or ''."""
    try:
        values = parse_qs(query, max_num_fields=20).get("job", [])
    except ValueError:
        return ""
    job = values[0] if len(values) == 1 else ""
    return job if len(job) == 64 and all(c in "0123456789abcdef" for c in job) else ""


def _query_of(url: str) -> str:
    try:
        return urlsplit(url).query
    except ValueError:
        return ""


def settle(job_id: str, prediction: Prediction, cfg: Config, deps: Deps, now: float, confirmed: bool = True) -> Result:
    """Settle `job_id` with a terminal `prediction`. `confirmed` is False when the job id came from
    an unsigned hint: then only a prediction the job has recorded may move it."""
    fields: dict[str, Any] = {"job_id": job_id, "prediction_id": prediction.id, "status": prediction.status}
    loaded = deps.store.load(job_id)
    if loaded is None:
        return _log(Result(Outcome.UNKNOWN_JOB, "no job record for this prediction", job_id, prediction.id), fields)
    job, generation = loaded
    fields["object"] = f"gs://{job.source.bucket}/{job.source.name}"
    fields["generation"] = job.source.generation
    if not confirmed and prediction.id not in job.prediction_ids:
        if job.state == jobs.CLAIMED:
            # Its submitter may be about to record this prediction; only that record can confirm it.
            logs.info("webhook for a prediction its job has not recorded yet; asking for a retry", **fields)
            raise errors.NotYetRecorded("the job has not recorded this prediction yet")
        return _log(Result(Outcome.MISMATCH, "prediction id is not one of the job's", job_id, prediction.id), fields)
    if job.is_final:
        return _log(Result(Outcome.DUPLICATE, f"job is already {job.state}", job_id, prediction.id), fields)
    if job.prediction_ids and prediction.id not in job.prediction_ids and job.state != jobs.CLAIMED:
        return _log(Result(Outcome.MISMATCH, "prediction id is not one of the job's", job_id, prediction.id), fields)
    if prediction.version and prediction.version != job.model_version:
        return _log(Result(Outcome.MISMATCH, "model version differs from the job's", job_id, prediction.id), fields)
    if prediction.status in FAILED_STATUSES:
        if prediction.id != job.prediction_id:
            if job.state == jobs.CLAIMED and prediction.id not in job.prediction_ids:
                # Its submitter has not recorded it yet: ask again shortly rather than guess.
                raise RetryLater("failure of a prediction the job has not recorded yet")
            # An earlier attempt the reconciler replaced (and maybe canceled): not the outcome.
            return _log(Result(Outcome.IGNORED, "a superseded prediction ended", job_id, prediction.id), fields)
        error = prediction.error or f"prediction {prediction.status}"
        return _record_failure(deps.store, job, generation, f"prediction_{prediction.status}", error, now, fields)
    if prediction.status != "succeeded":
        return _log(
            Result(Outcome.IGNORED, f"status {prediction.status!r} is not final", job_id, prediction.id), fields
        )
    if not prediction.output:
        return _record_failure(
            deps.store, job, generation, "no_output", "prediction succeeded without output", now, fields
        )
    return _write_output(job, generation, prediction, cfg, deps, now, fields)


def _write_output(
    job: Job, generation: int, prediction: Prediction, cfg: Config, deps: Deps, now: float, fields: dict[str, Any]
) -> Result:
    target = naming.output_name(job.source.name, cfg.output_prefix)
    fields["output"] = f"gs://{cfg.processed_bucket}/{target}"
    metadata = {
        OUTPUT_MARKER: "true",
        "bgremove-source": f"gs://{job.source.bucket}/{job.source.name}",
        "bgremove-source-generation": str(job.source.generation),
        "bgremove-job": job.job_id,
        "bgremove-prediction-id": prediction.id,
        "bgremove-model-version": prediction.version or job.model_version,
    }
    try:
        # No existence check first: the create is conditional anyway, and a duplicate whose job is
        # already final never gets here. Saves a storage call on every webhook.
        existing = _put_output(prediction.output or "", target, metadata, cfg, deps)
    except errors.OutputRefused as exc:
        return _record_failure(deps.store, job, generation, "output_refused", str(exc), now, fields)
    except errors.OutputUnavailable as exc:
        logs.warning("output download failed; asking the sender to retry", error=str(exc), **fields)
        raise
    written, output_generation = existing
    if written.get("bgremove-job") != job.job_id:
        # Another upload's output (or a user's file) holds the name: never overwrite it.
        error = f"{target} exists and is not this job's output"
        return _record_failure(deps.store, job, generation, "output_name_taken", error, now, fields)
    # If an earlier delivery wrote the object and died before recording it, its prediction stands.
    winner = written.get("bgremove-prediction-id") or prediction.id
    final = jobs.completed(job, winner, target, output_generation, now)
    return _save_final(deps.store, job, generation, final, fields)


def _put_output(url: str, target: str, metadata: dict[str, str], cfg: Config, deps: Deps) -> tuple[dict[str, str], int]:
    """Stream the output into the processed bucket, create-only; return what is there after."""
    stream = deps.open_output(url)
    try:
        return metadata, deps.objects.create_object(
            cfg.processed_bucket, target, stream, stream.size, stream.content_type, metadata
        )
    except errors.PreconditionFailed:
        # A concurrent delivery created it first; report what it wrote.
        existing = deps.objects.metadata(cfg.processed_bucket, target)
        if existing is None:
            raise RetryLater("output vanished after a create-only conflict") from None
        return existing
    finally:
        stream.close()


def _record_failure(
    store: JobStore, job: Job, generation: int, reason: str, error: str, now: float, fields: dict[str, Any]
) -> Result:
    return _save_final(
        store, job, generation, jobs.failed(job, reason, error, now, fields.get("prediction_id", "")), fields
    )


def _save_final(store: JobStore, job: Job, generation: int, final: Job, fields: dict[str, Any]) -> Result:
    """Write a final state; if another writer got there first, what it wrote stands."""
    try:
        store.save(final, generation)
    except jobs.Conflict:
        loaded = store.load(job.job_id)
        if loaded is not None and loaded[0].is_final:
            return _log(Result(Outcome.DUPLICATE, f"job was {loaded[0].state} meanwhile", job.job_id), fields)
        # The submitter recorded its prediction meanwhile: apply the same final change to its record.
        current, generation = loaded if loaded else (job, generation)
        final = _reapply(current, final)
        try:
            store.save(final, generation)
        except jobs.Conflict as exc:
            raise RetryLater("job record keeps changing") from exc
    outcome = Outcome.COMPLETED if final.state == jobs.COMPLETED else Outcome.FAILED
    reason = final.output_name if outcome is Outcome.COMPLETED else final.reason
    result = Result(outcome, reason, job.job_id, final.prediction_id)
    if outcome is Outcome.FAILED:
        logs.warning(f"job failed: {final.reason}", error=final.error, outcome=outcome.value, **fields)
        return result
    return _log(result, fields)


def _reapply(current: Job, final: Job) -> Job:
    now = final.updated_at
    pid = final.prediction_ids[-1] if final.prediction_ids else ""
    if final.state == jobs.COMPLETED:
        return jobs.completed(current, pid, final.output_name, final.output_generation, now)
    return jobs.failed(current, final.reason, final.error, now, pid)


def _log(result: Result, fields: dict[str, Any]) -> Result:
    severity = "WARNING" if result.outcome in (Outcome.UNAUTHORIZED, Outcome.MALFORMED, Outcome.MISMATCH) else "INFO"
    logs.log(
        severity,
        f"webhook {result.outcome.value}: {result.reason}",
        outcome=result.outcome.value,
        **{**fields, "job_id": result.job_id or fields.get("job_id"), "prediction_id": result.prediction_id or None},
    )
    return result
