"""The offline predictions service, driven over real HTTPS as a subprocess.

Every test talks to the command-line server through its public API; webhooks land on a small
receiver in this process, which also serves input images over plain HTTP.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image
from standardwebhooks import Webhook

from offline_cloud.predictions_service.faults import Faults, per_prediction_draw
from offline_cloud.predictions_service.latency import parse_latency
from offline_cloud.predictions_service.ratelimit import TokenBucket, whole_seconds
from offline_cloud.stack import die_with_parent, free_port
from offline_cloud.tls import TlsFiles, make_certificates
from tests.photos import sample

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token-123"
SECRET = "whsec_" + base64.b64encode(b"offline-cloud-test-secret-key!!!").decode()
VERSION = "95fcc2a26d3899cd6c2691c900465aaeff466285a65c14638cc5f36f34befaf1"
TERMINAL = {"succeeded", "failed", "canceled", "aborted"}
# Replicate's documented 429 body, word for word but for the number of seconds.
THROTTLED = "Request was throttled. Your rate limit resets in ~{}s."


# --- helpers -----------------------------------------------------------------------------------


def encode(array: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt)
    return out.getvalue()


def data_url(payload: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(payload).decode()


def json_object(value: Any) -> dict[str, Any]:
    """A decoded JSON value that must be an object."""
    assert isinstance(value, dict), value
    return value


# A small image for tests where the mask itself does not matter (the model still runs on it).
TINY_URL = data_url(encode(np.full((48, 64, 3), 200, dtype=np.uint8), "PNG"), "image/png")


def parse_time(value: str) -> float:
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float

    @property
    def json(self) -> dict[str, Any]:
        return json_object(json.loads(self.body))


@dataclass
class Receiver:
    """Webhook receiver (scripted answers per path) and static file server on 127.0.0.1."""

    server: ThreadingHTTPServer
    deliveries: list[Delivery] = field(default_factory=list)
    scripts: dict[str, list[int]] = field(default_factory=dict)
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def new_hook(self, *answers: int) -> str:
        path = f"/hook/{uuid.uuid4().hex}"
        self.scripts[path] = list(answers)
        return path

    def at(self, path: str) -> list[Delivery]:
        with self.changed:
            return [d for d in self.deliveries if d.path == path]

    def wait(self, path: str, count: int = 1, timeout: float = 15.0, terminal: bool = False) -> list[Delivery]:
        """Deliveries to ``path`` once there are ``count`` (and a terminal one, if asked)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                got = [d for d in self.deliveries if d.path == path]
                done = not terminal or any(d.json["status"] in TERMINAL for d in got)
                if len(got) >= count and done:
                    return got
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} deliveries to {path}, got {len(got)}")
                self.changed.wait(remaining)


def make_receiver() -> Receiver:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            delivery = Delivery(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
            with receiver.changed:
                receiver.deliveries.append(delivery)
                script = receiver.scripts.get(self.path)
                status = script.pop(0) if script else 200
                receiver.changed.notify_all()
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "/redirected")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            found = receiver.files.get(self.path)
            if found is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            payload, mime = found
            self.send_response(200)
            self.send_header("Content-Type", mime)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = Receiver(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver


@dataclass
class Api:
    base: str
    ca: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def call(self, method: str, path: str, token: str | None = TOKEN, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        # verify= per call: a Session's verify is overridden by REQUESTS_CA_BUNDLE in the environment.
        return requests.request(method, self.base + path, headers=headers, verify=self.ca, timeout=15, **kwargs)

    def create(
        self,
        image: str = TINY_URL,
        prefix: str = "/v1",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> requests.Response:
        body = {"version": VERSION, "input": {"image": image}, **extra}
        return self.call("POST", f"{prefix}/predictions", json=body, headers=headers)

    def created(self, **kwargs: Any) -> dict[str, Any]:
        response = self.create(**kwargs)
        assert response.status_code == 201, response.text
        return json_object(response.json())

    def get(self, prediction_id: str, prefix: str = "/v1") -> dict[str, Any]:
        response = self.call("GET", f"{prefix}/predictions/{prediction_id}")
        assert response.status_code == 200, response.text
        return json_object(response.json())

    def wait(self, prediction_id: str, until: set[str] = TERMINAL, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            prediction = self.get(prediction_id)
            if prediction["status"] in until:
                return prediction
            assert time.monotonic() < deadline, f"still {prediction['status']}: {prediction}"
            time.sleep(0.05)

    def faults(self, **knobs: Any) -> dict[str, Any]:
        response = self.call("POST", "/_admin/faults", json=knobs)
        assert response.status_code == 200, response.text
        return json_object(response.json())

    def stats(self) -> dict[str, Any]:
        return json_object(self.call("GET", "/_admin/stats").json())

    def admin_predictions(self) -> dict[str, dict[str, Any]]:
        """``GET /_admin/predictions`` by prediction id."""
        listing = self.call("GET", "/_admin/predictions").json()["predictions"]
        return {entry["id"]: entry for entry in listing}

    def deliveries_of(self, prediction_id: str, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The service's delivery records of one prediction, once there are ``count``."""
        deadline = time.monotonic() + timeout
        while True:
            records = [d for d in self.stats()["webhook_deliveries"] if d["prediction_id"] == prediction_id]
            if len(records) >= count:
                return records
            assert time.monotonic() < deadline, f"{len(records)} deliveries of {prediction_id}, wanted {count}"
            time.sleep(0.05)

    def download(self, url: str) -> requests.Response:
        return requests.get(url, verify=self.ca, timeout=15)


def start_server(tls: TlsFiles, tmp: Path, *extra: str) -> Api:
    port = free_port()
    base = f"https://localhost:{port}"
    log_path = tmp / f"server-{port}.log"
    command = [
        sys.executable,
        "-m",
        "offline_cloud.predictions_service",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--public-base-url", base,
        "--prefix", "/v1",
        "--prefix", "/replicate/v1",
        "--api-token", TOKEN,
        "--webhook-secret", SECRET,
        "--model-version", VERSION,
        "--certfile", str(tls.cert),
        "--keyfile", str(tls.key),
        "--data-dir", str(tmp / f"data-{port}"),
        "--workers", "2",
        "--webhook-retry-delays", "0.2,0.3,0.5",
        *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
    api = Api(base, str(tls.ca_cert), process, log_path)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text()}")
        try:
            if api.call("GET", "/health", token=None).json() == {"ok": True}:
                return api
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"server not ready:\n{log_path.read_text()}")
        time.sleep(0.1)


def stop_server(api: Api) -> None:
    api.process.terminate()
    try:
        api.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        api.process.kill()


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = make_receiver()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture(scope="module")
def server(tls: TlsFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    api = start_server(tls, tmp_path_factory.mktemp("server"))
    yield api
    stop_server(api)


@pytest.fixture
def api(server: Api) -> Api:
    """The shared server with default knobs and zeroed counters."""
    assert server.call("DELETE", "/_admin/faults").status_code == 200
    assert server.call("POST", "/_admin/reset-stats").status_code == 200
    return server


def assert_cutout(png: bytes) -> None:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    assert image.mode == "RGBA"
    alpha = np.asarray(image.getchannel("A"))
    h, w = alpha.shape
    corners = [alpha[0, 0], alpha[0, w - 1], alpha[h - 1, 0], alpha[h - 1, w - 1]]
    assert max(corners) < 20, corners
    assert alpha[h // 2, w // 2] > 200


def verified(delivery: Delivery) -> dict[str, Any]:
    return json_object(Webhook(SECRET).verify(delivery.body, delivery.headers))


def assert_throttled(response: requests.Response, seconds: int | None = None) -> int:
    """A 429 with exactly Replicate's body and a whole-second Retry-After; returns the seconds."""
    assert response.status_code == 429, response.text
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) >= 1, retry_after  # HTTP allows no fractions
    assert response.json() == {"detail": THROTTLED.format(retry_after)}
    if seconds is not None:
        assert int(retry_after) == seconds
    return int(retry_after)


# --- the contract ------------------------------------------------------------------------------


def test_coffee_data_url_succeeds_with_signed_webhooks(api: Api, receiver: Receiver) -> None:
    hook = receiver.new_hook()
    image = data_url(encode(sample("coffee"), "JPEG"), "image/jpeg")
    created = api.created(image=image, webhook=receiver.url(hook))
    assert created["status"] == "starting"
    assert created["model"] == "lucataco/remove-bg"
    assert created["urls"]["get"] == f"{api.base}/v1/predictions/{created['id']}"
    assert created["urls"]["web"] == f"{api.base}/p/{created['id']}"
    assert "stream" not in created["urls"]  # no streaming; the official client wants str values only
    assert created["deadline"] is None  # no Cancel-After
    assert created["id"].isalnum() and created["id"].islower() and len(created["id"]) >= 20
    # Replicate's published schema has no webhook fields: left out unless --echo-webhook.
    assert "webhook" not in created and "webhook_events_filter" not in created

    done = api.wait(created["id"])
    assert done["status"] == "succeeded", done
    assert done["output"] == f"{api.base}/delivery/{created['id']}/output.png"
    assert done["completed_at"].endswith("Z") and done["metrics"]["predict_time"] > 0
    output = api.download(done["output"])
    assert output.status_code == 200
    assert output.headers["Content-Type"] == "image/png"
    assert_cutout(output.content)

    # Default filter: start, logs, output and completed, in order, all signed.
    bodies = [verified(d) for d in receiver.wait(hook, terminal=True)]
    assert all("webhook" not in b and "webhook_events_filter" not in b for b in bodies)
    assert "webhook" not in done
    assert bodies[0]["status"] == "processing"
    assert bodies[-1]["status"] == "succeeded" and bodies[-1]["output"] == done["output"]
    assert any(b["status"] == "processing" and b["output"] == done["output"] for b in bodies)
    assert all(b["status"] == "processing" for b in bodies[:-1])


def test_astronaut_http_url_succeeds(api: Api, receiver: Receiver) -> None:
    receiver.files["/astronaut.png"] = (encode(sample("astronaut"), "PNG"), "image/png")
    created = api.created(image=receiver.url("/astronaut.png"))
    done = api.wait(created["id"])
    assert done["status"] == "succeeded", done
    image = Image.open(io.BytesIO(api.download(done["output"]).content))
    assert image.mode == "RGBA" and image.size == (512, 512)
    alpha = np.asarray(image.getchannel("A"))
    # The top corners are background (flag, wall). The bottom corners are not checked: the
    # model rightly keeps parts of the suit and helmet that touch the bottom edge.
    assert alpha[0, 0] < 20 and alpha[0, 511] < 20
    assert alpha[40, 330] < 20  # wall between the head and the shuttle model
    assert alpha[256, 256] > 200 and alpha[100, 230] > 200  # body and face


def test_input_fetch_and_decode_errors_fail_the_prediction(api: Api, receiver: Receiver) -> None:
    missing = api.created(image=receiver.url("/no-such-image.png"))
    garbage = api.created(image=data_url(b"this is not an image", "image/png"))
    failed_fetch = api.wait(missing["id"])
    failed_decode = api.wait(garbage["id"])
    assert failed_fetch["status"] == "failed" and "HTTP 404" in failed_fetch["error"]
    assert failed_decode["status"] == "failed" and "could not decode" in failed_decode["error"]


def test_terminal_webhook_is_retried_with_the_same_id(api: Api, receiver: Receiver) -> None:
    hook = receiver.new_hook(500, 302, 200)  # a redirect is a failure, never followed
    created = api.created(webhook=receiver.url(hook), webhook_events_filter=["completed"])
    deliveries = receiver.wait(hook, 3)
    assert len({d.headers["webhook-id"] for d in deliveries}) == 1
    assert all(verified(d)["status"] == "succeeded" for d in deliveries)
    assert all(d.json["id"] == created["id"] for d in deliveries)
    assert receiver.at("/redirected") == []
    attempts = [d for d in api.stats()["webhook_deliveries"] if d["prediction_id"] == created["id"]]
    assert [(d["attempt"], d["status_code"]) for d in attempts] == [(1, 500), (2, 302), (3, 200)]
    time.sleep(0.6)
    assert len(receiver.at(hook)) == 3  # no further attempts after the 2xx


def test_auth_is_required(api: Api) -> None:
    for token in (None, "wrong-token"):
        for method, path in [
            ("POST", "/v1/predictions"),
            ("GET", "/v1/predictions"),
            ("GET", "/v1/predictions/abc"),
            ("POST", "/v1/predictions/abc/cancel"),
            ("GET", "/v1/webhooks/default/secret"),
            ("GET", "/v1/models/lucataco/remove-bg"),
            ("GET", f"/v1/models/lucataco/remove-bg/versions/{VERSION}"),
            ("POST", f"/v1/models/lucataco/remove-bg/versions/{VERSION}/predictions"),
            ("POST", "/v1/files"),
            ("GET", "/v1/files"),
            ("GET", "/_admin/faults"),
            ("GET", "/_admin/stats"),
        ]:
            response = api.call(method, path, token=token, json={})
            assert response.status_code == 401, (method, path, token)
            problem = response.json()
            assert problem["status"] == 401 and problem["title"] and problem["detail"]
    assert api.call("GET", "/v1/webhooks/default/secret").json() == {"key": SECRET}
    assert api.stats()["predictions_created"] == 0


def test_invalid_requests_are_rejected(api: Api) -> None:
    unknown = api.call("POST", "/v1/predictions", json={"version": "0" * 64, "input": {"image": TINY_URL}})
    assert unknown.status_code == 422 and unknown.json()["status"] == 422
    for body in [
        {"version": VERSION, "input": {}},
        {"version": VERSION, "input": {"image": 5}},
        {"version": VERSION, "input": {"image": "ftp://example.com/a.png"}},
        {"version": VERSION, "input": "nope"},
        {"version": VERSION, "input": {"image": TINY_URL}, "webhook_events_filter": ["bogus"]},
    ]:
        assert api.call("POST", "/v1/predictions", json=body).status_code == 422, body
    bad_json = api.call("POST", "/v1/predictions", data=b"{not json", headers={"Content-Type": "application/json"})
    assert bad_json.status_code in (400, 422)
    assert api.create(headers={"Cancel-After": "soon"}).status_code == 422
    for prefer in ("wait=0", "wait=61", "wait=soon"):
        refused = api.create(headers={"Prefer": prefer})
        assert refused.status_code == 422 and "1 to 60" in refused.json()["detail"], prefer
    # The official-model form of a version: this model is not one.
    assert api.call("POST", "/v1/predictions", json={"version": "lucataco/remove-bg", "input": {}}).status_code == 422
    assert api.call("GET", "/v1/predictions/doesnotexist").status_code == 404
    assert api.stats()["predictions_created"] == 0


def test_cancel_queued_running_and_terminal(api: Api) -> None:
    api.faults(model_latency_seconds=5.0)
    running = [api.created()["id"] for _ in range(2)]
    for prediction_id in running:
        api.wait(prediction_id, until={"processing"})
    queued = api.created()["id"]  # both workers are busy

    canceled = api.call("POST", f"/v1/predictions/{queued}/cancel").json()
    assert canceled["status"] == "canceled" and canceled["started_at"] is None
    began = time.monotonic()
    for prediction_id in running:
        answer = api.call("POST", f"/v1/predictions/{prediction_id}/cancel").json()
        assert answer["status"] == "canceled" and answer["started_at"] is not None
    again = api.call("POST", f"/v1/predictions/{running[0]}/cancel").json()
    assert again["status"] == "canceled" and again["completed_at"] == api.get(running[0])["completed_at"]

    # The latency is interrupted: the workers are free again at once.
    api.faults(model_latency_seconds=0.0)
    assert api.wait(api.created()["id"])["status"] == "succeeded"
    assert time.monotonic() - began < 4
    assert api.get(queued)["status"] == "canceled" and api.get(queued)["started_at"] is None
    assert all(api.get(p)["output"] is None for p in running)
    assert api.stats()["by_status"] == {"canceled": 3, "succeeded": 1}


def test_replicate_prefix_and_list(api: Api) -> None:
    created = api.created(prefix="/replicate/v1")
    assert created["urls"]["get"] == f"{api.base}/replicate/v1/predictions/{created['id']}"
    assert created["urls"]["cancel"].endswith(f"/replicate/v1/predictions/{created['id']}/cancel")
    response = api.call("GET", f"/replicate/v1/predictions/{created['id']}")
    assert response.status_code == 200 and response.json()["id"] == created["id"]
    listing = api.call("GET", "/replicate/v1/predictions").json()
    assert listing["next"] is None and listing["results"][0]["id"] == created["id"]
    assert api.call("GET", "/replicate/v1/webhooks/default/secret").json() == {"key": SECRET}
    assert api.wait(created["id"])["status"] == "succeeded"


def test_outputs_expire(tls: TlsFiles, tmp_path: Path) -> None:
    short = start_server(tls, tmp_path, "--output-ttl-seconds", "1", "--faults", '{"retry_after_seconds": 5}')
    try:
        assert short.call("GET", "/_admin/faults").json()["retry_after_seconds"] == 5
        done = short.wait(short.created()["id"])
        assert done["status"] == "succeeded" and done["data_removed"] is False
        assert short.download(done["output"]).status_code == 200
        deadline = time.monotonic() + 5
        while short.download(done["output"]).status_code != 404:
            assert time.monotonic() < deadline, "output never expired"
            time.sleep(0.1)
        expired = short.get(done["id"])
        assert expired["output"] is None and expired["data_removed"] is True
        files = list((tmp_path / f"data-{short.base.rsplit(':', 1)[1]}").rglob("*.png"))
        assert files == []
    finally:
        stop_server(short)


def test_cancel_after_minimum_and_deadline(api: Api) -> None:
    # Replicate documents 5 s as the shortest Cancel-After.
    for short in ("4s", "4999ms", "0.5s", "0"):
        refused = api.create(headers={"Cancel-After": short})
        assert refused.status_code == 422, short
        assert refused.json()["status"] == 422 and "at least 5s" in refused.json()["detail"]
    for accepted, seconds in (("5s", 5.0), ("1h30m", 5400.0), ("5m", 300.0)):
        created = api.created(headers={"Cancel-After": accepted})
        assert parse_time(created["deadline"]) - parse_time(created["created_at"]) == pytest.approx(seconds, abs=0.01)
        assert api.get(created["id"])["deadline"] == created["deadline"]
        assert api.wait(created["id"])["status"] == "succeeded"
    assert api.stats()["predictions_created"] == 3


def test_cancel_after_aborts_queued_and_cancels_running(api: Api) -> None:
    api.faults(model_latency_seconds=9.0)
    running = api.created(headers={"Cancel-After": "7s"})["id"]
    blocker = api.created()["id"]
    api.wait(running, until={"processing"})
    api.wait(blocker, until={"processing"})
    # Both workers are busy; its deadline comes before either frees up.
    queued = api.created(headers={"Cancel-After": "5s"})["id"]

    aborted = api.wait(queued, timeout=10)
    assert aborted["status"] == "aborted" and aborted["started_at"] is None
    assert parse_time(aborted["completed_at"]) >= parse_time(aborted["deadline"])
    canceled = api.wait(running, timeout=10)
    assert canceled["status"] == "canceled" and canceled["started_at"] is not None
    assert canceled["metrics"]["predict_time"] < 8  # cut short at the deadline, not run for 9 s
    api.call("POST", f"/v1/predictions/{blocker}/cancel")


def test_prefer_wait_holds_the_create_until_terminal(api: Api) -> None:
    began = time.monotonic()
    response = api.create(headers={"Prefer": "wait=20"})
    assert response.status_code == 201  # still 201 in sync mode, as Replicate answers
    assert response.headers["Preference-Applied"] == "wait=20"
    body = response.json()
    assert body["status"] == "succeeded" and body["output"].endswith("/output.png"), body
    assert time.monotonic() - began < 20
    assert api.download(body["output"]).status_code == 200

    bare = api.create(headers={"Prefer": "wait"})  # no number: up to 60 s
    assert bare.status_code == 201 and bare.headers["Preference-Applied"] == "wait"
    assert bare.json()["status"] == "succeeded"

    # The wait runs out: the prediction as created ("starting"), which is what makes the
    # official client fall back to polling; the prediction carries on.
    api.faults(model_latency_seconds=3.0)
    began = time.monotonic()
    slow = api.create(headers={"Prefer": "wait=1"})
    assert 0.9 <= time.monotonic() - began < 2.5
    assert slow.status_code == 201 and slow.json()["status"] == "starting"
    assert api.wait(slow.json()["id"], timeout=10)["status"] == "succeeded"


def test_web_page_is_served_without_a_token(api: Api) -> None:
    done = api.wait(api.created()["id"])
    page = requests.get(done["urls"]["web"], verify=api.ca, timeout=15)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert done["id"] in page.text and "succeeded" in page.text and done["output"] in page.text
    assert "base64" not in page.text  # never the input
    assert requests.get(f"{api.base}/p/nosuchid", verify=api.ca, timeout=15).status_code == 404


def test_models_and_versions_routes(api: Api) -> None:
    model = api.call("GET", "/v1/models/lucataco/remove-bg")
    assert model.status_code == 200
    assert model.json()["owner"] == "lucataco" and model.json()["latest_version"]["id"] == VERSION
    version = api.call("GET", f"/replicate/v1/models/lucataco/remove-bg/versions/{VERSION}").json()
    assert version["id"] == VERSION and version["openapi_schema"]["components"]["schemas"]["Output"]["type"] == "string"
    assert api.call("GET", "/v1/models/lucataco/remove-bg/versions").json()["results"][0]["id"] == VERSION
    for path in ("/v1/models/nobody/nothing", "/v1/models/lucataco/remove-bg/versions/" + "0" * 64):
        missing = api.call("GET", path)
        assert missing.status_code == 404 and missing.json()["status"] == 404, path

    body = {"input": {"image": TINY_URL}}
    created = api.call("POST", f"/v1/models/lucataco/remove-bg/versions/{VERSION}/predictions", json=body)
    assert created.status_code == 201 and created.json()["version"] == VERSION
    assert api.wait(created.json()["id"])["status"] == "succeeded"
    wrong_version = api.call("POST", f"/v1/models/lucataco/remove-bg/versions/{'0' * 64}/predictions", json=body)
    assert wrong_version.status_code == 422
    unknown_model = api.call("POST", f"/v1/models/nobody/nothing/versions/{VERSION}/predictions", json=body)
    assert unknown_model.status_code == 404
    # Not an official model: the model route answers a stable 404, as on Replicate.
    official_route = api.call("POST", "/v1/models/lucataco/remove-bg/predictions", json=body)
    assert official_route.status_code == 404 and "official" in official_route.json()["detail"]
    assert api.stats()["predictions_created"] == 1


def test_uploaded_file_as_input(api: Api) -> None:
    png = encode(np.full((40, 30, 3), 90, dtype=np.uint8), "PNG")
    upload = api.call("POST", "/v1/files", files={"content": ("tiny.png", png, "image/png")})
    assert upload.status_code == 201, upload.text
    uploaded = upload.json()
    assert uploaded["size"] == len(png) and uploaded["content_type"] == "image/png" and uploaded["name"] == "tiny.png"
    assert uploaded["urls"]["get"] == f"{api.base}/v1/files/{uploaded['id']}"
    assert api.call("GET", f"/v1/files/{uploaded['id']}").json() == uploaded
    assert api.call("GET", f"/v1/files/{uploaded['id']}/download").content == png
    assert uploaded["id"] in [f["id"] for f in api.call("GET", "/v1/files").json()["results"]]

    # The service reads its own file URLs from its store, as Replicate does.
    done = api.wait(api.created(image=uploaded["urls"]["get"])["id"])
    assert done["status"] == "succeeded", done
    assert Image.open(io.BytesIO(api.download(done["output"]).content)).size == (30, 40)

    assert api.call("DELETE", f"/v1/files/{uploaded['id']}").status_code == 204
    assert api.call("GET", f"/v1/files/{uploaded['id']}").status_code == 404
    gone = api.wait(api.created(image=uploaded["urls"]["get"])["id"])
    assert gone["status"] == "failed" and "not found" in gone["error"]


# --- fault knobs -------------------------------------------------------------------------------


def test_model_latency(api: Api) -> None:
    api.faults(model_latency_seconds=1.0)
    done = api.wait(api.created()["id"])
    assert done["status"] == "succeeded"
    assert done["metrics"]["predict_time"] >= 1.0


def test_fail_rate(api: Api) -> None:
    api.faults(fail_rate=1.0)
    done = api.wait(api.created()["id"])
    assert done["status"] == "failed" and done["error"] == "injected failure"
    stats = api.stats()
    assert stats["faults"]["failed_predictions"] == 1
    assert stats["by_status"] == {"failed": 1}


@pytest.mark.parametrize(
    ("knob", "code", "counter"), [("create_429_rate", 429, "create_429"), ("create_5xx_rate", 503, "create_5xx")]
)
def test_create_faults_create_nothing(api: Api, knob: str, code: int, counter: str) -> None:
    before = len(api.call("GET", "/v1/predictions").json()["results"])
    api.faults(**{knob: 1.0, "retry_after_seconds": 2})
    for _ in range(3):
        response = api.create()
        if code == 429:
            assert_throttled(response, seconds=2)
        else:
            assert response.status_code == code and response.json()["status"] == code
    assert len(api.call("GET", "/v1/predictions").json()["results"]) == before
    stats = api.stats()
    assert stats["faults"][counter] == 3 and stats["predictions_created"] == 0
    assert stats["throttled"] == {"create": 0, "other": 0}  # injected, not the rate limiter


def test_get_faults(api: Api) -> None:
    prediction_id = api.created()["id"]
    api.faults(get_429_rate=1.0, retry_after_seconds=3)
    assert_throttled(api.call("GET", f"/v1/predictions/{prediction_id}"), seconds=3)
    # A fractional knob is rounded up: Retry-After is whole seconds only, and at least 1.
    api.faults(retry_after_seconds=1.2)
    assert_throttled(api.call("GET", f"/v1/predictions/{prediction_id}"), seconds=2)
    api.faults(retry_after_seconds=0)
    assert_throttled(api.call("GET", f"/v1/predictions/{prediction_id}"), seconds=1)
    api.faults(get_429_rate=0.0, get_5xx_rate=1.0)
    assert api.call("GET", f"/v1/predictions/{prediction_id}").status_code == 503
    api.faults(get_5xx_rate=0.0)
    assert api.wait(prediction_id)["status"] == "succeeded"
    faults = api.stats()["faults"]
    assert faults["get_429"] == 3 and faults["get_5xx"] == 1


def test_seed_makes_faults_reproducible(api: Api) -> None:
    def pattern() -> list[int]:
        api.faults(seed=1234, get_429_rate=0.5)
        return [api.call("GET", "/v1/predictions/nosuchid").status_code for _ in range(16)]

    first = pattern()
    assert set(first) == {404, 429}
    assert pattern() == first


def test_webhook_drop(api: Api, receiver: Receiver) -> None:
    api.faults(webhook_drop_rate=1.0)
    hook = receiver.new_hook()
    done = api.wait(api.created(webhook=receiver.url(hook), webhook_events_filter=["completed"])["id"])
    assert done["status"] == "succeeded"
    time.sleep(0.5)
    assert receiver.at(hook) == []
    assert api.stats()["faults"]["webhooks_dropped"] == 1


def test_webhook_duplicate(api: Api, receiver: Receiver) -> None:
    api.faults(webhook_duplicate_rate=1.0)
    hook = receiver.new_hook()
    api.created(webhook=receiver.url(hook), webhook_events_filter=["completed"])
    first, second = receiver.wait(hook, 2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert verified(first)["status"] == verified(second)["status"] == "succeeded"
    stats = api.stats()
    assert stats["faults"]["webhooks_duplicated"] == 1
    assert [d["kind"] for d in stats["webhook_deliveries"]] == ["delivery", "duplicate"]
    time.sleep(0.3)
    assert len(receiver.at(hook)) == 2


def test_webhook_delay(api: Api, receiver: Receiver) -> None:
    api.faults(webhook_delay_seconds=1.0)
    hook = receiver.new_hook()
    created = api.created(webhook=receiver.url(hook), webhook_events_filter=["completed"])
    (delivery,) = receiver.wait(hook, 1)
    done = api.get(created["id"])
    assert delivery.received_at - parse_time(done["completed_at"]) >= 0.95
    assert api.stats()["faults"]["webhooks_delayed"] == 1


def test_webhook_reorder(api: Api, receiver: Receiver) -> None:
    api.faults(webhook_reorder_rate=1.0)
    hook = receiver.new_hook()
    api.created(webhook=receiver.url(hook), webhook_events_filter=["completed"])
    terminal, stale = receiver.wait(hook, 2)
    assert verified(terminal)["status"] == "succeeded" and terminal.json["output"]
    stale_body = verified(stale)
    assert stale_body["status"] == "processing" and stale_body["output"] is None
    assert stale.headers["webhook-id"] != terminal.headers["webhook-id"]
    assert api.stats()["faults"]["webhooks_reordered"] == 1


def test_faults_knobs_api(api: Api) -> None:
    assert api.call("GET", "/_admin/faults").json()["fail_rate"] == 0.0
    merged = api.faults(fail_rate=0.25)
    assert merged["fail_rate"] == 0.25 and merged["retry_after_seconds"] == 1.0
    assert api.call("POST", "/_admin/faults", json={"no_such_knob": 1}).status_code == 422
    assert api.call("POST", "/_admin/faults", json={"fail_rate": 2}).status_code == 422
    assert api.call("GET", "/_admin/faults").json()["fail_rate"] == 0.25


# --- endpoints that are not Replicate: resale proxies and lost webhooks ----------------------


def test_endpoint_knobs_default_to_replicates_behaviour_and_are_checked(api: Api) -> None:
    knobs = api.call("GET", "/_admin/faults").json()
    assert knobs["webhooks_sent_rate"] == 1.0
    assert knobs["webhook_301_rate"] == 0.0
    assert knobs["create_answer_shape"] == "prediction"
    for bad in (
        {"webhooks_sent_rate": 1.5},
        {"webhooks_sent_rate": True},
        {"webhook_301_rate": -0.1},
        {"create_answer_shape": "xml"},
        {"create_answer_shape": 1},
        {"create_answer_shape": "data_only", "fail_rate": 2},  # one bad knob: nothing changes
    ):
        assert api.call("POST", "/_admin/faults", json=bad).status_code == 422, bad
    assert api.call("GET", "/_admin/faults").json() == knobs
    assert api.faults(create_answer_shape="data_only")["create_answer_shape"] == "data_only"
    assert api.call("DELETE", "/_admin/faults").json()["create_answer_shape"] == "prediction"
    # Settable at start as every knob is (--faults; test_a_resale_proxy_set_at_start_... starts one).
    started = Faults({"webhooks_sent_rate": 0.5, "webhook_301_rate": 1, "create_answer_shape": "prediction+data"}).get()
    assert (started["webhooks_sent_rate"], started["webhook_301_rate"]) == (0.5, 1.0)
    assert started["create_answer_shape"] == "prediction+data"
    with pytest.raises(ValueError, match="create_answer_shape"):
        Faults({"create_answer_shape": "xml"})
    # The default create answer is Replicate's prediction, at once: no proxy fields.
    created = api.created()
    assert created["status"] == "starting" and "data" not in created and "created" not in created


def test_per_prediction_draw_is_fixed_by_the_id_and_uniform() -> None:
    assert per_prediction_draw("webhooks_sent_rate", "abc") == per_prediction_draw("webhooks_sent_rate", "abc")
    assert per_prediction_draw("webhooks_sent_rate", "abc") != per_prediction_draw("webhook_301_rate", "abc")
    draws = [per_prediction_draw("webhooks_sent_rate", uuid.uuid4().hex) for _ in range(20_000)]
    assert all(0.0 <= d < 1.0 for d in draws)
    assert 0.48 < sum(d < 0.5 for d in draws) / len(draws) < 0.52
    faults = Faults({"webhooks_sent_rate": 0.5, "seed": 1})
    assert [faults.hits("webhooks_sent_rate", str(i)) for i in range(64)] == [
        per_prediction_draw("webhooks_sent_rate", str(i)) < 0.5 for i in range(64)
    ]


def test_webhooks_never_sent(api: Api, receiver: Receiver) -> None:
    api.faults(webhooks_sent_rate=0.0)
    hook = receiver.new_hook()
    created = api.created(webhook=receiver.url(hook))  # every event asked for
    assert api.wait(created["id"])["status"] == "succeeded"
    without_hook = api.created()
    time.sleep(0.5)
    assert receiver.at(hook) == []
    stats = api.stats()
    assert stats["webhook_deliveries"] == []
    assert stats["faults"]["webhooks_not_sent"] == 1  # only predictions given a webhook count
    listed = api.admin_predictions()
    assert listed[created["id"]]["webhooks_sent"] is False
    assert listed[created["id"]]["webhook"] == receiver.url(hook)  # what it was asked, kept
    assert listed[without_hook["id"]]["webhooks_sent"] is None


def test_webhooks_sent_for_a_share_of_predictions_decided_by_id(api: Api, receiver: Receiver) -> None:
    # Each is canceled at once (its terminal webhook is then "canceled"): no model run is needed.
    api.faults(webhooks_sent_rate=0.5, model_latency_seconds=30.0)
    hooks = {}
    for _ in range(8):
        hook = receiver.new_hook()
        prediction_id = api.created(webhook=receiver.url(hook), webhook_events_filter=["completed"])["id"]
        assert api.call("POST", f"/v1/predictions/{prediction_id}/cancel").json()["status"] == "canceled"
        hooks[prediction_id] = hook
    expected = {p: per_prediction_draw("webhooks_sent_rate", p) < 0.5 for p in hooks}
    for prediction_id, hook in hooks.items():
        if expected[prediction_id]:
            (delivery,) = receiver.wait(hook, 1)
            assert verified(delivery)["id"] == prediction_id and delivery.json["status"] == "canceled"
    time.sleep(0.5)
    for prediction_id, hook in hooks.items():
        assert len(receiver.at(hook)) == (1 if expected[prediction_id] else 0), prediction_id
    listed = api.admin_predictions()
    assert {p: listed[p]["webhooks_sent"] for p in hooks} == expected
    stats = api.stats()
    assert stats["faults"]["webhooks_not_sent"] == sum(not sent for sent in expected.values())
    assert {d["prediction_id"] for d in stats["webhook_deliveries"]} == {p for p, sent in expected.items() if sent}


def test_webhook_url_answering_301_loses_every_delivery(api: Api, receiver: Receiver) -> None:
    api.faults(webhook_301_rate=1.0)
    hook = receiver.new_hook()
    url = receiver.url(hook) + "?job=j1"
    created = api.created(webhook=url, webhook_events_filter=["completed"])
    assert api.wait(created["id"])["status"] == "succeeded"
    # The terminal webhook and its three retries (--webhook-retry-delays 0.2,0.3,0.5), each a
    # real 301 from the hop in front of the URL, pointing at the URL and not followed.
    attempts = api.deliveries_of(created["id"], 4)
    assert [(d["attempt"], d["status_code"]) for d in attempts] == [(1, 301), (2, 301), (3, 301), (4, 301)]
    assert {d["location"] for d in attempts} == {url}
    assert len({d["webhook_id"] for d in attempts}) == 1
    time.sleep(0.3)
    assert receiver.at(hook + "?job=j1") == [] and receiver.at("/redirected") == []
    assert len(api.deliveries_of(created["id"], 4)) == 4  # lost: nothing after the last retry
    assert api.stats()["faults"]["webhooks_answered_301"] == 1
    listed = api.admin_predictions()[created["id"]]
    assert listed["webhook_answered_301"] is True and listed["webhooks_sent"] is True
    assert listed["webhook"] == url
    assert "not followed" in api.log_path.read_text()

    # Off again: the next prediction's webhook reaches the receiver; the record has no location.
    api.faults(webhook_301_rate=0.0)
    other = receiver.new_hook()
    again = api.created(webhook=receiver.url(other), webhook_events_filter=["completed"])
    (delivery,) = receiver.wait(other, 1)
    assert verified(delivery)["id"] == again["id"]
    assert [(d["status_code"], d["location"]) for d in api.deliveries_of(again["id"], 1)] == [(200, None)]


def assert_proxy_data(body: dict[str, Any], api: Api) -> str:
    """``created`` (unix seconds) and ``data``: one URL to the cut-out; returns the URL."""
    assert isinstance(body["created"], int) and abs(body["created"] - time.time()) < 60
    (item,) = body["data"]
    assert set(item) == {"url"}
    output = api.download(item["url"])
    assert output.status_code == 200
    image = Image.open(io.BytesIO(output.content))
    assert image.format == "PNG" and image.mode == "RGBA"
    return str(item["url"])


def test_create_answered_as_prediction_plus_data(api: Api) -> None:
    api.faults(create_answer_shape="prediction+data")
    began = time.monotonic()
    response = api.create(prefix="/replicate/v1")  # no Prefer header: a proxy waits anyway
    assert response.status_code == 201, response.text
    body = json_object(response.json())
    assert body["status"] == "succeeded" and time.monotonic() - began < 30
    url = assert_proxy_data(body, api)
    assert url == body["output"] == f"{api.base}/delivery/{body['id']}/output.png"
    assert body["created"] == int(parse_time(body["created_at"]))
    assert "Preference-Applied" not in response.headers
    # The prediction itself is Replicate's: GET has no proxy fields.
    got = api.call("GET", f"/replicate/v1/predictions/{body['id']}").json()
    assert got["output"] == url and "data" not in got and "created" not in got

    api.faults(fail_rate=1.0)
    failed = api.create()
    assert failed.status_code == 201
    assert failed.json()["status"] == "failed" and failed.json()["data"] == []


def test_create_answered_in_the_proxy_shape_alone(api: Api) -> None:
    api.faults(create_answer_shape="data_only")
    response = api.create(prefix="/replicate/v1")
    assert response.status_code == 200, response.text
    body = json_object(response.json())
    assert set(body) == {"created", "data"}
    url = assert_proxy_data(body, api)
    # No id in the answer; the output URL names the prediction behind it.
    prediction_id = url.removeprefix(f"{api.base}/delivery/").removesuffix("/output.png")
    assert prediction_id in api.admin_predictions() and api.get(prediction_id)["status"] == "succeeded"

    api.faults(fail_rate=1.0)
    failed = api.create()
    assert failed.status_code == 200 and failed.json()["data"] == []
    api.faults(fail_rate=0.0, model_latency_seconds=3.0)
    # Prefer: wait=N shortens the hold; past it this shape has no id to poll, so 504.
    slow = api.create(headers={"Prefer": "wait=1"})
    assert slow.status_code == 504 and slow.json()["status"] == 504
    assert api.stats()["predictions_created"] == 3  # the slow one runs on, as upstream would


def test_create_answered_in_an_unknown_shape(api: Api, receiver: Receiver) -> None:
    api.faults(create_answer_shape="unknown")
    hook = receiver.new_hook()
    response = api.create(webhook=receiver.url(hook), webhook_events_filter=["completed"])
    assert response.status_code == 200 and response.json() == {"result": "ok"}
    # The prediction was created and runs (and is paid for) all the same.
    (delivery,) = receiver.wait(hook, 1)
    assert verified(delivery)["status"] == "succeeded"
    assert api.stats()["predictions_created"] == 1


def test_a_resale_proxy_set_at_start_answers_data_and_forwards_no_webhook(
    tls: TlsFiles, tmp_path: Path, receiver: Receiver
) -> None:
    proxy = start_server(tls, tmp_path, "--faults", '{"create_answer_shape": "data_only", "webhooks_sent_rate": 0}')
    try:
        hook = receiver.new_hook()
        response = proxy.create(prefix="/replicate/v1", webhook=receiver.url(hook))
        assert response.status_code == 200, response.text
        assert_proxy_data(json_object(response.json()), proxy)
        time.sleep(0.5)
        assert receiver.at(hook) == []
        stats = proxy.stats()
        assert stats["faults"]["webhooks_not_sent"] == 1 and stats["webhook_deliveries"] == []
    finally:
        stop_server(proxy)


# --- rate limits ---------------------------------------------------------------------------------


def test_token_bucket_arithmetic() -> None:
    now = [100.0]
    bucket = TokenBucket(per_minute=6, burst=2, clock=lambda: now[0])
    first, second, third = bucket.take(), bucket.take(), bucket.take()
    assert first.allowed and first.remaining == 1
    assert second.allowed and second.remaining == 0
    assert not third.allowed and third.wait_seconds == pytest.approx(10.0)
    now[0] += 4.0
    assert bucket.take().wait_seconds == pytest.approx(6.0)  # refused requests spend nothing
    now[0] += 6.0
    assert bucket.take().allowed
    now[0] += 3600.0
    assert [bucket.take().allowed for _ in range(3)] == [True, True, False]  # never above the burst
    assert [whole_seconds(s) for s in (0.0, 0.2, 1.0, 1.0000000001, 9.5)] == [1, 1, 1, 1, 10]


def test_rate_limiter_answers_replicates_429(tls: TlsFiles, tmp_path: Path) -> None:
    limited = start_server(
        tls,
        tmp_path,
        "--create-limit-per-minute", "6", "--create-burst", "2",
        "--other-limit-per-minute", "120", "--other-burst", "3",
    )  # fmt: skip
    try:
        first, second = limited.create(), limited.create()
        assert first.status_code == second.status_code == 201
        assert (first.headers["ratelimit-remaining"], second.headers["ratelimit-remaining"]) == ("1", "0")
        # The third create within the minute: an account allowed 6 a minute, burst 2.
        third = limited.create()
        assert assert_throttled(third) in (9, 10)  # the next token is ~10 s away (0.1 a second)

        prediction_id = first.json()["id"]
        gets = [limited.call("GET", f"/v1/predictions/{prediction_id}") for _ in range(4)]
        assert [g.status_code for g in gets[:3]] == [200, 200, 200]
        assert_throttled(gets[3], seconds=1)  # 2 a second: half a second, rounded up

        # Not limited: health, deliveries, the admin API; nor unauthenticated calls.
        for _ in range(10):
            assert limited.call("GET", "/health", token=None).status_code == 200
            assert limited.call("GET", "/_admin/stats").status_code == 200
            assert limited.call("GET", "/v1/predictions", token="wrong").status_code == 401
        stats = limited.stats()
        assert stats["throttled"] == {"create": 1, "other": 1}
        assert stats["faults"]["create_429"] == stats["faults"]["get_429"] == 0
        assert stats["predictions_created"] == 2
        assert stats["rate_limits"] == {"create": "6/min burst 2", "other": "120/min burst 3"}

        time.sleep(1.1)  # the Retry-After the GET was told
        assert limited.call("GET", f"/v1/predictions/{prediction_id}").status_code == 200
    finally:
        stop_server(limited)


def test_limits_off_with_zero(tls: TlsFiles, tmp_path: Path) -> None:
    unlimited = start_server(
        tls, tmp_path, "--create-limit-per-minute", "0", "--create-burst", "1", "--other-limit-per-minute", "0"
    )
    try:
        assert [unlimited.create().status_code for _ in range(4)] == [201] * 4
        response = unlimited.call("GET", "/v1/predictions")
        assert response.status_code == 200 and "ratelimit-remaining" not in response.headers
        assert unlimited.stats()["rate_limits"] == {"create": "unlimited", "other": "unlimited"}
    finally:
        stop_server(unlimited)


# --- webhook echo --------------------------------------------------------------------------------


def test_echo_webhook_puts_the_fields_back(tls: TlsFiles, tmp_path: Path, receiver: Receiver) -> None:
    echoing = start_server(tls, tmp_path, "--echo-webhook")
    try:
        hook = receiver.new_hook() + "?job=abc"  # the receiver records the path with its query
        url = receiver.url(hook)
        created = echoing.created(webhook=url, webhook_events_filter=["completed"])
        assert created["webhook"] == url and created["webhook_events_filter"] == ["completed"]
        (delivery,) = receiver.wait(hook, 1)
        body = verified(delivery)
        assert body["webhook"] == url and body["status"] == "succeeded"
        assert echoing.get(created["id"])["webhook"] == url
        assert echoing.call("GET", "/v1/predictions").json()["results"][0]["webhook"] == url
    finally:
        stop_server(echoing)


# --- fleet stand-in ------------------------------------------------------------------------------

FLEET_LOW, FLEET_HIGH = 1.5, 2.0


@pytest.fixture(scope="module")
def fleet(tls: TlsFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    api = start_server(tls, tmp_path_factory.mktemp("fleet"), "--fleet-latency", f"uniform:{FLEET_LOW},{FLEET_HIGH}")
    yield api
    stop_server(api)


@pytest.fixture
def fleet_api(fleet: Api) -> Api:
    assert fleet.call("DELETE", "/_admin/faults").status_code == 200
    assert fleet.call("POST", "/_admin/reset-stats").status_code == 200
    return fleet


def max_overlap(predictions: list[dict[str, Any]]) -> int:
    """The most predictions processing at one moment."""
    edges = sorted(
        [(parse_time(p["started_at"]), 1) for p in predictions]
        + [(parse_time(p["completed_at"]), -1) for p in predictions]
    )
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def test_fleet_latency_grammar() -> None:
    assert parse_latency("lognormal:3,0.5").params == (3.0, 0.5)
    assert str(parse_latency(" uniform: 2 , 5 ")) == "uniform:2,5"
    assert parse_latency("fixed:3").kind == "fixed"
    for bad in (
        "",
        "fixed",
        "fixed:",
        "fixed:-1",
        "uniform:5,2",
        "lognormal:0,1",
        "gamma:1,2",
        "fixed:1,2",
        "fixed:nan",
    ):
        with pytest.raises(ValueError):
            parse_latency(bad)
    refused = subprocess.run(
        [sys.executable, "-m", "offline_cloud.predictions_service", "--api-token", "t", "--webhook-secret", SECRET,
         "--fleet-latency", "gamma:1"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "lognormal:MEDIAN,SIGMA" in refused.stderr


def test_fleet_runs_many_at_once_with_labelled_outputs(fleet_api: Api, receiver: Receiver) -> None:
    coffee = data_url(encode(sample("coffee"), "JPEG"), "image/jpeg")  # 600x400
    hook = receiver.new_hook()
    created = [fleet_api.created(image=coffee, webhook=receiver.url(hook), webhook_events_filter=["completed"])]
    created += [fleet_api.created() for _ in range(59)]
    done = [fleet_api.wait(c["id"], timeout=30) for c in created]
    assert {d["status"] for d in done} == {"succeeded"}
    for prediction in done:
        assert FLEET_LOW - 0.05 <= prediction["metrics"]["predict_time"] <= FLEET_HIGH + 1.0, prediction["metrics"]
        assert "fleet stand-in (not the model)" in prediction["logs"]
    # Two model workers could never overlap more than two; the stand-in runs them all at once.
    assert max_overlap(done) >= 30

    image = Image.open(io.BytesIO(fleet_api.download(done[0]["output"]).content))
    assert image.format == "PNG" and image.mode == "RGBA"
    assert image.text["bgremove-offline-fleet"] == "stand-in"  # type: ignore[attr-defined]
    assert max(image.size) == 256 and image.size == (256, 171)  # downscaled, aspect kept
    alpha = np.asarray(image.getchannel("A"))
    assert alpha[0, 0] == alpha[0, -1] == alpha[-1, 0] == alpha[-1, -1] == 0 and alpha[85, 128] == 255

    (delivery,) = receiver.wait(hook, 1)
    assert verified(delivery)["status"] == "succeeded" and delivery.json["output"] == done[0]["output"]
    stats = fleet_api.stats()
    assert stats["mode"] == "fleet" and stats["fleet_latency"] == f"uniform:{FLEET_LOW},{FLEET_HIGH}"
    assert stats["by_status"] == {"succeeded": 60}
    assert "FLEET STAND-IN MODE" in fleet_api.log_path.read_text()


def test_fleet_honours_faults_cancel_and_deadlines(fleet_api: Api) -> None:
    undecodable = fleet_api.created(image=data_url(b"not an image", "image/png"))["id"]
    to_cancel = fleet_api.created()["id"]
    fleet_api.wait(to_cancel, until={"processing"})
    assert fleet_api.call("POST", f"/v1/predictions/{to_cancel}/cancel").json()["status"] == "canceled"
    bad = fleet_api.wait(undecodable)
    # As on the real path, a bad input fails the prediction once its latency has passed.
    assert bad["status"] == "failed" and "could not decode" in bad["error"]
    assert bad["metrics"]["predict_time"] >= FLEET_LOW - 0.05
    time.sleep(FLEET_HIGH - FLEET_LOW + 0.2)
    canceled = fleet_api.get(to_cancel)
    assert canceled["status"] == "canceled" and canceled["output"] is None

    fleet_api.faults(fail_rate=1.0)
    failed = fleet_api.wait(fleet_api.created()["id"])
    assert failed["status"] == "failed" and failed["error"] == "injected failure" and failed["output"] is None
    fleet_api.faults(fail_rate=0.0)

    synchronous = fleet_api.create(headers={"Prefer": "wait=10"})
    assert synchronous.status_code == 201 and synchronous.json()["status"] == "succeeded"

    fleet_api.faults(model_latency_seconds=10.0)  # added to the drawn latency in fleet mode
    deadline = fleet_api.created(headers={"Cancel-After": "5s"})["id"]
    cut = fleet_api.wait(deadline, timeout=10)
    assert cut["status"] == "canceled" and 4.9 <= cut["metrics"]["predict_time"] < 6.5
    assert fleet_api.stats()["faults"]["failed_predictions"] == 1
