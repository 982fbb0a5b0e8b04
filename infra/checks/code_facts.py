"""What the deployed code declares, as Python values: imported or run, never parsed.

- the settings: `bgremove.config.SETTINGS`, the table load_config reads;
- the tasks' dispatch deadline: `bgremove.tasks.DISPATCH_DEADLINE_SECONDS`;
- what the code reads from the environment besides the settings (an offline hook):
  `bgremove.tasks.EMULATOR_HOST_VARIABLE` and `bgremove.events.EMULATOR_HOST_VARIABLE`
  (tests/unit/test_config.py checks there is no other);
- main.py's entry points: main imported in a subprocess with a minimal valid environment, then
  functions_framework's registry read, which its decorators fill as they run;
- the storage event types each event entry point handles (`bgremove.admission.FINALIZED`,
  `bgremove.removal.DELETED` and `ARCHIVED`);
- where each kind of task goes: bgremove.tasks' task makers run on a configuration of marked
  values, so the queue and the URL of every kind name the settings they come from.

A rename in the core then fails here at import, or changes what these return, instead of
silently defeating a source pattern.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from bgremove import admission, config, events, removal, tasks
from bgremove.config import Setting

CODE_ROOT = Path(config.__file__).resolve().parents[1]  # the checkout that holds main.py and bgremove/
HTTP = "http"
CLOUD_EVENT = "cloudevent"
# functions_framework's signature types and the decorators that register them.
DECORATORS = {HTTP: "http", CLOUD_EVENT: "cloud_event", "event": "background event", "typed": "typed"}


def settings() -> tuple[Setting, ...]:
    return config.SETTINGS


def dispatch_deadline_seconds() -> float:
    """Read when called (not at import), so a test can change the constant and see a check fail."""
    return tasks.DISPATCH_DEADLINE_SECONDS


def storage_event_types() -> dict[str, frozenset[str]]:
    """{entry point: the storage event types its code handles (others it ignores)}."""
    return {
        "on_upload": frozenset({admission.FINALIZED}),
        "on_delete": frozenset({removal.DELETED, removal.ARCHIVED}),
    }


def task_routes() -> dict[str, tuple[str, str]]:
    """{task kind: (the setting its queue comes from, the setting its URL comes from)}, read by
    making one task of each kind (bgremove.tasks.submit_task, deadline_task, notify_task) on a
    configuration whose every queue and URL is a marked value ("?" when none matches)."""
    marked = {s.env: f"mark-{s.field}" for s in settings() if s.required}
    queues = {
        s.env: f"projects/p/locations/l/queues/mark-{s.field.replace('_', '-')}"
        for s in settings()
        if s.kind == "queue"
    }
    urls = {s.env: f"https://mark-{s.field.replace('_', '-')}.example" for s in settings() if s.kind == "url"}
    environ = marked | queues | urls
    environ |= {s.env: "whsec_bWFyaw==" for s in settings() if s.kind == "signing_secrets" or s.env == "NOTIFY_SECRET"}
    cfg = config.load_config(environ)
    made = {
        tasks.Kind.SUBMIT: tasks.submit_task("job", "task", cfg),
        tasks.Kind.DEADLINE: tasks.deadline_task("job", "task", 0.0, cfg),
        tasks.Kind.NOTIFY: tasks.notify_task("job", "task", {}, cfg),
    }
    by_value = {value: name for name, value in environ.items()}
    return {kind.value: (by_value.get(task.queue, "?"), by_value.get(task.url, "?")) for kind, task in made.items()}


def offline_variables() -> dict[str, str]:
    """{variable: the file that reads it}: what the code reads from os.environ outside config.py."""
    return {
        tasks.EMULATOR_HOST_VARIABLE: _source_file(tasks),
        events.EMULATOR_HOST_VARIABLE: _source_file(events),
    }


def _source_file(module: ModuleType) -> str:
    return Path(str(module.__file__)).resolve().relative_to(CODE_ROOT).as_posix()


@dataclass(frozen=True)
class EntryPoints:
    """main.py as functions_framework sees it once imported."""

    functions: frozenset[str]  # the functions main.py defines at top level
    signatures: Mapping[str, str]  # functions_framework's registry: function name -> signature type


class EntryPointsError(RuntimeError):
    """main.py could not be imported."""


# Run in the subprocess: import the file as `main`, as functions_framework does, and write what it defines.
_PROBE = """
import importlib.util, json, sys, types
spec = importlib.util.spec_from_file_location("main", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["main"] = module
spec.loader.exec_module(module)
from functions_framework import _function_registry
functions = [n for n, v in vars(module).items() if isinstance(v, types.FunctionType) and v.__module__ == "main"]
with open(sys.argv[2], "w", encoding="utf-8") as out:
    json.dump({"functions": functions, "signatures": dict(_function_registry.REGISTRY_MAP)}, out)
"""


def entry_points(main_path: Path = CODE_ROOT / "main.py", timeout: float = 120) -> EntryPoints | None:
    """The entry points of main_path (None when it does not exist); EntryPointsError when it does not import.

    The subprocess gets only the required settings (placeholders: main reads the configuration at
    import, and nothing is called) and the checkout on its path, so nothing of the caller's
    environment (emulator hosts, credentials) changes what main does at import.
    """
    if not main_path.exists():
        return None
    environment = {s.env: f"entry-point-probe-{s.field}" for s in settings() if s.required}
    environment |= {
        "PYTHONPATH": str(CODE_ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        # gRPC's fork hook can hang a child of a process that loaded grpc (grpc/grpc#37259).
        "GRPC_ENABLE_FORK_SUPPORT": "false",
    }
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "entry_points.json"
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, str(main_path), str(out)],
            cwd=CODE_ROOT,
            env=environment | {"PATH": os.environ.get("PATH", "")},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0 or not out.exists():
            raise EntryPointsError(f"importing {main_path.name} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        found = json.loads(out.read_text(encoding="utf-8"))
    return EntryPoints(frozenset(found["functions"]), dict(found["signatures"]))
