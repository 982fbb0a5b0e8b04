"""Cloud Tasks: the queues, their task handler and the grants around them.

- SUBMIT_QUEUE, DEADLINE_QUEUE and NOTIFY_QUEUE are the paths of the queue resources, whose rate
  and retry settings come from module variables and which set no queue-level target (each task
  names its own URL and OIDC token); a queue created only under a condition (notify) is named
  under that condition;
- every kind of task (code_facts.task_routes: submit, deadline, notify) targets TASK_HANDLER_URL,
  so the functions that set a queue also set the URL and the OIDC account;
- TASK_HANDLER_URL is the URL of the on_task function; only a dedicated account
  (TASKS_SERVICE_ACCOUNT) may invoke it; its timeout fits the tasks' dispatch deadline
  (bgremove.tasks.DISPATCH_DEADLINE_SECONDS, through code_facts);
- each runtime account has exactly the queue-level grants its code needs, and actAs on the OIDC
  account only where it enqueues.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from infra.checks.access import PRIVATE_INGRESS, PUBLIC_MEMBERS, TASK_HANDLER_ENTRY_POINT
from infra.checks.tf_model import (
    FUNCTION_TYPE,
    QUEUE_IAM_TYPE,
    QUEUE_TYPE,
    SA_IAM_TYPE,
    TfFunction,
    condition_of,
    count_condition,
    function_invokers,
    guarded,
    members_of,
    reference,
)
from infra.checks.tfparse import Block, locals_of, single, top_blocks

ENQUEUER = "roles/cloudtasks.enqueuer"
QUEUE_VIEWER = "roles/cloudtasks.viewer"
SERVICE_ACCOUNT_USER = "roles/iam.serviceAccountUser"


def check_queues(
    module: Mapping[str, Mapping[str, Any]],
    functions: Iterable[TfFunction],
    queues: Mapping[str, str],
    variables: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    """The queue variables point at the queue resources, which take their settings from variables.

    `queues` maps each variable (SUBMIT_QUEUE) to the google_cloud_tasks_queue resource it must
    name (submit). config.py wants the full path projects/P/locations/L/queues/Q, which is the
    resource's `id`.
    """
    functions = list(functions)
    problems: list[str] = []
    declared = {b.name: b for b in top_blocks(module, "resource") if b.type == QUEUE_TYPE}
    if len(set(queues.values())) != len(queues):
        problems.append(f"the queue variables must name different queues: {dict(queues)}")
    for variable, queue in queues.items():
        if queue not in declared:
            problems.append(f"{variable}: there is no {QUEUE_TYPE}.{queue}")
    for fn in functions:
        for variable, queue in queues.items():
            expression = fn.env.get(variable)
            if expression is None:
                continue  # whether it must be set: check_function_environment
            wanted = f"{QUEUE_TYPE}.{queue}.id"
            condition, named_expression = guarded(expression)
            needed = count_condition(declared[queue]) if queue in declared else None
            if needed is not None:
                # A queue that exists only when `needed` holds: `needed ? TYPE.NAME[0].id : ""`.
                wanted = f'{needed} ? {QUEUE_TYPE}.{queue}[0].id : ""'
                if condition == needed and named_expression == f"{QUEUE_TYPE}.{queue}[0].id":
                    continue
                if condition != needed and re.fullmatch(rf"{QUEUE_TYPE}\.{queue}(\[0\])?\.id", named_expression):
                    problems.append(
                        f"{fn.name}: {variable} = {expression}, expected {wanted} ({QUEUE_TYPE}.{queue} exists "
                        f"only when {needed})"
                    )
                    continue
            elif expression.strip() == wanted:
                continue
            named = re.fullmatch(rf"{QUEUE_TYPE}\.(\w+)(?:\[0\])?\.(\w+)", named_expression)
            if named and named.group(1) not in declared:
                why = f"{QUEUE_TYPE}.{named.group(1)} is not declared"
            elif named and named.group(2) != "id":
                why = f"config.py needs the full path (.id), not .{named.group(2)}"
            elif named and named.group(1) != queue:
                why = f"that is the {named.group(1)} queue"
            elif named:
                why = f"{QUEUE_TYPE}.{queue} always exists: name it without a condition or index"
            else:
                why = "not a queue resource's id"
            problems.append(f"{fn.name}: {variable} = {expression}, expected {wanted} ({why})")
    locations = {fn.location_raw for fn in functions if fn.location_raw}
    for resource in declared.values():
        body = resource.body
        if "http_target" in body:
            problems.append(
                f"{resource.address}: a queue-level http_target overrides the URL and OIDC token each task names "
                "(bgremove/tasks.py); leave it out"
            )
        if locations and str(body.get("location", "")) not in locations:
            problems.append(f"{resource.address}: location {body.get('location')!r} is not the functions' {locations}")
        for block_name, arguments in (
            ("rate_limits", ("max_dispatches_per_second", "max_concurrent_dispatches")),
            ("retry_config", ("max_attempts", "max_retry_duration", "min_backoff", "max_backoff", "max_doublings")),
        ):
            settings = single(body, block_name)
            if settings is None:
                problems.append(
                    f"{resource.address}: no {block_name} block (the queue would run on Cloud Tasks' defaults)"
                )
                continue
            for argument in arguments:
                value = str(settings.get(argument, ""))
                used = re.findall(r"\bvar\.(\w+)", value)
                if not used:
                    problems.append(f"{resource.address}: {block_name}.{argument} must come from a module variable")
                for name in used:
                    if name not in variables:
                        problems.append(
                            f"{resource.address}: {block_name}.{argument} uses var.{name}, which is not declared"
                        )
                    elif not str(variables[name].get("description", "")).strip():
                        problems.append(f"variable {name}: no description")
    return problems


def check_task_handler(
    module: Mapping[str, Mapping[str, Any]],
    functions: Iterable[TfFunction],
    variables: Mapping[str, Mapping[str, Any]],
    dispatch_deadline: float,
) -> list[str]:
    """The on_task function: reached at TASK_HANDLER_URL, invoked only by the tasks' dedicated
    OIDC account (TASKS_SERVICE_ACCOUNT), never public, with a timeout within the deadline."""
    functions = list(functions)
    handlers = [fn for fn in functions if fn.entry_point == TASK_HANDLER_ENTRY_POINT]
    if len(handlers) != 1:
        return [f"expected one function with entry point {TASK_HANDLER_ENTRY_POINT}, found {len(handlers)}"]
    handler = handlers[0]
    problems: list[str] = []
    if handler.event_trigger is not None:
        problems.append(f"{handler.name}: the task handler is an HTTP function; it must have no event_trigger")
    if handler.ingress not in PRIVATE_INGRESS:
        problems.append(
            f"{handler.name}: ingress {handler.ingress!r}; the task handler takes Cloud Tasks traffic only "
            f"({' or '.join(sorted(PRIVATE_INGRESS))})"
        )
    local_values = locals_of(module)

    # TASK_HANDLER_URL
    computed_url_locals: set[str] = set()
    for fn in functions:
        expression = fn.env.get("TASK_HANDLER_URL")
        if expression is None:
            continue
        verdict, local = _handler_url_verdict(expression, fn, handler, local_values)
        if verdict:
            problems.append(f"{fn.name}: TASK_HANDLER_URL = {expression}: {verdict}")
        elif local:
            computed_url_locals.add(local)
    for local in sorted(computed_url_locals):
        if not _url_is_verified(module, handler, local):
            problems.append(
                f"local.{local} (TASK_HANDLER_URL) is computed, but nothing checks that the deployed handler "
                f'serves it: add data "google_cloud_run_v2_service" for {handler.address} with a postcondition on '
                f"contains(self.urls, local.{local})"
            )

    # TASKS_SERVICE_ACCOUNT: one dedicated account, the only invoker.
    accounts = {fn.env["TASKS_SERVICE_ACCOUNT"].strip() for fn in functions if "TASKS_SERVICE_ACCOUNT" in fn.env}
    invokers = function_invokers(module).get(handler.name, set())
    for member in sorted(invokers & PUBLIC_MEMBERS):
        problems.append(f"{handler.name}: {member} may invoke the task handler; it must not be public")
    if len(accounts) > 1:
        problems.append(f"TASKS_SERVICE_ACCOUNT differs between functions: {sorted(accounts)}")
    for account in sorted(accounts):
        name = reference(account, "google_service_account", "email")
        if name is None:
            problems.append(f"TASKS_SERVICE_ACCOUNT = {account}: not a google_service_account's email")
            continue
        member = f"google_service_account.{name}.member"
        users = _account_users(module, functions)
        if name in users:
            problems.append(
                f"TASKS_SERVICE_ACCOUNT = {account} is also {users[name]}: the tasks' OIDC identity must be "
                "a dedicated account"
            )
        if member not in invokers:
            problems.append(f"{handler.name}: {member} (TASKS_SERVICE_ACCOUNT) has no roles/run.invoker on it")
        for other in sorted(invokers - {member} - PUBLIC_MEMBERS):
            problems.append(f"{handler.name}: {other} may invoke the task handler; only {member} may")

    # Timeout within the dispatch deadline.
    return problems + _timeout_problems(handler, variables, dispatch_deadline)


def _handler_url_verdict(
    expression: str, fn: TfFunction, handler: TfFunction, local_values: Mapping[str, Any]
) -> tuple[str, str | None]:
    """('', local name or None) when expression is the handler's URL, else (why not, None).

    Accepted: the handler's `service_config[0].uri` or `url` (from another function; on the
    handler itself that is a dependency cycle), or a local holding Cloud Run's deterministic
    URL of the handler's service: https://<the handler's name>-<project number>.<its location>.run.app.
    """
    expression = expression.strip()
    local = re.fullmatch(r"local\.(\w+)", expression)
    raw = str(local_values.get(local.group(1), "")) if local else "${" + expression + "}"
    if local and local.group(1) not in local_values:
        return f"there is no local {local.group(1)!r}", None
    target = re.fullmatch(rf"\$\{{{FUNCTION_TYPE}\.(\w+)\.(service_config\[0\]\.uri|url)\}}", raw)
    if target:
        if target.group(1) != handler.name:
            return f"that is {FUNCTION_TYPE}.{target.group(1)}, not the task handler {handler.address}", None
        if fn.name == handler.name:
            return "the task handler's own URL (a dependency cycle)", None
        return "", None
    deterministic = (
        "https://"
        + re.escape(handler.name_raw)
        + r"-\$\{data\.google_project\.\w+\.number\}\."
        + re.escape(handler.location_raw)
        + r"\.run\.app"
    )
    if local and handler.name_raw and re.fullmatch(deterministic, raw):
        return "", local.group(1)
    return f"not the URL of the task handler {handler.address} (entry point {TASK_HANDLER_ENTRY_POINT})", None


def _url_is_verified(module: Mapping[str, Mapping[str, Any]], handler: TfFunction, local: str) -> bool:
    for block in top_blocks(module, "data"):
        if block.type != "google_cloud_run_v2_service":
            continue
        if reference(block.body.get("name"), FUNCTION_TYPE, "name") != handler.name:
            continue
        for lifecycle in block.body.get("lifecycle", []):
            for condition in lifecycle.get("postcondition", []):
                text = str(condition.get("condition", ""))
                if "self.urls" in text and f"local.{local}" in text:
                    return True
    return False


def _account_users(module: Mapping[str, Mapping[str, Any]], functions: Iterable[TfFunction]) -> dict[str, str]:
    """{service account resource name: what else uses it} for runtime, trigger and scheduler accounts."""
    used: dict[str, str] = {}
    for fn in functions:
        name = reference(fn.service_account, "google_service_account", "email")
        if name:
            used.setdefault(name, f"the runtime account of {fn.name}")
        trigger = fn.event_trigger or {}
        name = reference(trigger.get("service_account_email"), "google_service_account", "email")
        if name:
            used.setdefault(name, f"the trigger account of {fn.name}")
    for block in top_blocks(module, "resource"):
        if block.type == "google_cloud_scheduler_job":
            oidc = single(single(block.body, "http_target") or {}, "oidc_token") or {}
            name = reference(oidc.get("service_account_email"), "google_service_account", "email")
            if name:
                used.setdefault(name, f"the OIDC account of {block.address}")
    return used


def _timeout_problems(handler: TfFunction, variables: Mapping[str, Mapping[str, Any]], deadline: float) -> list[str]:
    timeout = (handler.timeout or "").strip()
    if not timeout:
        return [
            f"{handler.name}: no timeout_seconds (the platform default exceeds the {deadline:g} s dispatch deadline)"
        ]
    variable = re.fullmatch(r"var\.(\w+)", timeout)
    if variable is None:
        try:
            value = float(timeout)
        except ValueError:
            return [f"{handler.name}: cannot read timeout_seconds = {timeout}"]
        return (
            [f"{handler.name}: timeout {value:g} s exceeds the tasks' {deadline:g} s dispatch deadline"]
            if value > deadline
            else []
        )
    name = variable.group(1)
    declared = variables.get(name)
    if declared is None:
        return [f"{handler.name}: timeout_seconds = var.{name}, which is not declared"]
    problems = []
    default = declared.get("default")
    if not isinstance(default, int | float) or default > deadline:
        problems.append(
            f"variable {name}: default {default!r} exceeds the tasks' {deadline:g} s dispatch deadline "
            "(bgremove.tasks.DISPATCH_DEADLINE_SECONDS): Cloud Tasks would retry attempts that are still running"
        )
    caps = [
        float(cap)
        for validation in declared.get("validation", [])
        for cap in re.findall(rf"var\.{name}\s*<=\s*(\d+(?:\.\d+)?)", str(validation.get("condition", "")))
    ]
    if not caps or min(caps) > deadline:
        problems.append(f"variable {name}: needs a validation capping it at the {deadline:g} s dispatch deadline")
    return problems


def check_queue_grants(
    module: Mapping[str, Mapping[str, Any]],
    functions: Iterable[TfFunction],
    expected: Mapping[str, Mapping[str, Iterable[str]]],
) -> list[str]:
    """Queue-level roles exactly as each entry point's code needs them, and no wider ones.

    `expected` maps an entry point to {queue resource name: roles}. Also: no project-level
    Cloud Tasks or serviceAccountUser role, and roles/iam.serviceAccountUser on the
    TASKS_SERVICE_ACCOUNT account exactly for the functions that set it (creating a task with
    an OIDC token of an account needs actAs on it).
    """
    functions = list(functions)
    problems: list[str] = []
    queues = {b.name for b in top_blocks(module, "resource") if b.type == QUEUE_TYPE}
    local_values = locals_of(module)
    granted: dict[str, set[tuple[str, str]]] = {}  # member -> {(queue, role)}
    # member -> the conditions its enqueuer grants hold under (None: always)
    enqueues_when: dict[str, set[str | None]] = {}
    for block in top_blocks(module, "resource"):
        role = str(block.body.get("role", ""))
        if block.type == QUEUE_IAM_TYPE:
            queue = reference(block.body.get("name"), QUEUE_TYPE, "name")
            if queue is None or queue not in queues:
                problems.append(f"{block.address}: name must be {QUEUE_TYPE}.<queue>.name of a declared queue")
                continue
            for member in members_of(block, local_values):
                granted.setdefault(member, set()).add((queue, role))
                if role == ENQUEUER:
                    enqueues_when.setdefault(member, set()).add(_grant_condition(block))
        elif block.type in ("google_project_iam_member", "google_project_iam_binding") and (
            role.startswith("roles/cloudtasks.") or role == SERVICE_ACCOUNT_USER
        ):
            problems.append(f"{block.address}: {role} on the whole project; grant it on the queue or account only")
    runtime = {fn.runtime_member: fn for fn in functions if fn.runtime_member}
    for fn in functions:
        runtime_member = fn.runtime_member
        entry = fn.entry_point or ""
        if runtime_member is None or entry not in expected:
            problems.append(f"{fn.name}: no expected queue grants for entry point {entry!r}")
            continue
        wanted = {(queue, role) for queue, roles in expected[entry].items() for role in roles}
        have = granted.get(runtime_member, set())
        for queue, role in sorted(wanted - have):
            problems.append(f"{fn.name}: lacks {role} on {QUEUE_TYPE}.{queue}, which its code needs")
        for queue, role in sorted(have - wanted):
            problems.append(f"{fn.name}: has {role} on {QUEUE_TYPE}.{queue}, which it does not need")
    for member in sorted(set(granted) - set(runtime)):
        for queue, role in sorted(granted[member]):
            problems.append(f"{QUEUE_TYPE}.{queue}: {role} granted to {member}, which no function runs as")

    # actAs on the tasks' OIDC account.
    accounts = {
        name
        for fn in functions
        if (name := reference(fn.env.get("TASKS_SERVICE_ACCOUNT"), "google_service_account", "email"))
    }
    for account in sorted(accounts):
        users: set[str] = set()
        acts_when: dict[str, set[str | None]] = {}  # member -> conditions of its actAs grants
        for block in top_blocks(module, "resource"):
            if (
                block.type == SA_IAM_TYPE
                and reference(block.body.get("service_account_id"), "google_service_account", "name") == account
            ):
                if block.body.get("role") == SERVICE_ACCOUNT_USER:
                    members = members_of(block, local_values)
                    users.update(members)
                    for member in members:
                        acts_when.setdefault(member, set()).add(_grant_condition(block))
                elif block.body.get("role") == "roles/iam.serviceAccountTokenCreator":
                    problems.append(
                        f"{block.address}: tokenCreator on {account}; enqueuing needs serviceAccountUser only"
                    )
        for fn in functions:
            enqueues = "TASKS_SERVICE_ACCOUNT" in fn.env
            if enqueues and fn.runtime_member not in users:
                problems.append(
                    f"{fn.name}: creates tasks with an OIDC token of google_service_account.{account} but lacks "
                    f"{SERVICE_ACCOUNT_USER} on it"
                )
            if not enqueues and fn.runtime_member in users:
                problems.append(
                    f"{fn.name}: has {SERVICE_ACCOUNT_USER} on google_service_account.{account} but enqueues nothing"
                )
            # The grants hold under conditions too: actAs exactly while the function may enqueue.
            member = fn.runtime_member or ""
            may_enqueue, acts = enqueues_when.get(member, set()), acts_when.get(member, set())
            if enqueues and acts and not may_enqueue:
                problems.append(
                    f"{fn.name}: has {SERVICE_ACCOUNT_USER} on google_service_account.{account} but no "
                    f"{ENQUEUER} on any queue"
                )
            elif enqueues and None in acts and None not in may_enqueue and may_enqueue:
                only = " or ".join(sorted(str(c) for c in may_enqueue))
                problems.append(
                    f"{fn.name}: has {SERVICE_ACCOUNT_USER} on google_service_account.{account} always, but may "
                    f"enqueue only when {only}: grant it under the same condition"
                )
            elif enqueues and acts and None in may_enqueue and None not in acts:
                problems.append(
                    f"{fn.name}: enqueues always, but has {SERVICE_ACCOUNT_USER} on google_service_account.{account} "
                    f"only when {' or '.join(sorted(str(c) for c in acts))}"
                )
        for member in sorted(users - set(runtime)):
            problems.append(
                f"{member} has {SERVICE_ACCOUNT_USER} on google_service_account.{account}, but no function runs as it"
            )
    return problems


def check_task_routes(functions: Iterable[TfFunction], routes: Mapping[str, tuple[str, str]]) -> list[str]:
    """Every kind of task goes to the task handler, with the tasks' OIDC account.

    `routes` (code_facts.task_routes) says which settings each kind's queue and URL come from.
    Only TASK_HANDLER_URL is checked to be on_task's URL (check_task_handler) and only on_task
    admits the OIDC identity, so every kind must target it; and a function that sets a kind's
    queue must also set its URL and TASKS_SERVICE_ACCOUNT, or its tasks would go nowhere or
    carry no token (Cloud Run would refuse them).
    """
    functions = list(functions)
    problems = []
    for kind, (queue, url) in sorted(routes.items()):
        if url != "TASK_HANDLER_URL":
            problems.append(
                f"{kind} tasks target {url}, not TASK_HANDLER_URL: only on_task is reached by Cloud Tasks with the "
                "tasks' OIDC token (bgremove/tasks.py)"
            )
        for fn in functions:
            if queue not in fn.env:
                continue
            for needed in sorted({url, "TASKS_SERVICE_ACCOUNT"} - set(fn.env)):
                problems.append(f"{fn.name}: sets {queue} but not {needed}, which its {kind} tasks need")
    return problems


def _grant_condition(block: Block) -> str | None:
    """The condition an IAM block's grants hold under (its for_each's or count's), None: always."""
    return count_condition(block) or condition_of(block.body.get("for_each", ""))
