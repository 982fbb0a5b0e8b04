"""A scaled-down soak in every test run: 50 uploads with every fault turned on, function workers
SIGKILLed mid-request, and some names replaced (once or twice, while queued, while running, after
the end) or deleted (before and after the end) still give exactly one outcome per upload
generation, leave the newest live generation's cut-outs and nothing of a superseded generation or a
deleted name (`make soak` runs 500+)."""

from __future__ import annotations

from pathlib import Path

import pytest

from offline_cloud.soak import DELETIONS, MAX_PREDICTION_ATTEMPTS, REPLACEMENTS, run_soak


# The settling itself is bounded by run_soak's timeout; the stack's start and the checks come on top.
@pytest.mark.timeout(480)
def test_every_image_gets_exactly_one_outcome_under_injected_faults(tmp_path: Path) -> None:
    report = run_soak(50, tmp_path, kills=3, timeout=300)
    print(report.text())

    assert report.problems == []
    assert report.lost == 0
    assert report.duplicate_outputs == 0 and report.orphan_outputs == 0
    assert report.superseded_outputs == 0
    assert report.removed_left == 0
    assert report.images == 50
    assert sum(report.outcomes.values()) == report.generations
    assert report.predictions_per_image["max"] <= MAX_PREDICTION_ATTEMPTS
    assert report.superseded_before_submission["predictions"] == 0
    # The faults really happened: a soak without them would prove nothing.
    assert report.faults["function_workers_killed"] == 3
    for kind in ("webhooks_dropped", "webhooks_duplicated", "webhooks_reordered", "cloudevents_duplicated"):
        assert report.faults.get(kind, 0) > 0, kind
    # So did the lifecycle: every kind of replacement and deletion, and their outcomes.
    life = report.lifecycle
    assert life["replaced_names"] == len(REPLACEMENTS) and life["deleted_names"] == len(DELETIONS)
    assert life["replaced_twice"] == sum(1 for _, times in REPLACEMENTS if times > 1)
    assert report.generations == 50 + life["replacing_generations"]
    assert life.get("replaced_after_end", 0) > 0 and life.get("deleted_after_end", 0) > 0
    assert life.get("replaced_at_upload", 0) + life.get("replaced_while_running", 0) > 0
    assert life.get("deleted_at_upload", 0) + life.get("deleted_while_running", 0) > 0
    assert report.outcomes.get("superseded", 0) > 0 and report.outcomes.get("removed", 0) > 0
