"""HTTP routes: the Replicate predictions contract, output delivery and the admin API."""

from __future__ import annotations

import hmac
import json
import os
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, request, send_file
from werkzeug.exceptions import HTTPException

from .durations import parse_duration
from .inputs import is_supported_url
from .store import ALL_EVENTS, Prediction, new_prediction_id

if TYPE_CHECKING:
    from .service import Service


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"title": title, "detail": detail, "status": status})
    return Response(body, status=status, mimetype="application/problem+json", headers=headers)


def ok(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")


class InvalidRequest(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _seconds_header(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def create_app(service: Service) -> Flask:
    settings = service.settings
    app = Flask(__name__)
    # Base64 inflates by 4/3; leave room for the rest of the JSON body.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_input_bytes * 4 // 3 + 1024 * 1024

    def authorized() -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return False
        return hmac.compare_digest(token.strip().encode(), settings.api_token.encode())

    @app.before_request
    def require_token() -> Response | None:
        public = request.path == "/health" or request.path.startswith("/delivery/")
        if public or request.url_rule is None or authorized():
            return None
        return problem(401, "Unauthenticated", "You did not pass a valid authentication token")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return problem(exc.code or 500, exc.name, exc.description or exc.name)

    @app.get("/health")
    def health() -> Response:
        return ok({"ok": True})

    def injected(rate_knob_429: str, rate_knob_5xx: str, counter: str) -> Response | None:
        if service.faults.roll(rate_knob_429):
            service.stats.fault(f"{counter}_429")
            retry_after = _seconds_header(service.faults.seconds("retry_after_seconds"))
            return problem(
                429,
                "Request was throttled",
                "injected throttling; retry later",
                headers={"Retry-After": retry_after},
            )
        if service.faults.roll(rate_knob_5xx):
            service.stats.fault(f"{counter}_5xx")
            return problem(503, "Service Unavailable", "injected transient failure")
        return None

    def parse_create(prefix: str) -> tuple[Prediction, float | None]:
        body = request.get_json(silent=True)
        if body is None:
            raise InvalidRequest("the request body must be valid JSON")
        if not isinstance(body, dict):
            raise InvalidRequest("the request body must be a JSON object")
        version = body.get("version")
        known = {settings.model_version, f"{settings.model}:{settings.model_version}"}
        if version not in known:
            raise InvalidRequest(f"invalid version or not permitted: {version!r}")
        inputs = body.get("input")
        if not isinstance(inputs, dict):
            raise InvalidRequest("input must be an object")
        image = inputs.get("image")
        if not isinstance(image, str) or not image:
            raise InvalidRequest("input.image is required and must be a string")
        if not is_supported_url(image):
            raise InvalidRequest("input.image must be a data: URL or an http(s) URL")
        webhook = body.get("webhook")
        if webhook is not None and not (
            isinstance(webhook, str) and webhook.lower().startswith(("http://", "https://"))
        ):
            raise InvalidRequest("webhook must be an http(s) URL")
        events = body.get("webhook_events_filter")
        if events is None:
            events = list(ALL_EVENTS)
        elif not isinstance(events, list) or not all(e in ALL_EVENTS for e in events):
            raise InvalidRequest(f"webhook_events_filter must be a list drawn from {ALL_EVENTS}")
        cancel_after = None
        header = request.headers.get("Cancel-After")
        if header is not None:
            try:
                cancel_after = parse_duration(header)
            except ValueError as exc:
                raise InvalidRequest(f"invalid Cancel-After header: {exc}") from exc
        prediction = Prediction(
            id=new_prediction_id(),
            model=settings.model,
            version=settings.model_version,
            input={"image": image},
            prefix=prefix,
            webhook=webhook,
            webhook_events_filter=list(dict.fromkeys(events)),
        )
        return prediction, cancel_after

    def create_prediction(prefix: str) -> Response:
        # Injected faults answer before anything is read or created, as a front proxy would.
        fault = injected("create_429_rate", "create_5xx_rate", "create")
        if fault is not None:
            return fault
        try:
            prediction, cancel_after = parse_create(prefix)
        except InvalidRequest as exc:
            return problem(422, "Invalid input", exc.detail)
        snapshot = service.store.add(prediction)
        service.stats.prediction_created(prediction.id)
        service.runner.submit(prediction.id, cancel_after)
        return ok(snapshot, status=201)

    def get_prediction(prefix: str, prediction_id: str) -> Response:
        fault = injected("get_429_rate", "get_5xx_rate", "get")
        if fault is not None:
            return fault
        service.runner.expire(prediction_id)
        snapshot = service.store.snapshot(prediction_id)
        if snapshot is None:
            return problem(404, "Not found", f"prediction {prediction_id} not found")
        return ok(snapshot)

    def cancel_prediction(prefix: str, prediction_id: str) -> Response:
        if service.store.get(prediction_id) is None:
            return problem(404, "Not found", f"prediction {prediction_id} not found")
        service.runner.cancel(prediction_id)
        return ok(service.store.snapshot(prediction_id))

    def list_predictions(prefix: str) -> Response:
        service.runner.expire()
        return ok({"results": service.store.list(), "next": None, "previous": None})

    def webhook_secret(prefix: str) -> Response:
        return ok({"key": settings.webhook_secret})

    routes = [
        ("/predictions", create_prediction, "POST"),
        ("/predictions", list_predictions, "GET"),
        ("/predictions/<prediction_id>", get_prediction, "GET"),
        ("/predictions/<prediction_id>/cancel", cancel_prediction, "POST"),
        ("/webhooks/default/secret", webhook_secret, "GET"),
    ]
    for index, prefix in enumerate(settings.prefixes):
        for path, view, method in routes:
            app.add_url_rule(
                prefix + path,
                endpoint=f"{view.__name__}_{index}",
                view_func=view,
                methods=[method],
                defaults={"prefix": prefix},
            )

    @app.get("/delivery/<prediction_id>/output.png")
    def delivery(prediction_id: str) -> Response:
        service.runner.expire(prediction_id)
        prediction = service.store.get(prediction_id)
        if prediction is None or prediction.output is None:
            return problem(404, "Not found", "no such file (it may have expired)")
        try:
            handle = service.outputs.open(prediction_id)
        except FileNotFoundError:
            return problem(404, "Not found", "no such file (it may have expired)")
        response = send_file(handle, mimetype="image/png", download_name="output.png")
        response.content_length = os.fstat(handle.fileno()).st_size
        # send_file adds a Date header and so does the server; keep only the server's.
        del response.headers["Date"]
        return response

    @app.route("/_admin/faults", methods=["GET", "POST", "DELETE"])
    def admin_faults() -> Response:
        if request.method == "GET":
            return ok(service.faults.get())
        if request.method == "DELETE":
            return ok(service.faults.reset())
        changes = request.get_json(silent=True)
        if not isinstance(changes, dict):
            return problem(400, "Bad request", "the body must be a JSON object of knobs")
        try:
            return ok(service.faults.update(changes))
        except ValueError as exc:
            return problem(422, "Invalid fault knobs", str(exc))

    @app.get("/_admin/stats")
    def admin_stats() -> Response:
        return ok(service.stats.snapshot(service.store.status_of))

    @app.post("/_admin/reset-stats")
    def admin_reset_stats() -> Response:
        service.stats.reset()
        return ok({"ok": True})

    return app
