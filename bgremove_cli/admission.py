"""`bgremove backfill` and `bgremove retry`: work admitted into the submission queue by the
pipeline's own code; nothing here writes a job record itself.

Backfill takes, for each listed object, the event a finalize would carry (`admission.listed`) and
the same decision uploads get (`bgremove.admission.decide`: filters, loop guards, size, the
upload's overrides), and carries it out with `bgremove.admission.admit`: the job record is created
create-only and its submission task named from the job id, exactly as on_upload does. So a second
run admits nothing (every admitted object has a job), a run stopped by Ctrl-C or a crash is resumed
by running it again, and an object whose job is still `queued` is admitted again under the same
task name, which makes its task only if the stopped run died between the record and the task.

Retry is `bgremove.lifecycle.retry`: a failed job goes back to `queued` (a compare-and-swap, so a
job that changed meanwhile is left alone) and its next submission task is enqueued.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TypeVar

from bgremove import admission, errors, jobs, lifecycle
from bgremove.admission import Admission
from bgremove.jobs import Job
from bgremove.objects import Delivery
from bgremove.outcomes import Outcome
from bgremove_cli.cloud import ENQUEUE_HINT, STATE_WRITE_HINT, Cloud
from bgremove_cli.failures import CliError, explain

# Replicate bills lucataco/remove-bg by GPU time; what one prediction costs depends on the account's
# hardware and the image. This default is an assumed figure for the estimate only, not a quoted
# price: give --price-per-prediction (or BGREMOVE_PRICE_PER_PREDICTION) from your own bill.
DEFAULT_PRICE_PER_PREDICTION = 0.00022


def parse_gs(uri: str, need_name: bool = False) -> tuple[str, str, int | None]:
    """gs://BUCKET/PATH[#GENERATION] -> (bucket, path, generation)."""
    if not uri.startswith("gs://"):
        raise ValueError(f"{uri!r} is not a gs://BUCKET/... URI")
    rest = uri[len("gs://") :]
    bucket, _, path = rest.partition("/")
    generation: int | None = None
    if need_name and "#" in path:
        path, _, gen = path.rpartition("#")
        if not gen.isdigit():
            raise ValueError(f"{uri!r}: the generation after # must be a number")
        generation = int(gen)
    if not bucket or any(c in bucket for c in " #?*[]"):
        raise ValueError(f"{uri!r} names no bucket")
    if need_name and (not path or path.endswith("/")):
        raise ValueError(f"{uri!r} names no object (gs://BUCKET/NAME)")
    return bucket, path, generation


def check_bucket(cloud: Cloud, bucket: str) -> None:
    """Only the uploads bucket may be backfilled: never the processed bucket (the pipeline would
    process its own outputs, the loop that cost the storage-resize-images extension its backfill),
    never the state bucket, never a bucket the pipeline does not watch."""
    cfg = cloud.cfg
    if bucket == cfg.processed_bucket and bucket != cfg.upload_bucket:
        raise CliError(
            f"refusing gs://{bucket}: it is the processed bucket (PROCESSED_BUCKET); its objects are the "
            "pipeline's own outputs, and admitting them would start a loop"
        )
    if bucket == cfg.state_bucket:
        raise CliError(f"refusing gs://{bucket}: it is the state bucket (STATE_BUCKET), it holds job records")
    if bucket != cfg.upload_bucket:
        raise CliError(f"refusing gs://{bucket}: the pipeline processes gs://{cfg.upload_bucket} only (UPLOAD_BUCKET)")


# --- stopping cleanly on Ctrl-C ------------------------------------------------------------------


class StopOnSignal:
    """The first SIGINT (Ctrl-C) or SIGTERM asks the loop to stop after the work in hand; a second
    SIGINT stops at once."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.event = threading.Event()
        self._say = say
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.event.is_set()

    def __enter__(self) -> StopOnSignal:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.event.set()
        self._say("stopping after the objects in hand (Ctrl-C again to quit at once)")


# --- backfill -----------------------------------------------------------------------------------


@dataclass
class Candidate:
    admission: Admission  # a refusal here is one recorded as a failure, as uploads' are
    recheck: bool = False  # its job exists and is queued: admit again under the same task name

    @property
    def refused(self) -> bool:
        return self.admission.refusal is not None


@dataclass
class BackfillPlan:
    bucket: str
    prefix: str
    listed: int = 0
    has_job: Counter[str] = field(default_factory=Counter)  # by the job's state
    skipped: Counter[str] = field(default_factory=Counter)  # by filter reason
    candidates: list[Candidate] = field(default_factory=list)
    interrupted: bool = False

    @property
    def new(self) -> list[Candidate]:
        return [c for c in self.candidates if not c.recheck]

    @property
    def admissible(self) -> int:
        return sum(1 for c in self.new if not c.refused)


def plan_backfill(cloud: Cloud, bucket: str, prefix: str, stop: Callable[[], bool]) -> BackfillPlan:
    cfg = cloud.cfg
    plan = BackfillPlan(bucket, prefix)
    existing = {e.job_id: e.state for e in cloud.job_entries(stop)}
    if stop():
        plan.interrupted = True
        return plan
    now = time.time()
    for blob in cloud.objects_under(bucket, prefix, stop):
        plan.listed += 1
        delivery = Delivery(blob.cache_control or "", blob.content_disposition or "", blob.content_language or "")
        event = admission.listed(
            bucket,
            blob.name,
            int(blob.generation or 0),
            blob.content_type or "",
            int(blob.size or 0),
            blob.metadata or {},
            delivery,
        )
        decided = admission.decide(event, cfg, now)
        state = existing.get(decided.source.job_id)
        if state == jobs.QUEUED:
            plan.has_job[state] += 1
            plan.candidates.append(Candidate(decided, recheck=True))
            continue
        if state is not None:
            plan.has_job[state or "unknown"] += 1
            continue
        if decided.refusal is not None and decided.refusal.outcome is not Outcome.FAILED:
            plan.skipped[decided.message] += 1
            continue
        plan.candidates.append(Candidate(decided))
    plan.interrupted = stop()
    return plan


@dataclass
class BackfillResult:
    admitted: int = 0
    refused: int = 0  # failure records made at admission (too large, bad metadata)
    already: int = 0  # a job appeared meanwhile (an upload event, another run)
    rechecked: int = 0  # queued jobs admitted again; tasks_remade of them had lost their task
    tasks_remade: int = 0
    not_reached: int = 0  # candidates left for the next run (limit, Ctrl-C or an error)
    error: str = ""
    interrupted: bool = False


def run_backfill(
    cloud: Cloud,
    plan: BackfillPlan,
    limit: int | None,
    concurrency: int,
    stop: Callable[[], bool],
    advance: Callable[[int], None],
) -> BackfillResult:
    """Admit the plan's candidates, `concurrency` at a time, at most `limit` new jobs queued."""
    cfg, deps = cloud.cfg, cloud.deps()
    result = BackfillResult()
    lock = threading.Lock()

    def one(candidate: Candidate) -> None:
        source = candidate.admission.source
        fields = {"object": f"gs://{source.bucket}/{source.name}", "generation": source.generation, "via": "backfill"}
        outcome = admission.admit(candidate.admission, cfg, deps, time.time(), fields)
        with lock:
            if candidate.recheck:
                result.rechecked += 1
                result.tasks_remade += int("task was missing" in outcome.reason)
            elif outcome.outcome is Outcome.QUEUED:
                result.admitted += 1
            elif outcome.outcome is Outcome.FAILED:
                result.refused += 1
            else:
                result.already += 1

    planned = 0

    def bounded(candidate: Candidate) -> bool:
        """False for a new job beyond `limit`: later objects wait for the next run."""
        nonlocal planned
        counts = not candidate.recheck and not candidate.refused
        if counts and limit is not None and planned >= limit:
            return False
        planned += int(counts)
        return True

    result.error, result.interrupted = run_bounded(plan.candidates, one, concurrency, stop, advance, bounded)
    result.not_reached = max(0, plan.admissible - result.admitted - result.already)
    return result


T = TypeVar("T")


def run_bounded(
    items: Iterable[T],
    one: Callable[[T], None],
    concurrency: int,
    stop: Callable[[], bool],
    advance: Callable[[int], None],
    take: Callable[[T], bool] = lambda _: True,
) -> tuple[str, bool]:
    """Run `one` over the items `take` accepts, `concurrency` at a time with at most twice that in
    flight, stopping early on `stop()` (Ctrl-C) or the first error; returns (error, interrupted)."""
    error, interrupted = "", False
    pending: set[Future[None]] = set()
    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        try:
            for item in items:
                if stop():
                    interrupted = True
                    break
                if error:
                    break
                if not take(item):
                    continue
                pending.add(pool.submit(one, item))
                if len(pending) >= 2 * max(1, concurrency):
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    error = error or _first_error(done)
                    advance(len(done))
        finally:
            done, _ = wait(pending)
            error = error or _first_error(done)
            advance(len(done))
    return error, interrupted


def _first_error(done: set[Future[None]]) -> str:
    for future in done:
        exc = future.exception()
        if exc is not None:
            if isinstance(exc, errors.RetryLater):
                return f"admission stopped: {exc}"
            return str(explain(exc, "admitting", f"{STATE_WRITE_HINT}; {ENQUEUE_HINT}"))
    return ""


# --- retry --------------------------------------------------------------------------------------


@dataclass
class RetrySelection:
    matching: list[tuple[Job, int]]  # (job, record generation), oldest failure first
    failed_total: int
    by_reason: Counter[str]


def select_failed(
    cloud: Cloud, reasons: tuple[str, ...], older_than: float, now: float, stop: Callable[[], bool]
) -> RetrySelection:
    entries = [e for e in cloud.job_entries(stop) if e.state == jobs.FAILED]
    old_enough = [e.job_id for e in entries if now - e.updated >= older_than]
    loaded = cloud.load_jobs(old_enough)
    matching = []
    for job, generation in loaded.values():
        if job.state != jobs.FAILED or job.source.bucket != cloud.cfg.upload_bucket:
            continue
        if reasons and job.reason not in reasons:
            continue
        if now - job.updated_at < older_than:
            continue
        matching.append((job, generation))
    matching.sort(key=lambda pair: (pair[0].updated_at, pair[0].job_id))
    return RetrySelection(matching, len(entries), Counter(job.reason for job, _ in matching))


@dataclass
class RetryResult:
    retried: Counter[str] = field(default_factory=Counter)  # by former reason
    skipped: Counter[str] = field(default_factory=Counter)  # by why
    error: str = ""
    interrupted: bool = False


def run_retry(
    cloud: Cloud,
    selected: list[tuple[Job, int]],
    concurrency: int,
    stop: Callable[[], bool],
    advance: Callable[[int], None],
) -> RetryResult:
    cfg, deps = cloud.cfg, cloud.deps()
    result = RetryResult()
    lock = threading.Lock()
    skipped = {
        lifecycle.Retried.TOO_LARGE: "still over MAX_UPLOAD_BYTES",
        lifecycle.Retried.NOT_FAILED: "changed since it was read",
    }

    def one(pair: tuple[Job, int]) -> None:
        job, _ = pair
        why = f"operator retry (bgremove retry); was {job.reason}: {job.error[:200]}"
        done = lifecycle.retry(job.job_id, why, cfg, deps, time.time(), read=pair)
        with lock:
            if done is lifecycle.Retried.RETRIED:
                result.retried[job.reason] += 1
            else:
                result.skipped[skipped[done]] += 1

    result.error, result.interrupted = run_bounded(selected, one, concurrency, stop, advance)
    return result
