"""The command's pure parts: the operator's retry transition, the status figures, argument parsing,
the Terraform outputs it reads and the one-line errors. No processes."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import click
import pytest
import requests
from google.api_core import exceptions as gexc
from rich.console import Console

from bgremove import jobs, signatures
from bgremove.errors import ConfigError, OutputRefused
from bgremove.jobs import Source
from bgremove.predictions import Prediction
from bgremove_cli import admission, doctor, generations, status
from bgremove_cli.__main__ import Duration
from bgremove_cli.cloud import JobEntry, QueueInfo
from bgremove_cli.failures import explain
from bgremove_cli.target import terraform_error, terraform_settings

SOURCE = Source("uploads", "photos/a.jpg", 7, "image/jpeg", 1000)
# google-api-core's exception constructors are unannotated; these names call them typed.
Forbidden: Callable[[str], gexc.Forbidden] = gexc.Forbidden
PermissionDenied: Callable[[str], gexc.PermissionDenied] = gexc.PermissionDenied
NotFound: Callable[[str], gexc.NotFound] = gexc.NotFound


def failed_job(now: float = 100.0) -> jobs.Job:
    job = jobs.new_queued(SOURCE, "v1", 10.0, 3600)
    job = jobs.claim(job, 20.0, 300, "submission task")
    job = jobs.submitted(job, "p1", 21.0, 900)
    return jobs.failed(job, "prediction_failed", "injected failure", now, "p1")


def test_operator_retry_queues_a_failed_job_under_a_new_task_name_and_keeps_its_history() -> None:
    failed = failed_job()
    again = jobs.retried(failed, 200.0, 3600, "operator retry; was prediction_failed: injected failure")

    assert again.state == jobs.QUEUED
    assert again.enqueues == failed.enqueues + 1
    assert again.submit_task_name != failed.submit_task_name
    assert again.attempts == 0  # a fresh budget of MAX_PREDICTION_ATTEMPTS predictions
    assert again.prediction_ids == ("p1",)  # every prediction made stays on record
    assert (again.reason, again.error) == ("", "")
    assert again.deadline_at == 200.0 + 3600 and again.updated_at == 200.0
    assert again.history[:-1] == failed.history
    assert again.history[-1] == {"state": "queued", "at": 200.0, "why": again.history[-1]["why"]}
    assert "prediction_failed" in again.history[-1]["why"]


def test_only_a_failed_job_can_be_retried() -> None:
    with pytest.raises(ValueError):
        jobs.retried(jobs.new_queued(SOURCE, "v1", 10.0, 3600), 20.0, 3600, "retry")


def entry(state: str, created: float, updated: float, n: int = 0) -> JobEntry:
    return JobEntry(f"{n:064x}", state, 1, created, updated)


QUEUE = QueueInfo("projects/p/locations/l/queues/submissions", "RUNNING", 40, False, 10.0, 100)


def test_status_counts_states_and_measures_the_rate_over_the_work_in_sight() -> None:
    now = 1000.0
    entries = (
        [entry("completed", 940.0, 960.0 + i, i) for i in range(30)]
        + [entry("failed", 940.0, 970.0, 100 + i) for i in range(6)]
        + [entry("queued", 950.0, 950.0, 200 + i) for i in range(40)]
        + [entry("completed", 10.0, 20.0, 300)]  # long ago: outside the window
    )
    fig = status.compute(entries, {}, QUEUE, now, window_minutes=5)

    assert fig["counts"] == {
        "queued": 40, "claimed": 0, "submitted": 0, "completed": 31, "failed": 6, "superseded": 0, "removed": 0,
    }  # fmt: skip
    assert (fig["open"], fig["total"], fig["finished"]) == (40, 77, 37)
    # 36 ended within the window, and the work in sight began 60 s ago: 36 a minute.
    assert fig["rate_window_seconds"] == 60.0
    assert fig["completed_per_minute"] == 30.0 and fig["finished_per_minute"] == 36.0
    assert fig["eta_basis"] == "observed rate"
    assert fig["eta_seconds"] == pytest.approx(40 / 36 * 60, abs=0.1)
    assert sum(m["completed"] for m in fig["per_minute"]) == 30
    assert fig["queue"]["depth"] == 40


def test_status_counts_superseded_and_removed_jobs_as_finished_work_not_failures() -> None:
    now = 1000.0
    entries = (
        [entry("completed", 940.0, 960.0 + i, i) for i in range(20)]
        + [entry("superseded", 940.0, 965.0, 100 + i) for i in range(6)]
        + [entry("removed", 940.0, 975.0, 200 + i) for i in range(4)]
        + [entry("failed", 940.0, 970.0, 300 + i) for i in range(2)]
        + [entry("queued", 950.0, 950.0, 400 + i) for i in range(30)]
        + [entry("mystery", 950.0, 950.0, 500)]
    )
    b = jobs.failed(jobs.new_queued(Source("uploads", "b.jpg", 1), "v1", 1, 60), "too_large", "big", 90.0)
    fig = status.compute(entries, {"b": b}, QUEUE, now, window_minutes=5)

    assert fig["counts"] == {
        "queued": 30, "claimed": 0, "submitted": 0, "completed": 20, "failed": 2, "superseded": 6, "removed": 4,
        "unknown": 1,
    }  # fmt: skip
    # All four final states are finished; the one unknown state is neither open nor finished.
    assert (fig["open"], fig["finished"], fig["total"]) == (30, 32, 63)
    assert fig["completed_per_minute"] == 20.0 and fig["finished_per_minute"] == 32.0
    assert fig["eta_basis"] == "observed rate"
    assert fig["eta_seconds"] == pytest.approx(30 / 32 * 60, abs=0.1)
    minutes = fig["per_minute"]
    assert set(minutes[-1]) == {"minute", "completed", "failed", "superseded", "removed"}
    assert [sum(m[s] for m in minutes) for s in ("completed", "failed", "superseded", "removed")] == [20, 2, 6, 4]
    # Failures are `failed` jobs only: a superseded or removed job is not a failure to retry.
    assert fig["failures"]["total"] == 2
    assert [g["reason"] for g in fig["failures"]["by_reason"]] == ["too_large"]


def render_text(fig: dict[str, Any]) -> str:
    console = Console(width=100, record=True, color_system=None, file=io.StringIO())
    console.print(status.render(fig))
    return console.export_text()


def test_status_screen_shows_superseded_and_removed_only_when_there_are_any() -> None:
    quiet = render_text(status.compute([entry("completed", 990.0, 995.0)], {}, QUEUE, 1000.0))
    assert "completed" in quiet and "superseded" not in quiet and "removed" not in quiet

    entries = [entry("completed", 990.0, 995.0), entry("superseded", 990.0, 996.0, 1), entry("removed", 990, 997, 2)]
    screen = render_text(status.compute(entries, {}, QUEUE, 1000.0))
    counts = {line.split()[0]: line.split()[1] for line in screen.splitlines() if line[:1].isalpha()}
    assert (counts["superseded"], counts["removed"], counts["all"]) == ("1", "1", "3")
    header = next(line for line in screen.splitlines() if "minute (UTC)" in line)
    assert header.split()[-4:] == ["completed", "failed", "superseded", "removed"]
    assert "3/3  100.0%" in screen


def test_status_eta_falls_back_to_the_queue_rate_and_says_when_paused() -> None:
    entries = [entry("queued", 990.0, 990.0, i) for i in range(50)]
    fig = status.compute(entries, {}, QUEUE, 1000.0)
    assert (fig["eta_seconds"], fig["eta_basis"]) == (5.0, "queue rate")

    paused = QueueInfo(QUEUE.name, "PAUSED", 50, False, 10.0, 100)
    fig = status.compute(entries, {}, paused, 1000.0)
    assert (fig["eta_seconds"], fig["eta_basis"]) == (None, "queue paused")
    assert fig["queue"]["paused"] is True

    fig = status.compute([], {}, QUEUE, 1000.0)
    assert (fig["eta_seconds"], fig["eta_basis"], fig["open"]) == (0.0, "nothing open", 0)


def test_status_groups_failures_by_reason_with_examples() -> None:
    a = failed_job(100.0)
    b = jobs.failed(jobs.new_queued(Source("uploads", "b.jpg", 1), "v1", 1, 60), "too_large", "big", 90.0)
    fig = status.compute([], {"a": a, "b": b, "c": failed_job(80.0)}, None, 1000.0)
    groups = fig["failures"]["by_reason"]
    assert [(g["reason"], g["count"]) for g in groups] == [("prediction_failed", 2), ("too_large", 1)]
    assert groups[0]["examples"][0]["object"] == "gs://uploads/photos/a.jpg#7"
    assert groups[0]["examples"][0]["error"] == "injected failure"


@pytest.mark.parametrize(
    ("uri", "need_name", "expected"),
    [
        ("gs://uploads", False, ("uploads", "", None)),
        ("gs://uploads/", False, ("uploads", "", None)),
        ("gs://uploads/photos/2024/", False, ("uploads", "photos/2024/", None)),
        ("gs://uploads/a b#c.jpg", False, ("uploads", "a b#c.jpg", None)),
        ("gs://uploads/photos/a.jpg", True, ("uploads", "photos/a.jpg", None)),
        ("gs://uploads/photos/a.jpg#1712", True, ("uploads", "photos/a.jpg", 1712)),
    ],
)
def test_gs_uris(uri: str, need_name: bool, expected: tuple[str, str, int | None]) -> None:
    assert admission.parse_gs(uri, need_name) == expected


@pytest.mark.parametrize(
    ("uri", "need_name"),
    [("uploads/a.jpg", False), ("gs://", False), ("gs:///a.jpg", True), ("gs://uploads/", True), ("gs://u/a#x", True)],
)
def test_bad_gs_uris(uri: str, need_name: bool) -> None:
    with pytest.raises(ValueError):
        admission.parse_gs(uri, need_name)


def test_durations() -> None:
    d = Duration()
    assert [d.convert(v, None, None) for v in ("90", "30s", "10m", "2h", "3d", "1h30m")] == [
        90.0, 30.0, 600.0, 7200.0, 259200.0, 5400.0,
    ]  # fmt: skip
    with pytest.raises(click.BadParameter):
        d.convert("soon", None, None)


def test_terraform_outputs_become_the_pipeline_variables() -> None:
    outputs = {
        "uploads_bucket": {"value": "p-uploads"},
        "processed_bucket": {"value": "p-processed"},
        "state_bucket": {"value": "p-state"},
        "task_handler_url": {"value": "https://tasks-xyz.run.app"},
        "webhook_url": {"value": "https://hook-xyz.run.app"},
        "queue_ids": {
            "value": {"submit": "projects/p/locations/l/queues/s", "deadline": "projects/p/locations/l/queues/d"}
        },
        "service_accounts": {"value": {"tasks_invoker": "invoker@p.iam.gserviceaccount.com", "upload": "u@p"}},
        "function_names": {"value": {"upload": "x"}},
    }
    assert terraform_settings(outputs) == {
        "UPLOAD_BUCKET": "p-uploads",
        "PROCESSED_BUCKET": "p-processed",
        "STATE_BUCKET": "p-state",
        "SUBMIT_QUEUE": "projects/p/locations/l/queues/s",
        "DEADLINE_QUEUE": "projects/p/locations/l/queues/d",
        "TASK_HANDLER_URL": "https://tasks-xyz.run.app",
        "TASKS_SERVICE_ACCOUNT": "invoker@p.iam.gserviceaccount.com",
        "WEBHOOK_URL": "https://hook-xyz.run.app",
    }
    stderr = (
        "╷\n│ Warning: Unable to open CLI configuration file\n╵\n\n"
        'Error: Backend initialization required, run "terraform init"\n\nReason: ...'
    )
    assert terraform_error(stderr, 1) == 'Error: Backend initialization required, run "terraform init"'


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (Forbidden("caller does not have storage.objects.list access"), "permission denied (caller does not"),
        (PermissionDenied("The principal lacks cloudtasks.queues.pause"), "permission denied (The principal"),
        (NotFound("Queue does not exist."), "not found (Queue does not exist.)"),
        (ConnectionRefusedError(111, "Connection refused"), "cannot reach the service"),
        (RuntimeError("odd\nsecond line"), "unexpected RuntimeError: odd (BGREMOVE_DEBUG=1"),
    ],
)
def test_errors_become_one_line_naming_the_step(exc: Exception, expected: str) -> None:
    message = str(explain(exc, "pausing queue q", "the account needs roles/cloudtasks.queueAdmin"))
    assert message.startswith("pausing queue q: " + expected)
    assert "\n" not in message
    if "permission" in expected:
        assert message.endswith("the account needs roles/cloudtasks.queueAdmin")


# --- show: a name through its generations ---------------------------------------------------------


def generation_job(generation: int, state: str, ended: float, name: str = "photos/a.jpg") -> jobs.Job:
    """A job of gs://uploads/NAME#GENERATION that ended `state` at `ended`."""
    job = jobs.new_queued(Source("uploads", name, generation, "image/jpeg", 1000), "v1", ended - 10, 3600)
    if state == "superseded":
        return jobs.superseded(job, f"gs://uploads/{name} is now generation {generation + 1}", ended)
    job = jobs.submitted(jobs.claim(job, ended - 9, 300, "submission task"), f"p{generation}", ended - 8, 900)
    if state == "submitted":
        return job
    written = (
        {"variant": "cutout", "object": "photos/a.png", "generation": generation * 10},
        {"variant": "white", "object": "photos/a.white.jpg", "generation": generation * 10 + 1},
    )
    job = jobs.completed(job, f"p{generation}", "photos/a.png", generation * 10, ended)
    job = dataclasses.replace(job, outputs=written)
    if state == "removed":
        return jobs.removed(job, "the upload was deleted", ended + 5, written[:1])
    return job


def listing_entry(job: jobs.Job, updated: float, source: str = "") -> JobEntry:
    return JobEntry(job.job_id, job.state, 1, job.created_at, updated, source)


def test_show_plan_reads_the_kept_generations_and_a_bounded_scan_of_the_records_that_name_no_upload() -> None:
    old, replaced, live = (
        generation_job(g, s, 100.0 * g) for g, s in ((1, "completed"), (2, "superseded"), (3, "completed"))
    )
    others = [generation_job(10 + i, "completed", 50.0 + i, name=f"other/{i}.jpg") for i in range(6)]
    entries = [listing_entry(j, j.updated_at) for j in (old, replaced, live, *others)]

    # A bucket without versioning keeps only the live generation: one record known, the rest scanned.
    p = generations.plan(entries, "uploads", "photos/a.jpg", [3], scan=4)
    assert p.read[0] == live.job_id
    assert (p.from_versions, p.from_metadata, p.scanned, p.unread, p.listed) == (1, 0, 4, 4, 9)
    # The most recently changed first: this name's two older jobs, then the newest of the others.
    assert p.read[1:3] == (replaced.job_id, old.job_id)
    assert not p.complete
    assert "the 4 least recently changed were not read" in generations.coverage(p, "uploads")

    # With versioning every generation is known: each is one read; generations without a record cost none.
    p = generations.plan(entries, "uploads", "photos/a.jpg", [3, 2, 1, 99], scan=0)
    assert p.read == (live.job_id, replaced.job_id, old.job_id)
    assert (p.from_versions, p.scanned, p.unread) == (3, 0, 6)

    p = generations.plan(entries, "uploads", "photos/a.jpg", [], scan=1000)
    assert (p.scanned, p.unread) == (9, 0) and p.complete


def test_show_plan_matches_records_by_their_listing_metadata_without_reading_the_others() -> None:
    mine = [generation_job(g, "completed", 100.0 * g) for g in (1, 2)]
    theirs = generation_job(5, "completed", 900.0, name="other.jpg")
    entries = [listing_entry(j, j.updated_at, j.source.uri) for j in (*mine, theirs)]
    entries.append(listing_entry(generation_job(7, "completed", 50.0, name="legacy.jpg"), 50.0))  # written before
    forged = JobEntry(f"{9:064x}", "completed", 1, 0.0, 999.0, "gs://uploads/photos/a.jpg#3")  # digest disagrees
    entries.append(forged)

    assert generations.listed_source(entries[0]) == ("uploads", "photos/a.jpg", 1)
    assert generations.listed_source(forged) is None
    p = generations.plan(entries, "uploads", "photos/a.jpg", [], scan=10)
    assert p.read[:2] == (mine[1].job_id, mine[0].job_id)  # newest generation first
    assert set(p.read[2:]) == {forged.job_id, entries[3].job_id}  # only the records that name nothing are read
    assert (p.from_metadata, p.scanned, p.unread) == (2, 2, 0)
    assert "2 named by their listing metadata" in generations.coverage(p, "uploads")


def test_show_rows_list_generations_newest_first_with_states_outputs_and_the_live_one() -> None:
    old, replaced, live = (
        generation_job(g, s, 100.0 * g) for g, s in ((1, "completed"), (2, "superseded"), (3, "submitted"))
    )
    stranger = generation_job(4, "completed", 400.0, name="photos/b.jpg")
    loaded = {j.job_id: (j, 1) for j in (replaced, stranger, old, live)}
    found = generations.select(loaded, "uploads", "photos/a.jpg")
    assert [j.source.generation for j in found] == [3, 2, 1]

    rows = generations.rows(found, 3, "processed")
    assert [(r["generation"], r["state"], r["live"]) for r in rows] == [
        (3, "submitted", True), (2, "superseded", False), (1, "completed", False),
    ]  # fmt: skip
    assert rows[0]["ended_at"] is None and rows[0]["prediction_ids"] == ["p3"]
    assert rows[1]["reason"] == "superseded" and "now generation 3" in rows[1]["error"]
    assert rows[1]["outputs"] == [] and rows[1]["prediction_ids"] == []
    assert rows[1]["ended_at"] == "1970-01-01T00:03:20.000Z"
    assert [o["uri"] for o in rows[2]["outputs"]] == [
        "gs://processed/photos/a.png#10",
        "gs://processed/photos/a.white.jpg#11",
    ]
    assert rows[2]["outputs"][0]["replaced_by_generation"] is None  # generation 3 has written nothing yet


def test_show_rows_mark_outputs_a_newer_generation_replaced_and_those_deleted_with_the_upload() -> None:
    first, second = generation_job(1, "completed", 100.0), generation_job(2, "removed", 200.0)
    rows = generations.rows([second, first], None, "processed")
    assert [r["live"] for r in rows] == [False, False]
    assert rows[0]["state"] == "removed" and rows[0]["ended_at"] == "1970-01-01T00:03:25.000Z"
    assert [(o["object"], o["deleted"]) for o in rows[0]["outputs"]] == [("photos/a.png", True)]
    # A removed job's outputs are gone, so they replace nothing; a completed newer one's do.
    assert [o["replaced_by_generation"] for o in rows[1]["outputs"]] == [None, None]
    newer = generation_job(2, "completed", 200.0)
    rows = generations.rows([newer, first], 2, "processed")
    assert [o["replaced_by_generation"] for o in rows[1]["outputs"]] == [2, 2]

    legacy = dataclasses.replace(first, outputs=())  # a record from before variants: output_name only
    assert [o["uri"] for o in generations.rows([legacy], 1, "p")[0]["outputs"]] == ["gs://p/photos/a.png#10"]


def test_show_screen_says_which_generation_is_live() -> None:
    found = [generation_job(2, "completed", 200.0), generation_job(1, "superseded", 100.0)]
    p = generations.plan([listing_entry(j, j.updated_at) for j in found], "uploads", "photos/a.jpg", [2], 10)
    console = Console(width=160, record=True, color_system=None, file=io.StringIO())

    def screen(live: int | None) -> str:
        rows = generations.rows(found, live, "processed")
        has_job = any(r["live"] for r in rows)
        console.print(
            generations.render("gs://uploads/photos/a.jpg", rows, live, has_job, generations.coverage(p, "uploads"))
        )
        return console.export_text()

    text = screen(2)
    assert "gs://uploads/photos/a.jpg: 2 generations with a job, newest first" in text
    assert "live generation: 2" in text
    assert "#2  completed  live  ended 1970-01-01 00:03:20.000 UTC" in text
    assert "#1  superseded  ended 1970-01-01 00:01:40.000 UTC" in text
    assert "  why          gs://uploads/photos/a.jpg is now generation 2" in text
    assert "  outputs      gs://processed/photos/a.png#20 (cutout)" in text
    assert text.index("#2  completed") < text.index("#1  superseded")
    assert "job records (2 listed): 1 found by the generations gs://uploads keeps; 1 of the other 1 read" in text
    assert "  job          " + found[0].job_id in text  # on one line in 100 columns
    assert "live generation: none (the upload does not exist now)" in screen(None)
    assert "live generation: 3, which has no job yet (`bgremove backfill" in screen(3)


# --- doctor ---------------------------------------------------------------------------------------

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
FAKE_BASE = "http://127.0.0.1:9/v1"  # FakeApi answers in process; nothing listens there
VERSION = "95fcc2a26d3899cd6c2691c900465aaeff466285a65c14638cc5f36f34befaf1"


def answer(status: int | None, body: Any = None, path: str = "/x", **rate: str) -> doctor.Answer:
    error = "cannot connect (refused, or no route to the host)" if status is None else ""
    return doctor.Answer("GET", path, status, body, error=error, rate_headers=dict(rate))


def signed(body: dict[str, Any], secret: str = SECRET, at: float = 1000.0, received: float = 1000.0) -> doctor.Delivery:
    raw = json.dumps(body).encode()
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(at)),
        "webhook-signature": signatures.sign(signatures.decode_secret(secret), "msg_1", int(at), raw),
    }
    return doctor.Delivery(headers, raw, received)


def prediction(status: str = "succeeded", output: str | None = "https://replicate.delivery/a/out.png") -> Prediction:
    return Prediction.from_json({"id": "p1", "status": status, "output": output})


def test_doctor_token_verdict_prefers_account_and_falls_back_to_the_model_route_where_account_is_not_served() -> None:
    ok = doctor.token_verdict("t", answer(200, {"type": "organization", "username": "acme"}, "/account"), None)
    assert (ok.status, ok.detail) == (doctor.OK, "accepted (GET /account: organization acme)")
    refused = doctor.token_verdict("t", answer(401, {"detail": "Invalid token"}, "/account"), None)
    assert refused.status == doctor.FAIL and "401" in refused.detail and "PREDICTIONS_API_TOKEN" in refused.detail
    fallback = doctor.token_verdict("t", answer(404, path="/account"), answer(200, {}, "/models/lucataco/remove-bg"))
    assert fallback.status == doctor.OK and "does not serve /account" in fallback.detail
    via_model = doctor.token_verdict("t", answer(404, path="/account"), answer(401, {"detail": "no"}, "/models/o/n"))
    assert via_model.status == doctor.FAIL and "/models/o/n answered 401" in via_model.detail
    neither = doctor.token_verdict("t", answer(404, path="/account"), answer(404, path="/models/o/n"))
    assert neither.status == doctor.WARN and "not confirmed" in neither.detail
    assert doctor.token_verdict("", None, None).status == doctor.FAIL
    assert "cannot reach" in doctor.token_verdict("t", answer(None, path="/account"), None).detail
    assert "billing" in doctor.token_verdict("t", answer(402, path="/account"), None).detail


def test_doctor_version_verdict_a_404_route_is_forgiven_only_when_the_version_then_ran() -> None:
    assert doctor.version_verdict(answer(200, {"id": VERSION}), "o/n", VERSION, ran=False).status == doctor.OK
    wrong = doctor.version_verdict(answer(200, {"id": "abc"}), "o/n", VERSION, ran=False)
    assert wrong.status == doctor.FAIL and "not MODEL_VERSION" in wrong.detail
    missing = doctor.version_verdict(answer(404, {"detail": "not found"}), "o/n", VERSION, ran=False)
    assert (
        missing.status == doctor.FAIL
        and "check MODEL_VERSION" in missing.detail
        and "o/n:95fcc2a26d38…" in missing.detail
    )
    assert doctor.version_verdict(answer(404), "o/n", VERSION, ran=True).status == doctor.OK
    assert doctor.version_verdict(None, "o/n", VERSION, ran=False).status == doctor.SKIP


def test_doctor_secret_verdict_compares_the_accounts_secret_with_webhook_secrets_and_never_shows_it() -> None:
    fetched = answer(200, {"key": SECRET})
    held, keys = doctor.secret_verdict(fetched, (OTHER_SECRET, SECRET))
    assert held.status == doctor.OK and keys == [signatures.decode_secret(SECRET)]
    lacking, keys = doctor.secret_verdict(fetched, (OTHER_SECRET,))
    assert lacking.status == doctor.FAIL and "WEBHOOK_SECRETS does not hold" in lacking.detail
    assert keys == [signatures.decode_secret(SECRET)]  # deliveries are still judged by the account's
    unset, _ = doctor.secret_verdict(fetched, ())
    assert unset.status == doctor.OK and "not compared" in unset.detail
    not_served, keys = doctor.secret_verdict(answer(404), (OTHER_SECRET,))
    assert not_served.status == doctor.WARN and keys == [signatures.decode_secret(OTHER_SECRET)]
    nothing, keys = doctor.secret_verdict(answer(404), (), "webhook")
    assert nothing.status == doctor.FAIL and keys == []
    assert doctor.secret_verdict(answer(200, {"key": "whsec_%%%"}), (), "webhook")[0].status == doctor.FAIL
    for check in (held, lacking, unset):
        assert SECRET not in json.dumps(check.to_json()) and SECRET[6:] not in check.detail


def test_doctor_webhook_verdict_verifies_arrivals_and_says_the_deployment_will_poll_when_none_came() -> None:
    ours = {"id": "p1", "status": "succeeded", "output": "https://replicate.delivery/a/out.png"}
    key, other = signatures.decode_secret(SECRET), signatures.decode_secret(OTHER_SECRET)

    def verdict(
        deliveries: list[doctor.Delivery], account: list[bytes], configured: list[bytes], mode: str = "webhook"
    ) -> doctor.Check:
        return doctor.webhook_verdict(deliveries, prediction(), account, configured, 300, 60.0, doctor.Delivered(mode))

    ok = verdict([signed(ours)], [key], [key])
    assert (ok.status, ok.data["webhook_id"]) == (doctor.OK, "msg_1")
    assert ok.detail.startswith("webhooks arrive and verify (1 delivery")
    # Judged at its arrival: a wait longer than the tolerance does not make it stale.
    assert verdict([signed(ours, at=1000.0, received=1001.0)], [key], []).status == doctor.OK
    assert "too old" in verdict([signed(ours, at=1000.0, received=2000.0)], [key], []).detail
    forged = verdict([signed(ours, secret=OTHER_SECRET)], [key], [])
    assert forged.status == doctor.FAIL and "it does not verify: no signature matches" in forged.detail
    mismatch = verdict([signed(ours)], [key], [other])
    assert mismatch.status == doctor.FAIL and "not with WEBHOOK_SECRETS" in mismatch.detail
    # With RESULT_DELIVERY=auto polling brings results anyway: webhooks the endpoint signs wrongly are
    # a warning; our own WEBHOOK_SECRETS being wrong is still a failure, and poll uses none.
    assert verdict([signed(ours, secret=OTHER_SECRET)], [key], [], "auto").status == doctor.WARN
    ours_wrong = verdict([signed(ours)], [key], [other], "auto")
    assert ours_wrong.status == doctor.FAIL and "auto polls" in ours_wrong.detail
    assert verdict([signed(ours, secret=OTHER_SECRET)], [key], [], "poll").status == doctor.INFO

    # None came: a warning (the deadline checks settle jobs), never a failure; its words per mode.
    polls = verdict([], [key], [], "auto")
    assert polls.status == doctor.WARN and polls.data["will_poll"] is True
    assert "the deployment will poll: RESULT_DELIVERY=auto" in polls.detail
    slow = verdict([], [key], [])
    assert slow.status == doctor.WARN and "will poll, slowly" in slow.detail
    assert "FIRST_CHECK_SECONDS (180 s)" in slow.detail
    asked_none = verdict([], [key], [], "poll")
    assert asked_none.status == doctor.INFO and "RESULT_DELIVERY=poll" in asked_none.detail
    # Only the prediction's own terminal delivery counts.
    others = [signed({**ours, "id": "p2"}), signed({**ours, "status": "processing"}), doctor.Delivery({}, b"x", 1.0)]
    stray = verdict(others, [key], [])
    assert stray.status == doctor.WARN and stray.data["other_posts"] == 3
    # A create answered with the result needs none.
    sync = doctor.webhook_verdict([], prediction(), [key], [], 300, 5.0, doctor.Delivered(synchronous=True))
    assert sync.status == doctor.INFO and "the create's answer carried the result" in sync.detail

    here = doctor.webhook_verdict([], prediction(), [key], [], 300, 60.0, not_here="api.example is not here")
    assert here.status == doctor.SKIP and here.detail.startswith("cannot test webhook delivery from here")
    assert doctor.webhook_verdict([], None, [key], [], 300, 60.0).status == doctor.SKIP


def test_doctor_secret_verdict_weighs_what_cannot_verify_by_where_results_come_from() -> None:
    fetched = answer(200, {"key": SECRET})
    assert doctor.secret_verdict(fetched, (OTHER_SECRET,), "webhook")[0].status == doctor.FAIL
    auto, _ = doctor.secret_verdict(fetched, (OTHER_SECRET,), "auto")  # our setting is wrong: fix it
    assert auto.status == doctor.FAIL and "auto polls, so results still come" in auto.detail
    assert doctor.secret_verdict(fetched, (OTHER_SECRET,), "poll")[0].status == doctor.INFO
    # No secret anywhere: fatal only when results wait for webhooks.
    assert doctor.secret_verdict(answer(404), (), "webhook")[0].status == doctor.FAIL
    assert doctor.secret_verdict(answer(404), (), "auto")[0].status == doctor.WARN


def test_doctor_output_verdict_applies_the_pipelines_allow_list_and_download() -> None:
    allowed = ("replicate.delivery",)

    def fine(url: str) -> str:
        return "image/png"

    ok = doctor.output_verdict(prediction(), allowed, fine)
    assert ok.status == doctor.OK and "replicate.delivery is within OUTPUT_ALLOWED_HOSTS" in ok.detail
    sub = prediction(output="https://eu.replicate.delivery/x.png")
    assert doctor.output_verdict(sub, allowed, fine).data["host"] == "eu.replicate.delivery"
    other = doctor.output_verdict(prediction(output="https://cdn.proxy.example/x.png"), allowed, fine)
    assert other.status == doctor.FAIL and "'cdn.proxy.example' is not allowed" in other.detail
    assert "OUTPUT_ALLOWED_HOSTS: replicate.delivery" in other.detail
    plain = doctor.output_verdict(prediction(output="http://replicate.delivery/x.png"), allowed, fine)
    assert plain.status == doctor.FAIL and "not https" in plain.detail

    def gone(url: str) -> str:
        raise OutputRefused("output host answered 404")

    assert "does not download: output host answered 404" in doctor.output_verdict(prediction(), allowed, gone).detail
    assert doctor.output_verdict(prediction(output=None), allowed, fine).status == doctor.FAIL
    assert doctor.output_verdict(prediction("failed", None), allowed, fine).status == doctor.SKIP


def test_doctor_rate_limit_verdict_reports_the_headers_seen_or_that_none_were_sent() -> None:
    seen = doctor.rate_limit_verdict([answer(200, **{"ratelimit-remaining": "9"}), answer(200), answer(None)])
    assert (seen.status, seen.detail) == (doctor.OK, "ratelimit-remaining: 9 (on 1 of 2 answers)")
    throttled = doctor.rate_limit_verdict([answer(429, **{"retry-after": "30"}), answer(200)])
    assert (
        throttled.status == doctor.WARN
        and "throttled 1 time;" in throttled.detail
        and "retry-after: 30" in throttled.detail
    )
    none = doctor.rate_limit_verdict([answer(200), answer(201)])
    assert none.status == doctor.INFO and none.detail.startswith("none were sent (2 answers)")


def test_doctor_prediction_verdict_judges_the_create_answer_as_the_pipeline_does() -> None:
    created = answer(201, {"id": "p1", "status": "starting"})
    started = doctor.Created.of(created)
    assert not started.synchronous
    assert doctor.prediction_verdict(created, started, prediction(), 1.25).detail == "succeeded in 1.2 s (p1)"
    boom = Prediction.from_json({"id": "p1", "status": "failed", "error": "boom"})
    failed = doctor.prediction_verdict(created, started, boom, 1)
    assert failed.status == doctor.FAIL and "ended failed: boom" in failed.detail
    late = doctor.prediction_verdict(created, started, prediction("processing", None), 300, doctor.CANCELLED)
    assert late.status == doctor.FAIL and "cancelled it" in late.detail
    lost = doctor.prediction_verdict(created, started, prediction("starting", None), 3, doctor.LOST)
    assert "forgot it" in lost.detail
    refused = doctor.prediction_verdict(answer(422, {"detail": "Invalid version"}), None, None, 0)
    assert refused.status == doctor.FAIL and "not created" in refused.detail and "Invalid version" in refused.detail

    # A resale proxy's synchronous answer is a result the pipeline settles at once.
    proxied = answer(200, {"created": 1, "data": [{"url": "https://replicate.delivery/x.png"}]})
    result = doctor.Created.of(proxied)
    assert result.synchronous and result.prediction is not None
    sync = doctor.prediction_verdict(proxied, result, None, 0.0)
    assert sync.status == doctor.OK and "in the create's answer" in sync.detail and sync.data["synchronous"]
    # ... unless it holds the create longer than the pipeline waits: every create would be retried.
    held = dataclasses.replace(proxied, seconds=12.0)
    slow = doctor.prediction_verdict(held, result, None, 0.0, pipeline_timeout=10.0)
    assert slow.status == doctor.FAIL and "12.0 s, longer than the pipeline waits (10 s" in slow.detail
    # An answer the pipeline cannot read fails every job.
    odd = answer(200, {"result": "ok"})
    unknown = doctor.prediction_verdict(odd, doctor.Created.of(odd), None, 0)
    assert unknown.status == doctor.FAIL and "api_answer_unknown" in unknown.detail and "result" in unknown.detail


def test_doctor_exit_status_is_0_unless_a_check_failed() -> None:
    ok, warn, skip = (doctor.Check("a", s, "") for s in (doctor.OK, doctor.WARN, doctor.SKIP))
    assert doctor.exit_status([ok, warn, skip]) == 0  # "the deployment will poll" is not a failure
    assert doctor.exit_status([ok, doctor.Check("b", doctor.FAIL, "")]) == 1


def test_doctor_runs_a_receiver_only_where_the_endpoint_can_reach_it() -> None:
    for base in ("http://127.0.0.1:8080/v1", "https://localhost:9/v1", "http://[::1]:5/v1"):
        assert doctor.receiver_plan(base, "") == (True, ""), base
    can, why = doctor.receiver_plan("https://api.replicate.com/v1", "")
    assert not can and "api.replicate.com is not on this machine" in why and "--webhook-url" in why
    assert doctor.receiver_plan("https://api.replicate.com/v1", "https://tunnel.example/hook") == (True, "")


def test_doctor_reads_only_the_apis_settings() -> None:
    endpoint = doctor.Endpoint.from_env({"PREDICTIONS_API_TOKEN": "t", "WEBHOOK_SECRETS": SECRET})
    assert endpoint.base_url == "https://api.replicate.com/v1" and endpoint.model_version == VERSION
    assert endpoint.output_allowed_hosts == ("replicate.delivery",) and endpoint.webhook_secrets == (SECRET,)
    assert endpoint.cancel_after == "15m" and endpoint.first_check_seconds == 180
    assert (endpoint.result_delivery, endpoint.create_timeout) == ("auto", 10.0)
    waits = doctor.Endpoint.from_env({"PREFER_WAIT_SECONDS": "30", "HTTP_TIMEOUT_SECONDS": "5"})
    assert waits.create_timeout == 35.0  # what bgremove.predictions waits for a Prefer: wait create
    with pytest.raises(ConfigError, match="WEBHOOK_SECRETS"):
        doctor.Endpoint.from_env({"WEBHOOK_SECRETS": "nope"})


class FakeApi(requests.Session):
    """The predictions API in process: answers by route; a create's webhook is delivered (signed)
    to the URL it names unless `deliver` is False."""

    def __init__(
        self,
        deliver: bool = True,
        create_status: int = 201,
        account_status: int = 200,
        base: str = FAKE_BASE,
        create_answer: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.create_answer = create_answer
        self.base = base
        self.created: list[dict[str, Any]] = []
        self.deliver = deliver
        self.create_status = create_status
        self.account_status = account_status
        self.calls: list[tuple[str, str]] = []
        self.polls = 0

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        path = str(url).removeprefix(self.base)
        self.calls.append((str(method), path))
        done = {"id": "p1", "status": "succeeded", "output": "https://replicate.delivery/p1/out.png"}
        if path == "/account":
            return self._answer(self.account_status, {"type": "user", "username": "me"})
        if path.startswith("/models/"):
            return self._answer(200, {"id": VERSION})
        if path == "/webhooks/default/secret":
            return self._answer(200, {"key": SECRET})
        if method == "POST" and path == "/predictions":
            body = kwargs["json"]
            self.created.append(body)
            assert kwargs["headers"]["Cancel-After"] == "15m" and body["input"]["image"].startswith("data:image/png")
            if self.create_status != 201:
                return self._answer(self.create_status, {"detail": "Invalid version or not permitted"})
            if self.create_answer is not None:
                return self._answer(200, self.create_answer)
            if self.deliver and "webhook" in body:
                delivery = signed(done, at=time.time())
                threading.Thread(
                    target=requests.post,
                    args=(body["webhook"],),
                    kwargs={"data": delivery.body, "headers": delivery.headers},
                ).start()
            return self._answer(201, {"id": "p1", "status": "starting"})
        if path == "/predictions/p1":
            self.polls += 1
            return self._answer(200, done if self.polls > 1 else {"id": "p1", "status": "processing"})
        return self._answer(404, {"detail": "not found"})

    @staticmethod
    def _answer(status: int, body: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps(body).encode()
        response.headers["ratelimit-remaining"] = "100"
        return response


def run_doctor(api: FakeApi, spend: bool | None = True, confirm: bool = False, wait: float = 5.0) -> doctor.Report:
    endpoint = dataclasses.replace(
        doctor.Endpoint.from_env({"PREDICTIONS_API_TOKEN": "t", "WEBHOOK_SECRETS": SECRET}),
        base_url=api.base,  # FAKE_BASE is on this machine: the doctor runs its own receiver
    )
    options = doctor.Options(spend=spend, webhook_wait_seconds=wait, poll_seconds=0.05)
    probe = doctor.Probe(endpoint.base_url, endpoint.token, 5.0, session=api, sleep=lambda _: None)
    return doctor.run(
        endpoint, options, lambda so_far: confirm, probe=probe, download=lambda url, endpoint: "image/png"
    )


def test_doctor_run_spends_one_prediction_and_verifies_its_webhook_through_its_own_receiver() -> None:
    api = FakeApi()
    report = run_doctor(api, wait=10.0)
    statuses = {c.name: c.status for c in report.checks}
    assert statuses == dict.fromkeys(doctor.CHECK_NAMES, doctor.OK), report.to_json()
    assert [c.name for c in report.checks] == list(doctor.CHECK_NAMES)
    assert report.status == 0 and report.spent == 1 and report.prediction_id == "p1"
    assert api.calls.count(("POST", "/predictions")) == 1


def test_doctor_run_without_webhooks_warns_that_the_deployment_will_poll_and_exits_0() -> None:
    report = run_doctor(FakeApi(deliver=False), wait=0.3)
    webhook = next(c for c in report.checks if c.name == "webhook")
    assert webhook.status == doctor.WARN and webhook.data["will_poll"] is True
    assert report.status == 0 and report.to_json()["warnings"] == 1


def test_doctor_run_spends_nothing_unless_allowed_and_stops_at_a_refused_token() -> None:
    for spend, confirm in ((False, True), (None, False)):
        api = FakeApi()
        report = run_doctor(api, spend=spend, confirm=confirm)
        assert ("POST", "/predictions") not in api.calls and report.spent == 0
        skipped = {c.name for c in report.checks if c.status == doctor.SKIP}
        assert skipped == {"prediction", "webhook", "output host"} and report.status == 0

    api = FakeApi(account_status=401)
    report = run_doctor(api)
    assert report.status == 1 and report.checks[0].status == doctor.FAIL
    assert api.calls == [("GET", "/account")], "nothing else is asked with a refused token"

    api = FakeApi(create_status=422)
    report = run_doctor(api)
    assert report.status == 1 and report.spent == 0
    assert api.calls.count(("POST", "/predictions")) == 1, "a create is never retried"
    assert {c.name: c.status for c in report.checks}["prediction"] == doctor.FAIL


def test_doctor_asks_before_spending_with_the_free_checks_in_view() -> None:
    asked: list[list[str]] = []

    def confirm(so_far: list[doctor.Check]) -> bool:
        asked.append([f"{c.symbol} {c.name}" for c in so_far])
        return True

    endpoint = dataclasses.replace(
        doctor.Endpoint.from_env({"PREDICTIONS_API_TOKEN": "t", "WEBHOOK_SECRETS": SECRET}), base_url=FAKE_BASE
    )
    api = FakeApi()
    probe = doctor.Probe(endpoint.base_url, endpoint.token, 5.0, session=api, sleep=lambda _: None)
    options = doctor.Options(spend=None, webhook_wait_seconds=5.0, poll_seconds=0.05)
    report = doctor.run(endpoint, options, confirm, probe=probe, download=lambda url, endpoint: "image/png")
    assert asked == [["✓ token", "✓ model version", "✓ signing secret"]]
    assert report.spent == 1 and report.status == 0


def test_doctor_against_a_remote_endpoint_without_a_webhook_url_says_it_cannot_test_delivery_from_here() -> None:
    api = FakeApi(base="https://api.example/v1")
    report = run_doctor(api)
    webhook = next(c for c in report.checks if c.name == "webhook")
    assert webhook.status == doctor.SKIP and "cannot test webhook delivery from here" in webhook.detail
    assert "api.example is not on this machine" in webhook.detail and "--webhook-url" in webhook.detail
    [body] = api.created
    assert "webhook" not in body and "webhook_events_filter" not in body  # no URL nobody listens at
    assert report.status == 0 and report.webhook_url == "" and report.spent == 1


def test_doctor_run_against_a_proxy_answering_creates_with_the_result_polls_nothing_and_needs_no_webhook() -> None:
    api = FakeApi(deliver=False, create_answer={"created": 1, "data": [{"url": "https://replicate.delivery/s.png"}]})
    report = run_doctor(api, wait=0.5)
    checks = {c.name: c for c in report.checks}
    assert checks["prediction"].status == doctor.OK and checks["prediction"].data["synchronous"] is True
    assert checks["webhook"].status == doctor.INFO and checks["output host"].status == doctor.OK
    assert not [call for call in api.calls if call[1].startswith("/predictions/")], "nothing to poll"
    assert report.status == 0 and report.prediction_id.startswith("sync-")


def test_status_counts_queued_jobs_a_spent_budget_holds_and_shows_spent_against_budget() -> None:
    now = 1000.0
    entries = [entry("completed", 900.0, 950.0, i) for i in range(3)] + [
        dataclasses.replace(entry("queued", 900.0, 990.0, 10 + i), hold="budget") for i in range(2)
    ]
    fig = status.compute(entries, {}, QUEUE, now)
    assert fig["held"] == {"budget": 2, "marked": 2} and fig["counts"]["queued"] == 2
    fig["budget"] = [{"window": "day", "key": "2026-12-04", "spent": 3, "budget": 3, "ends_at": time.time() + 3600}]
    buf = io.StringIO()
    Console(file=buf, width=120).print(status.render(fig))
    screen = buf.getvalue()
    assert "budget (day 2026-12-04): 3 / 3 spent" in screen
    assert "held: budget  2 queued jobs wait for the budget" in screen
