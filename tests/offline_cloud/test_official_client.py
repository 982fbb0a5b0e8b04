"""The official ``replicate`` client (1.0.7) against the offline predictions service.

The service runs as a subprocess over real HTTPS; the client is pointed at its root URL (the
client adds ``/v1`` itself) and trusts the service's throw-away CA through an httpx transport:
the client wraps whatever transport it is given in its own retrying one, and a transport passed
to httpx makes httpx ignore ``verify=`` on the client, so the CA goes on the transport.
"""

from __future__ import annotations

import io
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pydantic import v1 as pydantic_v1
from replicate.client import Client
from replicate.exceptions import ReplicateError
from replicate.helpers import FileOutput
from replicate.webhook import InvalidSignatureError, WebhookSigningSecret

from offline_cloud.tls import TlsFiles, make_certificates
from tests.offline_cloud.test_predictions_service import (
    SECRET,
    THROTTLED,
    TINY_URL,
    TOKEN,
    VERSION,
    Api,
    Receiver,
    data_url,
    encode,
    make_receiver,
    start_server,
    stop_server,
)

MODEL = "lucataco/remove-bg"


class RecordingTransport(httpx.HTTPTransport):
    """Trusts the service's CA and notes each request the client sends (method, path, Prefer)."""

    def __init__(self, ca: str) -> None:
        super().__init__(verify=ssl.create_default_context(cafile=ca))
        self.requests: list[tuple[str, str, str | None]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path, request.headers.get("Prefer")))
        return super().handle_request(request)


def make_client(api: Api, token: str = TOKEN, transport: RecordingTransport | None = None) -> Client:
    client = Client(api_token=token, base_url=api.base, transport=transport or RecordingTransport(api.ca))
    client.poll_interval = 0.1  # the default 0.5 s would only slow the tests
    return client


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
    assert server.call("DELETE", "/_admin/faults").status_code == 200
    assert server.call("POST", "/_admin/reset-stats").status_code == 200
    return server


@pytest.fixture
def client(api: Api) -> Client:
    return make_client(api)


def assert_cutout_png(png: bytes, size: tuple[int, int]) -> None:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "RGBA" and image.size == size


def test_create_get_wait_list_and_a_validated_webhook(api: Api, client: Client, receiver: Receiver) -> None:
    hook = receiver.new_hook()
    prediction = client.predictions.create(
        version=VERSION,
        input={"image": TINY_URL},
        webhook=receiver.url(hook),
        webhook_events_filter=["completed"],
    )
    created_status = prediction.status  # a copy: mypy would keep the narrowed attribute past wait()
    assert created_status == "starting" and prediction.model == MODEL and prediction.version == VERSION
    assert prediction.urls is not None
    assert prediction.urls["get"] == f"{api.base}/v1/predictions/{prediction.id}"
    assert prediction.urls["web"] == f"{api.base}/p/{prediction.id}"

    fetched = client.predictions.get(prediction.id)
    assert fetched.id == prediction.id and fetched.input == {"image": TINY_URL}
    prediction.wait()
    assert prediction.status == "succeeded" and prediction.completed_at is not None
    assert isinstance(prediction.output, str) and prediction.output.startswith(f"{api.base}/delivery/")
    assert prediction.metrics is not None and prediction.metrics["predict_time"] > 0
    assert_cutout_png(FileOutput(prediction.output, client).read(), (64, 48))

    page = client.predictions.list()
    assert prediction.id in [p.id for p in page.results] and page.next is None

    # The client's own validation of a real delivery, with the secret fetched through the client.
    secret = client.webhooks.default.secret()
    assert secret.key == SECRET
    (delivery,) = receiver.wait(hook, 1)
    body = delivery.body.decode()
    assert client.webhooks.validate(headers=delivery.headers, body=body, secret=secret, tolerance=300) is None
    assert '"status":"succeeded"' in body and '"webhook"' not in body  # not echoed by default
    with pytest.raises(InvalidSignatureError):
        client.webhooks.validate(headers=delivery.headers, body=body.replace("succeeded", "failed"), secret=secret)
    with pytest.raises(InvalidSignatureError):
        wrong = WebhookSigningSecret(key="whsec_" + "A" * 43 + "=")
        client.webhooks.validate(headers=delivery.headers, body=body, secret=wrong)


def test_cancel(api: Api, client: Client) -> None:
    api.faults(model_latency_seconds=5.0)
    first = client.predictions.create(version=VERSION, input={"image": TINY_URL})
    canceled = client.predictions.cancel(first.id)
    assert canceled.status == "canceled" and canceled.output is None
    second = client.predictions.create(version=VERSION, input={"image": TINY_URL})
    second.cancel()  # the model's method, which updates the object in place
    assert second.status == "canceled"
    assert client.predictions.get(second.id).status == "canceled"
    assert api.stats()["by_status"] == {"canceled": 2}


def test_run_with_an_uploaded_file_and_with_a_data_url(api: Api, tmp_path: Path) -> None:
    transport = RecordingTransport(api.ca)
    client = make_client(api, transport=transport)
    path = tmp_path / "tiny.png"
    path.write_bytes(encode(np.full((36, 52, 3), 120, dtype=np.uint8), "PNG"))
    ref = f"{MODEL}:{VERSION}"
    # An open file: the client uploads it (POST /v1/files) and passes the file's URL as input;
    # run() sends Prefer: wait and reads the version (GET /v1/models/.../versions/...).
    with path.open("rb") as image:
        output = client.run(ref, input={"image": image})
    assert isinstance(output, FileOutput) and output.url.startswith(f"{api.base}/delivery/")
    assert_cutout_png(output.read(), (52, 36))
    # Sync mode answered with the outcome, so the client never had to poll the prediction.
    assert transport.requests == [
        ("POST", "/v1/files", None),
        ("POST", "/v1/predictions", "wait"),
        ("GET", f"/v1/models/{MODEL}/versions/{VERSION}", None),
        ("GET", output.url.removeprefix(api.base), None),
    ]
    assert [f.name for f in client.files.list()][0] == "tiny.png"

    with path.open("rb") as image:
        inline = client.run(ref, input={"image": image}, file_encoding_strategy="base64")
    assert isinstance(inline, FileOutput)
    assert_cutout_png(inline.read(), (52, 36))
    plain = client.run(ref, input={"image": data_url(path.read_bytes(), "image/png")}, use_file_output=False)
    assert isinstance(plain, str) and plain.endswith("/output.png")
    stats = api.stats()
    assert stats["predictions_created"] == 3 and stats["by_status"] == {"succeeded": 3}


def test_models_and_versions(api: Api, client: Client) -> None:
    model = client.models.get(MODEL)
    assert (model.owner, model.name, model.visibility) == ("lucataco", "remove-bg", "public")
    assert model.latest_version is not None and model.latest_version.id == VERSION
    version = model.versions.get(VERSION)
    assert version.id == VERSION and version.openapi_schema["components"]["schemas"]["Input"]["required"] == ["image"]
    assert [v.id for v in model.versions.list()] == [VERSION]
    with pytest.raises(ReplicateError) as unknown:
        client.models.get("nobody/nothing")
    assert unknown.value.status == 404
    with pytest.raises(ReplicateError) as not_official:
        client.models.predictions.create(model=MODEL, input={"image": TINY_URL})
    assert not_official.value.status == 404
    with pytest.raises(ReplicateError) as bad_version:
        client.predictions.create(version="0" * 64, input={"image": TINY_URL})
    assert bad_version.value.status == 422
    with pytest.raises(ReplicateError) as bad_token:
        make_client(api, token="wrong").predictions.list()
    assert bad_token.value.status == 401


def test_client_retries_a_throttled_get_after_retry_after(api: Api, client: Client) -> None:
    prediction = client.predictions.create(version=VERSION, input={"image": TINY_URL})
    api.faults(get_429_rate=1.0, create_429_rate=1.0, retry_after_seconds=1)
    # The client never retries a create: the 429 reaches the caller with Replicate's body.
    with pytest.raises(ReplicateError) as throttled:
        client.predictions.create(version=VERSION, input={"image": TINY_URL})
    assert throttled.value.status == 429 and throttled.value.detail == THROTTLED.format(1)

    # It retries GETs, sleeping for a whole-second Retry-After (it ignores fractional ones).
    threading.Timer(1.5, lambda: api.faults(get_429_rate=0.0)).start()
    began = time.monotonic()
    fetched = client.predictions.get(prediction.id)
    assert fetched.id == prediction.id and time.monotonic() - began >= 1.4
    assert api.stats()["faults"]["get_429"] >= 2


def test_the_client_cannot_parse_an_aborted_prediction(api: Api, client: Client) -> None:
    """A gap in the official client, not the service: Replicate documents ``aborted`` (Cancel-After
    passing before a prediction starts) but replicate 1.0.7 types ``status`` without it."""
    api.faults(model_latency_seconds=8.0)
    busy = [client.predictions.create(version=VERSION, input={"image": TINY_URL}) for _ in range(2)]
    queued = api.created(headers={"Cancel-After": "5s"})  # both workers are busy
    deadline = time.monotonic() + 10
    while api.get(queued["id"])["status"] != "aborted":
        assert time.monotonic() < deadline, "never aborted"
        time.sleep(0.1)
    with pytest.raises(pydantic_v1.ValidationError, match="aborted"):
        client.predictions.get(queued["id"])
    for prediction in busy:
        client.predictions.cancel(prediction.id)
