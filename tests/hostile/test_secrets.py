"""Secrets never leak: no API token, webhook secret or signed-URL signature in any log line of any
process of any stack these tests ran, nor in any answer our functions gave them.

This file runs after every other test (see conftest.py), so it reads what all of them caused.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from offline_cloud.stack import StackInfo
from tests.hostile.support import ANSWERS, STACKS, JobPool, deliver, webhook_log
from tests.support import StackClient, photo

SIGNATURE_IN_TEXT = re.compile(r"X-Goog-Signature=([0-9a-fA-F]{32,})")


def _secrets_of(info: StackInfo) -> dict[str, str]:
    return {
        "API token": info.api_token,
        "webhook secret": info.webhook_secret,
        "webhook secret key": info.webhook_secret.removeprefix("whsec_"),
    }


def _issued_signatures(stack: StackClient) -> list[str]:
    """The X-Goog-Signature of every signed URL the pipeline handed the predictions service."""
    found = []
    for prediction in stack.api("GET", "/v1/predictions").json()["results"]:
        image = (prediction.get("input") or {}).get("image") or ""
        if image.startswith("http"):
            found += parse_qs(urlsplit(image).query).get("X-Goog-Signature", [])
    return found


def _log_files(info: StackInfo) -> list[Path]:
    """Every log of every process, and anything else the stack keeps in its log directory."""
    named = {Path(path) for path in info.logs.values()}
    directories = {path.parent for path in named}
    return sorted(named | {p for d in directories for p in d.iterdir() if p.is_file()})


def _run_pipeline(stack: StackClient) -> list[str]:
    """A few real uploads: one sent as a data URL, one as a signed URL, one that fails."""
    names = []
    small = f"leak/{uuid.uuid4().hex}/small.jpg"
    large = f"leak/{uuid.uuid4().hex}/large.png"
    data = photo("coffee", "PNG")
    assert len(data) > 256 * 1024  # over DATA_URL_MAX_BYTES: `auto` signs a URL
    for name, payload, content_type in (
        (small, photo("coffee", "JPEG", (64, 48)), "image/jpeg"),
        (large, data, "image/png"),
    ):
        job = stack.wait_job(name, stack.upload(name, payload, content_type))
        assert job["state"] == "completed", job
        names.append(name)
    stack.set_faults(fail_rate=1.0)
    failing = f"leak/{uuid.uuid4().hex}/fails.png"
    job = stack.wait_job(failing, stack.upload(failing, data, "image/png"))
    assert (job["state"], job["reason"]) == ("failed", "prediction_failed"), job
    names.append(failing)
    return names


def test_no_secret_reaches_any_log_or_answer(main_stack: StackClient, faults: StackClient) -> None:
    _run_pipeline(main_stack)
    signatures = _issued_signatures(main_stack)
    assert len(signatures) >= 2  # the signed-URL upload and the failing one
    # A refused delivery too, so a 401 answer is among those read.
    assert deliver(main_stack.info, b"{}", headers={"webhook-signature": "v1,AAAA"}).status_code == 401

    secrets = {f"signed-URL signature {s[:8]}…": s for s in signatures}
    for info in STACKS:
        secrets |= {
            f"{name} of the stack at {Path(info.ca_bundle).parent.parent}": value
            for name, value in _secrets_of(info).items()
        }
    assert all(len(value) >= 16 for value in secrets.values())

    sources = {}
    for info in STACKS:
        for path in _log_files(info):
            sources[str(path)] = path.read_text(errors="replace")
    assert any(path.endswith("function-webhook.log") for path in sources)
    sources |= {f"answer #{i}": text for i, text in enumerate(ANSWERS)}
    assert len(ANSWERS) > 0

    leaks = [
        f"{what} in {where}" for where, text in sources.items() for what, value in secrets.items() if value in text
    ]
    leaks += [f"a signed-URL signature in {where}" for where, text in sources.items() if SIGNATURE_IN_TEXT.search(text)]
    assert leaks == []


def test_failure_message_quoting_the_signed_url_is_not_logged_verbatim(main_stack: StackClient) -> None:
    # Runs after the test above (same file, defined later), so a leak here cannot fail that one.
    stack = main_stack
    # A PNG over DATA_URL_MAX_BYTES goes as a signed URL.
    job = JobPool(stack, fast_batch=1, prefix="leak-quote", image=(photo("coffee", "PNG"), "image/png")).take(False)
    signed_url = job.prediction["input"]["image"]
    signature = parse_qs(urlsplit(signed_url).query)["X-Goog-Signature"][0]
    path_and_query = signed_url.split("//", 1)[1].split("/", 1)[1]
    error = f"could not fetch input image: ConnectionError: Max retries exceeded with url: /{path_and_query}"
    log = webhook_log(stack.info)

    reply = job.deliver(job.body(error=error))

    assert (reply.status_code, reply.json()["message"]) == (200, "failed")
    entry = log.find("job failed", job_id=job.job_id)
    assert signature not in str(entry)
