"""The wiring checks catch breakage: each runs on a modified copy and must report the problem."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from bgremove import tasks
from bgremove.config import Setting
from infra.checks import access, code_facts, environment, events, monitoring, packaging, queues, tf_model
from infra.checks.provider_schema import check_blocks
from infra.checks.tfparse import REPO_ROOT, single
from tests.infra import expectations

Module = dict[str, dict[str, Any]]


def text(path: str) -> str:
    return (REPO_ROOT / path).read_text(encoding="utf-8")


def stub_main(functions: list[tf_model.TfFunction]) -> str:
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


def one_block(body: dict[str, Any], key: str) -> dict[str, Any]:
    """The one block `key` inside body, which the copy being broken must have."""
    found = single(body, key)
    assert found is not None, f"no single {key} block"
    return found


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


SETTINGS = code_facts.settings()


def settings_with(name: str, **changes: Any) -> tuple[Setting, ...]:
    """The settings table with the setting of variable `name` changed, as an edit of bgremove/config.py would."""
    assert name in {s.env for s in SETTINGS}, name
    return tuple(dataclasses.replace(s, **changes) if s.env == name else s for s in SETTINGS)


def entry_points_of(main_text: str, tmp_path: Path) -> code_facts.EntryPoints | None:
    """What functions_framework registers when main_text is main.py (imported in a subprocess)."""
    main = tmp_path / "main.py"
    main.write_text(main_text, encoding="utf-8")
    return code_facts.entry_points(main)


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------


def test_stub_main_passes_and_renamed_entry_point_is_caught(module: Module, tmp_path: Path) -> None:
    functions = tf_model.tf_functions(module)
    main = stub_main(functions)
    assert packaging.check_entry_points(functions, entry_points_of(main, tmp_path)) == []
    renamed = entry_points_of(main.replace("def on_upload(", "def on_upload_v2("), tmp_path)
    assert any("'on_upload' is not a top-level function" in p for p in packaging.check_entry_points(functions, renamed))


def test_real_main_with_renamed_entry_point_is_caught(module: Module, tmp_path: Path) -> None:
    functions = tf_model.tf_functions(module)
    main = text("main.py").replace("def on_prediction_webhook(", "def on_webhook(")
    problems = packaging.check_entry_points(functions, entry_points_of(main, tmp_path))
    assert any("'on_prediction_webhook' is not a top-level function" in p for p in problems), problems


def test_wrong_decorator_is_caught(module: Module, tmp_path: Path) -> None:
    functions = tf_model.tf_functions(module)
    main = stub_main(functions).replace("@functions_framework.cloud_event", "@functions_framework.http")
    problems = packaging.check_entry_points(functions, entry_points_of(main, tmp_path))
    assert any("on_upload needs @functions_framework.cloud_event" in p for p in problems), problems


def test_undecorated_entry_point_is_caught(module: Module, tmp_path: Path) -> None:
    functions = tf_model.tf_functions(module)
    main = stub_main(functions).replace("@functions_framework.http\ndef reconcile(", "def reconcile(")
    problems = packaging.check_entry_points(functions, entry_points_of(main, tmp_path))
    assert any("reconcile needs @functions_framework.http (not registered" in p for p in problems), problems


def test_aliased_decorators_are_understood(module: Module, tmp_path: Path) -> None:
    # The registry is filled by the decorators however main.py imports them.
    functions = tf_model.tf_functions(module)
    main = (
        stub_main(functions)
        .replace("import functions_framework", "import functions_framework as ff\nfrom functions_framework import http")
        .replace("@functions_framework.cloud_event", "@ff.cloud_event")
        .replace("@functions_framework.http", "@http")
    )
    assert packaging.check_entry_points(functions, entry_points_of(main, tmp_path)) == []


def test_missing_main_is_caught(module: Module, tmp_path: Path) -> None:
    assert code_facts.entry_points(tmp_path / "main.py") is None
    assert packaging.check_entry_points(tf_model.tf_functions(module), None) == ["main.py does not exist"]


def test_main_that_fails_at_import_is_reported(tmp_path: Path) -> None:
    with pytest.raises(code_facts.EntryPointsError, match="importing main.py failed"):
        entry_points_of("import functions_framework\nraise SystemExit(3)\n", tmp_path)


# ---------------------------------------------------------------------------
# Environment variables and settings
# ---------------------------------------------------------------------------


def test_renamed_variable_in_config_is_caught(module: Module) -> None:
    problems = environment.check_environment(
        settings_with("LOG_LEVEL", env="LOGGING_LEVEL"), tf_model.tf_functions(module)
    )
    assert "LOGGING_LEVEL is read by bgremove/config.py but no function sets it" in problems
    assert any("sets LOG_LEVEL, which bgremove/config.py never reads" in p for p in problems)


def test_new_variable_in_config_is_caught(module: Module) -> None:
    settings = (*SETTINGS, Setting("NEW_KNOB", "new_knob", "whole", 7, "a new knob"))
    functions = tf_model.tf_functions(module)
    assert "NEW_KNOB is read by bgremove/config.py but no function sets it" in environment.check_environment(
        settings, functions
    )
    problems = environment.check_settings(settings, functions, tf_model.module_variables(module))
    assert any("NEW_KNOB is not wired to a module variable: set it to var.new_knob" in p for p in problems)


def test_changed_default_in_config_is_caught(module: Module) -> None:
    settings = settings_with("CANCEL_AFTER", default="10m")
    problems = environment.check_settings(settings, tf_model.tf_functions(module), tf_model.module_variables(module))
    assert any("variable cancel_after: default '15m'" in p and "'10m'" in p for p in problems), problems


def test_changed_default_in_terraform_is_caught(mod: Module) -> None:
    variables = tf_model.module_variables(mod)
    variables["max_upload_bytes"]["default"] = 1000
    problems = environment.check_settings(SETTINGS, tf_model.tf_functions(mod), variables)
    assert any("variable max_upload_bytes: default 1000" in p for p in problems), problems


def variable_problems(module: Module, settings: tuple[Setting, ...] = SETTINGS) -> list[str]:
    return environment.check_setting_variables(settings, tf_model.module_variables(module))


def test_terraform_bound_other_than_config_is_caught(mod: Module) -> None:
    validation = tf_model.module_variables(mod)["api_max_attempts"]["validation"][0]
    validation["condition"] = "${var.api_max_attempts >= 1 && var.api_max_attempts <= 30}"
    problems = variable_problems(mod)
    assert (
        "variable api_max_attempts: validation says at most 30, but bgremove/config.py says at most 20 "
        "for API_MAX_ATTEMPTS" in problems
    ), problems


def test_config_bound_other_than_terraform_is_caught(module: Module) -> None:
    problems = variable_problems(module, settings_with("SIGNED_URL_TTL_SECONDS", minimum=120))
    assert any("variable signed_url_ttl_seconds: validation says at least 60" in p for p in problems), problems
    problems = variable_problems(module, settings_with("QUEUED_CHECK_SECONDS", minimum=None))
    assert any("says no bound for QUEUED_CHECK_SECONDS" in p for p in problems), problems


def test_choices_other_than_config_are_caught(module: Module) -> None:
    problems = variable_problems(module, settings_with("INPUT_MODE", choices=("auto", "signed_url")))
    assert any(p.startswith("variable input_mode: validation allows") for p in problems), problems
    problems = variable_problems(module, settings_with("LOG_LEVEL", upper=False))
    assert any(p.startswith("variable log_level: validation upper-cases the value") for p in problems), problems


def test_setting_variable_of_the_wrong_type_is_caught(mod: Module) -> None:
    tf_model.module_variables(mod)["max_upload_bytes"]["type"] = "string"
    problems = variable_problems(mod)
    assert any(p.startswith("variable max_upload_bytes: type string") for p in problems), problems


def test_variable_dropped_from_terraform_is_caught(mod: Module) -> None:
    del find_locals(mod)["app_env"]["INPUT_MODE"]
    functions = tf_model.tf_functions(mod)
    assert "INPUT_MODE is read by bgremove/config.py but no function sets it" in environment.check_environment(
        SETTINGS, functions
    )
    assert any("INPUT_MODE is not wired" in p for p in environment.check_settings(SETTINGS, functions, {}))


def test_required_variable_missing_on_one_function_is_caught(mod: Module) -> None:
    webhook = find(mod, "resource", "google_cloudfunctions2_function", "webhook")
    one_block(webhook, "service_config")["environment_variables"] = (
        "${merge({UPLOAD_BUCKET = google_storage_bucket.uploads.name}, {})}"
    )
    problems = environment.check_environment(SETTINGS, tf_model.tf_functions(mod))
    assert any("webhook: does not set STATE_BUCKET, which bgremove/config.py requires" in p for p in problems)


def test_secret_as_plain_variable_is_caught(mod: Module) -> None:
    find_locals(mod)["app_env"]["PREDICTIONS_API_TOKEN"] = "${var.token}"
    problems = environment.check_environment(SETTINGS, tf_model.tf_functions(mod))
    assert any("PREDICTIONS_API_TOKEN looks secret" in p for p in problems), problems
    assert any("set both as a plain and as a secret variable" in p for p in problems), problems


def test_misnamed_setting_variable_is_caught(mod: Module) -> None:
    find_locals(mod)["app_env"]["LOG_LEVEL"] = "${var.logging}"
    problems = environment.check_settings(SETTINGS, tf_model.tf_functions(mod), tf_model.module_variables(mod))
    assert any("LOG_LEVEL = var.logging; the variable must be named log_level" in p for p in problems)


def test_unreadable_environment_expression_is_reported(mod: Module) -> None:
    upload = find(mod, "resource", "google_cloudfunctions2_function", "upload")
    one_block(upload, "service_config")["environment_variables"] = '${jsondecode(file("env.json"))}'
    problems = environment.check_environment(SETTINGS, tf_model.tf_functions(mod))
    assert any("cannot read environment_variables" in p for p in problems), problems


def test_signing_account_must_be_the_runtime_account(mod: Module) -> None:
    tasks = find(mod, "resource", "google_cloudfunctions2_function", "tasks")
    one_block(tasks, "service_config")["service_account_email"] = "${google_service_account.webhook.email}"
    problems = environment.check_settings(SETTINGS, tf_model.tf_functions(mod), tf_model.module_variables(mod))
    assert any("tasks: SIGNING_SERVICE_ACCOUNT" in p for p in problems), problems


# ---------------------------------------------------------------------------
# Runtime, archive, imports, access
# ---------------------------------------------------------------------------


def test_wrong_runtime_is_caught(mod: Module) -> None:
    one_block(find(mod, "resource", "google_cloudfunctions2_function", "reconcile"), "build_config")["runtime"] = (
        "python312"
    )
    problems = packaging.check_runtime(tf_model.tf_functions(mod), (3, 11))
    assert problems == ["reconcile: runtime 'python312', but the project uses Python 3.11 (python311)"]


def test_archive_with_extra_folders_is_caught(mod: Module) -> None:
    source_locals(mod)["source_includes"].append("tests/**")
    problems = packaging.check_source_archive(mod, REPO_ROOT)
    assert any("'tests/**' deploys 'tests'" in p for p in problems), problems


def test_archive_from_whole_directory_is_caught(mod: Module) -> None:
    archive = find(mod, "data", "archive_file", "source")
    archive["source_dir"] = "${local.source_root}"
    assert any("uses source_dir" in p for p in packaging.check_source_archive(mod, REPO_ROOT))


def test_archive_without_package_is_caught(mod: Module) -> None:
    source_locals(mod)["source_includes"].remove("bgremove/**")
    problems = packaging.check_source_archive(mod, REPO_ROOT)
    assert "local.source_includes does not include the bgremove package" in problems
    assert "the archive would leave out bgremove/config.py" in problems


def test_archive_object_not_named_by_hash_is_caught(mod: Module) -> None:
    find(mod, "resource", "google_storage_bucket_object", "source")["name"] = "functions/source.zip"
    problems = packaging.check_source_archive(mod, REPO_ROOT)
    assert any("must contain the archive's hash" in p for p in problems), problems


def test_fileset_simulation(tmp_path: Path) -> None:
    for rel in ("main.py", "bgremove/a.py", "bgremove/sub/b.py", "bgremove/__pycache__/a.pyc", "tests/t.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("", encoding="utf-8")
    assert packaging.simulate_fileset(tmp_path, ["main.py", "bgremove/**"]) == [
        "bgremove/a.py",
        "bgremove/sub/b.py",
        "main.py",
    ]
    assert packaging.simulate_fileset(tmp_path, ["bgremove/*.py"]) == ["bgremove/a.py"]


def test_missing_requirement_is_caught() -> None:
    sources = {"main.py": "import requests\nfrom google.cloud import storage\nimport json\nimport bgremove.config\n"}
    complete = "requests==2.34.2\ngoogle-cloud-storage==3.17.1\n"
    assert packaging.check_imports(sources, complete) == []
    problems = packaging.check_imports(sources, "google-cloud-storage==3.17.1\n")
    assert any("main.py:1: imports requests" in p for p in problems), problems
    # A shared namespace package is not enough: google.cloud.storage needs its own distribution.
    problems = packaging.check_imports(sources, "requests\ngoogle-cloud-pubsub==2.44.0\n")
    assert any("imports google.cloud.storage" in p for p in problems), problems
    assert packaging.check_imports(sources, None) == ["requirements.txt does not exist"]


def test_dropped_retry_policy_is_caught(mod: Module) -> None:
    trigger = one_block(find(mod, "resource", "google_cloudfunctions2_function", "upload"), "event_trigger")
    del trigger["retry_policy"]
    problems = access.check_access(mod, tf_model.tf_functions(mod))
    assert any("retry_policy must be RETRY_POLICY_RETRY" in p for p in problems), problems


def test_private_webhook_is_caught(mod: Module) -> None:
    find(mod, "resource", "google_cloud_run_service_iam_member", "webhook_public")["member"] = "user:a@example.com"
    problems = access.check_access(mod, tf_model.tf_functions(mod))
    assert any("webhook: public (ALLOW_ALL) but allUsers lacks roles/run.invoker" in p for p in problems)


def test_unscheduled_reconciler_is_caught(mod: Module) -> None:
    job = find(mod, "resource", "google_cloud_scheduler_job", "reconcile")
    del one_block(job, "http_target")["oidc_token"]
    problems = access.check_access(mod, tf_model.tf_functions(mod))
    assert any("reconcile: internal HTTP function that no scheduler job calls" in p for p in problems), problems


def test_module_call_with_unknown_variable_is_caught(roots: dict[str, Module], module: Module) -> None:
    broken = copy.deepcopy(roots)
    main = broken["infra/envs/dev"]["infra/envs/dev/main.tf"]
    next(iter(main["module"][0].values()))["log_levle"] = "DEBUG"
    problems = tf_model.check_module_calls(broken, tf_model.module_variables(module))
    assert "infra/envs/dev: module 'pipeline' passes 'log_levle', which the module does not declare" in problems


# ---------------------------------------------------------------------------
# The task handler, the queues and their grants
# ---------------------------------------------------------------------------

FUNCTIONS_TF = "infra/modules/pipeline/functions.tf"


def task_env(module: Module) -> dict[str, Any]:
    env: dict[str, Any] = find_locals(module)["task_env"]
    return env


def deadline() -> float:
    return code_facts.dispatch_deadline_seconds()


def handler_problems(module: Module) -> list[str]:
    return queues.check_task_handler(
        module, tf_model.tf_functions(module), tf_model.module_variables(module), deadline()
    )


def queue_problems(module: Module) -> list[str]:
    return queues.check_queues(
        module, tf_model.tf_functions(module), expectations.QUEUES, tf_model.module_variables(module)
    )


def grant_problems(module: Module) -> list[str]:
    return queues.check_queue_grants(module, tf_model.tf_functions(module), expectations.QUEUE_GRANTS)


def env_problems(module: Module) -> list[str]:
    return environment.check_function_environment(
        SETTINGS,
        tf_model.tf_functions(module),
        expectations.EXTRA_ENV,
        expectations.SECRETS,
    )


def add_resource(module: Module, tf_type: str, name: str, body: dict[str, Any]) -> None:
    module[FUNCTIONS_TF]["resource"].append({tf_type: {name: {**body, "__is_block__": True}}})


def test_the_real_module_passes_the_task_checks(module: Module) -> None:
    assert handler_problems(module) == []
    assert queue_problems(module) == []
    assert grant_problems(module) == []
    assert env_problems(module) == []


def test_renamed_on_task_is_caught(module: Module, tmp_path: Path) -> None:
    main = text("main.py").replace("def on_task(", "def on_cloud_task(")
    problems = packaging.check_entry_points(tf_model.tf_functions(module), entry_points_of(main, tmp_path))
    assert any("tasks: entry point 'on_task' is not a top-level function" in p for p in problems), problems


def test_on_task_without_the_http_decorator_is_caught(module: Module, tmp_path: Path) -> None:
    main = text("main.py").replace(
        "@functions_framework.http\ndef on_task(", "@functions_framework.cloud_event\ndef on_task("
    )
    assert main != text("main.py")
    problems = packaging.check_entry_points(tf_model.tf_functions(module), entry_points_of(main, tmp_path))
    assert any("tasks: main.py's on_task needs @functions_framework.http" in p for p in problems), problems


# Queue names -----------------------------------------------------------------


def test_submit_queue_wired_to_the_deadline_queue_is_caught(mod: Module) -> None:
    task_env(mod)["SUBMIT_QUEUE"] = "${google_cloud_tasks_queue.deadline.id}"
    problems = queue_problems(mod)
    wanted = (
        "upload: SUBMIT_QUEUE = google_cloud_tasks_queue.deadline.id, expected "
        "google_cloud_tasks_queue.submit.id (that is the deadline queue)"
    )
    assert wanted in problems, problems


def test_queue_given_by_short_name_is_caught(mod: Module) -> None:
    task_env(mod)["DEADLINE_QUEUE"] = "${google_cloud_tasks_queue.deadline.name}"
    problems = queue_problems(mod)
    assert any("DEADLINE_QUEUE" in p and "full path (.id), not .name" in p for p in problems), problems


def test_queue_that_does_not_exist_is_caught(mod: Module) -> None:
    task_env(mod)["SUBMIT_QUEUE"] = "${google_cloud_tasks_queue.submissions.id}"
    problems = queue_problems(mod)
    assert any("google_cloud_tasks_queue.submissions is not declared" in p for p in problems), problems


def test_hard_coded_queue_path_is_caught(mod: Module) -> None:
    task_env(mod)["SUBMIT_QUEUE"] = "projects/p/locations/europe-west1/queues/bgr-submit"
    problems = queue_problems(mod)
    assert any("SUBMIT_QUEUE" in p and "not a queue resource's id" in p for p in problems), problems


def test_hard_coded_queue_rate_is_caught(mod: Module) -> None:
    queue = find(mod, "resource", "google_cloud_tasks_queue", "submit")
    one_block(queue, "rate_limits")["max_dispatches_per_second"] = 10
    problems = queue_problems(mod)
    assert (
        "google_cloud_tasks_queue.submit: rate_limits.max_dispatches_per_second must come from a module variable"
        in problems
    ), problems


def test_queue_without_retry_config_is_caught(mod: Module) -> None:
    del find(mod, "resource", "google_cloud_tasks_queue", "deadline")["retry_config"]
    problems = queue_problems(mod)
    assert any("google_cloud_tasks_queue.deadline: no retry_config block" in p for p in problems), problems


def test_misspelt_queue_arguments_are_caught(mod: Module, schemas: dict[str, dict[str, Any]]) -> None:
    queue = find(mod, "resource", "google_cloud_tasks_queue", "submit")
    rate = one_block(queue, "rate_limits")
    rate["max_dispatch_per_second"] = rate.pop("max_dispatches_per_second")
    retry = one_block(queue, "retry_config")
    retry["max_retry_duraton"] = retry.pop("max_retry_duration")
    grant = find(mod, "resource", "google_cloud_tasks_queue_iam_member", "submit_enqueuer")
    grant["queue"] = grant.pop("name")
    problems = check_blocks(mod, schemas)
    for wanted in (
        "google_cloud_tasks_queue.submit.rate_limits: unknown argument 'max_dispatch_per_second' "
        "(did you mean 'max_dispatches_per_second'?)",
        "google_cloud_tasks_queue.submit.retry_config: unknown argument 'max_retry_duraton'",
        "google_cloud_tasks_queue_iam_member.submit_enqueuer: unknown argument 'queue'",
        "google_cloud_tasks_queue_iam_member.submit_enqueuer: missing required argument 'name'",
    ):
        assert any(wanted in p for p in problems), (wanted, problems)


def test_queue_block_written_as_an_argument_is_caught(mod: Module, schemas: dict[str, dict[str, Any]]) -> None:
    queue = find(mod, "resource", "google_cloud_tasks_queue", "deadline")
    queue["rate_limits"] = {"max_dispatches_per_second": 5}
    problems = check_blocks(mod, schemas)
    assert any("google_cloud_tasks_queue.deadline: 'rate_limits' is a block" in p for p in problems), problems


# TASK_HANDLER_URL --------------------------------------------------------------


def test_task_handler_url_pointing_at_the_webhook_is_caught(mod: Module) -> None:
    task_env(mod)["TASK_HANDLER_URL"] = "${google_cloudfunctions2_function.webhook.service_config[0].uri}"
    problems = handler_problems(mod)
    for fn in ("upload", "tasks", "reconcile"):
        assert any(
            p.startswith(f"{fn}: TASK_HANDLER_URL") and "that is google_cloudfunctions2_function.webhook" in p
            for p in problems
        ), (fn, problems)


def test_computed_url_of_another_service_is_caught(mod: Module) -> None:
    find_locals(mod)["task_handler_url"] = (
        "https://${var.name_prefix}-webhook-${data.google_project.this.number}.${var.region}.run.app"
    )
    problems = handler_problems(mod)
    assert any("upload: TASK_HANDLER_URL = local.task_handler_url: not the URL" in p for p in problems), problems


def test_task_handler_with_its_own_uri_is_a_cycle(mod: Module) -> None:
    task_env(mod)["TASK_HANDLER_URL"] = "${google_cloudfunctions2_function.tasks.service_config[0].uri}"
    problems = handler_problems(mod)
    assert any(p.startswith("tasks: TASK_HANDLER_URL") and "dependency cycle" in p for p in problems), problems
    assert not any(p.startswith("upload: TASK_HANDLER_URL") for p in problems), problems


def test_unverified_computed_url_is_caught(mod: Module) -> None:
    data = find(mod, "data", "google_cloud_run_v2_service", "tasks")
    del data["lifecycle"]
    problems = handler_problems(mod)
    assert any("nothing checks that the deployed handler serves it" in p for p in problems), problems


# Who may invoke the task handler -------------------------------------------------


def test_public_invoker_on_the_task_handler_is_caught(mod: Module) -> None:
    add_resource(
        mod,
        "google_cloud_run_service_iam_member",
        "tasks_public",
        {
            "location": "${google_cloudfunctions2_function.tasks.location}",
            "service": "${google_cloudfunctions2_function.tasks.name}",
            "role": "roles/run.invoker",
            "member": "allUsers",
        },
    )
    assert "tasks: allUsers may invoke the task handler; it must not be public" in handler_problems(mod)
    invokers = access.check_access(mod, tf_model.tf_functions(mod))
    assert "tasks: the task handler has a public invoker; only Cloud Tasks may call it" in invokers


def test_other_invoker_on_the_task_handler_is_caught(mod: Module) -> None:
    invoker = find(mod, "resource", "google_cloud_run_service_iam_member", "tasks_invoker")
    invoker["member"] = "${google_service_account.scheduler.member}"
    problems = handler_problems(mod)
    assert (
        "tasks: google_service_account.tasks_invoker.member (TASKS_SERVICE_ACCOUNT) has no roles/run.invoker on it"
        in problems
    ), problems
    assert any("google_service_account.scheduler.member may invoke the task handler" in p for p in problems)


def test_runtime_account_as_the_oidc_identity_is_caught(mod: Module) -> None:
    task_env(mod)["TASKS_SERVICE_ACCOUNT"] = "${google_service_account.upload.email}"
    problems = handler_problems(mod)
    assert any("is also the runtime account of upload" in p for p in problems), problems


def test_public_ingress_on_the_task_handler_is_caught(mod: Module) -> None:
    tasks = find(mod, "resource", "google_cloudfunctions2_function", "tasks")
    one_block(tasks, "service_config")["ingress_settings"] = "ALLOW_ALL"
    assert any("tasks: ingress 'ALLOW_ALL'" in p for p in handler_problems(mod))
    invokers = access.check_access(mod, tf_model.tf_functions(mod))
    assert "tasks: the task handler must use internal ingress, not 'ALLOW_ALL'" in invokers


def test_timeout_beyond_the_dispatch_deadline_is_caught(mod: Module) -> None:
    variable = tf_model.module_variables(mod)["task_function_timeout_seconds"]
    variable["default"] = 120
    del variable["validation"]
    problems = handler_problems(mod)
    assert any("variable task_function_timeout_seconds: default 120 exceeds" in p for p in problems), problems
    assert any("needs a validation capping it at the 60 s dispatch deadline" in p for p in problems), problems


def test_shorter_dispatch_deadline_in_code_is_caught(module: Module, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "DISPATCH_DEADLINE_SECONDS", 30.0)  # as if bgremove/tasks.py said 30
    shorter = code_facts.dispatch_deadline_seconds()
    assert shorter == 30.0
    problems = queues.check_task_handler(
        module, tf_model.tf_functions(module), tf_model.module_variables(module), shorter
    )
    assert any("default 55 exceeds the tasks' 30 s dispatch deadline" in p for p in problems), problems


# Queue grants --------------------------------------------------------------------


def test_missing_enqueuer_grant_is_caught(mod: Module) -> None:
    grant = find(mod, "resource", "google_cloud_tasks_queue_iam_member", "submit_enqueuer")
    del grant["for_each"]["upload"]
    problems = grant_problems(mod)
    assert (
        "upload: lacks roles/cloudtasks.enqueuer on google_cloud_tasks_queue.submit, which its code needs" in problems
    ), problems


def test_missing_viewer_grant_is_caught(mod: Module) -> None:
    grant = find(mod, "resource", "google_cloud_tasks_queue_iam_member", "submit_viewer")
    del grant["for_each"]["reconcile"]
    problems = grant_problems(mod)
    assert any("reconcile: lacks roles/cloudtasks.viewer on google_cloud_tasks_queue.submit" in p for p in problems)


def test_extra_queue_grant_is_caught(mod: Module) -> None:
    grant = find(mod, "resource", "google_cloud_tasks_queue_iam_member", "deadline_enqueuer")
    grant["for_each"]["upload"] = "${google_service_account.upload.member}"
    problems = grant_problems(mod)
    assert (
        "upload: has roles/cloudtasks.enqueuer on google_cloud_tasks_queue.deadline, which it does not need" in problems
    ), problems


def test_project_wide_cloud_tasks_role_is_caught(mod: Module) -> None:
    add_resource(
        mod,
        "google_project_iam_member",
        "upload_enqueuer",
        {
            "project": "${var.project_id}",
            "role": "roles/cloudtasks.enqueuer",
            "member": "${google_service_account.upload.member}",
        },
    )
    problems = grant_problems(mod)
    assert any(
        "google_project_iam_member.upload_enqueuer: roles/cloudtasks.enqueuer on the whole project" in p
        for p in problems
    )


def test_missing_act_as_on_the_oidc_account_is_caught(mod: Module) -> None:
    grant = find(mod, "resource", "google_service_account_iam_member", "enqueuers_act_as_tasks_invoker")
    del grant["for_each"]["upload"]
    problems = grant_problems(mod)
    assert any(
        p.startswith("upload: creates tasks with an OIDC token of google_service_account.tasks_invoker")
        for p in problems
    ), problems


def test_act_as_for_a_function_that_enqueues_nothing_is_caught(mod: Module) -> None:
    # The webhook without the task settings (it enqueues nothing then) but still with actAs.
    webhook = find(mod, "resource", "google_cloudfunctions2_function", "webhook")
    one_block(webhook, "service_config")["environment_variables"] = "${merge(local.app_env, local.event_env)}"
    problems = grant_problems(mod)
    assert any(p.startswith("webhook: has roles/iam.serviceAccountUser") for p in problems), problems
    # And its notifications would go nowhere: NOTIFY_QUEUE without the handler's URL and OIDC account.
    routes = queues.check_task_routes(tf_model.tf_functions(mod), code_facts.task_routes())
    assert "webhook: sets NOTIFY_QUEUE but not TASK_HANDLER_URL, which its notify tasks need" in routes, routes
    assert "webhook: sets NOTIFY_QUEUE but not TASKS_SERVICE_ACCOUNT, which its notify tasks need" in routes


def test_unconditional_act_as_for_a_notify_only_enqueuer_is_caught(mod: Module) -> None:
    # The webhook enqueues only notifications (only while notify_url is set): actAs always is too much.
    grant = find(mod, "resource", "google_service_account_iam_member", "enqueuers_act_as_tasks_invoker")
    grant["for_each"]["webhook"] = "${google_service_account.webhook.member}"
    problems = grant_problems(mod)
    assert any(
        p.startswith("webhook: has roles/iam.serviceAccountUser on google_service_account.tasks_invoker always")
        and "local.notify_enabled" in p
        for p in problems
    ), problems


# Per-function environment --------------------------------------------------------


def test_emulator_host_set_by_terraform_is_caught(mod: Module) -> None:
    task_env(mod)["CLOUD_TASKS_EMULATOR_HOST"] = "127.0.0.1:8123"
    functions = tf_model.tf_functions(mod)
    problems = environment.check_offline_only(functions, code_facts.offline_variables())
    assert any(
        p.startswith("upload: sets CLOUD_TASKS_EMULATOR_HOST, which is offline-only (read by bgremove/tasks.py")
        for p in problems
    ), problems
    unread = environment.check_environment(SETTINGS, functions)
    assert any("sets CLOUD_TASKS_EMULATOR_HOST, which bgremove/config.py never reads" in p for p in unread)


def test_api_token_back_on_upload_is_caught(mod: Module) -> None:
    upload = find(mod, "resource", "google_cloudfunctions2_function", "upload")
    one_block(upload, "service_config")["secret_environment_variables"] = [
        {"key": "PREDICTIONS_API_TOKEN", "secret": "x", "version": "latest", "__is_block__": True}
    ]
    problems = env_problems(mod)
    assert "upload (on_upload): gets the secret PREDICTIONS_API_TOKEN, which it does not need" in problems


def test_function_without_the_task_settings_is_caught(mod: Module) -> None:
    reconcile = find(mod, "resource", "google_cloudfunctions2_function", "reconcile")
    one_block(reconcile, "service_config")["environment_variables"] = (
        "${merge(local.app_env, {WEBHOOK_URL = google_cloudfunctions2_function.webhook.service_config[0].uri})}"
    )
    problems = env_problems(mod)
    for key in sorted(expectations.TASK_ENV):
        assert f"reconcile (reconcile): does not set {key}, which it needs" in problems, (key, problems)


def test_webhook_url_on_upload_is_caught(mod: Module) -> None:
    upload = find(mod, "resource", "google_cloudfunctions2_function", "upload")
    one_block(upload, "service_config")["environment_variables"] = (
        "${merge(local.app_env, local.task_env, "
        "{WEBHOOK_URL = google_cloudfunctions2_function.webhook.service_config[0].uri})}"
    )
    assert "upload (on_upload): sets WEBHOOK_URL, which it does not need" in env_problems(mod)


def test_webhook_url_pointing_at_the_task_handler_is_caught(mod: Module) -> None:
    reconcile = find(mod, "resource", "google_cloudfunctions2_function", "reconcile")
    one_block(reconcile, "service_config")["environment_variables"] = (
        "${merge(local.app_env, local.task_env, "
        "{WEBHOOK_URL = google_cloudfunctions2_function.tasks.service_config[0].uri})}"
    )
    problems = environment.check_settings(SETTINGS, tf_model.tf_functions(mod), tf_model.module_variables(mod))
    assert any(p.startswith("reconcile: WEBHOOK_URL") and "not the URL of the webhook" in p for p in problems)


def test_changed_queued_check_default_is_caught(mod: Module) -> None:
    variables = tf_model.module_variables(mod)
    variables["queued_check_seconds"]["default"] = 600
    problems = environment.check_settings(SETTINGS, tf_model.tf_functions(mod), variables)
    assert any("variable queued_check_seconds: default 600" in p for p in problems), problems


# ---------------------------------------------------------------------------
# Deletions (on_delete), the events topic, the notify switch
# ---------------------------------------------------------------------------


def access_problems(module: Module) -> list[str]:
    return access.check_access(module, tf_model.tf_functions(module))


def delete_trigger(module: Module, name: str = "delete") -> dict[str, Any]:
    return one_block(find(module, "resource", "google_cloudfunctions2_function", name), "event_trigger")


def test_the_real_module_passes_the_event_checks(module: Module) -> None:
    functions = tf_model.tf_functions(module)
    assert access_problems(module) == []
    assert events.check_events_topic(module, functions, expectations.PUBLISHERS) == []
    assert events.check_notify_switch(module, functions) == []
    assert tf_model.check_guarded_references(module) == []
    assert environment.check_secret_access(module, functions) == []
    assert environment.check_agreeing_settings(SETTINGS, functions) == []
    assert queues.check_task_routes(functions, code_facts.task_routes()) == []


def test_delete_trigger_on_the_wrong_bucket_is_caught(mod: Module) -> None:
    trigger = delete_trigger(mod)
    trigger["event_filters"][0]["value"] = "${google_storage_bucket.processed.name}"
    problems = access_problems(mod)
    assert any(
        p.startswith(
            "delete: the trigger watches google_storage_bucket.processed.name, not the bucket its UPLOAD_BUCKET"
        )
        for p in problems
    ), problems
    # ...and then nothing takes the uploads bucket's deleted events.
    assert any("no function is triggered by google.cloud.storage.object.v1.deleted on uploads" in p for p in problems)


def test_delete_trigger_in_another_region_is_caught(mod: Module) -> None:
    delete_trigger(mod)["trigger_region"] = "${lower(google_storage_bucket.processed.location)}"
    problems = access_problems(mod)
    assert any(
        p.startswith("delete: trigger_region = lower(google_storage_bucket.processed.location)") for p in problems
    )


def test_delete_trigger_of_the_wrong_event_type_is_caught(mod: Module) -> None:
    delete_trigger(mod)["event_type"] = "google.cloud.storage.object.v1.finalized"
    problems = access_problems(mod)
    assert (
        "delete: event_type 'google.cloud.storage.object.v1.finalized', but on_delete handles "
        "google.cloud.storage.object.v1.archived, google.cloud.storage.object.v1.deleted" in problems
    ), problems
    assert "on_delete: no function is triggered by google.cloud.storage.object.v1.deleted on uploads" in problems


def test_upload_trigger_of_a_deletion_type_is_caught(mod: Module) -> None:
    one_block(find(mod, "resource", "google_cloudfunctions2_function", "upload"), "event_trigger")["event_type"] = (
        "google.cloud.storage.object.v1.deleted"
    )
    problems = access_problems(mod)
    assert any(
        p.startswith("upload: event_type 'google.cloud.storage.object.v1.deleted', but on_upload") for p in problems
    )


def test_missing_archived_trigger_on_a_versioned_bucket_is_caught(mod: Module) -> None:
    for body in mod.values():
        for entry in body.get("resource", []):
            entry.get("google_cloudfunctions2_function", {}).pop("archive", None)
    problems = access_problems(mod)
    assert any(
        p.startswith("on_delete: no function is triggered by google.cloud.storage.object.v1.archived on uploads")
        and "is versioned" in p
        for p in problems
    ), problems


def test_archived_trigger_without_versioning_is_caught(mod: Module) -> None:
    uploads = find(mod, "resource", "google_storage_bucket", "uploads")
    one_block(uploads, "versioning")["enabled"] = False
    problems = access_problems(mod)
    assert any("archived on google_storage_bucket.uploads, which has no versioning" in p for p in problems), problems


def test_two_functions_for_one_event_type_are_caught(mod: Module) -> None:
    delete_trigger(mod, "archive")["event_type"] = "google.cloud.storage.object.v1.deleted"
    problems = access_problems(mod)
    assert "on_delete: 2 functions are triggered by google.cloud.storage.object.v1.deleted on uploads" in problems
    assert any("no function is triggered by google.cloud.storage.object.v1.archived" in p for p in problems)


def test_dropped_retry_policy_on_delete_is_caught(mod: Module) -> None:
    del delete_trigger(mod, "archive")["retry_policy"]
    assert any(p.startswith("archive: retry_policy must be RETRY_POLICY_RETRY") for p in access_problems(mod))


def test_delete_trigger_without_invoker_is_caught(mod: Module) -> None:
    find(mod, "resource", "google_cloud_run_service_iam_member", "archive_trigger_invoker")["member"] = (
        "${google_service_account.scheduler.member}"
    )
    problems = access_problems(mod)
    assert "archive: the trigger's service account has no roles/run.invoker on the function" in problems, problems


def test_on_delete_without_the_predictions_token_is_caught(mod: Module) -> None:
    service = one_block(find(mod, "resource", "google_cloudfunctions2_function", "delete"), "service_config")
    del service["secret_environment_variables"]
    problems = env_problems(mod)
    assert "delete (on_delete): lacks the secret PREDICTIONS_API_TOKEN, which it needs" in problems, problems


def test_on_delete_without_the_webhook_url_is_caught(mod: Module) -> None:
    service = one_block(find(mod, "resource", "google_cloudfunctions2_function", "archive"), "service_config")
    service["environment_variables"] = "${merge(local.app_env, local.task_env, local.event_env)}"
    problems = env_problems(mod)
    assert "archive (on_delete): does not set WEBHOOK_URL, which it needs" in problems, problems


def test_missing_token_accessor_for_on_delete_is_caught(mod: Module) -> None:
    del find(mod, "resource", "google_secret_manager_secret_iam_member", "api_token_accessor")["for_each"]["delete"]
    problems = environment.check_secret_access(mod, tf_model.tf_functions(mod))
    for fn in ("delete", "archive"):
        assert (
            f"{fn}: mounts PREDICTIONS_API_TOKEN from google_secret_manager_secret.api_token, but its account has no "
            "roles/secretmanager.secretAccessor on it" in problems
        ), problems


def test_secret_accessor_for_a_function_that_mounts_nothing_is_caught(mod: Module) -> None:
    grant = find(mod, "resource", "google_secret_manager_secret_iam_member", "webhook_secret_accessor")
    grant["member"] = "${google_service_account.upload.member}"
    problems = environment.check_secret_access(mod, tf_model.tf_functions(mod))
    assert any("webhook: mounts WEBHOOK_SECRETS" in p for p in problems), problems
    assert any(
        "webhook_secret: roles/secretmanager.secretAccessor granted to google_service_account.upload.member, "
        "which mounts it in no function" in p
        for p in problems
    ), problems


def test_renamed_on_delete_is_caught(module: Module, tmp_path: Path) -> None:
    main = text("main.py").replace("def on_delete(", "def on_removal(")
    problems = packaging.check_entry_points(tf_model.tf_functions(module), entry_points_of(main, tmp_path))
    for fn in ("delete", "archive"):
        assert f"{fn}: entry point 'on_delete' is not a top-level function of main.py" in problems, problems


def test_delete_outputs_as_a_string_variable_is_caught(mod: Module) -> None:
    variable = tf_model.module_variables(mod)["delete_outputs"]
    variable["type"], variable["default"] = "string", "true"
    problems = variable_problems(mod)
    assert any(
        p.startswith("variable delete_outputs: type string, but DELETE_OUTPUTS is a flag setting") for p in problems
    ), problems


# The events topic -------------------------------------------------------------------


def topic_problems(module: Module) -> list[str]:
    return events.check_events_topic(module, tf_model.tf_functions(module), expectations.PUBLISHERS)


def event_env(module: Module) -> dict[str, Any]:
    env: dict[str, Any] = find_locals(module)["event_env"]
    return env


def test_missing_publisher_grant_is_caught(mod: Module) -> None:
    grant = find(mod, "resource", "google_pubsub_topic_iam_member", "events_publisher")
    grant["for_each"] = {
        name: f"${{google_service_account.{name}.member}}" for name in ("upload", "tasks", "reconcile", "delete")
    }
    problems = topic_problems(mod)
    assert (
        "webhook: publishes to google_pubsub_topic.events (EVENTS_TOPIC) but google_service_account.webhook.member "
        "has no roles/pubsub.publisher on it" in problems
    ), problems


def test_events_topic_given_by_short_name_is_caught(mod: Module) -> None:
    event_env(mod)["EVENTS_TOPIC"] = "${google_pubsub_topic.events.name}"
    problems = topic_problems(mod)
    assert any("EVENTS_TOPIC = google_pubsub_topic.events.name" in p and "(.id), not .name" in p for p in problems)


def test_events_topic_that_does_not_exist_is_caught(mod: Module) -> None:
    event_env(mod)["EVENTS_TOPIC"] = "${google_pubsub_topic.completions.id}"
    problems = topic_problems(mod)
    assert any("google_pubsub_topic.completions is not declared" in p for p in problems), problems


def test_function_without_events_topic_is_caught(mod: Module) -> None:
    reconcile = find(mod, "resource", "google_cloudfunctions2_function", "reconcile")
    one_block(reconcile, "service_config")["environment_variables"] = (
        "${merge(local.app_env, local.task_env, "
        "{WEBHOOK_URL = google_cloudfunctions2_function.webhook.service_config[0].uri})}"
    )
    assert "reconcile (reconcile): publishes completion events but sets no EVENTS_TOPIC" in topic_problems(mod)
    assert "reconcile (reconcile): does not set EVENTS_TOPIC, which it needs" in env_problems(mod)


def test_project_wide_publisher_for_a_runtime_account_is_caught(mod: Module) -> None:
    add_resource(
        mod,
        "google_project_iam_member",
        "tasks_publisher",
        {
            "project": "${var.project_id}",
            "role": "roles/pubsub.publisher",
            "member": "${google_service_account.tasks.member}",
        },
    )
    problems = topic_problems(mod)
    assert any(
        p.startswith("google_project_iam_member.tasks_publisher: roles/pubsub.publisher on the whole project")
        for p in problems
    )


def test_publisher_grant_for_another_account_is_caught(mod: Module) -> None:
    grant = find(mod, "resource", "google_pubsub_topic_iam_member", "events_publisher")
    grant["for_each"] = "${merge(local.announcers, {scheduler = google_service_account.scheduler.member})}"
    problems = topic_problems(mod)
    assert (
        "google_pubsub_topic.events: roles/pubsub.publisher granted to google_service_account.scheduler.member, "
        "which runs no function publishing to it" in problems
    ), problems


def test_wider_topic_role_is_caught(mod: Module) -> None:
    find(mod, "resource", "google_pubsub_topic_iam_member", "events_publisher")["role"] = "roles/pubsub.editor"
    problems = topic_problems(mod)
    assert any("roles/pubsub.editor granted to" in p and "publisher only" in p for p in problems), problems


# The notify switch ---------------------------------------------------------------------


def guard_problems(module: Module) -> list[str]:
    return tf_model.check_guarded_references(module)


def test_notify_queue_named_without_its_condition_is_caught(mod: Module) -> None:
    event_env(mod)["NOTIFY_QUEUE"] = "${google_cloud_tasks_queue.notify[0].id}"
    problems = queue_problems(mod)
    assert any(
        p.startswith("upload: NOTIFY_QUEUE = google_cloud_tasks_queue.notify[0].id, expected local.notify_enabled ?")
        for p in problems
    ), problems
    assert any(
        p.startswith(
            "local.event_env: google_cloud_tasks_queue.notify[0].id is used where local.notify_enabled may not"
        )
        for p in guard_problems(mod)
    ), guard_problems(mod)


def test_counted_queue_named_without_an_index_is_caught(mod: Module) -> None:
    event_env(mod)["NOTIFY_QUEUE"] = '${local.notify_enabled ? google_cloud_tasks_queue.notify.id : ""}'
    problems = guard_problems(mod)
    assert any("google_cloud_tasks_queue.notify.id names a counted resource without an index" in p for p in problems)


def test_notify_queue_wired_to_the_submit_queue_is_caught(mod: Module) -> None:
    event_env(mod)["NOTIFY_QUEUE"] = "${google_cloud_tasks_queue.submit.id}"
    problems = queue_problems(mod)
    assert (
        "upload: NOTIFY_QUEUE = google_cloud_tasks_queue.submit.id, expected local.notify_enabled ? "
        'google_cloud_tasks_queue.notify[0].id : "" (that is the submit queue)' in problems
    ), problems


def test_missing_notify_enqueuer_for_on_delete_is_caught(mod: Module) -> None:
    grant = find(mod, "resource", "google_cloud_tasks_queue_iam_member", "notify_enqueuer")
    only_upload = "{upload = google_service_account.upload.member}"
    grant["for_each"] = "${{for name, member in " + only_upload + " : name => member if local.notify_enabled}}"
    problems = grant_problems(mod)
    for fn in ("delete", "archive", "tasks", "webhook", "reconcile"):
        assert (
            f"{fn}: lacks roles/cloudtasks.enqueuer on google_cloud_tasks_queue.notify, which its code needs"
            in problems
        ), (fn, problems)


def test_unconditional_notify_grant_is_caught(mod: Module) -> None:
    find(mod, "resource", "google_cloud_tasks_queue_iam_member", "notify_enqueuer")["for_each"] = "${local.announcers}"
    problems = guard_problems(mod)
    assert any(
        p.startswith("google_cloud_tasks_queue_iam_member.notify_enqueuer: google_cloud_tasks_queue.notify[0].project")
        for p in problems
    ), problems


def test_notify_secret_mounted_unconditionally_is_caught(mod: Module) -> None:
    service = one_block(find(mod, "resource", "google_cloudfunctions2_function", "tasks"), "service_config")
    del service["dynamic"]
    service["secret_environment_variables"].append(
        {
            "key": "NOTIFY_SECRET",
            "project_id": "${var.project_id}",
            "secret": "${google_secret_manager_secret.notify_secret[0].secret_id}",
            "version": "latest",
            "__is_block__": True,
        }
    )
    problems = environment.check_secret_access(mod, tf_model.tf_functions(mod))
    assert any(p.startswith("tasks: mounts NOTIFY_SECRET unconditionally") for p in problems), problems
    assert any(
        p.startswith("google_cloudfunctions2_function.tasks: google_secret_manager_secret.notify_secret[0]")
        for p in guard_problems(mod)
    )


def test_notify_secret_missing_where_notify_url_is_set_is_caught(mod: Module) -> None:
    service = one_block(find(mod, "resource", "google_cloudfunctions2_function", "upload"), "service_config")
    del service["dynamic"]
    problems = environment.check_agreeing_settings(SETTINGS, tf_model.tf_functions(mod))
    assert (
        "upload: sets NOTIFY_URL but not NOTIFY_SECRET, which bgremove/config.py checks together with it at start"
        in problems
    ), problems
    assert "upload (on_upload): lacks the secret NOTIFY_SECRET, which it needs" in env_problems(mod)


def test_notify_secret_accessor_missing_is_caught(mod: Module) -> None:
    grant = find(mod, "resource", "google_secret_manager_secret_iam_member", "notify_secret_accessor")
    only_tasks = "{tasks = google_service_account.tasks.member}"
    grant["for_each"] = "${{for name, member in " + only_tasks + " : name => member if local.notify_enabled}}"
    problems = environment.check_secret_access(mod, tf_model.tf_functions(mod))
    assert any(
        p.startswith("reconcile: mounts NOTIFY_SECRET from google_secret_manager_secret.notify_secret")
        for p in problems
    )


def test_notify_queue_under_another_condition_is_caught(mod: Module) -> None:
    find(mod, "resource", "google_cloud_tasks_queue", "notify")["count"] = "${var.notifications ? 1 : 0}"
    problems = events.check_notify_switch(mod, tf_model.tf_functions(mod))
    assert any(
        p.startswith("google_cloud_tasks_queue.notify: exists when var.notifications, but the functions need it")
        for p in problems
    ), problems


def test_notify_switch_other_than_notify_url_is_caught(mod: Module) -> None:
    find_locals(mod)["notify_enabled"] = '${var.environment == "prod"}'
    problems = events.check_notify_switch(mod, tf_model.tf_functions(mod))
    assert any(
        p.startswith("google_secret_manager_secret.notify_secret: exists when local.notify_enabled") for p in problems
    )


def test_notify_queue_with_a_queue_level_target_is_caught(mod: Module) -> None:
    queue = find(mod, "resource", "google_cloud_tasks_queue", "notify")
    queue["http_target"] = [
        {"uri_override": [{"host": "customer.example.com", "__is_block__": True}], "__is_block__": True}
    ]
    problems = queue_problems(mod)
    assert any(p.startswith("google_cloud_tasks_queue.notify: a queue-level http_target overrides") for p in problems)


def test_hard_coded_notify_backoff_is_caught(mod: Module) -> None:
    one_block(find(mod, "resource", "google_cloud_tasks_queue", "notify"), "retry_config")["max_backoff"] = "300s"
    problems = queue_problems(mod)
    assert "google_cloud_tasks_queue.notify: retry_config.max_backoff must come from a module variable" in problems


def test_notify_tasks_aimed_at_the_customer_endpoint_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def straight_to_the_customer(job_id: str, name: str, event: dict[str, Any], cfg: Any) -> tasks.Task:
        return tasks.Task(cfg.notify_queue, name, cfg.notify_url, event)

    monkeypatch.setattr(tasks, "notify_task", straight_to_the_customer)  # as if bgremove/tasks.py did this
    routes = code_facts.task_routes()
    assert routes["notify"] == ("NOTIFY_QUEUE", "NOTIFY_URL")
    problems = queues.check_task_routes([], routes)
    assert any(p.startswith("notify tasks target NOTIFY_URL, not TASK_HANDLER_URL") for p in problems), problems


def test_notify_queue_without_the_oidc_account_is_caught(mod: Module) -> None:
    delete = find(mod, "resource", "google_cloudfunctions2_function", "delete")
    one_block(delete, "service_config")["environment_variables"] = (
        "${merge(local.app_env, local.event_env, {SUBMIT_QUEUE = google_cloud_tasks_queue.submit.id, "
        "DEADLINE_QUEUE = google_cloud_tasks_queue.deadline.id, TASK_HANDLER_URL = local.task_handler_url, "
        "WEBHOOK_URL = google_cloudfunctions2_function.webhook.service_config[0].uri})}"
    )
    routes = queues.check_task_routes(tf_model.tf_functions(mod), code_facts.task_routes())
    assert "delete: sets NOTIFY_QUEUE but not TASKS_SERVICE_ACCOUNT, which its notify tasks need" in routes, routes


# ---------------------------------------------------------------------------
# Monitoring (infra/checks/monitoring.py)
# ---------------------------------------------------------------------------


def test_the_real_module_passes_the_monitoring_checks(module: Module) -> None:
    assert monitoring.check_monitoring(module) == []


def alert_condition(module: Module, alert: str, index: int = 0) -> dict[str, Any]:
    conditions = find(module, "resource", "google_monitoring_alert_policy", alert)["conditions"]
    return one_block(conditions[index], "condition_threshold")


def test_alert_on_a_log_metric_by_literal_name_is_caught(mod: Module) -> None:
    condition = alert_condition(mod, "queue_age")
    condition["filter"] = condition["filter"].replace("${google_logging_metric.queue_age.name}", "bgr-dev-queue-age")
    assert any("queue_age" in p and "is not named as" in p for p in monitoring.check_metric_references(mod))


def test_alert_on_an_undeclared_metric_is_caught(mod: Module) -> None:
    condition = alert_condition(mod, "budget_held")
    condition["filter"] = condition["filter"].replace(
        "google_logging_metric.budget_held.", "google_logging_metric.held."
    )
    assert any("google_logging_metric.held is not declared" in p for p in monitoring.check_metric_references(mod))


def test_alert_on_a_label_the_metric_lacks_is_caught(mod: Module) -> None:
    condition = alert_condition(mod, "failure_share")
    condition["filter"] = condition["filter"].replace("metric.labels.state", "metric.labels.status")
    problems = monitoring.check_metric_references(mod)
    assert any("jobs_ended has no label 'status'" in p for p in problems), problems


def test_dashboard_chart_on_an_undeclared_metric_is_caught(mod: Module) -> None:
    for body in mod.values():
        for block in body.get("locals", []):
            if "dashboard" in block:
                tiles = block["dashboard"]["mosaicLayout"]["tiles"]
                query = tiles[3]["widget"]["xyChart"]["dataSets"][0]["timeSeriesQuery"]["timeSeriesFilter"]
                query["filter"] = query["filter"].replace("api_throttled.name", "api_429.name")
    problems = monitoring.check_metric_references(mod)
    assert any("dashboard" in p and "google_logging_metric.api_429 is not declared" in p for p in problems), problems


def test_5xx_alert_over_every_service_in_the_project_is_caught(mod: Module) -> None:
    for body in mod.values():
        for block in body.get("locals", []):
            if "monitoring_scope" in block:
                block["monitoring_scope"] = 'resource.type="cloud_run_revision"'
    problems = monitoring.check_builtin_metrics_scoped(mod)
    assert any("function_errors" in p and "not restricted" in p for p in problems), problems


def test_queue_depth_of_every_queue_is_caught(mod: Module) -> None:
    for body in mod.values():
        for block in body.get("locals", []):
            if "dashboard" in block:
                tiles = block["dashboard"]["mosaicLayout"]["tiles"]
                query = tiles[2]["widget"]["xyChart"]["dataSets"][0]["timeSeriesQuery"]["timeSeriesFilter"]
                query["filter"] = 'metric.type="cloudtasks.googleapis.com/queue/depth"'
    problems = monitoring.check_builtin_metrics_scoped(mod)
    assert any("Cloud Tasks metric not restricted" in p for p in problems), problems


def test_alert_without_channels_documentation_or_switch_is_caught(mod: Module) -> None:
    policy = find(mod, "resource", "google_monitoring_alert_policy", "webhooks_unauthorized")
    policy["notification_channels"] = []
    del policy["documentation"]
    policy["enabled"] = True
    problems = monitoring.check_alert_policies(mod)
    for wanted in ("notification_channels is not", "no documentation", "enabled is not var.alerts_enabled"):
        assert any("webhooks_unauthorized" in p and wanted in p for p in problems), (wanted, problems)


def test_hard_coded_alert_threshold_is_caught(mod: Module) -> None:
    alert_condition(mod, "function_errors")["threshold_value"] = 10
    problems = monitoring.check_alert_policies(mod)
    assert any("function_errors" in p and "var.alert_5xx_per_5m" in p for p in problems), problems


def test_dropped_alert_is_caught(mod: Module) -> None:
    for body in mod.values():
        for entry in body.get("resource", []):
            entry.get("google_monitoring_alert_policy", {}).pop("queue_age", None)
    assert "google_monitoring_alert_policy.queue_age is missing" in monitoring.check_alert_policies(mod)


def test_monthly_budget_without_its_preconditions_is_caught(mod: Module) -> None:
    submit = find(mod, "resource", "google_cloud_tasks_queue", "submit")
    lifecycle = one_block(submit, "lifecycle")
    lifecycle["precondition"] = [
        p for p in lifecycle["precondition"] if "monthly_prediction_budget" not in str(p["condition"])
    ]
    state = find(mod, "resource", "google_storage_bucket", "state")
    del state["lifecycle"]
    state["lifecycle_rule"] = [r for r in state["lifecycle_rule"] if "budget/" not in str(r)]
    problems = monitoring.check_budget_fits(mod)
    assert len(problems) == 3, problems
    assert any("submit" in p and "31 days" in p for p in problems)
    assert any("state_retention_days >= 32" in p for p in problems)
    assert any("budget/" in p for p in problems)


def test_a_week_long_retry_duration_is_not_enough_for_a_month(mod: Module) -> None:
    lifecycle = one_block(find(mod, "resource", "google_cloud_tasks_queue", "submit"), "lifecycle")
    for precondition in lifecycle["precondition"]:
        precondition["condition"] = str(precondition["condition"]).replace("2678400", "604800")
    assert any("submit" in p for p in monitoring.check_budget_fits(mod))
