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

import dataclasses
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bgremove import errors, images, jobs, keys, lifecycle, logs, naming, outcomes, placement, signatures, variants
from bgremove.config import Config
from bgremove.deps import Deps
from bgremove.errors import RetryLater
from bgremove.jobs import Decision, Job
from bgremove.objects import Delivery
from bgremove.outcomes import Outcome, Result
from bgremove.predictions import Prediction

FAILED_STATUSES = ("failed", "canceled", "aborted")


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
    except errors.SignatureError as exc:
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
    return job if naming.is_job_id(job) else ""


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
        return _record_failure(deps, cfg, job, generation, f"prediction_{prediction.status}", error, now, fields)
    if prediction.status != "succeeded":
        return _log(
            Result(Outcome.IGNORED, f"status {prediction.status!r} is not final", job_id, prediction.id), fields
        )
    if not prediction.output:
        return _record_failure(
            deps, cfg, job, generation, "no_output", "prediction succeeded without output", now, fields
        )
    return _write_output(job, generation, prediction, cfg, deps, now, fields)


def _write_output(
    job: Job, generation: int, prediction: Prediction, cfg: Config, deps: Deps, now: float, fields: dict[str, Any]
) -> Result:
    """Write every output variant of the job, then complete it; the newest generation of an
    upload wins (placement.py).

    The default, one pass-through variant, streams the model's PNG into the processed bucket byte
    for byte. Otherwise each variant's object is looked up first (a redelivery writes only what is
    missing, and downloads nothing when nothing is), the model's PNG is downloaded once, and each
    missing variant is rendered and written in turn."""
    try:
        # A result for a replaced or deleted upload is not written (one metadata read).
        live_metadata = lifecycle.check_live(job.source, deps)
        chosen = _chosen_variants(job, live_metadata, cfg)
    except errors.Superseded as exc:
        return _superseded(job, generation, exc, deps, now, fields)
    except errors.VariantError as exc:
        return _record_failure(deps, cfg, job, generation, "bad_metadata", str(exc), now, fields)
    base = naming.output_name(job.source.name, cfg.output_prefix)
    default = cfg.output_variants[0].name
    targets = [(variant, variants.variant_object_name(base, variant, variant.name == default)) for variant in chosen]
    fields["output"] = f"gs://{cfg.processed_bucket}/{targets[0][1]}"
    if len(targets) > 1:
        fields["outputs"] = len(targets)
    linking = {
        **placement.copied_metadata(job),
        keys.OUTPUT: "true",
        keys.SOURCE: job.source.object_uri,
        keys.SOURCE_GENERATION: str(job.source.generation),
        keys.JOB: job.job_id,
        keys.PREDICTION_ID: prediction.id,
        keys.MODEL_VERSION: prediction.version or job.model_version,
    }
    written: list[dict[str, Any]] = []
    url = prediction.output or ""
    try:
        if len(targets) == 1 and targets[0][0].passthrough:
            # No existence check first: the first write is create-only anyway, and a duplicate whose
            # job is already final never gets here. Saves a storage call on every webhook.
            variant, target = targets[0]
            metadata = {**linking, keys.VARIANT: variant.name}
            headers = placement.delivery(job, target, cfg.cache_control)

            def stream(match: int) -> int:
                source = deps.open_output(url)
                try:
                    return deps.objects.create_object(
                        cfg.processed_bucket, target, source, source.size, source.content_type, metadata, match, headers
                    )
                finally:
                    source.close()

            written.append(_place(job, variant, target, metadata, stream, None, cfg, deps, assume_free=True))
        else:
            _write_variants(targets, url, linking, job, cfg, deps, written)
    except errors.Superseded as exc:
        return _superseded(job, generation, exc, deps, now, fields)
    except errors.OutputRefused as exc:  # its kind names the reason: name taken, too many pixels …
        return _record_failure(deps, cfg, job, generation, exc.reason, str(exc), now, fields, written)
    except errors.UnsupportedImage as exc:
        return _record_failure(deps, cfg, job, generation, "output_unsupported", str(exc), now, fields, written)
    except errors.OutputUnavailable as exc:
        logs.warning("output download failed; asking the sender to retry", error=str(exc), **fields)
        raise
    # If an earlier delivery wrote the object and died before recording it, its prediction stands.
    first = written[0]
    winner = first["prediction_id"] or prediction.id
    final = jobs.completed(job, winner, first["object"], first["generation"], now)
    final = dataclasses.replace(final, outputs=tuple(written))
    return _save_final(deps, job, generation, final, fields, cfg)


def _superseded(
    job: Job, generation: int, why: errors.Superseded, deps: Deps, now: float, fields: dict[str, Any]
) -> Result:
    """The upload is no longer live: the job ends superseded (or removed), nothing written; its
    prediction has finished (it is what is being settled), so there is nothing to cancel."""
    ended = lifecycle.end_superseded(job.job_id, why, deps, now, read=(job, generation), cancel=False)
    if ended is lifecycle.Ended.MOVED:
        return _log(Result(Outcome.DUPLICATE, "job ended meanwhile", job.job_id), fields)
    outcome = Outcome.REMOVED if why.deleted else Outcome.SUPERSEDED
    return _log(Result(outcome, str(why), job.job_id), fields)


def _chosen_variants(job: Job, live_metadata: dict[str, str], cfg: Config) -> tuple[variants.Variant, ...]:
    """The configured variants with the upload's overrides (its `bgremove-*` custom metadata).

    The claim records them in the job (Source.metadata, from the storage event: exactly that upload
    generation's metadata). A record without them (claimed by a version that did not record them)
    takes them from the live upload, which the liveness check has just read."""
    metadata = job.source.metadata if job.source.metadata is not None else live_metadata
    return variants.select(cfg.output_variants, variants.overrides_from_metadata(metadata))


# How often one output name may change under a write before the delivery is retried instead.
PLACE_ATTEMPTS = 4


def _place(
    job: Job,
    variant: variants.Variant,
    target: str,
    metadata: dict[str, str],
    write: Callable[[int], int],
    found: tuple[dict[str, str], int] | None,
    cfg: Config,
    deps: Deps,
    assume_free: bool = False,
) -> dict[str, Any]:
    """Write one output where placement allows (`write(if_generation_match)` returns the new
    generation) and return its record entry; on a lost conditional write, judge again over what
    won. Raises Superseded for a newer generation's output and NameTaken for anything foreign."""
    for _ in range(PLACE_ATTEMPTS):
        verdict = placement.Verdict.FREE if assume_free else placement.judge(found, job)
        assume_free = False
        if verdict is placement.Verdict.OURS and found is not None:
            return _entry(variant, target, found)
        if verdict is placement.Verdict.NEWER:
            raise errors.Superseded(f"{target} holds the output of a newer generation of {job.source.object_uri}")
        if verdict is placement.Verdict.FOREIGN:
            # A user's file, or another upload's output, holds the name: never overwrite it.
            raise errors.NameTaken(f"{target} exists and is not this job's output")
        try:
            generation = write(found[1] if verdict is placement.Verdict.OLDER and found is not None else 0)
        except errors.PreconditionFailed:
            found = deps.objects.metadata(cfg.processed_bucket, target)
            continue
        return _entry(variant, target, (metadata, generation))
    raise RetryLater(f"{target} kept changing while its output was written")


def _entry(variant: variants.Variant, target: str, found: tuple[dict[str, str], int]) -> dict[str, Any]:
    metadata, generation = found
    return {
        "variant": variant.name,
        "object": target,
        "generation": generation,
        "prediction_id": metadata.get(keys.PREDICTION_ID, ""),
    }


def _write_variants(
    targets: list[tuple[variants.Variant, str]],
    url: str,
    linking: dict[str, str],
    job: Job,
    cfg: Config,
    deps: Deps,
    written: list[dict[str, Any]],
) -> None:
    """Write the variants not written yet, appending each entry to `written` (in `targets` order)."""
    entries: dict[str, dict[str, Any]] = {}
    missing: list[tuple[variants.Variant, str, tuple[dict[str, str], int] | None]] = []
    for variant, target in targets:
        found = deps.objects.metadata(cfg.processed_bucket, target)
        verdict = placement.judge(found, job)
        if verdict is placement.Verdict.OURS and found is not None:
            entries[variant.name] = _entry(variant, target, found)
        elif verdict is placement.Verdict.NEWER:
            raise errors.Superseded(f"{target} holds the output of a newer generation of {job.source.object_uri}")
        elif verdict is placement.Verdict.FOREIGN:
            raise errors.NameTaken(f"{target} exists and is not this job's output")
        else:
            missing.append((variant, target, found))
    if missing:
        png, content_type = _download(url, deps)
        size = images.dimensions(png[: images.HEAD_BYTES])
        if size is not None and size[0] * size[1] > cfg.max_input_pixels:
            raise errors.OutputTooManyPixels(
                f"the model's output is {size[0]}x{size[1]} = {size[0] * size[1]} pixels, "
                f"over MAX_INPUT_PIXELS ({cfg.max_input_pixels})"
            )
        # Rendered variants first: a model output that cannot be decoded then fails before anything
        # is written. Entries stay in configured order whatever the order of writing.
        missing.sort(key=lambda item: item[0].passthrough)
        colour = any(not v.passthrough and not v.mask for v, _, _ in missing)
        source_icc = _source_icc_profile(job, deps) if colour else None
        for variant, target, found in missing:
            if variant.passthrough:
                data, data_type = png, content_type
            else:
                rendered = variants.render(png, variant, cfg.max_input_pixels, icc_profile=source_icc)
                data, data_type = rendered.data, rendered.content_type
                del rendered
            metadata = {**linking, keys.VARIANT: variant.name}
            headers = placement.delivery(job, target, cfg.cache_control)
            write = _bytes_writer(deps, cfg.processed_bucket, target, data, data_type, metadata, headers)
            entries[variant.name] = _place(job, variant, target, metadata, write, found, cfg, deps)
            del data, write  # one rendered variant in memory at a time
            written[:] = [entries[v.name] for v, _ in targets if v.name in entries]
    written[:] = [entries[v.name] for v, _ in targets if v.name in entries]


def _bytes_writer(
    deps: Deps, bucket: str, target: str, data: bytes, content_type: str, metadata: dict[str, str], headers: Delivery
) -> Callable[[int], int]:
    """A write of `data` to `target`, conditional on the generation `_place` gives it."""

    def write(match: int) -> int:
        return deps.objects.create_object(
            bucket, target, io.BytesIO(data), len(data), content_type, metadata, match, headers
        )

    return write


def _source_icc_profile(job: Job, deps: Deps) -> bytes | None:
    """The upload's embedded ICC profile (from its head bytes), so rendered variants convert the
    model's pixels, which are in the upload's colour space, to sRGB (variants.render). Read here
    rather than kept in the record: a profile can be hundreds of KiB."""
    source = job.source
    try:
        return images.icc_profile(
            deps.objects.read_head(source.bucket, source.name, source.generation, images.HEAD_BYTES)
        )
    except errors.NotFound:
        logs.warning("upload generation gone: its colour profile is unknown; rendering as sRGB", job_id=job.job_id)
        return None


def _download(url: str, deps: Deps) -> tuple[bytes, str]:
    """The whole output, capped by OUTPUT_MAX_BYTES while it streams in (outputs.open_output)."""
    stream = deps.open_output(url)
    try:
        return stream.read(), stream.content_type
    finally:
        stream.close()


def _record_failure(
    deps: Deps,
    cfg: Config,
    job: Job,
    generation: int,
    reason: str,
    error: str,
    now: float,
    fields: dict[str, Any],
    written: list[dict[str, Any]] | None = None,
) -> Result:
    """A failure record; `written` lists the variants written before the failure, if any."""
    final = jobs.failed(job, reason, error, now, fields.get("prediction_id", ""))
    if written:
        final = dataclasses.replace(final, outputs=tuple(written))
    return _save_final(deps, job, generation, final, fields, cfg)


def _save_final(deps: Deps, job: Job, generation: int, final: Job, fields: dict[str, Any], cfg: Config) -> Result:
    """Write a final state. If another writer got there first, what it wrote stands; if the
    submitter recorded its prediction meanwhile, the same final change applies to its record."""

    def settle_as(current: Job | None) -> Decision[None]:
        if current is None or current.is_final:
            return Decision(None)
        return Decision(None, final if current is job else _reapply(current, final))

    done = deps.store.update(job.job_id, settle_as, read=(job, generation))
    if not done.wrote:
        state = done.job.state if done.job is not None else "gone"
        if done.job is not None and done.job.state in (jobs.SUPERSEDED, jobs.REMOVED) and final.outputs:
            # Its upload was replaced or deleted while these outputs were being written (after the
            # liveness check): they are not wanted, and nothing else would remove them.
            removed = [e for e in final.outputs if placement.delete_if_ours(job.job_id, dict(e), cfg, deps)]
            fields["outputs_removed"] = len(removed)
        return _log(Result(Outcome.DUPLICATE, f"job was {state} meanwhile", job.job_id), fields)
    assert done.job is not None  # written
    final = done.job
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
        done = jobs.completed(current, pid, final.output_name, final.output_generation, now)
    else:
        done = jobs.failed(current, final.reason, final.error, now, pid)
    return dataclasses.replace(done, outputs=final.outputs)


def _log(result: Result, fields: dict[str, Any]) -> Result:
    return outcomes.log("webhook", result, fields)
