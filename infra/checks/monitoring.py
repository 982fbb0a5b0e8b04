"""The monitoring wiring (monitoring.tf): alert policies notify the configured channels and say what
to do; every chart and condition on a log-based metric names a metric the module declares (by
reference, so Terraform creates it first) and only labels that metric has; the built-in metrics are
restricted to this environment; thresholds come from variables; and a spend budget fits the queue
and the state bucket that hold it.

The log-based metrics' own filters are checked against log lines by log_filters.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from infra.checks.tfparse import Block, items, locals_of, single, top_blocks, unwrap

ALERT_TYPE = "google_monitoring_alert_policy"
DASHBOARD_TYPE = "google_monitoring_dashboard"
METRIC_TYPE = "google_logging_metric"
USER_METRIC_PREFIX = "logging.googleapis.com/user/"

# The alert policies the README documents: resource name -> the variable its threshold comes from
# (None: a fixed threshold, "any at all").
ALERTS = {
    "failure_share": "alert_failure_share",
    "queue_age": "alert_queue_age_seconds",
    "webhooks_unauthorized": "alert_unauthorized_webhooks_per_5m",
    "function_errors": "alert_5xx_per_5m",
    "budget_held": None,
}

Module = Mapping[str, Mapping[str, Any]]


def _expand_locals(text: str, local_values: Mapping[str, Any], depth: int = 0) -> str:
    """`${local.X}` replaced by X's text where X is a string local (recursively)."""
    if depth > 10:
        return text

    def replace(match: re.Match[str]) -> str:
        value = local_values.get(match.group(1))
        return _expand_locals(value, local_values, depth + 1) if isinstance(value, str) else match.group(0)

    return re.sub(r"\$\{\s*local\.(\w+)\s*\}", replace, text)


def _filters(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """(where, text) of every `filter` / `denominator_filter` string inside a body or a dashboard."""
    if isinstance(value, Mapping):
        for key, item in items(value):
            if key in ("filter", "denominator_filter") and isinstance(item, str):
                yield where, item
            else:
                yield from _filters(item, where)
    elif isinstance(value, list):
        for item in value:
            yield from _filters(item, where)


def monitoring_filters(module: Module) -> list[tuple[str, str]]:
    """(where, filter with string locals expanded) of every alert condition and dashboard chart."""
    local_values = locals_of(module)
    found: list[tuple[str, str]] = []
    for block in top_blocks(module, "resource"):
        if block.type == ALERT_TYPE:
            found += list(_filters(block.body, block.address))
        elif block.type == DASHBOARD_TYPE:
            source = str(unwrap(block.body.get("dashboard_json", ""))).strip()
            local = re.fullmatch(r"jsonencode\(\s*local\.(\w+)\s*\)", source)
            if not local or not isinstance(local_values.get(local.group(1)), Mapping):
                found.append((block.address, "<dashboard_json is not jsonencode(local.X) of an object>"))
                continue
            found += list(_filters(local_values[local.group(1)], f"{block.address} (local.{local.group(1)})"))
    return [(where, _expand_locals(text, local_values)) for where, text in found]


def _metric_labels(module: Module) -> dict[str, set[str]]:
    labels: dict[str, set[str]] = {}
    for block in top_blocks(module, "resource"):
        if block.type == METRIC_TYPE:
            descriptor = single(block.body, "metric_descriptor") or {}
            labels[block.name] = {str(label.get("key")) for label in descriptor.get("labels", [])}
    return labels


_USER_REF = re.compile(rf"{re.escape(USER_METRIC_PREFIX)}\$\{{\s*{METRIC_TYPE}\.(\w+)\.name\s*\}}")


def check_metric_references(module: Module) -> list[str]:
    """Every filter on a log-based metric names a declared google_logging_metric by reference (not
    by a literal name, which Terraform would not order after the metric's creation) and only the
    labels that metric declares; a filter names one metric type."""
    declared = _metric_labels(module)
    problems: list[str] = []
    for where, text in monitoring_filters(module):
        if text.startswith("<"):
            problems.append(f"{where}: {text}")
            continue
        types = re.findall(r'metric\.type\s*=\s*"([^"]*)"', text)
        if len(types) != 1:
            problems.append(f"{where}: filter names {len(types)} metric types, not one: {text}")
            continue
        if USER_METRIC_PREFIX not in types[0]:
            continue
        reference = _USER_REF.fullmatch(types[0])
        if reference is None:
            problems.append(
                f"{where}: log-based metric {types[0]!r} is not named as "
                f"{USER_METRIC_PREFIX}${{{METRIC_TYPE}.NAME.name}}"
            )
            continue
        metric = reference.group(1)
        if metric not in declared:
            problems.append(f"{where}: {METRIC_TYPE}.{metric} is not declared")
            continue
        for label in re.findall(r"metric\.labels?\.(\w+)", text):
            if label not in declared[metric]:
                problems.append(f"{where}: {METRIC_TYPE}.{metric} has no label {label!r}")
    return problems


def check_builtin_metrics_scoped(module: Module) -> list[str]:
    """Filters on Cloud Run's and Cloud Tasks' built-in metrics name only this environment's
    services (a service_name starting with the name prefix) and the submission queue."""
    problems: list[str] = []
    for where, text in monitoring_filters(module):
        if '"run.googleapis.com/' in text and not re.search(
            r'resource\.labels?\.service_name\s*=\s*(starts_with\(\s*"\$\{var\.name_prefix\}-"\s*\)|"\$\{)', text
        ):
            problems.append(f"{where}: a Cloud Run metric not restricted to this environment's services: {text}")
        if '"cloudtasks.googleapis.com/' in text and not re.search(
            r'resource\.labels?\.queue_id\s*=\s*"\$\{google_cloud_tasks_queue\.\w+\.name\}"', text
        ):
            problems.append(f"{where}: a Cloud Tasks metric not restricted to this module's queue: {text}")
    return problems


def _alerts(module: Module) -> dict[str, Block]:
    return {b.name: b for b in top_blocks(module, "resource") if b.type == ALERT_TYPE}


def _is_channels(expression: Any, local_values: Mapping[str, Any]) -> bool:
    text = str(unwrap(expression)).strip()
    local = re.fullmatch(r"local\.(\w+)", text)
    if local:
        text = str(unwrap(local_values.get(local.group(1), ""))).strip()
    return text == "var.alert_notification_channels"


def check_alert_policies(module: Module, expected: Mapping[str, str | None] = ALERTS) -> list[str]:
    """The documented alert policies exist; each notifies var.alert_notification_channels, follows
    var.alerts_enabled, carries markdown documentation, and takes its threshold from its variable."""
    local_values = locals_of(module)
    alerts = _alerts(module)
    problems = [f"{ALERT_TYPE}.{name} is missing" for name in sorted(set(expected) - set(alerts))]
    for name, block in sorted(alerts.items()):
        where = block.address
        if not _is_channels(block.body.get("notification_channels"), local_values):
            problems.append(f"{where}: notification_channels is not var.alert_notification_channels")
        if str(unwrap(block.body.get("enabled", ""))).strip() != "var.alerts_enabled":
            problems.append(f"{where}: enabled is not var.alerts_enabled")
        documentation = single(block.body, "documentation")
        if documentation is None or not str(documentation.get("content", "")).strip():
            problems.append(f"{where}: no documentation (what it means, what to do)")
        elif documentation.get("mime_type") != "text/markdown":
            problems.append(f"{where}: documentation is not text/markdown")
        thresholds = [
            str(unwrap(c["condition_threshold"][0].get("threshold_value", "")))
            for c in block.body.get("conditions", [])
            if single(c, "condition_threshold") is not None
        ]
        if not thresholds:
            problems.append(f"{where}: no threshold condition")
        variable = expected.get(name)
        if variable is not None and f"var.{variable}" not in thresholds:
            problems.append(f"{where}: no condition takes its threshold from var.{variable} ({thresholds})")
        for value in thresholds:
            if name in expected and variable is not None and not value.startswith("var."):
                problems.append(f"{where}: hard-coded threshold {value}")
    return problems


def _preconditions(block: Block) -> list[str]:
    lifecycle = single(block.body, "lifecycle") or {}
    return [str(unwrap(p.get("condition", ""))) for p in lifecycle.get("precondition", [])]


def _holds_a_month(condition: str) -> bool:
    """`var.monthly_prediction_budget == 0 || ...duration == 0 || ...duration >= N` with N >= 31 days."""
    at_least = re.search(r"var\.submit_queue_max_retry_duration_seconds >= (\d+)", condition)
    return (
        "var.monthly_prediction_budget == 0" in condition
        and "var.submit_queue_max_retry_duration_seconds == 0" in condition
        and at_least is not None
        and int(at_least.group(1)) >= 31 * 86400
    )


def check_budget_fits(module: Module) -> list[str]:
    """A monthly budget's hold (up to 31 days) fits the submission queue's retry duration and the
    state bucket's retention (preconditions), and the budget counters have their lifecycle rule."""
    problems: list[str] = []
    blocks = {b.address: b for b in top_blocks(module, "resource")}
    queue = blocks.get("google_cloud_tasks_queue.submit")
    if queue is None:
        return ["google_cloud_tasks_queue.submit is missing"]
    if not any(_holds_a_month(c) for c in _preconditions(queue)):
        problems.append(
            "google_cloud_tasks_queue.submit: no precondition that a monthly budget has a max retry "
            "duration of 0 or at least 31 days"
        )
    state = blocks.get("google_storage_bucket.state")
    if state is None:
        return [*problems, "google_storage_bucket.state is missing"]
    if not any(
        "var.monthly_prediction_budget == 0" in c and re.search(r"var\.state_retention_days >= (3[2-9]|[4-9]\d)", c)
        for c in _preconditions(state)
    ):
        problems.append(
            "google_storage_bucket.state: no precondition that a monthly budget has state_retention_days >= 32"
        )
    rules = [single(rule, "condition") or {} for rule in state.body.get("lifecycle_rule", [])]
    if not any(rule.get("matches_prefix") == ["budget/"] for rule in rules):
        problems.append("google_storage_bucket.state: no lifecycle rule for the budget/ counters")
    return problems


def check_monitoring(module: Module) -> list[str]:
    return (
        check_metric_references(module)
        + check_builtin_metrics_scoped(module)
        + check_alert_policies(module)
        + check_budget_fits(module)
    )
