"""Cloud Functions entry points: decode the CloudEvent or request, call the core, map outcomes to
HTTP status codes. Everything else lives in the `bgremove` package.

    on_upload              storage trigger (finalized): filter and admit into the submission queue
    on_delete              storage triggers (deleted, archived): an original's cut-outs go with it
    on_task                Cloud Tasks target: submit a prediction, or check a job's deadline
    on_prediction_webhook  the API's completion callback: write the cut-out
    reconcile              Cloud Scheduler's sweep over open jobs, the safety net
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import flask
import functions_framework
from cloudevents.http import CloudEvent

from bgremove import logs, runtime, tasks, times
from bgremove.errors import ApiUnavailable, BudgetSpent, RetryLater
from bgremove.outcomes import Outcome

if TYPE_CHECKING:
    from bgremove.admission import UploadEvent

# Each entry point imports the core modules it calls when it is first called, so no function's
# start imports the other functions' code, nor what only they use (requests, google-api-core and
# grpc come with the storage client, built at the first request): bench/coldstart.py measures it.

# Read and check the configuration at cold start, so a bad deployment fails before any request.
CONFIG = runtime.config()

# The webhook's answer for each outcome: 2xx stops the API's retries, so every settled or
# harmless delivery answers 200; a refused one says why in its class (never which signature check).
WEBHOOK_STATUS = {
    Outcome.COMPLETED: 200,
    Outcome.FAILED: 200,
    Outcome.DUPLICATE: 200,
    Outcome.IGNORED: 200,
    Outcome.UNAUTHORIZED: 401,
    Outcome.MALFORMED: 400,
    Outcome.UNKNOWN_JOB: 404,
    Outcome.MISMATCH: 409,
}


@functions_framework.cloud_event
def on_upload(cloud_event: CloudEvent) -> None:
    """Storage trigger: admit a finalized upload into the submission queue.

    Raising makes the platform (Eventarc with RETRY_POLICY_RETRY) deliver the event again.
    """
    event = upload_event(cloud_event)
    if event is None:
        logs.warning("event ignored: data is not a storage object", event_id=cloud_event.get("id"), outcome="ignored")
        return
    from bgremove import admission

    admission.handle_upload(event, CONFIG, runtime.deps(), time.time())


@functions_framework.cloud_event
def on_delete(cloud_event: CloudEvent) -> None:
    """Storage triggers for `deleted` and `archived`: a deleted original's cut-outs are removed, an
    overwritten one's unfinished job superseded. Raising makes the platform deliver it again."""
    event = upload_event(cloud_event)
    if event is None:
        logs.warning("event ignored: data is not a storage object", event_id=cloud_event.get("id"), outcome="ignored")
        return
    from bgremove import removal

    removal.handle_delete(event, CONFIG, runtime.deps(), time.time())


@functions_framework.http
def on_prediction_webhook(request: flask.Request) -> flask.typing.ResponseReturnValue:
    """Completion callback from the predictions API, authenticated by its Standard Webhooks signature."""
    if request.method != "POST":
        logs.warning("webhook refused: method not allowed", method=request.method, outcome="method_not_allowed")
        return _answer(405, "method not allowed", {"Allow": "POST"})
    limit = CONFIG.webhook_max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        logs.warning("webhook refused: body too large", content_length=request.content_length, outcome="too_large")
        return _too_large()
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        logs.warning("webhook refused: body too large", read=len(body), outcome="too_large")
        return _too_large()
    query = request.query_string.decode("latin-1")
    from bgremove import complete

    try:
        headers = {name.lower(): value for name, value in request.headers.items()}
        result = complete.handle_webhook(headers, body, query, CONFIG, runtime.deps(), time.time)
    except RetryLater as exc:
        logs.warning("webhook not settled yet; sender will retry", error=f"{type(exc).__name__}: {exc}")
        return _answer(503, "try again later")
    status = WEBHOOK_STATUS[result.outcome]
    # The answer names the outcome but never which signature check failed.
    return _answer(status, result.outcome.value if status != 401 else "unauthorized")


@functions_framework.http
def on_task(request: flask.Request) -> flask.typing.ResponseReturnValue:
    """Cloud Tasks target (private; Cloud Run checks the queue's OIDC token): a job's submission or
    its deadline check. Any non-2xx answer is the task's retry; 429 also slows the queue down."""
    if request.method != "POST":
        return _answer(405, "method not allowed", {"Allow": "POST"})
    payload = tasks.parse_payload(request.get_json(silent=True))
    if payload is None:
        logs.warning("task refused: body is not a submit or deadline task", outcome="malformed")
        return _answer(400, "body must be {kind: submit|deadline|notify, job_id[, event]}")
    kind, job_id = payload.kind.value, payload.job_id
    retry = request.headers.get("X-CloudTasks-TaskRetryCount", "")
    try:
        if payload.kind is tasks.Kind.SUBMIT:
            from bgremove import submit

            outcome = submit.handle_submit_task(job_id, CONFIG, runtime.deps(), time.time(), payload.queued_at).outcome
        elif payload.kind is tasks.Kind.NOTIFY and payload.event is not None:
            from bgremove import events

            events.deliver_notification(
                job_id, payload.event, CONFIG, runtime.notify_post, time.time(), runtime.notify_key()
            )
            outcome = Outcome.NOTIFIED
        else:
            from bgremove import reconcile as reconciler

            outcome = reconciler.handle_deadline_task(job_id, CONFIG, runtime.deps(), time.time())
    except BudgetSpent as exc:
        # Held, not failed (the core logged it): the queue keeps the task and retries it with its
        # backoff, which Retry-After stretches to the window's turn (capped by max_backoff).
        return _answer(429, "held: budget", {"Retry-After": str(int(exc.retry_after))})
    except RetryLater as exc:
        throttled = isinstance(exc, ApiUnavailable) and exc.status == 429
        logs.warning(
            f"{kind} task not done yet; the queue will retry",
            job_id=job_id,
            retry_count=retry,
            error=f"{type(exc).__name__}: {exc}",
        )
        if throttled:
            # The queue backs off and slows its dispatch on 429; pass the API's wait along.
            wait = exc.retry_after if isinstance(exc, ApiUnavailable) and exc.retry_after else 10
            return _answer(429, "throttled", {"Retry-After": str(int(wait))})
        if isinstance(exc, ApiUnavailable):
            return _answer(503, "try again later")  # the API's own signal: the queue slows down too
        # Our own transient state (a claim held by another dispatch, a storage hiccup): retry the
        # task with its backoff, without slowing the whole queue.
        return _answer(500, "not done yet")
    return _answer(200, outcome.value)


@functions_framework.http
def reconcile(request: flask.Request) -> flask.typing.ResponseReturnValue:
    """Settle overdue jobs, a bounded batch per call (Cloud Scheduler, authenticated by OIDC)."""
    if request.method != "POST":
        return _answer(405, "method not allowed", {"Allow": "POST"})
    from bgremove import reconcile as reconciler

    try:
        report = reconciler.reconcile(CONFIG, runtime.deps(), time.time())
    except RetryLater as exc:  # the listing itself failed; each job's own failures do not get here
        logs.warning("reconcile run not possible now", error=f"{type(exc).__name__}: {exc}")
        return _answer(503, "try again later")
    return flask.jsonify(report.to_json())


def _answer(status: int, message: str, headers: dict[str, str] | None = None) -> flask.Response:
    response = flask.jsonify({"status": status, "message": message})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _too_large() -> flask.Response:
    """413, answered without reading the rest of the body.

    functions-framework reads the whole request before it answers, unless the answer is streamed;
    so this one is, or a refused body of any size would still be read into memory first.
    """
    response = _answer(413, "body too large")
    response.response = iter([response.get_data()])
    return response


def upload_event(cloud_event: CloudEvent) -> UploadEvent | None:
    """The storage object a CloudEvent names, or None (also the bench's direct baseline's decoder)."""
    data = cloud_event.get_data() if hasattr(cloud_event, "get_data") else cloud_event.data
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data.get("bucket"):
        return None
    try:
        generation = int(data.get("generation") or 0)
        size = int(data.get("size") or 0)
    except (TypeError, ValueError):
        return None
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    from bgremove import admission

    return admission.UploadEvent(
        event_id=str(cloud_event.get("id") or ""),
        event_type=str(cloud_event.get("type") or ""),
        bucket=str(data["bucket"]),
        name=data["name"],
        generation=generation,
        content_type=str(data.get("contentType") or ""),
        size=size,
        metadata={str(k): str(v) for k, v in (metadata or {}).items()},
        event_time=times.parse(cloud_event.get("time")),
        cache_control=str(data.get("cacheControl") or ""),
        content_disposition=str(data.get("contentDisposition") or ""),
        content_language=str(data.get("contentLanguage") or ""),
    )
