"""Figure 4: peak RSS of the webhook function while it relays a 1 MB and a 100 MB output.

A dedicated stack (OUTPUT_MAX_BYTES raised, the predictions service told to drop its own webhooks)
turns real uploads into real jobs left in state `submitted` with a real, succeeded prediction. The
bench then delivers, signed like the service signs, each prediction's own body with its output URL
pointing at a PNG of random noise (compress_level=0, so the bytes are the size) served over HTTPS
from https://localhost by bench/output_server.py.

Memory is the gunicorn worker's VmHWM (peak RSS, read from /proc), reset to the current RSS
through /proc/PID/clear_refs before each delivery, after one warm-up delivery of a real cut-out.
A psutil sampler (every 2 ms) cross-checks it.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # no type information: types-psutil is not in requirements-dev.txt
import requests

from bench import common
from bgremove import jobs, naming
from bgremove.submit import webhook_url_for
from offline_cloud.client import webhook_headers

TARGET_RATIO = 1.5


def run(ctx: common.Context) -> dict[str, Any]:
    sizes = (100_000, 2_000_000) if ctx.quick else (1_000_000, 100_000_000)
    files_dir = ctx.work_dir / "memory-outputs"
    files_dir.mkdir(exist_ok=True)
    ctx.log(f"memory: writing noise PNGs of about {', '.join(f'{s:,}' for s in sizes)} bytes")
    files = [noise_png(files_dir / f"noise-{size}.png", size, seed=i) for i, size in enumerate(sizes)]

    directory = ctx.work_dir / "memory-stack"
    ctx.log("memory: starting a dedicated stack")
    stack = common.start_stack(
        directory,
        function_env={"OUTPUT_MAX_BYTES": str(max(sizes) * 2 + 16 * 2**20)},
        predictions_faults={"webhook_drop_rate": 1.0},
    )
    server = None
    try:
        info = stack.info
        assert info is not None
        server, base_url = common.start_output_server(files_dir, directory / "tls", ctx.work_dir / "output-server.log")
        jobs = [real_job(info, f"bench/memory/{uuid.uuid4().hex[:8]}-{i}.jpg", i) for i in range(1 + len(files))]
        worker = _worker(stack.processes["function-webhook"].pid)

        ctx.log("memory: warm-up delivery of a real cut-out")
        warm = _deliver(info, worker, jobs[0], jobs[0]["prediction"]["output"])
        runs = []
        for job, path in zip(jobs[1:], files, strict=True):
            ctx.log(f"memory: relaying {path.stat().st_size:,} bytes")
            measured = _deliver(info, worker, job, f"{base_url}/{path.name}")
            written = common.gcs(info).bucket(info.processed_bucket).get_blob(naming.output_name(job["name"]))
            if written is None or written.size != path.stat().st_size:
                raise RuntimeError(f"processed object for {path.name} is missing or the wrong size")
            runs.append({"output_bytes": path.stat().st_size, **measured})
    finally:
        if server is not None:
            common.stop_process(server)
        stack.stop()

    small, large = runs[0], runs[-1]
    value = common.ratio(large["peak_rss_bytes"], small["peak_rss_bytes"])
    return {
        "title": "Peak RSS of the webhook function relaying an output",
        "unit": "bytes",
        "method": (
            "VmHWM of the gunicorn worker, reset through /proc/PID/clear_refs before each delivery (after a "
            "warm-up delivery); psutil sampling every 2 ms as a cross-check. Ratio = peak at the large output / "
            "peak at the small one."
        ),
        "warm_up": warm,
        "runs": runs,
        "ratio": value,
        "target": f"peak RSS at 100 MB / peak at 1 MB <= {TARGET_RATIO}",
        "target_met": None if ctx.quick else bool(value is not None and value <= TARGET_RATIO),
    }


def noise_png(path: Path, approx_bytes: int, seed: int) -> Path:
    """A real RGB PNG of random noise, stored uncompressed, of about `approx_bytes` bytes."""
    import numpy as np
    from PIL import Image

    side = max(16, int((approx_bytes / 3) ** 0.5))
    pixels = np.random.default_rng(seed).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path, "PNG", compress_level=0)
    return path


def real_job(info: common.StackInfo, name: str, index: int, timeout: float = 120) -> dict[str, Any]:
    """Upload through the pipeline and wait for a job in state `submitted` whose prediction succeeded
    (the service must be dropping its own webhooks, or the pipeline would complete the job itself)."""
    client = common.gcs(info)
    blob = client.bucket(info.upload_bucket).blob(name)
    blob.upload_from_string(common.small_jpeg(index), content_type="image/jpeg")
    record_name = naming.job_record_name(naming.job_id(info.upload_bucket, name, int(blob.generation)))

    def ready() -> dict[str, Any] | None:
        try:
            job = json.loads(common.read_latest(client, info.state_bucket, record_name))
        except Exception:
            return None
        if job["state"] != jobs.SUBMITTED:
            if job["state"] in jobs.FINAL_STATES:
                raise RuntimeError(f"job for {name} is already {job['state']}")
            return None
        prediction = common.api(info, "GET", f"/v1/predictions/{job['prediction_ids'][-1]}")
        return {"name": name, "job": job, "prediction": prediction} if prediction["status"] == "succeeded" else None

    return common.wait_for(ready, timeout, f"a submitted job with a succeeded prediction for {name}", interval=0.1)


def _worker(master_pid: int) -> psutil.Process:
    children = psutil.Process(master_pid).children()
    if len(children) != 1:
        raise RuntimeError(f"expected one gunicorn worker under {master_pid}, found {len(children)}")
    return children[0]


def _status_kib(pid: int, field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    if match is None:
        raise RuntimeError(f"/proc/{pid}/status has no {field}")
    return int(match.group(1))


def _deliver(info: common.StackInfo, worker: psutil.Process, job: dict[str, Any], output: str) -> dict[str, Any]:
    body = json.dumps({**job["prediction"], "output": output}).encode()
    headers = webhook_headers(info.webhook_secret, body, f"msg_{uuid.uuid4().hex[:20]}")
    Path(f"/proc/{worker.pid}/clear_refs").write_text("5")  # VmHWM := current RSS
    idle = _status_kib(worker.pid, "VmRSS") * 1024
    sampled = [idle]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            sampled.append(worker.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    began = time.monotonic()
    try:
        # The URL the pipeline gave the API for this job (the API does not echo it in the body).
        url = webhook_url_for(info.webhook_url, job["job"]["job_id"])
        response = requests.post(url, data=body, headers=headers, timeout=600)
    finally:
        elapsed = time.monotonic() - began
        stop.set()
        sampler.join()
    if response.status_code != 200 or response.json().get("message") != "completed":
        raise RuntimeError(f"webhook answered {response.status_code}: {response.text[:300]}")
    peak = _status_kib(worker.pid, "VmHWM") * 1024
    return {
        "idle_rss_bytes": idle,
        "peak_rss_bytes": peak,
        "peak_above_idle_bytes": peak - idle,
        "sampled_peak_rss_bytes": max(sampled),
        "seconds": round(elapsed, 3),
    }
