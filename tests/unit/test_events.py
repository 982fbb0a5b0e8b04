"""Completion events on in-memory seams: one CloudEvent per job outcome with a stable id, an
announcement that failed made again by the sweep, notifications signed and retried, deletions
announced too."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import standardwebhooks

from bgremove import admission, complete, errors, events, jobs, reconcile, removal, tasks
from bgremove.config import Config
from bgremove.jobs import Job, Source
from bgremove.outcomes import Outcome
from bgremove.predictions import Prediction
from tests.unit.fakes import FakePublisher, World, config, cutout_png

NOW = 1_700_000_000.0
TOPIC = "projects/p/topics/bgremove-events"
NOTIFY_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OUTPUT_URL = "https://replicate.delivery/pbxt/abc/output.png"
ENV = {
    "EVENTS_TOPIC": TOPIC,
    "SUBMIT_QUEUE": "projects/p/locations/l/queues/submit",
    "DEADLINE_QUEUE": "projects/p/locations/l/queues/deadline",
    "TASK_HANDLER_URL": "https://tasks.example.com/",
}


def announcing(**env: str) -> tuple[World, FakePublisher, Config]:
    cfg = config(**{**ENV, **env})
    world = World()
    publisher = FakePublisher()
    world.announce = events.Announcer(cfg, lambda: publisher, lambda: world.queue)
    return world, publisher, cfg


def submitted(world: World, name: str = "photos/a.jpg") -> Job:
    generation = world.objects.put("uploads", name, b"\xff\xd8\xff upload", "image/jpeg")
    source = Source("uploads", name, generation, "image/jpeg", 1234, {})
    job = jobs.submitted(jobs.new_claim(source, config().model_version, NOW - 60, 300), "p1", NOW - 50, 900)
    world.put(job)
    return job


def settle(world: World, job: Job, cfg: Config) -> Outcome:
    world.outputs.files[OUTPUT_URL] = cutout_png()
    pred = Prediction.from_json({"id": "p1", "status": "succeeded", "version": cfg.model_version, "output": OUTPUT_URL})
    return complete.settle(job.job_id, pred, cfg, world.deps, NOW).outcome


def open_ids(world: World) -> list[str]:
    return world.deps.store.open_jobs()


def test_a_completed_job_publishes_one_cloudevent_naming_its_object_and_outputs() -> None:
    world, publisher, cfg = announcing()
    job = submitted(world)
    assert settle(world, job, cfg) is Outcome.COMPLETED
    ((topic, data, attributes),) = publisher.published
    assert topic == TOPIC
    assert attributes["ce-id"] == f"{job.job_id}.completed" and attributes["ce-specversion"] == "1.0"
    assert attributes["ce-type"] == "dev.bgremove.job.v1.completed"
    assert attributes["ce-subject"] == "objects/photos/a.jpg"
    datetime.fromisoformat(attributes["ce-time"].replace("Z", "+00:00")).astimezone(UTC)
    body = json.loads(data)
    assert body["source"] == {"uri": "gs://uploads/photos/a.jpg", "bucket": "uploads", "name": "photos/a.jpg",
                              "generation": job.source.generation}  # fmt: skip
    (output,) = body["outputs"]
    assert output["object"] == "gs://processed/photos/a.png" and output["generation"] > 0
    assert output["url"] == "https://storage.googleapis.com/processed/photos/a.png"
    assert body["prediction_id"] == "p1" and body["state"] == "completed"
    assert open_ids(world) == []  # announced, then unlisted


def test_a_redelivered_webhook_announces_nothing_twice() -> None:
    world, publisher, cfg = announcing()
    job = submitted(world)
    settle(world, job, cfg)
    assert settle(world, job, cfg) is Outcome.DUPLICATE
    assert len(publisher.published) == 1


def test_a_failed_announcement_keeps_the_job_listed_and_the_sweep_makes_it_again() -> None:
    world, publisher, cfg = announcing()
    job = submitted(world)
    publisher.fail("publish", errors.EventsUnavailable("publishing answered 503", 503))
    assert settle(world, job, cfg) is Outcome.COMPLETED  # the outcome is recorded regardless
    assert open_ids(world) == [job.job_id] and publisher.published == []
    reconcile.reconcile(cfg, world.deps, NOW + 5)  # too soon: the first announcement may be under way
    assert publisher.published == []
    reconcile.reconcile(cfg, world.deps, NOW + jobs.ANNOUNCE_AGAIN_AFTER_SECONDS + 1)
    assert [a["ce-id"] for _, _, a in publisher.published] == [f"{job.job_id}.completed"]
    assert open_ids(world) == []


@pytest.mark.parametrize(
    ("how", "state"),
    [("refused at admission", "failed"), ("replaced before submission", "superseded"), ("deleted", "removed")],
)
def test_every_kind_of_end_is_announced_with_its_own_type(how: str, state: str) -> None:
    world, publisher, cfg = announcing(MAX_UPLOAD_BYTES="10")
    if how == "refused at admission":
        event = admission.UploadEvent("e1", admission.FINALIZED, "uploads", "big.jpg", 3, "image/jpeg", 11)
        admission.handle_upload(event, cfg, world.deps, NOW)
    elif how == "replaced before submission":
        job = submitted(world)
        world.objects.put("uploads", job.source.name, b"newer", "image/jpeg")
        settle(world, job, cfg)
    else:
        job = submitted(world)
        assert settle(world, job, cfg) is Outcome.COMPLETED
        del world.objects.buckets["uploads"][job.source.name]
        event = admission.UploadEvent("e2", removal.DELETED, "uploads", job.source.name, job.source.generation, "", 0)
        assert removal.handle_delete(event, cfg, world.deps, NOW).outcome is Outcome.REMOVED
        assert world.objects.buckets["processed"] == {}
    types = [a["ce-type"] for _, _, a in publisher.published]
    assert types[-1] == f"dev.bgremove.job.v1.{state}"
    assert len({a["ce-id"] for _, _, a in publisher.published}) == len(publisher.published)
    assert open_ids(world) == []


def test_notify_url_gets_the_event_as_a_task_and_a_signed_post_verifiable_by_the_reference_library() -> None:
    world, _, cfg = announcing(
        NOTIFY_URL="https://customer.example.com/hook",
        NOTIFY_SECRET=NOTIFY_SECRET,
        NOTIFY_QUEUE="projects/p/locations/l/queues/notify",
    )
    job = submitted(world)
    settle(world, job, cfg)
    (task,) = world.queue.tasks["projects/p/locations/l/queues/notify"].values()
    payload = tasks.parse_payload(task.body)
    assert payload is not None and payload.kind is tasks.Kind.NOTIFY and payload.event is not None
    assert payload.event["id"] == f"{job.job_id}.completed"
    sent: list[tuple[str, bytes, dict[str, str]]] = []

    def post(url: str, body: bytes, headers: Any) -> int:
        sent.append((url, body, dict(headers)))
        return 503 if len(sent) == 1 else 204

    key = base64.b64decode(NOTIFY_SECRET.removeprefix("whsec_"))
    now = time.time()  # the reference library checks freshness against the real clock
    with pytest.raises(errors.NotifyUnavailable, match="503"):  # the queue retries it
        events.deliver_notification(job.job_id, payload.event, cfg, post, now, key)
    assert events.deliver_notification(job.job_id, payload.event, cfg, post, now + 1, key) == 204
    url, body, headers = sent[-1]
    assert url == "https://customer.example.com/hook" and headers["webhook-id"] == payload.event["id"]
    assert sent[0][2]["webhook-id"] == headers["webhook-id"]  # a retry keeps the id: receivers de-duplicate
    standardwebhooks.Webhook(NOTIFY_SECRET).verify(body, headers)  # raises unless genuine and fresh
    event = json.loads(body)
    assert event["type"] == "dev.bgremove.job.v1.completed" and event["data"]["source"]["name"] == "photos/a.jpg"


def test_notification_payloads_are_parsed_only_with_their_event() -> None:
    job_id = "a" * 64
    assert tasks.parse_payload({"kind": "notify", "job_id": job_id}) is None
    assert tasks.parse_payload({"kind": "submit", "job_id": job_id, "event": {}}) is None
    parsed = tasks.parse_payload({"kind": "notify", "job_id": job_id, "event": {"id": "x"}})
    assert parsed is not None and parsed.event == {"id": "x"}


def test_without_a_topic_or_notify_url_nothing_is_announced_and_jobs_unlist_at_once() -> None:
    cfg = config(**{k: v for k, v in ENV.items() if k != "EVENTS_TOPIC"})
    announcer = events.Announcer(cfg, FakePublisher, lambda: World().queue)
    assert not announcer.active
