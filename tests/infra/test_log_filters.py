"""infra/checks/log_filters.py: the filter subset's parser and evaluator on hand-written entries, and
the module's real log-based metrics checked against SYNTHETIC log lines that follow the logging
contract (README, "Alerts and dashboard"), intact and broken. The stack-level test, on lines the
running functions really write, calls the same `problems(...)`."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra.checks import log_filters as lf
from infra.checks.log_filters import FilterError, matches, parse_filter


def entry(service: str = "bgr-dev-tasks", severity: str = "INFO", **payload: Any) -> dict[str, Any]:
    return {
        "severity": severity,
        "jsonPayload": payload,
        "resource": {"type": "cloud_run_revision", "labels": {"service_name": service}},
    }


# ---------------------------------------------------------------------------
# Parser and evaluator (pure)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        ('jsonPayload.event="job_ended"', True),
        ('jsonPayload.event="job_admitted"', False),
        ("jsonPayload.event=job_ended", True),  # a bare value
        ('resource.labels.service_name=~"^bgr-dev-"', True),
        ('resource.labels.service_name=~"^bgr-prod-"', False),
        ('resource.labels.service_name!~"webhook"', True),
        ("jsonPayload.state:*", True),
        ("jsonPayload.missing:*", False),
        ("severity>=WARNING", True),
        ("severity>WARNING", False),
        ("severity<ERROR", True),
        ("severity=WARNING", True),
        ("jsonPayload.queue_age_seconds>=3600", True),
        ("jsonPayload.queue_age_seconds>4000", False),
        ("jsonPayload.queue_age_seconds<4000.5", True),
        ("jsonPayload.queue_age_seconds=3600.0", True),
        ('NOT jsonPayload.state="completed"', True),
        ('NOT jsonPayload.missing="x"', True),  # NOT matches an entry without the field
        ('jsonPayload.missing="x"', False),
        ('jsonPayload.event="job_ended" AND jsonPayload.state="failed"', True),
        ('jsonPayload.event="job_ended" AND jsonPayload.state="completed"', False),
        ('jsonPayload.state="completed" OR jsonPayload.state="failed"', True),
        ('(jsonPayload.state="completed" OR jsonPayload.state="removed") AND severity>=WARNING', False),
        ('NOT (jsonPayload.state="completed" OR jsonPayload.state="removed")', True),
        # OR binds tighter than AND (Cloud Logging's precedence): (x OR failed) AND completed.
        ('jsonPayload.state="x" OR jsonPayload.state="failed" AND jsonPayload.state="completed"', False),
        ('jsonPayload.state="failed" AND jsonPayload.state="x" OR jsonPayload.reason="too_large"', True),
        ('jsonPayload.nested.deep="yes"', True),
        ("jsonPayload.flag=true", True),
    ],
)
def test_evaluates_the_subset(text: str, wanted: bool) -> None:
    sample = entry(
        severity="WARNING",
        event="job_ended",
        state="failed",
        reason="too_large",
        queue_age_seconds=3600,
        nested={"deep": "yes"},
        flag=True,
    )
    assert matches(parse_filter(text), sample) is wanted, text


@pytest.mark.parametrize(
    "text",
    [
        '"job_ended"',  # a bare value: a global search
        'jsonPayload.event="a" jsonPayload.state="b"',  # implicit AND
        'jsonPayload.event!="a"',
        'jsonPayload.message:"unauthorized"',  # ':' with a value (has)
        'jsonPayload.event="a" AND',
        '(jsonPayload.event="a"',
        "severity>=LOUD",
        'jsonPayload.age>"old"',
        'jsonPayload.event=~"("',
        "jsonPayload.event=~unquoted",
        'sample(insertId, 0.1) AND jsonPayload.event="a"',
        "",
    ],
)
def test_refuses_what_is_outside_the_subset(text: str) -> None:
    with pytest.raises(FilterError):
        parse_filter(text)


def test_extractors() -> None:
    sample = entry(state="failed", reason="api_422", status=429)
    assert lf.extract(lf.parse_extractor("EXTRACT(jsonPayload.state)"), sample) == "failed"
    assert lf.extract(lf.parse_extractor("EXTRACT(jsonPayload.status)"), sample) == "429"
    assert lf.extract(lf.parse_extractor("EXTRACT(jsonPayload.nothing)"), sample) is None
    assert lf.extract(lf.parse_extractor('REGEXP_EXTRACT(jsonPayload.reason, "api_(\\\\d+)")'), sample) == "422"
    assert lf.extract(lf.parse_extractor('REGEXP_EXTRACT(jsonPayload.state, "x(\\\\d+)")'), sample) is None
    for bad in ("jsonPayload.state", "EXTRACT(jsonPayload.state", 'REGEXP_EXTRACT(jsonPayload.state, "no group")'):
        with pytest.raises(FilterError):
            lf.parse_extractor(bad)


def test_lines_become_entries_as_cloud_logging_makes_them() -> None:
    lines = [
        "Serving function...",  # functions-framework's own text: skipped
        '{"severity": "WARNING", "message": "job ended", "time": "2026-12-04T10:00:00.000Z", "event": "job_ended"}',
        "[1, 2]",
        "{not json",
    ]
    (made,) = lf.entries_from_lines(lines, ["bgr-dev-tasks"])
    assert made == {
        "severity": "WARNING",
        "timestamp": "2026-12-04T10:00:00.000Z",
        "jsonPayload": {"message": "job ended", "event": "job_ended"},
        "resource": {"type": "cloud_run_revision", "labels": {"service_name": "bgr-dev-tasks"}},
    }
    assert len(lf.entries_from_lines(lines, ["bgr-dev-on-delete", "bgr-dev-on-archive"])) == 2


def test_stack_logs_map_processes_to_functions(tmp_path: Path) -> None:
    services = {
        "on_upload": ["bgr-dev-on-upload"],
        "on_task": ["bgr-dev-tasks"],
        "on_delete": ["bgr-dev-on-archive", "bgr-dev-on-delete"],
        "on_prediction_webhook": ["bgr-dev-webhook"],
        "reconcile": ["bgr-dev-reconcile"],
    }
    line = json.dumps({"severity": "INFO", "message": "m", "event": "x"}) + "\n"
    for process in ("function-trigger", "function-task-handler", "function-on_delete", "storage-emulator"):
        (tmp_path / f"{process}.log").write_text("starting\n" + line)
    by_dir = lf.entries_from_stack_logs(tmp_path, services)
    as_info = lf.entries_from_stack_logs({p.stem: str(p) for p in tmp_path.glob("*.log")}, services)
    for found in (by_dir, as_info):
        assert sorted(lf.lookup(e, "resource.labels.service_name") for e in found) == [
            "bgr-dev-on-archive", "bgr-dev-on-delete", "bgr-dev-on-upload", "bgr-dev-tasks",
        ]  # fmt: skip


def test_resolves_templates() -> None:
    values = {"name_prefix": "bgr-dev"}
    local_values = {"scope": 'x=~"^${var.name_prefix}-"', "task": "${var.name_prefix}-tasks"}
    functions = {"webhook": "${var.name_prefix}-webhook"}
    text = '${local.scope} AND y="${local.task}" AND z="${google_cloudfunctions2_function.webhook.name}" AND "$${x}"'
    assert lf.resolve(text, values, local_values, functions) == (
        'x=~"^bgr-dev-" AND y="bgr-dev-tasks" AND z="bgr-dev-webhook" AND "${x}"'
    )
    with pytest.raises(ValueError, match="cannot resolve"):
        lf.resolve("${upper(var.name_prefix)}", values, local_values, functions)


# ---------------------------------------------------------------------------
# The module's metrics against SYNTHETIC lines that follow the contract
# ---------------------------------------------------------------------------

# SYNTHETIC: hand-written lines in the shape the logging contract promises (one per event), with
# the process that writes each; not captured from the functions.
CONTRACT_LINES: dict[str, list[dict[str, Any]]] = {
    "function-trigger": [
        {
            "severity": "INFO",
            "message": "job admitted",
            "event": "job_admitted",
            "job_id": "j1",
            "object": "a.jpg",
            "generation": "1",
        },
        {
            "severity": "WARNING",
            "message": "job failed",
            "event": "job_ended",
            "job_id": "j9",
            "object": "x.txt",
            "state": "failed",
            "reason": "not_an_image",
        },
    ],
    "function-task-handler": [
        {
            "severity": "INFO",
            "message": "dispatched",
            "event": "submission_dispatched",
            "job_id": "j1",
            "queue_age_seconds": 12.5,
        },
        {
            "severity": "INFO",
            "message": "prediction created",
            "event": "prediction_created",
            "job_id": "j1",
            "prediction_id": "p1",
            "object": "a.jpg",
        },
        {
            "severity": "WARNING",
            "message": "api throttled",
            "event": "api_throttled",
            "status": 429,
            "method": "POST",
            "path": "/v1/predictions",
        },
        {
            "severity": "WARNING",
            "message": "held",
            "event": "budget_held",
            "job_id": "j2",
            "window": "day",
            "window_key": "2026-12-04",
            "spent": 100,
            "budget": 100,
        },
        {
            "severity": "INFO",
            "message": "released",
            "event": "budget_released",
            "job_id": "j2",
            "window": "day",
            "held_seconds": 3600,
        },
    ],
    "function-webhook": [
        {
            "severity": "INFO",
            "message": "job ended",
            "event": "job_ended",
            "job_id": "j1",
            "object": "a.jpg",
            "state": "completed",
            "reason": "completed",
        },
        {"severity": "WARNING", "message": "webhook unauthorized: bad signature", "outcome": "unauthorized"},
    ],
    "function-on_delete": [
        {
            "severity": "INFO",
            "message": "job ended",
            "event": "job_ended",
            "job_id": "j3",
            "object": "b.jpg",
            "state": "removed",
            "reason": "removed",
        },
    ],
}


def contract_entries(
    services: dict[str, list[str]], lines: dict[str, list[dict[str, Any]]] = CONTRACT_LINES
) -> list[dict[str, Any]]:
    entries = []
    for process, objects in lines.items():
        entry_point = lf.PROCESS_ENTRY_POINTS.get(process) or process.removeprefix("function-")
        entries += lf.entries_from_lines([json.dumps(o) for o in objects], services[entry_point])
    return entries


@pytest.fixture(scope="module")
def dev(tf: dict[str, dict[str, Any]]) -> tuple[list[lf.Metric], dict[str, list[str]]]:
    return lf.metrics_from_terraform("dev", tf), lf.function_services("dev", tf)


def test_the_module_declares_the_metrics(dev: tuple[list[lf.Metric], dict[str, list[str]]]) -> None:
    metrics, services = dev
    by_resource = {m.resource: m for m in metrics}
    assert set(by_resource) == {
        "jobs_admitted", "predictions_created", "jobs_ended", "api_throttled", "webhooks_unauthorized",
        "budget_held", "budget_released", "queue_age",
    }  # fmt: skip
    assert all(m.name.startswith("bgr-dev-") for m in metrics)
    assert by_resource["jobs_ended"].label_extractors == {
        "state": "EXTRACT(jsonPayload.state)",
        "reason": "EXTRACT(jsonPayload.reason)",
    }
    assert by_resource["queue_age"].value_type == "DISTRIBUTION"
    assert services["on_task"] == ["bgr-dev-tasks"]
    assert services["on_delete"] == ["bgr-dev-on-archive", "bgr-dev-on-delete"]


def test_every_filter_names_only_this_environments_functions(tf: dict[str, dict[str, Any]]) -> None:
    dev_services = [n for names in lf.function_services("dev", tf).values() for n in names]
    prod = lf.metrics_from_terraform("prod", tf)
    assert all(m.name.startswith("bgr-prod-") for m in prod)
    everything = contract_entries(lf.function_services("dev", tf)) + contract_entries(lf.function_services("prod", tf))
    for metric in prod:
        tree = parse_filter(metric.filter)
        hits = [e for e in everything if matches(tree, e)]
        assert hits, metric.name
        assert not any(lf.lookup(e, "resource.labels.service_name") in dev_services for e in hits), metric.name
        assert not any(lf.lookup(e, "resource.type") != "cloud_run_revision" for e in hits)


def test_the_real_metrics_pass_on_the_contract(dev: tuple[list[lf.Metric], dict[str, list[str]]]) -> None:
    metrics, services = dev
    entries = contract_entries(services)
    assert lf.problems(metrics, entries) == []
    by_resource = {m.resource: parse_filter(m.filter) for m in metrics}
    counted = {name: sum(matches(tree, e) for e in entries) for name, tree in by_resource.items()}
    # on_delete's line counts once per function that runs it (two offline-shared services).
    assert counted == {
        "jobs_admitted": 1, "predictions_created": 1, "jobs_ended": 4, "api_throttled": 1,
        "webhooks_unauthorized": 1, "budget_held": 1, "budget_released": 1, "queue_age": 1,
    }  # fmt: skip


def test_spend_counts_only_the_task_handler(dev: tuple[list[lf.Metric], dict[str, list[str]]]) -> None:
    metrics, services = dev
    (spend,) = [m for m in metrics if m.resource == "predictions_created"]
    line = {"severity": "INFO", "event": "prediction_created", "job_id": "j", "prediction_id": "p", "object": "o"}
    assert not matches(parse_filter(spend.filter), contract_entries(services, {"function-reconciler": [line]})[0])


def changed(metrics: list[lf.Metric], resource: str, **changes: Callable[[lf.Metric], Any]) -> list[lf.Metric]:
    """The metrics with one of them (by Terraform resource name) changed, each field to what its
    function makes of the metric: a breakage for the check to catch."""
    return [
        dataclasses.replace(m, **{k: make(m) for k, make in changes.items()}) if m.resource == resource else m
        for m in metrics
    ]


def test_a_misspelt_field_is_reported(dev: tuple[list[lf.Metric], dict[str, list[str]]]) -> None:
    metrics, services = dev
    broken = changed(
        metrics, "jobs_admitted", filter=lambda m: m.filter.replace("jsonPayload.event=", "jsonPayload.evnt=")
    )
    found = lf.problems(broken, contract_entries(services))
    assert any("jobs_admitted" in p and "names jsonPayload.evnt" in p for p in found), found
    assert any("jobs_admitted" in p and "matches none" in p for p in found), found


def test_a_label_extractor_on_a_missing_field_is_reported(dev: tuple[list[lf.Metric], dict[str, list[str]]]) -> None:
    metrics, services = dev
    broken = changed(
        metrics,
        "budget_held",
        label_extractors=lambda m: {**m.label_extractors, "window": "EXTRACT(jsonPayload.windw)"},
    )
    found = lf.problems(broken, contract_entries(services))
    assert any("budget_held" in p and "'window'" in p and "yields nothing" in p for p in found), found
    assert any("budget_held" in p and "names jsonPayload.windw" in p for p in found), found


def test_a_line_without_a_labelled_field_is_reported(dev: tuple[list[lf.Metric], dict[str, list[str]]]) -> None:
    metrics, services = dev
    lines = {**CONTRACT_LINES, "function-reconciler": [{"severity": "INFO", "event": "job_ended", "job_id": "j4"}]}
    found = lf.problems(metrics, contract_entries(services, lines))
    assert any("jobs_ended" in p and "'state'" in p and "1 of 5" in p for p in found), found


def test_a_filter_outside_the_subset_is_reported(dev: tuple[list[lf.Metric], dict[str, list[str]]]) -> None:
    metrics, services = dev
    broken = changed(metrics, "api_throttled", filter=lambda m: m.filter + ' AND jsonPayload.message:"queued"')
    found = lf.problems(broken, contract_entries(services))
    where = "google_logging_metric.api_throttled (bgr-dev-api-throttled)"
    assert found == [f"{where}: filter outside the checked subset: {_why(broken)}"]


def _why(metrics: list[lf.Metric]) -> str:
    (throttled,) = [m for m in metrics if m.resource == "api_throttled"]
    with pytest.raises(FilterError) as caught:
        parse_filter(throttled.filter)
    return str(caught.value)


def test_a_filter_for_another_function_is_reported(dev: tuple[list[lf.Metric], dict[str, list[str]]]) -> None:
    metrics, services = dev
    broken = changed(
        metrics, "webhooks_unauthorized", filter=lambda m: m.filter.replace("bgr-dev-webhook", "bgr-dev-tasks")
    )
    found = lf.problems(broken, contract_entries(services))
    assert any("webhooks_unauthorized" in p and "names jsonPayload.outcome" in p for p in found), found


def test_unmatched_metrics_may_be_allowed(dev: tuple[list[lf.Metric], dict[str, list[str]]]) -> None:
    metrics, services = dev
    lines = {
        p: [o for o in objects if o.get("event") not in ("budget_held", "budget_released")]
        for p, objects in CONTRACT_LINES.items()
    }
    entries = contract_entries(services, lines)
    assert {p.split(" ")[0] for p in lf.problems(metrics, entries)} == {
        "google_logging_metric.budget_held", "google_logging_metric.budget_released",
    }  # fmt: skip
    assert lf.problems(metrics, entries, unmatched_ok={"budget_held", "budget_released"}) == []


def test_descriptor_labels_must_match_the_extractors(dev: tuple[list[lf.Metric], dict[str, list[str]]]) -> None:
    metrics, services = dev
    broken = [
        dataclasses.replace(m, descriptor_labels=("state",)) if m.resource == "jobs_ended" else m for m in metrics
    ]
    found = lf.problems(broken, contract_entries(services))
    assert any("jobs_ended" in p and "differ" in p for p in found), found
