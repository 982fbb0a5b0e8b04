"""The offline Pub/Sub emulator, through google-cloud-pubsub's own clients and Pub/Sub's REST API.

The client-level and REST tests run against the offline emulator, and also against Google's
emulator (the gcloud SDK's Java one, which serves both APIs on one port) on a machine that has it,
so the two are held to the same behaviour."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google.cloud.pubsub_v1 as pubsub_v1
import grpc
import pytest
import requests
from google.api_core import exceptions
from google.pubsub_v1.types import Topic

from offline_cloud import pubsub
from offline_cloud import stack as stack_module
from offline_cloud.stack import die_with_parent, free_port
from tests.support import StackClient, wait_for

PROJECT = "offline-project"
Clients = tuple[pubsub_v1.PublisherClient, pubsub_v1.SubscriberClient]


def _google_emulator() -> Path | None:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return None
    binary = Path(gcloud).resolve().parent.parent / "platform/pubsub-emulator/bin/cloud-pubsub-emulator"
    return binary if binary.exists() else None


def _answers(host: str) -> bool:
    with grpc.insecure_channel(host) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=0.5)
            return True
        except grpc.FutureTimeoutError:
            return False


@dataclass
class Running:
    kind: str  # "offline" or "google"
    host: str  # host:port, as PUBSUB_EMULATOR_HOST takes it
    rest_host: str  # host:port of the REST API (the offline emulator serves it on a port of its own)


@pytest.fixture(scope="module", params=["offline", "google"])
def emulator(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A running emulator: the offline one, in this process, or Google's."""
    port = free_port()
    if request.param == "offline":
        emulator = pubsub.Emulator()
        server = pubsub.serve(emulator, port)
        rest_port = free_port()
        rest = pubsub.serve_rest(emulator, rest_port)
        yield Running("offline", f"127.0.0.1:{port}", f"127.0.0.1:{rest_port}")
        rest.shutdown()
        server.stop(0)
        return
    binary = _google_emulator()
    if binary is None:
        pytest.skip("Google's Pub/Sub emulator (gcloud SDK) is not on this machine")
    log = (tmp_path_factory.mktemp("google-pubsub") / "emulator.log").open("wb")
    proc = subprocess.Popen(
        [str(binary), "--host=127.0.0.1", f"--port={port}"], stdout=log, stderr=log, preexec_fn=die_with_parent
    )
    try:
        wait_for(lambda: _answers(f"127.0.0.1:{port}") or proc.poll() is not None, 60, "Google's emulator")
        assert proc.poll() is None, Path(log.name).read_text()
        yield Running("google", f"127.0.0.1:{port}", f"127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture
def clients(emulator: Running, monkeypatch: pytest.MonkeyPatch) -> Iterator[Clients]:
    """A publisher and a subscriber found through PUBSUB_EMULATOR_HOST, as the functions find theirs."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    publisher = pubsub_v1.PublisherClient()
    with pubsub_v1.SubscriberClient() as subscriber:
        yield publisher, subscriber
    publisher.stop()


def _names() -> tuple[str, str]:
    unique = uuid.uuid4().hex[:12]
    return f"projects/{PROJECT}/topics/events-{unique}", f"projects/{PROJECT}/subscriptions/tests-{unique}"


def _subscribed(clients: Clients, **subscription: Any) -> tuple[str, str]:
    """A new topic and a subscription to it (with these fields), by name."""
    publisher, subscriber = clients
    topic, name = _names()
    publisher.create_topic(name=topic)
    subscriber.create_subscription(request={"name": name, "topic": topic, **subscription})
    return topic, name


def _pull(subscriber: pubsub_v1.SubscriberClient, subscription: str, timeout: float = 5.0) -> list[Any]:
    response = subscriber.pull(subscription=subscription, max_messages=10, timeout=timeout)
    return list(response.received_messages)


def test_a_published_cloud_event_is_pulled_with_its_id_time_and_attributes_then_acknowledged(
    clients: Clients,
) -> None:
    publisher, subscriber = clients
    topic, subscription = _subscribed(clients)
    created = subscriber.get_subscription(subscription=subscription)
    assert created.ack_deadline_seconds == 10 and created.topic == topic
    # A CloudEvent in the Pub/Sub binding, binary mode: ce- attributes, the data as the body.
    attributes = {
        "ce-specversion": "1.0",
        "ce-type": "com.example.bgremove.job.completed",
        "ce-source": "//bgremove/offline",
        "ce-id": "job-1",
        "content-type": "application/json",
    }
    before = time.time()
    message_id = publisher.publish(topic, b'{"job": "1"}', **attributes).result(timeout=10)

    received = _pull(subscriber, subscription)
    assert len(received) == 1
    message = received[0].message
    assert message.message_id == message_id and message.data == b'{"job": "1"}'
    assert dict(message.attributes) == attributes
    assert before - 1 <= message.publish_time.timestamp() <= time.time() + 1

    subscriber.acknowledge(subscription=subscription, ack_ids=[received[0].ack_id])
    assert _pull(subscriber, subscription, timeout=2) == []  # acknowledged: not delivered again


def test_an_unacknowledged_message_is_delivered_again_after_its_ack_deadline(
    clients: Clients,
) -> None:
    publisher, subscriber = clients
    # 1 s so the test is quick (both emulators take it; Google's service wants 10 s or more).
    topic, subscription = _subscribed(clients, ack_deadline_seconds=1)
    message_id = publisher.publish(topic, b"at least once").result(timeout=10)

    first = _pull(subscriber, subscription)
    assert [r.message.message_id for r in first] == [message_id]
    again = wait_for(lambda: _pull(subscriber, subscription), 10, "the redelivery")
    assert [r.message.message_id for r in again] == [message_id]
    assert again[0].ack_id != first[0].ack_id  # each delivery has its own ack id
    subscriber.acknowledge(subscription=subscription, ack_ids=[first[0].ack_id])  # stale: ignored
    subscriber.modify_ack_deadline(subscription=subscription, ack_ids=[again[0].ack_id], ack_deadline_seconds=0)
    nacked = _pull(subscriber, subscription)  # a nack makes it due at once
    assert [r.message.message_id for r in nacked] == [message_id]
    subscriber.acknowledge(subscription=subscription, ack_ids=[nacked[0].ack_id])
    time.sleep(1.5)
    assert _pull(subscriber, subscription, timeout=2) == []


def test_subscribe_streams_messages_and_a_nacked_one_comes_back(
    clients: Clients,
) -> None:
    publisher, subscriber = clients
    topic, subscription = _subscribed(clients)
    seen: list[tuple[str, bytes]] = []
    lock = threading.Lock()

    def callback(message: Any) -> None:
        with lock:
            first_time = (message.message_id, message.data) not in seen
            seen.append((message.message_id, message.data))
        if message.data == b"nack me" and first_time:
            message.nack()
        else:
            message.ack()

    streaming = subscriber.subscribe(subscription, callback)
    try:
        ids = [publisher.publish(topic, data).result(timeout=10) for data in (b"one", b"nack me", b"two")]
        wait_for(lambda: len(seen) >= 4, 20, "four deliveries")
    finally:
        streaming.cancel()
        streaming.result(timeout=10)
    assert sorted(seen) == sorted([(ids[0], b"one"), (ids[1], b"nack me"), (ids[1], b"nack me"), (ids[2], b"two")])
    time.sleep(0.5)
    assert len(seen) == 4  # all acknowledged: nothing more


def test_a_subscription_gets_only_what_is_published_after_it_and_refusals_are_pubsubs(
    clients: Clients,
) -> None:
    publisher, subscriber = clients
    topic, subscription = _names()
    with pytest.raises(exceptions.NotFound):
        publisher.get_topic(topic=topic)
    with pytest.raises(exceptions.NotFound):
        subscriber.create_subscription(name=subscription, topic=topic)
    publisher.create_topic(name=topic)
    with pytest.raises(exceptions.AlreadyExists):
        publisher.create_topic(name=topic)
    with pytest.raises(exceptions.InvalidArgument):
        publisher.create_topic(name=f"projects/{PROJECT}/topics/goog-reserved")
    publisher.publish(topic, b"before").result(timeout=10)
    subscriber.create_subscription(name=subscription, topic=topic)
    later = publisher.publish(topic, b"after").result(timeout=10)

    assert [r.message.message_id for r in _pull(subscriber, subscription)] == [later]
    subscriber.delete_subscription(subscription=subscription)
    with pytest.raises(exceptions.NotFound):
        subscriber.get_subscription(subscription=subscription)
    with pytest.raises(exceptions.NotFound):
        subscriber.pull(subscription=subscription, max_messages=1, timeout=5)


def test_the_offline_emulator_refuses_what_it_does_not_emulate(emulator: Running, clients: Clients) -> None:
    if emulator.kind != "offline":
        pytest.skip("the offline emulator's own limits (Google's has push and filters)")
    publisher, subscriber = clients
    topic, subscription = _names()
    publisher.create_topic(name=topic)
    for asked in ({"push_config": {"push_endpoint": "http://127.0.0.1:9/"}}, {"filter": 'attributes.k = "v"'}):
        with pytest.raises(exceptions.MethodNotImplemented):
            subscriber.create_subscription(request={"name": subscription, "topic": topic, **asked})


def test_create_topics_makes_the_missing_ones_and_leaves_the_rest() -> None:
    emulator = pubsub.Emulator()
    port = free_port()
    server = pubsub.serve(emulator, port)
    try:
        topic, _ = _names()
        emulator.create_topic(Topic(name=topic, labels={"kept": "yes"}))
        other = f"projects/{PROJECT}/topics/pipeline-events"
        pubsub.create_topics(f"127.0.0.1:{port}", [topic, other])
    finally:
        server.stop(0)
    assert emulator.get_topic(topic).labels == {"kept": "yes"} and emulator.get_topic(other).name == other


# --- the REST API ------------------------------------------------------------------------------------


def _rest(emulator: Running, method: str, path: str, body: object = None) -> requests.Response:
    """A request to the REST API at `/v1/<path>` (bytes sent as they are, anything else as JSON),
    without credentials, as Google's emulators take it."""
    url = f"http://{emulator.rest_host}/v1/{path}"
    if isinstance(body, bytes):
        return requests.request(method, url, data=body, timeout=10)
    return requests.request(method, url, json=body, timeout=10)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_message_published_over_rest_reaches_a_grpc_subscriber(emulator: Running, clients: Clients) -> None:
    _, subscriber = clients
    topic, subscription = _subscribed(clients)
    attributes = {"ce-specversion": "1.0", "ce-id": "job-1.completed", "content-type": "application/json"}
    body = {"messages": [{"data": _b64(b'{"state": "completed"}'), "attributes": attributes}, {"data": _b64(b"2")}]}

    answer = _rest(emulator, "POST", f"{topic}:publish", body)

    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    ids = answer.json()["messageIds"]
    assert len(ids) == 2 and all(i.isdigit() for i in ids)
    received = _pull(subscriber, subscription)
    assert sorted(r.message.message_id for r in received) == sorted(ids)
    first = next(r.message for r in received if r.message.message_id == ids[0])
    assert first.data == b'{"state": "completed"}' and dict(first.attributes) == attributes


def test_rest_creates_and_gets_topics_and_answers_refusals_in_googles_error_shape(emulator: Running) -> None:
    topic, _ = _names()
    missing = _rest(emulator, "POST", f"{topic}:publish", {"messages": [{"data": _b64(b"x")}]})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == 404 and missing.json()["error"]["status"] == "NOT_FOUND"
    assert _rest(emulator, "GET", topic).status_code == 404

    created = _rest(emulator, "PUT", topic, {})
    assert created.status_code == 200 and created.json()["name"] == topic
    assert _rest(emulator, "GET", topic).json()["name"] == topic
    again = _rest(emulator, "PUT", topic, {})
    assert again.status_code == 409 and again.json()["error"]["status"] == "ALREADY_EXISTS"

    refusals: list[dict[str, Any]] = [
        {"messages": [{"data": "not base64!"}]},
        {"messages": []},
        {},
        {"messages": [{}]},  # neither data nor attributes
        {"messages": [{"data": _b64(b"x"), "colour": "red"}]},  # no such field
    ]
    for refused in refusals:
        answer = _rest(emulator, "POST", f"{topic}:publish", refused)
        assert answer.status_code == 400, (refused, answer.text)
        error = answer.json()["error"]
        assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT"), error
    not_json = _rest(emulator, "POST", f"{topic}:publish", b"{")
    assert not_json.status_code == 400 and not_json.json()["error"]["status"] == "INVALID_ARGUMENT"
    # Attributes alone are a message; URL-safe base64 is base64 too (proto3 JSON takes both).
    for body in ({"messages": [{"attributes": {"k": "v"}}]}, {"messages": [{"data": "-_8"}]}):
        assert _rest(emulator, "POST", f"{topic}:publish", body).status_code == 200, body


def test_rest_publishes_reach_the_listeners_in_order_with_their_ids() -> None:
    emulator = pubsub.Emulator()
    topic, _ = _names()
    emulator.create_topic(Topic(name=topic))
    heard: list[tuple[str, bytes]] = []
    emulator.listen(topic, lambda m: heard.append((m.message_id, bytes(m.data))))
    api = pubsub.RestApi(emulator)
    body = {"messages": [{"data": _b64(b"a")}, {"data": _b64(b"b")}]}
    status, answer = api.handle("POST", f"/v1/{topic}:publish", json.dumps(body).encode())
    assert status == 200 and heard == list(zip(answer["messageIds"], [b"a", b"b"], strict=True))
    # The colon may come percent-encoded; an unknown route is Google's 404, not a crash.
    status, _ = api.handle("POST", f"/v1/{topic}%3Apublish", b'{"messages": [{"data": "YQ=="}]}')
    assert status == 200
    assert api.handle("GET", "/v2/nothing", b"")[0] == 404
    status, error = api.handle(
        "POST", f"/v1/{topic}:publish", b'{"messages": [' + b'{"data": "YQ=="},' * 1000 + b"{}]}"
    )
    assert status == 400 and "maximum value is 1000" in error["error"]["message"]


# --- the stack ---------------------------------------------------------------------------------------


def test_the_stack_serves_pubsub_to_its_functions_and_to_tests(
    stack: StackClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = stack.info
    assert info.pubsub_emulator_host.startswith("127.0.0.1:")
    # The functions publish over REST, to the emulator's REST port; clients use its gRPC port.
    assert info.pubsub_rest_host.startswith("127.0.0.1:") and info.pubsub_rest_host != info.pubsub_emulator_host
    assert info.function_env["PUBSUB_EMULATOR_HOST"] == info.pubsub_rest_host
    assert info.function_env["EVENTS_TOPIC"] == info.events_topic == f"projects/{PROJECT}/topics/bgremove-events"
    # Production's triggers: on_upload's finalized, and deleted/archived to on_delete once it exists.
    expected = {"deleted", "archived"} if stack_module.main_defines("on_delete") else set()
    assert {t.rsplit(".", 1)[1] for t in info.event_triggers} == expected
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", info.pubsub_emulator_host)
    topic, subscription = _names()
    publisher = pubsub_v1.PublisherClient()
    with pubsub_v1.SubscriberClient() as subscriber:
        publisher.create_topic(name=topic)
        subscriber.create_subscription(name=subscription, topic=topic)
        message_id = publisher.publish(topic, b"from a function").result(timeout=10)
        assert [r.message.message_id for r in _pull(subscriber, subscription)] == [message_id]
        # The storage notifications' topic is there too, the one the relay listens to.
        assert publisher.get_topic(topic=f"projects/{PROJECT}/topics/gcs-notifications")
        # What a function publishes over REST reaches a gRPC subscriber of the events topic.
        events = f"projects/{PROJECT}/subscriptions/events-{uuid.uuid4().hex[:8]}"
        subscriber.create_subscription(name=events, topic=info.events_topic)
        body = {"messages": [{"data": _b64(b"{}"), "attributes": {"ce-id": "j.completed"}}]}
        url = f"http://{info.function_env['PUBSUB_EMULATOR_HOST']}/v1/{info.events_topic}:publish"
        published = requests.post(url, json=body, timeout=10).json()["messageIds"]
        assert [r.message.message_id for r in _pull(subscriber, events)] == published
    publisher.stop()
