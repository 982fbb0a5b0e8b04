"""Environment contracts: the settings bgremove/config.py declares (bgremove.config.SETTINGS,
imported) against the environment Terraform gives each function.

- every setting is set on the functions and every variable set is a setting; required ones on
  every function; secrets only through secret_environment_variables;
- each tunable setting is wired to the module variable of the same name in lower case, with the
  table's default; that variable's type is the setting's (number for whole and number kinds),
  and where its validation declares bounds or choices they are the table's;
- WEBHOOK_URL is the webhook function's URL, SIGNING_SERVICE_ACCOUNT the function's own account;
- per function: exactly the environment and secrets its entry point needs, and nothing the code
  reads only offline (the emulator hosts);
- settings config.py checks together at start (`agrees_with` in the table) are set together;
- each mounted secret is readable by the function's runtime account (secretAccessor on that
  secret), by no other account, and mounted only while the secret exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from bgremove.config import Setting
from infra.checks.tf_model import (
    FUNCTION_TYPE,
    SECRET_IAM_TYPE,
    SECRET_TYPE,
    TfFunction,
    condition_of,
    count_condition,
    members_of,
    reference,
    validation_of,
)
from infra.checks.tfparse import locals_of, top_blocks, unwrap

WEBHOOK_ENTRY_POINT = "on_prediction_webhook"
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
        "EVENTS_TOPIC",
        "NOTIFY_QUEUE",
    }
)
# Emulator endpoints the Google client libraries (or our seams) read by themselves: they make
# a client talk plaintext to a local fake without credentials, so a deployment never sets them.
EMULATOR_VARIABLES = frozenset({"STORAGE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "CLOUD_TASKS_EMULATOR_HOST"})
# The Terraform type of each kind of setting: the numbers are numbers, flags bools (Terraform
# writes true/false into the environment, which config.py's flag reader takes), the rest text.
TF_TYPES = {"whole": "number", "number": "number", "flag": "bool"}
# For variables outside the table: a name with one of these words is taken for a secret.
SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PRIVATE_KEY", "API_KEY")


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


def _is_secret(name: str, settings: Mapping[str, Setting]) -> bool:
    """A secret setting of the table, or a name that looks like one (a variable the code may not read)."""
    setting = settings.get(name)
    return setting.secret if setting is not None else any(word in name for word in SECRET_WORDS)


def snake(env_name: str) -> str:
    return env_name.lower()


def check_setting_variables(settings: Iterable[Setting], variables: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The module variable of each setting has its type, and validates as bgremove/config.py does
    where it declares bounds or choices: a value Terraform accepts must not stop the functions at
    start, and one the functions take must not be refused at plan."""
    problems: list[str] = []
    for setting in settings:
        name = snake(setting.env)
        variable = variables.get(name)
        if variable is None:
            continue  # whether it must exist: check_settings
        wanted = TF_TYPES.get(setting.kind, "string")
        declared = str(unwrap(variable.get("type", "")))
        if declared != wanted:
            problems.append(
                f"variable {name}: type {declared or 'none'}, but {setting.env} is a {setting.kind} setting "
                f"in bgremove/config.py (type = {wanted})"
            )
        validation = validation_of(name, variable)
        for bound, declared_bound, table_bound in (
            ("at least", validation.minimum, setting.minimum),
            ("at most", validation.maximum, setting.maximum),
        ):
            if declared_bound is not None and declared_bound != table_bound:
                table = "no bound" if table_bound is None else f"{bound} {table_bound:g}"
                problems.append(
                    f"variable {name}: validation says {bound} {declared_bound:g}, but bgremove/config.py says "
                    f"{table} for {setting.env}"
                )
        if validation.choices is not None:
            if set(validation.choices) != set(setting.choices):
                problems.append(
                    f"variable {name}: validation allows {sorted(validation.choices)}, but bgremove/config.py "
                    f"allows {sorted(setting.choices)} for {setting.env}"
                )
            if validation.upper != setting.upper:
                how = "in any case" if setting.upper else "only as written"
                problems.append(
                    f"variable {name}: validation {'upper-cases' if validation.upper else 'does not upper-case'} "
                    f"the value, but bgremove/config.py takes {setting.env} {how}"
                )
    return problems


def check_agreeing_settings(settings: Iterable[Setting], functions: Iterable[TfFunction]) -> list[str]:
    """A function that sets a setting also sets the ones config.py checks together with it at start
    (`Setting.agrees_with`): NOTIFY_URL needs NOTIFY_SECRET and NOTIFY_QUEUE wherever it is set,
    or the function stops at start as soon as notify_url is given a value."""
    problems = []
    for fn in functions:
        names = set(fn.env) | set(fn.secret_env)
        for setting in settings:
            partners = sorted(set(setting.agrees_with) & names)
            if partners and setting.env not in names:
                problems.append(
                    f"{fn.name}: sets {', '.join(partners)} but not {setting.env}, which bgremove/config.py "
                    "checks together with it at start"
                )
    return problems


SECRET_ACCESSOR = "roles/secretmanager.secretAccessor"


def check_secret_access(module: Mapping[str, Mapping[str, Any]], functions: Iterable[TfFunction]) -> list[str]:
    """Each secret a function mounts is a declared google_secret_manager_secret whose
    roles/secretmanager.secretAccessor (on the secret, never the project) its runtime account has;
    no other account has it; and a secret created only under a condition is mounted only under it
    (a `dynamic` block iterating the secret itself, or conditioned the same way)."""
    functions = list(functions)
    problems: list[str] = []
    secrets = {b.name: b for b in top_blocks(module, "resource") if b.type == SECRET_TYPE}
    local_values = locals_of(module)
    readers: dict[str, set[str]] = {}
    for block in top_blocks(module, "resource"):
        if block.type == SECRET_IAM_TYPE and block.body.get("role") == SECRET_ACCESSOR:
            name = reference(block.body.get("secret_id"), SECRET_TYPE, "secret_id")
            if name is None or name not in secrets:
                problems.append(
                    f"{block.address}: secret_id must be {SECRET_TYPE}.<secret>.secret_id of a declared one"
                )
                continue
            readers.setdefault(name, set()).update(members_of(block, local_values))
        elif block.type in ("google_project_iam_member", "google_project_iam_binding") and (
            str(block.body.get("role", "")).startswith("roles/secretmanager.")
        ):
            problems.append(f"{block.address}: {block.body.get('role')} on the whole project; grant it on the secret")
    mounted: dict[str, set[str]] = {}
    for fn in functions:
        for key, mount in sorted(fn.secret_env.items()):
            name = reference(mount.get("secret"), SECRET_TYPE, "secret_id")
            if name is None or name not in secrets:
                problems.append(f"{fn.name}: secret {key} is not a declared {SECRET_TYPE}'s secret_id")
                continue
            if fn.runtime_member is None:
                continue
            mounted.setdefault(name, set()).add(fn.runtime_member)
            if fn.runtime_member not in readers.get(name, set()):
                problems.append(
                    f"{fn.name}: mounts {key} from {SECRET_TYPE}.{name}, but its account has no {SECRET_ACCESSOR} on it"
                )
            needed = count_condition(secrets[name])
            guard = fn.secret_guards.get(key)
            if needed is not None and guard != f"{SECRET_TYPE}.{name}" and condition_of(guard or "") != needed:
                problems.append(
                    f"{fn.name}: mounts {key} unconditionally, but {SECRET_TYPE}.{name} exists only when {needed}: "
                    f'use dynamic "secret_environment_variables" {{ for_each = {SECRET_TYPE}.{name} }}'
                )
    for name, members in sorted(readers.items()):
        for member in sorted(members - mounted.get(name, set())):
            problems.append(
                f"{SECRET_TYPE}.{name}: {SECRET_ACCESSOR} granted to {member}, which mounts it in no function"
            )
    return problems
