"""Checks that the Terraform deploys what the code expects.

Plain functions over file contents and parsed Terraform (see tfparse.py), so a test can run
them on modified copies and see them catch breakage. Each check returns a list of problems;
an empty list means it passed.

- entry points: every function's build_config.entry_point is a function in main.py registered
  with functions_framework's cloud_event (event-triggered functions) or http (the others), as
  main.py imported in a subprocess shows (code_facts.entry_points);
- environment: every setting of bgremove.config.SETTINGS (imported) is set on the functions
  and every variable set is a setting; secrets only through secret_environment_variables;
  settings wired to a module variable of the same name (lower snake case) and the same
  default as config.py;
- runtime: python3XY matches the project's Python;
- source archive: only main.py, bgremove/ and requirements.txt, named by hash;
- imports: every import in main.py and bgremove/ is bgremove, the standard library or a
  distribution listed in requirements.txt;
- triggers and access: storage trigger, public webhook, scheduler-invoked reconciler;
- per function: exactly the environment and secrets each entry point needs, and nothing the
  code reads only offline (the emulator hosts);
- Cloud Tasks: SUBMIT_QUEUE and DEADLINE_QUEUE are the paths of the queue resources, whose
  rate and retry settings come from module variables; TASK_HANDLER_URL is the URL of the
  on_task function; only a dedicated account (TASKS_SERVICE_ACCOUNT) may invoke it; its
  timeout fits the tasks' dispatch deadline; each runtime account has exactly the
  queue-level grants its code needs, and actAs on the OIDC account only where it enqueues.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bgremove.config import Setting
from infra.checks.code_facts import CLOUD_EVENT, DECORATORS, HTTP, EntryPoints
from infra.checks.tfparse import Block, items, locals_of, single, split_top_level, top_blocks, unwrap, variables_of

FUNCTION_TYPE = "google_cloudfunctions2_function"
QUEUE_TYPE = "google_cloud_tasks_queue"
QUEUE_IAM_TYPE = "google_cloud_tasks_queue_iam_member"
RUN_IAM_TYPE = "google_cloud_run_service_iam_member"
SA_IAM_TYPE = "google_service_account_iam_member"
FINALIZED = "google.cloud.storage.object.v1.finalized"
WEBHOOK_ENTRY_POINT = "on_prediction_webhook"
TASK_HANDLER_ENTRY_POINT = "on_task"
ENQUEUER = "roles/cloudtasks.enqueuer"
QUEUE_VIEWER = "roles/cloudtasks.viewer"
SERVICE_ACCOUNT_USER = "roles/iam.serviceAccountUser"
PUBLIC_MEMBERS = frozenset({"allUsers", "allAuthenticatedUsers"})
# Ingress settings that keep the internet out; Cloud Tasks in the project reaches both.
PRIVATE_INGRESS = frozenset({"ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"})
# Set from resources rather than from a module variable.
COMPUTED_SETTINGS = frozenset(
    {
        "UPLOAD_BUCKET",
        "PROCESSED_BUCKET",
        "STATE_BUCKET",
        "WEBHOOK_URL",
        "SIGNING_SERVICE_ACCOUNT",
        "SUBMIT_QUEUE",
        "DEADLINE_QUEUE",
        "TASK_HANDLER_URL",
        "TASKS_SERVICE_ACCOUNT",
    }
)
# Emulator endpoints the Google client libraries (or our seams) read by themselves: they make
# a client talk plaintext to a local fake without credentials, so a deployment never sets them.
EMULATOR_VARIABLES = frozenset({"STORAGE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "CLOUD_TASKS_EMULATOR_HOST"})
SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PRIVATE_KEY", "API_KEY")
DEPLOYED_TOP_LEVEL = frozenset({"main.py", "requirements.txt", "bgremove"})


# ---------------------------------------------------------------------------
# What the code reads
# ---------------------------------------------------------------------------


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


def _is_secret(name: str, settings: Mapping[str, Setting]) -> bool:
    """A secret setting of the table, or a name that looks like one (a variable the code may not read)."""
    setting = settings.get(name)
    return setting.secret if setting is not None else any(word in name for word in SECRET_WORDS)


def snake(env_name: str) -> str:
    return env_name.lower()


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------


def check_entry_points(functions: Iterable[TfFunction], entry_points: EntryPoints | None) -> list[str]:
    """Each entry point is a function of main.py that functions_framework registered with the
    signature its trigger needs (code_facts.entry_points: main imported, not parsed)."""
    if entry_points is None:
        return ["main.py does not exist"]
    problems = []
    for fn in functions:
        wanted = CLOUD_EVENT if fn.event_trigger is not None else HTTP
        if not fn.entry_point:
            problems.append(f"{fn.name}: no build_config.entry_point")
        elif fn.entry_point not in entry_points.functions:
            problems.append(f"{fn.name}: entry point {fn.entry_point!r} is not a top-level function of main.py")
        elif entry_points.signatures.get(fn.entry_point) != wanted:
            have = entry_points.signatures.get(fn.entry_point)
            registered = f"registered as {have}" if have else "not registered with functions_framework"
            problems.append(
                f"{fn.name}: main.py's {fn.entry_point} needs @functions_framework.{DECORATORS[wanted]} ({registered})"
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


def check_environment(settings: Iterable[Setting], functions: Iterable[TfFunction]) -> list[str]:
    """The variables the code reads (bgremove.config.SETTINGS) and the ones Terraform sets are the same set."""
    functions = list(functions)
    by_env = {s.env: s for s in settings}
    problems = [p for fn in functions for p in fn.problems]
    set_anywhere: set[str] = set()
    for fn in functions:
        for key in fn.env:
            if key in fn.secret_env:
                problems.append(f"{fn.name}: {key} is set both as a plain and as a secret variable")
            if _is_secret(key, by_env):
                problems.append(f"{fn.name}: {key} looks secret: set it with secret_environment_variables")
        for key, secret in fn.secret_env.items():
            if str(secret.get("version")) != "latest" and not str(secret.get("version", "")).isdigit():
                problems.append(f"{fn.name}: secret {key} has version {secret.get('version')!r}")
        names = set(fn.env) | set(fn.secret_env)
        set_anywhere |= names
        for key in sorted(names - set(by_env)):
            problems.append(f"{fn.name}: sets {key}, which bgremove/config.py never reads")
        for setting in by_env.values():
            if setting.required and setting.env not in names:
                problems.append(f"{fn.name}: does not set {setting.env}, which bgremove/config.py requires")
    for name in sorted(set(by_env) - set_anywhere):
        problems.append(f"{name} is read by bgremove/config.py but no function sets it")
    return problems


def check_settings(
    settings: Iterable[Setting],
    functions: Iterable[TfFunction],
    variables: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    """Settings come from module variables named after them, with config.py's defaults."""
    functions = list(functions)
    by_env = {s.env: s for s in settings}
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
            setting = by_env.get(key)
            if setting is None or setting.required:
                continue
            tf_default = variables[variable].get("default", _NO_DEFAULT)
            if not _same_default(setting.default, tf_default):
                shown = "none" if tf_default is _NO_DEFAULT else repr(tf_default)
                problems.append(
                    f"variable {variable}: default {shown}, but bgremove/config.py defaults {key} to "
                    f"{setting.default!r}"
                )
    for setting in by_env.values():
        if setting.env in COMPUTED_SETTINGS or setting.required or _is_secret(setting.env, by_env):
            continue
        if setting.env not in wired:
            problems.append(f"{setting.env} is not wired to a module variable: set it to var.{snake(setting.env)}")
    # WEBHOOK_URL must be the webhook function's URL (any HTTP function's, when none has the
    # webhook's entry point, so the check still means something on other layouts).
    targets = [fn for fn in functions if fn.entry_point == WEBHOOK_ENTRY_POINT] or [
        fn for fn in functions if fn.event_trigger is None
    ]
    http_urls = {f"{FUNCTION_TYPE}.{fn.name}.{attr}" for fn in targets for attr in ("service_config[0].uri", "url")}
    for fn in functions:
        url = fn.env.get("WEBHOOK_URL")
        if url is not None and url.strip() not in http_urls:
            problems.append(f"{fn.name}: WEBHOOK_URL = {url}, not the URL of the webhook function")
        if url is not None and url.strip().startswith(f"{FUNCTION_TYPE}.{fn.name}."):
            problems.append(f"{fn.name}: WEBHOOK_URL refers to the function itself (a dependency cycle)")
        signer = fn.env.get("SIGNING_SERVICE_ACCOUNT")
        if signer is not None and signer.strip() != (fn.service_account or "").strip():
            problems.append(
                f"{fn.name}: SIGNING_SERVICE_ACCOUNT = {signer}, but the function runs as {fn.service_account}"
            )
    return problems


_NO_DEFAULT = object()  # a Terraform variable without a default


def _same_default(python_default: Any, tf_default: Any) -> bool:
    if tf_default is _NO_DEFAULT:
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


def _reference(expression: Any, tf_type: str, attr: str) -> str | None:
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


def module_variables(module: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return variables_of(module)


# ---------------------------------------------------------------------------
# Per-function environment
# ---------------------------------------------------------------------------


def check_offline_only(functions: Iterable[TfFunction], offline: Mapping[str, str]) -> list[str]:
    """No function sets an emulator endpoint or what the code reads outside config.py.

    `offline` maps such a variable to the file that reads it (code_facts.offline_variables).
    """
    offline = dict.fromkeys(EMULATOR_VARIABLES, "the Google client libraries") | dict(offline)
    problems = []
    for fn in functions:
        for key in sorted((set(fn.env) | set(fn.secret_env)) & set(offline)):
            problems.append(
                f"{fn.name}: sets {key}, which is offline-only (read by {offline[key]} through os.environ, "
                "not bgremove/config.py): a deployment must never set it"
            )
    return problems


def check_function_environment(
    settings: Iterable[Setting],
    functions: Iterable[TfFunction],
    extras: Mapping[str, Iterable[str]],
    secrets: Mapping[str, Iterable[str]],
) -> list[str]:
    """Each function sets exactly what its entry point needs.

    Every function gets the shared settings (every setting that is neither computed nor secret)
    and the buckets; `extras` names, per entry point, the computed variables it needs on top
    (queues, URLs, accounts), `secrets` the secrets it gets.
    """
    shared = {
        setting.env
        for setting in settings
        if setting.required or (setting.env not in COMPUTED_SETTINGS and not setting.secret)
    }
    problems = []
    for fn in functions:
        entry = fn.entry_point or ""
        if entry not in extras or entry not in secrets:
            problems.append(f"{fn.name}: no per-function expectations for entry point {entry!r}")
            continue
        wanted = shared | set(extras[entry])
        for key in sorted(wanted - set(fn.env)):
            problems.append(f"{fn.name} ({entry}): does not set {key}, which it needs")
        for key in sorted(set(fn.env) - wanted):
            problems.append(f"{fn.name} ({entry}): sets {key}, which it does not need")
        wanted_secrets = set(secrets[entry])
        for key in sorted(wanted_secrets - set(fn.secret_env)):
            problems.append(f"{fn.name} ({entry}): lacks the secret {key}, which it needs")
        for key in sorted(set(fn.secret_env) - wanted_secrets):
            problems.append(f"{fn.name} ({entry}): gets the secret {key}, which it does not need")
    return problems


# ---------------------------------------------------------------------------
# Cloud Tasks
# ---------------------------------------------------------------------------


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
            if expression.strip() == wanted:
                continue
            named = re.fullmatch(rf"{QUEUE_TYPE}\.(\w+)\.(\w+)", expression.strip())
            if named and named.group(1) not in declared:
                why = f"{QUEUE_TYPE}.{named.group(1)} is not declared"
            elif named and named.group(2) != "id":
                why = f"config.py needs the full path (.id), not .{named.group(2)}"
            elif named:
                why = f"that is the {named.group(1)} queue"
            else:
                why = "not a queue resource's id"
            problems.append(f"{fn.name}: {variable} = {expression}, expected {wanted} ({why})")
    locations = {fn.location_raw for fn in functions if fn.location_raw}
    for resource in declared.values():
        body = resource.body
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
        name = _reference(account, "google_service_account", "email")
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
        if _reference(block.body.get("name"), FUNCTION_TYPE, "name") != handler.name:
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
        name = _reference(fn.service_account, "google_service_account", "email")
        if name:
            used.setdefault(name, f"the runtime account of {fn.name}")
        trigger = fn.event_trigger or {}
        name = _reference(trigger.get("service_account_email"), "google_service_account", "email")
        if name:
            used.setdefault(name, f"the trigger account of {fn.name}")
    for block in top_blocks(module, "resource"):
        if block.type == "google_cloud_scheduler_job":
            oidc = single(single(block.body, "http_target") or {}, "oidc_token") or {}
            name = _reference(oidc.get("service_account_email"), "google_service_account", "email")
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
    granted: dict[str, set[tuple[str, str]]] = {}  # member -> {(queue, role)}
    for block in top_blocks(module, "resource"):
        role = str(block.body.get("role", ""))
        if block.type == QUEUE_IAM_TYPE:
            queue = _reference(block.body.get("name"), QUEUE_TYPE, "name")
            if queue is None or queue not in queues:
                problems.append(f"{block.address}: name must be {QUEUE_TYPE}.<queue>.name of a declared queue")
                continue
            for member in members_of(block):
                granted.setdefault(member, set()).add((queue, role))
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
        if (name := _reference(fn.env.get("TASKS_SERVICE_ACCOUNT"), "google_service_account", "email"))
    }
    for account in sorted(accounts):
        users: set[str] = set()
        for block in top_blocks(module, "resource"):
            if (
                block.type == SA_IAM_TYPE
                and _reference(block.body.get("service_account_id"), "google_service_account", "name") == account
            ):
                if block.body.get("role") == SERVICE_ACCOUNT_USER:
                    users.update(members_of(block))
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
        for member in sorted(users - set(runtime)):
            problems.append(
                f"{member} has {SERVICE_ACCOUNT_USER} on google_service_account.{account}, but no function runs as it"
            )
    return problems
