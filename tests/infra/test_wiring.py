"""The Terraform deploys what the code expects: entry points, environment, runtime, archive, access."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from infra.checks import wiring
from infra.checks.tfparse import REPO_ROOT

EXPECTED_ENTRY_POINTS = {"on_upload": "cloud_event", "on_prediction_webhook": "http", "reconcile": "http"}


def read(path: str) -> str | None:
    file = REPO_ROOT / path
    return file.read_text(encoding="utf-8") if file.exists() else None


def project_python() -> tuple[int, int]:
    """The project's Python: pyproject's requires-python lower bound, else this interpreter."""
    text = read("pyproject.toml")
    if text:
        spec = tomllib.loads(text).get("project", {}).get("requires-python", "")
        match = re.search(r">=\s*(\d+)\.(\d+)", spec)
        if match:
            return int(match.group(1)), int(match.group(2))
    return sys.version_info[0], sys.version_info[1]


def deployed_sources() -> dict[str, str]:
    sources = {"main.py": read("main.py") or ""}
    for path in sorted((REPO_ROOT / "bgremove").rglob("*.py")):
        sources[path.relative_to(REPO_ROOT).as_posix()] = path.read_text(encoding="utf-8")
    return sources


@pytest.fixture(scope="module")
def functions(module: dict[str, dict[str, Any]]) -> list[wiring.TfFunction]:
    found = wiring.tf_functions(module)
    assert found, "the module defines no cloud functions"
    return found


@pytest.fixture(scope="module")
def reads() -> dict[str, wiring.EnvRead]:
    source = read("bgremove/config.py")
    assert source is not None, "bgremove/config.py is missing"
    found = wiring.config_env_reads(source)
    assert {"UPLOAD_BUCKET", "WEBHOOK_SECRETS", "LOG_LEVEL"} <= set(found), "config.py reads were not found"
    return found


def test_the_three_functions(functions: list[wiring.TfFunction]) -> None:
    by_entry = {fn.entry_point: fn for fn in functions}
    assert set(by_entry) == set(EXPECTED_ENTRY_POINTS)
    assert by_entry["on_upload"].event_trigger is not None
    assert by_entry["on_prediction_webhook"].event_trigger is None
    assert by_entry["reconcile"].event_trigger is None


def test_entry_points_exist_with_the_right_decorator(functions: list[wiring.TfFunction]) -> None:
    assert wiring.check_entry_points(functions, read("main.py")) == []


def test_runtime_matches_the_project_python(functions: list[wiring.TfFunction]) -> None:
    assert project_python() == sys.version_info[:2], "tests must run on the project's Python"
    assert wiring.check_runtime(functions, project_python()) == []


def test_environment_read_equals_environment_set(
    reads: dict[str, wiring.EnvRead], functions: list[wiring.TfFunction]
) -> None:
    assert wiring.check_environment(reads, functions) == []


def test_secrets_go_only_where_needed(functions: list[wiring.TfFunction]) -> None:
    secrets = {fn.entry_point: set(fn.secret_env) for fn in functions}
    assert secrets == {
        "on_upload": {"PREDICTIONS_API_TOKEN"},
        "on_prediction_webhook": {"WEBHOOK_SECRETS"},
        "reconcile": {"PREDICTIONS_API_TOKEN"},
    }


def test_settings_are_module_variables_with_config_defaults(
    reads: dict[str, wiring.EnvRead], functions: list[wiring.TfFunction], module: dict[str, dict[str, Any]]
) -> None:
    assert wiring.check_settings(reads, functions, wiring.module_variables(module)) == []


def test_webhook_url_points_at_the_webhook_function(functions: list[wiring.TfFunction]) -> None:
    for fn in functions:
        if fn.entry_point == "on_prediction_webhook":
            assert "WEBHOOK_URL" not in fn.env, "the webhook function cannot know its own URL (cycle)"
        else:
            assert fn.env["WEBHOOK_URL"] == "google_cloudfunctions2_function.webhook.service_config[0].uri"


def test_source_archive_holds_only_the_function_code(module: dict[str, dict[str, Any]]) -> None:
    assert wiring.check_source_archive(module, REPO_ROOT) == []
    deployed = wiring.simulate_fileset(REPO_ROOT, ["main.py", "requirements.txt", "bgremove/**"])
    assert {path.split("/", 1)[0] for path in deployed} <= {"main.py", "requirements.txt", "bgremove"}


def test_imports_resolve_to_requirements() -> None:
    assert wiring.check_imports(deployed_sources(), read("requirements.txt")) == []


def test_triggers_and_invokers(module: dict[str, dict[str, Any]], functions: list[wiring.TfFunction]) -> None:
    assert wiring.check_access(module, functions) == []


def test_module_reads_config_from_ast_not_a_list(reads: dict[str, wiring.EnvRead]) -> None:
    # A sample of what the AST finds, with evaluated defaults (1024 * 1024 and the like).
    assert reads["WEBHOOK_MAX_BODY_BYTES"].default == 1024 * 1024
    assert reads["UPLOAD_BUCKET"].required
    assert "names" in reads["ALLOWED_CONTENT_TYPES"].readers
    assert Path(REPO_ROOT / "bgremove" / "config.py").exists()
