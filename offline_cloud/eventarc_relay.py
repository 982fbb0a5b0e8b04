"""Eventarc, offline: receive the storage emulator's Pub/Sub notifications and deliver each as the
CloudEvent a 2nd-gen storage trigger receives, with RETRY_POLICY_RETRY redelivery.

This process runs the offline Pub/Sub emulator (`offline_cloud.pubsub`) on its gRPC port, the
PUBSUB_EMULATOR_HOST of the storage emulator and of client-library users, and (with `--rest-port`)
its REST API on another, the functions' PUBSUB_EMULATOR_HOST. The storage emulator publishes
its notifications to the notification topic (`--topic`), which the relay listens to as Eventarc's
push subscription would. Each notification becomes its CloudEvent type (`finalized`, `deleted`,
`archived`, `metadataUpdated`) and goes to the triggers of that type, each delivery on its own, as
separate Eventarc triggers: `finalized` to `--target` (on_upload), any type to the URLs given with
`--trigger TYPE=URL`; an event no trigger takes is logged as `detached`. Deliveries are POSTed in
CloudEvents binary content mode, the object's data completed as Google's events carry it (with
`--storage-url`, the delivery headers the emulator's notifications omit are read from the object
before the first attempt). Every attempt and final outcome is appended to a JSON-lines
delivery log, and an admin HTTP endpoint serves it (and takes fault settings) for tests.

By default the timing is production's: a failed delivery is retried with exponential backoff from
10 s to 600 s for 24 hours (the subscription's message retention), with no attempt cap. Tests that
need speed pass shorter timings explicitly. `--detached` answers Publish but delivers nothing, as a
bucket with no trigger deployed yet.

    python -m offline_cloud.eventarc_relay --grpc-port P [--rest-port R] --admin-port A --bucket uploads \
        --target http://127.0.0.1:F/ [--trigger deleted=http://127.0.0.1:D/] --log-file deliveries.jsonl
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import heapq
import itertools
import json
import random
import re
import secrets
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import requests
from google.pubsub_v1.types import PubsubMessage, Topic

from offline_cloud import pubsub

FINALIZED = "google.cloud.storage.object.v1.finalized"
DELETED = "google.cloud.storage.object.v1.deleted"
ARCHIVED = "google.cloud.storage.object.v1.archived"
METADATA_UPDATED = "google.cloud.storage.object.v1.metadataUpdated"
# A storage notification's eventType attribute, and the CloudEvent type Eventarc makes of it.
EVENT_TYPES = {
    "OBJECT_FINALIZE": FINALIZED,
    "OBJECT_DELETE": DELETED,
    "OBJECT_ARCHIVE": ARCHIVED,
    "OBJECT_METADATA_UPDATE": METADATA_UPDATED,
}

# The offline project, and the topic the storage emulator publishes its notifications to.
PROJECT = "offline-project"
NOTIFICATION_TOPIC_ID = "gcs-notifications"
NOTIFICATION_TOPIC = f"projects/{PROJECT}/topics/{NOTIFICATION_TOPIC_ID}"

# Production: Eventarc's Pub/Sub subscription retries with exponential backoff from 10 s to 600 s and
# keeps an undelivered message for 24 hours (its retention), however many attempts that takes.
DEFAULT_MIN_BACKOFF_SECONDS = 10.0
DEFAULT_MAX_BACKOFF_SECONDS = 600.0
DEFAULT_MAX_ATTEMPTS = 0  # 0 (or None): unlimited, as in Eventarc; a positive value caps attempts
DEFAULT_MAX_AGE_SECONDS = 24 * 3600.0


@dataclass
class RelaySettings:
    """How the relay delivers. The timing defaults are Eventarc's with RETRY_POLICY_RETRY.

    `target_url` is the `finalized` trigger's URL; `triggers` adds triggers by event type (a full
    type or its last part, e.g. `deleted`), each a list of URLs delivered to independently, as
    separate Eventarc triggers on the bucket. A type with no trigger is delivered nowhere. Every
    trigger has the same timings and faults. `max_attempts` counts the first attempt; 0 or None
    means no cap, so only `max_age_seconds` (message retention, measured from receipt) ends the
    retries. `deliver=False` detaches every trigger: notifications are answered and logged as
    `detached`, and nothing is POSTed. `topic` is the notification topic the relay listens to."""

    target_url: str
    bucket: str
    triggers: dict[str, list[str]] = field(default_factory=dict)
    topic: str = NOTIFICATION_TOPIC
    min_backoff_seconds: float = DEFAULT_MIN_BACKOFF_SECONDS
    max_backoff_seconds: float = DEFAULT_MAX_BACKOFF_SECONDS
    max_attempts: int | None = DEFAULT_MAX_ATTEMPTS
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS
    timeout_seconds: float = 60.0
    workers: int = 8
    log_file: Path | None = None
    deliver: bool = True
    # The storage emulator's URL: the object fields its notifications leave out (COMPLETED_FIELDS)
    # are read from it before an event's first attempt. Empty: events carry what was notified.
    storage_url: str = ""


@dataclass
class Faults:
    """`duplicate_rate`: share of events delivered twice (same id), as at-least-once delivery allows.
    `reorder_rate`: share of deliveries held back `reorder_delay_seconds` before their first
    attempt, so events published after them overtake them (Eventarc promises no order)."""

    duplicate_rate: float = 0.0
    reorder_rate: float = 0.0
    reorder_delay_seconds: float = 1.0
    seed: int | None = None


@dataclass
class Delivery:
    event: dict[str, Any]
    body: bytes
    target: str  # the trigger's URL
    received_at: float  # wall clock, for the log
    received_monotonic: float  # for the age limit, immune to clock steps
    attempts: int = 0
    outcomes: list[str] = field(default_factory=list)


class Relay:
    def __init__(self, settings: RelaySettings) -> None:
        for name in settings.triggers:
            event_type(name)  # an unknown type is a mistake, not a trigger that never fires
        self.settings = settings
        self.faults = Faults()
        self._random = random.Random()
        self._session = requests.Session()
        self._pool = futures.ThreadPoolExecutor(max_workers=settings.workers)
        self._log_lock = threading.Lock()
        self._log: list[dict[str, Any]] = []
        self._pending_lock = threading.Lock()
        self.pending = 0
        # Retries wait in a heap, not in a sleeping pool thread: with production backoff a failing
        # event waits up to 10 minutes between attempts for 24 hours, and must not hold a worker
        # (Pub/Sub keeps delivering other messages meanwhile).
        self._retries: list[tuple[float, int, Delivery]] = []
        self._retry_order = itertools.count()
        self._retry_wakeup = threading.Condition()
        self._closed = False
        threading.Thread(target=self._retry_loop, name="relay-retries", daemon=True).start()

    def close(self) -> None:
        """Stop scheduling retries and wait for attempts in flight (in-process users, e.g. tests)."""
        with self._retry_wakeup:
            self._closed = True
            self._retry_wakeup.notify_all()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # --- Pub/Sub side ----------------------------------------------------------------------------

    def attach(self, emulator: pubsub.Emulator) -> None:
        """Listen to the notification topic of `emulator`, creating the topic if it is missing."""
        with contextlib.suppress(pubsub.PubSubError):  # it exists already
            emulator.create_topic(Topic(name=self.settings.topic))
        emulator.listen(self.settings.topic, self.notify)

    def notify(self, message: PubsubMessage) -> None:
        """One notification, as Pub/Sub pushes it to Eventarc: its event goes to each trigger of
        its type. The ce-id is the message id."""
        event = self.to_cloud_event(message.message_id, dict(message.attributes), bytes(message.data))
        if event is None:
            return
        targets = self.targets(event["type"]) if self.settings.deliver else []
        if not targets:
            self._write(
                {
                    "kind": "detached",
                    "id": event["id"],
                    "subject": event["subject"],
                    "type": event["type"],
                    "source": event["source"],
                    "generation": event["data"].get("generation"),
                }
            )
        for target in targets:
            copies = 2 if self._random.random() < self.faults.duplicate_rate else 1
            for copy in range(copies):
                held = self._random.random() < self.faults.reorder_rate
                delay = self.faults.reorder_delay_seconds if held else 0.0
                self.submit(event, duplicate=copy > 0, target=target, delay=delay)

    def targets(self, type_: str) -> list[str]:
        """The URLs of the triggers for events of `type_`, in order: on_upload's first for finalized."""
        s = self.settings
        urls = [s.target_url] if type_ == FINALIZED else []
        return urls + [url for name, more in s.triggers.items() if event_type(name) == type_ for url in more]

    def to_cloud_event(self, message_id: str, attributes: dict[str, str], data: bytes) -> dict[str, Any] | None:
        event_type = EVENT_TYPES.get(attributes.get("eventType", ""))
        bucket = attributes.get("bucketId", "")
        if event_type is None or bucket != self.settings.bucket:
            return None
        resource = storage_object(json.loads(data or b"{}"))
        when = event_time(attributes.get("eventTime"), resource)
        return storage_event(message_id, bucket, attributes.get("objectId", ""), resource, when, event_type)

    # --- delivery side ---------------------------------------------------------------------------

    def submit(
        self, event: dict[str, Any], duplicate: bool = False, target: str | None = None, delay: float = 0.0
    ) -> None:
        """Deliver `event` to `target` (the finalized trigger unless given) until it is taken, the
        first attempt `delay` seconds from now (a held-back delivery: the reorder fault)."""
        target = target or self.settings.target_url
        body = json.dumps(event["data"]).encode()
        delivery = Delivery(
            event=event, body=body, target=target, received_at=time.time(), received_monotonic=time.monotonic()
        )
        with self._pending_lock:
            self.pending += 1
        received = {"kind": "received", "id": event["id"], "subject": event["subject"], "duplicate": duplicate}
        if delay > 0:
            received["held_seconds"] = delay
        self._write({**received, "type": event["type"], "target": target})
        if delay > 0:
            self._schedule(delivery, time.monotonic() + delay)
        else:
            self._pool.submit(self._attempt_logged, delivery)

    def _attempt(self, delivery: Delivery) -> None:
        """One POST; then the final outcome, or the next attempt put on the retry heap."""
        s = self.settings
        event = delivery.event
        if not delivery.attempts and s.storage_url:
            delivery.body = json.dumps(self._completed(event["data"], event["type"])).encode()
        delivery.attempts += 1
        began = time.monotonic()
        try:
            response = self._session.post(
                delivery.target, data=delivery.body, headers=binary_headers(event), timeout=s.timeout_seconds
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
        if s.max_attempts and 0 < s.max_attempts <= delivery.attempts:
            return self._final(delivery, "dropped", "max_attempts")
        backoff = self._backoff(delivery.attempts)
        age = time.monotonic() - delivery.received_monotonic
        if age + backoff >= s.max_age_seconds:
            # Retention ends before the next attempt would be made: Pub/Sub discards the message.
            return self._final(delivery, "dropped", "max_age")
        self._schedule(delivery, time.monotonic() + backoff)

    def _completed(self, data: dict[str, Any], type_: str) -> dict[str, Any]:
        """`data` with the fields of COMPLETED_FIELDS the notification left out, read from the
        storage emulator while that generation is live (after it, the event stays as notified).
        Read here, in a delivery worker, never while the emulator waits for its Publish."""
        missing = [key for key in COMPLETED_FIELDS if key not in data]
        bucket, name, generation = data.get("bucket"), data.get("name"), data.get("generation")
        if type_ not in (FINALIZED, METADATA_UPDATED) or not missing or not (bucket and name and generation):
            return data
        url = f"{self.settings.storage_url}/storage/v1/b/{quote(str(bucket), safe='')}/o/{quote(str(name), safe='')}"
        try:
            response = self._session.get(url, params={"generation": generation}, timeout=5)
            found = response.json() if response.status_code == 200 else {}
        except (requests.RequestException, ValueError):
            found = {}
        if not isinstance(found, dict) or str(found.get("generation")) != str(generation):
            return data
        return {**data, **{key: found[key] for key in missing if key in found}}

    def _backoff(self, attempts: int) -> float:
        """Exponential from the minimum, with jitter, kept within [minimum, maximum]."""
        s = self.settings
        exponential = s.min_backoff_seconds * 2.0 ** min(attempts - 1, 62)  # the cap keeps the float finite
        jittered = min(s.max_backoff_seconds, exponential) * self._random.uniform(0.8, 1.2)
        return max(s.min_backoff_seconds, min(s.max_backoff_seconds, jittered))

    def _schedule(self, delivery: Delivery, due: float) -> None:
        with self._retry_wakeup:
            heapq.heappush(self._retries, (due, next(self._retry_order), delivery))
            self._retry_wakeup.notify()

    def _retry_loop(self) -> None:
        with self._retry_wakeup:
            while not self._closed:
                now = time.monotonic()
                while self._retries and self._retries[0][0] <= now:
                    _, _, delivery = heapq.heappop(self._retries)
                    with contextlib.suppress(RuntimeError):  # the pool was shut down by close()
                        self._pool.submit(self._attempt_logged, delivery)
                timeout = self._retries[0][0] - now if self._retries else None
                self._retry_wakeup.wait(timeout)

    def _attempt_logged(self, delivery: Delivery) -> None:
        try:
            self._attempt(delivery)
        except Exception as exc:  # a pool thread's exception would vanish; record the loss instead
            print(f"eventarc relay: delivery of {delivery.event['id']} crashed: {exc!r}", file=sys.stderr)
            self._final(delivery, f"crashed: {type(exc).__name__}")

    def _final(self, delivery: Delivery, result: str, reason: str | None = None) -> None:
        with self._pending_lock:
            self.pending -= 1
        entry: dict[str, Any] = {
            "kind": "final",
            "id": delivery.event["id"],
            "subject": delivery.event["subject"],
            "type": delivery.event["type"],
            "source": delivery.event["source"],
            "target": delivery.target,
            "attempts": delivery.attempts,
            "outcomes": delivery.outcomes,
            "result": result,
        }
        if reason is not None:
            entry["reason"] = reason  # why a dropped event stopped: max_attempts or max_age
        self._write(entry)

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
            if key.endswith(("_rate", "_seconds")) and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
            ):
                raise ValueError(f"{key} must be a number, not {value!r}")
            if key.endswith("_rate") and value > 1:
                raise ValueError(f"{key} must be between 0 and 1")
            setattr(self.faults, key, value)
        if self.faults.seed is not None:
            self._random.seed(self.faults.seed)


def serve_grpc(relay: Relay, port: int, emulator: pubsub.Emulator | None = None) -> grpc.Server:
    """The Pub/Sub emulator (a new one unless given) on `port`, with `relay` listening to its
    notification topic."""
    emulator = emulator or pubsub.Emulator()
    relay.attach(emulator)
    return pubsub.serve(emulator, port)


def serve_admin(relay: Relay, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                return self._json(200, {"ok": True})
            if self.path == "/deliveries":
                payload = {"pending": relay.pending, "trigger_attached": relay.settings.deliver, "log": relay.log()}
                return self._json(200, payload)
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
                # Deliver an event as given to the triggers of its type (tests use it to redeliver a
                # recorded event), even when detached: it is an explicit request, not a notification.
                targets = relay.targets(payload.get("type", FINALIZED))
                if not targets:
                    return self._json(409, {"error": f"no trigger takes {payload.get('type')!r}"})
                for target in targets:
                    relay.submit(payload, target=target)
                return self._json(202, {"accepted": payload.get("id"), "targets": targets})
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
    """A storage CloudEvent with the attributes Eventarc gives a 2nd-gen storage trigger, including
    its `bucket` extension attribute."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "type": event_type,
        "source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
        "subject": f"objects/{name}",
        "time": time_,
        "bucket": bucket,
        "datacontenttype": "application/json",
        "data": data,
    }


_TIME_FIELDS = ("timeCreated", "updated", "timeStorageClassUpdated", "timeDeleted")
# Object fields Google's storage events carry (they are the object resource) and fake-gcs-server's
# notifications leave out: the delivery headers an object is served with.
COMPLETED_FIELDS = ("cacheControl", "contentDisposition", "contentLanguage", "contentEncoding", "customTime")


def storage_object(resource: dict[str, Any]) -> dict[str, Any]:
    """The notification's object resource completed as Google sends it in a storage event.

    fake-gcs-server's notifications leave out `metageneration` and `etag` and give times to the
    microsecond; Google's object resource has both fields and times to the millisecond."""
    data = dict(resource)
    # A generation's metadata starts at metageneration 1, and the emulator never bumps it.
    data.setdefault("metageneration", "1")
    if "etag" not in data:
        # The emulator's own object GET answers with etag = md5Hash, so the event agrees with what the
        # function reads back; without an md5, Google's form (its generation and metageneration).
        data["etag"] = data.get("md5Hash") or _google_etag(data.get("generation"), data["metageneration"])
    for key in _TIME_FIELDS:
        parsed = parse_rfc3339(data.get(key))
        if parsed is not None:
            data[key] = format_rfc3339(parsed)
    # The emulator writes ids as bucket/name#generation; Google writes bucket/name/generation.
    bucket, name, generation = data.get("bucket"), data.get("name"), data.get("generation")
    if bucket and name and generation and data.get("id") == f"{bucket}/{name}#{generation}":
        data["id"] = f"{bucket}/{name}/{generation}"
    return data


def _google_etag(generation: Any, metageneration: Any) -> str:
    """Google's object etag: base64 of protobuf varint fields 1 (generation) and 2 (metageneration)."""
    try:
        fields = ((1, int(generation)), (2, int(metageneration)))
    except (TypeError, ValueError):
        return base64.b64encode(secrets.token_bytes(8)).decode()
    out = bytearray()
    for number, value in fields:
        out.append(number << 3)  # wire type 0: varint
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                break
    return base64.b64encode(bytes(out)).decode()


def event_time(notified: str | None, data: dict[str, Any]) -> str:
    """`ce-time`: the latest of the notification's eventTime and the object's timeCreated/updated.

    The emulator's eventTime is truncated to the second, so alone it can precede the object's
    creation; an event about a change never predates the change."""
    candidates = [parse_rfc3339(value) for value in (notified, data.get("timeCreated"), data.get("updated"))]
    known = [c for c in candidates if c is not None]
    return format_rfc3339(max(known) if known else datetime.now(UTC))


_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", re.IGNORECASE)


def parse_rfc3339(value: Any) -> datetime | None:
    """An RFC 3339 timestamp with any number of fractional digits (Go writes up to 9), or None."""
    match = _RFC3339.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    zone = "+00:00" if zone.upper() == "Z" else zone
    micros = (fraction or "").ljust(6, "0")[:6]
    try:
        return datetime.fromisoformat(f"{whole}.{micros}{zone}").astimezone(UTC)
    except ValueError:
        return None


def format_rfc3339(when: datetime) -> str:
    """UTC with millisecond precision and a Z, as Google writes storage times."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def binary_headers(event: dict[str, Any]) -> dict[str, str]:
    """HTTP headers of `event` in binary content mode: `ce-` attributes, and the data's type."""
    headers = {f"ce-{k}": _header_value(str(v)) for k, v in event.items() if k not in ("data", "datacontenttype")}
    headers["Content-Type"] = event["datacontenttype"]
    return headers


def _header_value(value: str) -> str:
    """Percent-encode as the CloudEvents HTTP binding requires: UTF-8, and every byte outside
    printable ASCII, plus space, `"` and `%`, as %XX (object names may hold any character)."""
    return "".join(chr(b) if 0x21 <= b <= 0x7E and b not in (0x22, 0x25) else f"%{b:02X}" for b in value.encode())


def event_type(name: str) -> str:
    """The storage CloudEvent type named by `name`: the full type, or its last part (`deleted`)."""
    for known in EVENT_TYPES.values():
        if name in (known, known.rsplit(".", 1)[1]):
            return known
    raise ValueError(f"unknown storage event type {name!r} (known: {', '.join(EVENT_TYPES.values())})")


def rfc3339(ts: float) -> str:
    return format_rfc3339(datetime.fromtimestamp(ts, UTC))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grpc-port", type=int, required=True, help="the Pub/Sub emulator's gRPC API")
    parser.add_argument("--rest-port", type=int, default=0, help="the Pub/Sub emulator's REST API (default: none)")
    parser.add_argument("--admin-port", type=int, required=True)
    parser.add_argument("--bucket", required=True, help="deliver events of this bucket only")
    parser.add_argument("--target", required=True, help="the finalized trigger's URL (on_upload)")
    parser.add_argument(
        "--trigger",
        action="append",
        default=[],
        metavar="TYPE=URL",
        help="another trigger: events of TYPE (e.g. deleted, or the full type) to URL (repeatable)",
    )
    parser.add_argument("--topic", default=NOTIFICATION_TOPIC, help="the notification topic (default: %(default)s)")
    parser.add_argument(
        "--min-backoff", type=float, default=DEFAULT_MIN_BACKOFF_SECONDS, help="seconds (default: %(default)s)"
    )
    parser.add_argument(
        "--max-backoff", type=float, default=DEFAULT_MAX_BACKOFF_SECONDS, help="seconds (default: %(default)s)"
    )
    parser.add_argument(
        "--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS, help="0: unlimited, as Eventarc (default)"
    )
    parser.add_argument(
        "--max-age", type=float, default=DEFAULT_MAX_AGE_SECONDS, help="seconds of retention (default: 24 h)"
    )
    parser.add_argument("--log-file", type=Path)
    parser.add_argument(
        "--storage-url", default="", help="the storage emulator, to complete the object fields its notifications omit"
    )
    parser.add_argument("--faults", default="{}", help='JSON, e.g. {"duplicate_rate": 0.1}')
    parser.add_argument(
        "--detached", action="store_true", help="no trigger: answer Publish, log each event, deliver nothing"
    )
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[RelaySettings, dict[str, Any], int, int]:
    """Settings, faults, gRPC port and admin port from the command line (`--rest-port`: rest_port)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    triggers: dict[str, list[str]] = {}
    for item in args.trigger:
        name, sep, url = item.partition("=")
        if not sep or not url:
            parser.error(f"--trigger takes TYPE=URL, not {item!r}")
        try:
            triggers.setdefault(event_type(name), []).append(url)
        except ValueError as exc:
            parser.error(str(exc))
    settings = RelaySettings(
        target_url=args.target,
        bucket=args.bucket,
        triggers=triggers,
        topic=args.topic,
        min_backoff_seconds=args.min_backoff,
        max_backoff_seconds=args.max_backoff,
        max_attempts=args.max_attempts,
        max_age_seconds=args.max_age,
        log_file=args.log_file,
        deliver=not args.detached,
        storage_url=args.storage_url,
    )
    return settings, json.loads(args.faults), args.grpc_port, args.admin_port


def rest_port_of(argv: list[str] | None = None) -> int:
    """The `--rest-port` of the command line: 0 when none is given (no REST API)."""
    port: int = build_parser().parse_args(argv).rest_port
    return port


def main(argv: list[str] | None = None) -> None:
    settings, faults, grpc_port, admin_port = parse_args(argv)
    rest_port = rest_port_of(argv)
    relay = Relay(settings)
    relay.set_faults(faults)
    emulator = pubsub.Emulator()
    grpc_server = serve_grpc(relay, grpc_port, emulator)
    rest = ""
    if rest_port:
        pubsub.serve_rest(emulator, rest_port)
        rest = f", rest 127.0.0.1:{rest_port}"
    serve_admin(relay, admin_port)
    routes = {t: relay.targets(t) for t in EVENT_TYPES.values() if relay.targets(t)}
    mode = f"delivering {routes}" if settings.deliver else "detached (delivering nothing)"
    print(
        f"eventarc relay: pubsub grpc 127.0.0.1:{grpc_port}{rest}, admin 127.0.0.1:{admin_port}, {mode}",
        file=sys.stderr,
    )
    with contextlib.suppress(KeyboardInterrupt):
        grpc_server.wait_for_termination()


if __name__ == "__main__":
    main()
