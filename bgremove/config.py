"""Configuration, read once at cold start into one frozen dataclass.

Every setting is an environment variable; the README has a table of them all. A missing or invalid
value raises ConfigError naming the variable, so a bad deployment fails at start, not mid-request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from bgremove import variants
from bgremove.errors import ConfigError, VariantError

__all__ = ["Config", "ConfigError", "duration_seconds", "largest_webhook_body", "load_config"]

DEFAULT_MODEL_VERSION = "95fcc2a26d3899cd6c2691c900465aaeff466285a65c14638cc5f36f34befaf1"
DEFAULT_API_BASE_URL = "https://api.replicate.com/v1"
INPUT_MODES = ("auto", "signed_url", "data_url")
# Leaves at least half of Cloud Storage's 1,024-byte name limit for the path under the prefix.
MAX_OUTPUT_PREFIX_BYTES = 512
# The API documents 5 s as the shortest Cancel-After it takes.
MIN_CANCEL_AFTER_SECONDS = 5.0
# A webhook body is the whole prediction: besides the echoed input it carries the output URL, logs,
# timestamps, metrics and urls. 64 KiB is several times what the model's other fields come to.
WEBHOOK_BODY_OVERHEAD_BYTES = 64 * 1024
# The longest data URL prefix we send: "data:image/jpeg;base64,".
_DATA_URL_PREFIX_BYTES = len("data:image/jpeg;base64,")


def largest_webhook_body(data_url_bytes: int) -> int:
    """The largest webhook body the API can send back for an input of `data_url_bytes` sent as a
    data URL: the API echoes `input`, base64 grows by 4/3, plus the prediction's other fields."""
    if data_url_bytes <= 0:
        return WEBHOOK_BODY_OVERHEAD_BYTES
    return 4 * -(-data_url_bytes // 3) + _DATA_URL_PREFIX_BYTES + WEBHOOK_BODY_OVERHEAD_BYTES


@dataclass(frozen=True)
class Config:
    upload_bucket: str
    processed_bucket: str
    state_bucket: str
    api_base_url: str
    api_token: str
    model_version: str
    webhook_url: str
    webhook_secrets: tuple[str, ...]
    webhook_tolerance_seconds: int
    webhook_max_body_bytes: int
    max_input_pixels: int
    allowed_content_types: tuple[str, ...]
    max_upload_bytes: int
    include_prefixes: tuple[str, ...]
    exclude_prefixes: tuple[str, ...]
    output_prefix: str
    input_mode: str
    data_url_max_bytes: int
    signed_url_ttl_seconds: int
    signing_service_account: str
    cancel_after: str
    output_allowed_hosts: tuple[str, ...]
    output_max_bytes: int
    http_timeout_seconds: float
    storage_retry_seconds: float
    api_max_attempts: int
    api_backoff_seconds: float
    api_backoff_max_seconds: float
    claim_ttl_seconds: int
    max_event_age_seconds: int
    max_prediction_attempts: int
    reconcile_after_seconds: int
    first_check_seconds: int
    reconcile_batch_size: int
    log_level: str
    output_variants: tuple[variants.Variant, ...]
    submit_queue: str
    deadline_queue: str
    task_handler_url: str
    tasks_service_account: str
    queued_check_seconds: int
    cache_control: str
    delete_outputs: bool
    events_topic: str
    output_url_base: str
    notify_url: str
    notify_secret: str
    notify_queue: str


_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?[hms])+$")


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    """Build the Config from the environment (os.environ unless given)."""
    env = _Env(os.environ if environ is None else environ)
    input_mode = env.text("INPUT_MODE", "auto")
    if input_mode not in INPUT_MODES:
        raise ConfigError(f"INPUT_MODE must be one of {', '.join(INPUT_MODES)}, not {input_mode!r}")
    cancel_after = env.text("CANCEL_AFTER", "15m")
    if cancel_after and not _DURATION.match(cancel_after):
        raise ConfigError(f"CANCEL_AFTER must be a duration such as 30s, 5m or 1h30m, not {cancel_after!r}")
    if cancel_after and duration_seconds(cancel_after) < MIN_CANCEL_AFTER_SECONDS:
        raise ConfigError(f"CANCEL_AFTER must be at least 5s (the API's minimum), not {cancel_after!r}")
    secrets = env.names("WEBHOOK_SECRETS", "")
    for secret in secrets:
        if not secret.startswith("whsec_"):
            raise ConfigError("WEBHOOK_SECRETS entries must start with whsec_")
    log_level = env.text("LOG_LEVEL", "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {log_level!r}")
    cfg = Config(
        upload_bucket=env.required("UPLOAD_BUCKET"),
        processed_bucket=env.required("PROCESSED_BUCKET"),
        state_bucket=env.required("STATE_BUCKET"),
        api_base_url=env.url("PREDICTIONS_BASE_URL", DEFAULT_API_BASE_URL).rstrip("/"),
        api_token=env.text("PREDICTIONS_API_TOKEN", ""),
        model_version=env.text("MODEL_VERSION", DEFAULT_MODEL_VERSION),
        webhook_url=env.url("WEBHOOK_URL", "") if env.text("WEBHOOK_URL", "") else "",
        webhook_secrets=secrets,
        webhook_tolerance_seconds=env.whole("WEBHOOK_TOLERANCE_SECONDS", 300, minimum=1),
        webhook_max_body_bytes=env.whole("WEBHOOK_MAX_BODY_BYTES", 1024 * 1024, minimum=1024),
        max_input_pixels=env.whole("MAX_INPUT_PIXELS", 25_000_000, minimum=1),
        allowed_content_types=env.names(
            "ALLOWED_CONTENT_TYPES", "image/jpeg,image/png,image/webp,image/heic,image/heif,image/avif"
        ),
        max_upload_bytes=env.whole("MAX_UPLOAD_BYTES", 25 * 1024 * 1024, minimum=1),
        include_prefixes=env.names("INCLUDE_PREFIXES", ""),
        exclude_prefixes=env.names("EXCLUDE_PREFIXES", ""),
        output_prefix=_output_prefix(env.text("OUTPUT_PREFIX", "")),
        input_mode=input_mode,
        data_url_max_bytes=env.whole("DATA_URL_MAX_BYTES", 256 * 1024, minimum=0),
        signed_url_ttl_seconds=env.whole("SIGNED_URL_TTL_SECONDS", 3600, minimum=60, maximum=604800),
        signing_service_account=env.text("SIGNING_SERVICE_ACCOUNT", ""),
        cancel_after=cancel_after,
        output_allowed_hosts=tuple(h.lower() for h in env.names("OUTPUT_ALLOWED_HOSTS", "replicate.delivery")),
        output_max_bytes=env.whole("OUTPUT_MAX_BYTES", 128 * 1024 * 1024, minimum=1),
        http_timeout_seconds=env.number("HTTP_TIMEOUT_SECONDS", 10.0, minimum=0.1),
        storage_retry_seconds=env.number("STORAGE_RETRY_SECONDS", 20.0, minimum=0.0),
        api_max_attempts=env.whole("API_MAX_ATTEMPTS", 1, minimum=1, maximum=20),
        api_backoff_seconds=env.number("API_BACKOFF_SECONDS", 0.5, minimum=0.0),
        api_backoff_max_seconds=env.number("API_BACKOFF_MAX_SECONDS", 8.0, minimum=0.0),
        claim_ttl_seconds=env.whole("CLAIM_TTL_SECONDS", 300, minimum=1),
        max_event_age_seconds=env.whole("MAX_EVENT_AGE_SECONDS", 6 * 3600, minimum=1),
        max_prediction_attempts=env.whole("MAX_PREDICTION_ATTEMPTS", 3, minimum=1, maximum=20),
        reconcile_after_seconds=env.whole("RECONCILE_AFTER_SECONDS", 900, minimum=0),
        first_check_seconds=env.whole("FIRST_CHECK_SECONDS", 180, minimum=1),
        reconcile_batch_size=env.whole("RECONCILE_BATCH_SIZE", 100, minimum=1, maximum=10000),
        log_level=log_level,
        output_variants=_output_variants(env.text("OUTPUT_VARIANTS", "")),
        submit_queue=_queue_path(env.text("SUBMIT_QUEUE", ""), "SUBMIT_QUEUE"),
        deadline_queue=_queue_path(env.text("DEADLINE_QUEUE", ""), "DEADLINE_QUEUE"),
        task_handler_url=env.url("TASK_HANDLER_URL", "") if env.text("TASK_HANDLER_URL", "") else "",
        tasks_service_account=env.text("TASKS_SERVICE_ACCOUNT", ""),
        queued_check_seconds=env.whole("QUEUED_CHECK_SECONDS", 3600, minimum=60),
        cache_control=env.text("CACHE_CONTROL", ""),
        delete_outputs=env.flag("DELETE_OUTPUTS", True),
        events_topic=_topic_path(env.text("EVENTS_TOPIC", "")),
        output_url_base=env.url("OUTPUT_URL_BASE", "https://storage.googleapis.com").rstrip("/"),
        notify_url=env.url("NOTIFY_URL", "") if env.text("NOTIFY_URL", "") else "",
        notify_secret=env.text("NOTIFY_SECRET", ""),
        notify_queue=_queue_path(env.text("NOTIFY_QUEUE", ""), "NOTIFY_QUEUE"),
    )
    _check_notify(cfg)
    _check_webhook_limit(cfg)
    return cfg


_QUEUE_PATH = re.compile(r"^projects/[a-z0-9.:-]+/locations/[a-z0-9-]+/queues/[A-Za-z0-9-]{1,100}$")


def _queue_path(value: str, name: str) -> str:
    if value and not _QUEUE_PATH.match(value):
        raise ConfigError(f"{name} must be projects/PROJECT/locations/LOCATION/queues/QUEUE, not {value!r}")
    return value


_TOPIC_PATH = re.compile(r"^projects/[a-z0-9.:-]+/topics/[A-Za-z][A-Za-z0-9._~%+-]{2,254}$")


def _topic_path(value: str) -> str:
    if value and not _TOPIC_PATH.match(value):
        raise ConfigError(f"EVENTS_TOPIC must be projects/PROJECT/topics/TOPIC, not {value!r}")
    return value


def _check_notify(cfg: Config) -> None:
    """NOTIFY_URL needs its own signing secret and the queue its deliveries retry through."""
    if not cfg.notify_url:
        return
    if not cfg.notify_secret.startswith("whsec_"):
        raise ConfigError("NOTIFY_SECRET (whsec_<base64>) is required with NOTIFY_URL")
    if not cfg.notify_queue:
        raise ConfigError("NOTIFY_QUEUE is required with NOTIFY_URL: deliveries are retried through it")


def _check_webhook_limit(cfg: Config) -> None:
    """The webhook must accept the largest body the API can send back, or every input near the
    data-URL cut-off would get 413 on every retry and wait for the reconciler."""
    if cfg.input_mode == "signed_url":
        return
    if cfg.input_mode == "data_url":
        largest, variable = cfg.max_upload_bytes, "MAX_UPLOAD_BYTES (INPUT_MODE=data_url)"
    else:
        largest, variable = cfg.data_url_max_bytes, "DATA_URL_MAX_BYTES"
    needed = largest_webhook_body(largest)
    if cfg.webhook_max_body_bytes < needed:
        raise ConfigError(
            f"WEBHOOK_MAX_BODY_BYTES ({cfg.webhook_max_body_bytes}) cannot hold the webhook body of an input "
            f"of {variable} ({largest}) sent as a data URL, which the API echoes: it needs at least {needed}; "
            f"raise WEBHOOK_MAX_BODY_BYTES or lower {variable.split()[0]}"
        )


def duration_seconds(value: str) -> float:
    """`1h30m` -> 5400.0; the same grammar the predictions API takes in Cancel-After."""
    return sum(
        float(n) * {"h": 3600, "m": 60, "s": 1}[unit] for n, unit in re.findall(r"(\d+(?:\.\d+)?)([hms])", value)
    )


def _output_prefix(value: str) -> str:
    value = value.strip("/")
    if len(value.encode()) > MAX_OUTPUT_PREFIX_BYTES:
        raise ConfigError(f"OUTPUT_PREFIX must be at most {MAX_OUTPUT_PREFIX_BYTES} bytes")
    return f"{value}/" if value else ""


_N = TypeVar("_N", int, float)


class _Env:
    """Typed readers over an environment mapping; each error names its variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str, default: str) -> str:
        return self._environ.get(name, default).strip()

    def required(self, name: str) -> str:
        value = self.text(name, "")
        if not value:
            raise ConfigError(f"{name} is required but not set")
        return value

    def names(self, name: str, default: str) -> tuple[str, ...]:
        raw = self.text(name, default)
        return tuple(item for item in re.split(r"[,\s]+", raw) if item)

    def whole(self, name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
        raw = self.text(name, str(default))
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
        return self._bounded(name, value, minimum, maximum)

    def number(self, name: str, default: float, minimum: float | None = None) -> float:
        raw = self.text(name, str(default))
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, not {raw!r}") from None
        return self._bounded(name, value, minimum, None)

    def flag(self, name: str, default: bool) -> bool:
        raw = self.text(name, "true" if default else "false").lower()
        if raw not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{name} must be true or false, not {raw!r}")
        return raw in ("true", "1", "yes")

    def url(self, name: str, default: str) -> str:
        value = self.text(name, default)
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{name} must be an http(s) URL, not {value!r}")
        return value

    @staticmethod
    def _bounded(name: str, value: _N, minimum: _N | None, maximum: _N | None) -> _N:
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, not {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name} must be at most {maximum}, not {value}")
        return value


def _output_variants(text: str) -> tuple[variants.Variant, ...]:
    """OUTPUT_VARIANTS, parsed at start: a bad value stops the function naming the variable."""
    try:
        return variants.parse_variants(text)
    except VariantError as exc:
        raise ConfigError(str(exc)) from None
