"""Fault-injected soak: many uploads through the offline stack with every fault knob turned on and
function workers killed mid-request, while a share of the names is replaced by newer generations or
deleted, then a check that every upload generation has exactly one outcome and that what is left in
the processed bucket is the newest live generation's cut-outs and nothing else.

    python -m offline_cloud.soak --images 500

Figures printed (and returned by `run_soak`): images and generations, faults injected by kind, the
replacements and deletions made (by the moment they came), outcomes by state, lost generations,
duplicate, orphan and superseded outputs, outputs left of deleted names, predictions per generation
(and for generations superseded before their submission), wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import google.cloud.storage as storage
import psutil  # type: ignore[import-untyped]  # no type information: types-psutil is not in requirements-dev.txt
import requests
from google.api_core.exceptions import NotFound
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
# Two variants, so that a replacement must replace every one of them: the model's PNG and its mask.
OUTPUT_VARIANTS = '[{"name": "cutout"}, {"name": "mask", "mask": true}]'
FUNCTION_ENV = {
    "OUTPUT_VARIANTS": OUTPUT_VARIANTS,
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

# The living catalogue: shares of the names replaced by newer generations, or deleted, during the
# run (at least one name of each kind below, whatever the share).
REPLACED_SHARE = 0.10
DELETED_SHARE = 0.05
# When a change comes: "upload" right after the name's first upload (its job still queued),
# "running" once its job has a prediction (faster than the model), "ended" once its job is final.
# A replacement uploads `times` new generations in quick succession.
REPLACEMENTS = (("running", 1), ("ended", 1), ("upload", 2), ("running", 2), ("ended", 2), ("upload", 1))
DELETIONS = ("upload", "ended", "running")
MOMENTS = {"upload": "at_upload", "running": "while_running", "ended": "after_end"}


@dataclass
class SoakReport:
    images: int  # names uploaded
    generations: int  # upload generations, replacements included
    faults: dict[str, int]
    lifecycle: dict[str, int]  # replacements and deletions made, by the moment they came
    outcomes: dict[str, int]  # per generation, by final state (failures by reason)
    lost: int
    duplicate_outputs: int
    orphan_outputs: int
    superseded_outputs: int
    removed_left: int
    older_outputs_kept: int
    predictions_per_image: dict[str, float]  # per upload generation
    superseded_before_submission: dict[str, int]  # generations, and the predictions created for them
    cancelled_predictions: int
    over_attempt_budget: int
    reconciler_runs: int
    wall_seconds: float
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        def listed(values: dict[str, int]) -> str:
            return ", ".join(f"{k}={v}" for k, v in sorted(values.items()))

        before = self.superseded_before_submission
        lines = [
            f"images                 {self.images} names, {self.generations} generations",
            f"wall time              {self.wall_seconds:.1f} s",
            "faults injected        " + listed(self.faults),
            "replaced and deleted   " + listed(self.lifecycle),
            "outcomes               " + listed(self.outcomes),
            f"lost (no outcome)      {self.lost}",
            f"duplicate outputs      {self.duplicate_outputs}",
            f"orphan outputs         {self.orphan_outputs}",
            f"superseded outputs     {self.superseded_outputs}",
            f"removed left           {self.removed_left}",
            f"older outputs kept     {self.older_outputs_kept} (the newest generation failed)",
            "predictions per gen.   " + ", ".join(f"{k}={v:g}" for k, v in self.predictions_per_image.items()),
            f"superseded unsubmitted {before['generations']} generations, {before['predictions']} predictions",
            f"cancelled predictions  {self.cancelled_predictions} (of superseded or removed generations)",
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
        if "function-on_delete" in info.pids:  # deletions and overwrites' old generations
            self.pids.append(info.pids["function-on_delete"])
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


@dataclass(frozen=True)
class Change:
    """What happens to one name during the run."""

    name: str
    kind: str  # "replace" or "delete"
    when: str  # "upload", "running" or "ended" (see REPLACEMENTS)
    times: int = 1  # new generations a replacement uploads, in quick succession


def plan_changes(names: list[str], seed: int) -> dict[str, Change]:
    """Which names are replaced or deleted, and when: REPLACED_SHARE and DELETED_SHARE of them, at
    least one of every kind, each kind in turn over names drawn at random."""
    rng = random.Random(seed)
    drawn = rng.sample(names, len(names))
    replaced = min(len(drawn), max(round(REPLACED_SHARE * len(names)), len(REPLACEMENTS)))
    deleted = min(len(drawn) - replaced, max(round(DELETED_SHARE * len(names)), len(DELETIONS)))
    changes = {}
    for i, name in enumerate(drawn[:replaced]):
        when, times = REPLACEMENTS[i % len(REPLACEMENTS)]
        changes[name] = Change(name, "replace", when, times)
    for i, name in enumerate(drawn[replaced : replaced + deleted]):
        changes[name] = Change(name, "delete", DELETIONS[i % len(DELETIONS)])
    return changes


class Catalogue:
    """The uploads bucket as the run changes it: every generation of every name, and the planned
    replacements and deletions, each made when its moment comes (the job of the name's live
    generation queued, running or final; the states are polled from the job records' metadata)."""

    def __init__(
        self, info: StackInfo, gcs: storage.Client, changes: dict[str, Change], spare: list[bytes], poll: float = 0.3
    ) -> None:
        self.info, self.gcs, self.poll = info, gcs, poll
        self.bucket = gcs.bucket(info.upload_bucket)
        self.changes = changes
        self.spare = list(spare)
        self.generations: dict[str, list[int]] = {}
        self.deleted: set[str] = set()
        self.made: Counter[str] = Counter()
        self._pending = {name: c for name, c in changes.items() if c.when != "upload"}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def settled(self) -> bool:
        """Every planned change made."""
        with self._lock:
            return not self._pending

    def upload(self, name: str, payload: bytes) -> None:
        """A name's first upload; a change planned for right after it is made at once."""
        self._put(name, payload)
        change = self.changes.get(name)
        if change is not None and change.when == "upload":
            self._make(change, "upload")

    def pairs(self) -> list[tuple[str, int]]:
        """(name, generation) of every upload generation, in upload order per name."""
        with self._lock:
            return [(name, g) for name, gens in self.generations.items() for g in gens]

    def live(self) -> dict[str, int]:
        """Each name's newest generation (deleted names included: the one live when deleted)."""
        with self._lock:
            return {name: gens[-1] for name, gens in self.generations.items()}

    def _put(self, name: str, payload: bytes) -> None:
        blob = self.bucket.blob(name)
        blob.upload_from_string(payload, content_type="image/jpeg")
        with self._lock:
            self.generations.setdefault(name, []).append(int(blob.generation))

    def _make(self, change: Change, moment: str) -> None:
        verb = "replaced" if change.kind == "replace" else "deleted"
        made = [f"{verb}_names", f"{verb}_{MOMENTS[moment]}"]
        if change.kind == "replace":
            for _ in range(change.times):
                with self._lock:
                    payload = self.spare.pop()
                self._put(change.name, payload)
            made += ["replacing_generations"] * change.times + (["replaced_twice"] if change.times > 1 else [])
        else:
            with contextlib.suppress(NotFound):  # a retried delete whose first attempt went through
                self.bucket.blob(change.name).delete()
        with self._lock:
            if change.kind == "delete":
                self.deleted.add(change.name)
            self.made.update(made)

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            with self._lock:
                pending = list(self._pending.values())
            if not pending:
                return
            try:
                states = _states(self.gcs, self.info)
            except Exception:  # a slow moment of the emulator: look again at the next poll
                continue
            live = self.live()
            for change in pending:
                if change.name not in live:
                    continue  # not uploaded yet
                job_id = naming.job_id(self.info.upload_bucket, change.name, live[change.name])
                state = states.get(naming.job_record_name(job_id), "")
                final = state in jobs.FINAL_STATES
                if change.when == "ended" and not final:
                    continue
                if change.when == "running" and not final and state != jobs.SUBMITTED:
                    continue
                self._make(change, "ended" if final else change.when)
                with self._lock:
                    del self._pending[change.name]


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
        delete_outputs=True,
        function_env=FUNCTION_ENV,
    )
    names = [f"soak/{i:05d}.jpg" for i in range(images)]
    changes = plan_changes(names, seed)
    spare = sum(c.times for c in changes.values() if c.kind == "replace")
    payloads = _images(images + spare, seed)
    started = time.monotonic()
    with Stack(options) as info:
        gcs = storage_client(info)
        killer = WorkerKiller(info, kills if kills is not None else max(3, images // 50), 2.0, seed)
        killer.start()
        catalogue = Catalogue(info, gcs, changes, payloads[images:])
        catalogue.start()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: catalogue.upload(names[i], payloads[i]), range(images)))
        runs = _settle(info, gcs, catalogue, started + timeout)
        catalogue.stop()
        killer.stop()
        report = _check(info, gcs, catalogue, killer.done, runs, time.monotonic() - started)
    return report


def _states(gcs: storage.Client, info: StackInfo) -> dict[str, str]:
    return {
        b.name: (b.metadata or {}).get("state", "")
        for b in gcs.list_blobs(info.state_bucket, prefix=naming.JOBS_PREFIX)
    }


def _settle(info: StackInfo, gcs: storage.Client, catalogue: Catalogue, deadline: float) -> int:
    """Run the reconciler, as Cloud Scheduler would, until every planned change is made, every
    upload generation is final and every deleted name's completed job has had its outputs removed,
    or time runs out."""
    runs = 0
    while time.monotonic() < deadline:
        states = _states(gcs, info)
        done = catalogue.settled
        for name, generation in catalogue.pairs() if done else ():
            state = states.get(naming.job_record_name(naming.job_id(info.upload_bucket, name, generation)))
            if state not in jobs.FINAL_STATES or (name in catalogue.deleted and state == jobs.COMPLETED):
                done = False
                break
        if done:
            break
        time.sleep(2.0)
        try:
            requests.post(info.reconcile_url, timeout=120)
            runs += 1
        except requests.RequestException:
            pass
    return runs


def _check(
    info: StackInfo, gcs: storage.Client, catalogue: Catalogue, kills: int, runs: int, wall: float
) -> SoakReport:
    uploads = verify.read_uploads(gcs, info, catalogue.pairs())
    statuses = verify.prediction_statuses(info)
    outcomes = verify.check(
        uploads,
        verify.read_outputs(gcs, info),
        Counter({job_id: len(s) for job_id, s in statuses.items()}),
        MAX_PREDICTION_ATTEMPTS,
        EXPECTED_FAILURES,
        expected_outputs=verify.output_names(OUTPUT_VARIANTS),
        deleted=catalogue.deleted,
        delete_outputs=True,
    )
    headers = {"Authorization": f"Bearer {info.api_token}"}
    stats = requests.get(
        info.predictions_service_url + "/_admin/stats", headers=headers, verify=info.ca_bundle, timeout=30
    )
    faults = {k: v for k, v in stats.json()["faults"].items() if v}
    relay_log = requests.get(info.relay_admin_url + "/deliveries", timeout=30).json()["log"]
    faults["cloudevents_duplicated"] = sum(1 for e in relay_log if e.get("kind") == "received" and e.get("duplicate"))
    faults["function_workers_killed"] = kills
    by_outcome: dict[str, int] = {
        str(state): n
        for state, n in (
            (jobs.COMPLETED, outcomes.completed),
            (jobs.SUPERSEDED, outcomes.superseded),
            (jobs.REMOVED, outcomes.removed),
        )
        if n
    }
    by_outcome.update({f"{jobs.FAILED}:{reason}": n for reason, n in outcomes.failed.items()})
    ended = {u.job_id for u in uploads if u.job is not None and u.job.state in (jobs.SUPERSEDED, jobs.REMOVED)}
    cancelled = sum(s.count("canceled") for job_id, s in statuses.items() if job_id in ended)
    return SoakReport(
        images=len(catalogue.generations),
        generations=len(uploads),
        faults=faults,
        lifecycle=dict(catalogue.made),
        outcomes=by_outcome,
        lost=outcomes.lost,
        duplicate_outputs=outcomes.duplicate_outputs,
        orphan_outputs=outcomes.orphan_outputs,
        superseded_outputs=outcomes.superseded_outputs,
        removed_left=outcomes.removed_left,
        older_outputs_kept=outcomes.older_outputs_kept,
        predictions_per_image={
            "mean": outcomes.predictions_mean,
            "max": outcomes.predictions_max,
            "total": sum(outcomes.predictions),
        },
        superseded_before_submission={
            "generations": outcomes.superseded_unsubmitted,
            "predictions": outcomes.superseded_unsubmitted_predictions,
        },
        cancelled_predictions=cancelled,
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
