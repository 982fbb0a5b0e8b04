"""Where the command points, and with which settings.

Three sources, one result: the pipeline's settings as the functions read them (the same
environment variables, parsed by `bgremove.config.load_config`), plus the emulator endpoints when
the target is offline.

- `--stack PATH` (the offline stack): `stack.json`'s `function_env`, the very environment the
  stack's functions run with; STORAGE_EMULATOR_HOST and CLOUD_TASKS_EMULATOR_HOST are set in this
  process, so the unmodified Google clients talk to the emulators without credentials.
- `--env NAME` (a Terraform environment): `terraform -chdir=infra/envs/NAME output -json` gives the
  buckets, queues, task handler URL and the tasks' OIDC account; every other setting (filters,
  MODEL_VERSION …) comes from the environment, with config.py's defaults.
- neither: the environment alone (UPLOAD_BUCKET, PROCESSED_BUCKET, STATE_BUCKET, SUBMIT_QUEUE,
  DEADLINE_QUEUE, TASK_HANDLER_URL, TASKS_SERVICE_ACCOUNT …), with Application Default Credentials.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bgremove_cli.failures import CliError

ROOT = Path(__file__).resolve().parent.parent
STORAGE_EMULATOR = "STORAGE_EMULATOR_HOST"
TASKS_EMULATOR = "CLOUD_TASKS_EMULATOR_HOST"

# Terraform outputs (infra/envs/*/outputs.tf) -> the variables the functions read.
TERRAFORM_OUTPUTS: dict[str, tuple[str, ...]] = {
    "UPLOAD_BUCKET": ("uploads_bucket",),
    "PROCESSED_BUCKET": ("processed_bucket",),
    "STATE_BUCKET": ("state_bucket",),
    "SUBMIT_QUEUE": ("queue_ids", "submit"),
    "DEADLINE_QUEUE": ("queue_ids", "deadline"),
    "TASK_HANDLER_URL": ("task_handler_url",),
    "TASKS_SERVICE_ACCOUNT": ("service_accounts", "tasks_invoker"),
    "WEBHOOK_URL": ("webhook_url",),
}


@dataclass(frozen=True)
class Target:
    label: str  # what the screen says it is talking to
    env: Mapping[str, str]  # the pipeline's settings, as the functions read them
    offline: bool = False
    storage_host: str = ""  # the storage emulator's URL, offline
    tasks_host: str = ""  # the Cloud Tasks emulator's host:port, offline
    project: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def activate(self) -> None:
        """Point the Google clients of this process at the target's endpoints."""
        if self.offline:
            os.environ[STORAGE_EMULATOR] = self.storage_host
            os.environ[TASKS_EMULATOR] = self.tasks_host


def from_stack(path: Path) -> Target:
    """The offline stack described by `path` (`.stack/stack.json`, written by `make stack`)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CliError(f"no stack file at {path}: start the offline stack with `make stack` (it writes it)") from None
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read the stack file {path}: {exc}") from None
    if not isinstance(data, dict) or "function_env" not in data or "storage_emulator_host" not in data:
        raise CliError(f"{path} is not a stack file written by `make stack` (no function_env)")
    env = {str(k): str(v) for k, v in dict(data["function_env"]).items()}
    tasks_host = env.get(TASKS_EMULATOR) or str(data.get("tasks_endpoint", ""))
    return Target(
        label=f"offline stack ({path})",
        env=env,
        offline=True,
        storage_host=str(data["storage_emulator_host"]),
        tasks_host=tasks_host,
        project=env.get("GOOGLE_CLOUD_PROJECT", "offline-project"),
        extra={"stack_file": str(path), "tasks_admin_url": data.get("tasks_admin_url", "")},
    )


def from_terraform(name: str, environ: Mapping[str, str] | None = None) -> Target:
    """A deployed environment: `terraform output -json` of infra/envs/NAME (or of the directory NAME)."""
    environ = os.environ if environ is None else environ
    directory = Path(name) if "/" in name else ROOT / "infra" / "envs" / name
    if not directory.is_dir():
        raise CliError(f"no Terraform environment {name!r} (looked for {directory})", status=2)
    terraform = shutil.which("terraform")
    if terraform is None:
        raise CliError("--env needs terraform on PATH; without it, set the pipeline's variables (UPLOAD_BUCKET …)")
    try:
        answer = subprocess.run(
            [terraform, f"-chdir={directory}", "output", "-json", "-no-color"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CliError(f"terraform output failed in {directory}: {exc}") from None
    if answer.returncode != 0:
        raise CliError(f"terraform output failed in {directory}: {terraform_error(answer.stderr, answer.returncode)}")
    try:
        outputs = json.loads(answer.stdout or "{}")
    except ValueError:
        raise CliError(f"terraform output in {directory} did not print JSON") from None
    values = terraform_settings(outputs)
    if "UPLOAD_BUCKET" not in values:
        raise CliError(
            f"terraform has no outputs for {directory} (not deployed yet, or not initialised: make plan ENV={name})"
        )
    env = {**environ, **values}
    project = _project_of(env)
    return Target(label=f"Terraform environment {name} ({project or 'project unknown'})", env=env, project=project)


def terraform_error(stderr: str, returncode: int) -> str:
    """The line of terraform's complaint that says what is wrong (`Error: ...`)."""
    lines = [line.strip(" │╵╷\t") for line in stderr.splitlines()]
    errors = [line for line in lines if line.startswith("Error:")]
    if errors:
        return errors[0]
    rest = [line for line in lines if line and not line.startswith("Warning:")]
    return rest[-1] if rest else f"exit status {returncode}"


def terraform_settings(outputs: Mapping[str, Any]) -> dict[str, str]:
    """The pipeline variables found in `terraform output -json`'s answer."""
    values: dict[str, str] = {}
    for variable, path in TERRAFORM_OUTPUTS.items():
        node: Any = outputs.get(path[0])
        node = node.get("value") if isinstance(node, dict) and "value" in node else None
        for key in path[1:]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, str) and node:
            values[variable] = node
    return values


def from_environment(environ: Mapping[str, str] | None = None) -> Target:
    env = dict(os.environ if environ is None else environ)
    project = _project_of(env)
    where = "environment variables"
    if env.get(STORAGE_EMULATOR):
        where += f", storage at {env[STORAGE_EMULATOR]}"
    return Target(label=f"{where} ({project or 'project from credentials'})", env=env, project=project)


def _project_of(env: Mapping[str, str]) -> str:
    for variable in ("SUBMIT_QUEUE", "DEADLINE_QUEUE"):
        parts = env.get(variable, "").split("/")
        if len(parts) >= 2 and parts[0] == "projects":
            return parts[1]
    return env.get("GOOGLE_CLOUD_PROJECT", "")
