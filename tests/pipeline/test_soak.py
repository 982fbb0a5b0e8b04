"""A scaled-down soak in every test run: 50 uploads with every fault turned on and function
workers SIGKILLed mid-request still give exactly one outcome per image (`make soak` runs 500+)."""

from __future__ import annotations

from pathlib import Path

from offline_cloud.soak import MAX_PREDICTION_ATTEMPTS, run_soak


def test_every_image_gets_exactly_one_outcome_under_injected_faults(tmp_path: Path) -> None:
    report = run_soak(50, tmp_path, kills=3, timeout=240)
    print(report.text())

    assert report.problems == []
    assert report.lost == 0
    assert report.duplicate_outputs == 0 and report.orphan_outputs == 0
    assert sum(report.outcomes.values()) == 50
    assert report.predictions_per_image["max"] <= MAX_PREDICTION_ATTEMPTS
    # The faults really happened: a soak without them would prove nothing.
    assert report.faults["function_workers_killed"] == 3
    for kind in ("webhooks_dropped", "webhooks_duplicated", "webhooks_reordered", "cloudevents_duplicated"):
        assert report.faults.get(kind, 0) > 0, kind
