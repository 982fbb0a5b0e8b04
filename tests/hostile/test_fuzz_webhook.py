"""A fuzz run of the webhook function over generated requests: random methods, headers, query
strings, bodies and JSON shapes, about half of them validly signed so they reach the parser and the
job lookup. Bodies mostly carry a signed `webhook` echo; when a draw drops it, the request's query
string (a fuzz job's `?job=`, a hostile one, or none) is what names the job, unsigned.

It runs in-process (functions-framework's own app around main.py, through Flask's test client)
against the running offline stack's storage, so job records are real. Whatever arrives, the answer
is one of the documented codes, never a 500, and nothing is ever written to the processed bucket.

    BGREMOVE_FUZZ_EXAMPLES   cases to run (300 by default; `make fuzz` runs more)
    BGREMOVE_FUZZ_RANDOM=1   draw new cases each run instead of the same derandomized ones
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bgremove import runtime
from bgremove.submit import webhook_url_for
from offline_cloud.stack import MODEL_VERSION, ROOT
from tests.hostile.support import (
    UNAUTHORIZED_BODY,
    JobPool,
    PendingJob,
    assert_no_output,
    random_secret,
    record,
    signed_headers,
)
from tests.support import StackClient

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient

EXAMPLES = int(os.environ.get("BGREMOVE_FUZZ_EXAMPLES", "300"))
RANDOM = os.environ.get("BGREMOVE_FUZZ_RANDOM", "") not in ("", "0")
DOCUMENTED = {200, 400, 401, 404, 405, 409, 413}
LIMIT = 1024 * 1024  # WEBHOOK_MAX_BODY_BYTES default


def _clear_process_caches() -> None:
    """The module-level clients and config are built once per process; rebuild them for this env."""
    for value in vars(runtime).values():
        if hasattr(value, "cache_clear"):
            value.cache_clear()


@pytest.fixture(scope="module")
def fuzz_jobs(job_pool: JobPool) -> list[PendingJob]:
    return [job_pool.take(succeeded=False) for _ in range(3)]


@contextlib.contextmanager
def _webhook_app(env: dict[str, str]) -> Iterator[FlaskClient]:
    """functions-framework's app for on_prediction_webhook, loaded from main.py under `env`.

    main.py reads its config at import, so the environment is set before the app loads it."""
    import functions_framework

    previous_main = sys.modules.get("main")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        _clear_process_caches()
        try:
            # functions-framework's create_app is unannotated; this name calls it typed.
            create_app: Callable[[str, str], Flask] = functions_framework.create_app
            app = create_app("on_prediction_webhook", str(ROOT / "main.py"))
            yield app.test_client()
        finally:
            _clear_process_caches()
            if previous_main is None:
                sys.modules.pop("main", None)
            else:
                sys.modules["main"] = previous_main


@pytest.fixture(scope="module")
def webhook_app(main_stack: StackClient) -> Iterator[FlaskClient]:
    """The webhook, in-process, configured for the running stack."""
    with _webhook_app(main_stack.info.function_env) as client:
        yield client


# --- strategies -------------------------------------------------------------------------------

# What a server hands over as a header value: latin-1 text without line breaks or NUL.
header_text = st.text(st.characters(max_codepoint=255, blacklist_characters="\r\n\x00"), max_size=60)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=15,
)
ABSENT = object()


def _reaches_the_network(output: Any) -> bool:
    """An https output on the allow-listed host would be downloaded; the fuzz keeps to refusals
    (a download's own failures answer 503, which is right, but not what this run is about)."""
    if isinstance(output, list) and len(output) == 1:
        output = output[0]
    if not isinstance(output, str):
        return False
    try:
        parts = urlsplit(output)
        host = (parts.hostname or "").lower()
    except ValueError:
        return False
    return parts.scheme.lower() == "https" and (host == "localhost" or host.endswith(".localhost"))


hostile_outputs = st.one_of(
    st.sampled_from(
        [
            None,
            "",
            "not a url",
            "http://localhost/x.png",
            "https://evil.example/x.png",
            "https://169.254.169.254/computeMetadata/v1/",
            "https://[::1]/x.png",
            "https://10.0.0.1/x.png",
            "file:///etc/passwd",
            "https://localhost@evil.example/",
            "https://[::1/x.png",
            "https://localhost:99999/",
        ]
    ),
    st.text(max_size=80),
    json_values,
).filter(lambda output: not _reaches_the_network(output))


def _pick(draw: Any, *weighted: tuple[int, Any]) -> Any:
    """Draw one strategy by weight (the first is what hypothesis's simplest draws lead to)."""
    roll = draw(st.integers(0, sum(weight for weight, _ in weighted) - 1))
    for weight, strategy in weighted:
        if roll < weight:
            return draw(strategy)
        roll -= weight
    raise AssertionError("unreachable")


@st.composite
def prediction_bodies(draw: Any, jobs: list[PendingJob], webhook_base: str) -> bytes:
    """A real job's prediction (or one for no job) with a few fields changed, dropped or mistyped."""
    job = draw(st.sampled_from([*jobs, None]))
    job_id = job.job_id if job else draw(st.text("0123456789abcdef", min_size=64, max_size=64))
    body: dict[str, Any] = {**(job.prediction if job else {"status": "succeeded", "version": MODEL_VERSION})}
    # Another prediction's id unless a draw puts the job's own back: the jobs stay open (and answer
    # 409) longer than if most bodies could settle them.
    real_id = body.get("id", "fuzzprediction")
    body["id"] = "someoneelses"
    body["webhook"] = webhook_url_for(webhook_base, job_id)
    valid_ish = {
        "id": st.sampled_from([real_id, "p" * 128, "x"]),
        "status": st.sampled_from(["succeeded", "failed", "canceled", "aborted", "processing", "starting", "other"]),
        "version": st.sampled_from([MODEL_VERSION, "0" * 64, ""]),
        "output": hostile_outputs,
        "error": st.one_of(st.none(), st.text(max_size=60)),
        "webhook": st.one_of(
            st.text("0123456789abcdef", min_size=60, max_size=66).map(lambda j: webhook_url_for(webhook_base, j)),
            st.text(max_size=100),
        ),
    }
    for name in draw(st.lists(st.sampled_from(sorted(valid_ish)), unique=True, max_size=3)):
        body[name] = _pick(draw, (6, valid_ish[name]), (2, json_values), (1, st.just(ABSENT)))
        if body[name] is ABSENT:
            del body[name]
    if body.get("status") == "succeeded" and _reaches_the_network(body.get("output")):
        body["output"] = "https://evil.example/x.png"
    body |= draw(st.dictionaries(st.text(max_size=10).filter(lambda k: k not in body), json_values, max_size=2))
    return json.dumps(body).encode()


@st.composite
def webhook_requests(draw: Any, jobs: list[PendingJob], secret: str, webhook_base: str) -> dict[str, Any]:
    method = _pick(
        draw, (9, st.just("POST")), (1, st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE"]))
    )
    body = _pick(
        draw,
        (6, prediction_bodies(jobs, webhook_base)),
        (1, json_values.map(lambda v: json.dumps(v).encode())),
        (1, st.binary(max_size=300)),
        (1, st.sampled_from([b"", b"[" * 50 + b"]" * 50, b"x" * (LIMIT + 1), b" " * LIMIT + b"{}"])),
    )
    now = int(time.time())
    how = _pick(
        draw,
        (5, st.just("signed")),
        (1, st.sampled_from(["stale", "future", "unsigned", "garbled", "wrong-key"])),
    )
    headers: dict[str, str] = {}
    if how in ("signed", "stale", "future"):
        offset = {"signed": 0, "stale": -draw(st.integers(301, 10**9)), "future": draw(st.integers(301, 10**9))}[how]
        webhook_id = _pick(draw, (3, st.just("msg_fuzz")), (1, header_text.filter(bool)))
        headers = signed_headers(secret, body, webhook_id, now + offset)
    elif how == "wrong-key":
        headers = signed_headers(random_secret(), body, "msg_fuzz", now)
    elif how == "garbled":
        headers = signed_headers(secret, body, "msg_fuzz", now)
        headers[draw(st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature"]))] = draw(
            st.one_of(header_text, st.text("0123456789", min_size=1, max_size=400), st.just("9" * 400))
        )
    some_job = draw(st.sampled_from(jobs)).job_id
    query = _pick(
        draw,
        (4, st.just("")),
        (3, st.just(f"job={some_job}")),
        (
            2,
            st.sampled_from(
                [
                    "job=",
                    f"job={some_job}&job={some_job}",
                    f"job={some_job.upper()}",
                    f"job={some_job}%00",
                    f"job=../{some_job}",
                    f"x=1;job={some_job}",
                    "&".join(["x=1"] * 30) + f"&job={some_job}",
                    "job=" + "0" * 64,
                ]
            ),
        ),
        (1, st.text("job=&;%0123456789abcdefxyz./", max_size=90)),
    )
    if draw(st.integers(0, 9)) == 9:
        headers |= draw(
            st.dictionaries(
                st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "Content-Type", "X-Other"]),
                header_text,
                max_size=2,
            )
        )
    return {"method": method, "body": body, "headers": headers, "query": query}


# --- the run ----------------------------------------------------------------------------------


def test_webhook_never_crashes_whatever_it_is_sent(
    webhook_app: FlaskClient, fuzz_jobs: list[PendingJob], main_stack: StackClient
) -> None:
    seen: dict[int, int] = {}

    @settings(
        max_examples=EXAMPLES,
        derandomize=not RANDOM,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=webhook_requests(fuzz_jobs, main_stack.info.webhook_secret, main_stack.info.webhook_url))
    # Methods other than POST are a tenth of the draws; this one is always among the cases, so the
    # coverage check below never depends on how the generated cases fall.
    @example(request={"method": "GET", "body": b"", "headers": {}, "query": ""})
    def run(request: dict[str, Any]) -> None:
        response = record(
            webhook_app.open(
                "/",
                method=request["method"],
                query_string=request["query"],
                data=request["body"],
                headers=request["headers"],
            )
        )
        status = response.status_code
        seen[status] = seen.get(status, 0) + 1
        assert status in DOCUMENTED, (
            status,
            response.get_data(as_text=True)[:500],
            request["headers"],
            request["query"],
        )
        if status == 401:
            assert response.get_json() == UNAUTHORIZED_BODY
        if status == 405:
            assert response.headers["Allow"] == "POST"

    run()

    print(f"fuzz: {EXAMPLES} cases, answers {dict(sorted(seen.items()))}")
    assert {200, 400, 401, 404, 405, 409, 413} <= set(seen), f"the fuzz did not reach every outcome: {seen}"
    for job in fuzz_jobs:
        assert_no_output(main_stack, job.output_name, job.job_id)


def test_rotation_accepts_every_configured_secret_and_no_other(main_stack: StackClient) -> None:
    """WEBHOOK_SECRETS as during a rotation: the new secret and the old one, comma and space separated."""
    new, old, stranger = random_secret(), main_stack.info.webhook_secret, random_secret()
    body = json.dumps({"id": "p1", "status": "succeeded", "webhook": webhook_url_for("https://x/", "0" * 64)}).encode()
    env = {**main_stack.info.function_env, "WEBHOOK_SECRETS": f" {new},  {old} "}
    with _webhook_app(env) as client:
        answers = {
            name: record(client.post("/", data=body, headers=signed_headers(secret, body))).status_code
            for name, secret in (("new", new), ("old", old), ("stranger", stranger))
        }
    # Past the signature, the body names no job: 404. A secret that is not configured: 401.
    assert answers == {"new": 404, "old": 404, "stranger": 401}
