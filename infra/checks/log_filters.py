"""The log-based metrics' filters, evaluated offline against log entries the functions really write.

A `google_logging_metric` counts the entries its filter (Cloud Logging's query language) matches and
reads labels and values out of them; nothing in Terraform or the provider checks that a filter
names fields the code logs. This module does, with no cloud:

- `metrics_from_terraform(env)` reads each metric of the pipeline module (name, filter, label and
  value extractors, descriptor labels) with `${var.X}`, `${local.X}` and
  `${google_cloudfunctions2_function.X.name}` resolved against one environment's values (the module's
  defaults, then the env root's module call, its variables' defaults and terraform.tfvars);
- `entries_from_stack_logs(logs)` turns the offline stack's function logs (StackInfo.logs, or the
  stack's logs/ directory) into entries as Cloud Logging makes them from one JSON object per stdout
  line: `severity` at the top, every other key under `jsonPayload`, and `resource` =
  `{"type": "cloud_run_revision", "labels": {"service_name": <the Terraform function's name>}}`;
- `problems(metrics, entries)` parses each filter in the subset below and reports a filter that
  matches no entry, a field a filter or extractor names that no entry of the functions it targets
  has, an extractor that yields nothing on a matched entry, and anything outside the subset.

The subset: comparisons `FIELD = VALUE`, `FIELD =~ "RE2"`, `FIELD !~ "RE2"`, `FIELD:*` (present),
`FIELD >= | > | < | <= NUMBER` (and severity names: `severity>=WARNING` compares by rank), joined
by explicit `AND`, `OR`, `NOT` and parentheses. As in Cloud Logging, NOT binds tightest, then OR,
then AND (`a OR b AND c` is `(a OR b) AND c`). Anything else (a bare word, `:` with a value,
implicit AND, `!=`, functions) is refused as a problem rather than guessed. Extractors:
`EXTRACT(FIELD)` and `REGEXP_EXTRACT(FIELD, "RE2 with one group")`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.checks import tf_model
from infra.checks.tfparse import REPO_ROOT, items, locals_of, parse_files, single, tf_files, top_blocks, unwrap

METRIC_TYPE = "google_logging_metric"
MODULE_DIR = "infra/modules/pipeline"

# The offline stack's process names (offline_cloud/stack.py `_start`) -> entry point. Event
# functions other than on_upload run as "function-<entry point>".
PROCESS_ENTRY_POINTS = {
    "function-trigger": "on_upload",
    "function-webhook": "on_prediction_webhook",
    "function-reconciler": "reconcile",
    "function-task-handler": "on_task",
}

SEVERITIES = ("DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}

# Keys of a JSON log line Cloud Logging lifts out of jsonPayload (the ones bgremove/logs.py may write).
_SPECIAL_KEYS = {"time": "timestamp", "timestamp": "timestamp", "logging.googleapis.com/labels": "labels"}


class FilterError(ValueError):
    """A filter or extractor outside the subset this module evaluates."""


# ---------------------------------------------------------------------------
# Metrics from Terraform
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One google_logging_metric, resolved for an environment."""

    resource: str  # the Terraform name (google_logging_metric.<resource>)
    name: str
    filter: str
    label_extractors: dict[str, str] = field(default_factory=dict)
    value_extractor: str | None = None
    descriptor_labels: tuple[str, ...] = ()
    value_type: str = "INT64"


Parsed = Mapping[str, Mapping[str, Any]]


def parse_infra() -> dict[str, dict[str, Any]]:
    """Every .tf and .tfvars file under infra/, parsed (keys relative to the repository)."""
    paths = sorted(tf_files() + [p for p in (REPO_ROOT / "infra").rglob("*.tfvars") if ".terraform" not in p.parts])
    results = parse_files(paths)
    broken = {name: r["error"] for name, r in results.items() if not r["ok"]}
    if broken:
        raise ValueError(f"Terraform files that do not parse: {broken}")
    return {name: r["body"] for name, r in results.items()}


def _module(parsed: Parsed) -> dict[str, Mapping[str, Any]]:
    return {n: b for n, b in parsed.items() if n.startswith(f"{MODULE_DIR}/") and n.endswith(".tf")}


def _literal(value: Any) -> Any:
    """A plain value (number, bool, list, quoted string) as Python; a "${...}" expression raises."""
    if isinstance(value, str) and "${" in value:
        raise ValueError(f"not a literal: {value!r}")
    return value


def env_values(env: str = "dev", parsed: Parsed | None = None) -> dict[str, Any]:
    """The module's variable values in environment `env` (infra/envs/<env>): the module defaults,
    overridden by the env root's module call, whose `var.X` come from the root's variable defaults
    and terraform.tfvars. Arguments that are not plain values or `var.X` are left out."""
    parsed = parse_infra() if parsed is None else parsed
    root = f"infra/envs/{env}"
    files = {n: b for n, b in parsed.items() if n.startswith(f"{root}/")}
    if not files:
        raise ValueError(f"no environment root {root}")
    root_values: dict[str, Any] = {}
    for name, variable in tf_model.module_variables(files).items():
        if "default" in variable:
            root_values[name] = variable["default"]
    for file, body in files.items():
        if file.endswith(".tfvars"):
            root_values.update(dict(items(body)))
    values: dict[str, Any] = {}
    for name, variable in tf_model.module_variables(_module(parsed)).items():
        if "default" in variable:
            values[name] = variable["default"]
    calls = [b for body in files.values() for e in body.get("module", []) for b in e.values()]
    for call in calls:
        for key, value in items(call):
            expression = unwrap(value)
            ref = re.fullmatch(r"var\.(\w+)", str(expression).strip()) if isinstance(expression, str) else None
            if ref and ref.group(1) in root_values:
                values[key] = root_values[ref.group(1)]
            elif not (isinstance(value, str) and "${" in value):
                values[key] = value
    return values


_REF = re.compile(r"(?<!\$)\$\{\s*([^{}]*?)\s*\}")


def resolve(text: str, values: Mapping[str, Any], local_values: Mapping[str, Any], functions: Mapping[str, str]) -> str:
    """A template with `${var.X}`, `${local.X}` (themselves templates) and
    `${google_cloudfunctions2_function.X.name}` replaced; `$${` is a literal `${`. Any other
    interpolation raises ValueError."""

    def one(text: str, depth: int) -> str:
        if depth > 10:
            raise ValueError("locals nest too deeply")

        def replace(match: re.Match[str]) -> str:
            expression = match.group(1)
            var = re.fullmatch(r"var\.(\w+)", expression)
            if var:
                if var.group(1) not in values:
                    raise ValueError(f"no value for var.{var.group(1)}")
                return str(values[var.group(1)])
            local = re.fullmatch(r"local\.(\w+)", expression)
            if local:
                if local.group(1) not in local_values or not isinstance(local_values[local.group(1)], str):
                    raise ValueError(f"local.{local.group(1)} is not a string local")
                return one(str(local_values[local.group(1)]), depth + 1)
            function = re.fullmatch(rf"{tf_model.FUNCTION_TYPE}\.(\w+)\.name", expression)
            if function:
                if function.group(1) not in functions:
                    raise ValueError(f"no function {function.group(1)}")
                return one(functions[function.group(1)], depth + 1)
            raise ValueError(f"cannot resolve ${{{expression}}}")

        return _REF.sub(replace, text)

    return one(text, 0).replace("$${", "${")


def _module_context(env: str, parsed: Parsed | None) -> tuple[Parsed, dict[str, Any], dict[str, Any], dict[str, str]]:
    parsed = parse_infra() if parsed is None else parsed
    module = _module(parsed)
    functions = {fn.name: fn.name_raw for fn in tf_model.tf_functions(module)}
    return module, env_values(env, parsed), locals_of(module), functions


def function_services(env: str = "dev", parsed: Parsed | None = None) -> dict[str, list[str]]:
    """{entry point: the Cloud Run service names (function names) that run it} in `env`."""
    module, values, local_values, functions = _module_context(env, parsed)
    services: dict[str, list[str]] = {}
    for fn in tf_model.tf_functions(module):
        if fn.entry_point:
            services.setdefault(fn.entry_point, []).append(resolve(fn.name_raw, values, local_values, functions))
    return {entry: sorted(names) for entry, names in services.items()}


def metrics_from_terraform(env: str = "dev", parsed: Parsed | None = None) -> list[Metric]:
    """Every google_logging_metric of the pipeline module, resolved for `env` (parsed: the result of
    parse_infra(), or the tests' `tf` fixture, to save a parse). A metric whose templates cannot
    be resolved raises ValueError."""
    module, values, local_values, functions = _module_context(env, parsed)
    metrics = []
    for block in top_blocks(module, "resource"):
        if block.type != METRIC_TYPE:
            continue

        def text(key: str, body: Mapping[str, Any] = block.body, where: str = block.address) -> str:
            try:
                return resolve(str(body.get(key, "")), values, local_values, functions)
            except ValueError as exc:
                raise ValueError(f"{where}.{key}: {exc}") from exc

        extractors = block.body.get("label_extractors") or {}
        if not isinstance(extractors, dict):
            raise ValueError(f"{block.address}.label_extractors: not a literal map")
        descriptor = single(block.body, "metric_descriptor") or {}
        metrics.append(
            Metric(
                resource=block.name,
                name=text("name"),
                filter=text("filter"),
                label_extractors={
                    str(k): resolve(str(v), values, local_values, functions) for k, v in items(extractors)
                },
                value_extractor=text("value_extractor") if "value_extractor" in block.body else None,
                descriptor_labels=tuple(str(label.get("key")) for label in descriptor.get("labels", [])),
                value_type=str(descriptor.get("value_type", "INT64")),
            )
        )
    return metrics


# ---------------------------------------------------------------------------
# Entries from log lines
# ---------------------------------------------------------------------------


def entry_of(obj: Mapping[str, Any], service_name: str) -> dict[str, Any]:
    """The LogEntry-like dict Cloud Logging makes of one JSON log line of a Cloud Run service."""
    payload = dict(obj)
    entry: dict[str, Any] = {"severity": str(payload.pop("severity", "DEFAULT")).upper()}
    for key, target in _SPECIAL_KEYS.items():
        if key in payload:
            entry[target] = payload.pop(key)
    entry["jsonPayload"] = payload
    entry["resource"] = {"type": "cloud_run_revision", "labels": {"service_name": service_name}}
    return entry


def entries_from_lines(lines: Iterable[str], service_names: Sequence[str]) -> list[dict[str, Any]]:
    """Entries of the JSON object lines among `lines` (others skipped), one per line and service."""
    entries = []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            entries += [entry_of(obj, name) for name in service_names]
    return entries


def entries_from_stack_logs(
    logs: Mapping[str, str | Path] | Path, services: Mapping[str, Sequence[str]] | None = None
) -> list[dict[str, Any]]:
    """Entries of the offline stack's function logs.

    logs: StackInfo.logs ({process: path of its log}) or the stack's logs/ directory. Processes
    that run no function (the emulators) are skipped. services: {entry point: service names}, by
    default dev's (`function_services("dev")`). An entry point deployed as several functions
    (on_delete: `<p>-on-delete` and `<p>-on-archive`) runs in one process offline, so each of its
    lines becomes one entry per function.
    """
    if isinstance(logs, Path):
        logs = {path.stem: path for path in sorted(logs.glob("*.log"))}
    services = function_services("dev") if services is None else services
    entries: list[dict[str, Any]] = []
    for process, path in logs.items():
        entry_point = PROCESS_ENTRY_POINTS.get(process) or (
            process.removeprefix("function-") if process.startswith("function-") else None
        )
        if entry_point is None or entry_point not in services:
            continue
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        entries += entries_from_lines(text.splitlines(), services[entry_point])
    return entries


# ---------------------------------------------------------------------------
# The filter language subset
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Compare:
    path: str
    op: str  # "=", "=~", "!~", ":*", ">=", ">", "<", "<="
    value: str


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class BoolOp:
    op: str  # "AND" or "OR"
    operands: tuple[Node, ...]


Node = Compare | Not | BoolOp

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<op>=~|!~|>=|<=|!=|=|>|<|:)
      | (?P<paren>[()])
      | (?P<word>[A-Za-z0-9_.\-*/+@]+)
    )""",
    re.VERBOSE,
)
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_KEYWORDS = {"AND", "OR", "NOT"}


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise FilterError(f"cannot read {text[position : position + 30]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def parse_filter(text: str) -> Node:
    """The AST of a filter in the subset; FilterError for anything outside it."""
    tokens = _tokens(text)
    if not tokens:
        raise FilterError("empty filter")
    position = 0

    def peek() -> tuple[str, str] | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal position
        if position >= len(tokens):
            raise FilterError("filter ends too early")
        position += 1
        return tokens[position - 1]

    def keyword(word: str) -> bool:
        token = peek()
        return token is not None and token == ("word", word)

    def conjunction() -> Node:  # AND: the lowest precedence
        operands = [disjunction()]
        while keyword("AND"):
            take()
            operands.append(disjunction())
        return operands[0] if len(operands) == 1 else BoolOp("AND", tuple(operands))

    def disjunction() -> Node:  # OR binds tighter than AND in Cloud Logging
        operands = [negation()]
        while keyword("OR"):
            take()
            operands.append(negation())
        return operands[0] if len(operands) == 1 else BoolOp("OR", tuple(operands))

    def negation() -> Node:
        if keyword("NOT"):
            take()
            return Not(negation())
        return primary()

    def primary() -> Node:
        kind, value = take()
        if (kind, value) == ("paren", "("):
            inner = conjunction()
            if take() != ("paren", ")"):
                raise FilterError("expected ')'")
            return inner
        if kind != "word" or value in _KEYWORDS or not _FIELD.match(value):
            raise FilterError(f"expected a field, found {value!r} (bare values are not in the checked subset)")
        path = value
        op_kind, op = take()
        if op_kind != "op":
            raise FilterError(f"expected an operator after {path}, found {op!r}")
        if op == "!=":
            raise FilterError(f"{path}!=...: '!=' is not in the checked subset (write NOT {path}=...)")
        value_kind, operand = take()
        if op == ":":
            if (value_kind, operand) != ("word", "*"):
                raise FilterError(f"{path}:{operand}: only ':*' (field present) is in the checked subset")
            return Compare(path, ":*", "*")
        if value_kind == "string":
            operand = json.loads(operand)
        elif value_kind != "word" or operand in _KEYWORDS:
            raise FilterError(f"expected a value after {path}{op}, found {operand!r}")
        if op in ("=~", "!~"):
            if value_kind != "string":
                raise FilterError(f"{path}{op}: the regular expression must be quoted")
            try:
                re.compile(operand)
            except re.error as exc:
                raise FilterError(f"{path}{op}{operand!r}: bad regular expression ({exc})") from exc
        if op in (">=", ">", "<", "<="):
            if path == "severity":
                if operand.upper() not in SEVERITY_RANK:
                    raise FilterError(f"severity{op}{operand}: not a severity")
            elif _number(operand) is None:
                raise FilterError(f"{path}{op}{operand!r}: only numbers (and severities) are ordered here")
        return Compare(path, op, operand)

    tree = conjunction()
    if position != len(tokens):
        raise FilterError(
            f"unexpected {tokens[position][1]!r} "
            "(write AND between comparisons: implicit AND is not in the checked subset)"
        )
    return tree


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


_MISSING = object()


def lookup(entry: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path of an entry, or _MISSING."""
    value: Any = entry
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


def _compare(node: Compare, entry: Mapping[str, Any]) -> bool:
    value = lookup(entry, node.path)
    if value is _MISSING or value is None:
        return False
    if node.op == ":*":
        return True
    if node.path == "severity":
        rank, wanted = SEVERITY_RANK.get(str(value).upper(), 0), SEVERITY_RANK.get(node.value.upper())
        if wanted is None:
            return node.op == "=" and str(value) == node.value
        return {
            "=": rank == wanted,
            ">=": rank >= wanted,
            ">": rank > wanted,
            "<": rank < wanted,
            "<=": rank <= wanted,
        }.get(node.op, False)
    if node.op == "=":
        left, right = _number(value), _number(node.value)
        if left is not None and right is not None and not isinstance(value, str):
            return left == right
        return _text(value) == node.value
    if node.op in ("=~", "!~"):
        found = re.search(node.value, _text(value)) is not None
        return found if node.op == "=~" else not found
    left, right = _number(value), _number(node.value)
    if left is None or right is None:
        return False
    return {">=": left >= right, ">": left > right, "<": left < right, "<=": left <= right}[node.op]


def matches(node: Node, entry: Mapping[str, Any]) -> bool:
    """Whether an entry matches a parsed filter."""
    if isinstance(node, Compare):
        return _compare(node, entry)
    if isinstance(node, Not):
        return not matches(node.operand, entry)
    if node.op == "AND":
        return all(matches(operand, entry) for operand in node.operands)
    return any(matches(operand, entry) for operand in node.operands)


def fields_of(node: Node) -> set[str]:
    """Every field path a filter names."""
    if isinstance(node, Compare):
        return {node.path}
    if isinstance(node, Not):
        return fields_of(node.operand)
    return set().union(*(fields_of(operand) for operand in node.operands))


def _resource_conjuncts(node: Node) -> list[Node]:
    """The top-level AND terms that speak only of the resource: which functions a filter targets."""
    terms = list(node.operands) if isinstance(node, BoolOp) and node.op == "AND" else [node]
    return [term for term in terms if all(path.startswith("resource.") for path in fields_of(term))]


_EXTRACT = re.compile(r"^\s*EXTRACT\(\s*([A-Za-z0-9_.]+)\s*\)\s*$")
_REGEXP_EXTRACT = re.compile(r'^\s*REGEXP_EXTRACT\(\s*([A-Za-z0-9_.]+)\s*,\s*("(?:[^"\\]|\\.)*")\s*\)\s*$')


def parse_extractor(text: str) -> tuple[str, re.Pattern[str] | None]:
    """(field path, regular expression or None) of EXTRACT(F) or REGEXP_EXTRACT(F, "re")."""
    match = _EXTRACT.match(text)
    if match:
        if not _FIELD.match(match.group(1)):
            raise FilterError(f"{text}: not a field path")
        return match.group(1), None
    match = _REGEXP_EXTRACT.match(text)
    if match:
        pattern = re.compile(json.loads(match.group(2)))
        if pattern.groups != 1:
            raise FilterError(f"{text}: REGEXP_EXTRACT needs exactly one capture group")
        return match.group(1), pattern
    raise FilterError(f'{text!r}: only EXTRACT(field) and REGEXP_EXTRACT(field, "re") are in the checked subset')


def extract(extractor: tuple[str, re.Pattern[str] | None], entry: Mapping[str, Any]) -> str | None:
    """What an extractor yields on an entry (None: nothing, as Cloud Logging would leave it empty)."""
    path, pattern = extractor
    value = lookup(entry, path)
    if value is _MISSING or value is None:
        return None
    text = _text(value)
    if pattern is None:
        return text
    match = pattern.search(text)
    return match.group(1) if match else None


# ---------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------

# Fields Cloud Logging sets on every entry of a Cloud Run service (they need not appear in a line).
_ALWAYS = ("resource.", "severity", "logName", "timestamp", "receiveTimestamp", "insertId")


def _services(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    return sorted({str(lookup(e, "resource.labels.service_name")) for e in entries})


def problems(
    metrics: Iterable[Metric], entries: Sequence[Mapping[str, Any]], unmatched_ok: Iterable[str] = ()
) -> list[str]:
    """What is wrong with the metrics, judged on captured entries (empty list: nothing).

    unmatched_ok: metrics (Terraform resource names, e.g. "budget_held") that may match no entry,
    for a capture that did not make every event happen; when one matches nothing, only its parse,
    extractor syntax and descriptor are checked (its fields cannot be judged on no entry).
    """
    allowed = set(unmatched_ok)
    found: list[str] = []
    for metric in metrics:
        where = f"{METRIC_TYPE}.{metric.resource} ({metric.name})"
        try:
            tree = parse_filter(metric.filter)
        except FilterError as exc:
            found.append(f"{where}: filter outside the checked subset: {exc}")
            continue
        matched = [e for e in entries if matches(tree, e)]
        scope = _resource_conjuncts(tree)
        targeted = [e for e in entries if all(matches(term, e) for term in scope)]
        if not targeted:
            found.append(
                f"{where}: its resource terms match none of the {len(entries)} entries (no function it targets logged)"
            )
        elif not matched and metric.resource not in allowed:
            found.append(
                f"{where}: the filter matches none of the {len(targeted)} entries of {', '.join(_services(targeted))}"
            )
        extractors: dict[str, tuple[str, re.Pattern[str] | None]] = {}
        for label, text in [
            *metric.label_extractors.items(),
            *([("value", metric.value_extractor)] if metric.value_extractor else []),
        ]:
            try:
                extractors[label] = parse_extractor(text)
            except FilterError as exc:
                found.append(f"{where}: extractor {label!r}: {exc}")
        paths = fields_of(tree) | {path for path, _ in extractors.values()}
        skip_fields = not matched and metric.resource in allowed
        for path in sorted(paths):
            if skip_fields or path.startswith(_ALWAYS):
                continue
            if targeted and not any(lookup(e, path) is not _MISSING for e in targeted):
                found.append(f"{where}: names {path}, which no entry of {', '.join(_services(targeted))} has")
        for label, extractor in extractors.items():
            missing = [e for e in matched if extract(extractor, e) is None]
            if missing:
                found.append(
                    f"{where}: extractor {label!r} ({extractor[0]}) yields nothing on {len(missing)} of "
                    f"{len(matched)} matched entries, e.g. {json.dumps(missing[0].get('jsonPayload'))[:200]}"
                )
            if label == "value" and metric.value_type == "DISTRIBUTION":
                values = [extract(extractor, e) for e in matched]
                if any(v is not None and _number(v) is None for v in values):
                    found.append(f"{where}: the value extractor yields a value that is not a number")
        if metric.value_type == "DISTRIBUTION" and not metric.value_extractor:
            found.append(f"{where}: a DISTRIBUTION metric needs a value_extractor")
        if set(metric.label_extractors) != set(metric.descriptor_labels):
            found.append(
                f"{where}: label_extractors {sorted(metric.label_extractors)} and metric_descriptor labels "
                f"{sorted(metric.descriptor_labels)} differ"
            )
    return found
