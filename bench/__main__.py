"""`python -m bench [--quick] [--only NAME,...] [--out-dir DIR]`: run the benchmarks on the offline
stack and write DIR/results.json and DIR/RESULTS.md (DIR defaults to bench/).

Figures: billed (function time per image against a synchronous baseline), latency (pipeline
overhead beyond the model's own time), coldstart (against a hello-world function), memory (peak
RSS of the webhook function relaying a 1 MB and a 100 MB output), throughput (webhooks per second
against the storage emulator's own create rate), variants (billed webhook time per output variant
kind, and peak RSS writing each from a 25-megapixel output). Every figure is a ratio of two measurements taken
side by side in the same run, so a slow or noisy machine shifts both.

Issue 11's figures: bulk (a drop of 10x the API's per-minute create limit, queue admission against
direct submission, bench/baseline_direct.py; about 25 minutes of the full run) and calls (storage,
API and Cloud Tasks calls per image, counted in-process on the real emulators).

polling: results without webhooks — 20 real photos at once, webhooks sent vs never sent, with the
real model (latency, the model's run time, API GETs per image). preferwait: PREFER_WAIT_SECONDS=10
against 0, billed function time and latency per image, one real photo at a time. budget: on_task's
time per submission with DAILY_PREDICTION_BUDGET set vs unset, and a held dispatch's.

--quick is a smoke run with tiny sizes (well under a minute): its numbers mean nothing.

--only runs a subset and merges it into DIR/results.json when that file holds a run of the same
mode: the figures run now replace their earlier values, each marked with its own run (date, commit,
load), and every other figure is kept as it was. Without --only, or into a file of the other mode,
the files are written anew.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    billed,
    budget,
    bulk,
    calls,
    coldstart,
    common,
    latency,
    memory,
    polling,
    preferwait,
    report,
    throughput,
    variants,
)

FIGURES: dict[str, Callable[[common.Context], dict[str, Any]]] = {
    "billed": billed.run,
    "latency": latency.run,
    "coldstart": coldstart.run,
    "memory": memory.run,
    "throughput": throughput.run,
    "variants": variants.run,
    "bulk": bulk.run,
    "calls": calls.run,
    "polling": polling.run,
    "preferwait": preferwait.run,
    "budget": budget.run,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run with tiny sizes; numbers mean nothing")
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of: {', '.join(FIGURES)} (merged into results.json)"
    )
    parser.add_argument("--out-dir", type=Path, default=common.BENCH_DIR, help="where results.json and RESULTS.md go")
    parser.add_argument("--keep", action="store_true", help="keep the stacks' directories (logs) after the run")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(FIGURES)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        parser.error(f"unknown figure(s): {', '.join(unknown)}")
    args.names = names
    args.only = bool(args.only.strip())
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    started_at = dt.datetime.now(dt.UTC)
    work_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    results: dict[str, Any] = {
        "meta": {
            "mode": "quick" if args.quick else "full",
            "date": started_at.isoformat(timespec="seconds"),
            "git": common.git_commit(),
            "machine": common.machine(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "command": "python -m bench"
            + (" --quick" if args.quick else "")
            + (f" --only {','.join(args.names)}" if args.only else ""),
        },
        "figures": {},
    }
    failed = False
    print(f"[bench] stacks and logs under {work_dir}", file=sys.stderr, flush=True)
    try:
        stack = common.start_stack(work_dir / "stack")
        try:
            ctx = common.Context(quick=args.quick, stack=stack, work_dir=work_dir)
            common.warm_up(ctx.info)
            for name in args.names:
                figure_began = time.monotonic()
                ctx.log(f"figure {name}")
                try:
                    figure = FIGURES[name](ctx)
                except Exception as exc:
                    failed = True
                    traceback.print_exc()
                    figure = {"error": f"{type(exc).__name__}: {exc}"}
                figure["runtime_seconds"] = round(time.monotonic() - figure_began, 1)
                results["figures"][name] = figure
        finally:
            stack.stop()
    finally:
        results["meta"]["runtime_seconds"] = round(time.monotonic() - began, 1)
        results["meta"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        args.out_dir.mkdir(parents=True, exist_ok=True)
        if args.only:
            results = merge(_previous(args.out_dir / "results.json"), results)
        (args.out_dir / "results.json").write_text(common.dump(results))
        (args.out_dir / "RESULTS.md").write_text(report.render(results))
        if args.keep or failed:
            print(f"[bench] logs kept in {work_dir}", file=sys.stderr)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    print(f"[bench] wrote {args.out_dir / 'results.json'} and {args.out_dir / 'RESULTS.md'}", file=sys.stderr)
    print(report.headline(results))
    return 1 if failed else 0


def _previous(path: Path) -> dict[str, Any] | None:
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return previous if isinstance(previous, dict) and isinstance(previous.get("figures"), dict) else None


def merge(previous: dict[str, Any] | None, run: dict[str, Any]) -> dict[str, Any]:
    """A subset run (`--only`) merged into the results it adds to: its figures replace theirs, each
    marked with this run's own meta (`figure["run"]`), the others and the file's meta stay. A file
    of the other mode (quick into full, or back) is not merged into: the run stands alone."""
    if previous is None or previous.get("meta", {}).get("mode") != run["meta"]["mode"]:
        return run
    own = {k: run["meta"][k] for k in ("date", "git", "command", "load_average_at_start", "load_average_at_end")}
    own = {**own, "runtime_seconds": run["meta"].get("runtime_seconds")}
    figures = dict(previous["figures"])
    for name, figure in run["figures"].items():
        figures[name] = {**figure, "run": own}
    return {**previous, "figures": figures}


if __name__ == "__main__":
    sys.exit(main())
