"""The spend guard on the offline stack: a spent daily budget holds submissions in the queue (not
failed, not lost), `bgremove status` says so, and a turned window completes them; the shard count
under 10 creates a second against the real storage emulator; and the log lines the alerts count."""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from bgremove import budget, errors, jobs
from bgremove.config import load_config
from bgremove.jobs import JobStore, Source
from bgremove.storage import GcsObjects
from offline_cloud.client import storage_client
from offline_cloud.stack import Stack
from tests.conftest import start_stack
from tests.support import StackClient, photo, post_webhook, wait_for

BUDGET = 3
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "astronaut")


@pytest.fixture(scope="module")
def budget_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, StackClient]]:
    """A stack whose functions have DAILY_PREDICTION_BUDGET=3 (real model, production shapes)."""
    stack = start_stack(tmp_path_factory.mktemp("budget"), function_env={"DAILY_PREDICTION_BUDGET": str(BUDGET)})
    try:
        assert stack.info is not None
        yield stack, StackClient(stack.info)
    finally:
        stack.stop()


def records(client: StackClient, names: list[tuple[str, int]]) -> list[dict[str, Any]]:
    found = [client.job(client.info.upload_bucket, name, generation) for name, generation in names]
    return [r for r in found if r is not None]


def cli_status(stack: Stack) -> dict[str, Any]:
    stack_json = stack.options.directory / "stack.json"
    result = subprocess.run(
        [sys.executable, "-m", "bgremove_cli", "--stack", str(stack_json), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert isinstance(figures, dict)
    return figures


def another_day_offset(now: float) -> int:
    """A BUDGET_UTC_OFFSET_HOURS under which `now` falls in another budget day than under 0."""
    return -12 if datetime.fromtimestamp(now, UTC).hour < 12 else 12


def test_a_spent_daily_budget_holds_two_of_five_photos_until_the_window_turns(
    budget_stack: tuple[Stack, StackClient],
) -> None:
    stack, client = budget_stack
    uploads = [(f"budget/{i}-{p}.jpg", client.upload(f"budget/{i}-{p}.jpg", photo(p, size=(320, 240)), "image/jpeg"))
               for i, p in enumerate(PHOTOS)]  # fmt: skip

    def settled() -> list[dict[str, Any]] | None:
        found = records(client, uploads)
        done = [r for r in found if r["state"] == "completed"]
        held = [r for r in found if r["state"] == "queued" and r.get("hold") == "budget"]
        return found if len(done) == BUDGET and len(held) == len(PHOTOS) - BUDGET else None

    wait_for(settled, 120, "3 completed and 2 held by the budget")
    assert client.stats()["predictions_created"] == BUDGET
    # Held, not failed, and still held after several of their tasks' retries (2 s backoff here).
    time.sleep(6)
    found = records(client, uploads)
    assert sorted(r["state"] for r in found) == ["completed"] * 3 + ["queued"] * 2
    assert client.stats()["predictions_created"] == BUDGET
    # Each held task was answered 429 (held: budget) at every attempt, and is still in the queue.
    held_ids = {r["job_id"] for r in found if r["state"] == "queued"}
    log = client.tasks_log(client.info.submit_queue)
    attempts = [d for d in log if d["task"].rsplit("/", 1)[-1].rsplit("-", 1)[0] in held_ids]
    assert len(attempts) >= 2 * 2 and {d["status"] for d in attempts} == {429}

    figures = cli_status(stack)
    assert figures["held"] == {"budget": 2, "marked": 2} and figures["counts"]["queued"] == 2
    assert figures["counts"]["failed"] == 0
    [day] = figures["budget"]
    assert (day["window"], day["spent"], day["budget"]) == ("day", 3, 3)

    # The injected clock: the task handler redeployed with budget days that begin 12 hours away,
    # so now falls in a new window with its budget unspent; the held tasks' next retries go through.
    offset = another_day_offset(time.time())
    before = load_config({**stack.info.function_env}) if stack.info else None
    after = load_config({**stack.info.function_env, "BUDGET_UTC_OFFSET_HOURS": str(offset)}) if stack.info else None
    assert before and after
    assert budget.windows(before, time.time())[0].key != budget.windows(after, time.time())[0].key
    stack.restart_function("function-task-handler", {"BUDGET_UTC_OFFSET_HOURS": str(offset)})

    def all_done() -> list[dict[str, Any]] | None:
        found = records(client, uploads)
        return found if all(r["state"] == "completed" for r in found) and len(found) == len(PHOTOS) else None

    finished = wait_for(all_done, 120, "the held photos to complete in the new window")
    assert client.stats()["predictions_created"] == len(PHOTOS)
    assert all(r.get("hold", "") == "" and len(r["prediction_ids"]) == 1 for r in finished)
    lines = function_lines(stack, "function-task-handler")
    assert sum(1 for line in lines if line.get("event") == "budget_released") == 2
    assert any(line.get("event") == "budget_held" and line.get("window") == "day" for line in lines)


def function_lines(stack: Stack, *processes: str) -> list[dict[str, Any]]:
    """The JSON log lines the stack's function processes wrote (their other output skipped)."""
    assert stack.info is not None
    found = []
    for name, path in stack.info.logs.items():
        if processes and name not in processes:
            continue
        for text in Path(path).read_text(errors="replace").splitlines():
            if text.startswith("{"):
                try:
                    entry = json.loads(text)
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    found.append(entry)
    return found


def test_the_shard_count_is_exact_at_ten_creates_a_second_against_the_storage_emulator(
    budget_stack: tuple[Stack, StackClient], capsys: pytest.CaptureFixture[str]
) -> None:
    """600 submissions counted at 10 a second (the queue's rate) by 20 concurrent writers against a
    budget of 500, on the storage emulator's conditional writes: the overshoot is reported, and
    with caps that add up to the budget it is 0; the other 100 are held."""
    stack, client = budget_stack
    assert stack.info is not None
    bucket = "budget-race"
    requests.post(
        f"{stack.info.storage_emulator_host}/storage/v1/b",
        params={"project": "offline"},
        json={"name": bucket},
        timeout=10,
    )
    cfg = load_config({**stack.info.function_env, "STATE_BUCKET": bucket, "DAILY_PREDICTION_BUDGET": "500"})
    objects = GcsObjects(storage_client(stack.info), timeout_seconds=10, retry_seconds=20)
    store = JobStore(objects, bucket)

    class Deps:  # the two seams budget.count uses, over the real storage client
        def __init__(self) -> None:
            self.objects, self.store = objects, store

    deps = Deps()
    now = time.time()
    counted: list[str] = []
    held: list[str] = []
    contended: list[str] = []
    seconds: list[float] = []
    lock = threading.Lock()

    def submit(i: int) -> None:
        record = jobs.new_claim(Source("uploads", f"race/{i}.jpg", 1), cfg.model_version, now, 300)
        generation = store.save(record, 0)
        started = time.monotonic()
        try:
            budget.count(record, generation, cfg, deps, now)  # type: ignore[arg-type]
        except errors.BudgetSpent:
            outcome = held
        except errors.Contended:
            outcome = contended
        else:
            outcome = counted
        with lock:
            outcome.append(record.job_id)
            seconds.append(time.monotonic() - started)

    threads: list[threading.Thread] = []
    start = time.monotonic()
    for i in range(600):  # paced at 10 a second, as the submissions queue dispatches
        delay = start + i / 10.0 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        while sum(t.is_alive() for t in threads) >= 20:
            time.sleep(0.005)
        thread = threading.Thread(target=submit, args=(i,))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    [window] = budget.windows(cfg, now)
    total = budget.standing(window, objects, bucket).spent
    overshoot = total - 500
    with capsys.disabled():
        print(
            f"\nbudget race: 600 submissions at 10/s, budget 500: counted {total} (overshoot {overshoot}), "
            f"held {len(held)}, contended {len(contended)}; count p50 {statistics.median(seconds) * 1000:.0f} ms"
        )
    assert overshoot == 0 and len(counted) == 500
    assert len(held) + len(contended) == 100
    assert len(set(counted)) == 500


def test_every_alert_metric_filter_matches_the_lines_a_run_writes(budget_stack: tuple[Stack, StackClient]) -> None:
    """A run with each kind of event: a failure, a forged webhook, an API 429, budget holds and
    releases (the test above), admissions, creates and completions; every log-based metric's
    filter in infra/modules/pipeline/monitoring.tf must match lines the functions really wrote."""
    stack, client = budget_stack
    assert stack.info is not None
    # A failure: bytes that are not an image under an image content type (fails before any prediction).
    generation = client.upload("budget/not-an-image.jpg", b"this is not a jpeg" * 10, "image/jpeg")
    client.wait_job("budget/not-an-image.jpg", generation, timeout=120)
    # A forged webhook: signed with a secret that is not the API's.
    forged = dataclasses.replace(stack.info, webhook_secret="whsec_" + "A" * 44)
    assert post_webhook(forged, b'{"id": "p", "status": "succeeded"}').status_code == 401
    # One 429 from the API on a create; the task's retry succeeds.
    client.set_faults(create_429_rate=1.0, retry_after_seconds=1)
    generation = client.upload("budget/throttled.jpg", photo("coffee", size=(160, 120)), "image/jpeg")
    wait_for(
        lambda: any(line.get("event") == "api_throttled" for line in function_lines(stack, "function-task-handler")),
        60,
        "a throttled create",
    )
    client.set_faults(create_429_rate=0.0)
    from infra.checks import log_filters

    entries = log_filters.entries_from_stack_logs(stack.info.logs)
    metrics = log_filters.metrics_from_terraform("dev")
    assert {m.resource for m in metrics} >= {"jobs_ended", "budget_held", "webhooks_unauthorized", "api_throttled"}
    assert log_filters.problems(metrics, entries) == []
    # The breakage: the same lines against a filter naming a field no function logs, and an
    # extractor of a field that is not there, must fail the check.
    ended = next(m for m in metrics if m.resource == "jobs_ended")
    misspelt = dataclasses.replace(ended, filter=ended.filter.replace("jsonPayload.event", "jsonPayload.evnt"))
    assert log_filters.problems([misspelt], entries) != []
    extractor = dataclasses.replace(
        ended, label_extractors={**ended.label_extractors, "reason": "EXTRACT(jsonPayload.why)"}
    )
    assert log_filters.problems([extractor], entries) != []
