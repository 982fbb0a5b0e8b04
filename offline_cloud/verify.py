"""What a run through the offline stack ended with, and what its functions were billed: the checks
the soak and the burst make of every upload, and the billed-time accounting of the burst and the
benchmarks, in one place so that they cannot drift apart.

Outcomes are read after the run from the typed job records (`bgremove.jobs.Job`) and the processed
bucket: exactly one final state per upload; a completed job's output exists, carries `keys.JOB` =
its job id and has the generation the job recorded (written once); a failed job has no output and
failed for a reason a fault injects; no output belongs to no completed job; no job used more
predictions than its budget.

Billed time is each function request's duration as its caller timed it, as Cloud Run bills an
instance's request time (no function code is instrumented): the Eventarc relay's delivery log for
on_upload, the Cloud Tasks emulator's dispatch log for on_task, the predictions service's webhook
delivery records for on_prediction_webhook.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from google.cloud import storage

from bgremove import jobs, keys, naming
from bgremove.jobs import Job
from offline_cloud.stack import StackInfo

# --- outcomes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    """One upload of the run and its job record as read after the run."""

    name: str
    job_id: str
    job: Job | None  # None: no record was ever written


@dataclass(frozen=True)
class Output:
    """An object in the processed bucket, with the job its metadata names."""

    name: str
    generation: int
    job_id: str  # its keys.JOB metadata; "" when it has none


@dataclass(frozen=True)
class Outcomes:
    """What the checks found over every upload of a run."""

    completed: int
    failed: Counter[str]  # by reason, in the order first met
    lost: int  # no final record, or completed without its output
    duplicate_outputs: int  # an output written again, by another job, or of a failed job
    orphan_outputs: int  # outputs no completed job names
    over_attempt_budget: int
    predictions: list[int]  # predictions created per upload, in the uploads' order
    problems: list[str]  # one line per defect; empty when the run is sound

    @property
    def predictions_mean(self) -> float:
        return round(sum(self.predictions) / max(1, len(self.predictions)), 3)

    @property
    def predictions_max(self) -> int:
        return max(self.predictions, default=0)


def read_uploads(
    gcs: storage.Client, info: StackInfo, generations: Mapping[str, int], threads: int = 8
) -> list[Upload]:
    """Each upload's job record, read by a bounded pool (thousands of records after a burst), in
    the order of `generations`."""
    state_bucket = gcs.bucket(info.state_bucket)

    def read(item: tuple[str, int]) -> Upload:
        name, generation = item
        job_id = naming.job_id(info.upload_bucket, name, generation)
        blob = state_bucket.get_blob(naming.job_record_name(job_id))
        job = Job.from_json(json.loads(blob.download_as_bytes())) if blob is not None else None
        return Upload(name, job_id, job)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(read, generations.items()))


def read_outputs(gcs: storage.Client, info: StackInfo) -> dict[str, Output]:
    """Every object in the processed bucket, by name."""
    return {
        blob.name: Output(blob.name, int(blob.generation), (blob.metadata or {}).get(keys.JOB, ""))
        for blob in gcs.list_blobs(info.processed_bucket)
    }


def predictions_per_job(info: StackInfo) -> Counter[str]:
    """Predictions created per job id, from the service's admin listing: it keeps each prediction's
    webhook URL (whose `job` parameter names the job) although the API does not echo it."""
    answer = requests.get(
        info.predictions_service_url + "/_admin/predictions",
        headers={"Authorization": f"Bearer {info.api_token}"},
        verify=info.ca_bundle,
        timeout=120,
    )
    answer.raise_for_status()
    listing: list[dict[str, Any]] = answer.json()["predictions"]
    per_job: Counter[str] = Counter()
    for prediction in listing:
        per_job[parse_qs(urlsplit(prediction.get("webhook") or "").query).get("job", [""])[0]] += 1
    return per_job


def check(
    uploads: Iterable[Upload],
    outputs: Mapping[str, Output],
    predictions: Mapping[str, int],
    max_attempts: int,
    expected_failures: Collection[str],
) -> Outcomes:
    """One outcome per upload, each output written once by its own job, no output without a job,
    no job over its budget of `max_attempts` predictions, no failure but the `expected_failures`
    (the reasons the run's faults cause on purpose)."""
    problems: list[str] = []
    completed = lost = duplicates = over_budget = 0
    failed: Counter[str] = Counter()
    claimed_outputs: set[str] = set()
    counts: list[int] = []
    for upload in uploads:
        name, job_id, job = upload.name, upload.job_id, upload.job
        made = predictions.get(job_id, 0)
        counts.append(made)
        if job is None or not job.is_final:
            lost += 1
            problems.append(f"{name}: no outcome ({job and job.state})")
            continue
        if made > max_attempts or job.attempts > max_attempts:
            over_budget += 1
            problems.append(f"{name}: {made} predictions")
        output = outputs.get(naming.output_name(name))
        if job.state == jobs.COMPLETED:
            completed += 1
            claimed_outputs.add(job.output_name)
            if output is None:
                lost += 1
                problems.append(f"{name}: completed but no processed object")
            elif output.generation != job.output_generation or output.job_id != job_id:
                duplicates += 1
                problems.append(f"{name}: processed object was written again or by another job")
        else:
            failed[job.reason] += 1
            if job.reason not in expected_failures:
                problems.append(f"{name}: failed for a reason no fault injects: {job.reason}: {job.error}")
            if output is not None:
                duplicates += 1
                problems.append(f"{name}: failed yet has a processed object")
    orphans = len(set(outputs) - claimed_outputs)
    if orphans:
        problems.append(f"{orphans} processed objects belong to no completed job")
    return Outcomes(
        completed=completed,
        failed=failed,
        lost=lost,
        duplicate_outputs=duplicates,
        orphan_outputs=orphans,
        over_attempt_budget=over_budget,
        predictions=counts,
        problems=problems,
    )


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
