"""The `bgremove` command line (click), with tables and progress bars (rich).

`main()` is the console script's entry point and `python -m bgremove_cli` runs the same. Every error
ends as one line on stderr and a non-zero exit status (1 an error, 2 a bad argument, 130 Ctrl-C);
BGREMOVE_DEBUG=1 shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from bgremove import budget
from bgremove.config import Config
from bgremove_cli import admission, doctor, generations, status
from bgremove_cli.failures import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, CliError, explain
from bgremove_cli.target import Target, from_environment, from_stack, from_terraform

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


# --- settings shared by every command -----------------------------------------------------------


class Settings:
    def __init__(self, stack: Path | None, env: str | None, verbose: bool) -> None:
        self.stack = stack
        self.env = env
        self.verbose = verbose
        self._cloud: Any = None

    def target(self) -> Target:
        if self.stack is not None and self.env is not None:
            raise click.UsageError("give either --stack or --env, not both")
        if self.stack is not None:
            return from_stack(self.stack)
        if self.env is not None:
            return from_terraform(self.env)
        return from_environment()

    def cloud(self) -> Any:
        if self._cloud is None:
            from bgremove import logs
            from bgremove_cli.cloud import Cloud

            # The pipeline's own JSON log lines (stdout) only when asked: the summary says the rest.
            logs.set_level("INFO" if self.verbose else "ERROR")
            logs.set_events(self.verbose)  # the metrics' lines are the functions', not the command's
            self._cloud = Cloud(self.target())
            self._cloud.preflight()
        return self._cloud


pass_settings = click.make_pass_decorator(Settings)


class Duration(click.ParamType[float, Any]):
    """30s, 10m, 2h, 3d, 1h30m, or a number of seconds."""

    name = "duration"
    _part = re.compile(r"(\d+(?:\.\d+)?)([smhd])")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        text = str(value).strip().lower()
        try:
            return float(text)
        except ValueError:
            pass
        if text and self._part.sub("", text) == "":
            units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
            return sum(float(n) * units[u] for n, u in self._part.findall(text))
        self.fail(f"{value!r} is not a duration such as 30s, 10m, 2h, 3d or 1h30m", param, ctx)


class GsUri(click.ParamType[tuple[str, str, int | None], Any]):
    name = "gs://BUCKET/PATH"

    def __init__(self, need_name: bool = False) -> None:
        self.need_name = need_name

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str, int | None]:
        if isinstance(value, tuple):
            return value
        try:
            return admission.parse_gs(str(value), self.need_name)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--stack",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="BGREMOVE_STACK",
    help="The offline stack: its stack.json (make stack writes .stack/stack.json).",
)
@click.option(
    "--env", "env", metavar="NAME", help="A Terraform environment: the outputs of infra/envs/NAME (needs terraform)."
)
@click.option("-v", "--verbose", is_flag=True, help="Also print the pipeline's own JSON log lines.")
@click.version_option("0.1.0", prog_name="bgremove")
@click.pass_context
def cli(ctx: click.Context, stack: Path | None, env: str | None, verbose: bool) -> None:
    """Operate the background-removal pipeline: see it, backfill a bucket, retry failures, pause
    and resume the submission queue, show one upload's job, check the predictions endpoint.

    Without --stack or --env the settings are the pipeline's environment variables (UPLOAD_BUCKET,
    PROCESSED_BUCKET, STATE_BUCKET, SUBMIT_QUEUE, DEADLINE_QUEUE, TASK_HANDLER_URL,
    TASKS_SERVICE_ACCOUNT ...) with Application Default Credentials."""
    ctx.obj = Settings(stack, env, verbose)


# --- status -------------------------------------------------------------------------------------


@cli.command("status")
@click.option("--watch", is_flag=True, help="Redraw every --interval seconds until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(0.2), default=5.0, show_default=True, help="Seconds between redraws.")
@click.option("--until-done", is_flag=True, help="With --watch: stop when no job is open.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON (one object per redraw).")
@click.option(
    "--window", type=click.IntRange(1, 120), default=5, show_default=True, help="Minutes of history for the rate."
)
@click.option(
    "--failures-read",
    type=click.IntRange(0),
    default=1000,
    show_default=True,
    help="Failed records read to group by reason.",
)
@pass_settings
def status_command(
    settings: Settings, watch: bool, interval: float, until_done: bool, as_json: bool, window: int, failures_read: int
) -> int:
    """Jobs by state, completions per minute, the time left, the queue, failures by reason."""
    cloud = settings.cloud()
    options = status.StatusOptions(window_minutes=window, failures_read=failures_read)
    cache: dict[str, Any] = {}
    if not watch:
        figures = status.collect(cloud, options, cache)
        if as_json:
            print(json.dumps(figures, indent=2))
        else:
            out.print(status.render(figures))
        return 0
    if as_json:
        try:
            while True:
                figures = status.collect(cloud, options, cache)
                print(json.dumps(figures), flush=True)
                if until_done and figures["open"] == 0:
                    return 0
                time.sleep(interval)
        except KeyboardInterrupt:
            return 0
    try:
        figures = status.collect(cloud, options, cache)
        with Live(status.render(figures), console=out, refresh_per_second=4, transient=False) as live:
            while not (until_done and figures["open"] == 0):
                time.sleep(interval)
                figures = status.collect(cloud, options, cache)
                live.update(status.render(figures))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends
    return 0


# --- backfill -----------------------------------------------------------------------------------


PRICE_HELP = (
    "USD per prediction for the cost estimate (default: 0.00022, an assumed figure, not a quoted price; "
    "use your Replicate bill)."
)


@cli.command("backfill")
@click.argument("uri", type=GsUri())
@click.option("--dry-run", is_flag=True, help="Count and estimate only; write nothing.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Admit at most this many objects in this run.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=8, show_default=True, help="Admissions in flight.")
@click.option(
    "--price-per-prediction",
    type=click.FloatRange(0),
    default=admission.DEFAULT_PRICE_PER_PREDICTION,
    envvar="BGREMOVE_PRICE_PER_PREDICTION",
    help=PRICE_HELP,
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_settings
def backfill_command(
    settings: Settings,
    uri: tuple[str, str, int | None],
    dry_run: bool,
    limit: int | None,
    concurrency: int,
    price_per_prediction: float,
    as_json: bool,
) -> int:
    """Admit the objects under gs://BUCKET/PREFIX that have no job, through the submission queue,
    with the uploads' filters. Run it again after Ctrl-C: admitted objects have jobs and are skipped."""
    bucket, prefix, _ = uri
    cloud = settings.cloud()
    admission.check_bucket(cloud, bucket)
    cloud.require_bucket(bucket, "UPLOAD_BUCKET", prefix)
    label = f"gs://{bucket}/{prefix}"
    with admission.StopOnSignal(lambda m: err.print(f"[yellow]{escape(m)}[/]")) as stop:
        with err.status(f"listing {escape(label)} and the job records …"):
            plan = admission.plan_backfill(cloud, bucket, prefix, stop)
        if plan.interrupted:
            _backfill_summary(plan, None, label, as_json, dry_run)
            return EXIT_INTERRUPTED
        if dry_run:
            queue = cloud.queue_info()
            admit = plan.admissible if limit is None else min(limit, plan.admissible)
            spend = budget.standings(cloud.cfg, cloud.objects, time.time())
            _dry_run_summary(plan, admit, queue, price_per_prediction, label, as_json, cloud.cfg, spend)
            return 0
        with _progress("admitting", len(plan.candidates)) as advance:
            result = admission.run_backfill(cloud, plan, limit, concurrency, stop, advance)
    _backfill_summary(plan, result, label, as_json, dry_run)
    if result.error:
        return EXIT_ERROR
    return EXIT_INTERRUPTED if result.interrupted else 0


def _dry_run_summary(
    plan: admission.BackfillPlan,
    admit: int,
    queue: Any,
    price: float,
    label: str,
    as_json: bool,
    cfg: Config,
    spend: list[budget.Standing],
) -> None:
    waiting = queue.depth
    seconds = (waiting + admit) / queue.rate_per_second if queue.rate_per_second > 0 else None
    refuse = sum(1 for c in plan.new if c.refused)
    # A daily budget paces the backfill too: what the queue waiting and this admission need, with
    # what today's window has left counted first.
    today = next((s for s in spend if s.window.period is budget.Period.DAY), None)
    days = budget.days_needed(admit + waiting, cfg, today.spent if today else 0)
    data = {
        "dry_run": True,
        "uri": label,
        "listed": plan.listed,
        "has_job": dict(plan.has_job),
        "skipped": dict(plan.skipped),
        "would_admit": admit,
        "admissible": plan.admissible,
        "would_refuse": refuse,
        "queue": queue.to_json(),
        "estimated_seconds": None if seconds is None else round(seconds, 1),
        "price_per_prediction_usd": price,
        "estimated_cost_usd": round(admit * price, 4),
        "budget": budget.to_json(spend),
        "budget_days": days,
    }
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = _summary_table(f"backfill {label} — dry run, nothing written")
    table.add_row("objects listed", f"{plan.listed:,}")
    table.add_row("have a job already", _counter(plan.has_job))
    table.add_row("skipped by the filters", _counter(plan.skipped))
    table.add_row(
        "would be admitted", f"{admit:,}" + (f" (of {plan.admissible:,}; --limit)" if admit < plan.admissible else "")
    )
    if refuse:
        table.add_row("would get a failure record", f"{refuse:,} (over MAX_UPLOAD_BYTES)")
    rate = f"{queue.rate_per_second:g}/s"
    when = "—" if seconds is None else status.duration(seconds)
    state = " — the queue is PAUSED: nothing runs until `bgremove resume`" if queue.paused else ""
    table.add_row("time at the queue's rate", f"{when} ({admit:,} + {waiting:,} waiting, at {rate}){state}")
    if days is not None:
        left = cfg.daily_prediction_budget - (today.spent if today else 0)
        table.add_row(
            "days at the daily budget",
            f"{days:,} budget day{'s' if days != 1 else ''} ({cfg.daily_prediction_budget:,} a day; "
            f"{max(0, left):,} left today)",
        )
    table.add_row(
        "estimated cost",
        f"{_usd(admit * price)} at {price:g} USD per prediction (predictions only; --price-per-prediction)",
    )
    out.print(table)


def _backfill_summary(
    plan: admission.BackfillPlan, result: admission.BackfillResult | None, label: str, as_json: bool, dry_run: bool
) -> None:
    result = result or admission.BackfillResult(interrupted=True, not_reached=plan.admissible)
    data = {
        "uri": label,
        "listed": plan.listed,
        "admitted": result.admitted,
        "refused": result.refused,
        "already_had_job": sum(plan.has_job.values()) + result.already,
        "has_job": dict(plan.has_job),
        "skipped": dict(plan.skipped),
        "queued_rechecked": result.rechecked,
        "tasks_remade": result.tasks_remade,
        "not_reached": result.not_reached,
        "interrupted": result.interrupted,
        "error": result.error or None,
    }
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        title = (
            f"backfill {label}"
            + (" — INTERRUPTED" if result.interrupted else "")
            + (" — STOPPED" if result.error else "")
        )
        table = _summary_table(title)
        table.add_row("objects listed", f"{plan.listed:,}")
        table.add_row("admitted (queued)", f"[bold]{result.admitted:,}[/]")
        if result.refused:
            table.add_row("failure records (too large, bad metadata)", f"{result.refused:,}")
        table.add_row(
            "already had a job", _counter(plan.has_job, extra=result.already, extra_label="admitted meanwhile")
        )
        table.add_row("skipped by the filters", _counter(plan.skipped))
        if result.rechecked:
            table.add_row(
                "queued jobs re-enqueued", f"{result.rechecked:,} checked, {result.tasks_remade:,} had lost their task"
            )
        if result.not_reached:
            table.add_row("left for the next run", f"{result.not_reached:,}")
        out.print(table)
        if result.interrupted or result.not_reached:
            out.print("Run the same command again to admit the rest; objects that have a job are skipped.")
        out.print("Follow the work with `bgremove status --watch`.")
    if result.error:
        err.print(f"bgremove: {escape(result.error)}")


# --- retry --------------------------------------------------------------------------------------


@cli.command("retry")
@click.option(
    "--reason", "reasons", multiple=True, metavar="REASON", help="Only failures with this reason (repeat, or a,b)."
)
@click.option("--older-than", type=Duration(), default=0.0, help="Only failures at least this old (30s, 10m, 2h, 3d).")
@click.option("--limit", type=click.IntRange(1), default=1000, show_default=True, help="Retry at most this many.")
@click.option("--dry-run", is_flag=True, help="Say what would be retried; write nothing.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option(
    "--price-per-prediction",
    type=click.FloatRange(0),
    default=admission.DEFAULT_PRICE_PER_PREDICTION,
    envvar="BGREMOVE_PRICE_PER_PREDICTION",
    help=PRICE_HELP,
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_settings
def retry_command(
    settings: Settings,
    reasons: tuple[str, ...],
    older_than: float,
    limit: int,
    dry_run: bool,
    concurrency: int,
    price_per_prediction: float,
    as_json: bool,
) -> int:
    """Admit failed jobs again through the submission queue, oldest failure first; each retry is
    recorded in the job's history."""
    wanted = tuple(r.strip() for item in reasons for r in item.split(",") if r.strip())
    cloud = settings.cloud()
    with admission.StopOnSignal(lambda m: err.print(f"[yellow]{escape(m)}[/]")) as stop:
        with err.status("reading failed jobs …"):
            selection = admission.select_failed(cloud, wanted, older_than, time.time(), stop)
        if stop():
            err.print("bgremove: interrupted before retrying anything")
            return EXIT_INTERRUPTED
        chosen = selection.matching[:limit]
        base = {
            "failed": selection.failed_total,
            "matching": len(selection.matching),
            "matching_by_reason": dict(selection.by_reason),
            "limit": limit,
        }
        if dry_run:
            data = {
                "dry_run": True,
                **base,
                "would_retry": len(chosen),
                "estimated_cost_usd": round(len(chosen) * price_per_prediction, 4),
                "examples": [_job_line(job) for job, _ in chosen[:10]],
            }
            if as_json:
                print(json.dumps(data, indent=2))
            else:
                table = _summary_table("retry — dry run, nothing written")
                table.add_row("failed jobs", f"{selection.failed_total:,}")
                table.add_row("matching", _counter(selection.by_reason))
                table.add_row(
                    "would be retried",
                    f"{len(chosen):,}" + (" (--limit)" if len(chosen) < len(selection.matching) else ""),
                )
                table.add_row(
                    "estimated cost",
                    f"{_usd(len(chosen) * price_per_prediction)} at {price_per_prediction:g} USD per prediction",
                )
                for job, _ in chosen[:5]:
                    table.add_row("  e.g.", escape(_job_line(job)))
                out.print(table)
            return 0
        with _progress("retrying", len(chosen)) as advance:
            result = admission.run_retry(cloud, chosen, concurrency, stop, advance)
    retried = sum(result.retried.values())
    data = {
        **base,
        "retried": retried,
        "retried_by_reason": dict(result.retried),
        "skipped": dict(result.skipped),
        "not_reached": len(selection.matching) - retried - sum(result.skipped.values()),
        "interrupted": result.interrupted,
        "error": result.error or None,
    }
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        table = _summary_table("retry" + (" — INTERRUPTED" if result.interrupted else ""))
        table.add_row("failed jobs", f"{selection.failed_total:,}")
        table.add_row("matching", f"{len(selection.matching):,}")
        table.add_row("retried (queued again)", _counter(result.retried))
        if result.skipped:
            table.add_row("skipped", _counter(result.skipped))
        if data["not_reached"]:
            table.add_row("left for the next run", f"{data['not_reached']:,}")
        out.print(table)
        out.print("Follow the work with `bgremove status --watch`.")
    if result.error:
        err.print(f"bgremove: {escape(result.error)}")
        return EXIT_ERROR
    return EXIT_INTERRUPTED if result.interrupted else 0


# --- pause, resume ------------------------------------------------------------------------------


@cli.command("pause")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
def pause_command(settings: Settings, as_json: bool) -> int:
    """Pause the submission queue: no new prediction is created; predictions already running
    finish and their webhooks are processed; new uploads keep joining the queue."""
    info = settings.cloud().pause()
    _queue_line(info, as_json, "paused: no new predictions; running ones finish; `bgremove resume` to continue")
    return 0


@cli.command("resume")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
def resume_command(settings: Settings, as_json: bool) -> int:
    """Resume the submission queue: waiting tasks are dispatched again at the queue's rate."""
    info = settings.cloud().resume()
    _queue_line(info, as_json, "running: waiting tasks are dispatched at the queue's rate")
    return 0


def _queue_line(info: Any, as_json: bool, what: str) -> None:
    if as_json:
        print(json.dumps(info.to_json(), indent=2))
        return
    depth = f"{info.depth:,}{'+' if info.depth_capped else ''}"
    out.print(f"queue {info.name}: {info.state} — {what}; {depth} tasks waiting")


# --- show ---------------------------------------------------------------------------------------


@cli.command("show")
@click.argument("uri", type=GsUri(need_name=True))
@click.option(
    "--scan",
    type=click.IntRange(0),
    default=generations.DEFAULT_SCAN,
    show_default=True,
    help="Without #GENERATION: job records of unknown upload read, newest first, to find generations "
    "the bucket keeps no version of.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the job record (without #GENERATION: a list) as JSON.")
@pass_settings
def show_command(settings: Settings, uri: tuple[str, str, int | None], scan: int, as_json: bool) -> int:
    """An upload name through its generations: gs://BUCKET/NAME lists every job of the name, newest
    first, and which generation is live; gs://BUCKET/NAME#GENERATION shows that one job."""
    from bgremove import keys, naming

    bucket, name, generation = uri
    cloud = settings.cloud()
    if generation is not None:
        job_id = naming.job_id(bucket, name, generation)
        hint = f"; admit it with `bgremove backfill gs://{bucket}/{name}`"
        return _show_job(cloud, job_id, f"gs://{bucket}/{name}#{generation}{hint}", "", as_json)
    blob = cloud.live_object(bucket, name)
    meta = dict(blob.metadata or {}) if blob is not None else {}
    if meta.get(keys.JOB):
        # An output: the job that wrote it.
        return _show_job(
            cloud, meta[keys.JOB], f"gs://{bucket}/{name}", f"gs://{bucket}/{name} is an output; its job:", as_json
        )
    live = int(blob.generation) if blob is not None else None
    note = _filters_note(cloud, blob) if blob is not None else ""
    with err.status(f"finding the generations of gs://{escape(bucket)}/{escape(name)} …"):
        kept = cloud.generations_of(bucket, name)
        entries = cloud.job_entries()
        chosen = generations.plan(entries, bucket, name, [*kept, *([live] if live is not None else [])], scan)
        found = generations.select(cloud.load_jobs(chosen.read), bucket, name)
    label = f"gs://{bucket}/{name}"
    if not found:
        if live is None:
            raise CliError(
                f"{label} does not exist, and no job of it was found ({generations.coverage(chosen, bucket)})"
            )
        why = f" ({note})" if note else f"; admit it with `bgremove backfill {label}`"
        raise CliError(f"no job for {label}#{live}{why}")
    table_rows = generations.rows(found, live, cloud.cfg.processed_bucket)
    if as_json:
        print(json.dumps(table_rows, indent=2))
        if not chosen.complete:
            print(f"bgremove: {generations.coverage(chosen, bucket)}", file=sys.stderr)
        return 0
    if note:
        out.print(escape(note))
    live_has_job = any(row["live"] for row in table_rows)
    out.print(generations.render(label, table_rows, live, live_has_job, generations.coverage(chosen, bucket)))
    return 0


def _filters_note(cloud: Any, blob: Any) -> str:
    """Why the uploads' filters would skip this object, if they would."""
    from bgremove import admission as core_admission
    from bgremove.outcomes import Outcome

    meta = dict(blob.metadata or {})
    event = core_admission.listed(
        blob.bucket.name, blob.name, int(blob.generation), blob.content_type or "", int(blob.size or 0), meta
    )
    decided = core_admission.decide(event, cloud.cfg, time.time())
    if decided.refusal is not None and decided.refusal.outcome is not Outcome.FAILED:
        return f"the filters skip this object: {decided.message}"
    return ""


def _show_job(cloud: Any, job_id: str, label: str, note: str, as_json: bool) -> int:
    """One job, as `show gs://BUCKET/NAME#GENERATION` (or of an output) prints it."""
    loaded = cloud.load_jobs([job_id]).get(job_id)
    if loaded is None:
        raise CliError(f"no job for {label}")
    job, _ = loaded
    if as_json:
        record = job.to_json()
        if job.output_name:
            record["output_uri"] = f"gs://{cloud.cfg.processed_bucket}/{job.output_name}#{job.output_generation}"
        print(json.dumps(record, indent=2))
        return 0
    if note:
        out.print(escape(note))
    out.print(_render_job(job, cloud.cfg.processed_bucket))
    return 0


def _render_job(job: Any, processed_bucket: str) -> Table:
    colour = status.STATE_STYLES.get(job.state, "yellow")
    table = Table(title=escape(job.source.uri), title_justify="left", show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="dim")
    table.add_column(overflow="fold")
    table.add_row("state", f"[bold {colour}]{job.state}[/]")
    table.add_row("job id", job.job_id)
    table.add_row("created", _when(job.created_at))
    table.add_row("updated", _when(job.updated_at))
    table.add_row("predictions", escape(", ".join(job.prediction_ids)) or "—")
    table.add_row("attempts", f"{job.attempts} prediction(s) this round; {job.enqueues} submission task(s) made")
    written = generations.outputs_of(job)
    if written:
        label = "outputs (deleted)" if job.state == "removed" else "output" if len(written) == 1 else "outputs"
        lines = [f"gs://{processed_bucket}/{o.get('object', '')}#{o.get('generation', 0)}" for o in written]
        table.add_row(label, escape("\n".join(lines)))
    if job.state in ("failed", "superseded", "removed"):
        table.add_row("reason", f"[{colour}]{escape(job.reason)}[/]")
        table.add_row("error" if job.state == "failed" else "why", escape(job.error) or "—")
    if job.due_at:
        table.add_row("next check", _when(job.due_at))
    history = Table(show_edge=False, pad_edge=False, box=None)
    history.add_column("at (UTC)")
    history.add_column("state")
    history.add_column("why", overflow="fold")
    for entry in job.history:
        history.add_row(
            _when(float(entry.get("at", 0))), str(entry.get("state", "")), escape(str(entry.get("why", "admitted")))
        )
    table.add_row("history", history)
    return table


# --- doctor -------------------------------------------------------------------------------------


@cli.command("doctor")
@click.option("-y", "--yes", is_flag=True, help="Spend the one prediction without asking.")
@click.option(
    "--no-prediction",
    is_flag=True,
    help="Skip the checks that spend a prediction (the prediction, the webhook, the output host).",
)
@click.option(
    "--webhook-url",
    metavar="URL",
    default="",
    help="A public URL that forwards to --listen (a tunnel, a port-forward): the endpoint sends the test "
    "prediction's webhook there. Without it the webhook is tested only when the endpoint runs on this machine.",
)
@click.option(
    "--listen",
    metavar="[HOST:]PORT",
    default="127.0.0.1:0",
    show_default=True,
    help="Where the doctor's own webhook receiver listens (port 0: any free port).",
)
@click.option(
    "--webhook-wait",
    type=Duration(),
    default=doctor.WEBHOOK_WAIT_SECONDS,
    show_default=True,
    help="Seconds to wait for the webhook once the prediction has ended (30s, 2m).",
)
@click.option(
    "--timeout",
    type=Duration(),
    default=doctor.PREDICTION_TIMEOUT_SECONDS,
    show_default=True,
    help="Seconds the prediction may take; then it is cancelled.",
)
@click.option(
    "--model", default=doctor.MODEL, show_default=True, metavar="OWNER/NAME", help="The model of MODEL_VERSION."
)
@click.option("--json", "as_json", is_flag=True, help="Print the verdicts as JSON.")
@pass_settings
def doctor_command(
    settings: Settings,
    yes: bool,
    no_prediction: bool,
    webhook_url: str,
    listen: str,
    webhook_wait: float,
    timeout: float,
    model: str,
    as_json: bool,
) -> int:
    """Check the predictions endpoint before a bulk run: the token, the model version, the signing
    secret, then (spending at most one prediction) a prediction, its webhook round trip and its output
    host, and the rate-limit headers. Exit 0 when nothing failed."""
    from bgremove.errors import ConfigError

    if yes and no_prediction:
        raise click.UsageError("give --yes or --no-prediction, not both")
    if not yes and not no_prediction and not sys.stdin.isatty():
        raise click.UsageError(
            "doctor spends one prediction: give --yes to allow it, or --no-prediction to skip the checks that need one"
        )
    host, port = _listen_address(listen)
    if webhook_url and not webhook_url.lower().startswith(("http://", "https://")):
        raise click.BadParameter("must be an http(s) URL", param_hint="--webhook-url")
    if webhook_url and port == 0:
        raise click.BadParameter("give the port that --webhook-url forwards to", param_hint="--listen")
    if "/" not in model.strip("/"):
        raise click.BadParameter("must be OWNER/NAME", param_hint="--model")
    target = settings.target()
    try:
        endpoint = doctor.Endpoint.from_env(target.env)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    options = doctor.Options(
        model=model.strip("/"),
        spend=True if yes else False if no_prediction else None,
        webhook_url=webhook_url,
        listen_host=host,
        listen_port=port,
        webhook_wait_seconds=webhook_wait,
        timeout_seconds=timeout,
    )
    notice = (
        f"bgremove doctor: {endpoint.base_url} ({target.label}). It spends at most one prediction "
        "(a 64×64 PNG sent as a data URL, the pipeline's own create request)"
        + ("; --no-prediction: none this time." if no_prediction else "; --no-prediction skips it.")
    )
    (err if as_json else out).print(escape(notice), soft_wrap=True)

    def confirm(so_far: list[doctor.Check]) -> bool:
        err.print(_doctor_table(so_far))
        return click.confirm("Create that one prediction now?", default=False, err=True)

    def say(line: str) -> None:
        err.print(f"[dim]{escape(line)}[/]", soft_wrap=True)

    report = doctor.run(endpoint, options, confirm=confirm, say=say)
    if as_json:
        print(json.dumps({"target": target.label, **report.to_json()}, indent=2))
    else:
        out.print(_doctor_table(report.checks))
        out.print(escape(_doctor_summary(report)), soft_wrap=True)
    return report.status


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text.strip()
    if not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{text!r} is not [HOST:]PORT", param_hint="--listen")
    return host.strip("[]") or "127.0.0.1", int(port)


def _doctor_table(checks: list[doctor.Check]) -> Table:
    colours = {doctor.OK: "green", doctor.FAIL: "red", doctor.WARN: "yellow"}
    table = Table(show_header=False, box=None, padding=(0, 1, 0, 0))
    table.add_column()
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for check in checks:
        colour = colours.get(check.status, "dim")
        table.add_row(f"[{colour}]{check.symbol}[/]", check.name, escape(check.detail))
    return table


def _doctor_summary(report: doctor.Report) -> str:
    failed = [c.name for c in report.checks if c.status == doctor.FAIL]
    spent = "1 prediction spent" if report.spent else "no prediction spent"
    if failed:
        checks = "check" if len(failed) == 1 else "checks"
        return f"{len(failed)} {checks} failed: {', '.join(failed)} ({spent})"
    polls = any(c.data.get("will_poll") for c in report.checks)
    warnings = sum(c.status == doctor.WARN for c in report.checks)
    more = f"; {warnings} warning{'s' if warnings > 1 else ''}" if warnings else ""
    return "nothing failed" + (": the deployment will poll for results" if polls else "") + f"{more} ({spent})"


# --- helpers ------------------------------------------------------------------------------------


@contextmanager
def _progress(what: str, total: int) -> Iterator[Callable[[int], None]]:
    columns = (
        TextColumn(f"[bold]{what}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task(what, total=total)
        yield lambda n: progress.advance(task, n)


def _summary_table(title: str) -> Table:
    out.print(f"[bold]{escape(title)}[/]")
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="dim")
    table.add_column(overflow="fold")
    return table


def _counter(counter: Mapping[str, int], extra: int = 0, extra_label: str = "") -> str:
    """`12 (completed: 10; failed: 2)`."""
    items = sorted(counter.items(), key=lambda kv: -kv[1])
    if extra:
        items.append((extra_label, extra))
    total = sum(n for _, n in items)
    if not items:
        return "0"
    return escape(f"{total:,} (" + "; ".join(f"{k}: {v:,}" for k, v in items) + ")")


def _usd(amount: float) -> str:
    return f"{amount:,.2f} USD" if amount >= 1 else f"{amount:.4f} USD"


def _job_line(job: Any) -> str:
    return f"gs://{job.source.bucket}/{job.source.name}#{job.source.generation} — {job.reason}: {job.error[:80]}"


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}" if ts else "—"


# --- entry point --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """The console script: run one command; errors are one line on stderr, never a traceback."""
    debug = bool(os.environ.get("BGREMOVE_DEBUG"))
    try:
        code = cli.main(args=argv, prog_name="bgremove", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "bgremove"
        _fail(f"{exc.format_message()} (see `{command} --help`)", EXIT_USAGE)
    except click.Abort:
        _fail("interrupted", EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED)
    except CliError as exc:
        _fail(str(exc), exc.status)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(EXIT_ERROR)
    except Exception as exc:
        if debug:
            raise
        _fail(str(explain(exc)), EXIT_ERROR)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, status_code: int) -> None:
    line = " ".join(message.split())
    print(f"bgremove: {line}", file=sys.stderr, flush=True)
    sys.exit(status_code)


if __name__ == "__main__":
    main()
