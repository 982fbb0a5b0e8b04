"""The Terraform model the checks read: the pipeline module's functions, variables and who may
invoke each function, from files parsed by tfparse.py (python-hcl2, in its own venv); the check
of the module's interface, that each env root's module call passes declared variables; and the
check that references to a resource created conditionally (`count = COND ? 1 : 0`) are guarded
by the same condition.

Resources that exist only under a condition (the notify queue and secret) are read as they are
when it holds: `COND ? X : ""` reads as X, a for_each `{for k, v in M : k => v if COND}` as M,
a `dynamic` block as its content. `check_guarded_references` checks the other case, the one
Terraform would only refuse at plan.

Plain functions over parsed bodies, so a test can break a copy and see a check catch it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.checks.tfparse import Block, items, locals_of, single, split_top_level, top_blocks, unwrap, variables_of

FUNCTION_TYPE = "google_cloudfunctions2_function"
QUEUE_TYPE = "google_cloud_tasks_queue"
SECRET_TYPE = "google_secret_manager_secret"
SECRET_IAM_TYPE = "google_secret_manager_secret_iam_member"
TOPIC_TYPE = "google_pubsub_topic"
TOPIC_IAM_TYPE = "google_pubsub_topic_iam_member"
BUCKET_TYPE = "google_storage_bucket"
QUEUE_IAM_TYPE = "google_cloud_tasks_queue_iam_member"
RUN_IAM_TYPE = "google_cloud_run_service_iam_member"
SA_IAM_TYPE = "google_service_account_iam_member"


@dataclass
class TfFunction:
    """The parts of one google_cloudfunctions2_function that the checks look at."""

    name: str
    entry_point: str | None
    runtime: str | None
    event_trigger: dict[str, Any] | None
    ingress: str | None
    service_account: str | None
    env: dict[str, str]  # variable -> expression
    secret_env: dict[str, dict[str, Any]]  # variable -> secret_environment_variables block
    problems: list[str]
    # variable -> the for_each of the `dynamic "secret_environment_variables"` it comes from
    # (a secret mounted only while that collection is non-empty); its block reads `secret` as
    # `TYPE.NAME.ATTR` when for_each iterates the resource TYPE.NAME itself.
    secret_guards: dict[str, str] = field(default_factory=dict)
    name_raw: str = ""  # the `name` argument as written (a template such as "${local.x}")
    location_raw: str = ""
    timeout: str | None = None  # service_config.timeout_seconds, unwrapped

    @property
    def address(self) -> str:
        return f"{FUNCTION_TYPE}.{self.name}"

    @property
    def runtime_member(self) -> str | None:
        """`google_service_account.X.member` for a runtime account given as `...X.email`."""
        match = re.fullmatch(r"google_service_account\.(\w+)\.email", (self.service_account or "").strip())
        return f"google_service_account.{match.group(1)}.member" if match else None


def tf_functions(module: Mapping[str, Mapping[str, Any]]) -> list[TfFunction]:
    """The cloud functions of a parsed module (files of one directory)."""
    local_values = locals_of(module)
    functions = []
    for block in top_blocks(module, "resource"):
        if block.type != FUNCTION_TYPE:
            continue
        build = single(block.body, "build_config") or {}
        service = single(block.body, "service_config") or {}
        problems: list[str] = []
        env: dict[str, str] = {}
        if "environment_variables" in service:
            try:
                env = resolve_map(service["environment_variables"], local_values)
            except ValueError as exc:
                problems.append(f"{block.address}: cannot read environment_variables: {exc}")
        secret_env = {}
        for secret in service.get("secret_environment_variables", []):
            secret_env[str(secret.get("key"))] = secret
        secret_guards: dict[str, str] = {}
        for entry in service.get("dynamic", []):
            for label, dynamic in entry.items():
                content = single(dynamic, "content")
                if label != "secret_environment_variables" or content is None:
                    continue
                key = str(content.get("key"))
                for_each = str(unwrap(dynamic.get("for_each", ""))).strip()
                secret_env[key] = _iterated(content, label, for_each)
                secret_guards[key] = for_each
        functions.append(
            TfFunction(
                name=block.name,
                entry_point=build.get("entry_point"),
                runtime=build.get("runtime"),
                event_trigger=single(block.body, "event_trigger"),
                ingress=service.get("ingress_settings"),
                service_account=unwrap(service.get("service_account_email")),
                env=env,
                secret_env=secret_env,
                problems=problems,
                secret_guards=secret_guards,
                name_raw=str(block.body.get("name", "")),
                location_raw=str(block.body.get("location", "")),
                timeout=None if service.get("timeout_seconds") is None else str(unwrap(service["timeout_seconds"])),
            )
        )
    return functions


def _iterated(content: Mapping[str, Any], label: str, for_each: str) -> dict[str, Any]:
    """A dynamic block's content with `LABEL.value.ATTR` read as `TYPE.NAME.ATTR` when for_each
    is the resource TYPE.NAME itself (a counted resource: one block per instance)."""
    block = dict(content)
    resource = re.fullmatch(r"((?:data\.)?[a-z0-9_]+\.\w+)", for_each)
    for key, value in items(content):
        expression = str(unwrap(value)).strip()
        attribute = re.fullmatch(rf"{re.escape(label)}\.value\.(\w+)", expression)
        if resource and attribute:
            block[key] = "${" + f"{resource.group(1)}.{attribute.group(1)}" + "}"
    return block


_EMPTY = frozenset({'""', "{}", "[]", "null"})


def ternary(expression: str) -> tuple[str, str, str] | None:
    """(condition, then, else) of an expression that is one top-level `C ? A : B`, else None."""
    expression = expression.strip()
    parts = split_top_level(expression, "?")
    if len(parts) != 2:
        return None
    branches = split_top_level(parts[1], ":")
    if len(branches) != 2:
        return None
    return parts[0].strip(), branches[0].strip(), branches[1].strip()


def guarded(expression: str) -> tuple[str | None, str]:
    """(C, X) for `C ? X : <empty>` (or `C ? <empty> : X`, read as (!C, X)); (None, expression)
    for anything else. <empty> is "", {}, [] or null: what an expression is while the resource it
    names does not exist."""
    parts = ternary(expression)
    if parts is None:
        return None, expression.strip()
    condition, then, otherwise = parts
    if otherwise in _EMPTY and then not in _EMPTY:
        return condition, then
    if then in _EMPTY and otherwise not in _EMPTY:
        return f"!{condition}", otherwise
    return None, expression.strip()


_FILTERED_FOR = re.compile(r"^\{\s*for\s+(\w+)\s*,\s*(\w+)\s+in\s+(.*?)\s*:\s*\1\s*=>\s*\2\s+if\s+(.*)\}$", re.DOTALL)


def filtered_for(expression: str) -> tuple[str, str] | None:
    """(collection, condition) of `{for k, v in COLLECTION : k => v if CONDITION}`."""
    match = _FILTERED_FOR.match(expression.strip())
    return (match.group(3).strip(), match.group(4).strip()) if match else None


def resolve_map(value: Any, local_values: Mapping[str, Any], depth: int = 0) -> dict[str, str]:
    """Keys and value expressions of a map built from literals, `local.X`, `merge(...)`, and
    collections present under a condition (`C ? M : {}`, `{for k, v in M : k => v if C}`),
    which read as M: the map when the condition holds."""
    if depth > 20:
        raise ValueError("locals nest too deeply")
    if isinstance(value, dict):
        return {str(k): str(unwrap(v)) for k, v in items(value)}
    expression = unwrap(value)
    if not isinstance(expression, str):
        raise ValueError(f"not a map: {value!r}")
    expression = expression.strip()
    condition, present = guarded(expression)
    if condition is not None:
        return resolve_map("${" + present + "}", local_values, depth + 1)
    comprehension = filtered_for(expression)
    if comprehension:
        return resolve_map("${" + comprehension[0] + "}", local_values, depth + 1)
    local = re.fullmatch(r"local\.(\w+)", expression)
    if local:
        if local.group(1) not in local_values:
            raise ValueError(f"no local {local.group(1)!r}")
        return resolve_map(local_values[local.group(1)], local_values, depth + 1)
    merge = re.fullmatch(r"merge\((.*)\)", expression, re.DOTALL)
    if merge:
        merged: dict[str, str] = {}
        for argument in split_top_level(merge.group(1)):
            merged.update(resolve_map(argument, local_values, depth + 1))
        return merged
    if expression.startswith("{") and expression.endswith("}"):
        literal: dict[str, str] = {}
        for entry in split_top_level(expression[1:-1].replace("\n", ",")):
            key, sep, rest = entry.partition("=")
            if not sep:
                raise ValueError(f"cannot read map entry {entry!r}")
            literal[key.strip().strip('"')] = rest.strip()
        return literal
    raise ValueError(
        f"unsupported expression {expression!r} (use a literal map, local.X, merge(...), C ? M : {{}} "
        "or {for k, v in M : k => v if C})"
    )


def module_variables(module: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return variables_of(module)


def function_invokers(module: Mapping[str, Mapping[str, Any]]) -> dict[str, set[str]]:
    """{function resource name: members with roles/run.invoker on its Cloud Run service}."""
    invokers: dict[str, set[str]] = {}
    local_values = locals_of(module)
    for block in top_blocks(module, "resource"):
        if block.type == RUN_IAM_TYPE and block.body.get("role") == "roles/run.invoker":
            service = str(unwrap(block.body.get("service")))
            match = re.fullmatch(rf"{FUNCTION_TYPE}\.(\w+)\.name", service)
            if match:
                invokers.setdefault(match.group(1), set()).update(members_of(block, local_values))
    return invokers


def members_of(block: Block, local_values: Mapping[str, Any] | None = None) -> list[str]:
    """The members an IAM member block grants to: its `member`, or each value of its for_each map
    when member = each.value (a literal map, or one resolve_map reads: a local, a merge, a
    collection under a condition)."""
    member = str(unwrap(block.body.get("member", "")))
    for_each = block.body.get("for_each")
    if member == "each.value" and for_each is not None:
        try:
            return list(resolve_map(for_each, local_values or {}).values())
        except ValueError:
            return [f"<unreadable for_each of {block.address}>"]
    return [member]


def reference(expression: Any, tf_type: str, attr: str) -> str | None:
    """NAME when expression is exactly `tf_type.NAME.attr`, or `tf_type.NAME[0].attr` (the
    instance of a counted resource; check_guarded_references checks its guard)."""
    match = re.fullmatch(rf"{re.escape(tf_type)}\.(\w+)(?:\[0\])?\.{re.escape(attr)}", str(unwrap(expression)).strip())
    return match.group(1) if match else None


def count_condition(block: Block) -> str | None:
    """C for a resource created only under a condition: `count = C ? 1 : 0`."""
    count = block.body.get("count")
    if count is None:
        return None
    parts = ternary(str(unwrap(count)))
    if parts and parts[1] == "1" and parts[2] == "0":
        return parts[0]
    return None


def condition_of(expression: Any) -> str | None:
    """The condition a for_each or value expression is present under: C of `C ? X : <empty>` or of
    `{for k, v in M : k => v if C}`, None for an unconditional one."""
    text = str(unwrap(expression)).strip()
    condition, _ = guarded(text)
    if condition is not None:
        return condition
    comprehension = filtered_for(text)
    return comprehension[1] if comprehension else None


def check_guarded_references(module: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """References to a resource that exists only under a condition (count = C ? 1 : 0) name its
    instance (`TYPE.NAME[0].ATTR`) only where C holds: in a block whose count or for_each is
    conditioned on C, or as `C ? TYPE.NAME[0].ATTR : <empty>`; and never without an index (a
    counted resource is a list). Terraform refuses the others at plan, when the condition does
    not hold (the index is out of range) or always (no index)."""
    counted = {
        (block.type, block.name): condition
        for block in top_blocks(module, "resource")
        if (condition := count_condition(block)) is not None
    }
    if not counted:
        return []
    problems: list[str] = []

    def visit(where: str, value: Any, guards: tuple[str, ...]) -> None:
        if isinstance(value, str):
            text = str(unwrap(value))
            condition = condition_of(text)
            for (tf_type, name), needed in counted.items():
                pattern = rf"(?<![\w.]){re.escape(tf_type)}\.{re.escape(name)}(\[[^\]]*\])?(\.\w+)?"
                for match in re.finditer(pattern, text):
                    index, attribute = match.group(1), match.group(2)
                    if index is None:
                        if attribute:
                            problems.append(f"{where}: {match.group(0)} names a counted resource without an index")
                        continue
                    if needed not in guards and condition != needed:
                        problems.append(
                            f"{where}: {match.group(0)} is used where {needed} may not hold "
                            f"({tf_type}.{name} exists only when it does)"
                        )
        elif isinstance(value, dict):
            inner = guards
            for key in ("count", "for_each"):
                if key in value and (condition := condition_of(value[key])) is not None:
                    inner = (*inner, condition)
            for _key, item in items(value):
                visit(where, item, inner)
        elif isinstance(value, list):
            for item in value:
                visit(where, item, guards)

    for kind in ("resource", "data"):
        for block in top_blocks(module, kind):
            visit(block.address, block.body, ())
    for body in module.values():
        for entry in body.get("locals", []):
            for key, value in items(entry):
                visit(f"local.{key}", value, ())
        for kind in ("output", "module"):
            for entry in body.get(kind, []):
                for name, value in entry.items():
                    visit(f"{kind}.{name}", value, ())
    return problems


def check_module_calls(
    roots: Mapping[str, Mapping[str, Mapping[str, Any]]], module_variables: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Each env root's `module "pipeline"` passes only declared variables and all required ones."""
    problems = []
    for root, files in roots.items():
        calls = [(name, body) for f in files.values() for entry in f.get("module", []) for name, body in entry.items()]
        if len(calls) != 1:
            problems.append(f"{root}: expected one module call, found {len(calls)}")
            continue
        name, body = calls[0]
        given = {k for k, _ in items(body)} - {"source", "version", "providers", "depends_on", "count", "for_each"}
        for key in sorted(given - set(module_variables)):
            problems.append(f"{root}: module {name!r} passes {key!r}, which the module does not declare")
        for key, variable in module_variables.items():
            if "default" not in variable and key not in given:
                problems.append(f"{root}: module {name!r} does not set required variable {key!r}")
    return problems


@dataclass(frozen=True)
class Validation:
    """What a variable's validation blocks accept, as far as plain comparisons say (a regex or
    any other condition says nothing here)."""

    minimum: float | None = None  # var.X >= N
    maximum: float | None = None  # var.X <= N
    choices: tuple[str, ...] | None = None  # contains([...], var.X)
    upper: bool = False  # the choices are compared with upper(var.X)


_NUMBER = r"(-?\d+(?:\.\d+)?)"


def validation_of(name: str, variable: Mapping[str, Any]) -> Validation:
    """The bounds and choices the validation blocks of variable `name` declare."""
    conditions = [str(unwrap(v.get("condition", ""))) for v in variable.get("validation", [])]
    text = " && ".join(conditions)
    var = rf"var\.{re.escape(name)}\b"
    minimums = [float(n) for n in re.findall(rf"{var}\s*>=\s*{_NUMBER}", text)]
    maximums = [float(n) for n in re.findall(rf"{var}\s*<=\s*{_NUMBER}", text)]
    contains = re.search(rf"contains\(\s*\[([^\]]*)\]\s*,\s*(upper\(\s*)?{var}", text)
    choices = tuple(re.findall(r'"([^"]*)"', contains.group(1))) if contains else None
    return Validation(
        minimum=max(minimums) if minimums else None,
        maximum=min(maximums) if maximums else None,
        choices=choices,
        upper=bool(contains and contains.group(2)),
    )
