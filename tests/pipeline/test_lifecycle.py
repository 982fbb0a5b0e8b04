"""A living catalogue, through the real functions on the offline stack: replaced photos, deleted
photos, and every downstream system told (the events topic, a customer's endpoint).

The stack here runs with production's settings but two: the retries of tests/conftest.py's
FAST_RETRIES (the relay, the queues and the API's webhook back off for fractions of a second, not
10-600 s), and, where a test says so, a model slowed down with the predictions service's
`model_latency_seconds`, so that uploads overtake it. Outputs are two variants, as a shop would
configure them: the model's cut-out (`cutout`, `<stem>.png`) and the subject on white as a JPEG
(`white`, `<stem>.white.jpg`; not cropped, so its pixels line up with the upload's).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import google.cloud.pubsub_v1 as pubsub_v1
import numpy as np
import pytest
import requests
from google.api_core import exceptions
from PIL import Image, ImageCms
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bgremove import naming
from offline_cloud import eventarc_relay
from offline_cloud.stack import Stack, free_port
from tests.conftest import start_stack
from tests.photos import sample
from tests.support import StackClient, photo, post_webhook, wait_for
from tests.unit.test_colour import cms, delta_e, display_p3, lab

VARIANTS = [{"name": "cutout"}, {"name": "white", "format": "jpeg", "background": "#ffffff"}]
VARIANTS_ENV = {"OUTPUT_VARIANTS": json.dumps(VARIANTS)}
FINAL = ("completed", "failed", "superseded", "removed")
EVENT_TYPE = "dev.bgremove.job.v1."


def outputs_of(name: str) -> dict[str, str]:
    """Each variant's object name for the upload `name` (`dir/stem.ext`)."""
    stem = name.rsplit(".", 1)[0]
    return {"cutout": f"{stem}.png", "white": f"{stem}.white.jpg"}


# --- a customer's endpoint (NOTIFY_URL) ---------------------------------------------------------


@dataclass
class Received:
    at: float  # wall clock
    status: int  # what the receiver answered
    headers: dict[str, str]
    body: bytes
    payload: Any  # the verified body, parsed; None when it did not verify
    error: str  # why it did not verify


@dataclass
class NotifyReceiver:
    """A customer's HTTP endpoint: it verifies each delivery with the Standard Webhooks reference
    library as it arrives (the timestamp is checked then), and answers 503 while `down_until`
    (wall clock) is in the future, 401 for a delivery that does not verify, 200 otherwise."""

    secret: str
    down_until: float = 0.0
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                payload, error = None, ""
                try:
                    payload = Webhook(receiver.secret).verify(body, headers)
                except (WebhookVerificationError, ValueError, UnicodeDecodeError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                status = 503 if time.time() < receiver.down_until else 401 if error else 200
                with receiver._lock:
                    receiver.received.append(Received(time.time(), status, headers, body, payload, error))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/bgremove"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, webhook_id: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.headers.get("webhook-id") == webhook_id]

    def accepted_ids(self) -> set[str]:
        with self._lock:
            return {r.headers.get("webhook-id", "") for r in self.received if r.status == 200}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the events topic (EVENTS_TOPIC) ------------------------------------------------------------


@dataclass
class Event:
    message_id: str
    attributes: dict[str, str]
    data: dict[str, Any]

    @property
    def ce_id(self) -> str:
        return self.attributes.get("ce-id", "")


class EventFeed:
    """A pull subscription on the events topic, made before the test acts (a subscription gets only
    what is published after it), read with google-cloud-pubsub's SubscriberClient as a downstream
    system would, every message acknowledged."""

    def __init__(self, info: Any, subscriber: Any) -> None:
        self.subscriber = subscriber
        self.name = f"projects/offline-project/subscriptions/tests-{uuid.uuid4().hex[:12]}"
        subscriber.create_subscription(name=self.name, topic=info.events_topic)
        self.messages: list[Event] = []

    def pull(self, timeout: float = 2.0) -> int:
        with contextlib.suppress(exceptions.DeadlineExceeded):
            response = self.subscriber.pull(subscription=self.name, max_messages=500, timeout=timeout)
            received = list(response.received_messages)
            if received:
                self.subscriber.acknowledge(subscription=self.name, ack_ids=[r.ack_id for r in received])
            for r in received:
                self.messages.append(
                    Event(r.message.message_id, dict(r.message.attributes), json.loads(r.message.data))
                )
            return len(received)
        return 0

    def outcomes(self, subject_prefix: str) -> dict[str, Event]:
        """The events about objects under this prefix, de-duplicated by ce-id (the first kept)."""
        kept: dict[str, Event] = {}
        for event in self.messages:
            if event.attributes.get("ce-subject", "").startswith(f"objects/{subject_prefix}"):
                kept.setdefault(event.ce_id, event)
        return kept

    def wait(self, ce_ids: set[str], subject_prefix: str, timeout: float = 60) -> dict[str, Event]:
        def arrived() -> dict[str, Event] | None:
            self.pull()
            seen = self.outcomes(subject_prefix)
            return seen if ce_ids <= set(seen) else None

        try:
            return wait_for(arrived, timeout, f"events {sorted(ce_ids)}", interval=0.0)
        except AssertionError:
            got = sorted(self.outcomes(subject_prefix))
            raise AssertionError(f"events {sorted(ce_ids - set(got))} never came; got {got}") from None


def check_event(stack: StackClient, event: Event, job: dict[str, Any], name: str) -> None:
    """`event` is the contract's announcement of `job`'s end: a CloudEvent in the Pub/Sub binding,
    binary mode, naming its object, its outputs and links to them."""
    state, attributes, data = job["state"], event.attributes, event.data
    assert attributes["ce-specversion"] == "1.0", attributes
    assert attributes["ce-type"] == EVENT_TYPE + state, attributes
    assert attributes["ce-id"] == f"{job['job_id']}.{state}", attributes
    assert attributes["ce-subject"] == f"objects/{name}", attributes
    assert attributes["ce-source"], attributes
    datetime.fromisoformat(attributes["ce-time"].replace("Z", "+00:00"))
    assert attributes["content-type"] == "application/json", attributes
    assert (data["job_id"], data["state"]) == (job["job_id"], state), data
    bucket = stack.info.upload_bucket
    source = data["source"]
    assert source["uri"] == f"gs://{bucket}/{name}" and (source["bucket"], source["name"]) == (bucket, name), data
    assert str(source["generation"]) == str(job["source"]["generation"]), data
    assert data["created_at"] and data["ended_at"], data
    if state == "completed":
        assert data["prediction_id"] == job["prediction_ids"][-1], data
        processed = stack.info.processed_bucket
        recorded = {(o["variant"], o["object"], str(o["generation"])) for o in job["outputs"]}
        announced = {
            (o["variant"], o["object"].removeprefix(f"gs://{processed}/"), str(o["generation"]))
            for o in data["outputs"]
        }
        assert announced == recorded, (announced, recorded)
        base = f"{stack.info.function_env['OUTPUT_URL_BASE']}/{processed}/"
        for output in data["outputs"]:
            assert output["object"].startswith(f"gs://{processed}/"), output
            assert output["url"].startswith(base), output
            assert unquote(output["url"][len(base) :]) == output["object"].removeprefix(f"gs://{processed}/"), output
    elif state == "failed":
        assert data["outputs"] == [] and data["reason"] == job["reason"] and data["message"], data


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[NotifyReceiver]:
    receiver = NotifyReceiver("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def life_stack(tmp_path_factory: pytest.TempPathFactory, receiver: NotifyReceiver) -> Iterator[StackClient]:
    """The stack as a deployment with a customer endpoint runs: two variants, NOTIFY_URL, and
    otherwise production's defaults (events topic, on_delete for deleted and archived events,
    DELETE_OUTPUTS on), with FAST_RETRIES."""
    running = start_stack(
        tmp_path_factory.mktemp("life-stack"),
        function_env=VARIANTS_ENV,
        notify_url=receiver.url,
        notify_secret=receiver.secret,
    )
    try:
        assert running.info is not None
        yield StackClient(running.info)
    finally:
        running.stop()


@pytest.fixture
def life(life_stack: StackClient) -> Iterator[StackClient]:
    """The stack, with every fault a test set cleared after it."""
    yield life_stack
    life_stack.api("DELETE", "/_admin/faults").raise_for_status()
    relay = {"duplicate_rate": 0.0, "reorder_rate": 0.0, "reorder_delay_seconds": 1.0, "seed": None}
    requests.post(life_stack.info.relay_admin_url + "/faults", json=relay, timeout=10).raise_for_status()
    requests.post(
        life_stack.info.tasks_admin_url + "/faults", json={"duplicate_rate": 0.0}, timeout=10
    ).raise_for_status()


@pytest.fixture
def subscriber(life_stack: StackClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """google-cloud-pubsub's SubscriberClient, found through PUBSUB_EMULATOR_HOST (the gRPC host)."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", life_stack.info.pubsub_emulator_host)
    with pubsub_v1.SubscriberClient() as client:
        yield client


@pytest.fixture
def events(life_stack: StackClient, subscriber: Any) -> EventFeed:
    return EventFeed(life_stack.info, subscriber)


# --- helpers -------------------------------------------------------------------------------------


def job_id(stack: StackClient, name: str, generation: int) -> str:
    return naming.job_id(stack.info.upload_bucket, name, generation)


def predictions_by_job(stack: StackClient) -> dict[str, list[dict[str, Any]]]:
    """Every prediction the predictions service was asked for (each one paid), by the job its
    webhook URL names."""
    listed = stack.api("GET", "/_admin/predictions").json()["predictions"]
    by_job: dict[str, list[dict[str, Any]]] = {}
    for prediction in listed:
        job = parse_qs(urlsplit(prediction.get("webhook") or "").query).get("job", [""])[0]
        by_job.setdefault(job, []).append(prediction)
    return by_job


def delete_upload(stack: StackClient, name: str) -> None:
    stack.gcs.bucket(stack.info.upload_bucket).blob(name).delete()


def deletions_delivered(stack: StackClient, name: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    """The final deliveries of the `deleted` events of `name`, once there are `count` of them."""

    def finals() -> list[dict[str, Any]] | None:
        found = [d for d in stack.final_deliveries(f"objects/{name}") if d["type"] == eventarc_relay.DELETED]
        return found if len(found) >= count else None

    return wait_for(finals, timeout, f"{count} deleted event(s) of {name} delivered")


def snapshot(stack: StackClient, names: list[str]) -> dict[str, tuple[int, str, dict[str, str]] | None]:
    """Each processed object's generation, md5 and metadata (None when absent)."""
    shot: dict[str, tuple[int, str, dict[str, str]] | None] = {}
    for output in names:
        blob = stack.processed(output)
        shot[output] = None if blob is None else (int(blob.generation), str(blob.md5_hash), dict(blob.metadata or {}))
    return shot


def put_processed(stack: StackClient, name: str, data: bytes, content_type: str) -> int:
    """A user's own file in the processed bucket: no bgremove metadata."""
    blob = stack.gcs.bucket(stack.info.processed_bucket).blob(name)
    blob.upload_from_string(data, content_type=content_type)
    return int(blob.generation)


def upload_with_headers(
    stack: StackClient, name: str, data: bytes, content_type: str, metadata: dict[str, str], **headers: str
) -> int:
    """An upload with delivery headers (cache_control, content_disposition, content_language)."""
    blob = stack.gcs.bucket(stack.info.upload_bucket).blob(name)
    blob.metadata = metadata
    for key, value in headers.items():
        setattr(blob, key, value)
    blob.upload_from_string(data, content_type=content_type)
    return int(blob.generation)


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --- replaced uploads ----------------------------------------------------------------------------


def test_three_quick_replacements_end_as_the_last_generations_cutouts(life: StackClient, events: EventFeed) -> None:
    stack = life
    # Sped down, not up: each prediction takes 3 s more than the model, so the replacements come
    # faster than the model can finish the first.
    stack.set_faults(model_latency_seconds=3.0)
    prefix = f"life/{uuid.uuid4().hex[:10]}/"
    name = prefix + "shoe.jpg"
    # Three different photos, of three different sizes, so each output says whose it is.
    photos = [(photo(n), Image.fromarray(sample(n)).size) for n in ("coffee", "astronaut", "chelsea")]
    g1 = stack.upload(name, photos[0][0], "image/jpeg")
    job1 = stack.wait_job(name, g1, states=("submitted",), timeout=30)  # its (paid) prediction is running
    g2 = stack.upload(name, photos[1][0], "image/jpeg")
    g3 = stack.upload(name, photos[2][0], "image/jpeg")

    job3 = stack.wait_job(name, g3, states=FINAL, timeout=120)
    job1 = stack.wait_job(name, g1, states=FINAL, timeout=30)
    job2 = stack.wait_job(name, g2, states=FINAL, timeout=30)
    print(f"\ngeneration 2 was superseded {'after' if job2['prediction_ids'] else 'before'} its submission")

    assert job3["state"] == "completed", job3
    assert (job1["state"], job2["state"]) == ("superseded", "superseded"), (job1, job2)
    written = outputs_of(name)
    for variant, output in written.items():
        blob = stack.processed(output)
        assert blob is not None, output
        assert blob.metadata["bgremove-source-generation"] == str(g3), (output, blob.metadata)
        assert blob.metadata["bgremove-job"] == job3["job_id"] and blob.metadata["bgremove-variant"] == variant
        assert decode(blob.download_as_bytes()).size == photos[2][1]  # the last photo's
    # A cut-out: the top corners transparent, the centre opaque (the cat lies on the bottom edge).
    alpha = np.asarray(decode(stack.processed(written["cutout"]).download_as_bytes()).getchannel("A"))  # type: ignore[union-attr]
    assert alpha[0, 0] < 20 and alpha[0, -1] < 20 and alpha[alpha.shape[0] // 2, alpha.shape[1] // 2] > 200
    assert {o["object"]: o["generation"] for o in job3["outputs"]} == {
        o: stack.processed(o).generation  # type: ignore[union-attr]
        for o in written.values()
    }
    assert sorted(b for b in stack.processed_names() if b.startswith(prefix)) == sorted(written.values())

    # One paid prediction per generation live at its submission, none for one superseded before.
    paid = predictions_by_job(stack)
    for job in (job1, job2, job3):
        assert [p["id"] for p in paid.get(job["job_id"], [])] == job["prediction_ids"], job
    assert len(job1["prediction_ids"]) == 1 and len(job2["prediction_ids"]) <= 1 and len(job3["prediction_ids"]) == 1
    # Generation 1's prediction was still running when it was replaced: cancelled, not paid to the end.
    first = job1["prediction_ids"][0]
    wait_for(lambda: stack.api("GET", f"/v1/predictions/{first}").json()["status"] == "canceled", 20, "the cancel")

    # A late webhook of generation 1, after generation 3 is written: as the API would send it
    # (canceled), and as it would if the prediction had finished just before the cancel (succeeded,
    # with a real output), both signed with the account's secret. Neither changes anything.
    before = snapshot(stack, list(written.values()))
    late = stack.api("GET", f"/v1/predictions/{first}").json()
    last_output = stack.api("GET", f"/v1/predictions/{job3['prediction_ids'][0]}").json()["output"]
    for body in (late, {**late, "status": "succeeded", "output": last_output, "error": None}):
        answer = post_webhook(stack.info, json.dumps(body).encode(), job=job1["job_id"])
        assert 200 <= answer.status_code < 300, (answer.status_code, answer.text)  # settled: no retries
    assert snapshot(stack, list(written.values())) == before
    after = {g: stack.job(stack.info.upload_bucket, name, g) or {} for g in (g1, g3)}
    assert after[g1]["state"] == "superseded" and after[g1]["prediction_ids"] == job1["prediction_ids"]
    assert (after[g3]["state"], after[g3]["outputs"]) == ("completed", job3["outputs"])

    # Downstream systems hear of each generation's end once: two superseded, one completed.
    ids = {f"{job['job_id']}.{job['state']}": job for job in (job1, job2, job3)}
    announced = events.wait(set(ids), prefix)
    assert set(announced) == set(ids)
    for ce_id, job in ids.items():
        check_event(stack, announced[ce_id], job, name)


def test_a_users_file_or_another_uploads_output_at_the_output_name_is_never_touched(life: StackClient) -> None:
    stack = life
    prefix = f"life/{uuid.uuid4().hex[:10]}/"
    # A user's own file where the white variant of logo.jpg would go; it carries no bgremove metadata.
    logo = prefix + "logo.jpg"
    users = outputs_of(logo)["white"]
    users_generation = put_processed(stack, users, b"the user's own white logo", "image/jpeg")
    for source in ("coffee", "chelsea"):  # uploaded, then replaced
        generation = stack.upload(logo, photo(source), "image/jpeg")
        job = stack.wait_job(logo, generation, states=FINAL, timeout=90)
        assert (job["state"], job["reason"]) == ("failed", "output_name_taken"), job
    delete_upload(stack, logo)
    deletions_delivered(stack, logo, 2)  # the replacement's and the deletion's
    kept = stack.processed(users)
    assert kept is not None and int(kept.generation) == users_generation and not kept.metadata
    assert kept.download_as_bytes() == b"the user's own white logo"

    # Another upload's outputs: shoe.jpg and shoe.webp both name shoe.png and shoe.white.jpg.
    jpeg, webp = prefix + "shoe.jpg", prefix + "shoe.webp"
    job = stack.wait_job(jpeg, stack.upload(jpeg, photo("chelsea"), "image/jpeg"), states=FINAL, timeout=90)
    assert job["state"] == "completed", job
    theirs = snapshot(stack, list(outputs_of(jpeg).values()))
    other = stack.wait_job(webp, stack.upload(webp, photo("astronaut", "WEBP"), "image/webp"), states=FINAL, timeout=90)
    assert (other["state"], other["reason"]) == ("failed", "output_name_taken"), other
    delete_upload(stack, webp)
    deletions_delivered(stack, webp, 1)
    assert snapshot(stack, list(outputs_of(jpeg).values())) == theirs  # still shoe.jpg's, untouched


# --- deleted uploads -----------------------------------------------------------------------------


def test_a_deleted_original_takes_its_cutouts_with_it_within_one_delivery(life: StackClient, events: EventFeed) -> None:
    stack = life
    prefix = f"life/{uuid.uuid4().hex[:10]}/"
    name = prefix + "mug.jpg"
    generation = stack.upload(name, photo("coffee"), "image/jpeg")
    job = stack.wait_job(name, generation, states=FINAL, timeout=90)
    assert job["state"] == "completed", job
    written = list(outputs_of(name).values())
    assert all(snapshot(stack, written).values())

    delete_upload(stack, name)

    [final] = deletions_delivered(stack, name, 1)
    assert (final["result"], final["attempts"]) == ("delivered", 1), final  # one delivery did it
    assert snapshot(stack, written) == dict.fromkeys(written)
    removed = stack.job(stack.info.upload_bucket, name, generation)
    assert removed is not None and removed["state"] == "removed", removed
    assert sorted(o["object"] for o in removed["outputs"]) == sorted(written)
    announced = events.wait({f"{job['job_id']}.completed", f"{job['job_id']}.removed"}, prefix)
    check_event(stack, announced[f"{job['job_id']}.completed"], job, name)
    check_event(stack, announced[f"{job['job_id']}.removed"], removed, name)


def test_deleting_after_a_replacement_removes_only_what_the_live_generation_made(life: StackClient) -> None:
    stack = life
    prefix = f"life/{uuid.uuid4().hex[:10]}/"
    name = prefix + "cat.jpg"
    written = outputs_of(name)
    g1 = stack.upload(name, photo("coffee"), "image/jpeg")
    assert stack.wait_job(name, g1, states=FINAL, timeout=90)["state"] == "completed"
    first = snapshot(stack, list(written.values()))
    g2 = stack.upload(name, photo("chelsea"), "image/jpeg")
    job2 = stack.wait_job(name, g2, states=FINAL, timeout=90)
    assert job2["state"] == "completed", job2

    # The overwrite's own `deleted` event (of generation 1) is not a removal: the new outputs stay.
    deletions_delivered(stack, name, 1)
    second = snapshot(stack, list(written.values()))
    for output, shot in second.items():
        assert shot is not None and shot[2]["bgremove-source-generation"] == str(g2), (output, shot)
        assert shot[0] > first[output][0]  # type: ignore[index]  # replaced, not written beside
    assert stack.job(stack.info.upload_bucket, name, g1)["state"] != "removed"  # type: ignore[index]

    # The user puts their own file over the white variant; then the original is deleted.
    users_generation = put_processed(stack, written["white"], b"a retouched white version", "image/jpeg")
    delete_upload(stack, name)
    deletions_delivered(stack, name, 2)

    assert stack.processed(written["cutout"]) is None  # the live generation's cut-out went with it
    kept = stack.processed(written["white"])
    assert kept is not None and int(kept.generation) == users_generation
    assert kept.download_as_bytes() == b"a retouched white version"
    removed = stack.job(stack.info.upload_bucket, name, g2)
    assert removed is not None and removed["state"] == "removed", removed
    assert [o["object"] for o in removed["outputs"]] == [written["cutout"]]  # what it deleted


def test_with_delete_outputs_off_a_deleted_originals_cutouts_stay(tmp_path_factory: pytest.TempPathFactory) -> None:
    running: Stack = start_stack(tmp_path_factory.mktemp("keep-stack"), function_env=VARIANTS_ENV, delete_outputs=False)
    try:
        assert running.info is not None and running.info.function_env["DELETE_OUTPUTS"] == "false"
        stack = StackClient(running.info)
        name = "life/keep/mug.jpg"
        generation = stack.upload(name, photo("coffee"), "image/jpeg")
        assert stack.wait_job(name, generation, states=FINAL, timeout=90)["state"] == "completed"
        written = list(outputs_of(name).values())
        before = snapshot(stack, written)
        assert all(before.values())

        delete_upload(stack, name)

        [final] = deletions_delivered(stack, name, 1)
        assert final["result"] == "delivered", final
        assert snapshot(stack, written) == before
        assert stack.job(stack.info.upload_bucket, name, generation)["state"] == "completed"  # type: ignore[index]
    finally:
        running.stop()


# --- everyone told -------------------------------------------------------------------------------


def small_photos(count: int, seed: int) -> list[bytes]:
    """`count` different real photos, small (96-200 px wide) so 200 of them cost the model little:
    random crops of scikit-image's samples with mild noise."""
    rng = np.random.default_rng(seed)
    sources = [Image.fromarray(sample(n)).convert("RGB") for n in ("coffee", "astronaut", "chelsea")]
    out = []
    for i in range(count):
        source = sources[i % len(sources)]
        width, height = (
            int(rng.integers(source.width // 2, source.width)),
            int(rng.integers(source.height // 2, source.height)),
        )
        x, y = int(rng.integers(0, source.width - width + 1)), int(rng.integers(0, source.height - height + 1))
        size = int(rng.integers(96, 200))
        image = source.crop((x, y, x + width, y + height)).resize((size, max(1, size * height // width)))
        pixels = np.asarray(image).astype(np.float32) + rng.normal(0.0, 3.0, (image.height, image.width, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def test_a_subscriber_hears_exactly_the_outcomes_of_200_images_through_duplicated_and_reordered_events(
    life: StackClient, events: EventFeed, receiver: NotifyReceiver
) -> None:
    stack = life
    # At-least-once everywhere, turned up: storage events duplicated and held back (so later ones
    # overtake them), webhooks duplicated and reordered, task dispatches duplicated; and a few
    # predictions fail, so failures are announced too.
    requests.post(
        stack.info.relay_admin_url + "/faults",
        json={"duplicate_rate": 0.2, "reorder_rate": 0.2, "reorder_delay_seconds": 1.0, "seed": 11},
        timeout=10,
    ).raise_for_status()
    requests.post(stack.info.tasks_admin_url + "/faults", json={"duplicate_rate": 0.1, "seed": 11}, timeout=10)
    stack.set_faults(webhook_duplicate_rate=0.2, webhook_reorder_rate=0.2, fail_rate=0.05, seed=11)
    prefix = f"life/{uuid.uuid4().hex[:10]}/"
    names = [f"{prefix}{i:03d}.jpg" for i in range(200)]
    generations = {n: stack.upload(n, data, "image/jpeg") for n, data in zip(names, small_photos(200, 11), strict=True)}

    # Until every job has ended, which the events themselves say (a job announces its end once it
    # has ended); then the records are read once and held against them.
    def all_heard() -> bool:
        events.pull()
        return len({e.data["job_id"] for e in events.outcomes(prefix).values()}) >= len(names)

    try:
        wait_for(all_heard, 300, "an event for every job", interval=0.0)
    finally:
        heard = len({e.data["job_id"] for e in events.outcomes(prefix).values()})
        print(f"\n{heard} of {len(names)} jobs announced; {len(events.messages)} messages pulled")
    jobs = {n: stack.job(stack.info.upload_bucket, n, g) for n, g in generations.items()}
    time.sleep(3)  # a late duplicate, or a second outcome, would come now
    while events.pull():
        pass

    outcomes = events.outcomes(prefix)
    expected = {f"{job['job_id']}.{job['state']}": (n, job) for n, job in jobs.items() if job is not None}
    assert len(expected) == len(names) and all(job["state"] in FINAL for _, job in expected.values())
    assert set(outcomes) == set(expected)  # exactly one outcome per job, after de-duplication by ce-id
    for ce_id, (name, job) in expected.items():
        check_event(stack, outcomes[ce_id], job, name)
    states = [job["state"] for _, job in expected.values()]
    assert states.count("failed") > 0 and states.count("completed") > 150, states
    print(f"outcomes: completed {states.count('completed')}, failed {states.count('failed')}")

    # The customer's endpoint was told of each outcome too, and verified every delivery.
    wait_for(lambda: set(expected) <= receiver.accepted_ids(), 120, "every outcome at NOTIFY_URL")

    # The faults really happened: without them this would prove nothing.
    ours = [d for d in stack.deliveries() if d["kind"] == "received" and d["subject"].startswith(f"objects/{prefix}")]
    assert any(d["duplicate"] for d in ours) and any(d.get("held_seconds") for d in ours)
    injected = stack.stats()["faults"]
    assert injected.get("webhooks_duplicated", 0) > 0 and injected.get("webhooks_reordered", 0) > 0, injected
    queues = requests.get(stack.info.tasks_admin_url + "/stats", timeout=10).json()["queues"]
    assert sum(q["duplicates_injected"] for q in queues.values()) > 0, queues


def test_notify_url_deliveries_verify_and_survive_a_minute_of_503(life: StackClient, receiver: NotifyReceiver) -> None:
    stack = life
    name = f"life/{uuid.uuid4().hex[:10]}/lamp.jpg"
    receiver.down_until = time.time() + 60  # the customer's endpoint is down for a minute
    try:
        generation = stack.upload(name, photo("chelsea"), "image/jpeg")
        job = stack.wait_job(name, generation, states=FINAL, timeout=90)
        assert job["state"] == "completed", job
        ce_id = f"{job['job_id']}.completed"
        # FAST_RETRIES: the notify queue retries every 0.2-2 s (Terraform: 10 s doubling to 600 s).
        wait_for(lambda: [r for r in receiver.of(ce_id) if r.status == 200], 150, "the delivery after the outage")
    finally:
        receiver.down_until = 0.0
    time.sleep(2)  # nothing is delivered again once it was taken
    attempts = receiver.of(ce_id)
    assert [r.error for r in attempts] == [""] * len(attempts)  # every attempt verified
    assert [r.status for r in attempts].count(200) == 1 and attempts[-1].status == 200
    assert attempts[0].status == 503 and attempts[-1].at - attempts[0].at >= 55, [(r.at, r.status) for r in attempts]
    assert len({r.headers["webhook-timestamp"] for r in attempts}) > 1  # each attempt signed anew

    delivered = attempts[-1]
    assert delivered.headers["content-type"].startswith("application/cloudevents+json"), delivered.headers
    event = delivered.payload  # CloudEvents structured mode: the attributes and the data in one JSON
    assert (event["specversion"], event["id"], event["type"]) == ("1.0", ce_id, EVENT_TYPE + "completed"), event
    assert event["subject"] == f"objects/{name}" and event["source"] and event["time"], event
    assert event["datacontenttype"] == "application/json", event
    attributes = {f"ce-{k}": v for k, v in event.items() if k not in ("data", "datacontenttype")}
    check_event(stack, Event("", {**attributes, "content-type": "application/json"}, event["data"]), job, name)


# --- colour and headers --------------------------------------------------------------------------


def test_a_wide_gamut_photo_keeps_its_colours_and_its_headers_and_metadata_in_every_output(life: StackClient) -> None:
    stack = life
    # The coffee photo in Display P3: the same colours as the sRGB original, stored as P3 values
    # and tagged with a P3 profile (built as tests/unit/test_colour.py builds it), as a phone writes.
    original = Image.fromarray(sample("coffee")).convert("RGB")
    to_p3 = ImageCms.buildTransform(cms(None), cms(display_p3()), "RGB", "RGB", ImageCms.Intent.RELATIVE_COLORIMETRIC)
    buf = io.BytesIO()
    in_p3 = ImageCms.applyTransform(original, to_p3)
    assert in_p3 is not None
    in_p3.save(buf, "JPEG", quality=95, icc_profile=display_p3())
    upload = buf.getvalue()
    name = f"life/{uuid.uuid4().hex[:10]}/cup.jpg"
    custom = {"photographer": "Ada", "licence": "CC-BY-4.0", "bgremove-variants": "cutout,white"}
    generation = upload_with_headers(
        stack,
        name,
        upload,
        "image/jpeg",
        custom,
        cache_control="public, max-age=86400",
        content_disposition='attachment; filename="cup.jpg"',
        content_language="en",
    )
    job = stack.wait_job(name, generation, states=FINAL, timeout=90)
    assert job["state"] == "completed", job

    written = outputs_of(name)
    for variant, output in written.items():
        blob = stack.processed(output)
        assert blob is not None, output
        assert blob.cache_control == "public, max-age=86400", (output, blob.cache_control)
        assert blob.content_language == "en", (output, blob.content_language)
        filename = output.rsplit("/", 1)[1]
        assert blob.content_disposition == f'attachment; filename="{filename}"', (output, blob.content_disposition)
        metadata = blob.metadata or {}
        assert (metadata.get("photographer"), metadata.get("licence")) == ("Ada", "CC-BY-4.0"), metadata
        assert "bgremove-variants" not in metadata and metadata["bgremove-variant"] == variant, metadata

    source = decode(upload)
    alpha = np.asarray(decode(stack.processed(written["cutout"]).download_as_bytes()).getchannel("A"))  # type: ignore[union-attr]
    white = decode(stack.processed(written["white"]).download_as_bytes())  # type: ignore[union-attr]
    assert white.size == source.size and white.format == "JPEG"
    tagged = white.info.get("icc_profile")
    assert tagged is not None and cms(tagged).profile.profile_description == "sRGB built-in"
    subject = alpha >= 250
    for _ in range(2):  # away from the edge, where the subject blends into the white
        subject[1:-1, 1:-1] &= subject[:-2, 1:-1] & subject[2:, 1:-1] & subject[1:-1, :-2] & subject[1:-1, 2:]
    assert subject.mean() > 0.2, subject.mean()  # the model found the cup
    expected = lab(source, display_p3())[subject]  # what the upload shows, through its profile
    got = lab(white, tagged)[subject]
    misread = lab(source, None)[subject]  # the P3 values read as sRGB: what an unconverted variant shows
    per_pixel, cast = delta_e(got, expected).mean(), float(delta_e(got.mean(axis=0), expected.mean(axis=0)))
    print(f"\nwhite JPEG of a Display P3 photo: dE76 per pixel {per_pixel:.2f}, of the mean {cast:.2f}")
    assert per_pixel <= 3.0 and cast <= 1.0
    assert delta_e(misread, expected).mean() > 6.0  # the shift the conversion undoes is real
