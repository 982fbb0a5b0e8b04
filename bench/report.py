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


def times(value: float | None) -> str:
    return "—" if value is None else f"{value:g}×"


def verdict(figure: dict[str, Any]) -> str:
    if "error" in figure:
        return "error"
    met = figure.get("target_met")
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
        out += DETAILS[key](f)
        for note in f.get("notes", []):
            out += ["", note]
    return "\n".join(out) + "\n"


def _billed_details(f: dict[str, Any]) -> list[str]:
    rows = [
        "| model latency | ours p50 (trigger + webhook) | ours p95 | baseline p50 | baseline p95 | ratio (p50) |",
        "|---|---|---|---|---|---|",
    ]
    for r in f["runs"]:
        o, b = r["ours_billed_seconds"], r["baseline_billed_seconds"]
        rows.append(
            f"| {r['model_latency_seconds']:g} s | {ms(o['p50'])} ({ms(r['ours_trigger_seconds']['p50'])} + "
            f"{ms(r['ours_webhook_seconds']['p50'])}) | {ms(o['p95'])} | {secs(b['p50'])} | {secs(b['p95'])} | "
            f"{times(r['ratio'])} |"
        )
    return rows


def _latency_details(f: dict[str, Any]) -> list[str]:
    labels = [
        ("overhead_seconds", "overhead (end to end − predict_time)"),
        ("upload_to_created_seconds", "upload → prediction created (relay + trigger)"),
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
}


def headline(results: dict[str, Any]) -> str:
    lines = []
    for key, (title, _) in SUMMARIES.items():
        f = results["figures"].get(key)
        if f is not None:
            lines.append(f"{title}: ratio {times(f.get('ratio'))} — {verdict(f)}".replace("**", ""))
    return "\n".join(lines)
