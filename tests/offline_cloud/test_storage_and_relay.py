"""The storage emulator and the Eventarc relay, through their real wire protocols."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from google.api_core.exceptions import PreconditionFailed
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from offline_cloud import eventarc_relay
from offline_cloud.stack import _create_buckets, die_with_parent, free_port, storage_emulator_command
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


@pytest.fixture
def relay_rig(tmp_path: Path) -> Iterator[tuple[storage.Client, Receiver, eventarc_relay.Relay]]:
    """The emulator publishing to an in-process relay that delivers to a recording receiver."""
    receiver = Receiver()
    server, url = receiver.serve()
    relay = eventarc_relay.Relay(
        eventarc_relay.RelaySettings(target_url=url, bucket="watched", min_backoff_seconds=0.1, max_attempts=4)
    )
    grpc_port, gcs_port = free_port(), free_port()
    grpc_server = eventarc_relay.serve_grpc(relay, grpc_port)
    log = (tmp_path / "gcs.log").open("wb")
    env = {**os.environ, "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{grpc_port}"}
    command = storage_emulator_command(gcs_port, "watched")
    gcs = subprocess.Popen(command, stdout=log, stderr=log, env=env, preexec_fn=die_with_parent)
    try:
        gcs_url = f"http://127.0.0.1:{gcs_port}"
        wait_for(lambda: _answers(gcs_url) or gcs.poll() is not None, 30, "the storage emulator")
        assert gcs.poll() is None, (tmp_path / "gcs.log").read_text()
        _create_buckets(gcs_url, ("watched", "other"))
        client = storage.Client(
            project="p", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs_url}
        )
        yield client, receiver, relay
    finally:
        gcs.terminate()
        gcs.wait(10)
        grpc_server.stop(0)
        server.shutdown()
        log.close()


def _answers(url: str) -> bool:
    try:
        requests.get(url + "/storage/v1/b", timeout=1)
        return True
    except requests.RequestException:
        return False


def test_one_upload_gives_exactly_one_cloud_event_shaped_like_eventarcs(relay_rig) -> None:  # type: ignore[no-untyped-def]
    client, receiver, relay = relay_rig
    blob = client.bucket("watched").blob("dir/photo.jpg")
    blob.upload_from_string(b"\xff\xd8\xff" + b"0" * 100, content_type="image/jpeg")
    client.bucket("other").blob("elsewhere.jpg").upload_from_string(b"x", content_type="image/jpeg")

    finals = wait_for(lambda: [e for e in relay.log() if e["kind"] == "final"], 20, "a delivery")
    assert len(receiver.requests) == 1 and len(finals) == 1 and finals[0]["result"] == "delivered"
    headers, data = receiver.requests[0]["headers"], receiver.requests[0]["body"]
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-type"] == "google.cloud.storage.object.v1.finalized"
    assert headers["ce-source"] == "//storage.googleapis.com/projects/_/buckets/watched"
    assert headers["ce-subject"] == "objects/dir/photo.jpg"
    assert headers["ce-id"] and headers["ce-time"].endswith("Z")
    assert headers["Content-Type"] == "application/json"
    assert data["bucket"] == "watched" and data["name"] == "dir/photo.jpg"
    assert int(data["generation"]) == blob.generation and int(data["size"]) == 103
    assert data["contentType"] == "image/jpeg"


def test_a_500_from_the_function_gives_a_redelivery_of_the_same_event(relay_rig) -> None:  # type: ignore[no-untyped-def]
    client, receiver, relay = relay_rig
    receiver.answers = [500, 503]
    client.bucket("watched").blob("retry.png").upload_from_string(b"\x89PNG\r\n\x1a\n", content_type="image/png")

    finals = wait_for(lambda: [e for e in relay.log() if e["kind"] == "final"], 20, "a final delivery")
    assert finals[0]["outcomes"] == ["500", "503", "204"] and finals[0]["result"] == "delivered"
    ids = {r["headers"]["ce-id"] for r in receiver.requests}
    assert len(receiver.requests) == 3 and len(ids) == 1


def test_relay_gives_up_after_its_attempt_budget(relay_rig) -> None:  # type: ignore[no-untyped-def]
    client, receiver, relay = relay_rig
    receiver.answers = [500] * 10
    client.bucket("watched").blob("poison.png").upload_from_string(b"\x89PNG\r\n\x1a\n", content_type="image/png")

    finals = wait_for(lambda: [e for e in relay.log() if e["kind"] == "final"], 20, "a final delivery")
    assert finals[0]["result"] == "dropped" and finals[0]["attempts"] == 4


def test_duplicate_fault_delivers_the_same_event_twice(relay_rig) -> None:  # type: ignore[no-untyped-def]
    client, receiver, relay = relay_rig
    relay.set_faults({"duplicate_rate": 1.0})
    client.bucket("watched").blob("twice.png").upload_from_string(b"\x89PNG\r\n\x1a\n", content_type="image/png")

    finals = wait_for(
        lambda: [e for e in relay.log() if e["kind"] == "final"] if len(relay.log()) >= 6 else None,
        20,
        "two deliveries",
    )
    assert len(finals) == 2 and finals[0]["id"] == finals[1]["id"]
    assert len(receiver.requests) == 2
