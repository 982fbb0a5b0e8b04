"""Figure 3: cold start — process start to first answered request, for each pipeline function and
for a hello-world function started the same way (`functions-framework --target T --source S`, the
stack's function environment, one gunicorn worker). Repetitions rotate the order of the three.

Two moments are timed from the spawn: the first HTTP answer of any kind (a GET: the code is
imported and the server accepts requests), and the first *real* request answered (for the
pipeline's functions that is the first request that touches Cloud Storage, whose client the code
imports and builds lazily; for hello-world it is the same GET).

Also `python -X importtime -c "import main"`: the sum of the cumulative times of the top-level
imports, against the same for the hello-world module and for an empty program.

And what the Cloud Tasks client costs, side by side, in fresh interpreters that have already done
what every function does before its first enqueue — `import main` and build the storage client
(`runtime.objects_for`) — : the client the code uses (bgremove/tasks.py: google-cloud-tasks over
gRPC, built as `CloudTasksQueue._tasks()` builds it), the same library over its REST transport, and
a plain HTTP call through google-auth's AuthorizedSession (what a hand-written REST call would need).
Installing google-cloud-tasks installs grpcio, and google-api-core imports grpc whenever it is
installed, so every function then imports grpc at start (even the webhook, which never enqueues):
that start is also timed with grpc hidden, as it would run if grpcio were not installed.
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
from offline_cloud.stack import ROOT, StackInfo

MAIN = ROOT / "main.py"
TARGETS = (
    ("hello", common.BENCH_DIR / "hello.py"),
    ("on_upload", MAIN),
    ("on_prediction_webhook", MAIN),
    ("on_task", MAIN),
)
PIPELINE = ("on_upload", "on_prediction_webhook", "on_task")
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
        tasks_client = _tasks_client(env, bin_dir / "python", source, 1 if ctx.quick else 7)
        tasks_client["grpc_importtime_ms"] = imports["grpc_with_storage_client_ms"]
        results[variant]["tasks_client"] = tasks_client
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
            "requirements.txt only (as Cloud Functions installs them; since google-cloud-tasks, grpcio too)."
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
    worst = max(functions[t]["ratio_to_hello"] or 0.0 for t in PIPELINE)
    return {"functions": functions, "importtime": imports, "ratio": worst}


def _cold_start(
    info: StackInfo, target: str, source: Path, env: dict[str, str], bin_dir: Path, ctx: common.Context
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
        expected = {"hello": 200, "on_upload": 200, "on_prediction_webhook": 404, "on_task": 200}[target]
        if response.status_code != expected:
            raise RuntimeError(f"{target}: first real request answered {response.status_code}: {response.text[:200]}")
    finally:
        common.stop_process(proc)
    return {"first_answer_seconds": round(first, 4), "first_real_request_seconds": round(real, 4)}


def _real_request(info: StackInfo, target: str, url: str) -> requests.Response:
    if target == "on_upload":
        # An upload event for an object that is not there: claims a job, reads storage, records a failure.
        name = f"bench/coldstart/{uuid.uuid4().hex}.jpg"
        data = {"bucket": info.upload_bucket, "name": name, "generation": "1", "contentType": "image/jpeg", "size": "1"}
        headers = cloud_event_headers(uuid.uuid4().hex, info.upload_bucket, name)
        return requests.post(url, data=json.dumps(data), headers=headers, timeout=30)
    if target == "on_task":
        # A submission task for a job that does not exist: reads storage, answers 200 (ignored).
        task = json.dumps({"kind": "submit", "job_id": "0" * 64})
        headers = {"Content-Type": "application/json", "X-CloudTasks-TaskRetryCount": "0"}
        return requests.post(url, data=task, headers=headers, timeout=30)
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
        # A start as the Cloud Tasks figures count it: grpc comes with the storage client (google-api-core).
        "main_storage_client": (_START, source),
        "hello": ("import hello", common.BENCH_DIR),
        "python": ("pass", common.BENCH_DIR),
    }
    totals: dict[str, list[float]] = {name: [] for name in programs}
    packages: dict[str, dict[str, list[float]]] = {"main": {}, "hello": {}, "main_storage_client": {}}
    for _ in range(reps):
        for name, (code, path) in programs.items():
            done = _python(python, ["-X", "importtime", "-c", code], path, env, f"importtime of {code!r}")
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
    grpc = packages["main_storage_client"].get("grpc", [0.0])
    result["grpc_with_storage_client_ms"] = round(common.percentile(grpc, 50) / 1000, 1)
    return result


# What every function does before its first enqueue: import main, build the storage client.
_START = "import main\nfrom bgremove import runtime\nruntime.objects_for(runtime.config())"
# Each program runs after that start in a fresh interpreter and prints what it measured.
_TASKS_PROGRAM = """
import json, sys, time
if {hide_grpc}:
    sys.modules["grpc"] = None  # as if grpcio were not installed: google-api-core then skips it
t0 = time.perf_counter()
{start}
t1 = time.perf_counter()
loaded = "grpc" in sys.modules and sys.modules["grpc"] is not None
{client}
t2 = time.perf_counter()
print(json.dumps({{"main": t1 - t0, "client": t2 - t1, "grpc_loaded_by_main": loaded}}))
"""
TASKS_CLIENTS = {
    # What bgremove/tasks.py does (CLOUD_TASKS_EMULATOR_HOST is set in the function environment).
    "grpc": ("False", "from bgremove import tasks\ntasks.CloudTasksQueue('')._tasks()"),
    "rest": (
        "False",
        "from google.auth.credentials import AnonymousCredentials\n"
        "from google.cloud import tasks_v2\n"
        "tasks_v2.CloudTasksClient(credentials=AnonymousCredentials(), transport='rest',"
        " client_options={'api_endpoint': 'http://127.0.0.1:9'})",
    ),
    # A hand-written POST to cloudtasks.googleapis.com needs only what the storage client brought.
    "requests": (
        "True",
        "import requests\nimport google.auth.transport.requests as gtr\n"
        "from google.auth.credentials import AnonymousCredentials\ngtr.AuthorizedSession(AnonymousCredentials())",
    ),
    "main without grpc": ("True", "pass"),
}


def _python(
    python: Path, args: list[str], path: Path, env: dict[str, str], what: str
) -> subprocess.CompletedProcess[str]:
    """Run `python args` in `path` with it on PYTHONPATH; a failure raises with its stderr's tail."""
    done = subprocess.run(
        [str(python), *args], cwd=path, env={**env, "PYTHONPATH": str(path)}, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr[-800:]}")
    return done


def _tasks_client(env: dict[str, str], python: Path, source: Path, reps: int) -> dict[str, Any]:
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in TASKS_CLIENTS}
    for _ in range(reps):
        for name, (hide, client) in TASKS_CLIENTS.items():
            program = _TASKS_PROGRAM.format(hide_grpc=hide, start=_START, client=client)
            done = _python(python, ["-c", program], source, env, f"tasks client {name!r}")
            samples[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    out: dict[str, Any] = {}
    for name, runs in samples.items():
        out[name] = {
            "start_seconds": common.summary(r["main"] for r in runs),
            "client_seconds": common.summary(r["client"] for r in runs),
            "grpc_loaded_at_start": runs[0]["grpc_loaded_by_main"],
        }
    # Load on the machine only adds time: the difference of the fastest starts is the least disturbed.
    with_grpc = out["grpc"]["start_seconds"]["min"]
    without = out["main without grpc"]["start_seconds"]["min"]
    return {
        "unit": "seconds; start = import main + the storage client built, client = what follows",
        "clients": out,
        "used": "grpc",
        "grpc_in_start_seconds": round(with_grpc - without, 4),
        "why": (
            "bgremove/tasks.py uses google-cloud-tasks over gRPC: the offline emulator speaks the Cloud Tasks v2 "
            "gRPC API, the library maps ALREADY_EXISTS (name deduplication) to a typed exception, and grpcio is "
            "installed by google-cloud-tasks whichever transport is chosen, so REST saves no import; only a "
            "hand-written REST call (no google-cloud-tasks, no grpcio) would take grpc out of every cold start."
        ),
    }


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
