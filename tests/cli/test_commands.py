"""Issue 12's acceptance: the real `bgremove` process against the offline stack, started with its
storage trigger detached, so the uploads below are objects without jobs, as in a bucket that
predates the deployment. The stack's settings (fleet stand-in, raised rates) are in conftest.py.

The tests share one stack and run in file order; each uses its own prefix and checks its own
objects, except `status`, which is checked against every record at a quiet moment."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from collections import Counter
from pathlib import Path

from tests.cli.conftest import Cli, run, small_jpeg
from tests.support import wait_for


def test_backfill_of_1000_existing_objects_gives_each_exactly_one_outcome_and_a_second_run_admits_none(
    cli: Cli,
) -> None:
    uploads = cli.upload_many(f"catalogue/{i:04d}.jpg" for i in range(1000))
    # What the uploads' filters skip is skipped here too: not an image type, empty, our own output.
    cli.stack.upload("catalogue/notes.txt", b"not a photo", "text/plain")
    cli.stack.upload("catalogue/empty.jpg", b"", "image/jpeg")
    cli.stack.upload("catalogue/cutout.png", b"\x89PNG\r\n\x1a\n" + b"0" * 64, "image/png", {"bgremove-output": "true"})
    ids = cli.job_ids(uploads)
    assert not set(ids.values()) & set(cli.listed_states()), "the trigger is detached: no jobs yet"

    plan = cli.json("backfill", "gs://uploads/catalogue/", "--dry-run", "--price-per-prediction", "0.001")
    assert plan["listed"] == 1003 and plan["would_admit"] == 1000
    assert plan["skipped"] == {
        "content type 'text/plain' is not in ALLOWED_CONTENT_TYPES": 1,
        "zero-byte object": 1,
        "object is one of our outputs": 1,
    }
    assert plan["estimated_cost_usd"] == 1.0
    assert plan["estimated_seconds"] == (1000 + plan["queue"]["depth"]) / 100.0  # the queue's 100/s
    assert not set(ids.values()) & set(cli.listed_states()), "a dry run writes nothing"
    # With a daily budget the dry run also says how many budget days the backfill takes.
    budgeted = cli.stack_json.with_name("stack-budget.json")
    data = json.loads(cli.stack_json.read_text())
    data["function_env"]["DAILY_PREDICTION_BUDGET"] = "300"
    budgeted.write_text(json.dumps(data))
    argv = [sys.executable, "-m", "bgremove_cli", "--stack", str(budgeted), "backfill", "gs://uploads/catalogue/"]
    paced = run([*argv, "--dry-run", "--json"])
    assert paced.code == 0, paced.stderr
    days = json.loads(paced.stdout)
    assert days["budget"][0]["budget"] == 300 and days["budget"][0]["spent"] == 0
    assert days["budget_days"] == 1 + -(-(1000 + days["queue"]["depth"] - 300) // 300)  # 300 today, then 300 a day
    assert f"{days['budget_days']} budget days (300 a day; 300 left today)" in run([*argv, "--dry-run"]).stdout

    started = time.monotonic()
    first = cli.json("backfill", "gs://uploads/catalogue/")
    assert (first["admitted"], first["already_had_job"], first["interrupted"]) == (1000, 0, False)
    assert sum(first["skipped"].values()) == 3
    records = cli.wait_final(ids.values(), timeout=150)
    print(f"1,000 backfilled objects ended in {time.monotonic() - started:.1f} s")

    assert cli.assert_one_outcome_each(uploads, records, "catalogue/") == Counter(completed=1000)
    for job in records.values():  # admitted once, one submission task, one prediction
        assert (job["enqueues"], job["attempts"], len(job["prediction_ids"])) == (1, 1, 1)

    second = cli.json("backfill", "gs://uploads/catalogue/")
    assert (second["admitted"], second["already_had_job"]) == (0, 1000)
    assert cli.records(ids.values()) == records, "the second run changed no record"

    # status --json agrees with the job records, read one by one.
    everything = cli.records(cli.listed_states())
    figures = cli.json("status")
    expected = Counter(job["state"] for job in everything.values())
    assert figures["counts"] == {
        s: expected.get(s, 0)
        for s in ("queued", "claimed", "submitted", "completed", "failed", "superseded", "removed")
    }
    assert figures["total"] == len(everything)
    assert figures["open"] == 0 and figures["eta_seconds"] == 0.0
    assert figures["completed_per_minute"] > 0
    assert sum(m["completed"] for m in figures["per_minute"]) >= 1000
    assert figures["queue"]["paused"] is False and figures["queue"]["depth"] == 0


def test_backfill_interrupted_with_ctrl_c_and_run_again_gives_each_exactly_one_outcome(cli: Cli) -> None:
    uploads = cli.upload_many(f"interrupted/{i:04d}.jpg" for i in range(400))
    ids = set(cli.job_ids(uploads).values())

    # One admission at a time, so Ctrl-C lands in the middle of the run.
    proc = cli.popen("backfill", "gs://uploads/interrupted/", "--concurrency", "1", "--json")
    wait_for(lambda: len(ids & set(cli.listed_states())) >= 40, 60, "the backfill to admit 40 objects", interval=0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    first = json.loads(stdout)
    assert first["interrupted"] is True
    assert 40 <= first["admitted"] < 400
    assert len(ids & set(cli.listed_states())) == first["admitted"], "stopped cleanly after the objects in hand"

    second = cli.json("backfill", "gs://uploads/interrupted/")
    assert second["admitted"] == 400 - first["admitted"]
    assert second["already_had_job"] == first["admitted"]
    records = cli.wait_final(ids)
    assert cli.assert_one_outcome_each(uploads, records, "interrupted/") == Counter(completed=400)
    for job in records.values():
        assert (job["enqueues"], job["attempts"], len(job["prediction_ids"])) == (1, 1, 1)


def test_retry_of_injected_failures_completes_them_once_the_fault_is_off(cli: Cli) -> None:
    cli.stack.set_faults(fail_rate=1.0)
    try:
        uploads = cli.upload_many(f"flaky/{i:02d}.jpg" for i in range(30))
        ids = cli.job_ids(uploads)
        assert cli.json("backfill", "gs://uploads/flaky/")["admitted"] == 30
        failed = cli.wait_final(ids.values(), timeout=60)
    finally:
        cli.stack.api("DELETE", "/_admin/faults").raise_for_status()
    assert {job["reason"] for job in failed.values()} == {"prediction_failed"}

    dry = cli.json("retry", "--reason", "prediction_failed", "--dry-run")
    assert (dry["matching"], dry["would_retry"]) == (30, 30)
    assert cli.records(ids.values()) == failed, "a dry run writes nothing"
    assert cli.json("retry", "--reason", "prediction_failed", "--older-than", "1h")["matching"] == 0
    assert cli.json("retry", "--reason", "too_large")["matching"] == 0

    bounded = cli.json("retry", "--reason", "prediction_failed", "--limit", "10")
    assert (bounded["retried"], bounded["matching"], bounded["not_reached"]) == (10, 30, 20)
    rest = cli.json("retry", "--reason", "prediction_failed")
    assert rest["retried"] == 20

    records = cli.wait_final(ids.values(), timeout=60)
    assert cli.assert_one_outcome_each(uploads, records, "flaky/") == Counter(completed=30)
    for job_id, job in records.items():
        before = failed[job_id]
        assert job["enqueues"] == before["enqueues"] + 1  # one new submission task, in the same queue
        assert len(job["prediction_ids"]) == 2 and job["prediction_ids"][0] == before["prediction_ids"][0]
        states = [entry["state"] for entry in job["history"]]
        assert states[: len(before["history"])] == [e["state"] for e in before["history"]]
        retry_entry = job["history"][len(before["history"])]
        assert retry_entry["state"] == "queued" and "operator retry" in retry_entry["why"]
        assert "prediction_failed" in retry_entry["why"]
        assert states[-1] == "completed"
    assert cli.json("retry")["matching"] == 0, "nothing left to retry"

    [shown] = cli.json("show", "gs://uploads/flaky/00.jpg")  # the name's one generation
    assert (shown["state"], shown["live"], shown["generation"]) == ("completed", True, uploads["flaky/00.jpg"])
    assert shown["outputs"][0]["uri"].startswith("gs://processed/flaky/00.png#")
    assert len(shown["prediction_ids"]) == 2
    record = cli.json("show", f"gs://uploads/flaky/00.jpg#{uploads['flaky/00.jpg']}")
    assert record["job_id"] == shown["job_id"] and record["output_uri"] == shown["outputs"][0]["uri"]
    text = cli.run("show", f"gs://uploads/flaky/00.jpg#{uploads['flaky/00.jpg']}")
    assert text.code == 0
    assert "operator retry" in text.stdout and "prediction_failed" in text.stdout and shown["job_id"] in text.stdout


def test_pause_holds_new_submissions_while_running_predictions_finish_and_resume_finishes_them(cli: Cli) -> None:
    # Predictions take 4.5 s here, so the first batch is still running when the queue is paused.
    cli.stack.set_faults(model_latency_seconds=4.0)
    try:
        running = cli.upload_many(f"running/{i:02d}.jpg" for i in range(10))
        running_ids = cli.job_ids(running)
        assert cli.json("backfill", "gs://uploads/running/")["admitted"] == 10

        def all_submitted() -> bool:
            states = cli.listed_states()
            return all(states.get(i) == "submitted" for i in running_ids.values())

        wait_for(all_submitted, 30, "the first batch to be submitted", interval=0.05)
        paused = cli.json("pause")
        assert paused["paused"] is True and paused["state"] == "PAUSED"
        held = cli.upload_many(f"held/{i:02d}.jpg" for i in range(20))
        held_ids = cli.job_ids(held)
        assert cli.json("backfill", "gs://uploads/held/")["admitted"] == 20

        # The running predictions finish and their webhooks are processed while the queue is paused.
        records = cli.wait_final(running_ids.values(), timeout=30)
        assert cli.assert_one_outcome_each(running, records, "running/") == Counter(completed=10)
        time.sleep(1.0)
        states = cli.listed_states()
        assert {states[i] for i in held_ids.values()} == {"queued"}, "nothing new is submitted while paused"
        figures = cli.json("status")
        assert figures["queue"]["paused"] is True and figures["queue"]["depth"] >= 20
        assert figures["counts"]["queued"] >= 20 and figures["eta_basis"] == "queue paused"
    finally:
        resumed = cli.json("resume")
        cli.stack.api("DELETE", "/_admin/faults").raise_for_status()
    assert resumed["paused"] is False
    records = cli.wait_final(held_ids.values(), timeout=60)
    assert cli.assert_one_outcome_each(held, records, "held/") == Counter(completed=20)


def test_status_watch_redraws_until_done(cli: Cli) -> None:
    result = cli.run("status", "--watch", "--until-done", "--interval", "0.5")
    assert result.code == 0, result.stderr
    assert "jobs by state" in result.stdout and "finished" in result.stdout and "queue submissions" in result.stdout
    lines = cli.run("status", "--watch", "--until-done", "--json", "--interval", "0.5")
    assert lines.code == 0 and json.loads(lines.stdout.splitlines()[-1])["open"] == 0


def test_errors_end_in_one_line_and_a_non_zero_exit(cli: Cli, tmp_path: Path) -> None:
    missing = run([sys.executable, "-m", "bgremove_cli", "--stack", str(tmp_path / "nope.json"), "status"])
    assert "no stack file" in missing.one_line_error()

    stopped = json.loads(cli.stack_json.read_text())
    stopped["storage_emulator_host"] = stopped["function_env"]["STORAGE_EMULATOR_HOST"] = "http://127.0.0.1:9"
    (tmp_path / "stopped.json").write_text(json.dumps(stopped))
    dead = run([sys.executable, "-m", "bgremove_cli", "--stack", str(tmp_path / "stopped.json"), "status"])
    assert "no stack running" in dead.one_line_error()

    before = set(cli.listed_states())
    refused = cli.run("backfill", "gs://processed/")
    assert "processed bucket" in refused.one_line_error() and refused.code == 1
    assert "state bucket" in cli.run("backfill", "gs://pipeline-state/").one_line_error()
    assert "processes gs://uploads only" in cli.run("backfill", "gs://someone-elses/").one_line_error()
    assert set(cli.listed_states()) == before, "a refused backfill writes nothing"

    for args, code in (
        (("retry", "--older-than", "soon"), 2),
        (("status", "--window", "0"), 2),
        (("show", "uploads/a.jpg"), 2),
        (("show", "gs://uploads/a.jpg#latest"), 2),
        (("backfill",), 2),
        (("frobnicate",), 2),
        (("show", "gs://uploads/never-uploaded.jpg"), 1),
    ):
        result = cli.run(*args)
        result.one_line_error()
        assert result.code == code, (args, result.stderr)

    nojob = cli.stack.upload("unadmitted/a.jpg", b"\xff\xd8\xff" + b"0" * 64, "image/jpeg")
    assert (
        "no job for gs://uploads/unadmitted/a.jpg#" in cli.run("show", "gs://uploads/unadmitted/a.jpg").one_line_error()
    )
    assert nojob > 0

    # The environment's settings, with a queue that does not exist: the failing step is named.
    env = {**cli.stack.info.function_env, "SUBMIT_QUEUE": cli.stack.info.submit_queue.replace("submissions", "missing")}
    wrong = run([sys.executable, "-m", "bgremove_cli", "pause"], env=env)
    line = wrong.one_line_error()
    assert "pausing queue" in line and "queues/missing" in line and "not found" in line


def test_a_terraform_environment_uses_the_same_code_with_the_outputs_as_settings(cli: Cli, tmp_path: Path) -> None:
    """`--env` reads `terraform output -json`; a stand-in terraform prints outputs naming the offline
    stack's buckets and queues, and the emulator hosts come from the environment, as a developer
    pointing the command at emulators would set them."""
    info = cli.stack.info
    outputs = {
        "uploads_bucket": {"value": info.upload_bucket},
        "processed_bucket": {"value": info.processed_bucket},
        "state_bucket": {"value": info.state_bucket},
        "task_handler_url": {"value": info.task_handler_url},
        "webhook_url": {"value": info.webhook_url},
        "queue_ids": {"value": {"submit": info.submit_queue, "deadline": info.deadline_queue}},
        "service_accounts": {"value": {"tasks_invoker": info.function_env["TASKS_SERVICE_ACCOUNT"]}},
    }
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    fake = bin_dir / "terraform"
    fake.write_text(f"#!/bin/sh\ncat {tmp_path / 'outputs.json'}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "STORAGE_EMULATOR_HOST": info.storage_emulator_host,
        "CLOUD_TASKS_EMULATOR_HOST": info.tasks_endpoint,
    }
    result = run([sys.executable, "-m", "bgremove_cli", "--env", str(tmp_path) + "/", "status", "--json"], env=env)
    assert result.code == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["target"].startswith("Terraform environment")
    assert figures["total"] == len(cli.listed_states())
    assert figures["queue"]["name"] == info.submit_queue


def test_backfilled_object_with_a_bad_background_override_fails_before_any_prediction(cli: Cli) -> None:
    """After `retry`'s test: it leaves a failed job, which `retry` above must not see.

    Backfill and uploads share one admission decision (bgremove.admission.decide): an override
    that could never be applied is a failure record at admission, and no prediction is paid for."""
    name = "badmeta/a.jpg"
    generation = cli.stack.upload(name, small_jpeg(), "image/jpeg", {"bgremove-background": "#zzzzzz"})
    job_id = cli.job_ids({name: generation})[name]
    result = cli.json("backfill", "gs://uploads/badmeta/")
    assert (result["admitted"], result["refused"]) == (0, 1)
    record = cli.records([job_id])[job_id]
    assert (record["state"], record["reason"]) == ("failed", "bad_metadata")
    assert "bgremove-background" in record["error"] and record["prediction_ids"] == [] and record["attempts"] == 0


def test_show_follows_a_replaced_name_through_its_generations_and_status_counts_superseded_and_removed(
    cli: Cli,
) -> None:
    """Last in the file, after the failure-counting tests: it leaves superseded and removed jobs.

    The trigger is detached, so each generation is admitted by `backfill`, the operator's path,
    with the submission queue paused meanwhile: the first generation's job is still queued when the
    name is replaced (and `b.jpg`'s when it is deleted), so on `resume` its submission task finds a
    newer generation live and settles it `superseded` (`removed`) without calling the API, whatever
    the machine's speed. (The relay's /events could deliver the finalize events instead, but would
    race each job against the replacement; it has no `deleted` trigger in this stack either.)"""
    bucket = cli.stack.info.upload_bucket
    assert cli.json("pause")["paused"] is True
    try:
        first = cli.stack.upload("generations/a.jpg", small_jpeg(), "image/jpeg")
        assert cli.json("backfill", "gs://uploads/generations/")["admitted"] == 1
        second = cli.stack.upload("generations/a.jpg", small_jpeg(), "image/jpeg")  # replaced while queued
        deleted = cli.stack.upload("generations/b.jpg", small_jpeg(), "image/jpeg")
        again = cli.json("backfill", "gs://uploads/generations/")
        assert (again["admitted"], again["already_had_job"]) == (2, 0), "a new generation is a new job"
        cli.stack.gcs.bucket(bucket).blob("generations/b.jpg").delete()  # deleted while queued
    finally:
        assert cli.json("resume")["paused"] is False
    ids = {
        "first": cli.job_ids({"generations/a.jpg": first})["generations/a.jpg"],
        "second": cli.job_ids({"generations/a.jpg": second})["generations/a.jpg"],
        "deleted": cli.job_ids({"generations/b.jpg": deleted})["generations/b.jpg"],
    }
    records = cli.wait_final(ids.values(), timeout=60)
    assert {k: records[v]["state"] for k, v in ids.items()} == {
        "first": "superseded", "second": "completed", "deleted": "removed",
    }  # fmt: skip
    assert records[ids["first"]]["prediction_ids"] == [] and records[ids["deleted"]]["prediction_ids"] == []

    shown = cli.json("show", "gs://uploads/generations/a.jpg")
    assert [(r["generation"], r["state"], r["live"]) for r in shown] == [
        (second, "completed", True), (first, "superseded", False),
    ]  # fmt: skip
    newest, oldest = shown
    assert newest["job_id"] == ids["second"] and newest["prediction_ids"] == records[ids["second"]]["prediction_ids"]
    assert [o["uri"] for o in newest["outputs"]] == [
        f"gs://processed/{o['object']}#{o['generation']}" for o in records[ids["second"]]["outputs"]
    ]
    assert newest["outputs"] and newest["ended_at"] is not None
    output = cli.stack.processed(newest["outputs"][0]["object"])
    assert output is not None and int(output.generation) == newest["outputs"][0]["generation"]
    # Given the output, its job: the one that wrote it.
    assert cli.json("show", f"gs://processed/{newest['outputs'][0]['object']}")["job_id"] == ids["second"]
    assert (oldest["reason"], oldest["outputs"], oldest["prediction_ids"]) == ("superseded", [], [])
    assert str(second) in oldest["error"] and oldest["ended_at"] is not None

    text = cli.run("show", "gs://uploads/generations/a.jpg")
    assert text.code == 0, text.stderr
    assert "2 generations with a job" in text.stdout and f"live generation: {second}" in text.stdout
    assert text.stdout.index(f"#{second}  completed  live") < text.stdout.index(f"#{first}  superseded")

    gone = cli.json("show", "gs://uploads/generations/b.jpg")
    assert [(r["generation"], r["state"], r["live"]) for r in gone] == [(deleted, "removed", False)]
    assert "live generation: none" in cli.run("show", "gs://uploads/generations/b.jpg").stdout
    # One generation, as before: the record itself.
    one = cli.json("show", f"gs://uploads/generations/a.jpg#{first}")
    assert (one["state"], one["job_id"]) == ("superseded", ids["first"])

    # status counts the new states, as finished work, not failures.
    everything = cli.records(cli.listed_states())
    expected = Counter(job["state"] for job in everything.values())
    figures = cli.json("status")
    assert figures["counts"]["superseded"] == expected["superseded"] >= 1
    assert figures["counts"]["removed"] == expected["removed"] >= 1
    assert figures["counts"] == {s: expected.get(s, 0) for s in figures["counts"]}
    assert figures["finished"] == sum(expected[s] for s in ("completed", "failed", "superseded", "removed"))
    assert figures["failures"]["total"] == expected["failed"]
    assert figures["open"] == 0 and figures["eta_seconds"] == 0.0
    assert sum(m["superseded"] + m["removed"] for m in figures["per_minute"]) >= 2


def test_doctor_passes_against_the_offline_stack_with_the_webhook_verified_by_its_own_receiver(cli: Cli) -> None:
    """After every test that counts jobs: the doctor's one prediction goes to the predictions API
    directly, with its webhook at the doctor's own receiver, so it makes no pipeline job."""
    before = cli.listed_states()
    usage = cli.run("doctor")  # not a terminal, no --yes: it refuses before spending anything
    assert usage.code == 2 and "--yes" in usage.one_line_error()

    result = cli.run("doctor", "--yes", "--json")
    assert result.code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert "spends at most one prediction" in result.stderr  # said first (on stderr with --json)
    checks = {c["name"]: c for c in report["checks"]}
    assert list(checks) == [
        "token",
        "model version",
        "signing secret",
        "prediction",
        "webhook",
        "output host",
        "rate limits",
    ]
    assert {name: c["status"] for name, c in checks.items()} == dict.fromkeys(checks, "ok"), report
    assert checks["webhook"]["detail"].startswith("webhooks arrive and verify")
    assert checks["signing secret"]["detail"] == "fetched; WEBHOOK_SECRETS holds it"
    assert checks["output host"]["host"] == "localhost"
    assert "ratelimit-remaining" in checks["rate limits"]["headers"]
    assert report["predictions_spent"] == 1 and report["ok"] is True

    # The webhook went to the doctor's receiver, never to the deployment's webhook function.
    webhook = report["webhook_url"]
    assert webhook.startswith("http://127.0.0.1:") and webhook != cli.stack.info.webhook_url
    made = [p for p in cli.stack.api("GET", "/_admin/predictions").json()["predictions"] if p["webhook"] == webhook]
    assert [p["id"] for p in made] == [report["prediction_id"]]
    deliveries = [d for d in cli.stack.stats()["webhook_deliveries"] if d["prediction_id"] == report["prediction_id"]]
    assert [(d["event"], d["status_code"]) for d in deliveries] == [("completed", 200)]
    assert cli.listed_states() == before, "the doctor made no pipeline job"

    text = cli.run("doctor", "--no-prediction")
    assert text.code == 0, text.stderr
    lines = text.stdout.splitlines()
    assert "spends at most one prediction" in text.stdout.split("✓")[0]
    assert any(line.startswith("✓ token") for line in lines) and any(line.startswith("– prediction") for line in lines)
    assert "no prediction spent" in text.stdout


def test_doctor_says_the_deployment_will_poll_when_the_endpoint_sends_no_webhooks(cli: Cli) -> None:
    """`webhooks_sent_rate` 0: the predictions service sends no webhook of any prediction, as a
    proxy that forwards none (README, the predictions service's knobs)."""
    cli.stack.set_faults(webhooks_sent_rate=0.0)
    before = cli.listed_states()
    try:
        result = cli.run("doctor", "--yes", "--json", "--webhook-wait", "3")
    finally:
        cli.stack.api("DELETE", "/_admin/faults").raise_for_status()
    assert result.code == 0, result.stdout + result.stderr  # a warning, not a failure
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["webhook"]["status"] == "warn" and checks["webhook"]["will_poll"] is True
    assert "no webhook arrived within 3 s" in checks["webhook"]["detail"]
    assert "the deployment will poll: RESULT_DELIVERY=auto" in checks["webhook"]["detail"]
    assert checks["prediction"]["status"] == "ok" and checks["output host"]["status"] == "ok"
    assert report["ok"] is True and report["warnings"] == 1
    [made] = [
        p
        for p in cli.stack.api("GET", "/_admin/predictions").json()["predictions"]
        if p["id"] == report["prediction_id"]
    ]
    assert made["webhook"] == report["webhook_url"] and made["webhooks_sent"] is False
    assert cli.listed_states() == before, "the doctor made no pipeline job"
