"""Who and what may invoke each function: the storage trigger, the public webhook, the
scheduler-invoked reconciler and the private task handler (whose callers queues.py checks).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from infra.checks.tf_model import FUNCTION_TYPE, TfFunction, function_invokers
from infra.checks.tfparse import single, top_blocks, unwrap

FINALIZED = "google.cloud.storage.object.v1.finalized"
TASK_HANDLER_ENTRY_POINT = "on_task"
PUBLIC_MEMBERS = frozenset({"allUsers", "allAuthenticatedUsers"})
# Ingress settings that keep the internet out; Cloud Tasks in the project reaches both.
PRIVATE_INGRESS = frozenset({"ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"})


def check_access(module: Mapping[str, Mapping[str, Any]], functions: Iterable[TfFunction]) -> list[str]:
    """Storage trigger settings, and who may invoke each function."""
    problems: list[str] = []
    resources = list(top_blocks(module, "resource"))
    invokers = function_invokers(module)
    scheduled: dict[str, str] = {}
    for block in resources:
        if block.type != "google_cloud_scheduler_job":
            continue
        target = single(block.body, "http_target") or {}
        match = re.fullmatch(rf"{FUNCTION_TYPE}\.(\w+)\.service_config\[0\]\.uri", str(unwrap(target.get("uri"))))
        oidc = single(target, "oidc_token")
        if match and oidc:
            scheduled[match.group(1)] = str(unwrap(oidc.get("service_account_email")))
    for fn in functions:
        members = invokers.get(fn.name, set())
        if fn.event_trigger is not None:
            trigger = fn.event_trigger
            if trigger.get("event_type") != FINALIZED:
                problems.append(f"{fn.name}: event_type {trigger.get('event_type')!r}, expected {FINALIZED}")
            if trigger.get("retry_policy") != "RETRY_POLICY_RETRY":
                problems.append(f"{fn.name}: retry_policy must be RETRY_POLICY_RETRY (failures are dropped otherwise)")
            filters = {f.get("attribute"): unwrap(f.get("value")) for f in trigger.get("event_filters", [])}
            if set(filters) != {"bucket"}:
                problems.append(f"{fn.name}: the storage trigger must filter on bucket only, has {sorted(filters)}")
            if "trigger_region" not in trigger:
                problems.append(f"{fn.name}: trigger_region must be set to the bucket's location")
            account = unwrap(trigger.get("service_account_email"))
            if not account:
                problems.append(f"{fn.name}: the trigger needs its own service_account_email")
            elif str(account).replace(".email", ".member") not in members:
                problems.append(f"{fn.name}: the trigger's service account has no roles/run.invoker on the function")
            if fn.ingress != "ALLOW_INTERNAL_ONLY":
                problems.append(f"{fn.name}: an event-triggered function should use ALLOW_INTERNAL_ONLY ingress")
        elif fn.entry_point == TASK_HANDLER_ENTRY_POINT:
            if "allUsers" in members or "allAuthenticatedUsers" in members:
                problems.append(f"{fn.name}: the task handler has a public invoker; only Cloud Tasks may call it")
            if fn.ingress not in PRIVATE_INGRESS:
                problems.append(f"{fn.name}: the task handler must use internal ingress, not {fn.ingress!r}")
            # Who may call it, and with which token: check_task_handler.
        elif fn.ingress == "ALLOW_ALL":
            if "allUsers" not in members:
                problems.append(f"{fn.name}: public (ALLOW_ALL) but allUsers lacks roles/run.invoker")
        else:
            account = scheduled.get(fn.name)
            if account is None:
                problems.append(f"{fn.name}: internal HTTP function that no scheduler job calls with an OIDC token")
            elif account.replace(".email", ".member") not in members:
                problems.append(f"{fn.name}: the scheduler's service account has no roles/run.invoker on it")
        if "allUsers" in members and fn.ingress != "ALLOW_ALL" and fn.entry_point != TASK_HANDLER_ENTRY_POINT:
            problems.append(f"{fn.name}: allUsers may invoke it, but it is not the public webhook")
    return problems
