"""bench/RESULTS.md from results.json: a summary table, then one section per figure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def secs(seconds: float) -> str:
    return f"{seconds:.2f} s"


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def dur(seconds: float) -> str:
    return ms(seconds) if seconds < 1 else secs(seconds)


def times(value: float | None) -> str:
    return "—" if value is None else f"{value:g}×"


def verdict(figure: dict[str, Any]) -> str:
    if "error" in figure:
        return "error"
    met = figure.get("target_met")
    if met is None and figure.get("no_target"):
        return "a count, no target"
    return "not evaluated (quick run)" if met is None else ("met" if met else "**missed**")


def _billed_summary(f: dict[str, Any]) -> str:
    parts = [
        f"at {r['model_latency_seconds']:g} s: ours {ms(r['ours_billed_seconds']['p50'])}, "
        f"baseline {secs(r['baseline_billed_seconds']['p50'])} ({times(r['ratio'])})"
        for r in f["runs"]
    ]
    return "; ".join(parts)


def _latency_summary(f: dict[str, Any]) -> str:
    one, batch = f["one_image"]["overhead_seconds"], f["batch"]["overhead_seconds"]
    return (
        f"one image: p50 {ms(one['p50'])}, p95 {ms(one['p95'])}; {f['batch']['images']} at once: "
        f"p50 {secs(batch['p50'])}, p95 {secs(batch['p95'])}"
    )


def _coldstart_summary(f: dict[str, Any]) -> str:
    parts = []
    for variant, v in f["variants"].items():
        fn = v["functions"]
        parts.append(
            f"{variant}: " + ", ".join(f"{name} {secs(x['first_answer_seconds']['p50'])}" for name, x in fn.items())
        )
    return "; ".join(parts) + " (p50)"


def _memory_summary(f: dict[str, Any]) -> str:
    return ", ".join(f"{r['output_bytes'] / 1e6:g} MB: {mib(r['peak_rss_bytes'])}" for r in f["runs"])


def _throughput_summary(f: dict[str, Any]) -> str:
    return ", ".join(
        f"c={r['concurrency']}: {r['webhooks_per_second']:.1f}/s vs {r['ceiling_creates_per_second']:.1f}/s"
        for r in f["runs"]
    )


def _variants_summary(f: dict[str, Any]) -> str:
    kinds = f["kinds"]
    worst = f["slowest_kind"]
    mp = f"{f['large_megapixels']:g} MP"
    heaviest = max(kinds, key=lambda k: kinds[k]["large"]["peak_rss_bytes"])
    return (
        f"passthrough p50 {ms(kinds['passthrough']['billed_seconds']['p50'])}, slowest {worst} "
        f"{ms(kinds[worst]['billed_seconds']['p50'])}; peak RSS at {mp}: {mib(f['peak_webhook_rss_bytes'])} "
        f"({heaviest}), on_upload {mib(f['peak_upload_rss_bytes'])}"
    )


SUMMARIES: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "billed": ("1. Billed function time per image", _billed_summary),
    "latency": ("2. Overhead latency", _latency_summary),
    "coldstart": ("3. Cold start", _coldstart_summary),
    "memory": ("4. Memory (peak RSS)", _memory_summary),
    "throughput": ("5. Webhook throughput", _throughput_summary),
    "variants": ("6. Billed time per output variant kind", _variants_summary),
    "bulk": ("Bulk drop: queue admission vs direct submission", lambda f: _bulk_summary(f)),
    "calls": ("Storage, API and Cloud Tasks calls per image", lambda f: _calls_summary(f)),
    "polling": ("Results without webhooks: polling vs webhooks", lambda f: _polling_summary(f)),
    "preferwait": ("Prefer: wait, 10 s vs not asked", lambda f: _preferwait_summary(f)),
    "budget": (
        "Spend budget: a submission's cost with DAILY_PREDICTION_BUDGET set vs unset",
        lambda f: _budget_summary(f),
    ),
}


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    m = meta["machine"]
    git = meta["git"]
    out = [
        "# Benchmark results",
        "",
        f"Written by `{meta['command']}` (`make bench`). Mode: **{meta['mode']}**"
        + (" — a smoke run with tiny sizes: its numbers mean nothing." if meta["mode"] == "quick" else "."),
        "Every figure is a ratio of two measurements taken side by side in this run; absolute times move with the "
        "machine and its noise, ratios much less.",
        "",
        "| | |",
        "|---|---|",
        f"| date (UTC) | {meta['date']} |",
        f"| git commit | `{git['commit']}`{' (uncommitted changes)' if git['dirty'] else ''} |",
        f"| CPU | {m['cpu_model']} |",
        f"| cores | {m['logical_cores']} logical, {m['physical_cores']} physical |",
        f"| memory | {m['memory_gib']} GiB |",
        f"| platform | {m['platform']}, Python {m['python']} |",
        f"| run time | {meta.get('runtime_seconds', 0):.0f} s |",
    ]
    if "load_average_at_start" in meta:
        load = meta["load_average_at_start"], meta.get("load_average_at_end", [])
        out.append(
            f"| load average (1, 5, 15 min) | {', '.join(map(str, load[0]))} at the start; "
            f"{', '.join(map(str, load[1]))} at the end (other work on the machine adds noise) |"
        )
    separate: list[str] = [
        f"{key} ({f['run']['date']}, `{f['run']['git']['commit'][:12]}`)"
        for key, f in results["figures"].items()
        if isinstance(f.get("run"), dict)
    ]
    if separate:
        out.append("| figures run on their own (`--only`, merged into this file) | " + "; ".join(separate) + " |")
    out += [
        "",
        "## Summary",
        "",
        "| figure | measured | ratio | target | result |",
        "|---|---|---|---|---|",
    ]
    figures = results["figures"]
    for key, (title, summarise) in SUMMARIES.items():
        f = figures.get(key)
        if f is None:
            continue
        if "error" in f:
            out.append(f"| {title} | error: {f['error']} | — | — | error |")
            continue
        out.append(f"| {title} | {summarise(f)} | {times(f.get('ratio'))} | {f['target']} | {verdict(f)} |")
    for key, (title, _) in SUMMARIES.items():
        f = figures.get(key)
        if f is None or "error" in f:
            continue
        out += ["", f"## {title}", "", f["method"], ""]
        if isinstance(f.get("run"), dict):
            run = f["run"]
            run_load = ", ".join(map(str, run.get("load_average_at_start") or []))
            out += [
                f"Run on its own: `{run['command']}`, {run['date']}, commit `{run['git']['commit']}`"
                + (" (uncommitted changes)" if run["git"].get("dirty") else "")
                + (f", load average {run_load} at its start" if run_load else "")
                + ".",
                "",
            ]
        out += DETAILS[key](f)
        for note in f.get("notes", []):
            out += ["", note]
    out += ["", "## For the README", "", "The Benchmarks table, from this run:", "", *readme_table(results)]
    return "\n".join(out) + "\n"


def _billed_details(f: dict[str, Any]) -> list[str]:
    rows = [
        "| model latency | ours p50 (on_upload + on_task + webhook + deadline check) | ours p95 | baseline p50 | "
        "baseline p95 | ratio (p50) |",
        "|---|---|---|---|---|---|",
    ]
    for r in f["runs"]:
        o, b = r["ours_billed_seconds"], r["baseline_billed_seconds"]
        parts = [r["ours_trigger_seconds"], r.get("ours_task_seconds"), r["ours_webhook_seconds"]]
        parts.append(r.get("ours_deadline_seconds"))
        split = " + ".join(ms(x["p50"]) for x in parts if x)
        rows.append(
            f"| {r['model_latency_seconds']:g} s | {ms(o['p50'])} ({split}) | {ms(o['p95'])} | {secs(b['p50'])} | "
            f"{secs(b['p95'])} | {times(r['ratio'])} |"
        )
    return rows


def _latency_details(f: dict[str, Any]) -> list[str]:
    labels = [
        ("overhead_seconds", "overhead (end to end − predict_time)"),
        ("upload_to_created_seconds", "upload → prediction created (relay + on_upload + queue + on_task)"),
        ("upload_to_task_dispatched_seconds", "upload → submission task dispatched (relay + on_upload + queue)"),
        ("task_dispatched_to_created_seconds", "task dispatched → prediction created (on_task)"),
        ("model_queue_seconds", "waiting in the model service's queue"),
        ("completed_to_written_seconds", "prediction completed → output written (webhook)"),
        ("overhead_without_model_queue_seconds", "overhead without the model's queue"),
        ("predict_seconds", "model predict_time (subtracted)"),
        ("end_to_end_seconds", "upload → output written"),
    ]
    rows = [
        f"| | one image (n={f['one_image']['overhead_seconds']['n']}) p50 | p95 | "
        f"{f['batch']['images']} at once p50 | p95 |",
        "|---|---|---|---|---|",
    ]
    for key, label in labels:
        if key not in f["one_image"]:
            continue
        one, batch = f["one_image"][key], f["batch"][key]
        rows.append(f"| {label} | {ms(one['p50'])} | {ms(one['p95'])} | {ms(batch['p50'])} | {ms(batch['p95'])} |")
    return rows


def _coldstart_details(f: dict[str, Any]) -> list[str]:
    rows = [
        f"| venv | function ({f['repetitions']} starts each) | first answer p50 | min | max | ratio to hello (p50) | "
        "ratio to hello (min) | first real request p50 | ratio to hello (p50) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, v in f["variants"].items():
        for name, x in v["functions"].items():
            a, r = x["first_answer_seconds"], x["first_real_request_seconds"]
            rows.append(
                f"| {variant} | {name} | {secs(a['p50'])} | {secs(a['min'])} | {secs(a['max'])} | "
                f"{times(x['ratio_to_hello'])} | {times(x['ratio_of_fastest_to_hello'])} | {secs(r['p50'])} | "
                f"{times(x['real_request_ratio_to_hello'])} |"
            )
    for variant, v in f["variants"].items():
        imp = v["importtime"]
        met = v.get("target_met")
        rows += [
            "",
            f"**{variant}**: worst ratio {times(v['ratio'])}"
            + ("" if met is None else f" ({'met' if met else 'missed'})")
            + f". `python -X importtime`, p50 of {imp['main']['n']}: `import main` {ms(imp['main']['p50'])}, "
            f"`import hello` {ms(imp['hello']['p50'])}, empty program {ms(imp['python']['p50'])} "
            f"(main / hello = {times(imp['ratio_main_to_hello'])}); `import main` with bytecode compiled ahead "
            f"{ms(imp['main_precompiled']['p50'])} ({times(imp['ratio_main_precompiled_to_hello'])}). "
            "Own import time `main` spends beyond hello-world, "
            "by package: " + ", ".join(f"`{k}` {v:.0f} ms" for k, v in imp["main_extra_over_hello_ms"].items()) + ".",
        ]
    for variant, v in f["variants"].items():
        if "tasks_client" in v:
            rows += ["", *_tasks_client_rows(variant, v["tasks_client"])]
    return rows


TASKS_CLIENT_LABELS = {
    "grpc": "google-cloud-tasks, gRPC transport (what bgremove/tasks.py uses)",
    "rest": "google-cloud-tasks, REST transport",
    "requests": "plain requests + google-auth AuthorizedSession, grpcio not installed",
    "main without grpc": "nothing (grpcio not installed)",
}


def _tasks_client_rows(variant: str, t: dict[str, Any]) -> list[str]:
    rows = [
        f"**Cloud Tasks client, {variant}** (fresh interpreter, p50 of {t['clients']['grpc']['client_seconds']['n']}):",
        "",
        "| client | start (`import main` + storage client) | grpc imported at start | Cloud Tasks client import + "
        "construction after it | total |",
        "|---|---|---|---|---|",
    ]
    for name, c in t["clients"].items():
        main, client = c["start_seconds"]["p50"], c["client_seconds"]["p50"]
        grpc = "yes" if c["grpc_loaded_at_start"] else "no"
        label = TASKS_CLIENT_LABELS.get(name, name)
        rows.append(f"| {label} | {ms(main)} | {grpc} | {ms(client)} | {ms(main + client)} |")
    rows += [
        "",
        f"Used: **{t['used']}**. {t['why']} What grpc adds to every start: {ms(t['grpc_in_start_seconds'])} "
        f"(fastest start with grpc minus fastest without; `-X importtime` of that start: grpc's own import time "
        f"{t.get('grpc_importtime_ms', 0):.0f} ms).",
    ]
    return rows


def _memory_details(f: dict[str, Any]) -> list[str]:
    rows = [
        "| output | idle RSS | peak RSS (VmHWM) | peak above idle | sampled peak | relay time |",
        "|---|---|---|---|---|---|",
    ]
    for r in [{"output_bytes": 0, **f["warm_up"]}, *f["runs"]]:
        label = "warm-up (real cut-out)" if r["output_bytes"] == 0 else f"{r['output_bytes']:,} B"
        rows.append(
            f"| {label} | {mib(r['idle_rss_bytes'])} | {mib(r['peak_rss_bytes'])} | "
            f"{mib(r['peak_above_idle_bytes'])} | {mib(r['sampled_peak_rss_bytes'])} | {secs(r['seconds'])} |"
        )
    return rows


def _throughput_details(f: dict[str, Any]) -> list[str]:
    rows = [
        "| concurrency | webhooks/s | creates/s (ceiling) | share of ceiling | the webhook's 4 calls made directly/s "
        "| share of that | webhook p50 | create p50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in f["runs"]:
        rows.append(
            f"| {r['concurrency']} | {r['webhooks_per_second']:.1f} | {r['ceiling_creates_per_second']:.1f} | "
            f"{times(r['share_of_ceiling'])} | {r['same_calls_direct_per_second']:.1f} | "
            f"{times(r['share_of_same_calls_direct'])} | {ms(r['webhook_latency_seconds']['p50'])} | "
            f"{ms(r['create_latency_seconds']['p50'])} |"
        )
    return rows


def _variants_details(f: dict[str, Any]) -> list[str]:
    mp = f"{f['large_megapixels']:g} MP"
    w, h = f["photo_size"]
    rows = [
        f"| kind | billed p50 ({w}x{h}) | p95 | vs passthrough | {mp}: webhook time | peak RSS | peak above idle |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, k in f["kinds"].items():
        b, large = k["billed_seconds"], k["large"]
        rows.append(
            f"| {kind} | {ms(b['p50'])} | {ms(b['p95'])} | {times(k['ratio_to_passthrough'])} | "
            f"{secs(large['seconds'])} | {mib(large['peak_rss_bytes'])} | {mib(large['peak_above_idle_bytes'])} |"
        )
    rows += ["", f"| on_upload, {mp} upload | bytes | prepare and submit | peak RSS | peak above idle |"]
    rows.append("|---|---|---|---|---|")
    for kind, u in f["uploads"].items():
        rows.append(
            f"| {kind} | {u['upload_bytes']:,} | {secs(u['seconds'])} | {mib(u['peak_rss_bytes'])} | "
            f"{mib(u['peak_above_idle_bytes'])} |"
        )
    memory = f"webhook {mib(f['webhook_memory_bytes'])}, on_upload {mib(f['upload_memory_bytes'])}"
    rows += ["", f"Memory set in Terraform (infra/modules/pipeline/variables.tf): {memory}."]
    return rows


DETAILS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "billed": _billed_details,
    "latency": _latency_details,
    "coldstart": _coldstart_details,
    "memory": _memory_details,
    "throughput": _throughput_details,
    "variants": _variants_details,
    "bulk": lambda f: _bulk_details(f),
    "calls": lambda f: _calls_details(f),
    "polling": lambda f: _polling_details(f),
    "preferwait": lambda f: _preferwait_details(f),
    "budget": lambda f: _budget_details(f),
}


def headline(results: dict[str, Any]) -> str:
    lines = []
    for key, (title, _) in SUMMARIES.items():
        f = results["figures"].get(key)
        if f is not None:
            lines.append(f"{title}: ratio {times(f.get('ratio'))} — {verdict(f)}".replace("**", ""))
    return "\n".join(lines)


# --- bulk and calls (issue 11) --------------------------------------------------------------------


def _bulk_summary(f: dict[str, Any]) -> str:
    q, d = f["designs"]["queue"], f["designs"]["direct"]
    return (
        f"{f['images']} images at {f['api_creates_per_minute']:g} creates/min (fleet stand-in): billed per image "
        f"queue {dur(q['billed_seconds_per_image'])} vs direct {dur(d['billed_seconds_per_image'])}; invocations "
        f"{num(q['invocations_per_image'])} vs {num(d['invocations_per_image'])}; 429s "
        f"{num(q['throttled_per_image'])} vs {num(d['throttled_per_image'])}; "
        f"wall {q['wall_seconds']:.0f} s vs {d['wall_seconds']:.0f} s "
        f"(ideal {f['ideal_seconds']:.0f} s)"
    )


def _bulk_details(f: dict[str, Any]) -> list[str]:
    q, d = f["designs"]["queue"], f["designs"]["direct"]
    rows = [
        f"**Fleet stand-in, not the model**: each prediction takes `{f['fleet_latency']}` s and returns a small "
        "labelled PNG. "
        f"API: {f['api_creates_per_minute']:g} creates a minute, burst {f['api_create_burst']}; submission queue "
        f"{f['submit_rate_per_second']:g}/s; relay backoff {f['relay_backoff_seconds'][0]:g}–"
        f"{f['relay_backoff_seconds'][1]:g} s; queue retry backoff {f['tasks_backoff_seconds'][0]:g}–"
        f"{f['tasks_backoff_seconds'][1]:g} s; RECONCILE_AFTER_SECONDS {f['reconcile_after_seconds']}.",
        "",
        "| per drop / per image | queue admission | direct submission | direct / queue |",
        "|---|---|---|---|",
    ]
    lines = [
        ("billed function seconds per image", "billed_seconds_per_image", dur),
        ("… each invocation rounded up to 100 ms", "billed_seconds_rounded_per_image", dur),
        ("function invocations per image", "invocations_per_image", num),
        ("429s per image (throttled creates)", "throttled_per_image", num),
        ("predictions created per image", "creates_per_image", num),
        ("wall time, first upload to last job final", "wall_seconds", lambda x: f"{x:.0f} s"),
    ]
    for label, key, fmt in lines:
        rows.append(f"| {label} | {fmt(q[key])} | {fmt(d[key])} | {times(_ratio(d[key], q[key]))} |")
    rows.append(
        f"| completed / failed / lost | {q['completed']} / {sum(q['failed'].values())} / {q['lost']} | "
        f"{d['completed']} / {sum(d['failed'].values())} / {d['lost']} | |"
    )
    rows += ["", "| design | function | invocations per image | billed per image | duration p50 | p95 | answers |"]
    rows.append("|---|---|---|---|---|---|---|")
    for design, x in (("queue", q), ("direct", d)):
        for name, fn in x["by_function"].items():
            spread = fn["duration_seconds"]
            answers = ", ".join(f"{k}: {n}" for k, n in sorted(fn["answers"].items()))
            rows.append(
                f"| {design} | {name} | {num(fn['invocations_per_image'])} | {dur(fn['billed_seconds_per_image'])} | "
                f"{dur(spread['p50']) if spread else '—'} | {dur(spread['p95']) if spread else '—'} | {answers} |"
            )
    attempts = d.get("trigger_attempts_per_event")
    if attempts:
        rows += [
            "",
            f"Direct: deliveries per upload event p50 {attempts['p50']:g}, p95 {attempts['p95']:g}, max "
            f"{attempts['max']:g}; ideal wall time (images ÷ limit) {f['ideal_seconds']:.0f} s.",
        ]
    return rows


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def _calls_summary(f: dict[str, Any]) -> str:
    q, d = f["designs"]["queue"]["total"], f["designs"]["direct"]["total"]
    return (
        f"queue: {q['storage_requests']} storage requests ({q['storage_class_a']} class A, {q['storage_class_b']} "
        f"class B), {q['api_requests']} API call, {q['tasks_calls']} Cloud Tasks calls, "
        f"{q['function_invocations']} invocations; direct: {d['storage_requests']} ({d['storage_class_a']} A, "
        f"{d['storage_class_b']} B), {d['api_requests']}, {d['tasks_calls']}, {d['function_invocations']} (no 429s)"
    )


def _calls_details(f: dict[str, Any]) -> list[str]:
    rows = [
        "| design | function | outcome | storage requests | by operation | API calls | Cloud Tasks calls | "
        "output downloads | seam calls |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for design, x in f["designs"].items():
        for phase, p in x["phases"].items():
            ops = ", ".join(f"{k} {n}" for k, n in p["storage_by_operation"].items())
            seams = ", ".join(f"{k} {n}" for k, n in p["seam_calls"].items())
            rows.append(
                f"| {design} | {phase} | {p['outcome']} | {p['storage_requests']} | {ops} | {p['api_requests']} | "
                f"{p['tasks_calls']} | {p['output_downloads']} | {seams} |"
            )
        t = x["total"]
        rows.append(
            f"| {design} | **per image** | | **{t['storage_requests']}** | class A {t['storage_class_a']}, class B "
            f"{t['storage_class_b']} | **{t['api_requests']}** | **{t['tasks_calls']}** | {t['output_downloads']} | |"
        )
    return rows


# --- lines for the README's Benchmarks table -------------------------------------------------------


def _readme_billed(f: dict[str, Any]) -> tuple[str, str]:
    r = f["runs"][0]
    rest = "; ".join(f"{times(x['ratio'])} at {x['model_latency_seconds']:g} s" for x in f["runs"][1:])
    return (
        "billed function time per image vs a synchronous function that polls the prediction (on_upload + on_task + "
        "webhook + deadline check)",
        f"{ms(r['ours_billed_seconds']['p50'])} vs {secs(r['baseline_billed_seconds']['p50'])}: "
        f"**{times(r['ratio'])}** less at {r['model_latency_seconds']:g} s model latency"
        + (f" ({rest})" if rest else ""),
    )


def _readme_latency(f: dict[str, Any]) -> tuple[str, str]:
    one = f["one_image"]
    hop = one.get("upload_to_task_dispatched_seconds")
    return (
        "overhead latency, upload to cut-out minus the model's time, one image (queue hop included)",
        f"p50 **{ms(one['overhead_seconds']['p50'])}**, p95 {ms(one['overhead_seconds']['p95'])}"
        + (f" (upload → task dispatched {ms(hop['p50'])})" if hop else ""),
    )


def _readme_coldstart(f: dict[str, Any]) -> tuple[str, str]:
    parts = []
    for variant, v in f["variants"].items():
        fn = v["functions"]
        ratios = ", ".join(f"{name} {times(fn[name]['ratio_to_hello'])}" for name in fn if name != "hello")
        parts.append(f"{variant}: {ratios}")
    t = f["variants"].get("production deps", f["variants"]["stack venv"]).get("tasks_client")
    extra = ""
    if t:
        c = t["clients"]
        extra = (
            f"; the Cloud Tasks client at the first enqueue: gRPC {ms(c['grpc']['client_seconds']['p50'])} (used), "
            f"REST {ms(c['rest']['client_seconds']['p50'])}, plain requests "
            f"{ms(c['requests']['client_seconds']['p50'])}; grpc in every start (storage client built) "
            f"{t.get('grpc_importtime_ms', 0):.0f} ms of imports"
        )
    return ("cold start, first answer vs a hello-world function", "; ".join(parts) + extra)


def _readme_memory(f: dict[str, Any]) -> tuple[str, str]:
    small, large = f["runs"][0], f["runs"][-1]
    return (
        "peak RSS relaying a 100 MB output vs a 1 MB one",
        f"{mib(large['peak_rss_bytes'])} vs {mib(small['peak_rss_bytes'])}: **{times(f['ratio'])}**",
    )


def _readme_throughput(f: dict[str, Any]) -> tuple[str, str]:
    r = f["runs"][-1]
    return (
        f"webhooks per second, one instance, concurrency {r['concurrency']}, vs the storage emulator's create rate",
        f"{r['webhooks_per_second']:.0f} vs {r['ceiling_creates_per_second']:.0f}/s: **{times(f['ratio'])}**",
    )


def _readme_bulk(f: dict[str, Any]) -> tuple[str, str]:
    q, d = f["designs"]["queue"], f["designs"]["direct"]
    return (
        f"bulk drop of 10× the per-minute create limit ({f['images']} images at {f['api_creates_per_minute']:g}/min, "
        "fleet stand-in): billed function seconds per image, queue admission vs direct submission",
        f"{dur(q['billed_seconds_per_image'])} vs {dur(d['billed_seconds_per_image'])}: **{times(f['ratio'])}** less; "
        f"invocations {num(q['invocations_per_image'])} vs {num(d['invocations_per_image'])} per image; 429s "
        f"{num(q['throttled_per_image'])} vs {num(d['throttled_per_image'])} per image; "
        f"wall {q['wall_seconds']:.0f} s vs "
        f"{d['wall_seconds']:.0f} s (ideal {f['ideal_seconds']:.0f} s)",
    )


def _readme_calls(f: dict[str, Any]) -> tuple[str, str]:
    q, d = f["designs"]["queue"]["total"], f["designs"]["direct"]["total"]
    return (
        "storage, API and Cloud Tasks calls per image (one small image, no throttling)",
        f"{q['storage_requests']} storage requests ({q['storage_class_a']} class A, {q['storage_class_b']} class B), "
        f"{q['api_requests']} API call, {q['tasks_calls']} Cloud Tasks calls in {q['function_invocations']} "
        f"invocations (direct submission: {d['storage_requests']}, {d['api_requests']}, {d['tasks_calls']} in "
        f"{d['function_invocations']})",
    )


README_LINES: dict[str, Callable[[dict[str, Any]], tuple[str, str]]] = {
    "billed": _readme_billed,
    "latency": _readme_latency,
    "coldstart": _readme_coldstart,
    "memory": _readme_memory,
    "throughput": _readme_throughput,
    "bulk": _readme_bulk,
    "calls": _readme_calls,
    "polling": lambda f: _readme_polling(f),
    "preferwait": lambda f: _readme_preferwait(f),
    "budget": lambda f: _readme_budget(f),
}


def readme_table(results: dict[str, Any]) -> list[str]:
    """The README's Benchmarks table (figure | result | target), from these results."""
    rows = ["| figure | result | target |", "| --- | --- | --- |"]
    for key, line in README_LINES.items():
        f = results["figures"].get(key)
        if f is None or "error" in f:
            continue
        try:
            label, result = line(f)
        except (KeyError, IndexError, TypeError):
            continue
        met = f.get("target_met")
        target = f["target"] + ("" if met is None else ("" if met else ": missed"))
        rows.append(f"| {label} | {result} | {target} |")
    return rows


# --- polling (results without webhooks) -------------------------------------------------------------


def _polling_summary(f: dict[str, Any]) -> str:
    on, off = f["modes"]["webhooks"], f["modes"]["no webhooks"]
    return (
        f"{f['images']} photos at once, real model, RESULT_DELIVERY=auto: p50/p95 upload → completed "
        f"{secs(on['latency_seconds']['p50'])}/{secs(on['latency_seconds']['p95'])} with webhooks, "
        f"{secs(off['latency_seconds']['p50'])}/{secs(off['latency_seconds']['p95'])} without; run time p95 "
        f"{secs(off['run_seconds']['p95'])} (predict_time p50 {secs(off['predict_seconds']['p50'])}); GETs per image "
        f"{num(on['gets_per_image'])} vs {num(off['gets_per_image'])}"
    )


def _polling_details(f: dict[str, Any]) -> list[str]:
    rows = [
        "| per image | webhooks sent | no webhooks (a proxy) |",
        "|---|---|---|",
    ]
    on, off = f["modes"]["webhooks"], f["modes"]["no webhooks"]
    spread = [
        ("upload → completed", "latency_seconds"),
        ("the model's run time (created_at → completed_at)", "run_seconds"),
        ("… of which the model (metrics.predict_time)", "predict_seconds"),
        ("upload → prediction created", "upload_to_created_seconds"),
        ("prediction completed → cut-out written", "completed_to_written_seconds"),
    ]
    for label, key in spread:
        a, b = on[key], off[key]
        rows.append(
            f"| {label}, p50 / p95 / max | {secs(a['p50'])} / {secs(a['p95'])} / {secs(a['max'])} | "
            f"{secs(b['p50'])} / {secs(b['p95'])} / {secs(b['max'])} |"
        )
    for label, key in (
        ("API GETs (result checks)", "gets_per_image"),
        ("creates", "creates_per_image"),
        ("deadline checks (on_task)", "deadline_checks_per_image"),
    ):
        rows.append(f"| {label} | {num(on[key])} | {num(off[key])} |")
    rows.append(f"| most GETs of one image | {on['gets_max']} | {off['gets_max']} |")
    rows.append(f"| completed / images | {on['completed']} / {on['images']} | {off['completed']} / {off['images']} |")
    rows += [
        "",
        f"Without webhooks: p95 {secs(off['latency_seconds']['p95'])} against 2 × run time p95 + 10 s = "
        f"{secs(f['bound_seconds'])}: {'met' if f['latency_target_met'] else '**missed**'}; against 2 × predict_time "
        f"p50 + 10 s = {secs(f['bound_from_predict_time_seconds'])}: "
        f"{'met' if f['latency_target_met_against_predict_time'] else 'missed'}. GETs per image "
        f"{num(off['gets_per_image'])} (at most 4: {'met' if f['gets_target_met'] else '**missed**'}).",
        "",
        "| drop | mode | latency p50 | p95 | run time p95 | GETs | creates | deadline checks |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d in f["drops"]:
        lat, run = d["latency_seconds"], d["run_seconds"]
        rows.append(
            f"| {d['round']} | {d['mode']} | {secs(lat['p50'])} | {secs(lat['p95'])} | {secs(run['p95'])} | "
            f"{d['gets']} | {d['creates']} | {d['deadline_checks']} |"
        )
    return rows


def _readme_polling(f: dict[str, Any]) -> tuple[str, str]:
    on, off = f["modes"]["webhooks"], f["modes"]["no webhooks"]
    return (
        f"results without webhooks: {f['images']} real photos at once (real model, RESULT_DELIVERY=auto), upload → "
        "completed with webhooks never sent vs sent",
        f"p50/p95 {secs(off['latency_seconds']['p50'])}/**{secs(off['latency_seconds']['p95'])}** vs "
        f"{secs(on['latency_seconds']['p50'])}/{secs(on['latency_seconds']['p95'])} (**{times(f['ratio'])}** at p95); "
        f"model run time p95 {secs(off['run_seconds']['p95'])} (bound {secs(f['bound_seconds'])}); GETs per image "
        f"{num(off['gets_per_image'])} vs {num(on['gets_per_image'])}",
    )


# --- Prefer: wait ------------------------------------------------------------------------------------


def _preferwait_summary(f: dict[str, Any]) -> str:
    off, on = f["settings"]["0"], f["settings"]["10"]
    return (
        f"billed per image p50 {ms(on['billed_seconds']['p50'])} with Prefer: wait=10 vs "
        f"{ms(off['billed_seconds']['p50'])} without; upload → completed p50 {secs(on['latency_seconds']['p50'])} vs "
        f"{secs(off['latency_seconds']['p50'])}; model run time p50 {secs(off['run_seconds']['p50'])}"
    )


def _preferwait_details(f: dict[str, Any]) -> list[str]:
    off, on = f["settings"]["0"], f["settings"]["10"]
    rows = ["| per image | PREFER_WAIT_SECONDS=0 (default) | PREFER_WAIT_SECONDS=10 |", "|---|---|---|"]
    for label, key in (
        ("billed, all functions", "billed_seconds"),
        ("… on_task's submission (the create)", "submission_seconds"),
        ("… on_prediction_webhook", "webhook_seconds"),
        ("… on_task's deadline checks", "deadline_check_seconds"),
        ("upload → completed", "latency_seconds"),
        ("the model's run time (created_at → completed_at)", "run_seconds"),
    ):
        a, b = off[key], on[key]
        rows.append(f"| {label}, p50 / p95 | {dur(a['p50'])} / {dur(a['p95'])} | {dur(b['p50'])} / {dur(b['p95'])} |")
    for label, key in (
        ("function invocations", "invocations_per_image"),
        ("deadline checks", "deadline_checks_per_image"),
        ("webhook deliveries", "webhook_deliveries_per_image"),
        ("API GETs", "gets_per_image"),
    ):
        rows.append(f"| {label} | {num(off[key])} | {num(on[key])} |")
    rows += [
        "",
        f"Latency saved by the wait (p50): {ms(f['latency_saved_seconds_p50'])}; billed time per image "
        f"{times(f['ratio'])} (p50).",
    ]
    return rows


def _readme_preferwait(f: dict[str, Any]) -> tuple[str, str]:
    off, on = f["settings"]["0"], f["settings"]["10"]
    return (
        "Prefer: wait=10 vs not asked (PREFER_WAIT_SECONDS), one real photo at a time, real model: billed function "
        "time and latency per image",
        f"billed {ms(on['billed_seconds']['p50'])} vs {ms(off['billed_seconds']['p50'])} (**{times(f['ratio'])}**); "
        f"upload → completed {secs(on['latency_seconds']['p50'])} vs {secs(off['latency_seconds']['p50'])} "
        f"({ms(f['latency_saved_seconds_p50'])} saved); model run time {secs(off['run_seconds']['p50'])} (p50)",
    )


# --- spend budget ------------------------------------------------------------------------------------


def _budget_held(f: dict[str, Any]) -> str:
    held = f["submission_seconds"]["held_dispatch"]
    return f"a held dispatch p50 {ms(held['p50'])}" if held else "no held dispatch recorded"


def _budget_summary(f: dict[str, Any]) -> str:
    s = f["submission_seconds"]
    return (
        f"on_task per submission p50 {ms(s['on']['p50'])} with a budget vs {ms(s['off']['p50'])} without "
        f"({times(f['ratio'])}); {_budget_held(f)}"
    )


def _budget_details(f: dict[str, Any]) -> list[str]:
    s = f["submission_seconds"]
    rows = ["| on_task, per submission dispatch | p50 | p95 | n |", "|---|---|---|---|"]
    for label, key in (
        ("no budget", "off"),
        ("DAILY_PREDICTION_BUDGET set, counted", "on"),
        ("held (429)", "held_dispatch"),
    ):
        v = s[key]
        if v:
            rows.append(f"| {label} | {dur(v['p50'])} | {dur(v['p95'])} | {v['n']} |")
    return rows


def _readme_budget(f: dict[str, Any]) -> tuple[str, str]:
    s = f["submission_seconds"]
    return (
        "spend budget: on_task billed time per submission with DAILY_PREDICTION_BUDGET set vs unset (real model, "
        "one photo at a time), and a held dispatch",
        f"{ms(s['on']['p50'])} vs {ms(s['off']['p50'])} (**{times(f['ratio'])}**, four more storage requests); "
        f"{_budget_held(f)}",
    )
