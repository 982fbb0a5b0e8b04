"""What a run through the offline stack ended with, and what its functions were billed: the checks
the soak and the burst make of every upload, and the billed-time accounting of the burst and the
benchmarks, in one place so that they cannot drift apart.

Outcomes are read after the run from the typed job records (`bgremove.jobs.Job`) and the processed
bucket, for every upload generation of every name (a name may have been replaced by newer
generations, or deleted):

- every generation has exactly one final state (else it is `lost`);
- the newest generation of a name that is still there ends `completed`, with every configured
  variant's object in place, carrying its job (`keys.JOB`) and made from that generation
  (`keys.SOURCE_GENERATION`), or `failed` for a reason a fault injects;
- older generations end `superseded` or `completed` (or failed by an injected fault), and a completed
  one's outputs were replaced by a newer generation's only if one completed, never the other way;
- no output is made from a superseded generation, or from an older generation once a newer one
  completed (`superseded_outputs`);
- a deleted name has no outputs left when DELETE_OUTPUTS is on (`removed_left`), and the job of its
  last generation ended `removed` (or had failed before);
- each object is what its job recorded (a second write is a duplicate), no output belongs to no job
  of the run (orphans), no failed job has one;
- no generation used more predictions than its budget, and a generation that ended superseded or
  removed before any prediction was recorded for it was paid for none.

Billed time is each function request's duration as its caller timed it, as Cloud Run bills an
instance's request time (no function code is instrumented): the Eventarc relay's delivery log for
on_upload, the Cloud Tasks emulator's dispatch log for on_task, the predictions service's webhook
delivery records for on_prediction_webhook.

API calls are read from the predictions service's access log (`api_calls`): each line names the
method, the path and the status the service answered, so a run's creates and its result checks
(`GET /predictions/{id}`) can be counted per prediction.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import google.cloud.storage as storage
import requests

from bgremove import jobs, keys, naming, variants
from bgremove.jobs import Job
from offline_cloud.stack import StackInfo

# --- outcomes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    """One upload generation of the run and its job record as read after the run."""

    name: str
    job_id: str
    job: Job | None  # None: no record was ever written
    generation: int = 0


@dataclass(frozen=True)
class Output:
    """An object in the processed bucket, with the job and the upload generation its metadata name."""

    name: str
    generation: int
    job_id: str  # its keys.JOB metadata; "" when it has none
    source: str = ""  # keys.SOURCE, gs://bucket/name of the upload
    source_generation: int = 0  # keys.SOURCE_GENERATION; 0 when absent or not a number


@dataclass(frozen=True)
class Outcomes:
    """What the checks found over every upload generation of a run."""

    completed: int
    failed: Counter[str]  # by reason, in the order first met
    lost: int  # no final record, the live generation superseded, or completed without its outputs
    duplicate_outputs: int  # an output written again, by another job, over a newer one, or of a failed job
    orphan_outputs: int  # outputs no job of the run made, or that their completed job does not record
    over_attempt_budget: int
    predictions: list[int]  # predictions created per upload generation, in the uploads' order
    problems: list[str]  # one line per defect; empty when the run is sound
    superseded: int = 0  # generations ended `superseded`
    removed: int = 0  # generations ended `removed`
    superseded_outputs: int = 0  # outputs made from a superseded generation, or from an older one than a completed
    removed_left: int = 0  # outputs of deleted names still there (DELETE_OUTPUTS on)
    superseded_unsubmitted: int = 0  # generations that ended superseded/removed before any recorded prediction
    superseded_unsubmitted_predictions: int = 0  # predictions created for those (must be 0)
    older_outputs_kept: int = 0  # names whose newest generation failed, keeping an older one's outputs
    held: int = 0  # generations queued with no prediction, waiting for a spent budget (`holds_expected`)

    @property
    def predictions_mean(self) -> float:
        return round(sum(self.predictions) / max(1, len(self.predictions)), 3)

    @property
    def predictions_max(self) -> int:
        return max(self.predictions, default=0)


def read_uploads(
    gcs: storage.Client, info: StackInfo, generations: Iterable[tuple[str, int]], threads: int = 8
) -> list[Upload]:
    """Each upload generation's job record, read by a bounded pool (thousands of records after a
    burst), in the order of `generations` ((name, generation) pairs; a name may come more than once)."""
    state_bucket = gcs.bucket(info.state_bucket)

    def read(item: tuple[str, int]) -> Upload:
        name, generation = item
        job_id = naming.job_id(info.upload_bucket, name, generation)
        blob = state_bucket.get_blob(naming.job_record_name(job_id))
        job = Job.from_json(json.loads(blob.download_as_bytes())) if blob is not None else None
        return Upload(name, job_id, job, generation)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(read, list(generations)))


def read_outputs(gcs: storage.Client, info: StackInfo) -> dict[str, Output]:
    """Every object in the processed bucket, by name."""
    outputs = {}
    for blob in gcs.list_blobs(info.processed_bucket):
        metadata = blob.metadata or {}
        source_generation = metadata.get(keys.SOURCE_GENERATION, "")
        outputs[blob.name] = Output(
            blob.name,
            int(blob.generation),
            metadata.get(keys.JOB, ""),
            metadata.get(keys.SOURCE, ""),
            int(source_generation) if source_generation.isdigit() else 0,
        )
    return outputs


def prediction_statuses(info: StackInfo) -> dict[str, list[str]]:
    """The status of every prediction created, per job id, from the service's admin listing: it
    keeps each prediction's webhook URL (whose `job` parameter names the job) although the API does
    not echo it."""
    answer = requests.get(
        info.predictions_service_url + "/_admin/predictions",
        headers={"Authorization": f"Bearer {info.api_token}"},
        verify=info.ca_bundle,
        timeout=120,
    )
    answer.raise_for_status()
    listing: list[dict[str, Any]] = answer.json()["predictions"]
    per_job: dict[str, list[str]] = {}
    for prediction in listing:
        job_id = parse_qs(urlsplit(prediction.get("webhook") or "").query).get("job", [""])[0]
        per_job.setdefault(job_id, []).append(str(prediction.get("status", "")))
    return per_job


def predictions_per_job(info: StackInfo) -> Counter[str]:
    """Predictions created per job id (see `prediction_statuses`)."""
    return Counter({job_id: len(statuses) for job_id, statuses in prediction_statuses(info).items()})


def output_names(setting: str = "", prefix: str = "") -> Callable[[str], tuple[str, ...]]:
    """The processed objects every upload name gets under an OUTPUT_VARIANTS `setting` (empty: the
    one default variant) and OUTPUT_PREFIX, in configured order, as the webhook names them."""
    configured = variants.parse_variants(setting)
    default = configured[0].name

    def names(upload_name: str) -> tuple[str, ...]:
        base = naming.output_name(upload_name, prefix)
        return tuple(variants.variant_object_name(base, v, v.name == default) for v in configured)

    return names


@dataclass
class _Tally:
    """The running figures of one `check`."""

    problems: list[str] = field(default_factory=list)
    lost: int = 0
    duplicates: int = 0
    orphans: int = 0
    over_budget: int = 0
    superseded_outputs: int = 0
    removed_left: int = 0
    unsubmitted: int = 0
    unsubmitted_predictions: int = 0
    older_kept: int = 0
    held: int = 0


def check(
    uploads: Iterable[Upload],
    outputs: Mapping[str, Output],
    predictions: Mapping[str, int],
    max_attempts: int,
    expected_failures: Collection[str],
    expected_outputs: Callable[[str], Sequence[str]] | None = None,
    deleted: Collection[str] = (),
    delete_outputs: bool = True,
    holds_expected: bool = False,
) -> Outcomes:
    """One outcome per upload generation, the newest live generation's outputs in place and made
    from it, nothing left of superseded generations or deleted names, each output written once by
    its own job, no output without a job, no generation over its budget of `max_attempts`
    predictions, none paid for a generation superseded before its submission, no failure but the
    `expected_failures` (the reasons the run's faults cause on purpose).

    `expected_outputs` gives the objects a name's completed job writes (default: the one default
    variant, `output_names()`); `deleted` names the uploads deleted during the run, whose outputs
    must be gone when `delete_outputs` (DELETE_OUTPUTS) is on. With `holds_expected` (a run under a
    spend budget), a generation still queued and held by the budget, with no prediction made, is
    `held`: waiting, not lost."""
    expected_outputs = expected_outputs or output_names()
    every = list(uploads)
    by_name: dict[str, list[Upload]] = {}
    for upload in every:
        by_name.setdefault(upload.name, []).append(upload)
    for group in by_name.values():
        group.sort(key=lambda u: u.generation)
    by_job = {u.job_id: u for u in every}
    gone = set(deleted)
    t = _Tally()
    completed = superseded = removed = 0
    failed: Counter[str] = Counter()
    counts: list[int] = []
    for upload in every:
        name, job_id, job = upload.name, upload.job_id, upload.job
        group = by_name[name]
        newest, was_deleted = upload is group[-1], name in gone
        label = f"{name}#{upload.generation}"
        made = predictions.get(job_id, 0)
        counts.append(made)
        if holds_expected and job is not None and job.state == jobs.QUEUED and not job.prediction_ids:
            # Waiting for the budget: marked held at its last dispatch, or not dispatched since.
            t.held += 1
            if made:
                t.problems.append(f"{label}: waits for the budget, yet {made} predictions were created")
            continue
        if job is None or not job.is_final:
            t.lost += 1
            t.problems.append(f"{label}: no outcome ({job and job.state})")
            continue
        if made > max_attempts or job.attempts > max_attempts:
            t.over_budget += 1
            t.problems.append(f"{label}: {made} predictions")
        if job.state == jobs.COMPLETED:
            completed += 1
            _check_completed(upload, group, outputs, expected_outputs, newest, was_deleted, delete_outputs, t)
        elif job.state == jobs.FAILED:
            failed[job.reason] += 1
            if job.reason not in expected_failures:
                t.problems.append(f"{label}: failed for a reason no fault injects: {job.reason}: {job.error}")
        else:
            if job.state == jobs.SUPERSEDED:
                superseded += 1
                if newest and not was_deleted:
                    t.lost += 1
                    t.problems.append(f"{label}: superseded, yet it is the live generation ({job.error})")
            else:
                removed += 1
                if not (newest and was_deleted):
                    t.problems.append(f"{label}: removed, yet it was not deleted while live ({job.error})")
            if not job.attempts and not job.prediction_ids:
                t.unsubmitted += 1
                t.unsubmitted_predictions += made
                if made:
                    t.problems.append(
                        f"{label}: {job.state} before any prediction was recorded, yet {made} were created"
                    )
        if newest and not was_deleted and job.state != jobs.COMPLETED and _any_completed(group[:-1]):
            t.older_kept += 1
    _check_objects(outputs, by_name, by_job, gone, delete_outputs, t)
    return Outcomes(
        completed=completed,
        failed=failed,
        lost=t.lost,
        duplicate_outputs=t.duplicates,
        orphan_outputs=t.orphans,
        over_attempt_budget=t.over_budget,
        predictions=counts,
        problems=t.problems,
        superseded=superseded,
        removed=removed,
        superseded_outputs=t.superseded_outputs,
        removed_left=t.removed_left,
        superseded_unsubmitted=t.unsubmitted,
        superseded_unsubmitted_predictions=t.unsubmitted_predictions,
        older_outputs_kept=t.older_kept,
        held=t.held,
    )


def _any_completed(uploads: Iterable[Upload]) -> bool:
    return any(u.job is not None and u.job.state == jobs.COMPLETED for u in uploads)


def _recorded(job: Job) -> dict[str, int]:
    """What a job recorded writing: object name -> object generation (records older than variants
    name only the first)."""
    if job.outputs:
        return {str(o.get("object", "")): int(o.get("generation") or 0) for o in job.outputs}
    return {job.output_name: job.output_generation} if job.output_name else {}


def _check_completed(
    upload: Upload,
    group: list[Upload],
    outputs: Mapping[str, Output],
    expected_outputs: Callable[[str], Sequence[str]],
    newest: bool,
    was_deleted: bool,
    delete_outputs: bool,
    t: _Tally,
) -> None:
    """A completed generation: the newest live one has every variant in place, its own; an older
    one's outputs are its own still, or a newer generation's that replaced them."""
    assert upload.job is not None
    label = f"{upload.name}#{upload.generation}"
    recorded = _recorded(upload.job)
    if was_deleted:
        if newest and delete_outputs:
            t.problems.append(f"{label}: its upload was deleted, yet its job is still completed")
        return  # what is left of a deleted name is judged object by object
    if newest:
        for name in expected_outputs(upload.name):
            output = outputs.get(name)
            if name not in recorded:
                t.lost += 1
                t.problems.append(f"{label}: completed without recording its output {name}")
            elif output is None:
                t.lost += 1
                t.problems.append(f"{label}: completed but {name} is not in the processed bucket")
            elif output.job_id != upload.job_id:
                t.duplicates += 1
                t.problems.append(f"{label}: {name} was written over by another job ({output.job_id[:12]})")
        return
    newer_completed = _any_completed(u for u in group if u.generation > upload.generation)
    for name in recorded:
        if outputs.get(name) is None and not newer_completed:
            t.lost += 1
            t.problems.append(f"{label}: {name} is gone, and no newer generation replaced it")


def _check_objects(
    outputs: Mapping[str, Output],
    by_name: Mapping[str, list[Upload]],
    by_job: Mapping[str, Upload],
    deleted: Collection[str],
    delete_outputs: bool,
    t: _Tally,
) -> None:
    """Each object in the processed bucket: made by a completed job of the run that recorded it at
    this generation, from the generation it names, the newest of its name that completed, and not
    of a deleted name."""
    for output in outputs.values():
        owner = by_job.get(output.job_id)
        if owner is None:
            t.orphans += 1
            t.problems.append(f"{output.name}: made by no job of this run ({output.job_id or 'no job'})")
            continue
        job, label = owner.job, f"{output.name} (from {owner.name}#{owner.generation})"
        if owner.name in deleted and delete_outputs:
            t.removed_left += 1
            t.problems.append(f"{label}: its upload was deleted, yet it is still there")
            continue
        if job is None or job.state != jobs.COMPLETED:
            state = job.state if job is not None else "no record"
            if state == jobs.SUPERSEDED:
                t.superseded_outputs += 1
            elif state == jobs.REMOVED:
                t.removed_left += 1
            else:
                t.duplicates += 1
            t.problems.append(f"{label}: written by a job that is {state}")
            continue
        if output.source_generation != owner.generation:
            t.problems.append(f"{label}: says it was made from generation {output.source_generation}")
        recorded = _recorded(job)
        if output.name not in recorded:
            t.orphans += 1
            t.problems.append(f"{label}: its job does not record it")
        elif recorded[output.name] != output.generation:
            t.duplicates += 1
            t.problems.append(
                f"{label}: written again (generation {output.generation}, job recorded {recorded[output.name]})"
            )
        if _any_completed(u for u in by_name[owner.name] if u.generation > owner.generation):
            t.superseded_outputs += 1
            t.problems.append(f"{label}: a newer generation completed, yet this older output is what is there")


def waited_longer_than(uploads: Iterable[Upload], seconds: float) -> int:
    """Uploads whose first prediction was created more than `seconds` after their job was admitted
    (how long they waited in the submission queue)."""
    waited = 0
    for upload in uploads:
        if upload.job is None:
            continue
        submitted = [h["at"] for h in upload.job.history if h.get("state") == jobs.SUBMITTED]
        if submitted and submitted[0] - upload.job.created_at > seconds:
            waited += 1
    return waited


# --- billed time --------------------------------------------------------------------------------------

ON_UPLOAD = "on_upload"
ON_TASK = "on_task"
ON_PREDICTION_WEBHOOK = "on_prediction_webhook"


@dataclass(frozen=True)
class Invocation:
    """One request to a function, timed by its caller."""

    function: str
    seconds: float
    request: str  # what its caller retries it under: the CloudEvent id, the task name, the webhook id
    subject: str  # what it is for: the event's subject (objects/<name>), the task's job id, the prediction id
    answer: str  # the status code, or the error when there was none
    queue: str = ""  # on_task: the queue that dispatched it


def trigger_invocations(relay_log: Iterable[Mapping[str, Any]]) -> list[Invocation]:
    """on_upload's invocations: the relay's `attempt` records, each with the subject of the event
    its `received` record names."""
    records = list(relay_log)
    subject_of = {r["id"]: r["subject"] for r in records if r.get("kind") == "received"}
    return [
        Invocation(
            ON_UPLOAD, float(r.get("duration_seconds") or 0.0), r["id"], subject_of.get(r["id"], ""), str(r["outcome"])
        )
        for r in records
        if r.get("kind") == "attempt"
    ]


def task_invocation(dispatch: Mapping[str, Any]) -> Invocation:
    """on_task's invocation by one record of the Cloud Tasks emulator's dispatch log."""
    return Invocation(
        ON_TASK,
        float(dispatch.get("duration_seconds") or 0.0),
        dispatch["task"],
        job_of_task(dispatch["task"]),
        str(dispatch.get("status") or dispatch.get("error")),
        dispatch.get("queue", ""),
    )


def webhook_invocation(delivery: Mapping[str, Any]) -> Invocation:
    """on_prediction_webhook's invocation by one of the predictions service's delivery records."""
    return Invocation(
        ON_PREDICTION_WEBHOOK,
        float(delivery.get("duration_seconds") or 0.0),
        delivery.get("webhook_id", ""),
        delivery.get("prediction_id", ""),
        str(delivery.get("status_code") or delivery.get("error")),
    )


def job_of_task(task: str) -> str:
    """`.../tasks/<job id>-s1` or `.../tasks/<job id>-d1-<due>` (bgremove.jobs' task names) -> the job id."""
    return task.rsplit("/", 1)[-1][:64]


def by_subject(invocations: Iterable[Invocation]) -> dict[str, list[Invocation]]:
    grouped: dict[str, list[Invocation]] = {}
    for invocation in invocations:
        grouped.setdefault(invocation.subject, []).append(invocation)
    return grouped


def billed_seconds(invocations: Iterable[Invocation]) -> float:
    return sum(i.seconds for i in invocations)


def billed_seconds_rounded(invocations: Iterable[Invocation], step: float = 0.1) -> float:
    """Each invocation rounded up to `step` (Cloud Run bills an instance's busy time in 100 ms
    steps): an upper bound of that effect on many short requests."""
    return sum(math.ceil(i.seconds / step - 1e-9) * step for i in invocations)


# --- API calls ------------------------------------------------------------------------------------------

# The predictions service's access lines: `<date> <time> INFO <logger>: <client> "<METHOD> <path> HTTP/x" <status>`.
_ACCESS_LINE = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO \S+: \S+ "([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3})')


@dataclass(frozen=True)
class ApiCall:
    """One request the predictions service answered, from its access log."""

    at: float  # the service's clock (unix seconds, millisecond resolution)
    method: str
    path: str  # without the query string, API prefix included
    status: int

    @property
    def prediction_id(self) -> str:
        """The prediction a `GET` or `cancel` names (`<prefix>/predictions/<id>[/cancel]`), else ''."""
        parts = self.path.rstrip("/").split("/")
        if "predictions" not in parts:
            return ""
        rest = parts[parts.index("predictions") + 1 :]
        return rest[0] if rest else ""

    @property
    def is_result_check(self) -> bool:
        """A `GET <prefix>/predictions/<id>`: what a deadline check (a poll) costs."""
        return self.method == "GET" and bool(self.prediction_id) and not self.path.endswith("/cancel")

    @property
    def is_create(self) -> bool:
        return self.method == "POST" and self.path.rstrip("/").endswith("/predictions")


def api_calls(log: Path, api_prefix: str = "/v1") -> list[ApiCall]:
    """Every API request (under `api_prefix`) in the predictions service's log, in log order. The
    admin routes, output downloads and webhook deliveries are not API calls and are left out."""
    calls: list[ApiCall] = []
    if not log.exists():
        return calls
    with log.open(errors="replace") as f:
        for line in f:
            match = _ACCESS_LINE.match(line)
            if not match:
                continue
            path = urlsplit(match.group(3)).path
            if not path.startswith(api_prefix + "/"):
                continue
            at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            calls.append(ApiCall(at, match.group(2), path, int(match.group(4))))
    return calls


def result_checks(calls: Iterable[ApiCall]) -> Counter[str]:
    """`GET /predictions/{id}` requests per prediction id (throttled and failed answers included:
    each is a request the account's budget pays for)."""
    return Counter(c.prediction_id for c in calls if c.is_result_check)
