"""Pub/Sub, offline: a small emulator of the Pub/Sub v1 gRPC API, in memory.

The unmodified `google-cloud-pubsub` clients work against it (PUBSUB_EMULATOR_HOST=127.0.0.1:P, as
with Google's emulator): topics (create, get, publish) and pull subscriptions (create, get, delete,
Pull, StreamingPull for `subscribe()`, Acknowledge, ModifyAckDeadline). Delivery is at least once:
a message pulled and not acknowledged within its ack deadline is delivered again, with a new ack id;
a deadline of 0 (a nack) makes it available at once. A subscription receives the messages published
after it was created, and keeps each until it is acknowledged.

No Pub/Sub emulator installs from the package registries here (Google's is a Java program shipped
with the gcloud SDK), hence this one. What it leaves out is refused, not ignored: push
subscriptions, filters, dead-letter and retry policies, ordering and exactly-once delivery answer
UNIMPLEMENTED. In-process listeners (`Emulator.listen`) receive every message published to a topic
as it is published; the Eventarc relay is one, standing for Eventarc's push subscription.

Publishers that avoid the client library (the pipeline's functions, which publish with plain
requests rather than pay google-cloud-pubsub's imports) use Pub/Sub's REST API instead: `serve_rest`
answers it over HTTP/1.1 on a port of its own (one port cannot serve gRPC and HTTP/1.1 both) with
the same emulator behind it, so a message published over REST reaches the gRPC subscribers, and the
same refusals as Google's REST API: `PUT /v1/{topic}` (create), `GET /v1/{topic}`, and
`POST /v1/{topic}:publish` with `{"messages": [{"data": <base64>, "attributes": {...}}]}`, answered
`{"messageIds": [...]}`. Errors are Google's JSON error body (`{"error": {"code", "message",
"status"}}`): 404 for a missing topic, 400 for bad base64, no messages or an empty message, 409 for a
topic that exists. No credentials, as Google's emulators.

    python -m offline_cloud.pubsub --port P [--rest-port R] [--topic projects/PROJECT/topics/NAME ...]
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import itertools
import json
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import grpc
from google.protobuf import duration_pb2, empty_pb2, timestamp_pb2
from google.pubsub_v1.types import (
    AcknowledgeRequest,
    DeleteSubscriptionRequest,
    GetSubscriptionRequest,
    GetTopicRequest,
    ModifyAckDeadlineRequest,
    PublishRequest,
    PublishResponse,
    PubsubMessage,
    PullRequest,
    PullResponse,
    ReceivedMessage,
    StreamingPullRequest,
    StreamingPullResponse,
    Subscription,
    Topic,
)

DEFAULT_ACK_DEADLINE_SECONDS = 10  # Pub/Sub's, when a subscription names none
MAX_ACK_DEADLINE_SECONDS = 600
RETENTION = duration_pb2.Duration(seconds=7 * 24 * 3600)  # what a subscription reports (not enforced)
MAX_PULL_WAIT_SECONDS = 60.0  # a Pull with no client deadline waits at most this long for a message
STREAM_POLL_SECONDS = 1.0  # how often an idle StreamingPull looks whether its client went away

# Pub/Sub resource names: projects/<project>/topics|subscriptions/<id>, the id 3-255 characters from
# a letter, not starting with "goog".
_NAME = re.compile(r"^projects/[^/]+/(topics|subscriptions)/([A-Za-z][A-Za-z0-9\-_.~+%]{2,254})$")

# Subscription fields whose features the emulator does not have: asked for, they are refused.
_UNSUPPORTED: tuple[tuple[str, Callable[[Subscription], Any]], ...] = (
    ("push_config.push_endpoint", lambda s: s.push_config.push_endpoint),
    ("filter", lambda s: s.filter),
    ("dead_letter_policy", lambda s: s.dead_letter_policy.dead_letter_topic),
    ("retry_policy", lambda s: "retry_policy" in s),
    ("enable_message_ordering", lambda s: s.enable_message_ordering),
    ("enable_exactly_once_delivery", lambda s: s.enable_exactly_once_delivery),
    ("bigquery_config", lambda s: s.bigquery_config.table),
    ("cloud_storage_config", lambda s: s.cloud_storage_config.bucket),
)


class PubSubError(Exception):
    """A request Pub/Sub refuses: answered with `code` and the message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class MessageIds:
    """Pub/Sub-style message ids: 17-digit decimal strings, unique across emulator restarts.

    An id is the current time in milliseconds times 10,000, plus a random per-process offset, kept
    strictly increasing by a counter: a restarted emulator starts from a later time than any id its
    predecessor issued (unless that one issued 10,000 ids in a millisecond), and two running at once
    differ by their random offsets. One instance serves every Emulator in a process, so in-process
    emulators never collide."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = secrets.randbelow(10_000)
        self._last = 0

    def next(self) -> str:
        with self._lock:
            candidate = time.time_ns() // 1_000_000 * 10_000 + self._offset
            self._last = max(self._last + 1, candidate)
            return str(self._last)


MESSAGE_IDS = MessageIds()

Listener = Callable[[PubsubMessage], None]


@dataclass
class _Pending:
    """A message a subscription holds until it is acknowledged."""

    message: PubsubMessage
    ack_id: str = ""  # the latest delivery's; acks with an earlier one are stale and ignored
    due: float = 0.0  # monotonic time from which it may be delivered (again)


@dataclass
class _Subscription:
    resource: Subscription
    pending: dict[str, _Pending] = field(default_factory=dict)  # by message id, in publish order
    by_ack_id: dict[str, str] = field(default_factory=dict)  # current ack id -> message id


class Emulator:
    """Topics and subscriptions in memory; every method is safe to call from any thread."""

    def __init__(self) -> None:
        self._changed = threading.Condition()  # guards the state below; notified on any change
        self._topics: dict[str, Topic] = {}
        self._subscriptions: dict[str, _Subscription] = {}
        self._listeners: dict[str, list[Listener]] = {}
        self._ack_numbers = itertools.count(1)

    # --- publisher ---------------------------------------------------------------------------------

    def create_topic(self, topic: Topic) -> Topic:
        _check_name(topic.name, "topics")
        with self._changed:
            if topic.name in self._topics:
                raise PubSubError(grpc.StatusCode.ALREADY_EXISTS, "Topic already exists")
            self._topics[topic.name] = Topic(topic)
        return Topic(topic)

    def get_topic(self, name: str) -> Topic:
        _check_name(name, "topics")
        with self._changed:
            return Topic(self._topic(name))

    def publish(self, topic: str, messages: Sequence[PubsubMessage]) -> list[str]:
        """Store each message with a new id and publish time in every subscription of `topic`, then
        hand it to the topic's listeners; the ids, in order."""
        _check_name(topic, "topics")
        if not messages:
            raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, "The request contains no messages")
        if any(not m.data and not m.attributes for m in messages):
            raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, "A message must have data or attributes")
        published = []
        with self._changed:
            self._topic(topic)
            subscriptions = [s for s in self._subscriptions.values() if s.resource.topic == topic]
            for message in messages:
                stored = PubsubMessage(message)
                stored.message_id = MESSAGE_IDS.next()
                stored.publish_time = _now()
                published.append(stored)
                for subscription in subscriptions:
                    subscription.pending[stored.message_id] = _Pending(stored)
            listeners = list(self._listeners.get(topic, ()))
            self._changed.notify_all()
        for stored in published:
            for listener in listeners:
                try:
                    listener(stored)
                except Exception as exc:  # a listener's failure is its own; the publish stands
                    print(f"pubsub: listener on {topic} failed on {stored.message_id}: {exc!r}", file=sys.stderr)
        return [m.message_id for m in published]

    def listen(self, topic: str, listener: Listener) -> None:
        """Call `listener` with each message published to `topic` from now on (with its id and
        publish time), in the publishing thread: an in-process push subscription, acknowledged when
        the call returns."""
        with self._changed:
            self._topic(topic)
            self._listeners.setdefault(topic, []).append(listener)

    # --- subscriber --------------------------------------------------------------------------------

    def create_subscription(self, subscription: Subscription) -> Subscription:
        _check_name(subscription.name, "subscriptions")
        for name, asked in _UNSUPPORTED:
            if asked(subscription):
                raise PubSubError(grpc.StatusCode.UNIMPLEMENTED, f"the offline emulator has no {name}")
        created = Subscription(subscription)
        seconds = created.ack_deadline_seconds or DEFAULT_ACK_DEADLINE_SECONDS
        if not 0 < seconds <= MAX_ACK_DEADLINE_SECONDS:
            raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, "ack_deadline_seconds out of bounds")
        created.ack_deadline_seconds = seconds
        if "message_retention_duration" not in created:
            created.message_retention_duration = RETENTION
        with self._changed:
            if created.topic not in self._topics:
                raise PubSubError(grpc.StatusCode.NOT_FOUND, "Subscription topic does not exist")
            if created.name in self._subscriptions:
                raise PubSubError(grpc.StatusCode.ALREADY_EXISTS, "Subscription already exists")
            self._subscriptions[created.name] = _Subscription(created)
        return Subscription(created)

    def get_subscription(self, name: str) -> Subscription:
        with self._changed:
            return Subscription(self._subscription(name).resource)

    def delete_subscription(self, name: str) -> None:
        with self._changed:
            self._subscription(name)
            del self._subscriptions[name]
            self._changed.notify_all()  # waiting pulls end with NOT_FOUND

    def pull(
        self,
        name: str,
        max_messages: int,
        wait_seconds: float = 0.0,
        ack_deadline_seconds: int | None = None,
        stop: Callable[[], bool] = lambda: False,
    ) -> list[ReceivedMessage]:
        """Up to `max_messages` messages due for delivery, waiting up to `wait_seconds` for the first
        (or until `stop()` is true); each is leased for the ack deadline (the subscription's unless
        given) under a new ack id."""
        if max_messages <= 0:
            raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, "No max_messages specified")
        until = time.monotonic() + wait_seconds
        with self._changed:
            while True:
                subscription = self._subscription(name)
                deadline = ack_deadline_seconds or subscription.resource.ack_deadline_seconds
                received = self._lease(subscription, max_messages, deadline)
                now = time.monotonic()
                if received or stop() or now >= until:
                    return received
                due = [p.due for p in subscription.pending.values() if p.due > now]
                self._changed.wait(min([until, *due]) - now)

    def acknowledge(self, name: str, ack_ids: Sequence[str]) -> None:
        """Forget the messages of these ack ids; a stale ack id (its message was delivered again
        since, or is already acknowledged) is ignored, as Pub/Sub does without exactly-once."""
        with self._changed:
            subscription = self._current(name, ack_ids)
            for ack_id in ack_ids:
                message_id = subscription.by_ack_id.pop(ack_id, None)
                if message_id is not None:
                    del subscription.pending[message_id]

    def modify_ack_deadline(self, name: str, ack_ids: Sequence[str], seconds: int) -> None:
        """Make the deadline of these deliveries `seconds` from now; 0 (a nack) redelivers at once."""
        if not 0 <= seconds <= MAX_ACK_DEADLINE_SECONDS:
            raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, f"ack deadline must be 0-600 s, not {seconds}")
        with self._changed:
            subscription = self._current(name, ack_ids)
            for ack_id in ack_ids:
                message_id = subscription.by_ack_id.get(ack_id)
                if message_id is not None:
                    subscription.pending[message_id].due = time.monotonic() + seconds
            self._changed.notify_all()

    def outstanding(self, name: str, ack_ids: Iterable[str]) -> set[str]:
        """Those of `ack_ids` still leased: delivered, neither acknowledged nor expired nor nacked."""
        now = time.monotonic()
        with self._changed:
            subscription = self._subscription(name)
            held = subscription.by_ack_id
            return {a for a in ack_ids if a in held and subscription.pending[held[a]].due > now}

    def wake(self) -> None:
        """Wake every waiting pull, so it looks at its `stop` again."""
        with self._changed:
            self._changed.notify_all()

    # --- internals (callers hold self._changed) -------------------------------------------------------

    def _topic(self, name: str) -> Topic:
        try:
            return self._topics[name]
        except KeyError:
            raise PubSubError(grpc.StatusCode.NOT_FOUND, "Topic not found") from None

    def _subscription(self, name: str) -> _Subscription:
        _check_name(name, "subscriptions")
        try:
            return self._subscriptions[name]
        except KeyError:
            raise PubSubError(grpc.StatusCode.NOT_FOUND, "Subscription does not exist") from None

    def _current(self, name: str, ack_ids: Sequence[str]) -> _Subscription:
        """The subscription, once every ack id is checked to be one it could have issued."""
        subscription = self._subscription(name)
        if not ack_ids:
            raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, "No ack ids specified.")
        for ack_id in ack_ids:
            owner, _, number = ack_id.rpartition(":")
            if owner != name or not number.isdigit():
                raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid ack id (ack_id={ack_id})")
        return subscription

    def _lease(self, subscription: _Subscription, limit: int, deadline_seconds: int) -> list[ReceivedMessage]:
        now = time.monotonic()
        received: list[ReceivedMessage] = []
        for message_id, pending in subscription.pending.items():
            if len(received) >= limit:
                break
            if pending.due > now:
                continue
            subscription.by_ack_id.pop(pending.ack_id, None)  # the earlier delivery's ack id is stale now
            pending.ack_id = f"{subscription.resource.name}:{next(self._ack_numbers)}"
            pending.due = now + deadline_seconds
            subscription.by_ack_id[pending.ack_id] = message_id
            received.append(ReceivedMessage(ack_id=pending.ack_id, message=pending.message))
        return received


def _check_name(name: str, kind: str) -> None:
    match = _NAME.match(name)
    if match is None or match.group(1) != kind or match.group(2).lower().startswith("goog"):
        raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid [{kind}] name: (name={name})")


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


# --- the gRPC API ----------------------------------------------------------------------------------


class _Servicer:
    """The Publisher and Subscriber RPCs over an Emulator, each refusal answered with its status."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    def create_topic(self, request: Topic, context: grpc.ServicerContext) -> Topic:
        return self.emulator.create_topic(request)

    def get_topic(self, request: GetTopicRequest, context: grpc.ServicerContext) -> Topic:
        return self.emulator.get_topic(request.topic)

    def publish(self, request: PublishRequest, context: grpc.ServicerContext) -> PublishResponse:
        return PublishResponse(message_ids=self.emulator.publish(request.topic, list(request.messages)))

    def create_subscription(self, request: Subscription, context: grpc.ServicerContext) -> Subscription:
        return self.emulator.create_subscription(request)

    def get_subscription(self, request: GetSubscriptionRequest, context: grpc.ServicerContext) -> Subscription:
        return self.emulator.get_subscription(request.subscription)

    def delete_subscription(self, request: DeleteSubscriptionRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.emulator.delete_subscription(request.subscription)
        return empty_pb2.Empty()

    def pull(self, request: PullRequest, context: grpc.ServicerContext) -> PullResponse:
        # As Google's emulator: with no message, answer empty a second before the client's deadline.
        remaining = context.time_remaining()
        wait = MAX_PULL_WAIT_SECONDS if remaining is None else min(MAX_PULL_WAIT_SECONDS, remaining - 1.0)
        if request.return_immediately:
            wait = 0.0
        context.add_callback(self.emulator.wake)  # a client that goes away ends the wait
        received = self.emulator.pull(
            request.subscription, request.max_messages, max(0.0, wait), stop=lambda: not context.is_active()
        )
        return PullResponse(received_messages=received)

    def acknowledge(self, request: AcknowledgeRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.emulator.acknowledge(request.subscription, list(request.ack_ids))
        return empty_pb2.Empty()

    def modify_ack_deadline(self, request: ModifyAckDeadlineRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.emulator.modify_ack_deadline(request.subscription, list(request.ack_ids), request.ack_deadline_seconds)
        return empty_pb2.Empty()

    def streaming_pull(
        self, requests: Iterator[StreamingPullRequest], context: grpc.ServicerContext
    ) -> Iterator[StreamingPullResponse]:
        """The stream `subscribe()` opens: messages are sent as they become due, at most the
        client's `max_outstanding_messages` unacknowledged at a time; acks and deadline changes may
        come on the stream or (as the Python client sends them) as separate RPCs."""
        first = next(requests, None)
        if first is None:
            return
        name = first.subscription
        self.emulator.get_subscription(name)
        stream = _Stream(self.emulator, name, first)
        stream.apply(first)
        threading.Thread(target=stream.read, args=(requests,), name="pubsub-stream", daemon=True).start()
        context.add_callback(stream.close)
        while not stream.closed.is_set():
            room = stream.room()
            if room <= 0:
                stream.closed.wait(STREAM_POLL_SECONDS / 10)
                continue
            received = self.emulator.pull(
                name, room, STREAM_POLL_SECONDS, stream.ack_deadline_seconds, stop=stream.closed.is_set
            )
            if received:
                stream.sent.update(r.ack_id for r in received)
                yield StreamingPullResponse(received_messages=received)


class _Stream:
    """One StreamingPull: its ack deadline, its flow control and the ack ids it has sent."""

    def __init__(self, emulator: Emulator, name: str, first: StreamingPullRequest) -> None:
        self.emulator = emulator
        self.name = name
        seconds = first.stream_ack_deadline_seconds
        if not 0 < seconds <= MAX_ACK_DEADLINE_SECONDS:
            raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, "stream_ack_deadline_seconds out of bounds")
        self.ack_deadline_seconds = seconds
        self.max_outstanding = first.max_outstanding_messages or 1000  # 0: no limit; 1000 a batch
        self.sent: set[str] = set()
        self.closed = threading.Event()

    def apply(self, request: StreamingPullRequest) -> None:
        if request.stream_ack_deadline_seconds:
            self.ack_deadline_seconds = min(request.stream_ack_deadline_seconds, MAX_ACK_DEADLINE_SECONDS)
        if request.ack_ids:
            self.emulator.acknowledge(self.name, list(request.ack_ids))
        for ack_id, seconds in zip(request.modify_deadline_ack_ids, request.modify_deadline_seconds, strict=False):
            self.emulator.modify_ack_deadline(self.name, [ack_id], seconds)

    def read(self, requests: Iterator[StreamingPullRequest]) -> None:
        """The client's side of the stream: heartbeats, acks, deadline changes; then the end."""
        try:
            for request in requests:
                with contextlib.suppress(PubSubError):
                    self.apply(request)
        except grpc.RpcError:
            pass  # the client went away
        finally:
            self.close()

    def room(self) -> int:
        """How many more messages the client's flow control allows now."""
        self.sent = self.emulator.outstanding(self.name, self.sent)
        return self.max_outstanding - len(self.sent)

    def close(self) -> None:
        self.closed.set()
        self.emulator.wake()


@contextlib.contextmanager
def _answering(context: grpc.ServicerContext) -> Iterator[None]:
    """Answer a PubSubError raised inside with its status and message."""
    try:
        yield
    except PubSubError as exc:
        context.abort(exc.code, str(exc))


def _unary(method: Callable[[Any, grpc.ServicerContext], Any], request_type: Any, serialize: Any) -> Any:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        with _answering(context):
            return method(request, context)

    return grpc.unary_unary_rpc_method_handler(handle, request_type.deserialize, serialize)


def _serialize_empty(message: empty_pb2.Empty) -> bytes:
    return bytes(message.SerializeToString())


def serve(emulator: Emulator, port: int, host: str = "127.0.0.1", workers: int = 32) -> grpc.Server:
    """The emulator's gRPC API on host:port (plaintext, no credentials, as Google's emulators).

    Each StreamingPull holds one of the `workers` threads while it is open."""
    api = _Servicer(emulator)

    def streaming_pull(requests: Iterator[StreamingPullRequest], context: grpc.ServicerContext) -> Any:
        with _answering(context):
            yield from api.streaming_pull(requests, context)

    publisher = grpc.method_handlers_generic_handler(
        "google.pubsub.v1.Publisher",
        {
            "CreateTopic": _unary(api.create_topic, Topic, Topic.serialize),
            "GetTopic": _unary(api.get_topic, GetTopicRequest, Topic.serialize),
            "Publish": _unary(api.publish, PublishRequest, PublishResponse.serialize),
        },
    )
    subscriber = grpc.method_handlers_generic_handler(
        "google.pubsub.v1.Subscriber",
        {
            "CreateSubscription": _unary(api.create_subscription, Subscription, Subscription.serialize),
            "GetSubscription": _unary(api.get_subscription, GetSubscriptionRequest, Subscription.serialize),
            "DeleteSubscription": _unary(api.delete_subscription, DeleteSubscriptionRequest, _serialize_empty),
            "Pull": _unary(api.pull, PullRequest, PullResponse.serialize),
            "StreamingPull": grpc.stream_stream_rpc_method_handler(
                streaming_pull, StreamingPullRequest.deserialize, StreamingPullResponse.serialize
            ),
            "Acknowledge": _unary(api.acknowledge, AcknowledgeRequest, _serialize_empty),
            "ModifyAckDeadline": _unary(api.modify_ack_deadline, ModifyAckDeadlineRequest, _serialize_empty),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pubsub"))
    server.add_generic_rpc_handlers((publisher, subscriber))
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    return server


# --- the REST API ----------------------------------------------------------------------------------

# What Google's REST front end answers for each gRPC status (google.rpc.Code's HTTP mapping).
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
MAX_REQUEST_BYTES = 10 * 1024 * 1024  # Pub/Sub's publish request limit
MAX_MESSAGES_PER_PUBLISH = 1000
_MESSAGE_FIELDS = frozenset({"data", "attributes", "orderingKey", "messageId", "publishTime"})
_TOPIC_FIELDS = frozenset({"name", "labels", "messageRetentionDuration", "kmsKeyName"})


def _bad_request(message: str) -> PubSubError:
    return PubSubError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _decode_bytes(value: Any, where: str) -> bytes:
    """A proto3 JSON `bytes` field: standard or URL-safe base64, padded or not."""
    if not isinstance(value, str):
        raise _bad_request(f"Invalid value at '{where}' (TYPE_BYTES), {json.dumps(value)}")
    text = value.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _bad_request(f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed for {value!r}") from None


def _unknown_fields(value: dict[str, Any], known: frozenset[str], where: str) -> None:
    for name in value:
        if name not in known:
            at = f" at '{where}'" if where else ""
            raise _bad_request(f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.')


def rest_messages(body: Any) -> list[PubsubMessage]:
    """The messages of a REST publish request body, checked as Google's front end checks them."""
    if not isinstance(body, dict):
        raise _bad_request("Invalid JSON payload received. Expected an object.")
    _unknown_fields(body, frozenset({"messages"}), "")
    raw = body.get("messages", [])
    if not isinstance(raw, list):
        raise _bad_request("Invalid value at 'messages', expected a list")
    if len(raw) > MAX_MESSAGES_PER_PUBLISH:
        raise _bad_request(
            f"The value for message_count is too large. You passed {len(raw)} in the request, "
            f"but the maximum value is {MAX_MESSAGES_PER_PUBLISH}."
        )
    messages = []
    for index, item in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            raise _bad_request(f"Invalid value at '{where}', expected an object")
        _unknown_fields(item, _MESSAGE_FIELDS, where)
        data = _decode_bytes(item["data"], f"{where}.data") if "data" in item else b""
        attributes = item.get("attributes") or {}
        if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
            raise _bad_request(f"Invalid value at '{where}.attributes', expected a map of strings")
        ordering_key = item.get("orderingKey", "")
        if not isinstance(ordering_key, str):
            raise _bad_request(f"Invalid value at '{where}.ordering_key' (TYPE_STRING), {json.dumps(ordering_key)}")
        # messageId and publishTime are output only: the service assigns them, whatever was sent.
        messages.append(PubsubMessage(data=data, attributes=attributes, ordering_key=ordering_key))
    return messages


def topic_json(topic: Topic) -> dict[str, Any]:
    """A Topic as the REST API shows it (camelCase, empty fields left out)."""
    shown: dict[str, Any] = {"name": topic.name}
    if topic.labels:
        shown["labels"] = dict(topic.labels)
    return shown


class RestApi:
    """Pub/Sub's REST routes over an Emulator: `handle` answers one request with (status, body)."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            return 200, self._route(method, unquote(urlsplit(path).path), body)
        except PubSubError as exc:
            return error_body(exc.code, str(exc))

    def _route(self, method: str, path: str, body: bytes) -> dict[str, Any]:
        if not path.startswith("/v1/projects/"):
            raise PubSubError(grpc.StatusCode.NOT_FOUND, f"The requested URL {path} was not found on this server.")
        resource, _, verb = path.removeprefix("/v1/").partition(":")
        if "/topics/" not in resource:
            raise PubSubError(grpc.StatusCode.UNIMPLEMENTED, f"the offline emulator's REST API has no {resource}")
        if (method, verb) == ("POST", "publish"):
            if len(body) > MAX_REQUEST_BYTES:
                raise _bad_request(f"Request payload size exceeds the limit: {MAX_REQUEST_BYTES} bytes.")
            messages = rest_messages(_json(body))
            return {"messageIds": self.emulator.publish(resource, messages)}
        if (method, verb) == ("PUT", ""):
            asked = _json(body) if body.strip() else {}
            if not isinstance(asked, dict):
                raise _bad_request("Invalid JSON payload received. Expected an object.")
            _unknown_fields(asked, _TOPIC_FIELDS, "")
            labels = asked.get("labels") or {}
            if not isinstance(labels, dict):
                raise _bad_request("Invalid value at 'topic.labels', expected a map of strings")
            return topic_json(self.emulator.create_topic(Topic(name=resource, labels=labels)))
        if (method, verb) == ("GET", ""):
            return topic_json(self.emulator.get_topic(resource))
        raise PubSubError(grpc.StatusCode.UNIMPLEMENTED, f"the offline emulator's REST API has no {method} {path}")


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError:
        raise _bad_request("Invalid JSON payload received. Unexpected token.") from None


def error_body(code: grpc.StatusCode, message: str) -> tuple[int, dict[str, Any]]:
    """Google's JSON error for a gRPC status: the HTTP status and `{"error": {code, message, status}}`."""
    status = HTTP_STATUS.get(code, 500)
    return status, {"error": {"code": status, "message": message, "status": code.name}}


def serve_rest(emulator: Emulator, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Pub/Sub's REST API for `emulator` on host:port (HTTP/1.1, keep-alive, no credentials), served
    from a daemon thread; `shutdown()` stops it."""
    api = RestApi(emulator)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a function publishes over one pooled connection

        def _answer(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_REQUEST_BYTES + 1024 * 1024:
                status, payload = error_body(grpc.StatusCode.INVALID_ARGUMENT, "Bad Content-Length")
                self.close_connection = True
            else:
                status, payload = api.handle(self.command, self.path, self.rfile.read(length))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="pubsub-rest", daemon=True).start()
    return server


def create_topics(host: str, names: Iterable[str], timeout: float = 10.0) -> None:
    """Create these topics (full names) in the emulator at host:port, as Terraform would in a project;
    one that exists already is left as it is."""
    from google.api_core import exceptions
    from google.pubsub_v1 import PublisherClient
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

    with grpc.insecure_channel(host) as channel:
        client = PublisherClient(transport=PublisherGrpcTransport(channel=channel))
        for name in names:
            with contextlib.suppress(exceptions.AlreadyExists):
                client.create_topic(name=name, timeout=timeout)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="the gRPC API's port")
    parser.add_argument("--rest-port", type=int, help="the REST API's port (default: no REST API)")
    parser.add_argument("--topic", action="append", default=[], help="a topic to create at start (repeatable)")
    args = parser.parse_args(argv)
    emulator = Emulator()
    for name in args.topic:
        emulator.create_topic(Topic(name=name))
    server = serve(emulator, args.port)
    rest = ""
    if args.rest_port:
        serve_rest(emulator, args.rest_port)
        rest = f", rest 127.0.0.1:{args.rest_port}"
    print(f"pubsub emulator: grpc 127.0.0.1:{args.port}{rest}", file=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        server.wait_for_termination()


if __name__ == "__main__":
    main()
