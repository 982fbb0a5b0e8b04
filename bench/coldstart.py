"""Figure 3: cold start — process start to first answered request, for each pipeline function and
for a hello-world function started the same way (`functions-framework --target T --source S`, the
stack's function environment, one gunicorn worker). Repetitions rotate the order of the three.

Two moments are timed from the spawn: the first HTTP answer of any kind (a GET: the code is
imported and the server accepts requests), and the first *real* request answered (for the
pipeline's functions that is the first request that touches Cloud Storage, whose client the code
imports and builds lazily; for hello-world it is the same GET).

Also `python -X importtime -c "import main"`: the sum of the cumulative times of the top-level
imports, against the same for the hello-world module and for an empty program.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from bench import common, runtime_venv
from offline_cloud.client import cloud_event_headers, webhook_headers
from offline_cloud.stack import ROOT

MAIN = ROOT / "main.py"
TARGETS = (
    ("hello", common.BENCH_DIR / "hello.py"),
    ("on_upload", MAIN),
    ("on_prediction_webhook", MAIN),
)
TARGET_RATIO = 1.3


def run(ctx: common.Context) -> dict[str, Any]:
    info = ctx.info
    reps = 1 if ctx.quick else 9
    source = deployed_copy(ctx.work_dir / "deployed-source", compiled=False)
    compiled = deployed_copy(ctx.work_dir / "deployed-compiled", compiled=True)
    # As on a fresh instance: the deployed files only, compiled at import, nothing written back.
    env = {**common.function_env(info), "PYTHONPATH": str(source), "PYTHONDONTWRITEBYTECODE": "1"}
    targets = [(t, source / "main.py" if s == MAIN else s) for t, s in TARGETS]
    variants = {"stack venv": Path(sys.executable).parent}
    notes = []
    try:
        runtime = runtime_venv.python(build=not ctx.quick)
    except (OSError, subprocess.CalledProcessError) as exc:
        runtime = None
        notes.append(
            f"The production-dependencies venv could not be built ({exc}); only the stack's venv was measured."
        )
    if runtime is not None:
        variants["production deps"] = runtime.parent
    samples: dict[str, dict[str, list[dict[str, float]]]] = {v: {t: [] for t, _ in targets} for v in variants}
    ctx.log(f"cold start: {reps} repetition(s) of {len(TARGETS)} functions in {', '.join(variants)}")
    for rep in range(reps):
        shift = rep % len(targets)
        for variant, bin_dir in variants.items():
            for target, path in targets[shift:] + targets[:shift]:
                samples[variant][target].append(_cold_start(info, target, path, env, bin_dir, ctx))

    ctx.log("cold start: python -X importtime")
    results = {}
    for variant, bin_dir in variants.items():
        imports = _importtime(env, bin_dir / "python", source, compiled, 1 if ctx.quick else 7)
        results[variant] = _variant(samples[variant], imports)
        results[variant]["target_met"] = None if ctx.quick else results[variant]["ratio"] <= TARGET_RATIO
    primary = results["stack venv"]
    return {
        "title": "Cold start (process start to first answered request)",
        "unit": "seconds",
        "method": (
            "Spawn functions-framework with the stack's function environment and poll GET / every 5 ms until any "
            "HTTP answer; then send one real request. Ratio = p50 first answer / hello-world p50 first answer. "
            "The pipeline runs from a copy of exactly what the deployment archive holds (main.py and bgremove/, "
            "no bytecode) with PYTHONDONTWRITEBYTECODE=1, so every start compiles it as a fresh instance would. "
            "Measured in the stack's venv (as the stack runs the functions) and, where built, in a venv with "
            "requirements.txt only (as Cloud Functions installs them: no grpc)."
        ),
        "repetitions": reps,
        "variants": results,
        "ratio": primary["ratio"],
        "target": f"each pipeline function within {TARGET_RATIO}x of hello-world (first answer, p50)",
        "target_met": primary["target_met"],
        "notes": notes,
        "samples": samples,
    }


def _variant(samples: dict[str, list[dict[str, float]]], imports: dict[str, Any]) -> dict[str, Any]:
    hello_first = common.summary(s["first_answer_seconds"] for s in samples["hello"])
    functions: dict[str, Any] = {}
    for target, _ in TARGETS:
        first = common.summary(s["first_answer_seconds"] for s in samples[target])
        real = common.summary(s["first_real_request_seconds"] for s in samples[target])
        functions[target] = {
            "first_answer_seconds": first,
            "first_real_request_seconds": real,
            "ratio_to_hello": common.ratio(first["p50"], hello_first["p50"]),
            "real_request_ratio_to_hello": common.ratio(real["p50"], hello_first["p50"]),
            # Load on the machine only ever adds time: the fastest starts are the least disturbed.
            "ratio_of_fastest_to_hello": common.ratio(first["min"], hello_first["min"]),
        }
    worst = max(functions[t]["ratio_to_hello"] or 0.0 for t in ("on_upload", "on_prediction_webhook"))
    return {"functions": functions, "importtime": imports, "ratio": worst}


def _cold_start(
    info: common.StackInfo, target: str, source: Any, env: dict[str, str], bin_dir: Path, ctx: common.Context
) -> dict[str, float]:
    port = common.port()
    url = f"http://127.0.0.1:{port}/"
    began = time.perf_counter()
    log = ctx.work_dir / f"coldstart-{target}.log"
    proc = common.start_function(target, source, env, port, log, bin_dir / "functions-framework")
    try:
        common.wait_http(url, proc, timeout=60, interval=0.005)
        first = time.perf_counter() - began
        response = _real_request(info, target, url)
        real = time.perf_counter() - began
        expected = {"hello": 200, "on_upload": 200, "on_prediction_webhook": 404}[target]
        if response.status_code != expected:
            raise RuntimeError(f"{target}: first real request answered {response.status_code}: {response.text[:200]}")
    finally:
        common.stop_process(proc)
    return {"first_answer_seconds": round(first, 4), "first_real_request_seconds": round(real, 4)}


def _real_request(info: common.StackInfo, target: str, url: str) -> requests.Response:
    if target == "on_upload":
        # An upload event for an object that is not there: claims a job, reads storage, records a failure.
        name = f"bench/coldstart/{uuid.uuid4().hex}.jpg"
        data = {"bucket": info.upload_bucket, "name": name, "generation": "1", "contentType": "image/jpeg", "size": "1"}
        headers = cloud_event_headers(uuid.uuid4().hex, info.upload_bucket, name)
        return requests.post(url, data=json.dumps(data), headers=headers, timeout=30)
    if target == "on_prediction_webhook":
        # A signed completion for a job that does not exist: verifies, reads storage, answers 404.
        body = json.dumps(
            {"id": "benchcoldstart", "status": "succeeded", "webhook": f"{info.webhook_url}?job={'0' * 64}"}
        ).encode()
        return requests.post(url, data=body, headers=webhook_headers(info.webhook_secret, body, "msg_c"), timeout=30)
    return requests.get(url, timeout=30)


def _importtime(env: dict[str, str], python: Path, source: Path, compiled: Path, reps: int) -> dict[str, Any]:
    programs = {
        "main": ("import main", source),
        "main_precompiled": ("import main", compiled),
        "hello": ("import hello", common.BENCH_DIR),
        "python": ("pass", common.BENCH_DIR),
    }
    totals: dict[str, list[float]] = {name: [] for name in programs}
    packages: dict[str, dict[str, list[float]]] = {"main": {}, "hello": {}}
    for _ in range(reps):
        for name, (code, path) in programs.items():
            done = subprocess.run(
                [str(python), "-X", "importtime", "-c", code],
                cwd=path,
                env={**env, "PYTHONPATH": str(path)},
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise RuntimeError(f"importtime of {code!r} failed: {done.stderr[-500:]}")
            entries = _parse(done.stderr)
            totals[name].append(sum(cumulative for level, _, _, cumulative in entries if level == 0) / 1e6)
            if name in packages:
                by_package: dict[str, float] = {}
                for _, module, own, _ in entries:
                    top = module.split(".")[0]
                    by_package[top] = by_package.get(top, 0.0) + own
                for top, own in by_package.items():
                    packages[name].setdefault(top, []).append(own)
    result: dict[str, Any] = {name: common.summary(values) for name, values in totals.items()}
    result["unit"] = "seconds (sum of the cumulative time of top-level imports)"
    result["ratio_main_to_hello"] = common.ratio(result["main"]["p50"], result["hello"]["p50"])
    result["ratio_main_precompiled_to_hello"] = common.ratio(result["main_precompiled"]["p50"], result["hello"]["p50"])
    # Where main's extra time goes: own import time per top-level package, p50 over the repetitions,
    # less what the hello-world import spends on the same package.
    extra = {}
    for top, values in packages["main"].items():
        spent = common.percentile(values, 50) - common.percentile(packages["hello"].get(top, [0.0]), 50)
        if spent > 0:
            extra[top] = spent
    result["main_extra_over_hello_ms"] = {
        top: round(us / 1000, 1) for top, us in sorted(extra.items(), key=lambda e: e[1], reverse=True)[:10]
    }
    return result


def deployed_copy(directory: Path, compiled: bool) -> Path:
    """The files the deployment archive holds (main.py and bgremove/, no bytecode), optionally compiled."""
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "bgremove").mkdir(parents=True)
    shutil.copy2(MAIN, directory / "main.py")
    for path in (ROOT / "bgremove").glob("*.py"):
        shutil.copy2(path, directory / "bgremove" / path.name)
    if compiled:
        import compileall

        if not compileall.compile_dir(directory, quiet=1):
            raise RuntimeError(f"could not compile {directory}")
    return directory


def _parse(stderr: str) -> list[tuple[int, str, float, float]]:
    """(nesting level, module, own µs, cumulative µs) for each line of `-X importtime` output."""
    entries = []
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.split("|")
        own = parts[0].removeprefix("import time:").strip()
        if len(parts) != 3 or not own.isdigit():
            continue  # the header line
        name = parts[2][1:]
        level = (len(name) - len(name.lstrip(" "))) // 2
        entries.append((level, name.strip(), float(own), float(parts[1])))
    return entries
