"""What every figure shares: the stacks, clients for them, process and HTTP helpers, statistics and
a description of the machine."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import requests
from google.cloud import storage

from bgremove import jobs, naming
from bgremove.jobs import Job
from offline_cloud.client import storage_client
from offline_cloud.stack import ROOT, Stack, StackOptions, free_port
from offline_cloud.stack import StackInfo as StackInfo  # re-exported: the figures annotate with common.StackInfo

T = TypeVar("T")
BENCH_DIR = ROOT / "bench"
FUNCTIONS_FRAMEWORK = str(Path(sys.executable).parent / "functions-framework")


@dataclass
class Context:
    """What a figure gets: the run's mode, the main stack and a scratch directory."""

    quick: bool
    stack: Stack
    work_dir: Path

    @property
    def info(self) -> StackInfo:
        assert self.stack.info is not None
        return self.stack.info

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- stacks ---------------------------------------------------------------------------------------


def start_stack(directory: Path, **options: Any) -> Stack:
    """An offline stack with the launcher's defaults, except what `options` says."""
    stack = Stack(StackOptions(directory=directory, **options))
    stack.start()
    return stack


def gcs(info: StackInfo) -> storage.Client:
    """A google-cloud-storage client for the stack's emulator, as the tests make one."""
    return storage_client(info)


def create_bucket(info: StackInfo, name: str) -> None:
    response = requests.post(
        f"{info.storage_emulator_host}/storage/v1/b",
        params={"project": "offline-project"},
        json={"name": name},
        timeout=10,
    )
    if response.status_code not in (200, 409):
        raise RuntimeError(f"could not create bucket {name}: {response.status_code} {response.text[:200]}")


def api(info: StackInfo, method: str, path: str, session: requests.Session | None = None, **kwargs: Any) -> Any:
    """A call to the predictions service (its API or its admin routes): its JSON answer."""
    headers = {"Authorization": f"Bearer {info.api_token}", **kwargs.pop("headers", {})}
    response = (session or requests).request(
        method, info.predictions_service_url + path, headers=headers, timeout=30, verify=info.ca_bundle, **kwargs
    )
    response.raise_for_status()
    return response.json()


def set_faults(info: StackInfo, **knobs: Any) -> None:
    api(info, "POST", "/_admin/faults", json=knobs)


def relay_log(info: StackInfo) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = requests.get(info.relay_admin_url + "/deliveries", timeout=30).json()["log"]
    return records


def task_log(info: StackInfo, queue: str) -> list[dict[str, Any]]:
    """The Cloud Tasks emulator's dispatch records for one queue (each once on_task has answered)."""
    records: list[dict[str, Any]] = requests.get(
        info.tasks_admin_url + "/log", params={"queue": queue}, timeout=30
    ).json()
    return records


def read_latest(client: storage.Client, bucket: str, name: str) -> bytes:
    """The object's current bytes. (A Blob that was read once stays pinned to the generation it saw.)"""
    data: bytes = client.bucket(bucket).blob(name).download_as_bytes()
    return data


def wait_job(info: StackInfo, client: storage.Client, name: str, generation: int, timeout: float) -> Job:
    """Poll an upload's job record until it is final."""
    record = naming.job_record_name(naming.job_id(info.upload_bucket, name, generation))

    def final() -> Job | None:
        try:
            job = Job.from_json(json.loads(read_latest(client, info.state_bucket, record)))
        except Exception:  # not written yet
            return None
        return job if job.is_final else None

    return wait_for(final, timeout, f"the job for {name}", interval=0.05)


def warm_up(info: StackInfo) -> None:
    """One image through the pipeline, so each function has built its clients (cold starts are figure 3)."""
    client = gcs(info)
    blob = client.bucket(info.upload_bucket).blob("bench/warm-up.jpg")
    blob.upload_from_string(small_jpeg(0), content_type="image/jpeg")
    job = wait_job(info, client, blob.name, int(blob.generation), 120)
    if job.state != jobs.COMPLETED:
        raise RuntimeError(f"the warm-up image failed: {job.reason} {job.error}")


def upload_completed(info: StackInfo, name: str, payload: bytes, timeout: float = 180) -> tuple[Any, Job]:
    """Upload one JPEG and wait for its job to complete: the blob (its `timeCreated`) and the job."""
    client = gcs(info)
    blob = client.bucket(info.upload_bucket).blob(name)
    blob.upload_from_string(payload, content_type="image/jpeg")
    job = wait_job(info, client, name, int(blob.generation), timeout)
    if job.state != jobs.COMPLETED:
        raise RuntimeError(f"{name}: job {job.state}: {job.reason} {job.error}")
    return blob, job


def rfc3339(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def small_jpeg(index: int, size: tuple[int, int] = (128, 96)) -> bytes:
    """A small real photograph (skimage ships them), a different one by index."""
    import skimage.data
    from PIL import Image

    name = ("coffee", "astronaut", "chelsea", "rocket")[index % 4]
    image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize(size)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


# --- processes ------------------------------------------------------------------------------------


def function_env(info: StackInfo, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the stack gives its functions, for a function process the bench starts."""
    env = {**os.environ, **info.function_env, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def start_function(
    target: str, source: Path, env: dict[str, str], port: int, log: Path | None = None, program: Path | None = None
) -> subprocess.Popen[bytes]:
    """`functions-framework --target T --source S` on 127.0.0.1:port, as the stack starts its functions."""
    argv = [
        str(program or FUNCTIONS_FRAMEWORK),
        "--target",
        target,
        "--source",
        str(source),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    out = log.open("ab") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=ROOT)
    finally:
        if log:
            out.close()  # type: ignore[union-attr]


def start_output_server(directory: Path, tls_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """bench/output_server.py serving `directory` with the stack's certificate; returns it and its base URL."""
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.output_server", "--dir", str(directory),
             "--cert", str(tls_dir / "cert.pem"), "--key", str(tls_dir / "key.pem")],
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, cwd=ROOT,
        )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.isdigit():
        stop_process(proc)
        raise RuntimeError(f"output server did not start (see {log})")
    return proc, f"https://localhost:{int(line)}"


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_http(
    url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60.0, interval: float = 0.005
) -> requests.Response:
    """Poll until `url` gives any HTTP answer (an open port is not a ready server)."""
    deadline = time.monotonic() + timeout
    session = requests.Session()
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before answering {url}")
        try:
            return session.get(url, timeout=2)
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer from {url} within {timeout}s") from None
            time.sleep(interval)


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def port() -> int:
    return free_port()


# --- statistics -----------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Iterable[float], digits: int = 4) -> dict[str, Any]:
    values = list(values)
    return {
        "n": len(values),
        "min": round(min(values), digits),
        "p50": round(percentile(values, 50), digits),
        "p95": round(percentile(values, 95), digits),
        "max": round(max(values), digits),
        "mean": round(sum(values) / len(values), digits),
    }


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 2) if denominator > 0 else None


# --- the machine and the code -------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import psutil  # type: ignore[import-untyped]  # no type information: types-psutil is not in requirements-dev.txt

    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": cpu_model,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD") or "unknown", "dirty": bool(git("status", "--porcelain"))}


def dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False) + "\n"
