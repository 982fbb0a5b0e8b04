"""The Terraform deploys what the code expects: entry points, environment, runtime, archive, access,
queues, the task handler, the events topic and the notify switch."""

from __future__ import annotations

import re
import sys
import tomllib
from typing import Any

import pytest

from bgremove import config, tasks
from bgremove.config import Setting
from infra.checks import access, code_facts, environment, events, monitoring, packaging, queues, tf_model
from infra.checks.tfparse import REPO_ROOT, locals_of, single, top_blocks, unwrap
from tests.infra import expectations

EXPECTED_ENTRY_POINTS = expectations.ENTRY_POINTS


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
def functions(module: dict[str, dict[str, Any]]) -> list[tf_model.TfFunction]:
    found = tf_model.tf_functions(module)
    assert found, "the module defines no cloud functions"
    return found


@pytest.fixture(scope="module")
def settings() -> tuple[Setting, ...]:
    found = code_facts.settings()
    assert {"UPLOAD_BUCKET", "WEBHOOK_SECRETS", "LOG_LEVEL"} <= {s.env for s in found}
    return found


@pytest.fixture(scope="module")
def entry_points() -> code_facts.EntryPoints:
    found = code_facts.entry_points()
    assert found is not None, "main.py is missing"
    return found


def test_one_function_per_entry_point_and_on_delete_per_event_type(functions: list[tf_model.TfFunction]) -> None:
    by_entry: dict[str, list[tf_model.TfFunction]] = {}
    for fn in functions:
        by_entry.setdefault(fn.entry_point or "", []).append(fn)
    assert set(by_entry) == set(EXPECTED_ENTRY_POINTS)
    for entry, kind in EXPECTED_ENTRY_POINTS.items():
        assert all((fn.event_trigger is not None) == (kind == "cloud_event") for fn in by_entry[entry]), entry
    # A function has one event_trigger: on_delete is deployed once per event type it handles.
    assert {fn.name: (fn.event_trigger or {}).get("event_type") for fn in by_entry["on_delete"]} == {
        "delete": "google.cloud.storage.object.v1.deleted",
        "archive": "google.cloud.storage.object.v1.archived",
    }
    assert all(len(by_entry[entry]) == 1 for entry in EXPECTED_ENTRY_POINTS if entry != "on_delete")
    (deleted, archived) = by_entry["on_delete"]
    for attribute in ("runtime", "service_account", "env", "secret_env", "ingress", "timeout"):
        assert getattr(deleted, attribute) == getattr(archived, attribute), attribute


def test_main_registers_every_entry_point_with_its_decorator(entry_points: code_facts.EntryPoints) -> None:
    registered = {name: code_facts.DECORATORS[signature] for name, signature in entry_points.signatures.items()}
    assert registered == EXPECTED_ENTRY_POINTS
    assert set(registered) <= entry_points.functions


def test_entry_points_exist_with_the_right_decorator(
    functions: list[tf_model.TfFunction], entry_points: code_facts.EntryPoints
) -> None:
    assert packaging.check_entry_points(functions, entry_points) == []


def test_runtime_matches_the_project_python(functions: list[tf_model.TfFunction]) -> None:
    assert project_python() == sys.version_info[:2], "tests must run on the project's Python"
    assert packaging.check_runtime(functions, project_python()) == []


def test_environment_read_equals_environment_set(
    settings: tuple[Setting, ...], functions: list[tf_model.TfFunction]
) -> None:
    assert environment.check_environment(settings, functions) == []


def test_secrets_go_only_where_needed(functions: list[tf_model.TfFunction]) -> None:
    secrets = {fn.entry_point: set(fn.secret_env) for fn in functions}
    # NOTIFY_SECRET everywhere (only while notify_url is set): config.py checks it wherever
    # NOTIFY_URL is set, and every function needs NOTIFY_URL to enqueue its notifications.
    assert secrets == {
        "on_upload": {"NOTIFY_SECRET"},  # it only admits into the queue; the task handler calls the API
        "on_delete": {"PREDICTIONS_API_TOKEN", "NOTIFY_SECRET"},  # cancels a replaced upload's prediction
        "on_task": {"PREDICTIONS_API_TOKEN", "NOTIFY_SECRET"},
        "on_prediction_webhook": {"WEBHOOK_SECRETS", "NOTIFY_SECRET"},
        "reconcile": {"PREDICTIONS_API_TOKEN", "NOTIFY_SECRET"},
    }
    for fn in functions:
        assert fn.secret_guards == {"NOTIFY_SECRET": "google_secret_manager_secret.notify_secret"}, fn.name


def test_mounted_secrets_are_readable_by_their_function_only(
    module: dict[str, dict[str, Any]], functions: list[tf_model.TfFunction]
) -> None:
    assert environment.check_secret_access(module, functions) == []


def test_settings_checked_together_are_set_together(
    settings: tuple[Setting, ...], functions: list[tf_model.TfFunction]
) -> None:
    by_env = {s.env: s for s in settings}
    assert "NOTIFY_URL" in by_env["NOTIFY_SECRET"].agrees_with
    assert "NOTIFY_URL" in by_env["NOTIFY_QUEUE"].agrees_with
    assert environment.check_agreeing_settings(settings, functions) == []


def test_each_function_sets_exactly_what_its_entry_point_needs(
    settings: tuple[Setting, ...], functions: list[tf_model.TfFunction]
) -> None:
    assert set(expectations.TASK_ENV) <= {s.env for s in settings}, "config.py no longer reads the task settings"
    assert (
        environment.check_function_environment(settings, functions, expectations.EXTRA_ENV, expectations.SECRETS) == []
    )


def test_offline_only_variables_are_never_set(functions: list[tf_model.TfFunction]) -> None:
    # That nothing else is read outside config.py: tests/unit/test_config.py.
    offline = code_facts.offline_variables()
    assert offline == {
        "CLOUD_TASKS_EMULATOR_HOST": "bgremove/tasks.py",
        "PUBSUB_EMULATOR_HOST": "bgremove/events.py",
    }, offline
    assert environment.check_offline_only(functions, offline) == []
    assert not any("CLOUD_TASKS_EMULATOR_HOST" in fn.env for fn in functions)


def test_settings_are_module_variables_with_config_defaults(
    settings: tuple[Setting, ...], functions: list[tf_model.TfFunction], module: dict[str, dict[str, Any]]
) -> None:
    assert environment.check_settings(settings, functions, tf_model.module_variables(module)) == []


def test_setting_variables_validate_as_config_does(
    settings: tuple[Setting, ...], module: dict[str, dict[str, Any]]
) -> None:
    variables = tf_model.module_variables(module)
    assert environment.check_setting_variables(settings, variables) == []
    # The validations the check compares (where Terraform declares none, nothing is compared).
    assert tf_model.validation_of("signed_url_ttl_seconds", variables["signed_url_ttl_seconds"]) == (
        tf_model.Validation(minimum=60, maximum=604800)
    )
    log_level = tf_model.validation_of("log_level", variables["log_level"])
    assert log_level.choices == ("DEBUG", "INFO", "WARNING", "ERROR") and log_level.upper


def test_webhook_url_points_at_the_webhook_function(functions: list[tf_model.TfFunction]) -> None:
    for fn in functions:
        if fn.entry_point in ("on_task", "reconcile", "on_delete"):  # create, read or cancel predictions
            assert fn.env["WEBHOOK_URL"] == "google_cloudfunctions2_function.webhook.service_config[0].uri"
        else:  # the webhook cannot know its own URL (a cycle); on_upload creates no prediction
            assert "WEBHOOK_URL" not in fn.env, fn.name


def test_queue_variables_point_at_the_queues(
    module: dict[str, dict[str, Any]], functions: list[tf_model.TfFunction]
) -> None:
    assert queues.check_queues(module, functions, expectations.QUEUES, tf_model.module_variables(module)) == []
    for fn in functions:  # every function (runtime.task_queue wants all of them, even for notifications only)
        assert fn.env["SUBMIT_QUEUE"] == "google_cloud_tasks_queue.submit.id"
        assert fn.env["DEADLINE_QUEUE"] == "google_cloud_tasks_queue.deadline.id"
        assert fn.env["NOTIFY_QUEUE"] == 'local.notify_enabled ? google_cloud_tasks_queue.notify[0].id : ""'


def test_every_kind_of_task_goes_to_the_task_handler(functions: list[tf_model.TfFunction]) -> None:
    routes = code_facts.task_routes()
    assert routes == {
        "submit": ("SUBMIT_QUEUE", "TASK_HANDLER_URL"),
        "deadline": ("DEADLINE_QUEUE", "TASK_HANDLER_URL"),
        "notify": ("NOTIFY_QUEUE", "TASK_HANDLER_URL"),
    }
    assert set(routes) == {kind.value for kind in tasks.Kind}, "a task kind the routes do not cover"
    assert queues.check_task_routes(functions, routes) == []


def test_queue_defaults_follow_the_api_limits(module: dict[str, dict[str, Any]]) -> None:
    variables = tf_model.module_variables(module)
    # 600 creates a minute; 3000 other calls a minute (a deadline check reads one prediction).
    assert variables["submit_queue_max_dispatches_per_second"]["default"] == 10
    assert variables["deadline_queue_max_dispatches_per_second"]["default"] == 50
    assert variables["submit_queue_max_attempts"]["default"] == -1
    assert variables["submit_queue_max_retry_duration_seconds"]["default"] == 7 * 24 * 3600
    assert variables["submit_queue_min_backoff_seconds"]["default"] == 10
    assert variables["submit_queue_max_backoff_seconds"]["default"] == 600
    assert variables["submit_queue_max_doublings"]["default"] == 5
    assert variables["api_max_attempts"]["default"] == 1, "no sleeping inside billed functions: the queue retries"
    # What bounds a queued task, and what the operator sees when it runs out, is documented.
    description = variables["submit_queue_max_retry_duration_seconds"]["description"]
    assert "31-day" in description and "QUEUED_CHECK_SECONDS" in description
    for name, variable in variables.items():
        assert str(variable.get("description", "")).strip(), f"variable {name} has no description"


def test_environments_set_their_own_pace(
    roots: dict[str, dict[str, dict[str, Any]]], module: dict[str, dict[str, Any]]
) -> None:
    def root_default(root: str, name: str) -> Any:
        for body in roots[root].values():
            for entry in body.get("variable", []):
                if name in entry:
                    return entry[name].get("default")
        raise KeyError(name)

    module_defaults = tf_model.module_variables(module)
    for root in ("infra/envs/dev", "infra/envs/prod"):
        (call,) = [b for body in roots[root].values() for e in body.get("module", []) for b in e.values()]
        for name in ("submit_queue_max_dispatches_per_second", "deadline_queue_max_dispatches_per_second"):
            assert unwrap(call[name]) == f"var.{name}", (root, name)
    prod, dev = "infra/envs/prod", "infra/envs/dev"
    rate = "submit_queue_max_dispatches_per_second"
    assert root_default(prod, rate) == module_defaults[rate]["default"] == 10
    assert 0 < root_default(dev, rate) < root_default(prod, rate)
    for root in (prod, dev):
        assert root_default(root, "task_max_instances") >= root_default(root, "submit_queue_max_concurrent_dispatches")


def test_task_handler_is_private_and_reached_at_its_url(
    module: dict[str, dict[str, Any]], functions: list[tf_model.TfFunction]
) -> None:
    deadline = code_facts.dispatch_deadline_seconds()
    assert deadline == 60.0
    assert queues.check_task_handler(module, functions, tf_model.module_variables(module), deadline) == []
    (handler,) = [fn for fn in functions if fn.entry_point == "on_task"]
    assert handler.ingress == "ALLOW_INTERNAL_ONLY"
    assert tf_model.function_invokers(module)[handler.name] == {"google_service_account.tasks_invoker.member"}
    url = locals_of(module)["task_handler_url"]
    assert url.startswith("https://${local.task_function_name}-") and url.endswith(".run.app")
    assert all(fn.env.get("TASK_HANDLER_URL", "local.task_handler_url") == "local.task_handler_url" for fn in functions)


def test_queue_grants_are_least_privilege(
    module: dict[str, dict[str, Any]], functions: list[tf_model.TfFunction]
) -> None:
    assert queues.check_queue_grants(module, functions, expectations.QUEUE_GRANTS) == []
    project_roles = {
        str(block.body.get("role"))
        for block in top_blocks(module, "resource")
        if block.type == "google_project_iam_member"
    }
    assert not any(role.startswith("roles/cloudtasks.") for role in project_roles), project_roles


def test_queues_enable_logging_and_have_no_queue_level_target(module: dict[str, dict[str, Any]]) -> None:
    queues = {b.name: b.body for b in top_blocks(module, "resource") if b.type == "google_cloud_tasks_queue"}
    assert set(queues) == {"submit", "deadline", "notify"}
    for name, body in queues.items():
        assert single(body, "stackdriver_logging_config") is not None, name
        # Each task names its own URL and OIDC token (bgremove/tasks.py); a queue-level
        # http_target would override them.
        assert "http_target" not in body, name


def test_source_archive_holds_only_the_function_code(module: dict[str, dict[str, Any]]) -> None:
    assert packaging.check_source_archive(module, REPO_ROOT) == []
    deployed = packaging.simulate_fileset(REPO_ROOT, ["main.py", "requirements.txt", "bgremove/**"])
    assert {path.split("/", 1)[0] for path in deployed} <= {"main.py", "requirements.txt", "bgremove"}


def test_imports_resolve_to_requirements() -> None:
    assert packaging.check_imports(deployed_sources(), read("requirements.txt")) == []


def test_triggers_and_invokers(module: dict[str, dict[str, Any]], functions: list[tf_model.TfFunction]) -> None:
    assert access.check_access(module, functions) == []


def test_checks_import_the_settings_table(settings: tuple[Setting, ...]) -> None:
    # The table load_config reads, as values (1024 * 1024 and the like already computed), not a copy.
    by_env = {s.env: s for s in settings}
    assert settings is config.SETTINGS
    assert by_env["WEBHOOK_MAX_BODY_BYTES"].default == 1024 * 1024
    assert by_env["UPLOAD_BUCKET"].required
    assert by_env["ALLOWED_CONTENT_TYPES"].kind == "names"
    assert by_env["PREDICTIONS_API_TOKEN"].secret


def test_deletions_are_triggered_on_the_uploads_bucket(
    module: dict[str, dict[str, Any]], functions: list[tf_model.TfFunction]
) -> None:
    assert code_facts.storage_event_types()["on_delete"] == {
        "google.cloud.storage.object.v1.deleted",
        "google.cloud.storage.object.v1.archived",
    }
    uploads = next(b for b in top_blocks(module, "resource") if b.address == "google_storage_bucket.uploads")
    assert unwrap((single(uploads.body, "versioning") or {}).get("enabled")) is True  # so archived comes
    for fn in functions:
        if fn.entry_point == "on_delete":
            trigger = fn.event_trigger or {}
            assert trigger["retry_policy"] == "RETRY_POLICY_RETRY"
            assert [unwrap(f["value"]) for f in trigger["event_filters"]] == ["google_storage_bucket.uploads.name"]
            assert fn.service_account == "google_service_account.delete.email"
            invokers = tf_model.function_invokers(module)[fn.name]
            assert invokers == {"google_service_account.trigger.member"}, fn.name


def test_events_topic_and_its_publishers(
    module: dict[str, dict[str, Any]], functions: list[tf_model.TfFunction]
) -> None:
    assert events.check_events_topic(module, functions, expectations.PUBLISHERS) == []
    assert {fn.env["EVENTS_TOPIC"] for fn in functions} == {"google_pubsub_topic.events.id"}


def test_notify_queue_secret_and_grants_exist_only_with_notify_url(
    module: dict[str, dict[str, Any]], functions: list[tf_model.TfFunction]
) -> None:
    assert events.check_notify_switch(module, functions) == []
    assert tf_model.check_guarded_references(module) == []
    assert locals_of(module)["notify_enabled"] == '${var.notify_url != ""}'
    conditional = {
        block.address: tf_model.count_condition(block) or tf_model.condition_of(block.body.get("for_each", ""))
        for block in top_blocks(module, "resource")
        if block.name.startswith(("notify", "notifiers"))
    }
    assert conditional == {
        "google_cloud_tasks_queue.notify": "local.notify_enabled",
        "google_cloud_tasks_queue_iam_member.notify_enqueuer": "local.notify_enabled",
        "google_secret_manager_secret.notify_secret": "local.notify_enabled",
        "google_secret_manager_secret_iam_member.notify_secret_accessor": "local.notify_enabled",
        "google_service_account_iam_member.notifiers_act_as_tasks_invoker": "local.notify_enabled",
    }


def test_notify_queue_retries_suit_a_receiver_that_is_down(module: dict[str, dict[str, Any]]) -> None:
    variables = tf_model.module_variables(module)
    defaults = {name: variables[f"notify_queue_{name}"]["default"] for name in (
        "max_attempts", "max_retry_duration_seconds", "min_backoff_seconds", "max_backoff_seconds", "max_doublings",
        "max_dispatches_per_second", "max_concurrent_dispatches",
    )}  # fmt: skip
    assert defaults == {
        "max_attempts": -1,
        "max_retry_duration_seconds": 3 * 24 * 3600,  # a receiver down over a weekend
        "min_backoff_seconds": 10,
        "max_backoff_seconds": 300,  # back within about 5 minutes of the receiver
        "max_doublings": 5,
        "max_dispatches_per_second": 20,  # above the submission rate: a backlog drains
        "max_concurrent_dispatches": 20,
    }
    # A hanging receiver must not take every task-handler instance from the submissions.
    assert defaults["max_concurrent_dispatches"] < variables["task_max_instances"]["default"] / 2


def test_environments_pass_the_lifecycle_variables(roots: dict[str, dict[str, dict[str, Any]]]) -> None:
    for root in ("infra/envs/dev", "infra/envs/prod"):
        (call,) = [b for body in roots[root].values() for e in body.get("module", []) for b in e.values()]
        for name in ("delete_outputs", "cache_control", "output_url_base", "notify_url"):
            assert unwrap(call[name]) == f"var.{name}", (root, name)


def test_environments_pass_the_budget_and_alert_variables(roots: dict[str, dict[str, dict[str, Any]]]) -> None:
    for root in ("infra/envs/dev", "infra/envs/prod"):
        (call,) = [b for body in roots[root].values() for e in body.get("module", []) for b in e.values()]
        for name in ("daily_prediction_budget", "monthly_prediction_budget", "alert_notification_channels"):
            assert unwrap(call[name]) == f"var.{name}", (root, name)


def test_monitoring_is_wired(module: dict[str, dict[str, Any]]) -> None:
    assert monitoring.check_monitoring(module) == []
    alerts = {b.name for b in top_blocks(module, "resource") if b.type == monitoring.ALERT_TYPE}
    assert alerts == set(monitoring.ALERTS)
    dashboards = [b for b in top_blocks(module, "resource") if b.type == monitoring.DASHBOARD_TYPE]
    assert len(dashboards) == 1
    charted = " ".join(text for where, text in monitoring.monitoring_filters(module) if "dashboard" in where)
    for metric in ("jobs_admitted", "jobs_ended", "api_throttled", "predictions_created", "budget_held"):
        assert f"google_logging_metric.{metric}.name" in charted, metric
    assert "cloudtasks.googleapis.com/queue/depth" in charted
