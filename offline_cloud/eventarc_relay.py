"""Eventarc, offline: receive the storage emulator's Pub/Sub notifications and deliver each
finalize as the CloudEvent a 2nd-gen storage trigger receives, with RETRY_POLICY_RETRY redelivery.

The emulator publishes over gRPC (`google.pubsub.v1.Publisher/Publish`, to PUBSUB_EMULATOR_HOST);
this process answers that RPC itself, since no Pub/Sub emulator installs offline. Deliveries are
POSTed in CloudEvents binary content mode. Every attempt and final outcome is appended to a JSON-lines
delivery log, and an admin HTTP endpoint serves it (and takes fault settings) for tests.

    python -m offline_cloud.eventarc_relay --grpc-port P --admin-port A --bucket uploads \
        --target http://127.0.0.1:F/ --log-file deliveries.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import random
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import requests
from google.pubsub_v1.types import PublishRequest, PublishResponse, Topic

FINALIZED = "google.cloud.storage.object.v1.finalized"
EVENT_TYPES = {"OBJECT_FINALIZE": FINALIZED}


@dataclass
class RelaySettings:
    target_url: str
    bucket: str
    min_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    max_attempts: int = 10
    max_age_seconds: float = 24 * 3600.0
    timeout_seconds: float = 60.0
    workers: int = 8
    log_file: Path | None = None


@dataclass
class Faults:
    """`duplicate_rate`: share of events delivered twice (same id), as at-least-once delivery allows."""

    duplicate_rate: float = 0.0
    seed: int | None = None


@dataclass
class Delivery:
    event: dict[str, Any]
    body: bytes
    received_at: float
    attempts: int = 0
    outcomes: list[str] = field(default_factory=list)


class Relay:
    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self.faults = Faults()
        self._random = random.Random()
        self._session = requests.Session()
        self._pool = futures.ThreadPoolExecutor(max_workers=settings.workers)
        self._log_lock = threading.Lock()
        self._log: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self.pending = 0

    # --- Pub/Sub side ----------------------------------------------------------------------------

    def publish(self, request: PublishRequest, context: grpc.ServicerContext) -> PublishResponse:
        ids = []
        for message in request.messages:
            message_id = str(next(self._ids))
            ids.append(message_id)
            attributes = dict(message.attributes)
            event = self.to_cloud_event(message_id, attributes, bytes(message.data))
            if event is None:
                continue
            copies = 2 if self._random.random() < self.faults.duplicate_rate else 1
            for copy in range(copies):
                self.submit(event, duplicate=copy > 0)
        return PublishResponse(message_ids=ids)

    def to_cloud_event(self, message_id: str, attributes: dict[str, str], data: bytes) -> dict[str, Any] | None:
        event_type = EVENT_TYPES.get(attributes.get("eventType", ""))
        bucket = attributes.get("bucketId", "")
        if event_type is None or bucket != self.settings.bucket:
            return None
        payload = json.loads(data or b"{}")
        when = attributes.get("eventTime") or rfc3339(time.time())
        return storage_event(message_id, bucket, attributes.get("objectId", ""), payload, when, event_type)

    # --- delivery side ---------------------------------------------------------------------------

    def submit(self, event: dict[str, Any], duplicate: bool = False) -> None:
        body = json.dumps(event["data"]).encode()
        delivery = Delivery(event=event, body=body, received_at=time.time())
        self.pending += 1
        self._write({"kind": "received", "id": event["id"], "subject": event["subject"], "duplicate": duplicate})
        self._pool.submit(self._deliver_logged, delivery)

    def _deliver(self, delivery: Delivery) -> None:
        s = self.settings
        event = delivery.event
        headers = binary_headers(event)
        try:
            while True:
                delivery.attempts += 1
                began = time.monotonic()
                try:
                    response = self._session.post(
                        s.target_url, data=delivery.body, headers=headers, timeout=s.timeout_seconds
                    )
                    outcome = str(response.status_code)
                    ok = 200 <= response.status_code < 300
                except requests.RequestException as exc:
                    outcome, ok = type(exc).__name__, False
                # The trigger's run time as its caller sees it (what the benchmarks bill per attempt).
                duration = round(time.monotonic() - began, 6)
                delivery.outcomes.append(outcome)
                self._write(
                    {
                        "kind": "attempt",
                        "id": event["id"],
                        "attempt": delivery.attempts,
                        "outcome": outcome,
                        "duration_seconds": duration,
                    }
                )
                if ok:
                    return self._final(delivery, "delivered")
                age = time.time() - delivery.received_at
                if delivery.attempts >= s.max_attempts or age >= s.max_age_seconds:
                    return self._final(delivery, "dropped")
                backoff = min(s.max_backoff_seconds, s.min_backoff_seconds * 2 ** (delivery.attempts - 1))
                time.sleep(backoff * self._random.uniform(0.8, 1.2))
        finally:
            self.pending -= 1

    def _deliver_logged(self, delivery: Delivery) -> None:
        try:
            self._deliver(delivery)
        except Exception as exc:  # a pool thread's exception would vanish; record the loss instead
            print(f"eventarc relay: delivery of {delivery.event['id']} crashed: {exc!r}", file=sys.stderr)
            self._final(delivery, f"crashed: {type(exc).__name__}")

    def _final(self, delivery: Delivery, result: str) -> None:
        self._write(
            {
                "kind": "final",
                "id": delivery.event["id"],
                "subject": delivery.event["subject"],
                "type": delivery.event["type"],
                "source": delivery.event["source"],
                "attempts": delivery.attempts,
                "outcomes": delivery.outcomes,
                "result": result,
            }
        )

    def _write(self, entry: dict[str, Any]) -> None:
        entry = {"at": time.time(), **entry}
        with self._log_lock:
            self._log.append(entry)
            if self.settings.log_file is not None:
                with self.settings.log_file.open("a") as f:
                    f.write(json.dumps(entry) + "\n")

    def log(self) -> list[dict[str, Any]]:
        with self._log_lock:
            return list(self._log)

    def set_faults(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if not hasattr(self.faults, key):
                raise ValueError(f"unknown fault {key!r}")
            setattr(self.faults, key, value)
        if self.faults.seed is not None:
            self._random.seed(self.faults.seed)


def serve_grpc(relay: Relay, port: int) -> grpc.Server:
    def get_topic(request: Any, context: grpc.ServicerContext) -> Topic:
        return Topic(name=getattr(request, "topic", ""))

    handler = grpc.method_handlers_generic_handler(
        "google.pubsub.v1.Publisher",
        {
            "Publish": grpc.unary_unary_rpc_method_handler(
                relay.publish,
                request_deserializer=PublishRequest.deserialize,
                response_serializer=PublishResponse.serialize,
            ),
            "CreateTopic": grpc.unary_unary_rpc_method_handler(
                lambda request, context: request, Topic.deserialize, Topic.serialize
            ),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def serve_admin(relay: Relay, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                return self._json(200, {"ok": True})
            if self.path == "/deliveries":
                return self._json(200, {"pending": relay.pending, "log": relay.log()})
            if self.path == "/faults":
                return self._json(200, vars(relay.faults))
            return self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                payload = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return self._json(400, {"error": "body is not JSON"})
            if self.path == "/faults":
                try:
                    relay.set_faults(payload)
                except ValueError as exc:
                    return self._json(400, {"error": str(exc)})
                return self._json(200, vars(relay.faults))
            if self.path == "/events":
                # Deliver an event as given (tests use it to redeliver a recorded event).
                relay.submit(payload)
                return self._json(202, {"accepted": payload.get("id")})
            return self._json(404, {"error": "not found"})

        def _json(self, status: int, payload: Any) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def storage_event(
    event_id: str, bucket: str, name: str, data: dict[str, Any], time_: str, event_type: str = FINALIZED
) -> dict[str, Any]:
    """A storage CloudEvent with the attributes Eventarc gives a 2nd-gen storage trigger."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "type": event_type,
        "source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
        "subject": f"objects/{name}",
        "time": time_,
        "datacontenttype": "application/json",
        "data": data,
    }


def binary_headers(event: dict[str, Any]) -> dict[str, str]:
    """HTTP headers of `event` in binary content mode: `ce-` attributes, and the data's type."""
    headers = {f"ce-{k}": _header_value(str(v)) for k, v in event.items() if k not in ("data", "datacontenttype")}
    headers["Content-Type"] = event["datacontenttype"]
    return headers


def _header_value(value: str) -> str:
    """Percent-encode as the CloudEvents HTTP binding requires: UTF-8, and every byte outside
    printable ASCII, plus space, `"` and `%`, as %XX (object names may hold any character)."""
    return "".join(chr(b) if 0x21 <= b <= 0x7E and b not in (0x22, 0x25) else f"%{b:02X}" for b in value.encode())


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--admin-port", type=int, required=True)
    parser.add_argument("--bucket", required=True, help="deliver finalize events of this bucket only")
    parser.add_argument("--target", required=True, help="the trigger function's URL")
    parser.add_argument("--min-backoff", type=float, default=1.0)
    parser.add_argument("--max-backoff", type=float, default=60.0)
    parser.add_argument("--max-attempts", type=int, default=10)
    parser.add_argument("--max-age", type=float, default=24 * 3600.0)
    parser.add_argument("--log-file", type=Path)
    parser.add_argument("--faults", default="{}", help='JSON, e.g. {"duplicate_rate": 0.1}')
    args = parser.parse_args(argv)
    relay = Relay(
        RelaySettings(
            target_url=args.target,
            bucket=args.bucket,
            min_backoff_seconds=args.min_backoff,
            max_backoff_seconds=args.max_backoff,
            max_attempts=args.max_attempts,
            max_age_seconds=args.max_age,
            log_file=args.log_file,
        )
    )
    relay.set_faults(json.loads(args.faults))
    grpc_server = serve_grpc(relay, args.grpc_port)
    serve_admin(relay, args.admin_port)
    print(f"eventarc relay: pubsub grpc 127.0.0.1:{args.grpc_port}, admin 127.0.0.1:{args.admin_port}", file=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        grpc_server.wait_for_termination()


if __name__ == "__main__":
    main()
