"""The storage emulator and the Eventarc relay, through their real wire protocols."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from google.api_core.exceptions import PreconditionFailed
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.pubsub_v1.types import PublishRequest, PublishResponse, PubsubMessage, Topic

from offline_cloud import eventarc_relay, pubsub
from offline_cloud.stack import (
    StackOptions,
    _create_buckets,
    die_with_parent,
    free_port,
    main_defines,
    relay_command,
    storage_emulator_command,
)
from tests.support import StackClient, wait_for


def test_storage_client_second_create_only_upload_fails_with_412(stack: StackClient) -> None:
    blob = stack.gcs.bucket(stack.info.state_bucket).blob("tests/create-only.json")
    blob.upload_from_string(b"{}", if_generation_match=0)
    again = stack.gcs.bucket(stack.info.state_bucket).blob("tests/create-only.json")
    with pytest.raises(PreconditionFailed) as caught:
        again.upload_from_string(b'{"second": true}', if_generation_match=0)
    assert caught.value.code == 412
    assert blob.download_as_bytes() == b"{}"  # the first write stands


@dataclass
class Receiver:
    """A stand-in trigger function that records each request and answers from a script."""

    answers: list[int] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def serve(self) -> tuple[ThreadingHTTPServer, str]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append({"headers": dict(self.headers), "body": json.loads(body)})
                status = receiver.answers.pop(0) if receiver.answers else 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}/"


# Tests that need speed say so: production backoff is 10-600 s (RelaySettings' defaults); these
# rigs retry within a fraction of a second. The attempt cap stays production's (unlimited) unless a
# test sets one.
FAST_RELAY = {"min_backoff_seconds": 0.05, "max_backoff_seconds": 0.2}

Rig = tuple[storage.Client, Receiver, eventarc_relay.Relay]


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """Start the emulator publishing to an in-process relay (with `settings`) that delivers to a
    recording receiver; everything started is stopped after the test."""
    stops: list[Callable[[], None]] = []

    def start(**settings: Any) -> Rig:
        receiver = Receiver()
        server, url = receiver.serve()
        stops.append(server.shutdown)
        relay = eventarc_relay.Relay(eventarc_relay.RelaySettings(target_url=url, bucket="watched", **settings))
        stops.append(relay.close)
        grpc_port, gcs_port = free_port(), free_port()
        grpc_server = eventarc_relay.serve_grpc(relay, grpc_port)
        stops.append(lambda: grpc_server.stop(0))
        log = (tmp_path / f"gcs-{gcs_port}.log").open("wb")
        stops.append(log.close)
        env = {**os.environ, "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{grpc_port}"}
        command = storage_emulator_command(gcs_port, "watched")
        gcs = subprocess.Popen(command, stdout=log, stderr=log, env=env, preexec_fn=die_with_parent)

        def stop_gcs() -> None:
            gcs.terminate()
            gcs.wait(10)

        stops.append(stop_gcs)
        gcs_url = f"http://127.0.0.1:{gcs_port}"
        relay.settings.storage_url = gcs_url  # as the stack runs it
        wait_for(lambda: _answers(gcs_url) or gcs.poll() is not None, 30, "the storage emulator")
        assert gcs.poll() is None, Path(log.name).read_text()
        _create_buckets(gcs_url, ("watched", "other"))
        client = storage.Client(
            project="p",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": gcs_url},
        )
        return client, receiver, relay

    try:
        yield start
    finally:
        for stop in reversed(stops):
            stop()


@pytest.fixture
def relay_rig(make_rig: Callable[..., Rig]) -> Rig:
    """A rig with fast retries (FAST_RELAY) and production's attempt cap: none."""
    return make_rig(**FAST_RELAY)


def _answers(url: str) -> bool:
    try:
        requests.get(url + "/storage/v1/b", timeout=1)
        return True
    except requests.RequestException:
        return False


def _finals(relay: eventarc_relay.Relay) -> list[dict[str, Any]]:
    return [e for e in relay.log() if e["kind"] == "final"]


MILLISECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
MESSAGE_ID = re.compile(r"^[1-9]\d{15,16}$")  # Pub/Sub's: a long decimal string


def test_one_upload_gives_exactly_one_cloud_event_shaped_like_eventarcs(relay_rig: Rig) -> None:
    client, receiver, relay = relay_rig
    blob = client.bucket("watched").blob("dir/photo.jpg")
    blob.upload_from_string(b"\xff\xd8\xff" + b"0" * 100, content_type="image/jpeg")
    client.bucket("other").blob("elsewhere.jpg").upload_from_string(b"x", content_type="image/jpeg")

    finals = wait_for(lambda: _finals(relay), 20, "a delivery")
    assert len(receiver.requests) == 1 and len(finals) == 1 and finals[0]["result"] == "delivered"
    headers, data = receiver.requests[0]["headers"], receiver.requests[0]["body"]
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-type"] == "google.cloud.storage.object.v1.finalized"
    assert headers["ce-source"] == "//storage.googleapis.com/projects/_/buckets/watched"
    assert headers["ce-subject"] == "objects/dir/photo.jpg"
    assert headers["ce-bucket"] == "watched"
    assert MESSAGE_ID.match(headers["ce-id"]), headers["ce-id"]
    assert headers["Content-Type"] == "application/json"
    assert data["bucket"] == "watched" and data["name"] == "dir/photo.jpg"
    assert int(data["generation"]) == blob.generation and int(data["size"]) == 103
    assert data["contentType"] == "image/jpeg"
    assert data["id"] == f"watched/dir/photo.jpg/{blob.generation}"
    # What the emulator leaves out of its notification, filled in as Google sends it.
    assert data["metageneration"] == "1"
    assert data["etag"] and data["etag"] == blob.etag  # the etag the emulator serves for the object
    assert MILLISECONDS.match(data["timeCreated"]) and MILLISECONDS.match(data["updated"])
    assert MILLISECONDS.match(headers["ce-time"])
    # The emulator's eventTime is truncated to the second; the event must not predate the object.
    created = eventarc_relay.parse_rfc3339(data["timeCreated"])
    ce_time = eventarc_relay.parse_rfc3339(headers["ce-time"])
    assert created is not None and ce_time is not None and ce_time >= created


def test_a_finalized_event_carries_the_delivery_headers_the_emulator_leaves_out(relay_rig: Rig) -> None:
    client, receiver, relay = relay_rig
    blob = client.bucket("watched").blob("served.jpg")
    blob.cache_control, blob.content_language = "public, max-age=60", "fr"
    blob.content_disposition = 'inline; filename="served.jpg"'
    blob.upload_from_string(b"\xff\xd8\xff", content_type="image/jpeg")
    plain = client.bucket("watched").blob("plain.jpg")
    plain.upload_from_string(b"\xff\xd8\xff", content_type="image/jpeg")

    wait_for(lambda: len(receiver.requests) >= 2, 20, "both deliveries")
    data = {r["body"]["name"]: r["body"] for r in receiver.requests}
    assert data["served.jpg"]["cacheControl"] == "public, max-age=60"
    assert data["served.jpg"]["contentLanguage"] == "fr"
    assert data["served.jpg"]["contentDisposition"] == 'inline; filename="served.jpg"'
    assert not set(eventarc_relay.COMPLETED_FIELDS) & set(data["plain.jpg"])  # nothing invented


def test_ce_time_is_never_before_time_created_even_with_a_truncated_event_time() -> None:
    relay = eventarc_relay.Relay(eventarc_relay.RelaySettings(target_url="http://127.0.0.1:9/", bucket="b"))
    try:
        attributes = {"eventType": "OBJECT_FINALIZE", "bucketId": "b", "objectId": "x.jpg"}
        data = {"bucket": "b", "name": "x.jpg", "generation": "7"}
        data |= {"timeCreated": "2026-01-02T03:04:05.678901Z", "updated": "2026-01-02T03:04:05.678912Z"}
        early = relay.to_cloud_event(
            "1", {**attributes, "eventTime": "2026-01-02T03:04:05Z"}, json.dumps(data).encode()
        )
        late = relay.to_cloud_event(
            "2", {**attributes, "eventTime": "2026-01-02T03:04:09.5Z"}, json.dumps(data).encode()
        )
    finally:
        relay.close()
    assert early is not None and late is not None
    assert early["time"] == "2026-01-02T03:04:05.678Z"  # the object's `updated`, to the millisecond
    assert late["time"] == "2026-01-02T03:04:09.500Z"  # a later eventTime stands
    assert early["data"]["timeCreated"] == "2026-01-02T03:04:05.678Z"
    assert early["data"]["etag"] == "CAcQAQ=="  # Google's form (generation 7, metageneration 1): no md5 here


def test_a_500_from_the_function_gives_a_redelivery_of_the_same_event(relay_rig: Rig) -> None:
    client, receiver, relay = relay_rig
    receiver.answers = [500, 503]
    client.bucket("watched").blob("retry.png").upload_from_string(b"\x89PNG\r\n\x1a\n", content_type="image/png")

    finals = wait_for(lambda: _finals(relay), 20, "a final delivery")
    assert finals[0]["outcomes"] == ["500", "503", "204"] and finals[0]["result"] == "delivered"
    ids = {r["headers"]["ce-id"] for r in receiver.requests}
    assert len(receiver.requests) == 3 and len(ids) == 1


def test_with_no_attempt_cap_a_failing_delivery_is_retried_beyond_ten_attempts(relay_rig: Rig) -> None:
    # Fast timings (FAST_RELAY) so twelve backoffs take about two seconds; the cap is production's.
    client, receiver, relay = relay_rig
    assert not relay.settings.max_attempts
    receiver.answers = [500] * 12
    client.bucket("watched").blob("stubborn.png").upload_from_string(b"\x89PNG\r\n\x1a\n", content_type="image/png")

    finals = wait_for(lambda: _finals(relay), 30, "a final delivery")
    assert finals[0]["result"] == "delivered" and finals[0]["attempts"] == 13
    assert finals[0]["outcomes"] == ["500"] * 12 + ["204"]
    assert len({r["headers"]["ce-id"] for r in receiver.requests}) == 1


def test_relay_gives_up_after_its_attempt_budget_when_one_is_set(relay_rig: Rig) -> None:
    client, receiver, relay = relay_rig
    relay.settings.max_attempts = 4  # not production's (unlimited): the option still caps attempts
    receiver.answers = [500] * 10
    client.bucket("watched").blob("poison.png").upload_from_string(b"\x89PNG\r\n\x1a\n", content_type="image/png")

    finals = wait_for(lambda: _finals(relay), 20, "a final delivery")
    assert finals[0]["result"] == "dropped" and finals[0]["attempts"] == 4
    assert finals[0]["reason"] == "max_attempts" and len(receiver.requests) == 4


def test_relay_drops_an_event_when_its_retention_ends(relay_rig: Rig) -> None:
    client, receiver, relay = relay_rig
    relay.settings.max_age_seconds = 0.5  # fast stand-in for 24 h of retention
    receiver.answers = [500] * 100
    client.bucket("watched").blob("old.png").upload_from_string(b"\x89PNG\r\n\x1a\n", content_type="image/png")

    finals = wait_for(lambda: _finals(relay), 20, "a final delivery")
    assert finals[0]["result"] == "dropped" and finals[0]["reason"] == "max_age"
    assert 2 <= finals[0]["attempts"] < 100
    assert relay.pending == 0


def test_duplicate_fault_delivers_the_same_event_twice(relay_rig: Rig) -> None:
    client, receiver, relay = relay_rig
    relay.set_faults({"duplicate_rate": 1.0})
    client.bucket("watched").blob("twice.png").upload_from_string(b"\x89PNG\r\n\x1a\n", content_type="image/png")

    finals = wait_for(lambda: _finals(relay) if len(relay.log()) >= 6 else None, 20, "two deliveries")
    assert len(finals) == 2 and finals[0]["id"] == finals[1]["id"]
    assert len(receiver.requests) == 2


def test_reorder_fault_holds_a_delivery_back_so_later_events_overtake_it(relay_rig: Rig) -> None:
    client, receiver, relay = relay_rig
    relay.set_faults({"reorder_rate": 1.0, "reorder_delay_seconds": 1.5})
    client.bucket("watched").blob("held.png").upload_from_string(b"\x89PNG\r\n\x1a\n", content_type="image/png")
    wait_for(lambda: [e for e in relay.log() if e["kind"] == "received"], 20, "the held event")
    relay.set_faults({"reorder_rate": 0.0})
    client.bucket("watched").blob("later.png").upload_from_string(b"\x89PNG\r\n\x1a\n", content_type="image/png")

    wait_for(lambda: len(receiver.requests) >= 2, 20, "both deliveries")
    assert [r["headers"]["ce-subject"] for r in receiver.requests] == ["objects/later.png", "objects/held.png"]
    held = [e for e in relay.log() if e["kind"] == "received" and e["subject"] == "objects/held.png"]
    assert held[0]["held_seconds"] == 1.5
    with pytest.raises(ValueError, match="between 0 and 1"):
        relay.set_faults({"reorder_rate": 2})


def test_a_detached_trigger_answers_the_emulator_but_delivers_nothing(make_rig: Callable[..., Rig]) -> None:
    client, receiver, relay = make_rig(deliver=False)
    blob = client.bucket("watched").blob("predates/photo.jpg")
    blob.upload_from_string(b"\xff\xd8\xff", content_type="image/jpeg")

    detached = wait_for(lambda: [e for e in relay.log() if e["kind"] == "detached"], 20, "a detached event")
    assert detached[0]["subject"] == "objects/predates/photo.jpg"
    assert int(detached[0]["generation"]) == blob.generation
    time.sleep(0.5)  # a delivery would have been immediate
    assert receiver.requests == [] and relay.pending == 0
    assert {e["kind"] for e in relay.log()} == {"detached"}


# --- delete, overwrite and archive events ---------------------------------------------------------


@pytest.fixture
def receivers() -> Iterator[Callable[..., tuple[Receiver, str]]]:
    """Make more recording receivers (for triggers of other event types); each is stopped after the test."""
    servers: list[ThreadingHTTPServer] = []

    def make(answers: list[int] | None = None) -> tuple[Receiver, str]:
        receiver = Receiver(answers=list(answers or []))
        server, url = receiver.serve()
        servers.append(server)
        return receiver, url

    yield make
    for server in servers:
        server.shutdown()


def _upload(client: storage.Client, name: str, data: bytes = b"\xff\xd8\xff") -> int:
    blob = client.bucket("watched").blob(name)
    blob.upload_from_string(data, content_type="image/jpeg")
    return int(blob.generation or 0)


def _generations(receiver: Receiver) -> list[int]:
    return [int(r["body"]["generation"]) for r in receiver.requests]


def test_a_delete_gives_a_deleted_cloud_event_at_its_own_trigger_with_the_same_retries(
    make_rig: Callable[..., Rig], receivers: Callable[..., tuple[Receiver, str]]
) -> None:
    deletes, url = receivers(answers=[500])
    client, uploads, relay = make_rig(triggers={"deleted": [url]}, **FAST_RELAY)
    generation = _upload(client, "gone/photo.jpg")
    wait_for(_received(uploads, 1), 20, "the finalized event")
    client.bucket("watched").blob("gone/photo.jpg").delete()

    wait_for(_received(deletes, 2), 20, "the deleted event, delivered again after its 500")
    headers, data = deletes.requests[0]["headers"], deletes.requests[0]["body"]
    assert headers["ce-type"] == eventarc_relay.DELETED == "google.cloud.storage.object.v1.deleted"
    assert headers["ce-subject"] == "objects/gone/photo.jpg" and headers["ce-bucket"] == "watched"
    assert headers["ce-source"] == "//storage.googleapis.com/projects/_/buckets/watched"
    assert MESSAGE_ID.match(headers["ce-id"]) and {r["headers"]["ce-id"] for r in deletes.requests} == {
        headers["ce-id"]
    }
    assert data["name"] == "gone/photo.jpg" and int(data["generation"]) == generation
    assert data["metageneration"] == "1" and data["etag"] and MILLISECONDS.match(data["timeCreated"])
    finals = wait_for(lambda: [e for e in _finals(relay) if e["type"] == eventarc_relay.DELETED], 10, "its final")
    assert finals[0]["outcomes"] == ["500", "204"] and finals[0]["target"] == url
    assert [r["headers"]["ce-type"] for r in uploads.requests] == [eventarc_relay.FINALIZED]  # on_upload: its own


def test_without_a_deleted_trigger_a_delete_is_delivered_nowhere(relay_rig: Rig) -> None:
    client, receiver, relay = relay_rig
    generation = _upload(client, "kept-elsewhere.jpg")
    wait_for(_received(receiver, 1), 20, "the finalized event")
    client.bucket("watched").blob("kept-elsewhere.jpg").delete()

    detached = wait_for(lambda: [e for e in relay.log() if e["kind"] == "detached"], 20, "the unrouted delete")
    assert detached[0]["type"] == eventarc_relay.DELETED and int(detached[0]["generation"]) == generation
    time.sleep(0.5)  # a delivery would have been immediate
    assert len(receiver.requests) == 1 and relay.pending == 0


def test_an_overwrite_deletes_the_old_generation_and_finalizes_the_new(
    make_rig: Callable[..., Rig], receivers: Callable[..., tuple[Receiver, str]]
) -> None:
    # As Cloud Storage does for a bucket without versioning: the replaced generation is deleted.
    deletes, url = receivers()
    client, uploads, _ = make_rig(triggers={eventarc_relay.DELETED: [url]}, **FAST_RELAY)
    first = _upload(client, "replaced.jpg", b"\xff\xd8\xff first")
    wait_for(_received(uploads, 1), 20, "the first finalized event")
    second = _upload(client, "replaced.jpg", b"\xff\xd8\xff second")

    wait_for(lambda: len(uploads.requests) >= 2 and deletes.requests, 20, "the overwrite's two events")
    assert _generations(uploads) == [first, second] and _generations(deletes) == [first]


def test_in_a_versioned_bucket_overwrite_and_delete_archive_the_live_generation(
    make_rig: Callable[..., Rig], receivers: Callable[..., tuple[Receiver, str]]
) -> None:
    archives, archived_url = receivers()
    deletes, deleted_url = receivers()
    client, uploads, _ = make_rig(triggers={"archived": [archived_url], "deleted": [deleted_url]}, **FAST_RELAY)
    bucket = client.bucket("watched")
    bucket.versioning_enabled = True
    bucket.patch()
    first = _upload(client, "versioned.jpg", b"\xff\xd8\xff first")
    second = _upload(client, "versioned.jpg", b"\xff\xd8\xff second")
    wait_for(_received(archives, 1), 20, "the overwrite's archived event")
    bucket.blob("versioned.jpg").delete()  # the live generation becomes noncurrent: archived, not deleted

    wait_for(_received(archives, 2), 20, "the delete's archived event")
    assert {r["headers"]["ce-type"] for r in archives.requests} == {"google.cloud.storage.object.v1.archived"}
    assert sorted(_generations(archives)) == [first, second]
    wait_for(_received(uploads, 2), 20, "both finalized events")
    time.sleep(0.5)
    assert deletes.requests == []


def test_triggers_by_type_come_from_the_command_line_and_the_stack(tmp_path: Path) -> None:
    argv = ["--grpc-port", "1", "--admin-port", "2", "--bucket", "b", "--target", "http://t/"]
    settings, _, _, _ = eventarc_relay.parse_args([*argv, "--trigger", "deleted=http://d/"])
    assert settings.triggers == {eventarc_relay.DELETED: ["http://d/"]}
    relay = eventarc_relay.Relay(settings)
    try:
        assert relay.targets(eventarc_relay.FINALIZED) == ["http://t/"]
        assert relay.targets(eventarc_relay.DELETED) == ["http://d/"]
        assert relay.targets(eventarc_relay.ARCHIVED) == []
    finally:
        relay.close()
    with pytest.raises(ValueError, match="unknown storage event type"):
        eventarc_relay.Relay(eventarc_relay.RelaySettings(target_url="http://t/", bucket="b", triggers={"gone": []}))

    options = StackOptions(directory=tmp_path)
    # Production's: deleted and archived events to on_delete, once main.py has it; none before.
    on_delete = {"deleted": "on_delete", "archived": "on_delete"} if main_defines("on_delete") else {}
    assert options.event_triggers == on_delete
    assert main_defines("on_upload") and not main_defines("on_nothing")
    command = relay_command(options, 1, 2, "http://t/", tmp_path / "log", {eventarc_relay.DELETED: "http://d/"})
    parsed, _, _, _ = eventarc_relay.parse_args(command[3:])
    assert parsed.triggers == {eventarc_relay.DELETED: ["http://d/"]} and parsed.target_url == "http://t/"
    assert "finalize,delete,archive" in storage_emulator_command(1, "b")


# --- message ids across relay processes ---------------------------------------------------------


def _start_relay_process(tmp_path: Path, target: str, name: str) -> tuple[subprocess.Popen[bytes], int, str]:
    grpc_port, admin_port = free_port(), free_port()
    log = (tmp_path / f"{name}.log").open("wb")
    command = [
        sys.executable, "-m", "offline_cloud.eventarc_relay", "--grpc-port", str(grpc_port),
        "--admin-port", str(admin_port), "--bucket", "watched", "--target", target,
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=log, stderr=log, preexec_fn=die_with_parent)
    log.close()
    admin = f"http://127.0.0.1:{admin_port}"
    wait_for(lambda: _answers_health(admin) or proc.poll() is not None, 30, f"relay {name}")
    assert proc.poll() is None, (tmp_path / f"{name}.log").read_text()
    return proc, grpc_port, admin


def _answers_health(admin: str) -> bool:
    try:
        return requests.get(admin + "/health", timeout=1).ok
    except requests.RequestException:
        return False


def _publish_finalizes(grpc_port: int, names: list[str]) -> list[str]:
    """Publish notifications as fake-gcs-server does (same RPC, attributes and data) and return
    the message ids the relay answers with."""
    messages = []
    for i, name in enumerate(names):
        generation = str(1_700_000_000_000_000 + i)
        data = {"bucket": "watched", "name": name, "generation": generation, "timeCreated": "2026-01-01T00:00:00.1Z"}
        attributes = {
            "eventType": "OBJECT_FINALIZE", "bucketId": "watched", "objectId": name,
            "objectGeneration": generation, "payloadFormat": "JSON_API_V1", "eventTime": "2026-01-01T00:00:00Z",
        }  # fmt: skip
        messages.append(PubsubMessage(data=json.dumps(data).encode(), attributes=attributes))
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        publish = channel.unary_unary(
            "/google.pubsub.v1.Publisher/Publish",
            request_serializer=PublishRequest.serialize,
            response_deserializer=PublishResponse.deserialize,
        )
        request = PublishRequest(topic=eventarc_relay.NOTIFICATION_TOPIC, messages=messages)
        response = publish(request, timeout=10)
    return list(response.message_ids)


def _received(receiver: Receiver, count: int) -> Callable[[], bool]:
    return lambda: len(receiver.requests) >= count


def test_ce_ids_are_pubsub_style_and_unique_across_relay_restarts(tmp_path: Path) -> None:
    receiver = Receiver()
    server, url = receiver.serve()
    names = [f"restart/{i}.jpg" for i in range(5)]
    issued: list[str] = []
    try:
        for run in ("first", "second"):  # the same relay, stopped and started again
            proc, grpc_port, _ = _start_relay_process(tmp_path, url, run)
            try:
                issued += _publish_finalizes(grpc_port, names)
                wait_for(_received(receiver, len(issued)), 20, f"the {run} relay's deliveries")
            finally:
                proc.terminate()
                proc.wait(10)
    finally:
        server.shutdown()
    assert len(issued) == 10 and len(set(issued)) == 10
    assert all(MESSAGE_ID.match(i) for i in issued), issued
    delivered = [r["headers"]["ce-id"] for r in receiver.requests]
    assert sorted(delivered) == sorted(issued)  # ce-id is the message id the publisher was given


def test_pubsub_emulators_in_one_process_never_share_an_id() -> None:
    # The relay's ce-ids are the message ids of the Pub/Sub emulator it listens to.
    emulators = [pubsub.Emulator() for _ in range(2)]
    ids = []
    for emulator in emulators:
        emulator.create_topic(Topic(name=eventarc_relay.NOTIFICATION_TOPIC))
        ids += emulator.publish(eventarc_relay.NOTIFICATION_TOPIC, [PubsubMessage(data=b"{}")] * 50)
    assert len(set(ids)) == 100


# --- production defaults ---------------------------------------------------------------------------


def test_relay_defaults_are_eventarcs_retry_policy() -> None:
    defaults = eventarc_relay.RelaySettings(target_url="http://t/", bucket="b")
    assert (defaults.min_backoff_seconds, defaults.max_backoff_seconds) == (10.0, 600.0)
    assert not defaults.max_attempts  # unlimited
    assert defaults.max_age_seconds == 24 * 3600
    assert defaults.deliver

    parsed, faults, _, _ = eventarc_relay.parse_args(
        ["--grpc-port", "1", "--admin-port", "2", "--bucket", "b", "--target", "http://t/"]
    )
    assert parsed == defaults and faults == {}

    options = StackOptions()
    assert (options.relay_min_backoff, options.relay_max_backoff) == (10.0, 600.0)
    assert options.relay_max_attempts == 0 and options.relay_max_age_seconds == 24 * 3600
    assert options.trigger


def test_production_backoff_doubles_from_ten_seconds_to_six_hundred() -> None:
    relay = eventarc_relay.Relay(eventarc_relay.RelaySettings(target_url="http://127.0.0.1:9/", bucket="b"))
    try:
        waits = [relay._backoff(attempt) for attempt in range(1, 12)]
    finally:
        relay.close()
    assert all(10.0 <= w <= 600.0 for w in waits)
    assert waits[0] <= 12.0 and 32.0 <= waits[2] <= 48.0 and waits[-1] >= 480.0
