"""Completion events: the events topic, who publishes to it, and the notify switch.

- EVENTS_TOPIC is a declared google_pubsub_topic's `id` (config.py wants projects/P/topics/T),
  the same topic on every function;
- every function whose entry point publishes (bgremove/events.py: every one that ends jobs) has
  roles/pubsub.publisher on that topic through its runtime account, granted on the topic: no
  other role, no other member, nothing Pub/Sub on the project for a runtime account;
- the notify queue (the one NOTIFY_QUEUE names) and the NOTIFY_SECRET secret exist under the
  condition "NOTIFY_URL is set", which is when config.py needs them, and under no other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from infra.checks.tf_model import (
    QUEUE_TYPE,
    SECRET_TYPE,
    TOPIC_IAM_TYPE,
    TOPIC_TYPE,
    TfFunction,
    count_condition,
    guarded,
    members_of,
    reference,
)
from infra.checks.tfparse import Block, locals_of, top_blocks, unwrap

PUBLISHER = "roles/pubsub.publisher"
TOPIC_IAM_TYPES = frozenset({TOPIC_IAM_TYPE, "google_pubsub_topic_iam_binding"})


def _topic_of(block: Block) -> str | None:
    """The topic resource a topic IAM block grants on (`topic = google_pubsub_topic.X.name|id`)."""
    return reference(block.body.get("topic"), TOPIC_TYPE, "name") or reference(
        block.body.get("topic"), TOPIC_TYPE, "id"
    )


def check_events_topic(
    module: Mapping[str, Mapping[str, Any]], functions: Iterable[TfFunction], publishers: Iterable[str]
) -> list[str]:
    """EVENTS_TOPIC names the declared topic, and exactly the publishing functions may publish to it.

    `publishers` are the entry points whose code publishes (tests/infra/expectations.py).
    """
    functions = list(functions)
    publishing = set(publishers)
    problems: list[str] = []
    topics = {b.name for b in top_blocks(module, "resource") if b.type == TOPIC_TYPE}
    local_values = locals_of(module)
    granted: dict[str, set[tuple[str, str]]] = {}  # member -> {(topic, role)}
    for block in top_blocks(module, "resource"):
        role = str(block.body.get("role", ""))
        if block.type in TOPIC_IAM_TYPES:
            topic = _topic_of(block)
            if topic is None or topic not in topics:
                problems.append(f"{block.address}: topic must be {TOPIC_TYPE}.<topic>.name of a declared topic")
                continue
            members = block.body.get("members") if "members" in block.body else members_of(block, local_values)
            for member in members if isinstance(members, list) else [str(members)]:
                granted.setdefault(str(unwrap(member)), set()).add((topic, role))
    runtime = {fn.runtime_member: fn for fn in functions if fn.runtime_member}
    for block in top_blocks(module, "resource"):
        role = str(block.body.get("role", ""))
        if block.type in ("google_project_iam_member", "google_project_iam_binding") and role.startswith(
            "roles/pubsub."
        ):
            for member in members_of(block, local_values):
                if member in runtime:
                    problems.append(
                        f"{block.address}: {role} on the whole project for {member}; grant it on the topic only"
                    )
    named: dict[str, set[str]] = {}  # topic -> runtime members of the functions that name it
    for fn in functions:
        expression = fn.env.get("EVENTS_TOPIC")
        entry = fn.entry_point or ""
        if expression is None:
            if entry in publishing:
                problems.append(f"{fn.name} ({entry}): publishes completion events but sets no EVENTS_TOPIC")
            continue
        topic = reference(expression, TOPIC_TYPE, "id")
        if topic is None:
            other = re.fullmatch(rf"{TOPIC_TYPE}\.(\w+)\.(\w+)", expression.strip())
            why = (
                f"config.py needs the full path projects/P/topics/T (.id), not .{other.group(2)}"
                if other
                else "not a topic resource's id"
            )
            problems.append(f"{fn.name}: EVENTS_TOPIC = {expression}, expected {TOPIC_TYPE}.<topic>.id ({why})")
            continue
        if topic not in topics:
            problems.append(f"{fn.name}: EVENTS_TOPIC = {expression}, but {TOPIC_TYPE}.{topic} is not declared")
            continue
        if fn.runtime_member is None:
            problems.append(f"{fn.name}: its runtime account is not a google_service_account of the module")
            continue
        named.setdefault(topic, set()).add(fn.runtime_member)
        if entry not in publishing:
            problems.append(f"{fn.name} ({entry}): sets EVENTS_TOPIC, but its entry point publishes nothing")
        elif (topic, PUBLISHER) not in granted.get(fn.runtime_member, set()):
            problems.append(
                f"{fn.name}: publishes to {TOPIC_TYPE}.{topic} (EVENTS_TOPIC) but {fn.runtime_member} has no "
                f"{PUBLISHER} on it"
            )
    if len(named) > 1:
        problems.append(f"EVENTS_TOPIC names different topics on different functions: {sorted(named)}")
    for member, grants in sorted(granted.items()):
        for topic, role in sorted(grants):
            if role != PUBLISHER:
                problems.append(f"{TOPIC_TYPE}.{topic}: {role} granted to {member}; publishing needs {PUBLISHER} only")
            elif member not in named.get(topic, set()):
                problems.append(
                    f"{TOPIC_TYPE}.{topic}: {PUBLISHER} granted to {member}, which runs no function publishing to it"
                )
    return problems


NOTIFY_SWITCH = 'var.notify_url != ""'


def _resolved(condition: str, local_values: Mapping[str, Any]) -> str:
    """A condition with a `local.X` it consists of replaced by that local's expression."""
    local = re.fullmatch(r"local\.(\w+)", condition.strip())
    if local and local.group(1) in local_values:
        return str(unwrap(local_values[local.group(1)])).strip()
    return condition.strip()


def check_notify_switch(module: Mapping[str, Mapping[str, Any]], functions: Iterable[TfFunction]) -> list[str]:
    """The notify queue and the NOTIFY_SECRET secret exist exactly when NOTIFY_URL is set.

    config.py needs NOTIFY_QUEUE and NOTIFY_SECRET whenever NOTIFY_URL is non-empty, and nothing
    reads them otherwise: a resource made under another condition (or one kept when NOTIFY_URL
    is set) either breaks the start of every function or is made for nothing. NOTIFY_URL itself
    must be var.notify_url, the switch.
    """
    functions = list(functions)
    problems: list[str] = []
    local_values = locals_of(module)
    blocks = {(b.type, b.name): b for b in top_blocks(module, "resource")}
    dependents: set[tuple[str, str]] = set()
    for fn in functions:
        url = fn.env.get("NOTIFY_URL")
        if url is not None and url.strip() != "var.notify_url":
            problems.append(f"{fn.name}: NOTIFY_URL = {url}; it must be var.notify_url, the notify switch")
        queue = fn.env.get("NOTIFY_QUEUE")
        if queue is not None:
            name = reference(guarded(queue)[1], QUEUE_TYPE, "id")
            if name:
                dependents.add((QUEUE_TYPE, name))
        secret = fn.secret_env.get("NOTIFY_SECRET")
        if secret is not None:
            name = reference(secret.get("secret"), SECRET_TYPE, "secret_id")
            if name:
                dependents.add((SECRET_TYPE, name))
    for key in sorted(dependents):
        block = blocks.get(key)
        if block is None:
            continue  # undeclared: check_queues, check_secret_access
        condition = count_condition(block)
        if condition is None:
            if "count" in block.body or "for_each" in block.body:
                problems.append(f"{block.address}: count must be `{NOTIFY_SWITCH} ? 1 : 0` (or a local holding it)")
            continue  # always there: nothing breaks, it is only made for nothing while notify is off
        if _resolved(condition, local_values) != NOTIFY_SWITCH:
            problems.append(
                f"{block.address}: exists when {condition}, but the functions need it exactly when NOTIFY_URL is set "
                f"({NOTIFY_SWITCH})"
            )
    return problems
