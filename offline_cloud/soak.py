"""Fault-injected soak: many uploads through the offline stack with every fault knob turned on and
function workers killed mid-request, then a check that each image has exactly one outcome.

    python -m offline_cloud.soak --images 500

Figures printed (and returned by `run_soak`): images, faults injected by kind, outcomes, lost
images, duplicate outputs, predictions per image, wall time.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # no type information: types-psutil is not in requirements-dev.txt
import requests
from google.cloud import storage
from PIL import Image

from bgremove import jobs, naming
from offline_cloud import verify
from offline_cloud.client import storage_client
from offline_cloud.stack import Stack, StackInfo, StackOptions

MAX_PREDICTION_ATTEMPTS = 4
# The only failure the faults cause on purpose (fail_rate); any other reason is a defect.
EXPECTED_FAILURES = ("prediction_failed",)

PREDICTION_FAULTS = {
    "create_429_rate": 0.05,
    "create_5xx_rate": 0.05,
    "get_429_rate": 0.05,
    "get_5xx_rate": 0.05,
    "retry_after_seconds": 0.2,
    "fail_rate": 0.05,
    "webhook_drop_rate": 0.1,
    "webhook_duplicate_rate": 0.1,
    "webhook_delay_seconds": 0.3,
    "webhook_reorder_rate": 0.1,
    "seed": 7,
}
RELAY_FAULTS = {"duplicate_rate": 0.1, "seed": 7}
FUNCTION_ENV = {
    "CLAIM_TTL_SECONDS": "3",
    "RECONCILE_AFTER_SECONDS": "4",
    "API_MAX_ATTEMPTS": "3",
    "API_BACKOFF_SECONDS": "0.1",
    "API_BACKOFF_MAX_SECONDS": "0.5",
    "MAX_PREDICTION_ATTEMPTS": str(MAX_PREDICTION_ATTEMPTS),
    # Long enough for the whole batch to queue behind the model: an aborted prediction is a
    # failure record by design, which would measure the queue, not the pipeline.
    "CANCEL_AFTER": "30m",
    "LOG_LEVEL": "INFO",
}


@dataclass
class SoakReport:
    images: int
    faults: dict[str, int]
    outcomes: dict[str, int]
    lost: int
    duplicate_outputs: int
    orphan_outputs: int
    predictions_per_image: dict[str, float]
    over_attempt_budget: int
    reconciler_runs: int
    wall_seconds: float
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        lines = [
            f"images                 {self.images}",
            f"wall time              {self.wall_seconds:.1f} s",
            "faults injected        " + ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items())),
            "outcomes               " + ", ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items())),
            f"lost (no outcome)      {self.lost}",
            f"duplicate outputs      {self.duplicate_outputs}",
            f"orphan outputs         {self.orphan_outputs}",
            "predictions per image  " + ", ".join(f"{k}={v:g}" for k, v in self.predictions_per_image.items()),
            f"over attempt budget    {self.over_attempt_budget} (budget {MAX_PREDICTION_ATTEMPTS})",
            f"reconciler runs        {self.reconciler_runs}",
            "result                 " + ("PASS" if self.ok else "FAIL: " + "; ".join(self.problems[:10])),
        ]
        return "\n".join(lines)


# Upload sizes, as a share of the images: mostly thumbnails, but also photos on both sides of the
# data-URL cut-off (256 KiB) and a few of a megapixel or more, which go as signed URLs.
SIZE_MIX = (
    ("thumbnail", 0.6, (96, 160)),
    ("near-data-url-cutoff", 0.3, (900, 1100)),
    ("megapixel", 0.1, (1300, 1900)),
)


def _images(count: int, seed: int) -> list[bytes]:
    """Real photographs: random crops of scikit-image's samples, resized to the widths of SIZE_MIX
    with mild noise (so JPEG sizes are those of photos, not of smooth upscales); each upload differs."""
    import numpy as np
    import skimage.data

    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    sources = [Image.fromarray(getattr(skimage.data, n)()).convert("RGB") for n in ("coffee", "astronaut", "chelsea")]
    kinds = [kind for kind, share, _ in SIZE_MIX for _ in range(round(share * 100))]
    out = []
    for i in range(count):
        kind = kinds[(i * 37) % len(kinds)]
        low, high = next(widths for name, _, widths in SIZE_MIX if name == kind)
        src = rng.choice(sources)
        cw, ch = rng.randint(src.width // 2, src.width), rng.randint(src.height // 2, src.height)
        x, y = rng.randint(0, src.width - cw), rng.randint(0, src.height - ch)
        width = rng.randint(low, high)
        height = max(1, width * ch // cw)
        image = src.crop((x, y, x + cw, y + ch)).resize((width, height))
        pixels = np.asarray(image).astype(np.float32) + noise.normal(0.0, 3.0, (height, width, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


class WorkerKiller:
    """SIGKILLs the gunicorn worker of a function now and then; its master starts a new one."""

    def __init__(self, info: StackInfo, kills: int, interval: float, seed: int) -> None:
        self.pids = [info.pids["function-trigger"], info.pids["function-webhook"]]
        self.kills, self.interval = kills, interval
        self.rng = random.Random(seed)
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while self.done < self.kills and not self._stop.wait(self.interval * self.rng.uniform(0.5, 1.5)):
            workers = psutil.Process(self.rng.choice(self.pids)).children()
            if workers:
                workers[0].send_signal(signal.SIGKILL)
                self.done += 1


def run_soak(
    images: int, directory: Path, kills: int | None = None, timeout: float = 900.0, seed: int = 7
) -> SoakReport:
    options = StackOptions(
        directory=directory,
        webhook_retry_delays="0.2,0.5,1,2",
        relay_min_backoff=0.3,
        relay_max_backoff=3.0,
        relay_max_attempts=12,
        tasks_min_backoff=0.3,
        tasks_max_backoff=3.0,
        predictions_faults=PREDICTION_FAULTS,
        relay_faults=RELAY_FAULTS,
        function_env=FUNCTION_ENV,
    )
    payloads = _images(images, seed)
    started = time.monotonic()
    with Stack(options) as info:
        gcs = storage_client(info)
        killer = WorkerKiller(info, kills if kills is not None else max(3, images // 50), 2.0, seed)
        killer.start()
        names = [f"soak/{i:05d}.jpg" for i in range(images)]
        generations: dict[str, int] = {}

        def upload(i: int) -> None:
            blob = gcs.bucket(info.upload_bucket).blob(names[i])
            blob.upload_from_string(payloads[i], content_type="image/jpeg")
            generations[names[i]] = int(blob.generation)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(upload, range(images)))
        runs = _settle(info, gcs, generations, started + timeout)
        killer.stop()
        report = _check(info, gcs, generations, killer.done, runs, time.monotonic() - started)
    return report


def _states(gcs: storage.Client, info: StackInfo) -> dict[str, str]:
    return {
        b.name: (b.metadata or {}).get("state", "")
        for b in gcs.list_blobs(info.state_bucket, prefix=naming.JOBS_PREFIX)
    }


def _settle(info: StackInfo, gcs: storage.Client, generations: dict[str, int], deadline: float) -> int:
    """Run the reconciler, as Cloud Scheduler would, until every upload is final or time runs out."""
    wanted = {naming.job_record_name(naming.job_id(info.upload_bucket, n, g)) for n, g in generations.items()}
    runs = 0
    while time.monotonic() < deadline:
        states = _states(gcs, info)
        if all(states.get(name) in jobs.FINAL_STATES for name in wanted):
            break
        time.sleep(2.0)
        try:
            requests.post(info.reconcile_url, timeout=120)
            runs += 1
        except requests.RequestException:
            pass
    return runs


def _check(
    info: StackInfo, gcs: storage.Client, generations: dict[str, int], kills: int, runs: int, wall: float
) -> SoakReport:
    uploads = verify.read_uploads(gcs, info, generations)
    outcomes = verify.check(
        uploads,
        verify.read_outputs(gcs, info),
        verify.predictions_per_job(info),
        MAX_PREDICTION_ATTEMPTS,
        EXPECTED_FAILURES,
    )
    headers = {"Authorization": f"Bearer {info.api_token}"}
    stats = requests.get(
        info.predictions_service_url + "/_admin/stats", headers=headers, verify=info.ca_bundle, timeout=30
    )
    faults = {k: v for k, v in stats.json()["faults"].items() if v}
    relay_log = requests.get(info.relay_admin_url + "/deliveries", timeout=30).json()["log"]
    faults["cloudevents_duplicated"] = sum(1 for e in relay_log if e.get("kind") == "received" and e.get("duplicate"))
    faults["function_workers_killed"] = kills
    by_outcome: dict[str, int] = {jobs.COMPLETED.value: outcomes.completed} if outcomes.completed else {}
    by_outcome.update({f"{jobs.FAILED}:{reason}": n for reason, n in outcomes.failed.items()})
    return SoakReport(
        images=len(generations),
        faults=faults,
        outcomes=by_outcome,
        lost=outcomes.lost,
        duplicate_outputs=outcomes.duplicate_outputs,
        orphan_outputs=outcomes.orphan_outputs,
        predictions_per_image={
            "mean": outcomes.predictions_mean,
            "max": outcomes.predictions_max,
            "total": sum(outcomes.predictions),
        },
        over_attempt_budget=outcomes.over_attempt_budget,
        reconciler_runs=runs,
        wall_seconds=wall,
        problems=outcomes.problems,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--kills", type=int, default=None, help="function workers to SIGKILL (default images/50)")
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        report = run_soak(args.images, Path(tmp), args.kills, args.timeout)
    print(report.text())
    if args.json:
        args.json.write_text(json.dumps({**asdict(report), "ok": report.ok}, indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
