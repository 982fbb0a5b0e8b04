"""`bgremove status`: what the pipeline is doing, from the job records and the queue.

Counts come from one listing of `jobs/` in the state bucket: each record carries its state in its
object metadata, and the object's own times are the admission (`timeCreated`) and the last
transition (`updated`), so counts, completions per minute and the rate need no record reads. Only
failed records are read (newest first, at most `--failures-read`), to group them by reason.

Every final state is finished work: a `superseded` job (a newer generation of its upload became
live first) and a `removed` one (the upload was deleted) count towards the progress and the rate
as `completed` and `failed` do, since nothing more will happen to them; only `failed` ones are
failures.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from bgremove import budget, jobs
from bgremove.jobs import Job
from bgremove_cli.cloud import Cloud, JobEntry, QueueInfo

STATES = (*jobs.OPEN_STATES, *jobs.FINAL_STATES)
OPEN_STATES = jobs.OPEN_STATES
FINAL_STATES = jobs.FINAL_STATES
# Shown on the screen only when there are any (the JSON always has them): most runs have none.
QUIET_STATES = (jobs.SUPERSEDED, jobs.REMOVED)
STATE_STYLES = {
    "completed": "green",
    "failed": "red",
    "queued": "cyan",
    "claimed": "yellow",
    "submitted": "yellow",
    "superseded": "blue",
    "removed": "magenta",
}
EXAMPLES_PER_REASON = 3


@dataclass(frozen=True)
class StatusOptions:
    window_minutes: int = 5
    failures_read: int = 1000
    depth_limit: int = 10_000


def collect(cloud: Cloud, options: StatusOptions, cache: dict[str, tuple[int, Job]] | None = None) -> dict[str, Any]:
    """The figures, read now. `cache` keeps failed records across refreshes of --watch (keyed by
    job id, valid while the record's generation is unchanged)."""
    now = time.time()
    entries = cloud.job_entries()
    failed_entries = sorted((e for e in entries if e.state == jobs.FAILED), key=lambda e: e.updated, reverse=True)
    wanted = failed_entries[: options.failures_read]
    cache = {} if cache is None else cache
    missing = [e.job_id for e in wanted if cache.get(e.job_id, (-1, None))[0] != e.generation]
    for job_id, (job, generation) in cloud.load_jobs(missing).items():
        cache[job_id] = (generation, job)
    failed = {e.job_id: cache[e.job_id][1] for e in wanted if e.job_id in cache}
    queue = cloud.queue_info(depth_limit=options.depth_limit) if cloud.cfg.submit_queue else None
    deadline = cloud.queue_info(cloud.cfg.deadline_queue, options.depth_limit) if cloud.cfg.deadline_queue else None
    figures = compute(entries, failed, queue, now, options.window_minutes)
    spend = budget.standings(cloud.cfg, cloud.objects, now)
    figures["budget"] = budget.to_json(spend)
    if any(s.full for s in spend):
        # Every queued job waits for the budget now: each is marked held at its task's next
        # dispatch (the 429s slow the queue, so the marks lag), and counted so already.
        figures["held"]["budget"] = figures["counts"][str(jobs.QUEUED)]
    figures["deadline_queue"] = deadline.to_json() if deadline else None
    figures["target"] = cloud.target.label
    figures["state_bucket"] = cloud.cfg.state_bucket
    return figures


def compute(
    entries: list[JobEntry],
    failed: Mapping[str, Job],
    queue: QueueInfo | None,
    now: float,
    window_minutes: int = 5,
) -> dict[str, Any]:
    """The figures from the listing (pure: the unit tests call it with made-up entries)."""
    counts = Counter(e.state for e in entries)
    open_count = sum(counts[s] for s in OPEN_STATES)
    finished = sum(counts[s] for s in FINAL_STATES)
    window = max(1, window_minutes) * 60.0
    since = now - window
    recent = [e for e in entries if e.state in FINAL_STATES and e.updated >= since]
    # The span observed: the window, or less when all work in sight began within it (a backfill
    # that started 40 s ago is measured over 40 s, not 5 minutes).
    active = [e.created for e in entries if e.state in OPEN_STATES] + [e.created for e in recent]
    start = max(since, min(active)) if active else since
    span = max(now - start, 1.0)
    completed_recent = sum(1 for e in recent if e.state == jobs.COMPLETED)
    completed_per_minute = completed_recent / span * 60.0
    finished_per_minute = len(recent) / span * 60.0

    eta: float | None
    if open_count == 0:
        eta, basis = 0.0, "nothing open"
    elif queue is not None and queue.paused:
        eta, basis = None, "queue paused"
    elif finished_per_minute > 0:
        eta, basis = open_count / finished_per_minute * 60.0, "observed rate"
    elif queue is not None and queue.rate_per_second > 0:
        eta, basis = open_count / queue.rate_per_second, "queue rate"
    else:
        eta, basis = None, "unknown"

    minute0 = math.floor(now / 60.0) * 60.0 - (max(1, window_minutes) - 1) * 60.0
    per_minute = []
    for i in range(max(1, window_minutes)):
        lo, hi = minute0 + i * 60.0, minute0 + (i + 1) * 60.0
        in_minute = [e for e in recent if lo <= e.updated < hi]
        ended = Counter(e.state for e in in_minute)
        per_minute.append(
            {"minute": time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(lo))} | {str(s): ended[s] for s in FINAL_STATES}
        )

    by_reason: dict[str, list[Job]] = {}
    for job in sorted(failed.values(), key=lambda j: j.updated_at, reverse=True):
        by_reason.setdefault(job.reason or "(none)", []).append(job)
    failures = {
        "total": counts[jobs.FAILED],
        "read": len(failed),
        "by_reason": [
            {
                "reason": reason,
                "count": len(group),
                "examples": [
                    {
                        "object": f"gs://{j.source.bucket}/{j.source.name}#{j.source.generation}",
                        "job_id": j.job_id,
                        "error": j.error[:300],
                        "failed_at": _iso(j.updated_at),
                    }
                    for j in group[:EXAMPLES_PER_REASON]
                ],
            }
            for reason, group in sorted(by_reason.items(), key=lambda item: (-len(item[1]), item[0]))
        ],
    }
    held = Counter(e.hold for e in entries if e.state == jobs.QUEUED and e.hold)
    known: dict[str, int] = {str(s): counts[s] for s in STATES}
    unknown = sum(n for s, n in counts.items() if s not in STATES)
    if unknown:
        known["unknown"] = unknown
    return {
        "at": _iso(now),
        "counts": known,
        "total": len(entries),
        "open": open_count,
        "finished": finished,
        "completed_per_minute": round(completed_per_minute, 2),
        "finished_per_minute": round(finished_per_minute, 2),
        "rate_window_seconds": round(span, 1),
        "per_minute": per_minute,
        "eta_seconds": None if eta is None else round(eta, 1),
        "eta_basis": basis,
        "queue": queue.to_json() if queue else None,
        "failures": failures,
        # Queued jobs held by a spend budget (among `counts.queued`): `marked` carry the mark of a
        # held dispatch; `budget` counts every queued job while a window is spent (collect).
        "held": {"budget": held["budget"], "marked": held["budget"]},
        "budget": [],  # each budgeted window's spent / budget (collect fills it in)
    }


# --- the screen ---------------------------------------------------------------------------------


def render(fig: Mapping[str, Any]) -> RenderableType:
    head = Text.assemble(
        ("bgremove status", "bold"), f"  {fig.get('target', '')}  ", (fig["at"].replace("T", " "), "dim")
    )
    counts = Table(title="jobs by state", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    counts.add_column("state")
    counts.add_column("jobs", justify="right")
    for state, n in fig["counts"].items():
        if state in QUIET_STATES and not n:
            continue
        counts.add_row(Text(state, style=STATE_STYLES.get(state, "")), f"{n:,}")
    counts.add_row(Text("open", style="bold"), Text(f"{fig['open']:,}", style="bold"))
    counts.add_row(Text("all", style="dim"), Text(f"{fig['total']:,}", style="dim"))

    rate = Table(
        title="finished per minute", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False
    )
    rate.add_column("minute (UTC)")
    columns = [str(s) for s in FINAL_STATES if s not in QUIET_STATES or any(r.get(s) for r in fig["per_minute"])]
    for column in columns:
        rate.add_column(column, justify="right")
    for row in fig["per_minute"]:
        rate.add_row(row["minute"][11:16], *(str(row.get(c, 0)) for c in columns))

    side = Table.grid(padding=(0, 4))
    side.add_row(counts, rate)

    total = max(fig["total"], 1)
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        Text("finished"),
        ProgressBar(total=total, completed=fig["finished"], width=40),
        Text(f"{fig['finished']:,}/{fig['total']:,}  {100.0 * fig['finished'] / total:.1f}%"),
    )

    q = fig.get("queue")
    if q:
        paused = Text("PAUSED", style="bold red") if q["paused"] else Text(q["state"], style="green")
        depth = f"{q['depth']:,}{'+' if q['depth_capped'] else ''} tasks"
        queue_line = Text.assemble(
            "queue ", (q["name"].rsplit("/", 1)[-1], "bold"), " ", paused, f": {depth}, ",
            f"≤{q['max_dispatches_per_second']:g}/s, ≤{q['max_concurrent_dispatches']} at once",
        )  # fmt: skip
    else:
        queue_line = Text("queue: SUBMIT_QUEUE not set", style="dim")
    d = fig.get("deadline_queue")
    if d:
        queue_line.append(f"; deadline checks: {d['depth']:,}{'+' if d['depth_capped'] else ''}")

    eta = fig["eta_seconds"]
    eta_text = "—" if eta is None else duration(eta)
    pace = Text.assemble(
        "throughput ", (f"{_rate(fig['completed_per_minute'])} completed/min", "bold"),
        f" ({_rate(fig['finished_per_minute'])} finished/min, last {duration(fig['rate_window_seconds'])})",
        "   ETA ", (eta_text, "bold"), f" ({fig['eta_basis']})",
    )  # fmt: skip

    parts: list[RenderableType] = [head, Text(""), side, Text(""), bar, pace, queue_line]
    held = fig.get("held", {}).get("budget", 0)
    for window in fig.get("budget") or []:
        spent_all = window["spent"] >= window["budget"]
        parts.append(
            Text.assemble(
                f"budget ({window['window']} {window['key']}): ",
                (f"{window['spent']:,} / {window['budget']:,} spent", "bold red" if spent_all else "bold"),
                f", turns in {duration(window['ends_at'] - time.time())}",
            )
        )
    if held:
        parts.append(Text(f"held: budget  {held:,} queued jobs wait for the budget", style="yellow"))
    failures = fig["failures"]
    if failures["total"]:
        table = Table(
            title=f"failures by reason ({failures['total']:,}"
            + (f"; grouped from the newest {failures['read']:,}" if failures["read"] < failures["total"] else "")
            + ")",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
        )
        table.add_column("reason", style="red")
        table.add_column("jobs", justify="right")
        table.add_column("examples (object: error)", overflow="fold")
        for group in failures["by_reason"]:
            examples = "\n".join(f"{e['object']}: {e['error'][:120]}" for e in group["examples"])
            table.add_row(group["reason"], f"{group['count']:,}", examples)
        parts += [Text(""), table]
    return Group(*parts)


def _rate(per_minute: float) -> str:
    return f"{per_minute:,.0f}" if per_minute >= 10 else f"{per_minute:.1f}"


def duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
