"""Configuration: read once into a frozen dataclass; bad settings fail fast, naming the variable."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
from pathlib import Path
from typing import get_args

import pytest

from bgremove import config, events, tasks
from bgremove.config import DEFAULT_MODEL_VERSION, duration_seconds, load_config
from bgremove.errors import ConfigError

BASE = {"UPLOAD_BUCKET": "u", "PROCESSED_BUCKET": "p", "STATE_BUCKET": "s"}


def test_defaults_are_the_documented_ones() -> None:
    cfg = load_config(BASE)
    assert cfg.api_base_url == "https://api.replicate.com/v1"
    assert cfg.model_version == DEFAULT_MODEL_VERSION
    assert cfg.allowed_content_types == (
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/heic",
        "image/heif",
        "image/avif",
    )
    assert cfg.input_mode == "auto" and cfg.data_url_max_bytes == 256 * 1024
    assert cfg.output_allowed_hosts == ("replicate.delivery",)
    assert cfg.webhook_tolerance_seconds == 300


def test_config_is_frozen() -> None:
    cfg = load_config(BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.upload_bucket = "other"  # type: ignore[misc]


@pytest.mark.parametrize("missing", ["UPLOAD_BUCKET", "PROCESSED_BUCKET", "STATE_BUCKET"])
def test_missing_required_setting_names_the_variable(missing: str) -> None:
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        load_config(env)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_UPLOAD_BYTES", "lots"),
        ("MAX_UPLOAD_BYTES", "0"),
        ("HTTP_TIMEOUT_SECONDS", "soon"),
        ("INPUT_MODE", "carrier-pigeon"),
        ("CANCEL_AFTER", "five minutes"),
        ("PREDICTIONS_BASE_URL", "ftp://example.com"),
        ("WEBHOOK_URL", "not a url"),
        ("WEBHOOK_SECRETS", "plainsecret"),
        ("LOG_LEVEL", "LOUD"),
        ("API_MAX_ATTEMPTS", "100"),
    ],
)
def test_invalid_setting_fails_fast_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_config({**BASE, name: value})


def test_lists_accept_commas_and_spaces_and_prefix_gets_a_slash() -> None:
    cfg = load_config({**BASE, "WEBHOOK_SECRETS": "whsec_a, whsec_b whsec_c", "OUTPUT_PREFIX": "/cutouts"})
    assert cfg.webhook_secrets == ("whsec_a", "whsec_b", "whsec_c")
    assert cfg.output_prefix == "cutouts/"


def test_durations_use_the_cancel_after_grammar() -> None:
    assert duration_seconds("1h30m") == 5400
    assert duration_seconds("90s") == 90
    assert duration_seconds("1.5s") == 1.5


# ---------------------------------------------------------------------------
# The table of settings
# ---------------------------------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"
DEPLOYED = Path(__file__).resolve().parents[2]

# What each kind's reader returns (the table is read into Config through dict[str, Any]).
KIND_TYPES = {
    "text": "str",
    "names": "tuple[str, ...]",
    "hosts": "tuple[str, ...]",
    "signing_secrets": "tuple[str, ...]",
    "whole": "int",
    "number": "float",
    "url": "str",
    "base_url": "str",
    "choice": "str",
    "duration": "str",
    "prefix": "str",
    "queue": "str",
    "variants": "tuple[variants.Variant, ...]",
    "flag": "bool",
    "topic": "str",
}

# A value each kind refuses (None: the kind takes any text).
INVALID = {
    "whole": "1.5",
    "number": "soon",
    "url": "not a url",
    "base_url": "ftp://example.com",
    "choice": "nope",
    "duration": "five minutes",
    "prefix": "a" * (config.MAX_OUTPUT_PREFIX_BYTES + 1),
    "queue": "queue-without-a-path",
    "signing_secrets": "plainsecret",
    "variants": "[",
    "flag": "maybe",
    "topic": "my-topic",
}


def test_the_table_fills_every_config_field_in_order() -> None:
    assert [s.field for s in config.SETTINGS] == [f.name for f in dataclasses.fields(config.Config)]
    names = [s.env for s in config.SETTINGS]
    assert len(set(names)) == len(names)
    assert set(KIND_TYPES) == set(get_args(config.Kind))


def test_each_kind_gives_the_type_of_its_field() -> None:
    annotations = {f.name: f.type for f in dataclasses.fields(config.Config)}
    for setting in config.SETTINGS:
        assert annotations[setting.field] == KIND_TYPES[setting.kind], setting.env


def test_defaults_and_bounds_are_values_the_readers_accept() -> None:
    cfg = load_config(BASE)
    for setting in config.SETTINGS:
        if setting.required:
            continue
        assert getattr(cfg, setting.field) == config.read_setting(setting, str(setting.default)), setting.env
        for bound in (setting.minimum, setting.maximum):
            if bound is not None and setting.kind in ("whole", "number"):
                text = str(int(bound)) if setting.kind == "whole" else str(bound)
                assert config.read_setting(setting, text) == bound, setting.env  # a bound is accepted
        for choice in setting.choices:
            assert config.read_setting(setting, choice) == choice, setting.env


@pytest.mark.parametrize("setting", [s for s in config.SETTINGS if s.kind in INVALID], ids=lambda s: s.env)
def test_every_setting_refuses_a_bad_value_naming_itself(setting: config.Setting) -> None:
    with pytest.raises(ConfigError, match=setting.env):
        load_config({**BASE, setting.env: INVALID[setting.kind]})


@pytest.mark.parametrize("setting", [s for s in config.SETTINGS if s.minimum is not None], ids=lambda s: s.env)
def test_below_the_minimum_is_refused(setting: config.Setting) -> None:
    assert setting.minimum is not None
    below = {"whole": str(int(setting.minimum) - 1), "number": str(setting.minimum - 0.01)}.get(setting.kind, "1s")
    with pytest.raises(ConfigError, match=f"{setting.env} must be at least"):
        load_config({**BASE, setting.env: below})


CROSS_CHECK_FAILURES = {
    "WEBHOOK_MAX_BODY_BYTES": {"WEBHOOK_MAX_BODY_BYTES": "65536"},
    "NOTIFY_SECRET": {"NOTIFY_URL": "https://example.com/hook", "NOTIFY_QUEUE": "projects/p/locations/l/queues/n"},
    "NOTIFY_QUEUE": {"NOTIFY_URL": "https://example.com/hook", "NOTIFY_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2L"},
}


@pytest.mark.parametrize("limited", [s for s in config.SETTINGS if s.agrees_with], ids=lambda s: s.env)
def test_a_failed_cross_check_names_only_the_settings_it_agrees_with(limited: config.Setting) -> None:
    with pytest.raises(ConfigError) as failed:
        load_config({**BASE, **CROSS_CHECK_FAILURES[limited.env]})
    named = set(re.findall(r"\b[A-Z][A-Z_]{3,}\b", str(failed.value)))
    assert limited.env in named and named <= {limited.env, *limited.agrees_with}, named


def test_secrets_are_never_in_their_error_messages() -> None:
    for setting in (s for s in config.SETTINGS if s.secret and s.kind in INVALID):
        with pytest.raises(ConfigError) as failed:
            load_config({**BASE, setting.env: INVALID[setting.kind]})
        assert INVALID[setting.kind] not in str(failed.value)


def readme_settings() -> dict[str, str]:
    """{variable: default cell} of the README's Settings table."""
    section = README.read_text(encoding="utf-8").split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]*) \|", section, re.MULTILINE))


def test_readme_lists_every_setting_with_its_default() -> None:
    listed = readme_settings()
    assert set(listed) == {s.env for s in config.SETTINGS}
    for setting in config.SETTINGS:
        cell = listed[setting.env].strip()
        if setting.required:
            assert cell == "required", setting.env
        elif setting.default == "":
            assert not cell.startswith("`"), (setting.env, cell)  # words for what empty means
        else:
            literal = cell.strip("`")
            default = f"{setting.default:g}" if isinstance(setting.default, float) else str(setting.default)
            head, ellipsis, tail = literal.partition("…")
            assert default.startswith(head) and default.endswith(tail) if ellipsis else default == literal, (
                setting.env,
                cell,
            )


# ---------------------------------------------------------------------------
# Only config.py reads the environment
# ---------------------------------------------------------------------------


def direct_env_reads() -> dict[str, str]:
    """Variables the deployed code (main.py, bgremove/) reads straight from os.environ, outside
    config.py: {name: file}. A key given by name is looked up on its module."""
    found: dict[str, str] = {}
    paths = [DEPLOYED / "main.py", *sorted((DEPLOYED / "bgremove").glob("*.py"))]
    for path in paths:
        rel = path.relative_to(DEPLOYED).as_posix()
        if rel == "bgremove/config.py":
            continue
        module_name = rel.removesuffix(".py").replace("/", ".")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            key: ast.expr | None = None
            if isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute):
                func = node.func
                environ_get = func.attr == "get" and _is_os_environ(func.value)
                getenv = func.attr == "getenv" and isinstance(func.value, ast.Name) and func.value.id == "os"
                if environ_get or getenv:
                    key = node.args[0]
            elif isinstance(node, ast.Subscript) and _is_os_environ(node.value):
                key = node.slice
            if isinstance(key, ast.Constant):
                found.setdefault(str(key.value), rel)
            elif isinstance(key, ast.Name):
                value = getattr(importlib.import_module(module_name), key.id, f"<{key.id}>")
                found.setdefault(str(value), rel)
            elif key is not None:
                found.setdefault(f"<{ast.unparse(key)}>", rel)
    return found


def _is_os_environ(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def test_only_config_reads_the_environment() -> None:
    # The exceptions are the offline stack's hooks (Google's emulator convention), which
    # infra/checks imports from these modules and keeps out of every deployment.
    assert direct_env_reads() == {
        tasks.EMULATOR_HOST_VARIABLE: "bgremove/tasks.py",
        events.EMULATOR_HOST_VARIABLE: "bgremove/events.py",
    }
