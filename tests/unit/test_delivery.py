"""Results without webhooks, on in-memory seams: the polling schedule (learned first check, backing
off to RECONCILE_AFTER_SECONDS), RESULT_DELIVERY's three modes, synchronous create answers (a
proxy's `created` + `data[].url` included) settled at once, and unknown answers refused."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from bgremove import admission, errors, jobs, reconcile, schedule, submit
from bgremove.outcomes import Outcome
from bgremove.predictions import Prediction, from_create_answer
from tests.unit.fakes import BASE_ENV, PNG, World, config, cutout_png

NOW = 1_700_000_000.0
OUTPUT = "https://replicate.delivery/out/x.png"


def upload(world: World, **env: str) -> str:
    photo = cutout_png()
    generation = world.objects.put("uploads", "photos/a.png", photo, "image/png")
    event = admission.UploadEvent(
        "e", admission.FINALIZED, "uploads", "photos/a.png", generation, "image/png", len(photo)
    )
    admission.handle_upload(event, config(**env), world.deps, NOW)
    return admission.source_of(event).job_id


def job(world: World, job_id: str) -> jobs.Job:
    loaded = world.deps.store.load(job_id)
    assert loaded is not None
    return loaded[0]


# --- the schedule ----------------------------------------------------------------------------------


def test_first_poll_is_the_floor_until_run_times_are_seen_then_their_slow_end_plus_a_margin() -> None:
    cfg = config()
    run_times = schedule.RunTimes()
    assert schedule.first_check(cfg, run_times) == 5.0  # POLL_FIRST_CHECK_SECONDS
    for seconds in [2.0] * 9 + [4.0]:
        run_times.observe({"created_at": "2026-12-03T06:00:00Z", "completed_at": f"2026-12-03T06:00:0{int(seconds)}Z"})
    assert run_times.slow_end() == 4.0
    assert schedule.first_check(cfg, run_times) == pytest.approx(4.0 * 1.25 + 2.0)
    for _ in range(20):
        run_times.observe({"metrics": {"predict_time": 30.0}})  # metrics when timestamps are missing
    assert run_times.slow_end() == 30.0
    assert schedule.first_check(config(RECONCILE_AFTER_SECONDS="20"), run_times) == 20.0  # never past the cap


def test_polls_back_off_twice_as_long_each_time_with_jitter_up_to_reconcile_after() -> None:
    cfg, rng = config(RECONCILE_AFTER_SECONDS="900"), random.Random(7)
    waits, wait = [], 5.0
    for _ in range(12):
        wait = schedule.next_check(cfg, wait, rng)
        waits.append(wait)
    assert all(0.8 * 2 <= b / a <= 1.2 * 2 for a, b in zip([5.0, *waits], waits[:4], strict=False))
    assert max(waits) == 900.0 and waits[-1] == 900.0


def test_webhook_mode_keeps_the_fixed_first_check_and_period() -> None:
    cfg = config(RESULT_DELIVERY="webhook")
    assert schedule.first_check(cfg, schedule.RunTimes()) == 180.0
    assert schedule.next_check(cfg, 180.0) == 900.0


@pytest.mark.parametrize(("mode", "webhook"), [("auto", True), ("webhook", True), ("poll", False)])
def test_each_result_delivery_mode_asks_for_a_webhook_or_not(mode: str, webhook: bool) -> None:
    world = World()
    job_id = upload(world, RESULT_DELIVERY=mode)
    submit.handle_submit_task(job_id, config(RESULT_DELIVERY=mode), world.deps, NOW)
    assert bool(world.api.created[0]["webhook"]) is webhook


def test_without_webhooks_a_job_completes_by_polling_with_few_gets() -> None:
    world = World()
    cfg = config(RESULT_DELIVERY="poll")
    job_id = upload(world, RESULT_DELIVERY="poll")
    submit.handle_submit_task(job_id, cfg, world.deps, NOW)
    gets = 0
    original = world.api.get

    def counted(prediction_id: str) -> Prediction | None:
        nonlocal gets
        gets += 1
        return original(prediction_id)

    world.api.get = counted  # type: ignore[method-assign]
    first = job(world, job_id).deadline_at
    assert first == NOW + 5
    # Still running at the first poll: the next one is about twice as far.
    world.api.predictions["pred1"] = Prediction.from_json({"id": "pred1", "status": "processing"})
    assert reconcile.handle_deadline_task(job_id, cfg, world.deps, first) is Outcome.WAITING
    second = job(world, job_id).deadline_at
    assert 8.0 <= second - first <= 12.0
    world.api.predictions["pred1"] = Prediction.from_json(
        {"id": "pred1", "status": "succeeded", "version": cfg.model_version, "output": OUTPUT,
         "created_at": "2026-12-03T06:00:00Z", "completed_at": "2026-12-03T06:00:03Z"}
    )  # fmt: skip
    world.outputs.files[OUTPUT] = PNG
    assert reconcile.handle_deadline_task(job_id, cfg, world.deps, second) is Outcome.SETTLED_COMPLETED
    assert job(world, job_id).state == jobs.COMPLETED and gets == 2


def test_a_check_of_a_settled_job_is_one_record_read_and_no_api_call() -> None:
    world = World()
    job_id = upload(world)
    submit.handle_submit_task(job_id, config(), world.deps, NOW)
    current = job(world, job_id)
    world.write(jobs.completed(current, "pred1", "photos/a.png", 3, NOW + 1))
    world.objects.calls.clear()
    assert reconcile.handle_deadline_task(job_id, config(), world.deps, NOW + 5) is Outcome.NOT_DUE
    assert world.objects.calls == ["read_json"] and "get" not in world.api.calls


# --- synchronous answers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        {"id": "p9", "status": "succeeded", "output": OUTPUT},  # Prefer: wait, finished in time
        {"id": "p9", "status": "starting", "created": 1589478378, "data": [{"url": OUTPUT}]},  # proxy beside
        {"created": 1589478378, "data": [{"url": OUTPUT}]},  # the proxy's shape alone
    ],
    ids=["prefer-wait", "prediction+data", "data-only"],
)
def test_a_synchronous_answer_completes_the_job_with_no_webhook_and_no_poll(answer: dict[str, Any]) -> None:
    world = World()
    cfg = config()
    job_id = upload(world)
    world.api.answers.append(from_create_answer({**answer, "version": cfg.model_version}))
    world.outputs.files[OUTPUT] = PNG
    result = submit.handle_submit_task(job_id, cfg, world.deps, NOW)
    assert result.outcome is Outcome.COMPLETED
    done = job(world, job_id)
    assert done.state == jobs.COMPLETED and done.attempts == 1
    assert world.queue.pending(BASE_ENV["DEADLINE_QUEUE"]) == []  # nothing to check later
    assert world.objects.get("processed", "photos/a.png") is not None


def test_a_proxy_answer_without_an_id_gets_a_stable_one() -> None:
    first = from_create_answer({"created": 1, "data": [{"url": OUTPUT}]})
    again = from_create_answer({"created": 2, "data": [{"url": OUTPUT}]})
    assert first.id == again.id and first.id.startswith("sync-") and first.status == "succeeded"


@pytest.mark.parametrize("answer", [{"result": "ok"}, ["not", "an", "object"], {"created": 1, "data": []}])
def test_an_unknown_create_answer_is_refused_quoting_its_first_bytes(answer: Any) -> None:
    with pytest.raises(errors.ApiAnswerUnknown) as refused:
        from_create_answer(answer)
    assert json.dumps(answer, separators=(",", ":"))[:40] in str(refused.value)


def test_an_unknown_create_answer_ends_the_job_in_a_failure_record_that_quotes_it() -> None:
    world = World()
    job_id = upload(world)
    world.api.fail("create", errors.ApiAnswerUnknown('the create answer is not a prediction: {"result":"ok"}'))
    result = submit.handle_submit_task(job_id, config(), world.deps, NOW)
    failed = job(world, job_id)
    assert result.outcome is Outcome.FAILED and failed.reason == "api_answer_unknown"
    assert '{"result":"ok"}' in failed.error
