"""Session fixtures of the offline Terraform checks: tools, parsed files, one checkov run."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra.checks import tfparse
from infra.checks.provider_schema import load_schemas
from infra.checks.tfparse import CHECKOV, INFRA_DIR, REPO_ROOT

MODULE_DIR = "infra/modules/pipeline"
ENV_ROOTS = ("infra/envs/dev", "infra/envs/prod")


def hcl_files() -> list[Path]:
    """Every Terraform file under infra/: .tf and .tfvars."""
    tfvars = [p for p in INFRA_DIR.rglob("*.tfvars") if ".terraform" not in p.parts]
    return sorted(tfparse.tf_files() + tfvars)


@pytest.fixture(scope="session")
def infra_tools() -> None:
    """.venv-hcl, .venv-checkov and the schema wheels, made by setup.sh (fast when present)."""
    try:
        tfparse.run_setup()
    except (tfparse.CheckToolError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"could not set up the infra check tools: {exc}")


@pytest.fixture(scope="session")
def parse_results(infra_tools: None) -> dict[str, dict[str, Any]]:
    """{relative path: {"ok", "body" | "error"}} for every .tf and .tfvars file."""
    return tfparse.parse_files(hcl_files())


@pytest.fixture(scope="session")
def tf(parse_results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Parsed bodies of every file; fails when any file does not parse."""
    broken = {name: r["error"] for name, r in parse_results.items() if not r["ok"]}
    if broken:
        pytest.fail(f"Terraform files that do not parse: {broken}")
    return {name: r["body"] for name, r in parse_results.items()}


@pytest.fixture(scope="session")
def module(tf: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pipeline module's .tf files."""
    found = {name: body for name, body in tf.items() if name.startswith(f"{MODULE_DIR}/") and name.endswith(".tf")}
    assert found, f"no .tf files in {MODULE_DIR}"
    return found


@pytest.fixture(scope="session")
def roots(tf: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{env root: its parsed .tf and .tfvars files}."""
    return {root: {n: b for n, b in tf.items() if n.startswith(f"{root}/")} for root in ENV_ROOTS}


@pytest.fixture(scope="session")
def schemas(infra_tools: None) -> dict[str, dict[str, Any]]:
    return load_schemas()


@pytest.fixture(scope="session")
def checkov_report(infra_tools: None) -> dict[str, Any]:
    """One checkov run over infra/ (the JSON report).

    --quiet is left out on purpose: it drops the skipped checks and the parsing errors from
    the JSON, and the tests read both.
    """
    command = [
        str(CHECKOV),
        "--skip-download",
        "--framework",
        "terraform",
        "-d",
        "infra",
        "--compact",
        "-o",
        "json",
    ]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False, env=env)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"checkov gave no JSON report (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    if isinstance(report, list):  # one entry per framework when several ran
        report = next((r for r in report if r.get("check_type") == "terraform"), {})
    if not report.get("results"):
        pytest.fail(f"checkov found nothing to check in infra/: {report}")
    assert isinstance(report, dict), report
    return report
