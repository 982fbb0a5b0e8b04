"""Results without webhooks, through the real functions on the stack (RESULT_DELIVERY's default,
`auto`: a webhook URL is sent and the deadline checks poll at the model's pace anyway).

The endpoints users are given lose webhooks in every way the predictions service's knobs play: a
resale proxy that forwards none (`webhooks_sent_rate`), one that forwards some, a webhook URL that
answers 301 (`webhook_301_rate`, not followed, as Replicate does not follow it), and proxies that
answer a create synchronously in their own shape (`create_answer_shape`). In each case every image
completes exactly once, and the webhook is still what settles a job wherever it works.

Who settled a job is read from the functions' own log lines (each function has its log file):
`webhook completed` in on_prediction_webhook's log is the webhook; `deadline check:
settled_completed` in on_task's log is a poll; `upload completed` with `delivery: synchronous` in
on_task's log is the create's own answer. API calls are counted from the predictions service's
access log (offline_cloud.verify.api_calls).

The stack here keeps production's timings throughout (no FAST_RETRIES): the relay's and Cloud
Tasks' backoffs, the API's webhook retries (1 s to 30 s, about a minute), POLL_FIRST_CHECK_SECONDS
(5 s) and the real u2netp model. Nothing in these tests waits on a retry, so nothing is sped up.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bgremove import keys, naming
from bgremove.jobs import Job
from offline_cloud import cloud_tasks, verify
from tests.conftest import serving
from tests.support import StackClient, photo, wait_for

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
# Generous: a drop of a dozen real photos on a loaded 2-core machine, polled from 5 s on, backing off.
FINAL_TIMEOUT = 180.0


@pytest.fixture(scope="module")
def dstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackClient]:
    """A stack with production's timings (retries={}: StackOptions' defaults) and the real model."""
    with serving(tmp_path_factory.mktemp("delivery-stack"), retries={}) as client:
        yield client


@pytest.fixture
def dfaults(dstack: StackClient) -> Iterator[StackClient]:
    yield dstack
    dstack.api("DELETE", "/_admin/faults").raise_for_status()


@dataclass(frozen=True)
class Upload:
    name: str
    generation: int
    job_id: str


@dataclass
class Drop:
    """A set of uploads made at once, and what the stack says about them once all are final."""

    uploads: list[Upload]
    jobs: dict[str, dict[str, Any]]  # job id -> final record
    predictions: dict[str, dict[str, Any]]  # job id -> its /_admin/predictions entry (the one created)
    created: int  # predictions created while the drop ran (/_admin/stats)


def drop(stack: StackClient, count: int, label: str) -> Drop:
    """Upload `count` real photos at once and wait for every job to be final."""
    before = stack.stats()["predictions_created"]
    prefix = f"delivery-{label}/{uuid.uuid4().hex[:10]}/"

    def upload(i: int) -> Upload:
        name = f"{prefix}{i:02d}.jpg"
        data = photo(PHOTOS[i % len(PHOTOS)], "JPEG", (320 + 8 * i, 240 + 6 * i))
        generation = stack.upload(name, data, "image/jpeg")
        return Upload(name, generation, naming.job_id(stack.info.upload_bucket, name, generation))

    with ThreadPoolExecutor(8) as pool:
        uploads = list(pool.map(upload, range(count)))
    records = {u.job_id: stack.wait_job(u.name, u.generation, timeout=FINAL_TIMEOUT) for u in uploads}
    by_job = predictions_by_job(stack)
    return Drop(
        uploads, records, {j: by_job[j] for j in records if j in by_job}, stack.stats()["predictions_created"] - before
    )


def predictions_by_job(stack: StackClient) -> dict[str, dict[str, Any]]:
    """The service's predictions by the job their webhook URL names (`?job=`)."""
    listing = stack.api("GET", "/_admin/predictions").json()["predictions"]
    out: dict[str, dict[str, Any]] = {}
    for p in listing:
        for job_id in naming_jobs(p.get("webhook") or ""):
            out[job_id] = p
    return out


def naming_jobs(url: str) -> list[str]:
    from bgremove.complete import job_id_from_query

    query = url.partition("?")[2]
    job = job_id_from_query(query)
    return [job] if job else []


def log_lines(stack: StackClient, process: str) -> list[dict[str, Any]]:
    """The structured (JSON) lines of one function's log file."""
    lines = []
    for line in Path(stack.info.logs[process]).read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def settled_by(stack: StackClient, job_ids: set[str]) -> dict[str, Counter[str]]:
    """For each job, how many times each path completed it: `webhook`, `poll`, `synchronous`. A
    function logs its line just after the record's write, so this waits for one line per job."""
    wait_for(lambda: all(_settled_by(stack, job_ids).values()), 30, "a completion line per job in the logs")
    time.sleep(0.5)  # and a moment for any second one
    return _settled_by(stack, job_ids)


def _settled_by(stack: StackClient, job_ids: set[str]) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {j: Counter() for j in job_ids}
    for line in log_lines(stack, "function-webhook"):
        if line.get("job_id") in job_ids and line.get("message", "").startswith("webhook completed"):
            out[line["job_id"]]["webhook"] += 1
    for line in log_lines(stack, "function-task-handler"):
        job = line.get("job_id")
        if job not in job_ids:
            continue
        if line.get("message") == "deadline check: settled_completed":
            out[job]["poll"] += 1
        if line.get("message", "").startswith("upload completed") and line.get("delivery") == "synchronous":
            out[job]["synchronous"] += 1
    return out


def task_exists(stack: StackClient, name: str) -> bool:
    """Whether the Cloud Tasks emulator holds a task of that full name (GetTask)."""
    from google.api_core import exceptions

    client = cloud_tasks.client(stack.info.tasks_endpoint)
    try:
        client.get_task(name=name, timeout=10)
    except exceptions.NotFound:
        return False
    finally:
        client.transport.close()  # now, not at garbage collection (gRPC and fork; see offline_cloud/stack.py)
    return True


def api_calls(stack: StackClient) -> list[verify.ApiCall]:
    return verify.api_calls(Path(stack.info.logs["predictions-service"]), "/v1")


def assert_each_completed_once(stack: StackClient, d: Drop) -> None:
    """Every job completed by its first prediction, one output each, written once, from that prediction."""
    assert {j["state"] for j in d.jobs.values()} == {"completed"}, {j: r["state"] for j, r in d.jobs.items()}
    assert [r["attempts"] for r in d.jobs.values()] == [1] * len(d.jobs)
    assert d.created == len(d.uploads)
    for job_id, record in d.jobs.items():
        job = Job.from_json(record)
        output = stack.processed(job.output_name)
        assert output is not None, job.output_name
        assert output.metadata[keys.JOB] == job_id
        assert output.metadata["bgremove-prediction-id"] == job.prediction_id
        assert int(output.generation) == job.output_generation  # written once: a second write is a new generation
    processed = Counter(
        name for name in stack.processed_names() if name.startswith(d.uploads[0].name.rsplit("/", 1)[0])
    )
    assert len(processed) == len(d.uploads) and set(processed.values()) == {1}


def test_webhooks_never_sent_every_image_completes_by_polling(dfaults: StackClient) -> None:
    stack = dfaults
    stack.set_faults(webhooks_sent_rate=0.0)  # a proxy that forwards no webhook

    d = drop(stack, 8, "none-sent")

    assert_each_completed_once(stack, d)
    assert all(p["webhooks_sent"] is False for p in d.predictions.values())
    settled = settled_by(stack, set(d.jobs))
    assert all(c == Counter(poll=1) for c in settled.values()), settled
    gets = verify.result_checks(api_calls(stack))
    per_image = [gets[p["id"]] for p in d.predictions.values()]
    assert all(n >= 1 for n in per_image), per_image
    assert sum(per_image) / len(per_image) <= 4, per_image  # the budget of GETs per image


@pytest.mark.parametrize(
    ("knobs", "label"),
    [
        ({"webhooks_sent_rate": 0.5}, "half-sent"),
        ({"webhook_301_rate": 1.0}, "all-301"),
        ({"webhook_301_rate": 0.5}, "half-301"),
    ],
)
def test_webhooks_lost_for_some_every_image_completes_once_and_the_webhook_settles_the_rest(
    dfaults: StackClient, knobs: dict[str, float], label: str
) -> None:
    stack = dfaults
    stack.set_faults(**knobs)

    d = drop(stack, 12, label)

    assert_each_completed_once(stack, d)
    reaching = {j for j, p in d.predictions.items() if p["webhooks_sent"] and not p["webhook_answered_301"]}
    lost = set(d.jobs) - reaching
    if "webhook_301_rate" in knobs:
        assert all(d.predictions[j]["webhook_answered_301"] for j in lost)
    settled = settled_by(stack, set(d.jobs))
    # Exactly one completion per job; a job whose webhook never reaches the receiver is polled.
    assert all(sum(c.values()) == 1 and not c["synchronous"] for c in settled.values()), settled
    assert all(settled[j] == Counter(poll=1) for j in lost), {j: settled[j] for j in lost}
    # The webhook path is still used where it works: every such webhook was delivered and answered
    # 2xx, and it settled jobs (all of them unless a poll came first: both paths are conditional
    # writes, whichever is first wins and the other finds the job final).
    deliveries = stack.stats()["webhook_deliveries"]
    by_webhook = {j for j in reaching if settled[j]["webhook"]}
    for job_id in reaching:
        mine = [x for x in deliveries if x.get("prediction_id") == d.predictions[job_id]["id"]]
        assert any(200 <= int(x.get("status_code") or 0) < 300 for x in mine), mine
    if reaching:
        assert by_webhook, f"no webhook settled a job ({len(reaching)} could)"
    for job_id in lost:
        mine = [x for x in deliveries if x.get("prediction_id") == d.predictions[job_id]["id"]]
        assert all(int(x.get("status_code") or 0) == 301 for x in mine), mine
    if label == "all-301":
        assert not reaching and stack.stats()["faults"]["webhooks_answered_301"] >= len(d.jobs)
    print(f"{label}: {len(by_webhook)} of {len(d.jobs)} settled by the webhook, {len(lost)} lost and polled")


@pytest.mark.parametrize("shape", ["data_only", "prediction+data"])
def test_proxy_shaped_synchronous_answer_completes_with_no_webhook_and_no_poll(
    dfaults: StackClient, shape: str
) -> None:
    stack = dfaults
    # A resale proxy: it answers the create with the result in its own shape and forwards no webhook.
    stack.set_faults(create_answer_shape=shape, webhooks_sent_rate=0.0)

    d = drop(stack, 2, f"proxy-{shape.replace('+', '-')}")

    assert_each_completed_once(stack, d)
    settled = settled_by(stack, set(d.jobs))
    assert all(c == Counter(synchronous=1) for c in settled.values()), settled
    gets = verify.result_checks(api_calls(stack))
    for job_id, record in d.jobs.items():
        job = Job.from_json(record)
        # No deadline check was scheduled: its task (named from the record) is not in the queue,
        # although the check would be due seconds from now at the earliest.
        assert not task_exists(stack, f"{stack.info.deadline_queue}/tasks/{job.deadline_task_name()}")
        # And no GET of the prediction, under the service's id or the one the answer gave.
        assert gets[d.predictions[job_id]["id"]] == 0 and gets[job.prediction_id] == 0
    if shape == "data_only":  # this answer names no prediction: the id is derived from its URLs
        assert all(r["prediction_ids"][0].startswith("sync-") for r in d.jobs.values())
    # And still none after the first check would have come (POLL_FIRST_CHECK_SECONDS, 5 s).
    time.sleep(6)
    checks = [r for r in stack.tasks_log(stack.info.deadline_queue) if any(j in r["task"] for j in d.jobs)]
    assert checks == []


def test_unknown_create_answer_ends_in_a_failure_record_without_retrying_the_create(dfaults: StackClient) -> None:
    stack = dfaults
    stack.set_faults(create_answer_shape="unknown")  # {"result": "ok"}, 200

    name = f"delivery-unknown/{uuid.uuid4().hex}.jpg"
    before = stack.stats()["predictions_created"]
    generation = stack.upload(name, photo("chelsea", "JPEG", (300, 200)), "image/jpeg")
    job = stack.wait_job(name, generation, timeout=FINAL_TIMEOUT)

    assert job["state"] == "failed" and job["reason"] == "api_answer_unknown"
    assert '{"result":"ok"}' in job["error"], job["error"]  # the answer's first bytes, quoted
    assert stack.processed(name.rsplit(".", 1)[0] + ".png") is None
    # One create, answered 200 and never repeated: the submission task was answered (no queue retry).
    dispatches = wait_for(
        lambda: [r for r in stack.tasks_log(stack.info.submit_queue) if job["job_id"] in r["task"]] or None,
        30,
        "the submission dispatch",
    )
    assert [r["status"] for r in dispatches] == [200], dispatches
    time.sleep(2)
    assert stack.stats()["predictions_created"] - before == 1
    mine = [
        p
        for p in stack.api("GET", "/_admin/predictions").json()["predictions"]
        if job["job_id"] in naming_jobs(p.get("webhook") or "")
    ]
    assert len(mine) == 1  # the one prediction the create made runs on; the job does not wait for it


@pytest.mark.xfail(
    strict=True,
    reason=(
        "core bug: a create held longer than HTTP_TIMEOUT_SECONDS (a synchronous proxy over a slow model) "
        "times out, becomes the task's retry and creates another prediction each time, never counted in "
        "attempts; see the report of branch poll"
    ),
)
def test_proxy_holding_the_create_past_the_http_timeout_creates_one_prediction(dfaults: StackClient) -> None:
    stack = dfaults
    # The proxy holds each create until its result (up to 60 s); the model takes 11 s here (the
    # latency knob), just over the pipeline's HTTP_TIMEOUT_SECONDS (10 s). Production timings.
    stack.set_faults(create_answer_shape="data_only", webhooks_sent_rate=0.0, model_latency_seconds=11)
    name = f"delivery-slow-proxy/{uuid.uuid4().hex}.jpg"
    before = stack.stats()["predictions_created"]
    generation = stack.upload(name, photo("rocket", "JPEG", (300, 200)), "image/jpeg")

    def outcome() -> tuple[str, int] | None:
        job = stack.job(stack.info.upload_bucket, name, generation)
        created = stack.stats()["predictions_created"] - before
        if created > 1 or (job is not None and job["state"] in ("completed", "failed")):
            return (job["state"] if job else "none", created)
        return None

    state, created = wait_for(outcome, 90, "the job to end or a second prediction", interval=1)

    assert created == 1 and state == "completed", (state, created)
