"""`bgremove doctor`: check a predictions endpoint before a bulk run.

Seven checks, each one line with a verdict (`Check`): the token, the model version, the account's
webhook signing secret, then, spending at most one prediction (a tiny PNG sent as a data URL, the
same create request the pipeline makes), the prediction itself, the webhook round trip and the
output host; last, the rate-limit headers seen on every answer.

The webhook goes to a receiver the doctor runs itself (`Receiver`), never to the deployment's
WEBHOOK_URL, which would try to settle a job that does not exist. The endpoint can reach it when it
runs on this machine (the offline stack: its base URL is a loopback address), or through a URL the
operator gives (`--webhook-url`, a tunnel or port-forward to `--listen`); otherwise the doctor says
it cannot test delivery from here. A delivery is verified with `bgremove.signatures.verify`, under
the account's secret (`GET /webhooks/default/secret`) and under WEBHOOK_SECRETS when they are
configured here, as the deployment's webhook would. No delivery within `webhook_wait` seconds of the
prediction's end is a warning, not a failure: the pipeline's deadline checks settle every job
without webhooks (the deployment will poll). How much a webhook that cannot verify weighs depends
on RESULT_DELIVERY (`unusable`): it fails with `webhook`, warns with `auto` (polling brings the
result), informs with `poll`.

The create request is the pipeline's (Cancel-After, Prefer: wait), and its answer is read as the
pipeline reads it (`bgremove.predictions.from_create_answer`): a proxy's synchronous result needs
no poll and no webhook; a shape the pipeline cannot read, or a create held longer than the pipeline
waits for one, is a failure.

The verdicts are pure functions of what was answered (`*_verdict`), so they are unit-tested without
an endpoint; `run` does the calls in order and never retries a create.
"""

from __future__ import annotations

import base64
import http.server
import io
import ipaddress
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from bgremove import config, outputs, predictions, schedule, signatures
from bgremove.errors import ApiAnswerUnknown, OutputRefused, OutputUnavailable, SignatureError
from bgremove.predictions import TERMINAL_STATUSES, Prediction

# The pipeline runs this model (README); MODEL_VERSION says which version of it.
MODEL = "lucataco/remove-bg"
# Replicate's last retry of a terminal webhook comes about a minute after the prediction ends.
WEBHOOK_WAIT_SECONDS = 60.0
# How long the prediction may take (a cold model boots in minutes); then it is cancelled.
PREDICTION_TIMEOUT_SECONDS = 300.0
# Answers to GETs that are worth another try (429, 5xx) are tried this many times more.
GET_RETRIES = 3
# A webhook body is the prediction (with the echoed data URL): far below this.
MAX_DELIVERY_BYTES = 4 * 1024 * 1024
# Headers an endpoint paces its clients with: the X-RateLimit-* family, the IETF draft's
# RateLimit-* (what the offline service sends) and Retry-After.
RATE_HEADER_PREFIXES = ("x-ratelimit", "ratelimit")
RATE_HEADER_NAMES = ("retry-after",)
RECEIVER_PATH = "/bgremove-doctor/webhook"

OK, WARN, FAIL, SKIP, INFO = "ok", "warn", "fail", "skip", "info"
# How the wait for the prediction ended.
ENDED, CANCELLED, LOST = "ended", "cancelled", "lost"
SYMBOLS = {OK: "✓", FAIL: "✗", WARN: "–", SKIP: "–", INFO: "–"}
CHECK_NAMES = ("token", "model version", "signing secret", "prediction", "webhook", "output host", "rate limits")
# Settings the doctor reads (bgremove.config.SETTINGS), so it runs with only the API's variables set.
SETTING_NAMES = (
    "PREDICTIONS_BASE_URL",
    "PREDICTIONS_API_TOKEN",
    "MODEL_VERSION",
    "WEBHOOK_SECRETS",
    "WEBHOOK_TOLERANCE_SECONDS",
    "CANCEL_AFTER",
    "OUTPUT_ALLOWED_HOSTS",
    "OUTPUT_MAX_BYTES",
    "HTTP_TIMEOUT_SECONDS",
    "FIRST_CHECK_SECONDS",
    "RESULT_DELIVERY",
    "POLL_FIRST_CHECK_SECONDS",
    "PREFER_WAIT_SECONDS",
)
# A create may take this much longer than the pipeline would wait, so the doctor sees how long an
# endpoint holds one (a proxy answering with the result) instead of timing out itself.
CREATE_GRACE_SECONDS = 60.0
# A create answered with the result needs no webhook; one may still come, at once if at all.
SYNCHRONOUS_WEBHOOK_WAIT = 5.0


# --- what the doctor is told ----------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """The pipeline's settings about the predictions API, read as the functions read them."""

    base_url: str
    token: str
    model_version: str
    webhook_secrets: tuple[str, ...]
    webhook_tolerance_seconds: int
    cancel_after: str
    output_allowed_hosts: tuple[str, ...]
    output_max_bytes: int
    http_timeout_seconds: float
    first_check_seconds: int
    result_delivery: str = schedule.AUTO  # RESULT_DELIVERY: webhook, poll or auto
    poll_first_check_seconds: int = 5
    prefer_wait_seconds: int = 0
    ca_bundle: str = ""  # REQUESTS_CA_BUNDLE of the target (the offline stack's CA)

    @property
    def create_timeout(self) -> float:
        """How long the pipeline waits for a create's answer (bgremove.predictions.create)."""
        wait = self.prefer_wait_seconds
        return self.http_timeout_seconds + wait if wait else self.http_timeout_seconds

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Endpoint:
        """Raises bgremove.errors.ConfigError naming the variable, as load_config does."""
        table = {s.env: s for s in config.SETTINGS}
        values = {table[name].field: config.read_setting(table[name], env.get(name)) for name in SETTING_NAMES}
        return cls(
            base_url=values["api_base_url"],
            token=values["api_token"],
            model_version=values["model_version"],
            webhook_secrets=values["webhook_secrets"],
            webhook_tolerance_seconds=values["webhook_tolerance_seconds"],
            cancel_after=values["cancel_after"],
            output_allowed_hosts=values["output_allowed_hosts"],
            output_max_bytes=values["output_max_bytes"],
            http_timeout_seconds=values["http_timeout_seconds"],
            first_check_seconds=values["first_check_seconds"],
            result_delivery=values["result_delivery"],
            poll_first_check_seconds=values["poll_first_check_seconds"],
            prefer_wait_seconds=values["prefer_wait_seconds"],
            ca_bundle=env.get("REQUESTS_CA_BUNDLE", ""),
        )


@dataclass(frozen=True)
class Options:
    model: str = MODEL
    # True: spend the prediction; False: skip the checks that spend one; None: ask (`confirm`).
    spend: bool | None = None
    webhook_url: str = ""  # an operator's public URL that forwards to `listen`
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    webhook_wait_seconds: float = WEBHOOK_WAIT_SECONDS
    timeout_seconds: float = PREDICTION_TIMEOUT_SECONDS
    poll_seconds: float = 1.0


# --- verdicts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK, WARN, FAIL, SKIP, INFO
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.status]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, **self.data}


@dataclass(frozen=True)
class Answer:
    """One HTTP exchange with the endpoint, as the verdicts need it."""

    method: str
    path: str
    status: int | None  # None: no answer at all (connection refused, timeout)
    body: Any = None  # the JSON body, or None
    text: str = ""  # the start of a body that is not JSON
    error: str = ""  # why there was no answer
    rate_headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # from the request to the answer's headers

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def detail(self) -> str:
        if isinstance(self.body, dict):
            for key in ("detail", "title", "error"):
                if self.body.get(key):
                    return str(self.body[key])[:200]
        return self.text[:200] or self.error

    def said(self) -> str:
        if self.status is None:
            return f"{self.method} {self.path}: {self.error}"
        detail = self.detail
        return f"{self.method} {self.path} answered {self.status}" + (f": {detail}" if detail else "")


def skipped(name: str, why: str) -> Check:
    return Check(name, SKIP, f"skipped: {why}")


def token_verdict(token: str, account: Answer | None, model: Answer | None) -> Check:
    """`GET /account` (Replicate's; the user or organisation of the token), or, from an endpoint
    that does not serve it (404, as the offline service and some proxies), `GET /models/O/N`."""
    name = "token"
    if not token:
        return Check(name, FAIL, "PREDICTIONS_API_TOKEN is not set (export it; in production it is a secret)")
    if account is None:
        return Check(name, FAIL, "not checked")
    if account.ok:
        body = account.body if isinstance(account.body, dict) else {}
        who = " ".join(str(body[k]) for k in ("type", "username") if body.get(k))
        return Check(name, OK, f"accepted (GET /account: {who or 'an account'})", {"via": account.path})
    if account.status == 404 and model is not None:
        if model.ok:
            return Check(
                name,
                OK,
                f"accepted (GET {model.path} answered 200; this endpoint does not serve /account)",
                {"via": model.path},
            )
        if model.status == 404:
            return Check(
                name,
                WARN,
                f"not confirmed: the endpoint serves neither /account nor {model.path} (404)",
                {"via": model.path},
            )
        account = model
    return Check(name, FAIL, _refusal(account), {"via": account.path, "http_status": account.status})


def _refusal(answer: Answer) -> str:
    if answer.status is None:
        return f"cannot reach the endpoint ({answer.said()})"
    if answer.status in (401, 403):
        return f"refused: {answer.said()} (check PREDICTIONS_API_TOKEN)"
    if answer.status == 402:
        return f"billing required: {answer.said()}"
    if answer.status == 429:
        wait = answer.rate_headers.get("retry-after")
        return f"throttled: {answer.said()}" + (f" (Retry-After {wait} s)" if wait else "")
    return answer.said()


def version_verdict(answer: Answer | None, model: str, version: str, ran: bool) -> Check:
    """`GET /models/O/N/versions/V`. A 404 from an endpoint that then ran a prediction of that very
    version is a route it does not serve, not a missing version."""
    name = "model version"
    short = f"{model}:{version[:12]}…" if len(version) > 12 else f"{model}:{version}"
    if answer is None:
        return skipped(name, "the token check failed")
    data = {"model": model, "version": version}
    if answer.ok:
        body = answer.body if isinstance(answer.body, dict) else {}
        if body.get("id") not in (None, version):
            return Check(name, FAIL, f"{answer.path} answered version {body.get('id')!r}, not MODEL_VERSION", data)
        return Check(name, OK, f"{short} exists", data)
    if answer.status == 404 and ran:
        return Check(name, OK, f"{short} ran a prediction (the endpoint answers 404 to {answer.path})", data)
    if answer.status == 404:
        return Check(name, FAIL, f"{short} not found ({answer.said()}): check MODEL_VERSION", data)
    return Check(name, FAIL, _refusal(answer), data)


def unusable(mode: str, misconfigured: bool = False) -> str:
    """How bad webhooks the deployment's webhook function would refuse are, by RESULT_DELIVERY:
    nothing when none is asked for (`poll`); fatal when results wait for them (`webhook`), or when
    it is our own setting that is wrong (WEBHOOK_SECRETS); otherwise a warning, since with `auto`
    polling brings the results anyway."""
    if mode == schedule.POLL:
        return INFO
    return FAIL if mode == schedule.WEBHOOK or misconfigured else WARN


def secret_verdict(
    answer: Answer | None, configured: tuple[str, ...], mode: str = schedule.AUTO
) -> tuple[Check, list[bytes]]:
    """The account's signing secret (`GET /webhooks/default/secret`), compared with WEBHOOK_SECRETS
    when they are set here. Returns the check and the keys a delivery is verified with. The secret
    itself is never shown."""
    name = "signing secret"
    configured_keys = _keys(configured)
    if answer is None:
        return skipped(name, "the token check failed"), configured_keys
    key = answer.body.get("key") if answer.ok and isinstance(answer.body, dict) else None
    if not isinstance(key, str) or not key:
        why = answer.said() if not answer.ok else f"{answer.path} answered no key"
        if configured_keys:
            detail = f"not fetched ({why}); deliveries are verified with WEBHOOK_SECRETS"
            return Check(name, WARN, detail), configured_keys
        detail = f"not fetched ({why}) and WEBHOOK_SECRETS is not set: nothing can verify a webhook"
        return Check(name, unusable(mode), detail + _polls_anyway(mode)), []
    try:
        account_key = signatures.decode_secret(key)
    except ValueError:
        detail = f"{answer.path} answered a key that is not a whsec_ secret"
        return Check(name, unusable(mode), detail + _polls_anyway(mode)), configured_keys
    if not configured:
        return Check(name, OK, "fetched (WEBHOOK_SECRETS is not set here, so not compared)"), [account_key]
    if account_key in configured_keys:
        return Check(name, OK, "fetched; WEBHOOK_SECRETS holds it"), [account_key]
    detail = (
        "WEBHOOK_SECRETS does not hold the account's signing secret: the deployment's webhook would refuse "
        "every delivery (put it in WEBHOOK_SECRETS; README, Pointing it at the real API or a proxy)"
    )
    return Check(name, unusable(mode, misconfigured=True), detail + _polls_anyway(mode)), [account_key]


def _polls_anyway(mode: str) -> str:
    if mode == schedule.AUTO:
        return "; RESULT_DELIVERY=auto polls, so results still come"
    if mode == schedule.POLL:
        return "; not used: RESULT_DELIVERY=poll asks for no webhooks"
    return ""


def _keys(secrets: tuple[str, ...]) -> list[bytes]:
    keys = []
    for secret in secrets:
        try:
            keys.append(signatures.decode_secret(secret))
        except ValueError:
            continue
    return keys


@dataclass(frozen=True)
class Created:
    """What the create's answer means to the pipeline (`bgremove.predictions.from_create_answer`):
    a prediction (terminal already when the answer carried the result: a synchronous answer), or
    why the pipeline cannot read it."""

    prediction: Prediction | None
    unknown: str = ""  # the pipeline's ApiAnswerUnknown message

    @classmethod
    def of(cls, answer: Answer) -> Created:
        try:
            return cls(predictions.from_create_answer(answer.body))
        except ApiAnswerUnknown as exc:
            return cls(None, str(exc))
        except ValueError as exc:
            return cls(None, f"the create answer is not a prediction the pipeline can read: {exc}")

    @property
    def synchronous(self) -> bool:
        return self.prediction is not None and self.prediction.is_terminal


def prediction_verdict(
    create: Answer,
    created: Created | None,
    final: Prediction | None,
    seconds: float,
    how: str = ENDED,
    pipeline_timeout: float = 10.0,
) -> Check:
    """`how` the wait for it ended: ENDED (a terminal status), CANCELLED (by the doctor, at its
    timeout) or LOST (GET /predictions/{id} answered 404 before it ended). `pipeline_timeout`: how
    long the pipeline waits for a create's answer; an endpoint that holds a create longer makes
    every submission time out and be retried, a second prediction each."""
    name = "prediction"
    if not create.ok:
        held = create.status is None and create.seconds >= pipeline_timeout
        note = " (one may have been made)" if held else ""
        return Check(name, FAIL, f"not created{note}: {_refusal(create)}", {"http_status": create.status})
    if created is None or created.prediction is None:
        unknown = created.unknown if created is not None else "no answer"
        return Check(name, FAIL, f"{create.said()}; the pipeline would fail every job (api_answer_unknown): {unknown}")
    if create.seconds > pipeline_timeout:
        return Check(
            name,
            FAIL,
            f"the endpoint held the create {create.seconds:.1f} s, longer than the pipeline waits "
            f"({pipeline_timeout:g} s: HTTP_TIMEOUT_SECONDS, + PREFER_WAIT_SECONDS when set): every submission "
            "would time out and be retried, a second prediction each; raise HTTP_TIMEOUT_SECONDS",
            {"create_seconds": round(create.seconds, 1)},
        )
    final = final or created.prediction
    data = {
        "prediction_id": final.id,
        "prediction_status": final.status,
        "seconds": round(seconds, 1),
        "create_seconds": round(create.seconds, 1),
        "synchronous": created.synchronous,
    }
    if how == CANCELLED:
        return Check(name, FAIL, f"still {final.status} after {seconds:.0f} s: cancelled it ({final.id})", data)
    if how == LOST:
        return Check(name, FAIL, f"the endpoint forgot it while {final.status} (GET answered 404; {final.id})", data)
    if final.status == "succeeded" and created.synchronous:
        return Check(
            name,
            OK,
            f"succeeded, in the create's answer ({create.seconds:.1f} s): the pipeline settles such answers at once, "
            f"with no webhook and no poll ({final.id})",
            data,
        )
    if final.status == "succeeded":
        return Check(name, OK, f"succeeded in {seconds:.1f} s ({final.id})", data)
    error = f": {final.error}" if final.error else ""
    return Check(name, FAIL, f"ended {final.status}{error} ({final.id})", data)


@dataclass(frozen=True)
class Delivery:
    """One POST the receiver took: headers with lower-cased names, the raw body, when."""

    headers: dict[str, str]
    body: bytes
    received_at: float


@dataclass(frozen=True)
class Delivered:
    """How the deployment gets its results, for the webhook verdict's wording."""

    mode: str = schedule.AUTO  # RESULT_DELIVERY
    first_check_seconds: int = 180
    poll_first_check_seconds: int = 5
    synchronous: bool = False  # the create's answer carried the result

    def will_poll(self) -> str:
        if self.mode == schedule.WEBHOOK:
            return (
                "the deployment will poll, slowly: with RESULT_DELIVERY=webhook each job waits for its deadline "
                f"check, FIRST_CHECK_SECONDS ({self.first_check_seconds} s) after its prediction; "
                "RESULT_DELIVERY=auto polls at the model's pace"
            )
        if self.mode == schedule.POLL:
            return "the deployment asks for none (RESULT_DELIVERY=poll) and polls"
        return (
            "the deployment will poll: RESULT_DELIVERY=auto checks each job from about the model's run time "
            f"(at least POLL_FIRST_CHECK_SECONDS, {self.poll_first_check_seconds} s), so results still come"
        )


def webhook_verdict(
    deliveries: list[Delivery],
    prediction: Prediction | None,
    account_keys: list[bytes],
    configured_keys: list[bytes],
    tolerance_seconds: int,
    waited: float,
    delivered: Delivered | None = None,
    not_here: str = "",
) -> Check:
    """Did the prediction's terminal webhook arrive, and does it verify? `not_here` says why no
    receiver could be reached from the endpoint (then nothing was waited for)."""
    name = "webhook"
    how = delivered or Delivered()
    if not_here:
        return Check(name, SKIP, f"cannot test webhook delivery from here: {not_here}")
    if prediction is None:
        return skipped(name, "no prediction to follow")
    ours = []
    for delivery in deliveries:
        try:
            parsed = Prediction.from_json(json.loads(delivery.body))
        except ValueError:
            continue
        if parsed.id == prediction.id and parsed.is_terminal:
            ours.append((delivery, parsed))
    data: dict[str, Any] = {"deliveries": len(ours), "other_posts": len(deliveries) - len(ours)}
    if not ours and how.synchronous:
        detail = f"none arrived within {waited:.0f} s; none is needed: the create's answer carried the result"
        return Check(name, INFO, detail, data)
    if not ours:
        return Check(
            name,
            INFO if how.mode == schedule.POLL else WARN,
            f"no webhook arrived within {waited:.0f} s of the prediction's end: the endpoint does not deliver "
            f"webhooks (or cannot reach the receiver); {how.will_poll()}",
            {**data, "will_poll": True},
        )
    keys = account_keys or configured_keys
    reasons = []
    for delivery, _ in ours:
        try:
            webhook_id = signatures.verify(
                delivery.headers, delivery.body, keys, tolerance_seconds, now=_clock(delivery.received_at)
            )
        except SignatureError as exc:
            reasons.append(str(exc))
            continue
        data["webhook_id"] = webhook_id
        if configured_keys and account_keys:
            try:
                signatures.verify(
                    delivery.headers,
                    delivery.body,
                    configured_keys,
                    tolerance_seconds,
                    now=_clock(delivery.received_at),
                )
            except SignatureError:
                detail = "webhooks arrive and verify with the account's secret, but not with WEBHOOK_SECRETS"
                status = unusable(how.mode, misconfigured=True)
                return Check(name, status, detail + _polls_anyway(how.mode), {**data, "will_poll": True})
        detail = f"webhooks arrive and verify ({_count(len(ours), 'delivery', 'deliveries')}, webhook-id {webhook_id})"
        if how.mode == schedule.POLL:
            detail += "; RESULT_DELIVERY=poll asks for none (auto would settle jobs as they arrive)"
        return Check(name, OK, detail, data)
    why = "there is no secret to verify it with" if not keys else f"it does not verify: {reasons[0]}"
    return Check(name, unusable(how.mode), f"a webhook arrived, but {why}" + _polls_anyway(how.mode), data)


def _clock(at: float) -> Callable[[], float]:
    """A delivery is judged at the time it arrived, however long the doctor waited after."""
    return lambda: at


def output_verdict(
    prediction: Prediction | None, allowed_hosts: tuple[str, ...], download: Callable[[str], str]
) -> Check:
    """The output URL's host is within OUTPUT_ALLOWED_HOSTS (`bgremove.outputs.check_url`, what the
    webhook applies), and the output downloads through the pipeline's own checks (`download`
    returns its content type, or raises OutputRefused / OutputUnavailable)."""
    name = "output host"
    if prediction is None or prediction.status != "succeeded":
        return skipped(name, "no prediction succeeded")
    url = prediction.output
    if not url:
        return Check(name, FAIL, "the prediction succeeded without an output URL")
    allowed = ", ".join(allowed_hosts) or "nothing"
    try:
        host = outputs.check_url(url, allowed_hosts)
    except OutputRefused as exc:
        return Check(
            name,
            FAIL,
            f"{exc}: the pipeline would refuse every output (OUTPUT_ALLOWED_HOSTS: {allowed})",
            {"host": (urlsplit(url).hostname or "").lower()},
        )
    data = {"host": host}
    try:
        content_type = download(url)
    except (OutputRefused, OutputUnavailable) as exc:
        return Check(name, FAIL, f"{host} is allowed, but the output does not download: {exc}", data)
    return Check(name, OK, f"{host} is within OUTPUT_ALLOWED_HOSTS; the output downloads ({content_type})", data)


def rate_limit_verdict(answers: list[Answer]) -> Check:
    name = "rate limits"
    answered = [a for a in answers if a.status is not None]
    with_headers = [a for a in answered if a.rate_headers]
    throttled = [a for a in answered if a.status == 429]
    seen: dict[str, str] = {}
    for answer in with_headers:
        seen.update(answer.rate_headers)  # the last value of each
    data: dict[str, Any] = {"headers": seen, "answers": len(answered), "throttled": len(throttled)}
    if not with_headers:
        return Check(
            name,
            INFO,
            f"none were sent ({len(answered)} answers): the pipeline keeps to its queue's rate and backs off on 429",
            data,
        )
    shown = ", ".join(f"{k}: {v}" for k, v in sorted(seen.items()))
    text = f"{shown} (on {len(with_headers)} of {len(answered)} answers)"
    if throttled:
        return Check(name, WARN, f"throttled {_count(len(throttled), 'time', 'times')}; {text}", data)
    return Check(name, OK, text, data)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def exit_status(checks: list[Check]) -> int:
    """0 when nothing failed (a warning, such as 'the deployment will poll', is not a failure)."""
    return 1 if any(c.status == FAIL for c in checks) else 0


def receiver_plan(base_url: str, webhook_url: str) -> tuple[bool, str]:
    """(run a receiver, why not): an operator's URL, or an endpoint on this machine, can reach one."""
    if webhook_url:
        return True, ""
    host = (urlsplit(base_url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost") or _is_loopback(host):
        return True, ""
    return False, (
        f"{host or base_url} is not on this machine, so it cannot reach a receiver here; give --webhook-url "
        "(a public URL that forwards to --listen)"
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --- the calls ------------------------------------------------------------------------------------


class Probe:
    """The endpoint's HTTP API with the token; every answer is kept (for the rate-limit check).

    A GET answered 429 or 5xx, or not at all, is tried GET_RETRIES times more (Retry-After
    honoured, at most 10 s); a POST never is, so a create is made at most once."""

    def __init__(
        self,
        base_url: str,
        token: str,
        timeout: float,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.session = session or TargetSession()
        self._sleep = sleep
        self.answers: list[Answer] = []

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Answer:
        tries = 1 + (GET_RETRIES if method == "GET" else 0)
        answer = Answer(method, path, None, error="not called")
        for attempt in range(tries):
            answer = self._once(method, path, body, headers or {}, timeout or self.timeout)
            self.answers.append(answer)
            retryable = answer.status is None and not answer.error.startswith("TLS")
            retryable = retryable or answer.status == 429 or (answer.status or 0) >= 500
            if not retryable or attempt == tries - 1:
                break
            wait = answer.rate_headers.get("retry-after", "")
            self._sleep(min(float(wait), 10.0) if wait.isdigit() else 0.5 * 2**attempt)
        return answer

    def _once(self, method: str, path: str, body: Any, headers: Mapping[str, str], timeout: float) -> Answer:
        sent = {"Authorization": f"Bearer {self._token}", **headers}
        began = time.monotonic()
        try:
            response = self.session.request(
                method, self.base_url + path, json=body, headers=sent, timeout=timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            return Answer(method, path, None, error=no_answer(exc, timeout), seconds=time.monotonic() - began)
        seconds = time.monotonic() - began
        rate = {
            k.lower(): v
            for k, v in response.headers.items()
            if k.lower().startswith(RATE_HEADER_PREFIXES) or k.lower() in RATE_HEADER_NAMES
        }
        try:
            parsed: Any = response.json()
            text = ""
        except ValueError:
            parsed, text = None, response.text[:300]
        return Answer(method, path, response.status_code, parsed, text, rate_headers=rate, seconds=seconds)


def no_answer(exc: requests.RequestException, timeout: float) -> str:
    """Why a request got no answer, in a few words (requests' own messages run to hundreds)."""
    if isinstance(exc, requests.exceptions.SSLError):
        verify = "CERTIFICATE_VERIFY_FAILED" in str(exc)
        return "TLS: the certificate does not verify (REQUESTS_CA_BUNDLE)" if verify else "TLS handshake failed"
    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout:g} s (HTTP_TIMEOUT_SECONDS)"
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect (refused, or no route to the host)"
    return type(exc).__name__


class TargetSession(requests.Session):
    """A session whose own `verify` (the target's CA, e.g. the offline stack's) wins over the
    REQUESTS_CA_BUNDLE of this process's environment, which requests would otherwise prefer."""

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        return super().merge_environment_settings(url, proxies, stream, self.verify if verify is None else verify, cert)


class Receiver:
    """A local HTTP server that takes webhook POSTs on any path, answers 200 and keeps each one."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        deliveries: list[Delivery] = []
        arrived = threading.Condition()
        self._deliveries = deliveries
        self._arrived = arrived

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_DELIVERY_BYTES:
                    self.send_error(413)
                    return
                body = self.rfile.read(length)
                delivery = Delivery({k.lower(): v for k, v in self.headers.items()}, body, time.time())
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
                with arrived:
                    deliveries.append(delivery)
                    arrived.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="doctor-receiver", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def local_url(self) -> str:
        host = str(self._server.server_address[0])
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}{RECEIVER_PATH}"

    def deliveries(self) -> list[Delivery]:
        with self._arrived:
            return list(self._deliveries)

    def wait(self, until: Callable[[list[Delivery]], bool], timeout: float) -> bool:
        """Wait up to `timeout` s for the deliveries to satisfy `until`."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while not until(list(self._deliveries)):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._arrived.wait(left)
            return True

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def tiny_png() -> bytes:
    """A 64×64 PNG (a red disc on white, a subject for the model): a few hundred bytes."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (64, 64), (255, 255, 255))
    ImageDraw.Draw(image).ellipse((14, 14, 50, 50), fill=(200, 40, 40))
    buf = io.BytesIO()
    image.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


@dataclass
class Report:
    endpoint: str
    checks: list[Check]
    prediction_id: str = ""
    spent: int = 0  # predictions created
    webhook_url: str = ""

    @property
    def status(self) -> int:
        return exit_status(self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "ok": self.status == 0,
            "predictions_spent": self.spent,
            "prediction_id": self.prediction_id or None,
            "webhook_url": self.webhook_url or None,
            "failed": sum(c.status == FAIL for c in self.checks),
            "warnings": sum(c.status == WARN for c in self.checks),
            "checks": [c.to_json() for c in self.checks],
        }


def run(
    endpoint: Endpoint,
    options: Options,
    confirm: Callable[[list[Check]], bool] = lambda _: False,
    say: Callable[[str], None] = lambda _: None,
    probe: Probe | None = None,
    receiver: Callable[[str, int], Receiver] = Receiver,
    download: Callable[[str, Endpoint], str] | None = None,
) -> Report:
    """Every check, in order. `confirm` is asked before the prediction when `options.spend` is None,
    with the verdicts so far (the free checks);
    `say` gets a line for each step that takes a while; `download` fetches an output (its content
    type), `_download` unless given."""
    fetch = download or _download
    probe = probe or Probe(endpoint.base_url, endpoint.token, endpoint.http_timeout_seconds)
    if endpoint.ca_bundle:
        probe.session.verify = endpoint.ca_bundle
    report = Report(endpoint.base_url, [])
    spends = ("prediction", "webhook", "output host")

    def finish(checks: dict[str, Check], why: str) -> Report:
        for name in CHECK_NAMES[:-1]:
            checks.setdefault(name, skipped(name, why))
        checks["rate limits"] = rate_limit_verdict(probe.answers)
        report.checks = [checks[name] for name in CHECK_NAMES]
        return report

    checks: dict[str, Check] = {}
    model = options.model
    if not endpoint.token:
        checks["token"] = token_verdict("", None, None)
        return finish(checks, "PREDICTIONS_API_TOKEN is not set")
    say(f"GET {endpoint.base_url}/account …")
    account = probe.call("GET", "/account")
    model_answer = probe.call("GET", f"/models/{model}") if account.status == 404 else None
    checks["token"] = token_verdict(endpoint.token, account, model_answer)
    if checks["token"].status == FAIL:
        return finish(checks, "the token check failed")
    version_answer = probe.call("GET", f"/models/{model}/versions/{endpoint.model_version}")
    secret_answer = probe.call("GET", "/webhooks/default/secret")
    checks["signing secret"], account_keys = secret_verdict(
        secret_answer, endpoint.webhook_secrets, endpoint.result_delivery
    )
    configured_keys = _keys(endpoint.webhook_secrets)

    checks["model version"] = version_verdict(version_answer, model, endpoint.model_version, ran=False)
    so_far = [checks[name] for name in CHECK_NAMES if name in checks]
    spend = options.spend if options.spend is not None else confirm(so_far)
    if not spend:
        why = "--no-prediction" if options.spend is False else "the prediction was not confirmed (--yes)"
        for name in spends:
            checks[name] = skipped(name, why)
        return finish(checks, why)

    can_receive, not_here = receiver_plan(endpoint.base_url, options.webhook_url)
    with _maybe(receiver, can_receive, options) as listening:
        webhook = ""
        if listening is not None:
            webhook = options.webhook_url or listening.local_url()
            report.webhook_url = webhook
        body: dict[str, Any] = {"version": endpoint.model_version, "input": {"image": data_url(tiny_png())}}
        if webhook:
            body |= {"webhook": webhook, "webhook_events_filter": ["completed"]}
        # The pipeline's create request (bgremove.predictions.PredictionsClient.create).
        headers = {"Cancel-After": endpoint.cancel_after} if endpoint.cancel_after else {}
        if endpoint.prefer_wait_seconds:
            headers["Prefer"] = f"wait={endpoint.prefer_wait_seconds}"
        say("creating one prediction …")
        create = probe.call("POST", "/predictions", body, headers, endpoint.create_timeout + CREATE_GRACE_SECONDS)
        created = Created.of(create) if create.ok else None
        if create.ok or create.status is None:
            report.spent = 1  # at most: a create that got no answer may have been made
        first = created.prediction if created is not None else None
        final, seconds, how = None, 0.0, ENDED
        if first is not None:
            report.prediction_id = first.id
            say(f"waiting for prediction {first.id} …")
            final, seconds, how = _await(probe, first, options)
        checks["prediction"] = prediction_verdict(
            create, created, final, seconds, how, pipeline_timeout=endpoint.create_timeout
        )
        checks["model version"] = version_verdict(version_answer, model, endpoint.model_version, ran=first is not None)
        checks["output host"] = output_verdict(final, endpoint.output_allowed_hosts, lambda url: fetch(url, endpoint))
        synchronous = created is not None and created.synchronous
        wait = (
            min(options.webhook_wait_seconds, SYNCHRONOUS_WEBHOOK_WAIT) if synchronous else options.webhook_wait_seconds
        )
        if listening is not None and final is not None:
            say(f"waiting up to {wait:.0f} s for its webhook at {webhook} …")
            listening.wait(lambda got: _has_terminal(got, final.id), wait)
        deliveries = listening.deliveries() if listening is not None else []
        delivered = Delivered(
            endpoint.result_delivery, endpoint.first_check_seconds, endpoint.poll_first_check_seconds, synchronous
        )
        checks["webhook"] = webhook_verdict(
            deliveries,
            final,
            account_keys,
            configured_keys,
            endpoint.webhook_tolerance_seconds,
            wait,
            delivered,
            "" if can_receive else not_here,
        )
    return finish(checks, "")


@contextmanager
def _maybe(receiver: Callable[[str, int], Receiver], wanted: bool, options: Options) -> Iterator[Receiver | None]:
    if not wanted:
        yield None
        return
    with receiver(options.listen_host, options.listen_port) as listening:
        yield listening


def _parse(body: Any) -> Prediction | None:
    try:
        return Prediction.from_json(body)
    except ValueError:
        return None


def _await(probe: Probe, created: Prediction, options: Options) -> tuple[Prediction, float, str]:
    """Poll GET /predictions/{id} until it ends (every 0.25 s for the first 5 s, then every
    `poll_seconds`), or cancel it after `timeout_seconds`. Ctrl-C cancels it too, then goes on."""
    began = time.monotonic()
    latest = created
    try:
        while not latest.is_terminal:
            if _since(began) > options.timeout_seconds:
                cancelled = _parse(probe.call("POST", f"/predictions/{created.id}/cancel").body)
                return (
                    cancelled if cancelled is not None and cancelled.is_terminal else latest,
                    _since(began),
                    CANCELLED,
                )
            time.sleep(min(0.25, options.poll_seconds) if _since(began) < 5 else options.poll_seconds)
            polled = probe.call("GET", f"/predictions/{created.id}")
            if polled.status == 404:
                return latest, _since(began), LOST
            latest = (_parse(polled.body) if polled.ok else None) or latest
    except KeyboardInterrupt:
        probe.call("POST", f"/predictions/{created.id}/cancel")
        raise
    return latest, _since(began), ENDED


def _since(began: float) -> float:
    return time.monotonic() - began


def _has_terminal(deliveries: list[Delivery], prediction_id: str) -> bool:
    for delivery in deliveries:
        try:
            data = json.loads(delivery.body)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("id") == prediction_id and data.get("status") in TERMINAL_STATUSES:
            return True
    return False


def _download(url: str, endpoint: Endpoint) -> str:
    """The output through bgremove.outputs.open_output (https, allow-list, redirects, size cap,
    image bytes sniffed), without the API token: its content type."""
    session = TargetSession()
    if endpoint.ca_bundle:
        session.verify = endpoint.ca_bundle
    with session:
        stream = outputs.open_output(
            url, endpoint.output_allowed_hosts, endpoint.output_max_bytes, endpoint.http_timeout_seconds, session
        )
        try:
            return stream.content_type
        finally:
            stream.close()
