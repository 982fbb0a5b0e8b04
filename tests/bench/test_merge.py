"""`python -m bench --only NAME` merges its figures into the results it adds to (no stack)."""

from __future__ import annotations

from typing import Any

from bench.__main__ import merge
from bench.report import render


def _results(mode: str, date: str, figures: dict[str, Any]) -> dict[str, Any]:
    meta = {
        "mode": mode,
        "date": date,
        "git": {"commit": "c" * 40, "dirty": False},
        "machine": {
            "cpu_model": "cpu",
            "logical_cores": 2,
            "physical_cores": 2,
            "memory_gib": 1,
            "platform": "p",
            "python": "3.11",
        },
        "load_average_at_start": [1.0, 1.0, 1.0],
        "load_average_at_end": [1.0, 1.0, 1.0],
        "command": "python -m bench",
        "runtime_seconds": 10.0,
    }
    return {"meta": meta, "figures": figures}


def test_a_subset_replaces_its_figures_and_keeps_the_others_and_the_files_meta() -> None:
    previous = _results("full", "2026-12-01", {"memory": {"ratio": 1.3}, "calls": {"ratio": 1.0}})
    run = _results("full", "2026-12-03", {"calls": {"ratio": 2.0}})

    merged = merge(previous, run)

    assert merged["meta"]["date"] == "2026-12-01"
    assert merged["figures"]["memory"] == {"ratio": 1.3}
    assert merged["figures"]["calls"]["ratio"] == 2.0 and merged["figures"]["calls"]["run"]["date"] == "2026-12-03"


def test_nothing_to_merge_into_or_another_mode_leaves_the_run_alone() -> None:
    run = _results("quick", "2026-12-03", {"calls": {"ratio": 2.0}})

    assert merge(None, run) is run
    assert merge(_results("full", "2026-12-01", {"memory": {"ratio": 1.3}}), run) is run


def test_the_markdown_says_which_figures_ran_on_their_own() -> None:
    previous = _results("full", "2026-12-01", {})
    merged = merge(previous, _results("full", "2026-12-03", {"unknown-figure": {"ratio": 2.0}}))

    assert "figures run on their own" in render(merged) and "unknown-figure (2026-12-03" in render(merged)
