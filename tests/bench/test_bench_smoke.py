"""The benchmark harness in its quick mode: it runs on the offline stack end to end and writes both
result files with every figure. (Its numbers mean nothing; `make bench` runs the full sizes.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from offline_cloud.stack import ROOT, die_with_parent

FIGURES = ("billed", "latency", "coldstart", "memory", "throughput", "variants")


def test_quick_bench_writes_results_json_and_markdown_with_every_figure(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
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
    assert figures["latency"]["one_image"]["overhead_seconds"]["n"] >= 1
    assert figures["latency"]["batch"]["overhead_seconds"]["n"] == figures["latency"]["batch"]["images"]
    assert figures["coldstart"]["variants"]["stack venv"]["functions"].keys() == {
        "hello",
        "on_upload",
        "on_prediction_webhook",
    }
    assert len(figures["memory"]["runs"]) == 2 and figures["memory"]["ratio"] > 0
    assert [r["concurrency"] for r in figures["throughput"]["runs"]] == [1, 8, 32]
    assert all(
        r["webhooks_per_second"] > 0 and r["ceiling_creates_per_second"] > 0 for r in figures["throughput"]["runs"]
    )

    markdown = (tmp_path / "RESULTS.md").read_text()
    for heading in ("Billed function time", "Overhead latency", "Cold start", "Memory", "Webhook throughput"):
        assert heading in markdown
    assert meta["machine"]["cpu_model"] in markdown and meta["git"]["commit"] in markdown
