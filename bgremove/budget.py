"""The spend guard: at most DAILY_PREDICTION_BUDGET predictions per budget day and
MONTHLY_PREDICTION_BUDGET per budget month; past that, submissions are held, not failed.

Every prediction is paid, and a runaway source (a sync tool re-uploading a folder in a loop, a
mistaken backfill) would otherwise spend at the API's full rate until someone notices.

**The count.** A window's count is sharded: `budget/<day|month>/<key>/<NN>` in the state bucket, each
shard a small JSON list of the job ids counted in it, with the count in its custom metadata, so one
listing of the window's prefix reads every count. Cloud Storage takes about one write per second to
one object; the submissions queue runs at 10 creates a second, so a single counter object would be
the bottleneck. With `shards(budget)` shards (at least 16) the writes spread over many objects.
Shard k holds at most `cap(k)` ids, and the caps add up to exactly the budget, so the shards can
never hold more than the budget however many writers race: each shard's write is conditional on the
generation read, and a full shard is never written. The count is **exact**: no overshoot from
concurrency (a lowered budget is the one exception, see `Standing.free_shards`).

**Once per prediction.** A submission is counted in a shard by its job id and the number of
predictions its job had before it, so a retried task (after a 429 from the API, or a crash at any
point) finds itself there and is not counted twice, while a resubmission (a lost or expired
prediction, an operator's retry) is a new prediction and is counted again. The shard chosen is written on
the job record (`budget_marks`) before the shard itself, so a retry knows where to look; a crash
between the two leaves a mark whose shard lacks the id, and the retry adds it then. A create the
API refused (4xx: nothing was made, nothing is billed) is withdrawn from its shards.

**Holding.** When a window is spent, the submission is held: the job stays `queued` with
`hold="budget"` and the task handler answers 429 (Retry-After: until the window turns), so Cloud
Tasks keeps the task and retries it with its backoff; a retry after the window turned, or after the
budget was raised (a redeployment), goes through. A held dispatch costs one listing and one record
read, no writes after the first.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bgremove import errors, jobs, metrics
from bgremove.config import Config
from bgremove.deps import Deps
from bgremove.jobs import Decision, Job
from bgremove.objects import Objects

PREFIX = "budget/"
MIN_SHARDS = 16
IDS_PER_SHARD = 200  # more shards for large budgets, so each shard's list stays a few KiB
MAX_SHARDS = 1000  # one listing page
# Conditional writes to one shard before giving up (errors.Contended, a retry of the task).
WRITE_ATTEMPTS = 8


class Period(enum.StrEnum):
    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True)
class Window:
    """One budget window: a day or a month, from midnight at BUDGET_UTC_OFFSET_HOURS."""

    period: Period
    key: str  # 2026-12-04 or 2026-12
    budget: int
    ends_at: float  # unix seconds when the next window begins

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{self.period.value}/{self.key}/"

    @property
    def shards(self) -> int:
        return shards(self.budget)

    def cap(self, shard: int) -> int:
        """Ids shard `shard` may hold: the budget split over the shards, adding up to it exactly."""
        base, extra = divmod(self.budget, self.shards)
        return base + (1 if shard < extra else 0)

    def shard_name(self, shard: int) -> str:
        return f"{self.prefix}{shard:04d}"


def shards(budget: int) -> int:
    return max(1, min(budget, max(MIN_SHARDS, min(MAX_SHARDS, -(-budget // IDS_PER_SHARD)))))


def windows(cfg: Config, now: float) -> tuple[Window, ...]:
    """The windows with a budget at `now` (none when no budget is set)."""
    shift = timedelta(hours=cfg.budget_utc_offset_hours)
    local = datetime.fromtimestamp(now, UTC) + shift
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    next_month = (month + timedelta(days=32)).replace(day=1)
    found = []
    if cfg.daily_prediction_budget > 0:
        ends = (day + timedelta(days=1) - shift).timestamp()
        found.append(Window(Period.DAY, day.strftime("%Y-%m-%d"), cfg.daily_prediction_budget, ends))
    if cfg.monthly_prediction_budget > 0:
        ends = (next_month - shift).timestamp()
        found.append(Window(Period.MONTH, month.strftime("%Y-%m"), cfg.monthly_prediction_budget, ends))
    return tuple(found)


@dataclass(frozen=True)
class Standing:
    """A window's counts as one listing of its shards found them."""

    window: Window
    counts: dict[int, int]

    @property
    def spent(self) -> int:
        return sum(self.counts.values())

    @property
    def full(self) -> bool:
        return self.spent >= self.window.budget

    def free_shards(self) -> list[int]:
        """Shards with room. Each shard's cap keeps the total within the budget; only a budget
        lowered within a window can leave shards with room while the total is over it, so the
        total is checked too (then concurrent writers may each add one: the overshoot is at most
        the number of submissions in flight, in that case alone)."""
        if self.full:
            return []
        return [k for k in range(self.window.shards) if self.counts.get(k, 0) < self.window.cap(k)]

    def to_json(self) -> dict[str, Any]:
        w = self.window
        return {"window": w.period.value, "key": w.key, "spent": self.spent, "budget": w.budget, "ends_at": w.ends_at}


def standing(window: Window, objects: Objects, bucket: str) -> Standing:
    counts: dict[int, int] = {}
    for name, meta in objects.list_with_metadata(bucket, window.prefix):
        try:
            counts[int(name.rsplit("/", 1)[1])] = int(meta.get("count", "0"))
        except ValueError:
            continue  # not a shard of ours
    return Standing(window, counts)


def standings(cfg: Config, objects: Objects, now: float) -> list[Standing]:
    """Every budgeted window's standing at `now` (what `bgremove status` shows)."""
    return [standing(w, objects, cfg.state_bucket) for w in windows(cfg, now)]


def _mark(job: Job, window: Window) -> str | None:
    return next((m for m in job.budget_marks if m.startswith(window.prefix)), None)


def hold_if_spent(job_id: str, cfg: Config, deps: Deps, now: float) -> dict[str, Standing]:
    """Raise errors.BudgetSpent when a spent window holds this job (it is not counted there yet);
    marks the queued job held on its first hold (one write) and logs each hold. Called before
    any claim, so a held dispatch writes nothing after the first. Returns what the listings found
    (by window prefix), for `count` to start from."""
    seen: dict[str, Standing] = {}
    for window in windows(cfg, now):
        found = seen[window.prefix] = standing(window, deps.objects, cfg.state_bucket)
        if not found.full:
            continue

        def hold(current: Job | None, found: Standing = found) -> Decision[Job | None]:
            if current is None or current.state != jobs.QUEUED or _mark(current, found.window):
                return Decision(None)  # for the claim to decide (no job, moved on, or counted already)
            if current.hold:
                return Decision(current)
            why = f"held: {found.window.period} budget spent"
            return Decision(current, jobs.held(current, now, why, 0, found.window.period.value))

        done = deps.store.update(job_id, hold)
        if done.result is None:
            continue
        _log_hold(done.result, found, now)
        raise _spent(found, now)
    return seen


def count(
    job: Job, generation: int, cfg: Config, deps: Deps, now: float, seen: Mapping[str, Standing] | None = None
) -> tuple[Job, int]:
    """Count the claimed job's prediction in every budgeted window, once (a retry finds its id
    counted). Raises errors.BudgetSpent when a window has no room; returns the record as written.
    `seen`: listings just made (hold_if_spent's), which the first choice of a shard uses."""
    was_held = (job.hold, job.held_at, job.held_window)
    for window in windows(cfg, now):
        job, generation = _count_in(window, job, generation, cfg, deps, now, (seen or {}).get(window.prefix))
    if was_held[0]:
        metrics.emit(
            metrics.Event.BUDGET_RELEASED,
            "INFO",
            "budget: held submission released",
            job_id=job.job_id,
            object=job.source.object_uri,
            window=was_held[2] or None,
            held_seconds=round(now - was_held[1], 3),
        )
    if job.hold:
        job, generation = _write_marks(job, generation, job.budget_marks, deps, now)
    return job, generation


def _count_in(
    window: Window, job: Job, generation: int, cfg: Config, deps: Deps, now: float, seen: Standing | None
) -> tuple[Job, int]:
    objects, bucket = deps.objects, cfg.state_bucket
    for _ in range(WRITE_ATTEMPTS):
        name = _mark(job, window)
        if name is None:
            found = seen if seen is not None and seen.window == window else standing(window, objects, bucket)
            seen = None  # a second choice lists again
            free = found.free_shards()
            if not free:
                raise _spent(found, now)
            name = window.shard_name(random.choice(free))
            marks = tuple(m for m in job.budget_marks if not m.startswith(PREFIX + window.period.value + "/"))
            job, generation = _write_marks(job, generation, (*marks, name), deps, now)
        shard = int(name.rsplit("/", 1)[1])
        if _add(objects, bucket, name, _member(job), window.cap(shard) if shard < window.shards else 0):
            return job, generation
        # That shard filled up since the listing (or the budget was lowered): choose again.
        job, generation = _write_marks(job, generation, tuple(m for m in job.budget_marks if m != name), deps, now)
    raise errors.Contended(f"budget shards of {window.prefix} kept filling over {WRITE_ATTEMPTS} attempts")


def withdraw(job: Job, cfg: Config, deps: Deps, now: float) -> None:
    """Take a job's id out of its shards: its create was refused, so nothing was made or billed.
    Best effort: a failure leaves the unit counted (an undershoot of one, logged)."""
    for window in windows(cfg, now):
        name = _mark(job, window)
        if name is None:
            continue
        try:
            _remove(deps.objects, cfg.state_bucket, name, _member(job))
        except errors.RetryLater as exc:
            from bgremove import logs

            logs.warning("budget: a refused create stays counted", job_id=job.job_id, shard=name, error=str(exc))


def _member(job: Job) -> str:
    """What a shard lists for this submission: the job and how many predictions it had before it.
    A retry of the same submission (nothing created yet) finds itself; a resubmission after a lost
    or expired prediction, or an operator's retry, is a new prediction and is counted again."""
    return f"{job.job_id}#{len(job.prediction_ids)}"


def _write_marks(job: Job, generation: int, marks: tuple[str, ...], deps: Deps, now: float) -> tuple[Job, int]:
    """Record the marks on our claimed record (and end its hold), conditional on what we hold."""

    def mark(current: Job | None) -> Decision[bool]:
        if current is None or current.state != jobs.CLAIMED or current.lease_expires_at != job.lease_expires_at:
            return Decision(False)
        return Decision(True, jobs.counted(current, marks, now))

    done = deps.store.update(job.job_id, mark, read=(job, generation))
    if not done.result or done.job is None:
        raise errors.Contended(f"job {job.job_id} moved while its budget was counted")
    return done.job, done.generation


def _read(objects: Objects, bucket: str, name: str) -> tuple[list[str], int]:
    found = objects.read_json(bucket, name)
    if found is None:
        return [], 0
    members = found[0].get("ids")
    return ([str(m) for m in members] if isinstance(members, list) else []), found[1]


def _edit(objects: Objects, bucket: str, name: str, change: Callable[[list[str]], list[str] | None]) -> list[str]:
    """A shard's ids after `change` (the ids read -> the ids to write, or None: leave them), written
    conditionally on the generation read and decided again on a race; returns the ids it ends with."""
    for _ in range(WRITE_ATTEMPTS):
        ids, generation = _read(objects, bucket, name)
        new = change(ids)
        if new is None:
            return ids
        try:
            objects.write_json(bucket, name, {"ids": new}, generation, {"count": str(len(new))})
        except errors.PreconditionFailed:
            continue
        return new
    raise errors.Contended(f"budget shard {name} kept changing over {WRITE_ATTEMPTS} attempts")


def _add(objects: Objects, bucket: str, name: str, member: str, cap: int) -> bool:
    """Add `member` to a shard unless it is there (True) or the shard is full (False)."""

    def add(ids: list[str]) -> list[str] | None:
        return None if member in ids or len(ids) >= cap else [*ids, member]

    return member in _edit(objects, bucket, name, add)


def _remove(objects: Objects, bucket: str, name: str, member: str) -> None:
    _edit(objects, bucket, name, lambda ids: [i for i in ids if i != member] if member in ids else None)


def _spent(found: Standing, now: float) -> errors.BudgetSpent:
    w = found.window
    return errors.BudgetSpent(
        f"{w.period} budget {w.key} spent: {found.spent} of {w.budget}", w.period.value, max(1.0, w.ends_at - now)
    )


def hold_claimed(job: Job, generation: int, spent: errors.BudgetSpent, cfg: Config, deps: Deps, now: float) -> None:
    """Give a claim back as held: the window filled between the first look and the count."""

    def give_back(current: Job | None) -> Decision[Job | None]:
        if current is None or current.state != jobs.CLAIMED or current.lease_expires_at != job.lease_expires_at:
            return Decision(None)
        return Decision(current, jobs.held(current, now, f"held: {spent}", cfg.queued_check_seconds, spent.period))

    done = deps.store.update(job.job_id, give_back, read=(job, generation))
    if done.result is not None and done.job is not None:
        found = next((s for s in standings(cfg, deps.objects, now) if s.window.period.value == spent.period), None)
        if found is not None:
            _log_hold(done.job, found, now)


def _log_hold(job: Job, found: Standing, now: float) -> None:
    w = found.window
    metrics.emit(
        metrics.Event.BUDGET_HELD,
        "WARNING",
        f"budget: submission held, the {w.period} budget {w.key} is spent ({found.spent} of {w.budget})",
        job_id=job.job_id,
        object=job.source.object_uri,
        window=w.period.value,
        window_key=w.key,
        spent=found.spent,
        budget=w.budget,
        held_seconds=round(now - job.held_at, 3) if job.held_at else 0.0,
    )


def days_needed(images: int, cfg: Config, spent_today: int = 0) -> int | None:
    """Budget days a backlog of `images` predictions takes (None: no daily budget), counting what
    today's window has left first (for `bgremove backfill --dry-run`)."""
    if cfg.daily_prediction_budget <= 0:
        return None
    left_today = max(0, cfg.daily_prediction_budget - spent_today)
    if images <= left_today:
        return 1 if images else 0
    return 1 + -(-(images - left_today) // cfg.daily_prediction_budget)


def to_json(found: list[Standing]) -> list[dict[str, Any]]:
    return [s.to_json() for s in found]
