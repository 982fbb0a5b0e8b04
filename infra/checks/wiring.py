"""Checks that the Terraform deploys what the code expects.

Plain functions over file contents and parsed Terraform (see tfparse.py), so a test can run
them on modified copies and see them catch breakage. Each check returns a list of problems;
an empty list means it passed.

- entry points: every function's build_config.entry_point is a function in main.py decorated
  with functions_framework's cloud_event (event-triggered functions) or http (the others);
- environment: every variable bgremove/config.py reads (found by AST) is set on the functions
  and every variable set is read; secrets only through secret_environment_variables;
  settings wired to a module variable of the same name (lower snake case) and the same
  default as config.py;
- runtime: python3XY matches the project's Python;
- source archive: only main.py, bgremove/ and requirements.txt, named by hash;
- imports: every import in main.py and bgremove/ is bgremove, the standard library or a
  distribution listed in requirements.txt;
- triggers and access: storage trigger, public webhook, scheduler-invoked reconciler.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib.metadata
import operator
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.checks.tfparse import items, locals_of, single, split_top_level, top_blocks, unwrap, variables_of

FUNCTION_TYPE = "google_cloudfunctions2_function"
FINALIZED = "google.cloud.storage.object.v1.finalized"
READERS = frozenset({"text", "required", "names", "whole", "number", "url"})
# Set from resources rather than from a module variable.
COMPUTED_SETTINGS = frozenset(
    {"UPLOAD_BUCKET", "PROCESSED_BUCKET", "STATE_BUCKET", "WEBHOOK_URL", "SIGNING_SERVICE_ACCOUNT"}
)
SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PRIVATE_KEY", "API_KEY")
DEPLOYED_TOP_LEVEL = frozenset({"main.py", "requirements.txt", "bgremove"})
NO_DEFAULT: Any = object()


# ---------------------------------------------------------------------------
# What the code reads
# ---------------------------------------------------------------------------


@dataclass
class EnvRead:
    """One environment variable read by bgremove/config.py."""

    name: str
    readers: set[str] = field(default_factory=set)
    default: Any = NO_DEFAULT  # the evaluated default of the first read that has one
    required: bool = False


def config_env_reads(config_source: str) -> dict[str, EnvRead]:
    """Every environment variable config.py reads through the _Env readers.

    A read is a call `<name>.<reader>("VARIABLE", default, ...)` where <name> is `env` or a
    variable assigned from `_Env(...)`, and <reader> one of text/required/names/whole/number/url.
    """
    tree = ast.parse(config_source)
    constants = _module_constants(tree)
    env_names = {"env"}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "_Env"
        ):
            env_names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    reads: dict[str, EnvRead] = {}
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in READERS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in env_names
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            continue
        name = node.args[0].value
        read = reads.setdefault(name, EnvRead(name))
        read.readers.add(node.func.attr)
        if node.func.attr == "required":
            read.required = True
            continue
        default_node = (
            node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "default"), None)
        )
        if default_node is not None and read.default is NO_DEFAULT:
            read.default = _evaluate(default_node, constants)
    return reads


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}


class _NotConstant(Exception):
    pass


def _module_constants(tree: ast.Module) -> dict[str, Any]:
    constants: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            with contextlib.suppress(_NotConstant):
                constants[node.targets[0].id] = _evaluate_strict(node.value, constants)
    return constants


def _evaluate(node: ast.expr, constants: Mapping[str, Any]) -> Any:
    try:
        return _evaluate_strict(node, constants)
    except _NotConstant:
        return NO_DEFAULT


def _evaluate_strict(node: ast.expr, constants: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate_strict(node.operand, constants)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_evaluate_strict(node.left, constants), _evaluate_strict(node.right, constants))
    if isinstance(node, ast.Tuple):
        return tuple(_evaluate_strict(e, constants) for e in node.elts)
    raise _NotConstant


def main_entry_points(main_source: str) -> dict[str, set[str]]:
    """Top-level functions of main.py and the functions_framework decorators on each.

    Recognises `@functions_framework.http`, `@functions_framework.cloud_event` (also through
    `import functions_framework as ff` and `from functions_framework import http`), called or not.
    """
    tree = ast.parse(main_source)
    module_aliases: set[str] = set()
    name_aliases: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "functions_framework":
                    module_aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module == "functions_framework":
            for alias in node.names:
                name_aliases[alias.asname or alias.name] = alias.name
    found: dict[str, set[str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        kinds: set[str] = set()
        for decorator in node.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            if (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id in module_aliases
            ):
                kinds.add(target.attr)
            elif isinstance(target, ast.Name) and target.id in name_aliases:
                kinds.add(name_aliases[target.id])
        found[node.name] = kinds
    return found


# ---------------------------------------------------------------------------
# What Terraform deploys
# ---------------------------------------------------------------------------


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


def _is_secret_name(name: str) -> bool:
    return any(word in name for word in SECRET_WORDS)


def snake(env_name: str) -> str:
    return env_name.lower()


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------


def check_entry_points(functions: Iterable[TfFunction], main_source: str | None) -> list[str]:
    """Each entry point exists in main.py with the decorator that matches its trigger."""
    functions = list(functions)
    if main_source is None:
        return ["main.py does not exist"]
    defined = main_entry_points(main_source)
    problems = []
    for fn in functions:
        wanted = "cloud_event" if fn.event_trigger is not None else "http"
        if not fn.entry_point:
            problems.append(f"{fn.name}: no build_config.entry_point")
        elif fn.entry_point not in defined:
            problems.append(f"{fn.name}: entry point {fn.entry_point!r} is not a top-level function of main.py")
        elif wanted not in defined[fn.entry_point]:
            have = ", ".join(sorted(defined[fn.entry_point])) or "none"
            problems.append(
                f"{fn.name}: main.py's {fn.entry_point} needs @functions_framework.{wanted} (decorators: {have})"
            )
    return problems


def check_runtime(functions: Iterable[TfFunction], python_version: tuple[int, int]) -> list[str]:
    """Every function runs the project's Python."""
    major, minor = python_version
    wanted = f"python{major}{minor}"
    return [
        f"{fn.name}: runtime {fn.runtime!r}, but the project uses Python {major}.{minor} ({wanted})"
        for fn in functions
        if fn.runtime != wanted
    ]


def check_environment(reads: Mapping[str, EnvRead], functions: Iterable[TfFunction]) -> list[str]:
    """The variables the code reads and the ones Terraform sets are the same set."""
    functions = list(functions)
    problems = [p for fn in functions for p in fn.problems]
    set_anywhere: set[str] = set()
    for fn in functions:
        for key in fn.env:
            if key in fn.secret_env:
                problems.append(f"{fn.name}: {key} is set both as a plain and as a secret variable")
            if _is_secret_name(key):
                problems.append(f"{fn.name}: {key} looks secret: set it with secret_environment_variables")
        for key, secret in fn.secret_env.items():
            if str(secret.get("version")) != "latest" and not str(secret.get("version", "")).isdigit():
                problems.append(f"{fn.name}: secret {key} has version {secret.get('version')!r}")
        names = set(fn.env) | set(fn.secret_env)
        set_anywhere |= names
        for key in sorted(names - set(reads)):
            problems.append(f"{fn.name}: sets {key}, which bgremove/config.py never reads")
        for read in reads.values():
            if read.required and read.name not in names:
                problems.append(f"{fn.name}: does not set {read.name}, which bgremove/config.py requires")
    for name in sorted(set(reads) - set_anywhere):
        problems.append(f"{name} is read by bgremove/config.py but no function sets it")
    return problems


def check_settings(
    reads: Mapping[str, EnvRead],
    functions: Iterable[TfFunction],
    variables: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    """Settings come from module variables named after them, with config.py's defaults."""
    functions = list(functions)
    problems: list[str] = []
    wired: set[str] = set()
    for fn in functions:
        for key, expression in fn.env.items():
            match = re.fullmatch(r"var\.(\w+)", expression.strip())
            if not match:
                continue
            wired.add(key)
            variable = match.group(1)
            if variable != snake(key):
                problems.append(f"{fn.name}: {key} = var.{variable}; the variable must be named {snake(key)}")
                continue
            if variable not in variables:
                problems.append(f"{fn.name}: {key} = var.{variable}, which is not declared")
                continue
            read = reads.get(key)
            if read is None or read.default is NO_DEFAULT:
                continue
            tf_default = variables[variable].get("default", NO_DEFAULT)
            if not _same_default(read.default, tf_default):
                shown = "none" if tf_default is NO_DEFAULT else repr(tf_default)
                problems.append(
                    f"variable {variable}: default {shown}, but bgremove/config.py defaults {key} to {read.default!r}"
                )
    for read in reads.values():
        if read.name in COMPUTED_SETTINGS or read.required or _is_secret_name(read.name):
            continue
        if read.name not in wired:
            problems.append(f"{read.name} is not wired to a module variable: set it to var.{snake(read.name)}")
    http_urls = {
        f"{FUNCTION_TYPE}.{fn.name}.{attr}"
        for fn in functions
        if fn.event_trigger is None
        for attr in ("service_config[0].uri", "url")
    }
    for fn in functions:
        url = fn.env.get("WEBHOOK_URL")
        if url is not None and url.strip() not in http_urls:
            problems.append(f"{fn.name}: WEBHOOK_URL = {url}, not the URL of an HTTP function")
        if url is not None and url.strip().startswith(f"{FUNCTION_TYPE}.{fn.name}."):
            problems.append(f"{fn.name}: WEBHOOK_URL refers to the function itself (a dependency cycle)")
        signer = fn.env.get("SIGNING_SERVICE_ACCOUNT")
        if signer is not None and signer.strip() != (fn.service_account or "").strip():
            problems.append(
                f"{fn.name}: SIGNING_SERVICE_ACCOUNT = {signer}, but the function runs as {fn.service_account}"
            )
    return problems


def _same_default(python_default: Any, tf_default: Any) -> bool:
    if tf_default is NO_DEFAULT:
        return False
    if isinstance(python_default, bool) or isinstance(tf_default, bool):
        return str(python_default).lower() == str(tf_default).lower()
    if isinstance(python_default, int | float) and isinstance(tf_default, int | float):
        return float(python_default) == float(tf_default)
    if isinstance(python_default, tuple):
        python_default = ",".join(str(v) for v in python_default)
    if isinstance(tf_default, list):
        tf_default = ",".join(str(v) for v in tf_default)
    return str(python_default) == str(tf_default)


def check_source_archive(module: Mapping[str, Mapping[str, Any]], repo_root: Path) -> list[str]:
    """The archive holds main.py, bgremove/ and requirements.txt only, and is named by hash.

    The module must build data "archive_file" from a dynamic "source" block iterating a local
    list built with fileset() from `local.source_includes`: that list is checked, and the
    fileset is re-enacted here on repo_root to list what would be deployed.
    """
    problems: list[str] = []
    archives = [b for b in top_blocks(module, "data") if b.type == "archive_file"]
    if len(archives) != 1:
        return [f'expected one data "archive_file", found {len(archives)}']
    archive = archives[0]
    for forbidden in ("source_dir", "source_file", "source_content"):
        if forbidden in archive.body:
            problems.append(f'{archive.address}: uses {forbidden}; build it from the allow-list (dynamic "source")')
    dynamic_sources = [
        dyn for entry in archive.body.get("dynamic", []) for label, dyn in entry.items() if label == "source"
    ]
    if len(dynamic_sources) != 1 or unwrap(dynamic_sources[0].get("for_each")) != "local.source_files":
        problems.append(f'{archive.address}: needs one dynamic "source" with for_each = local.source_files')
    local_values = locals_of(module)
    includes = local_values.get("source_includes")
    if not isinstance(includes, list) or not all(isinstance(p, str) for p in includes):
        return problems + ["local.source_includes must be a literal list of fileset patterns"]
    if "source_includes" not in str(local_values.get("source_files", "")):
        problems.append("local.source_files must be built from local.source_includes")
    for pattern in includes:
        top = pattern.split("/", 1)[0]
        if top not in DEPLOYED_TOP_LEVEL:
            problems.append(f"local.source_includes: {pattern!r} deploys {top!r}, which is not part of the function")
    files = simulate_fileset(repo_root, includes)
    for needed in ("main.py", "requirements.txt"):
        if needed not in includes:
            problems.append(f"local.source_includes does not include {needed}")
    if not any(p.startswith("bgremove/") for p in includes):
        problems.append("local.source_includes does not include the bgremove package")
    package_files = [f for f in files if f.startswith("bgremove/")]
    if (repo_root / "bgremove" / "__init__.py").exists() and "bgremove/__init__.py" not in package_files:
        problems.append("the archive would not contain bgremove/__init__.py")
    for path in (repo_root / "bgremove").rglob("*.py") if (repo_root / "bgremove").exists() else []:
        rel = path.relative_to(repo_root).as_posix()
        if "__pycache__" not in rel and rel not in files:
            problems.append(f"the archive would leave out {rel}")
    objects = [
        b
        for b in top_blocks(module, "resource")
        if b.type == "google_storage_bucket_object"
        and f"data.archive_file.{archive.name}.output_path" in str(b.body.get("source", ""))
    ]
    if len(objects) != 1:
        problems.append("expected one google_storage_bucket_object uploading the archive's output_path")
    elif not re.search(
        rf"data\.archive_file\.{archive.name}\.output_(md5|sha|sha256|sha512|base64sha256)\b",
        str(objects[0].body.get("name", "")),
    ):
        problems.append(
            f"{objects[0].address}: its name must contain the archive's hash, or code changes will not redeploy"
        )
    else:
        uploaded = objects[0].name
        for fn in (b for b in top_blocks(module, "resource") if b.type == FUNCTION_TYPE):
            storage = single(single(single(fn.body, "build_config") or {}, "source") or {}, "storage_source") or {}
            if unwrap(storage.get("object")) != f"google_storage_bucket_object.{uploaded}.name":
                problems.append(f"{fn.address}: build_config.source.storage_source.object is not the archive object")
    return problems


def simulate_fileset(root: Path, patterns: Iterable[str]) -> list[str]:
    """Files fileset(root, pattern) would return for each pattern, less __pycache__/*.pyc."""
    found: set[str] = set()
    for pattern in patterns:
        regex = _glob_regex(pattern)
        top = pattern.split("/", 1)[0]
        if any(c in top for c in "*?[{"):
            candidates = [p for p in root.rglob("*") if p.is_file()]
        elif (root / top).is_dir():
            candidates = [p for p in (root / top).rglob("*") if p.is_file()]
        else:
            candidates = [root / top] if (root / top).is_file() else []
        found.update(rel for rel in (p.relative_to(root).as_posix() for p in candidates) if regex.fullmatch(rel))
    return sorted(f for f in found if "__pycache__" not in f and not f.endswith(".pyc"))


def _glob_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        elif pattern[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            parts.append("[^/]")
            i += 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(parts))


def check_imports(sources: Mapping[str, str], requirements_text: str | None) -> list[str]:
    """Every absolute import is bgremove, the standard library or a requirements.txt distribution.

    sources maps a display name to Python source. A distribution's modules are read from its
    installed metadata (the test venv has them); for one that is not installed, the module
    name is guessed from the distribution name. `from a.b import c` needs a.b.c when that is
    a module somewhere, else a.b, so a shared namespace (google.cloud) proves nothing alone.
    """
    if requirements_text is None:
        return ["requirements.txt does not exist"]
    provided: set[str] = set()
    for name in requirement_names(requirements_text):
        provided |= _modules_of(name)
    problems = []
    for source_name, source in sources.items():
        for module, names, line in _imports(source):
            top = module.split(".")[0]
            if top == "bgremove" or top in sys.stdlib_module_names:
                continue
            candidates = [f"{module}.{n}" for n in names if f"{module}.{n}" in _installed_modules()]
            needed = candidates or [module]
            for wanted in needed:
                if wanted not in provided:
                    hint = _installed_by(wanted)
                    extra = f" (installed here by {hint})" if hint else ""
                    problems.append(
                        f"{source_name}:{line}: imports {wanted}, "
                        f"which no distribution in requirements.txt provides{extra}"
                    )
    return problems


def requirement_names(text: str) -> list[str]:
    """Normalised distribution names of a requirements file (options and comments skipped)."""
    names = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if match:
            names.append(_normalise(match.group(1)))
    return names


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports(source: str) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every absolute import."""
    found: list[tuple[str, list[str], int]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((alias.name, [], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [a.name for a in node.names if a.name != "*"], node.lineno))
    return found


@functools.cache
def _modules_of(distribution: str) -> frozenset[str]:
    """Dotted names of the modules and packages a distribution installs, with every prefix."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return frozenset({distribution.replace("-", "_"), distribution.replace("-", ".")})
    names: set[str] = set()
    for file in files:
        parts = file.parts
        if not parts or parts[0] in ("..", "bin") or parts[0].endswith((".dist-info", ".egg-info", ".data")):
            continue
        if not file.name.endswith((".py", ".pyi", ".so", ".pyd")):
            continue
        leaf = parts[-1].split(".", 1)[0]
        dotted = list(parts[:-1]) if leaf == "__init__" else [*parts[:-1], leaf]
        names.update(".".join(dotted[:i]) for i in range(1, len(dotted) + 1))
    return frozenset(names)


@functools.cache
def _installed_modules() -> frozenset[str]:
    names: set[str] = set()
    for dist in importlib.metadata.distributions():
        names |= _modules_of(dist.metadata["Name"])
    return frozenset(names)


def _installed_by(module: str) -> str | None:
    for dist in importlib.metadata.distributions():
        if module in _modules_of(dist.metadata["Name"]):
            return str(dist.metadata["Name"])
    return None


def check_access(module: Mapping[str, Mapping[str, Any]], functions: Iterable[TfFunction]) -> list[str]:
    """Storage trigger settings, and who may invoke each function."""
    problems: list[str] = []
    resources = list(top_blocks(module, "resource"))
    invokers: dict[str, set[str]] = {}
    for block in resources:
        if block.type == "google_cloud_run_service_iam_member" and block.body.get("role") == "roles/run.invoker":
            service = str(unwrap(block.body.get("service")))
            match = re.fullmatch(rf"{FUNCTION_TYPE}\.(\w+)\.name", service)
            if match:
                invokers.setdefault(match.group(1), set()).add(str(unwrap(block.body.get("member"))))
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
        elif fn.ingress == "ALLOW_ALL":
            if "allUsers" not in members:
                problems.append(f"{fn.name}: public (ALLOW_ALL) but allUsers lacks roles/run.invoker")
        else:
            account = scheduled.get(fn.name)
            if account is None:
                problems.append(f"{fn.name}: internal HTTP function that no scheduler job calls with an OIDC token")
            elif account.replace(".email", ".member") not in members:
                problems.append(f"{fn.name}: the scheduler's service account has no roles/run.invoker on it")
        if "allUsers" in members and fn.ingress != "ALLOW_ALL":
            problems.append(f"{fn.name}: allUsers may invoke it, but it is not the public webhook")
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


def module_variables(module: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return variables_of(module)
