"""HTTP routes: the Replicate API contract, output delivery and the admin API.

Under every prefix (``/v1``, ``/replicate/v1`` by default), the routes the official Python
client (replicate 1.0.7) calls for this model:

- ``POST /predictions`` (``version`` = the version id or ``owner/name:version``), with the
  optional ``Prefer: wait[=N]`` and ``Cancel-After`` headers; ``GET /predictions``,
  ``GET /predictions/{id}``, ``POST /predictions/{id}/cancel``;
- ``GET /models/{owner}/{name}``, ``GET /models/{owner}/{name}/versions[/{id}]`` (``replicate.run``
  reads the version to learn the output type) and ``POST /models/{owner}/{name}/versions/{id}/
  predictions``; ``POST /models/{owner}/{name}/predictions`` answers 404, as Replicate does for a
  model that is not an official one;
- ``POST /files``, ``GET /files``, ``GET|DELETE /files/{id}``, ``GET /files/{id}/download``
  (``replicate.run`` uploads an open file before it creates the prediction);
- ``GET /webhooks/default/secret``.

The create answer is Replicate's unless the ``create_answer_shape`` knob plays a resale proxy
(faults.py): its ``{"created", "data": [{"url"}]}`` beside the prediction or alone, after waiting
for the outcome, or a shape no client knows.

Public (no token, no rate limit): ``/health``, ``/delivery/{id}/output.png`` (the output CDN) and
``/p/{id}`` (the prediction's web page, ``urls.web``). ``/_admin/*`` needs the token but is never
rate limited.
"""

from __future__ import annotations

import hmac
import html
import json
import os
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, request, send_file
from werkzeug.exceptions import HTTPException

from .durations import parse_duration
from .inputs import is_supported_url
from .ratelimit import CREATE, OTHER, Decision, whole_seconds
from .store import ALL_EVENTS, TERMINAL_STATUSES, Prediction, new_prediction_id

if TYPE_CHECKING:
    from .service import Service

# Replicate documents 5 s as the shortest Cancel-After and 1..60 s for Prefer: wait.
MIN_CANCEL_AFTER_SECONDS = 5.0
MAX_WAIT_SECONDS = 60
# Placeholders for the version resource: the client needs the fields, not these exact values.
VERSION_CREATED_AT = "2023-01-01T00:00:00.000000Z"
COG_VERSION = "0.9.4"


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"title": title, "detail": detail, "status": status})
    return Response(body, status=status, mimetype="application/problem+json", headers=headers)


def throttled(seconds: float) -> Response:
    """Replicate's documented 429 body, word for word; Retry-After in whole seconds only."""
    wait = whole_seconds(seconds)
    body = json.dumps({"detail": f"Request was throttled. Your rate limit resets in ~{wait}s."})
    return Response(body, status=429, mimetype="application/json", headers={"Retry-After": str(wait)})


def ok(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json", headers=headers)


class InvalidRequest(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def parse_prefer_wait(header: str | None) -> tuple[int, str] | None:
    """Seconds to hold a create for ``Prefer: wait[=N]`` and the Preference-Applied value."""
    if not header:
        return None
    for preference in header.split(","):
        name, sep, value = preference.strip().partition("=")
        if name.strip().lower() != "wait":
            continue
        value = value.split(";", 1)[0].strip().strip('"')
        if not sep or not value:
            return MAX_WAIT_SECONDS, "wait"
        if not value.isdigit() or not 1 <= int(value) <= MAX_WAIT_SECONDS:
            raise InvalidRequest(f"Prefer: wait=N takes a whole number of seconds from 1 to {MAX_WAIT_SECONDS}")
        return int(value), f"wait={int(value)}"
    return None


def openapi_schema() -> dict[str, Any]:
    """A Cog-style schema: one ``image`` input, one URL output (not an iterator)."""
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {},
        "components": {
            "schemas": {
                "Input": {
                    "type": "object",
                    "title": "Input",
                    "required": ["image"],
                    "properties": {
                        "image": {
                            "type": "string",
                            "title": "Image",
                            "format": "uri",
                            "x-order": 0,
                            "description": "Remove background from this image",
                        }
                    },
                },
                "Output": {"type": "string", "title": "Output", "format": "uri"},
            }
        },
    }


def create_app(service: Service) -> Flask:
    settings = service.settings
    app = Flask(__name__)
    # Base64 inflates by 4/3; leave room for the rest of the JSON body.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_input_bytes * 4 // 3 + 1024 * 1024
    owner, _, name = settings.model.partition("/")

    def authorized() -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return False
        return hmac.compare_digest(token.strip().encode(), settings.api_token.encode())

    def is_api(rule: str) -> bool:
        return any(rule.startswith(prefix + "/") for prefix in settings.prefixes)

    @app.before_request
    def guard() -> Response | None:
        public = request.path == "/health" or request.path.startswith(("/delivery/", "/p/"))
        if public or request.url_rule is None:
            return None
        if not authorized():
            return problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        # After authentication, as Replicate limits accounts (a bad token spends nothing).
        if not is_api(request.url_rule.rule):
            return None
        kind = CREATE if request.method == "POST" and request.url_rule.rule.endswith("/predictions") else OTHER
        decision = service.limits.take(kind)
        if decision is None:
            return None
        if not decision.allowed:
            service.stats.throttled(kind)
            return throttled(decision.wait_seconds)
        g.rate_decision = decision
        return None

    @app.after_request
    def rate_headers(response: Response) -> Response:
        # Replicate sends these on every API answer; clients may read them to pace themselves.
        decision: Decision | None = g.pop("rate_decision", None)
        if decision is not None:
            response.headers["ratelimit-remaining"] = str(decision.remaining)
            response.headers["ratelimit-reset"] = str(whole_seconds(decision.wait_seconds))
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return problem(exc.code or 500, exc.name, exc.description or exc.name)

    @app.get("/health")
    def health() -> Response:
        return ok({"ok": True})

    def injected(rate_knob_429: str, rate_knob_5xx: str, counter: str) -> Response | None:
        if service.faults.roll(rate_knob_429):
            service.stats.fault(f"{counter}_429")
            return throttled(service.faults.seconds("retry_after_seconds"))
        if service.faults.roll(rate_knob_5xx):
            service.stats.fault(f"{counter}_5xx")
            return problem(503, "Service Unavailable", "injected transient failure")
        return None

    def check_version(version: Any) -> None:
        if version in (settings.model_version, f"{settings.model}:{settings.model_version}"):
            return
        if version == settings.model:
            raise InvalidRequest(f"{settings.model} is not an official model: give its version, owner/name:version")
        raise InvalidRequest(f"Invalid version or not permitted: {version!r}")

    def parse_create(prefix: str, path_version: str | None) -> tuple[Prediction, float | None, tuple[int, str] | None]:
        body = request.get_json(silent=True)
        if body is None:
            raise InvalidRequest("the request body must be valid JSON")
        if not isinstance(body, dict):
            raise InvalidRequest("the request body must be a JSON object")
        check_version(path_version if path_version is not None else body.get("version"))
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
            if cancel_after < MIN_CANCEL_AFTER_SECONDS:
                raise InvalidRequest(f"Cancel-After must be at least {MIN_CANCEL_AFTER_SECONDS:g}s, got {header!r}")
        wait = parse_prefer_wait(request.headers.get("Prefer"))
        prediction = Prediction(
            id=new_prediction_id(),
            model=settings.model,
            version=settings.model_version,
            input={"image": image},
            prefix=prefix,
            webhook=webhook,
            webhook_events_filter=list(dict.fromkeys(events)),
        )
        if cancel_after is not None:
            prediction.deadline = prediction.created_at + cancel_after
        return prediction, cancel_after, wait

    def decide_webhooks(prediction: Prediction) -> None:
        """The per-prediction knobs, once, before anything can be delivered."""
        if prediction.webhook is None:
            return
        if not service.faults.hits("webhooks_sent_rate", prediction.id):
            # As a proxy that does not forward the webhook: no event of it is ever sent.
            prediction.webhooks_sent = False
            service.stats.fault("webhooks_not_sent")
        elif service.faults.hits("webhook_301_rate", prediction.id):
            prediction.webhook_via = service.redirect_hop.url_for(prediction.webhook)
            service.stats.fault("webhooks_answered_301")

    def proxy_answer(shape: str, prediction: Prediction, snapshot: dict[str, Any], seconds: int) -> Response:
        """A resale proxy's synchronous answer, once the prediction ended or ``seconds`` passed."""
        if shape == "unknown":
            return ok({"result": "ok"})
        if prediction.stop.wait(seconds):
            snapshot = service.store.snapshot(prediction.id) or snapshot
        output = snapshot["output"] if snapshot["status"] == "succeeded" else None
        urls = output if isinstance(output, list) else [] if output is None else [output]
        answer = {"created": int(prediction.created_at), "data": [{"url": url} for url in urls]}
        if shape == "prediction+data":
            return ok({**answer, **snapshot}, status=201)
        if snapshot["status"] not in TERMINAL_STATUSES:
            # Nothing in this shape can name a prediction to poll: the proxy gives up.
            return problem(504, "Gateway Timeout", f"the prediction did not finish within {seconds} s")
        return ok(answer)

    def create(prefix: str, path_version: str | None = None) -> Response:
        # Injected faults answer before anything is read or created, as a front proxy would.
        fault = injected("create_429_rate", "create_5xx_rate", "create")
        if fault is not None:
            return fault
        shape = service.faults.choice("create_answer_shape")
        try:
            prediction, cancel_after, wait = parse_create(prefix, path_version)
        except InvalidRequest as exc:
            return problem(422, "Invalid input", exc.detail)
        decide_webhooks(prediction)
        snapshot = service.store.add(prediction)
        service.stats.prediction_created(prediction.id)
        service.runner.submit(prediction.id, cancel_after)
        if shape != "prediction":
            # A proxy holds every create as Prefer: wait does, up to the header's N if given.
            return proxy_answer(shape, prediction, snapshot, MAX_WAIT_SECONDS if wait is None else wait[0])
        if wait is None:
            return ok(snapshot, status=201)
        seconds, applied = wait
        # Sync mode: hold the answer until the prediction is terminal (``stop`` is set on every
        # terminal move) or the wait is over. Still 201, as Replicate answers.
        if prediction.stop.wait(seconds):
            snapshot = service.store.snapshot(prediction.id) or snapshot
        # Otherwise answer with the prediction as created (status "starting"), as Replicate does
        # when the wait runs out: the official client's run() takes any other status as the
        # outcome and polls only for "starting" (replicate/run.py, 1.0.7).
        return ok(snapshot, status=201, headers={"Preference-Applied": applied})

    def create_prediction(prefix: str) -> Response:
        return create(prefix)

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
        return ok({"results": service.store.listing(), "next": None, "previous": None})

    def webhook_secret(prefix: str) -> Response:
        return ok({"key": settings.webhook_secret})

    # --- models and versions ---

    def version_json() -> dict[str, Any]:
        return {
            "id": settings.model_version,
            "created_at": VERSION_CREATED_AT,
            "cog_version": COG_VERSION,
            "openapi_schema": openapi_schema(),
        }

    def unknown_model(model_owner: str, model_name: str) -> Response | None:
        if (model_owner, model_name) == (owner, name):
            return None
        return problem(404, "Not found", f"model {model_owner}/{model_name} not found")

    def get_model(prefix: str, model_owner: str, model_name: str) -> Response:
        missing = unknown_model(model_owner, model_name)
        if missing is not None:
            return missing
        return ok(
            {
                "url": f"{service.public_base}/{settings.model}",
                "owner": owner,
                "name": name,
                "description": "Remove the background of an image (offline: u2netp, or the fleet stand-in)",
                "visibility": "public",
                "github_url": None,
                "paper_url": None,
                "license_url": None,
                "run_count": service.store.count(),
                "cover_image_url": None,
                "default_example": None,
                "latest_version": version_json(),
            }
        )

    def list_versions(prefix: str, model_owner: str, model_name: str) -> Response:
        missing = unknown_model(model_owner, model_name)
        if missing is not None:
            return missing
        return ok({"results": [version_json()], "next": None, "previous": None})

    def get_version(prefix: str, model_owner: str, model_name: str, version_id: str) -> Response:
        missing = unknown_model(model_owner, model_name)
        if missing is not None:
            return missing
        if version_id != settings.model_version:
            return problem(404, "Not found", f"version {version_id} of {settings.model} not found")
        return ok(version_json())

    def create_version_prediction(prefix: str, model_owner: str, model_name: str, version_id: str) -> Response:
        missing = unknown_model(model_owner, model_name)
        if missing is not None:
            return missing
        return create(prefix, path_version=version_id)

    def create_model_prediction(prefix: str, model_owner: str, model_name: str) -> Response:
        # This route runs official models only; Replicate answers a stable 404 for this one.
        if unknown_model(model_owner, model_name) is None:
            detail = f"{settings.model} is not an official model; use POST {prefix}/predictions with its version"
            return problem(404, "Not found", detail)
        return problem(404, "Not found", f"model {model_owner}/{model_name} not found")

    # --- files ---

    def upload_file(prefix: str) -> Response:
        upload = request.files.get("content")
        if upload is None:
            return problem(422, "Invalid input", "a multipart field named 'content' is required")
        data = upload.read(settings.max_input_bytes + 1)
        if len(data) > settings.max_input_bytes:
            return problem(413, "Payload Too Large", f"files are limited to {settings.max_input_bytes} bytes")
        metadata: Any = {}
        if request.form.get("metadata"):
            try:
                metadata = json.loads(request.form["metadata"])
            except ValueError:
                return problem(422, "Invalid input", "metadata must be a JSON object")
            if not isinstance(metadata, dict):
                return problem(422, "Invalid input", "metadata must be a JSON object")
        content_type = upload.mimetype or "application/octet-stream"
        created = service.files.create(data, upload.filename or "file", content_type, metadata, prefix)
        return ok(created, status=201)

    def list_files(prefix: str) -> Response:
        return ok({"results": service.files.listing(), "next": None, "previous": None})

    def get_file(prefix: str, file_id: str) -> Response:
        found = service.files.get(file_id)
        return ok(found) if found is not None else problem(404, "Not found", f"file {file_id} not found")

    def delete_file(prefix: str, file_id: str) -> Response:
        if not service.files.delete(file_id):
            return problem(404, "Not found", f"file {file_id} not found")
        return Response(status=204)

    def download_file(prefix: str, file_id: str) -> Response:
        found = service.files.read(file_id)
        if found is None:
            return problem(404, "Not found", f"file {file_id} not found")
        data, content_type = found
        return Response(data, mimetype=content_type)

    routes = [
        ("/predictions", create_prediction, "POST"),
        ("/predictions", list_predictions, "GET"),
        ("/predictions/<prediction_id>", get_prediction, "GET"),
        ("/predictions/<prediction_id>/cancel", cancel_prediction, "POST"),
        ("/webhooks/default/secret", webhook_secret, "GET"),
        ("/models/<model_owner>/<model_name>", get_model, "GET"),
        ("/models/<model_owner>/<model_name>/versions", list_versions, "GET"),
        ("/models/<model_owner>/<model_name>/versions/<version_id>", get_version, "GET"),
        ("/models/<model_owner>/<model_name>/versions/<version_id>/predictions", create_version_prediction, "POST"),
        ("/models/<model_owner>/<model_name>/predictions", create_model_prediction, "POST"),
        ("/files", upload_file, "POST"),
        ("/files", list_files, "GET"),
        ("/files/<file_id>", get_file, "GET"),
        ("/files/<file_id>", delete_file, "DELETE"),
        ("/files/<file_id>/download", download_file, "GET"),
    ]
    for index, prefix in enumerate(settings.prefixes):
        for path, view, method in routes:
            app.add_url_rule(
                prefix + path,
                endpoint=f"{view.__name__}_{method}_{index}",
                view_func=view,  # type: ignore[arg-type]  # Flask's view type cannot name these
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

    @app.get("/p/<prediction_id>")
    def web_page(prediction_id: str) -> Response:
        # ``urls.web``: on Replicate, the prediction's page on the website. Public like the
        # output URL, so it shows only the status and the output link, never the input.
        snapshot = service.store.snapshot(prediction_id)
        if snapshot is None:
            return problem(404, "Not found", f"prediction {prediction_id} not found")
        rows = "".join(
            f"<tr><th>{html.escape(key)}</th><td>{html.escape(str(snapshot.get(key)))}</td></tr>"
            for key in ("id", "model", "status", "created_at", "started_at", "completed_at", "error")
        )
        output = snapshot.get("output")
        link = f'<p><a href="{html.escape(output)}">output</a></p>' if isinstance(output, str) else ""
        page = f"<!doctype html><title>Prediction {html.escape(prediction_id)}</title><table>{rows}</table>{link}"
        return Response(page, mimetype="text/html")

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

    @app.get("/_admin/predictions")
    def admin_predictions() -> Response:
        return ok({"predictions": service.store.webhooks()})

    @app.get("/_admin/stats")
    def admin_stats() -> Response:
        stats = service.stats.snapshot(service.store.status_of)
        stats["rate_limits"] = dict(service.limits.describe)
        stats["fleet_latency"] = settings.fleet_latency or None
        return ok(stats)

    @app.post("/_admin/reset-stats")
    def admin_reset_stats() -> Response:
        service.stats.reset()
        return ok({"ok": True})

    return app
