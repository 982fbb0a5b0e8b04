"""A scaled burst in every test run: a few hundred photos dropped at once with the API's limits on are
admitted through the submission queue, which sets the pace; every image completes exactly once.
`make burst` runs the full 10,000 at the production rates, and the real low-credit case."""

from __future__ import annotations

from pathlib import Path

from offline_cloud import burst


def _creates(directory: Path) -> list[float]:
    times, _, _ = burst.service_log(directory / "logs" / "predictions-service.log", "/v1")
    return times


def _submit_dispatches(directory: Path) -> list[float]:
    records = burst.jsonl(directory / "logs" / "cloud-tasks-dispatches.jsonl")
    return sorted(r["dispatched_at"] for r in records if r["queue"].endswith("/queues/submissions"))


def test_a_burst_is_paced_by_the_queue_and_every_image_completes_once(tmp_path: Path) -> None:
    # 300 images. To keep this under about a minute, the API's limit and the queue's rate are raised
    # together, five times production's (600 a minute and 10 dispatches a second): the API at 3,000
    # creates a minute with a burst of 3,000, which would admit all 300 at once, and the queue at 50
    # a second (burst 50). The rest is production's, as in `make burst`.
    rate = 50.0
    settings = burst.BurstSettings(
        images=300,
        api_creates_per_minute=3000.0,
        api_create_burst=3000,
        submit_rate_per_second=rate,
        poll_seconds=1.0,
        sweep_seconds=10.0,
        timeout=180.0,
    )
    report = burst.run_burst(settings, tmp_path)
    print(burst.text(report))

    assert report["predictions"] == "fleet stand-in" and report["service_mode"] == "fleet"
    assert report["problems"] == []
    assert report["lost"] == 0
    assert report["duplicate_outputs"] == 0 and report["orphan_outputs"] == 0
    assert report["completed"] == 300 and report["failed"] == {}
    assert report["creates"] == 300
    assert report["throttled"] <= 0.01 * report["creates"]
    assert report["function_invocations"]["on_upload"] >= 300
    assert report["function_invocations"]["on_prediction_webhook"] >= 300

    # The queue, not the API, set the pace: in no window did the queue dispatch more than its rate
    # allows plus its burst, and the creates followed it. A create lags its dispatch by the task
    # handler's own work (storage reads and writes before the API call), which varies by up to about
    # a second on a loaded machine, so the creates' bound allows that much more.
    burst_size = report["submit_queue_burst"]
    assert burst_size == 50
    dispatches, creates = _submit_dispatches(tmp_path), _creates(tmp_path)
    assert len(creates) == 300
    for window in (1.0, 5.0):
        assert burst.most_in_window(dispatches, window) <= rate * (window + 0.2) + burst_size
        assert burst.most_in_window(creates, window) <= rate * (window + 1.0) + burst_size


def test_a_low_credit_account_completes_every_image_and_none_fails_for_age(tmp_path: Path) -> None:
    # Shaped like the low-credit case, ten times faster: the API at 60 creates a minute with a burst
    # of 1 and the queue at 1 a second, 10 images. MAX_EVENT_AGE_SECONDS is 5 s, so the later images
    # wait in the queue longer than an event may be old, and must still complete. The real case
    # (6 a minute, 0.1/s, 30 images, about 5 minutes) runs in `make burst`.
    report = burst.run_low_credit(
        tmp_path,
        images=10,
        api_creates_per_minute=60.0,
        submit_rate_per_second=1.0,
        poll_seconds=1.0,
        timeout=240.0,
        function_env={"MAX_EVENT_AGE_SECONDS": "5"},
    )
    print(burst.text(report))

    assert report["predictions"] == "fleet stand-in"
    assert report["problems"] == []
    assert report["completed"] == 10 and report["failed"] == {}
    assert report["lost"] == 0 and report["duplicate_outputs"] == 0
    assert report["queued_longer_than_max_event_age"] > 0


def test_a_burst_past_the_daily_budget_creates_exactly_the_budget_and_holds_the_rest(tmp_path: Path) -> None:
    # 240 images against DAILY_PREDICTION_BUDGET=120, the API and queue raised as above: exactly
    # 120 predictions (the shard count's overshoot is 0), the other 120 queued and waiting, none
    # failed, lost or written twice. `make burst BURST_IMAGES=1200 BURST_BUDGET=600` is the full one.
    settings = burst.BurstSettings(
        images=240,
        api_creates_per_minute=3000.0,
        api_create_burst=3000,
        submit_rate_per_second=50.0,
        poll_seconds=2.0,
        sweep_seconds=10.0,
        timeout=240.0,
        daily_budget=120,
    )
    report = burst.run_burst(settings, tmp_path)
    print(burst.text(report))

    assert report["problems"] == []
    assert report["creates"] == 120 and report["completed"] == 120 and report["held"] == 120
    assert report["lost"] == 0 and report["failed"] == {}
    assert report["duplicate_outputs"] == 0 and report["orphan_outputs"] == 0
