"""The Terraform model the checks read: the pipeline module's functions, variables and who may
invoke each function, from files parsed by tfparse.py (python-hcl2, in its own venv); and the
one check of the module's interface, that each env root's module call passes declared variables.

Plain functions over parsed bodies, so a test can break a copy and see a check catch it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infra.checks.tfparse import Block, items, locals_of, single, split_top_level, top_blocks, unwrap, variables_of

FUNCTION_TYPE = "google_cloudfunctions2_function"
QUEUE_TYPE = "google_cloud_tasks_queue"
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
                name_raw=str(block.body.get("name", "")),
                location_raw=str(block.body.get("location", "")),
                timeout=None if service.get("timeout_seconds") is None else str(unwrap(service["timeout_seconds"])),
            )
        )
    return functions


def resolve_map(value: Any, local_values: Mapping[str, Any], depth: int = 0) -> dict[str, str]:
    """Keys and value expressions of a map built from literals, `local.X` and `merge(...)`."""
    if depth > 20:
        raise ValueError("locals nest too deeply")
    if isinstance(value, dict):
        return {str(k): str(unwrap(v)) for k, v in items(value)}
    expression = unwrap(value)
    if not isinstance(expression, str):
        raise ValueError(f"not a map: {value!r}")
    expression = expression.strip()
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
    raise ValueError(f"unsupported expression {expression!r} (use a literal map, local.X or merge(...))")


def module_variables(module: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return variables_of(module)


def function_invokers(module: Mapping[str, Mapping[str, Any]]) -> dict[str, set[str]]:
    """{function resource name: members with roles/run.invoker on its Cloud Run service}."""
    invokers: dict[str, set[str]] = {}
    for block in top_blocks(module, "resource"):
        if block.type == RUN_IAM_TYPE and block.body.get("role") == "roles/run.invoker":
            service = str(unwrap(block.body.get("service")))
            match = re.fullmatch(rf"{FUNCTION_TYPE}\.(\w+)\.name", service)
            if match:
                invokers.setdefault(match.group(1), set()).update(members_of(block))
    return invokers


def members_of(block: Block) -> list[str]:
    """The members an IAM member block grants to: its `member`, or each value of a literal
    for_each map when member = each.value."""
    member = str(unwrap(block.body.get("member", "")))
    for_each = block.body.get("for_each")
    if member == "each.value" and isinstance(for_each, dict):
        return [str(unwrap(v)) for _, v in items(for_each)]
    return [member]


def reference(expression: Any, tf_type: str, attr: str) -> str | None:
    """NAME when expression is exactly `tf_type.NAME.attr`."""
    match = re.fullmatch(rf"{re.escape(tf_type)}\.(\w+)\.{re.escape(attr)}", str(unwrap(expression)).strip())
    return match.group(1) if match else None


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
