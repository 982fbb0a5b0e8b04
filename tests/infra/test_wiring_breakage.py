"""The wiring checks catch breakage: each runs on a modified copy and must report the problem."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from infra.checks import wiring
from infra.checks.tfparse import REPO_ROOT, single

Module = dict[str, dict[str, Any]]


def text(path: str) -> str:
    return (REPO_ROOT / path).read_text(encoding="utf-8")


def stub_main(functions: list[wiring.TfFunction]) -> str:
    """A main.py that satisfies the Terraform's entry points."""
    lines = ["import functions_framework", ""]
    for fn in functions:
        kind = "cloud_event" if fn.event_trigger is not None else "http"
        lines += [f"@functions_framework.{kind}", f"def {fn.entry_point}(arg):", "    return None", ""]
    return "\n".join(lines)


def find(module: Module, kind: str, tf_type: str, name: str) -> dict[str, Any]:
    for body in module.values():
        for entry in body.get(kind, []):
            if name in entry.get(tf_type, {}):
                block: dict[str, Any] = entry[tf_type][name]
                return block
    raise KeyError(f"{kind} {tf_type}.{name}")


def find_locals(module: Module) -> dict[str, Any]:
    for body in module.values():
        for block in body.get("locals", []):
            if "app_env" in block:
                found: dict[str, Any] = block
                return found
    raise KeyError("locals with app_env")


def source_locals(module: Module) -> dict[str, Any]:
    for body in module.values():
        for block in body.get("locals", []):
            if "source_includes" in block:
                found: dict[str, Any] = block
                return found
    raise KeyError("locals with source_includes")


@pytest.fixture
def mod(module: Module) -> Module:
    """A private deep copy of the parsed module to break."""
    return copy.deepcopy(module)


def reads_of(config_text: str) -> dict[str, wiring.EnvRead]:
    return wiring.config_env_reads(config_text)


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------


def test_stub_main_passes_and_renamed_entry_point_is_caught(module: Module) -> None:
    functions = wiring.tf_functions(module)
    main = stub_main(functions)
    assert wiring.check_entry_points(functions, main) == []
    renamed = main.replace("def on_upload(", "def on_upload_v2(")
    assert any("'on_upload' is not a top-level function" in p for p in wiring.check_entry_points(functions, renamed))


def test_real_main_with_renamed_entry_point_is_caught(module: Module) -> None:
    functions = wiring.tf_functions(module)
    main = text("main.py").replace("def on_prediction_webhook(", "def on_webhook(")
    problems = wiring.check_entry_points(functions, main)
    assert any("'on_prediction_webhook' is not a top-level function" in p for p in problems), problems


def test_wrong_decorator_is_caught(module: Module) -> None:
    functions = wiring.tf_functions(module)
    main = stub_main(functions).replace("@functions_framework.cloud_event", "@functions_framework.http")
    problems = wiring.check_entry_points(functions, main)
    assert any("on_upload needs @functions_framework.cloud_event" in p for p in problems), problems


def test_aliased_decorators_are_understood(module: Module) -> None:
    functions = wiring.tf_functions(module)
    main = (
        stub_main(functions)
        .replace("import functions_framework", "import functions_framework as ff\nfrom functions_framework import http")
        .replace("@functions_framework.cloud_event", "@ff.cloud_event()")
        .replace("@functions_framework.http", "@http")
    )
    assert wiring.check_entry_points(functions, main) == []


def test_missing_main_is_caught(module: Module) -> None:
    assert wiring.check_entry_points(wiring.tf_functions(module), None) == ["main.py does not exist"]


# ---------------------------------------------------------------------------
# Environment variables and settings
# ---------------------------------------------------------------------------


def test_renamed_variable_in_config_is_caught(module: Module) -> None:
    config = text("bgremove/config.py").replace('"LOG_LEVEL"', '"LOGGING_LEVEL"')
    problems = wiring.check_environment(reads_of(config), wiring.tf_functions(module))
    assert "LOGGING_LEVEL is read by bgremove/config.py but no function sets it" in problems
    assert any("sets LOG_LEVEL, which bgremove/config.py never reads" in p for p in problems)


def test_new_variable_in_config_is_caught(module: Module) -> None:
    config = text("bgremove/config.py").replace(
        'log_level = env.text("LOG_LEVEL", "INFO")',
        'log_level = env.text("LOG_LEVEL", "INFO")\n    _extra = env.whole("NEW_KNOB", 7)',
    )
    reads = reads_of(config)
    assert reads["NEW_KNOB"].default == 7
    functions = wiring.tf_functions(module)
    assert "NEW_KNOB is read by bgremove/config.py but no function sets it" in wiring.check_environment(
        reads, functions
    )
    settings = wiring.check_settings(reads, functions, wiring.module_variables(module))
    assert any("NEW_KNOB is not wired to a module variable: set it to var.new_knob" in p for p in settings)


def test_changed_default_in_config_is_caught(module: Module) -> None:
    config = text("bgremove/config.py").replace('env.text("CANCEL_AFTER", "15m")', 'env.text("CANCEL_AFTER", "10m")')
    problems = wiring.check_settings(reads_of(config), wiring.tf_functions(module), wiring.module_variables(module))
    assert any("variable cancel_after: default '15m'" in p and "'10m'" in p for p in problems), problems


def test_changed_default_in_terraform_is_caught(mod: Module) -> None:
    variables = wiring.module_variables(mod)
    variables["max_upload_bytes"]["default"] = 1000
    problems = wiring.check_settings(reads_of(text("bgremove/config.py")), wiring.tf_functions(mod), variables)
    assert any("variable max_upload_bytes: default 1000" in p for p in problems), problems


def test_variable_dropped_from_terraform_is_caught(mod: Module) -> None:
    del find_locals(mod)["app_env"]["INPUT_MODE"]
    reads = reads_of(text("bgremove/config.py"))
    functions = wiring.tf_functions(mod)
    assert "INPUT_MODE is read by bgremove/config.py but no function sets it" in wiring.check_environment(
        reads, functions
    )
    assert any("INPUT_MODE is not wired" in p for p in wiring.check_settings(reads, functions, {}))


def test_required_variable_missing_on_one_function_is_caught(mod: Module) -> None:
    webhook = find(mod, "resource", "google_cloudfunctions2_function", "webhook")
    single(webhook, "service_config")["environment_variables"] = (
        "${merge({UPLOAD_BUCKET = google_storage_bucket.uploads.name}, {})}"
    )
    problems = wiring.check_environment(reads_of(text("bgremove/config.py")), wiring.tf_functions(mod))
    assert any("webhook: does not set STATE_BUCKET, which bgremove/config.py requires" in p for p in problems)


def test_secret_as_plain_variable_is_caught(mod: Module) -> None:
    find_locals(mod)["app_env"]["PREDICTIONS_API_TOKEN"] = "${var.token}"
    problems = wiring.check_environment(reads_of(text("bgremove/config.py")), wiring.tf_functions(mod))
    assert any("PREDICTIONS_API_TOKEN looks secret" in p for p in problems), problems
    assert any("set both as a plain and as a secret variable" in p for p in problems), problems


def test_misnamed_setting_variable_is_caught(mod: Module) -> None:
    find_locals(mod)["app_env"]["LOG_LEVEL"] = "${var.logging}"
    problems = wiring.check_settings(
        reads_of(text("bgremove/config.py")), wiring.tf_functions(mod), wiring.module_variables(mod)
    )
    assert any("LOG_LEVEL = var.logging; the variable must be named log_level" in p for p in problems)


def test_unreadable_environment_expression_is_reported(mod: Module) -> None:
    upload = find(mod, "resource", "google_cloudfunctions2_function", "upload")
    single(upload, "service_config")["environment_variables"] = '${jsondecode(file("env.json"))}'
    problems = wiring.check_environment(reads_of(text("bgremove/config.py")), wiring.tf_functions(mod))
    assert any("cannot read environment_variables" in p for p in problems), problems


def test_signing_account_must_be_the_runtime_account(mod: Module) -> None:
    upload = find(mod, "resource", "google_cloudfunctions2_function", "upload")
    single(upload, "service_config")["service_account_email"] = "${google_service_account.webhook.email}"
    problems = wiring.check_settings(
        reads_of(text("bgremove/config.py")), wiring.tf_functions(mod), wiring.module_variables(mod)
    )
    assert any("upload: SIGNING_SERVICE_ACCOUNT" in p for p in problems), problems


# ---------------------------------------------------------------------------
# Runtime, archive, imports, access
# ---------------------------------------------------------------------------


def test_wrong_runtime_is_caught(mod: Module) -> None:
    single(find(mod, "resource", "google_cloudfunctions2_function", "reconcile"), "build_config")["runtime"] = (
        "python312"
    )
    problems = wiring.check_runtime(wiring.tf_functions(mod), (3, 11))
    assert problems == ["reconcile: runtime 'python312', but the project uses Python 3.11 (python311)"]


def test_archive_with_extra_folders_is_caught(mod: Module) -> None:
    source_locals(mod)["source_includes"].append("tests/**")
    problems = wiring.check_source_archive(mod, REPO_ROOT)
    assert any("'tests/**' deploys 'tests'" in p for p in problems), problems


def test_archive_from_whole_directory_is_caught(mod: Module) -> None:
    archive = find(mod, "data", "archive_file", "source")
    archive["source_dir"] = "${local.source_root}"
    assert any("uses source_dir" in p for p in wiring.check_source_archive(mod, REPO_ROOT))


def test_archive_without_package_is_caught(mod: Module) -> None:
    source_locals(mod)["source_includes"].remove("bgremove/**")
    problems = wiring.check_source_archive(mod, REPO_ROOT)
    assert "local.source_includes does not include the bgremove package" in problems
    assert "the archive would leave out bgremove/config.py" in problems


def test_archive_object_not_named_by_hash_is_caught(mod: Module) -> None:
    find(mod, "resource", "google_storage_bucket_object", "source")["name"] = "functions/source.zip"
    problems = wiring.check_source_archive(mod, REPO_ROOT)
    assert any("must contain the archive's hash" in p for p in problems), problems


def test_fileset_simulation(tmp_path: Path) -> None:
    for rel in ("main.py", "bgremove/a.py", "bgremove/sub/b.py", "bgremove/__pycache__/a.pyc", "tests/t.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("", encoding="utf-8")
    assert wiring.simulate_fileset(tmp_path, ["main.py", "bgremove/**"]) == [
        "bgremove/a.py",
        "bgremove/sub/b.py",
        "main.py",
    ]
    assert wiring.simulate_fileset(tmp_path, ["bgremove/*.py"]) == ["bgremove/a.py"]


def test_missing_requirement_is_caught() -> None:
    sources = {"main.py": "import requests\nfrom google.cloud import storage\nimport json\nimport bgremove.config\n"}
    complete = "requests==2.34.2\ngoogle-cloud-storage==3.17.1\n"
    assert wiring.check_imports(sources, complete) == []
    problems = wiring.check_imports(sources, "google-cloud-storage==3.17.1\n")
    assert any("main.py:1: imports requests" in p for p in problems), problems
    # A shared namespace package is not enough: google.cloud.storage needs its own distribution.
    problems = wiring.check_imports(sources, "requests\ngoogle-cloud-pubsub==2.44.0\n")
    assert any("imports google.cloud.storage" in p for p in problems), problems
    assert wiring.check_imports(sources, None) == ["requirements.txt does not exist"]


def test_dropped_retry_policy_is_caught(mod: Module) -> None:
    trigger = single(find(mod, "resource", "google_cloudfunctions2_function", "upload"), "event_trigger")
    del trigger["retry_policy"]
    problems = wiring.check_access(mod, wiring.tf_functions(mod))
    assert any("retry_policy must be RETRY_POLICY_RETRY" in p for p in problems), problems


def test_private_webhook_is_caught(mod: Module) -> None:
    find(mod, "resource", "google_cloud_run_service_iam_member", "webhook_public")["member"] = "user:a@example.com"
    problems = wiring.check_access(mod, wiring.tf_functions(mod))
    assert any("webhook: public (ALLOW_ALL) but allUsers lacks roles/run.invoker" in p for p in problems)


def test_unscheduled_reconciler_is_caught(mod: Module) -> None:
    job = find(mod, "resource", "google_cloud_scheduler_job", "reconcile")
    del single(job, "http_target")["oidc_token"]
    problems = wiring.check_access(mod, wiring.tf_functions(mod))
    assert any("reconcile: internal HTTP function that no scheduler job calls" in p for p in problems), problems


def test_module_call_with_unknown_variable_is_caught(roots: dict[str, Module], module: Module) -> None:
    broken = copy.deepcopy(roots)
    main = broken["infra/envs/dev"]["infra/envs/dev/main.tf"]
    next(iter(main["module"][0].values()))["log_levle"] = "DEBUG"
    problems = wiring.check_module_calls(broken, wiring.module_variables(module))
    assert "infra/envs/dev: module 'pipeline' passes 'log_levle', which the module does not declare" in problems
