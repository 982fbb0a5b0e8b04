"""Validly signed, succeeded predictions whose output must not be fetched or kept.

The documented outcome: 200 (the sender must not retry), the job settled by a failure record with
reason `output_refused` saying why, and nothing in the processed bucket. Each case uses its own real
job (its real webhook dropped) and changes only the output of its real prediction.
"""

from __future__ import annotations

import gzip
import io
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from PIL import Image

from tests.hostile.support import (
    PNG_SIGNATURE,
    HostileHost,
    JobPool,
    PendingJob,
    answer,
    chunked,
    gzip_bomb,
    redirect,
    webhook_log,
)
from tests.support import StackClient, photo

MAIN_CAP = 128 * 1024 * 1024  # OUTPUT_MAX_BYTES default
LIMITS_CAP = 32768  # OUTPUT_MAX_BYTES of the limits stack


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(buf, "PNG")
    return buf.getvalue()


def _lying_length(length: int, body: bytes) -> Callable[[BaseHTTPRequestHandler], None]:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Length", str(length))
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(body)

    return route


def _route(host: HostileHost, make: Callable[[HostileHost, str], Any]) -> str:
    """Register a route under a fresh path; return its https://localhost URL."""
    path = f"/{uuid.uuid4().hex}"
    host.routes[path] = make(host, path)
    return host.url(path)


def _redirect_to(
    target: Callable[[HostileHost, str], str], status: int = 302
) -> Callable[[PendingJob, HostileHost], str]:
    """An allow-listed URL that redirects to `target(host, path-of-a-trap)`; the trap records a visit."""

    def build(job: PendingJob, host: HostileHost) -> str:
        trap = f"/trap-{uuid.uuid4().hex}"
        host.routes[trap] = answer(200, "image/png", _png())
        path = f"/{uuid.uuid4().hex}"
        host.routes[path] = redirect(target(host, trap), status)
        _TRAPS[job.job_id] = trap
        return host.url(path)

    return build


_TRAPS: dict[str, str] = {}


def _served(route: Callable[[HostileHost, str], Any]) -> Callable[[PendingJob, HostileHost], str]:
    return lambda job, host: _route(host, route)


def _real(transform: Callable[[str], Any]) -> Callable[[PendingJob, HostileHost], Any]:
    """The job's output URL on the allow-listed https://localhost of the service, transformed."""
    return lambda job, host: transform(job.delivery_url)


def _loop(host: HostileHost, path: str) -> Any:
    return redirect(path)


# (case id, output given the job and the hostile host, what the failure record says)
CASES: list[tuple[str, Callable[[PendingJob, HostileHost], Any], str]] = [
    ("not-a-url", lambda job, host: "not a url", "scheme 'none' is not https"),
    ("relative-path", lambda job, host: "/delivery/x/output.png", "scheme 'none' is not https"),
    ("javascript-url", lambda job, host: "javascript:alert(1)", "scheme 'javascript' is not https"),
    ("data-url", lambda job, host: "data:image/png;base64,iVBORw0KGgo=", "scheme 'data' is not https"),
    ("file-url", lambda job, host: "file:///etc/passwd", "scheme 'file' is not https"),
    ("ftp-url", lambda job, host: "ftp://localhost/output.png", "scheme 'ftp' is not https"),
    ("http-not-https", _real(lambda url: url.replace("https://", "http://", 1)), "scheme 'http' is not https"),
    ("host-outside-allow-list", lambda job, host: "https://evil.example/x.png", "'evil.example' is not allowed"),
    ("allowed-name-as-subdomain", lambda job, host: "https://localhost.evil.example/x.png", "is not allowed"),
    ("allowed-name-as-suffix", lambda job, host: "https://evillocalhost/x.png", "'evillocalhost' is not allowed"),
    ("allowed-name-with-trailing-dot", lambda job, host: "https://localhost./x.png", "'localhost.' is not allowed"),
    ("allowed-name-as-userinfo", lambda job, host: "https://localhost@evil.example/x.png", "carries credentials"),
    ("credentials-in-url", _real(lambda url: url.replace("https://", "https://user:pw@", 1)), "carries credentials"),
    ("ip-loopback-v4", _real(lambda url: url.replace("localhost", "127.0.0.1", 1)), "host is an IP address"),
    ("ip-private-10", lambda job, host: "https://10.0.0.1/x.png", "host is an IP address"),
    ("ip-private-192-168", lambda job, host: "https://192.168.1.1/x.png", "host is an IP address"),
    ("ip-loopback-v6", _real(lambda url: url.replace("localhost", "[::1]", 1)), "host is an IP address"),
    ("ip-metadata-server", lambda job, host: "https://169.254.169.254/computeMetadata/v1/", "host is an IP address"),
    ("ip-v4-mapped-v6", lambda job, host: "https://[::ffff:169.254.169.254]/", "host is an IP address"),
    ("ip-in-one-item-list", lambda job, host: ["https://10.0.0.1/x.png"], "host is an IP address"),
    ("ip-as-decimal-number", lambda job, host: "https://2130706433/x.png", "'2130706433' is not allowed"),
    ("port-out-of-range", lambda job, host: "https://localhost:99999/x.png", "output URL is malformed"),
    ("broken-ipv6-literal", lambda job, host: "https://[::1/x.png", "output URL is malformed"),
    (
        "redirect-to-ip-literal",
        _redirect_to(lambda host, trap: host.url(trap, host="127.0.0.1")),
        "host is an IP address",
    ),
    (
        "redirect-to-metadata-server",
        _redirect_to(lambda host, trap: "http://169.254.169.254/computeMetadata/v1/instance/"),
        "scheme 'http' is not https",
    ),
    ("redirect-to-other-host", _redirect_to(lambda host, trap: "https://evil.example" + trap, 301), "is not allowed"),
    (
        "redirect-to-http",
        _redirect_to(lambda host, trap: host.url(trap).replace("https://", "http://"), 307),
        "scheme 'http' is not https",
    ),
    (
        "redirect-to-userinfo",
        _redirect_to(lambda host, trap: "https://localhost@evil.example" + trap, 308),
        "carries credentials",
    ),
    ("redirect-loop", _served(_loop), "redirects too many times"),
    (
        "html-not-an-image",
        _served(lambda h, p: answer(200, "text/html", b"<html><script>alert(1)</script></html>")),
        "output is not an image",
    ),
    (
        "svg-not-accepted",
        _served(lambda h, p: answer(200, "image/svg+xml", b'<svg xmlns="http://www.w3.org/2000/svg"><script/></svg>')),
        "output is not an image",
    ),
    ("empty-body", _served(lambda h, p: answer(200, "image/png", b"")), "output is not an image"),
    (
        "png-declared-jpeg",
        _served(lambda h, p: answer(200, "image/jpeg", _png())),
        "output bytes are image/png but declared image/jpeg",
    ),
    (
        "jpeg-declared-png",
        _served(lambda h, p: answer(200, "image/png", photo("coffee", "JPEG", (16, 16)))),
        "output bytes are image/jpeg but declared image/png",
    ),
    ("host-answers-404", _served(lambda h, p: answer(404, "text/plain", b"gone")), "output host answered 404"),
    (
        "declared-length-over-cap",
        _served(lambda h, p: _lying_length(MAIN_CAP + 1, PNG_SIGNATURE)),
        f"over the {MAIN_CAP}-byte cap",
    ),
]


@pytest.mark.parametrize(("case", "make", "error"), CASES, ids=[c[0] for c in CASES])
def test_refused_output_settles_the_job_as_failed_and_writes_nothing(
    main_stack: StackClient, job_pool: JobPool, hostile_host: HostileHost, case: str, make: Any, error: str
) -> None:
    job = job_pool.take(succeeded=False)
    output = make(job, hostile_host)
    log = webhook_log(main_stack.info)

    reply = job.deliver(job.succeeded(output))

    assert (reply.status_code, reply.json()) == (200, {"status": 200, "message": "failed"})
    entry = log.find("job failed: output_refused", outcome="failed", job_id=job.job_id)
    assert error in entry["error"] and entry["severity"] == "WARNING"
    job.assert_refused_output(error)
    trap = _TRAPS.get(job.job_id)
    if trap is not None:
        assert trap not in hostile_host.requested, "a redirect off the allow-list was followed"
    if case == "redirect-loop":
        assert hostile_host.requested.count(output.removeprefix(hostile_host.url(""))) == 4  # 1 + MAX_REDIRECTS


def test_redirect_within_the_allow_list_is_followed(
    main_stack: StackClient, job_pool: JobPool, hostile_host: HostileHost
) -> None:
    # The control for the redirect cases: hops are checked one by one, not refused wholesale.
    job = job_pool.take()
    url = _route(hostile_host, lambda h, p: redirect(job.prediction["output"]))

    reply = job.deliver(job.body(output=url))

    assert (reply.status_code, reply.json()["message"]) == (200, "completed")
    written = main_stack.processed(job.output_name)
    assert written is not None and written.metadata["bgremove-job"] == job.job_id


UNSIZED: list[tuple[str, Callable[[bytes], Any]]] = [
    ("chunked", lambda png: chunked("image/png", [png[i : i + 1000] for i in range(0, len(png), 1000)])),
    ("gzip-encoded", lambda png: answer(200, "image/png", gzip.compress(png), {"Content-Encoding": "gzip"})),
]


@pytest.mark.parametrize(("case", "route"), UNSIZED, ids=[c[0] for c in UNSIZED])
def test_output_without_a_content_length_is_written(
    main_stack: StackClient, job_pool: JobPool, hostile_host: HostileHost, case: str, route: Any
) -> None:
    # Not hostile, but the path the streamed-cap cases take: a body of unknown length is uploaded
    # resumably, and must arrive whole.
    job = job_pool.take()
    png = main_stack.http.get(job.prediction["output"], timeout=30, verify=main_stack.info.ca_bundle).content
    url = _route(hostile_host, lambda h, p: route(png))

    reply = job.deliver(job.body(output=url))

    assert (reply.status_code, reply.json()["message"]) == (200, "completed")
    written = main_stack.processed(job.output_name)
    assert written is not None and written.download_as_bytes() == png
    assert written.content_type == "image/png"


# --- the output size cap, on a stack with OUTPUT_MAX_BYTES=32768 ---------------------------------


def test_real_output_over_the_cap_is_refused(limits_stack: StackClient) -> None:
    # The whole real path: upload, prediction, the real webhook, the real output (about 43 KB).
    name = f"big-output/{uuid.uuid4().hex}.jpg"
    log = webhook_log(limits_stack.info)
    generation = limits_stack.upload(name, photo("coffee", "JPEG", (160, 120)), "image/jpeg")

    job = limits_stack.wait_job(name, generation)

    assert (job["state"], job["reason"]) == ("failed", "output_refused"), job
    assert f"over the {LIMITS_CAP}-byte cap" in job["error"]
    entry = log.wait_for("job failed: output_refused", outcome="failed", job_id=job["job_id"])
    assert f"over the {LIMITS_CAP}-byte cap" in entry["error"]
    assert limits_stack.processed("cutouts/" + name.removesuffix(".jpg") + ".png") is None
    assert [
        b.name for b in limits_stack.gcs.list_blobs(limits_stack.info.processed_bucket, prefix="cutouts/big-output/")
    ] == []


STREAMED: list[tuple[str, Callable[[HostileHost, str], Any]]] = [
    # No Content-Length: only the count kept while streaming can stop these.
    ("chunked", lambda h, p: chunked("image/png", [PNG_SIGNATURE + bytes(8192 - 8)] + [bytes(8192)] * 16)),
    (
        "gzip-bomb",
        lambda h, p: answer(200, "image/png", gzip_bomb(PNG_SIGNATURE, 64 * 1024 * 1024), {"Content-Encoding": "gzip"}),
    ),
]


@pytest.mark.parametrize(("case", "route"), STREAMED, ids=[c[0] for c in STREAMED])
def test_streamed_output_over_the_cap_is_refused(
    limits_stack: StackClient, limits_job_pool: JobPool, limits_hostile_host: HostileHost, case: str, route: Any
) -> None:
    job = limits_job_pool.take(succeeded=False)
    url = _route(limits_hostile_host, route)
    log = webhook_log(limits_stack.info)

    reply = job.deliver(job.succeeded(url))

    assert (reply.status_code, reply.json()["message"]) == (200, "failed")
    entry = log.find("job failed: output_refused", outcome="failed", job_id=job.job_id)
    assert f"output is larger than {LIMITS_CAP} bytes" in entry["error"]
    job.assert_refused_output(f"output is larger than {LIMITS_CAP} bytes")
