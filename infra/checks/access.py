"""Who and what may invoke each function: the storage triggers, the public webhook, the
scheduler-invoked reconciler and the private task handler (whose callers queues.py checks).

Storage triggers: each event function's event type is one its entry point handles
(code_facts.storage_event_types: on_upload finalized, on_delete deleted and archived), on the
bucket the function's UPLOAD_BUCKET names, in that bucket's region, with retries; every type an
entry point handles is triggered exactly once, except `archived`, which Cloud Storage sends only
for buckets with object versioning (REFERENCE §9): triggered exactly when the bucket is versioned
(without it, deletes on a versioned bucket would never reach on_delete).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from infra.checks import code_facts
from infra.checks.tf_model import BUCKET_TYPE, FUNCTION_TYPE, TfFunction, function_invokers, reference
from infra.checks.tfparse import single, top_blocks, unwrap

FINALIZED = "google.cloud.storage.object.v1.finalized"
ARCHIVED = "google.cloud.storage.object.v1.archived"  # versioned buckets only
TASK_HANDLER_ENTRY_POINT = "on_task"
PUBLIC_MEMBERS = frozenset({"allUsers", "allAuthenticatedUsers"})
# Ingress settings that keep the internet out; Cloud Tasks in the project reaches both.
PRIVATE_INGRESS = frozenset({"ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"})


def check_access(
    module: Mapping[str, Mapping[str, Any]],
    functions: Iterable[TfFunction],
    event_types: Mapping[str, Iterable[str]] | None = None,
) -> list[str]:
    """Storage trigger settings, and who may invoke each function. `event_types` maps an event
    entry point to the storage event types its code handles (default: what the code says)."""
    functions = list(functions)
    handled = {
        entry: frozenset(types)
        for entry, types in (code_facts.storage_event_types() if event_types is None else event_types).items()
    }
    problems: list[str] = _trigger_coverage(module, functions, handled)
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
            wanted = handled.get(fn.entry_point or "")
            if wanted is None:
                problems.append(f"{fn.name}: entry point {fn.entry_point!r} handles no storage events")
            elif trigger.get("event_type") not in wanted:
                problems.append(
                    f"{fn.name}: event_type {trigger.get('event_type')!r}, but {fn.entry_point} handles "
                    f"{', '.join(sorted(wanted))}"
                )
            if trigger.get("retry_policy") != "RETRY_POLICY_RETRY":
                problems.append(f"{fn.name}: retry_policy must be RETRY_POLICY_RETRY (failures are dropped otherwise)")
            filters = {f.get("attribute"): unwrap(f.get("value")) for f in trigger.get("event_filters", [])}
            if set(filters) != {"bucket"}:
                problems.append(f"{fn.name}: the storage trigger must filter on bucket only, has {sorted(filters)}")
            bucket = reference(filters.get("bucket"), BUCKET_TYPE, "name")
            uploads = reference(fn.env.get("UPLOAD_BUCKET"), BUCKET_TYPE, "name")
            if "bucket" in filters and (bucket is None or bucket != uploads):
                problems.append(
                    f"{fn.name}: the trigger watches {filters.get('bucket')}, not the bucket its UPLOAD_BUCKET names "
                    f"({fn.env.get('UPLOAD_BUCKET')}): its events would all be ignored"
                )
            region = str(unwrap(trigger.get("trigger_region", ""))).strip()
            if "trigger_region" not in trigger:
                problems.append(f"{fn.name}: trigger_region must be set to the bucket's location")
            elif bucket and f"{BUCKET_TYPE}.{bucket}.location" not in region:
                problems.append(f"{fn.name}: trigger_region = {region}, not {BUCKET_TYPE}.{bucket}'s location")
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


def _versioned(module: Mapping[str, Mapping[str, Any]], bucket: str) -> bool | None:
    """Whether google_storage_bucket.<bucket> has object versioning on (None: no such bucket)."""
    for block in top_blocks(module, "resource"):
        if block.type == BUCKET_TYPE and block.name == bucket:
            versioning = single(block.body, "versioning") or {}
            return str(unwrap(versioning.get("enabled", False))).lower() == "true"
    return None


def _trigger_coverage(
    module: Mapping[str, Mapping[str, Any]], functions: list[TfFunction], handled: Mapping[str, frozenset[str]]
) -> list[str]:
    """Every event type an entry point handles is triggered once per bucket it watches; `archived`
    exactly when that bucket is versioned."""
    problems: list[str] = []
    triggered: dict[tuple[str, str], list[str]] = {}  # (entry point, bucket) -> event types
    for fn in functions:
        trigger = fn.event_trigger
        if trigger is None or fn.entry_point not in handled:
            continue
        filters = {f.get("attribute"): unwrap(f.get("value")) for f in trigger.get("event_filters", [])}
        bucket = reference(filters.get("bucket"), BUCKET_TYPE, "name") or str(filters.get("bucket"))
        triggered.setdefault((fn.entry_point or "", bucket), []).append(str(trigger.get("event_type")))
    for entry, wanted in sorted(handled.items()):
        buckets = sorted({bucket for (point, bucket) in triggered if point == entry})
        if not buckets and any(fn.entry_point == entry for fn in functions):
            problems.append(f"{entry}: no function triggers it")
        for bucket in buckets:
            types = triggered[(entry, bucket)]
            versioned = _versioned(module, bucket)
            for event_type in sorted(wanted):
                count = types.count(event_type)
                if event_type == ARCHIVED and versioned is False:
                    if count:
                        problems.append(
                            f"{entry}: triggered by {ARCHIVED} on {BUCKET_TYPE}.{bucket}, which has no versioning: "
                            "that event never comes"
                        )
                    continue
                if count == 0:
                    why = (
                        f" ({BUCKET_TYPE}.{bucket} is versioned: a delete or an overwrite archives the live version, "
                        "and deleted comes only for a version deleted for good)"
                        if event_type == ARCHIVED
                        else ""
                    )
                    problems.append(f"{entry}: no function is triggered by {event_type} on {bucket}{why}")
                elif count > 1:
                    problems.append(f"{entry}: {count} functions are triggered by {event_type} on {bucket}")
    return problems
