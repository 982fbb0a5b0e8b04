"""The benchmark harness in its quick mode: it runs on the offline stack end to end and writes both
result files with every figure. (Its numbers mean nothing; `make bench` runs the full sizes.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from offline_cloud.stack import ROOT, die_with_parent

FIGURES: tuple[str, ...] = ("billed", "latency", "coldstart", "memory", "throughput", "variants")
FIGURES += ("bulk", "calls")  # issue 11
FIGURES += ("polling", "preferwait")  # results without webhooks, and whether Prefer: wait pays
FIGURES += ("budget",)  # what the spend guard costs a submission


@pytest.mark.timeout(540)  # eleven figures, each starting its own stacks: over the suite's 300 s default
def test_quick_bench_writes_results_json_and_markdown_with_every_figure(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=480,
        preexec_fn=die_with_parent,  # if the test run is killed, the bench and its stacks go too
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]

    results = json.loads((tmp_path / "results.json").read_text())
    meta = results["meta"]
    assert meta["mode"] == "quick"
    assert meta["machine"]["cpu_model"] and meta["machine"]["logical_cores"] >= 1 and meta["machine"]["memory_gib"] > 0
    assert meta["date"] and meta["git"]["commit"]
    figures = results["figures"]
    assert set(figures) == set(FIGURES)
    for name, figure in figures.items():
        assert "error" not in figure, (name, figure["error"])
        assert {"title", "method", "target", "target_met", "ratio"} <= figure.keys(), name

    assert figures["billed"]["ratio"] > 1  # even at the quick run's 0.5 s the baseline is billed for the wait
    assert figures["billed"]["runs"][0]["ours_billed_seconds"]["n"] >= 1
    assert figures["billed"]["runs"][0]["ours_task_seconds"]["n"] >= 1  # on_task is billed too
    assert figures["latency"]["one_image"]["overhead_seconds"]["n"] >= 1
    assert figures["latency"]["one_image"]["task_dispatched_to_created_seconds"]["p50"] > 0  # the queue hop
    assert figures["latency"]["batch"]["overhead_seconds"]["n"] == figures["latency"]["batch"]["images"]
    assert figures["coldstart"]["variants"]["stack venv"]["functions"].keys() == {
        "hello",
        "on_upload",
        "on_prediction_webhook",
        "on_task",
    }
    tasks_client = figures["coldstart"]["variants"]["stack venv"]["tasks_client"]
    assert tasks_client["used"] == "grpc" and set(tasks_client["clients"]) >= {"grpc", "rest", "requests"}
    assert len(figures["memory"]["runs"]) == 2 and figures["memory"]["ratio"] > 0
    assert [r["concurrency"] for r in figures["throughput"]["runs"]] == [1, 8, 32]
    assert all(
        r["webhooks_per_second"] > 0 and r["ceiling_creates_per_second"] > 0 for r in figures["throughput"]["runs"]
    )

    bulk = figures["bulk"]
    assert bulk["fleet_stand_in"] and set(bulk["designs"]) == {"queue", "direct"}
    for design in bulk["designs"].values():
        assert design["lost"] == 0 and design["completed"] == design["images"]
        assert design["billed_seconds_per_image"] > 0 and design["invocations_per_image"] >= 1
    assert bulk["designs"]["direct"]["throttled_creates"] > 0  # the drop is over the limit: the baseline hits 429s
    assert bulk["ratio"] > 1
    calls = figures["calls"]["designs"]
    assert calls["queue"]["total"]["api_requests"] == 1 and calls["queue"]["total"]["tasks_calls"] >= 1
    assert calls["queue"]["total"]["storage_requests"] > 0 and calls["direct"]["total"]["tasks_calls"] == 0

    polling = figures["polling"]["modes"]
    for mode in ("webhooks", "no webhooks"):
        assert polling[mode]["completed"] == polling[mode]["images"] and polling[mode]["creates_per_image"] == 1
    assert polling["no webhooks"]["gets_per_image"] >= 1  # every image polled at least once
    waited = figures["preferwait"]["settings"]
    assert waited["10"]["deadline_checks_per_image"] == 0  # settled from the create's own answer
    assert waited["10"]["submission_seconds"]["p50"] > waited["0"]["submission_seconds"]["p50"]
    spend = figures["budget"]["submission_seconds"]
    assert spend["off"]["n"] == spend["on"]["n"] == 2 and spend["held_dispatch"]["n"] >= 1

    markdown = (tmp_path / "RESULTS.md").read_text()
    for heading in ("Billed function time", "Overhead latency", "Cold start", "Memory", "Webhook throughput"):
        assert heading in markdown
    for heading in (
        "Bulk drop",
        "calls per image",
        "For the README",
        "Fleet stand-in",
        "Results without webhooks",
        "Spend budget",
    ):
        assert heading in markdown
    assert meta["machine"]["cpu_model"] in markdown and meta["git"]["commit"] in markdown
