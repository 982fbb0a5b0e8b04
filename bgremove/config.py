"""Configuration, read once at cold start into one frozen dataclass.

Every setting is an environment variable, declared once in SETTINGS: its name, the Config field it
fills, how it is read, its default and bounds, what it must agree with and a line on what it does.
load_config reads that table; infra/checks imports it to check Terraform against it, and the
README's table lists the same settings. A missing or invalid value raises ConfigError naming the
variable, so a bad deployment fails at start, not mid-request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
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
    result_delivery: str
    poll_first_check_seconds: int
    prefer_wait_seconds: int
    daily_prediction_budget: int
    monthly_prediction_budget: int
    budget_utc_offset_hours: int


Kind = Literal[
    "text", "names", "hosts", "signing_secrets", "whole", "number", "url", "base_url", "choice", "duration",
    "prefix", "queue", "variants", "flag", "topic",
]  # fmt: skip
"""How a setting's text is read (the readers are in _READERS):

    text             as given (every value is stripped of surrounding whitespace first)
    names            a list separated by commas and/or whitespace
    hosts            names, lower-cased (host names are case-insensitive)
    signing_secrets  names, each a Standard Webhooks secret starting with whsec_
    whole, number    an int or a float within minimum..maximum
    url              empty (not configured), or an http(s) URL
    base_url         an http(s) URL, never empty, trailing slashes dropped
    choice           one of `choices` (upper-cased first when `upper`)
    duration         empty (none), or a Cancel-After duration (30s, 5m, 1h30m) of at least `minimum` s
    prefix           an object name prefix of at most `maximum` bytes, given a trailing slash
    queue            empty (not configured), or a Cloud Tasks queue path
    variants         the OUTPUT_VARIANTS JSON (bgremove.variants)
    flag             true or false (also 1/0, yes/no)
    topic            empty (not configured), or a Pub/Sub topic path
"""


@dataclass(frozen=True)
class Setting:
    """One environment variable: the Config field it fills and how it is read.

    Data rather than code, so that what must agree with the settings (Terraform's variables and
    their validations, the README's table) is checked against it by importing it.
    """

    env: str  # the environment variable
    field: str  # the Config field it fills
    kind: Kind
    default: str | int | float | None  # what an unset variable means; None: required (empty is an error)
    description: str  # one line; the README's table says more
    minimum: float | None = None  # whole, number, duration (seconds): the least value accepted
    maximum: float | None = None  # whole, number: the largest value; prefix: the most bytes
    choices: tuple[str, ...] = ()  # choice: the values accepted
    upper: bool = False  # choice: compared and kept upper-cased, so lower case works too
    secret: bool = False  # a credential: never logged, deployed from a secret store
    agrees_with: tuple[str, ...] = ()  # settings a check at start reads together with this one

    @property
    def required(self) -> bool:
        return self.default is None


_MIB = 1024 * 1024

# In Config's field order. Positional: env, field, kind, default, description.
# fmt: off
SETTINGS: tuple[Setting, ...] = (
    Setting("UPLOAD_BUCKET", "upload_bucket", "text", None, "bucket whose uploads are processed"),
    Setting("PROCESSED_BUCKET", "processed_bucket", "text", None, "bucket the cut-outs are written to"),
    Setting("STATE_BUCKET", "state_bucket", "text", None, "bucket of the job records"),
    Setting("PREDICTIONS_BASE_URL", "api_base_url", "base_url", DEFAULT_API_BASE_URL, "predictions API base URL"),
    Setting("PREDICTIONS_API_TOKEN", "api_token", "text", "", "predictions API token", secret=True),
    Setting("MODEL_VERSION", "model_version", "text", DEFAULT_MODEL_VERSION, "the model version to run"),
    Setting("WEBHOOK_URL", "webhook_url", "url", "", "public URL of the webhook function"),
    Setting("WEBHOOK_SECRETS", "webhook_secrets", "signing_secrets", "", "webhook signing secrets", secret=True),
    Setting("WEBHOOK_TOLERANCE_SECONDS", "webhook_tolerance_seconds", "whole", 300,
            "accepted clock difference of webhook timestamps", minimum=1),
    Setting("WEBHOOK_MAX_BODY_BYTES", "webhook_max_body_bytes", "whole", _MIB,
            "largest webhook body accepted; holds the echo of the largest data-URL input", minimum=1024,
            agrees_with=("INPUT_MODE", "DATA_URL_MAX_BYTES", "MAX_UPLOAD_BYTES")),
    Setting("MAX_INPUT_PIXELS", "max_input_pixels", "whole", 25_000_000,
            "uploads with more pixels fail before any prediction", minimum=1),
    Setting("ALLOWED_CONTENT_TYPES", "allowed_content_types", "names",
            "image/jpeg,image/png,image/webp,image/heic,image/heif,image/avif", "content types that are processed"),
    Setting("MAX_UPLOAD_BYTES", "max_upload_bytes", "whole", 25 * _MIB, "larger uploads fail (too_large)", minimum=1),
    Setting("INCLUDE_PREFIXES", "include_prefixes", "names", "", "only names with one of these prefixes (empty: all)"),
    Setting("EXCLUDE_PREFIXES", "exclude_prefixes", "names", "", "names with one of these prefixes are skipped"),
    Setting("OUTPUT_PREFIX", "output_prefix", "prefix", "", "prefix of the outputs in the processed bucket",
            maximum=MAX_OUTPUT_PREFIX_BYTES),
    Setting("INPUT_MODE", "input_mode", "choice", "auto", "how the image reaches the model", choices=INPUT_MODES),
    Setting("DATA_URL_MAX_BYTES", "data_url_max_bytes", "whole", 256 * 1024,
            "largest image sent inline as a data URL in auto mode", minimum=0),
    Setting("SIGNED_URL_TTL_SECONDS", "signed_url_ttl_seconds", "whole", 3600,
            "lifetime of the signed URL the model reads the image from", minimum=60, maximum=604800),
    Setting("SIGNING_SERVICE_ACCOUNT", "signing_service_account", "text", "",
            "account that signs URLs through IAM SignBlob (empty: the runtime account)"),
    Setting("CANCEL_AFTER", "cancel_after", "duration", "15m", "Cancel-After deadline of each prediction",
            minimum=MIN_CANCEL_AFTER_SECONDS),
    Setting("OUTPUT_ALLOWED_HOSTS", "output_allowed_hosts", "hosts", "replicate.delivery",
            "hosts (and their subdomains) outputs may be downloaded from"),
    Setting("OUTPUT_MAX_BYTES", "output_max_bytes", "whole", 128 * _MIB, "larger outputs are refused", minimum=1),
    Setting("HTTP_TIMEOUT_SECONDS", "http_timeout_seconds", "number", 10.0,
            "timeout of API calls, output downloads and storage requests", minimum=0.1),
    Setting("STORAGE_RETRY_SECONDS", "storage_retry_seconds", "number", 20.0,
            "how long the storage client retries a transient error", minimum=0.0),
    Setting("API_MAX_ATTEMPTS", "api_max_attempts", "whole", 1, "attempts per API call within one function call",
            minimum=1, maximum=20),
    Setting("API_BACKOFF_SECONDS", "api_backoff_seconds", "number", 0.5, "first backoff between API attempts",
            minimum=0.0),
    Setting("API_BACKOFF_MAX_SECONDS", "api_backoff_max_seconds", "number", 8.0, "backoff cap", minimum=0.0),
    Setting("CLAIM_TTL_SECONDS", "claim_ttl_seconds", "whole", 300, "lease of a claim", minimum=1),
    Setting("MAX_EVENT_AGE_SECONDS", "max_event_age_seconds", "whole", 6 * 3600,
            "older storage events fail (event_too_old) instead of retrying", minimum=1),
    Setting("MAX_PREDICTION_ATTEMPTS", "max_prediction_attempts", "whole", 3,
            "predictions created per upload at most", minimum=1, maximum=20),
    Setting("RECONCILE_AFTER_SECONDS", "reconcile_after_seconds", "whole", 900,
            "a submitted job whose prediction still runs is checked again after this long", minimum=0),
    Setting("FIRST_CHECK_SECONDS", "first_check_seconds", "whole", 180,
            "the first deadline check after a prediction is created", minimum=1),
    Setting("RECONCILE_BATCH_SIZE", "reconcile_batch_size", "whole", 100, "jobs examined per reconciler run",
            minimum=1, maximum=10000),
    Setting("LOG_LEVEL", "log_level", "choice", "INFO", "least severity logged",
            choices=("DEBUG", "INFO", "WARNING", "ERROR"), upper=True),
    Setting("OUTPUT_VARIANTS", "output_variants", "variants", "", "JSON array of the files written per upload"),
    Setting("SUBMIT_QUEUE", "submit_queue", "queue", "", "the submissions queue"),
    Setting("DEADLINE_QUEUE", "deadline_queue", "queue", "", "the deadlines queue (delayed checks)"),
    Setting("TASK_HANDLER_URL", "task_handler_url", "url", "", "URL of on_task, the target of every task"),
    Setting("TASKS_SERVICE_ACCOUNT", "tasks_service_account", "text", "",
            "account whose OIDC token the tasks carry (empty: none)"),
    Setting("QUEUED_CHECK_SECONDS", "queued_check_seconds", "whole", 3600,
            "a queued job is checked by the sweep after this long", minimum=60),
    Setting("CACHE_CONTROL", "cache_control", "text", "",
            "Cache-Control of every output (empty: the upload's own)"),
    Setting("DELETE_OUTPUTS", "delete_outputs", "flag", "true", "a deleted original takes its cut-outs with it"),
    Setting("EVENTS_TOPIC", "events_topic", "topic", "", "Pub/Sub topic of the completion events (empty: none)"),
    Setting("OUTPUT_URL_BASE", "output_url_base", "base_url", "https://storage.googleapis.com",
            "base of the output URLs the completion events give"),
    Setting("NOTIFY_URL", "notify_url", "url", "", "customer endpoint that also gets each completion event"),
    Setting("NOTIFY_SECRET", "notify_secret", "text", "", "whsec_ secret NOTIFY_URL deliveries are signed with",
            secret=True, agrees_with=("NOTIFY_URL",)),
    Setting("NOTIFY_QUEUE", "notify_queue", "queue", "", "the queue NOTIFY_URL deliveries are retried through",
            agrees_with=("NOTIFY_URL",)),
    Setting("RESULT_DELIVERY", "result_delivery", "choice", "auto",
            "where results come from: the webhook, polling, or both", choices=("auto", "webhook", "poll")),
    Setting("POLL_FIRST_CHECK_SECONDS", "poll_first_check_seconds", "whole", 5,
            "the earliest first poll after a prediction is created (polling learns the model's pace)", minimum=1),
    Setting("PREFER_WAIT_SECONDS", "prefer_wait_seconds", "whole", 0,
            "ask for a synchronous create answer, waiting up to this long (0: never)", minimum=0, maximum=60),
    Setting("DAILY_PREDICTION_BUDGET", "daily_prediction_budget", "whole", 0,
            "predictions created per budget day at most; then submissions are held (0: no limit)", minimum=0),
    Setting("MONTHLY_PREDICTION_BUDGET", "monthly_prediction_budget", "whole", 0,
            "predictions created per budget month at most; then submissions are held (0: no limit)", minimum=0),
    Setting("BUDGET_UTC_OFFSET_HOURS", "budget_utc_offset_hours", "whole", 0,
            "the budget's days and months begin at midnight in this UTC offset (0: UTC)", minimum=-12, maximum=14),
)
# fmt: on


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    """Build the Config from the environment (os.environ unless given): every setting of SETTINGS,
    then the checks of settings that must agree."""
    env = os.environ if environ is None else environ
    # Any: each reader returns its kind's type; tests/unit/test_config.py checks them against Config.
    values: dict[str, Any] = {setting.field: read_setting(setting, env.get(setting.env)) for setting in SETTINGS}
    cfg = Config(**values)
    _check_webhook_limit(cfg)
    _check_notify(cfg)
    return cfg


def read_setting(setting: Setting, raw: str | None) -> Any:
    """One setting's value from its environment text (None: unset). A variable that is set but
    empty is empty, not the default."""
    text = (str(setting.default) if raw is None and setting.default is not None else raw or "").strip()
    if setting.required and not text:
        raise ConfigError(f"{setting.env} is required but not set")
    return _READERS[setting.kind](setting, text)


def _invalid(setting: Setting, what: str, text: str) -> ConfigError:
    return ConfigError(f"{setting.env} must be {what}, not {text!r}")


def _text(setting: Setting, text: str) -> str:
    return text


def _names(setting: Setting, text: str) -> tuple[str, ...]:
    return tuple(item for item in re.split(r"[,\s]+", text) if item)


def _hosts(setting: Setting, text: str) -> tuple[str, ...]:
    return tuple(host.lower() for host in _names(setting, text))


def _signing_secrets(setting: Setting, text: str) -> tuple[str, ...]:
    secrets = _names(setting, text)
    if any(not secret.startswith("whsec_") for secret in secrets):
        raise ConfigError(f"{setting.env} entries must start with whsec_")  # not the value: it is a secret
    return secrets


def _whole(setting: Setting, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _invalid(setting, "a whole number", text) from None
    return _bounded(setting, value)


def _number(setting: Setting, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _invalid(setting, "a number", text) from None
    return _bounded(setting, value)


_N = TypeVar("_N", int, float)


def _bounded(setting: Setting, value: _N) -> _N:
    if setting.minimum is not None and value < setting.minimum:
        raise ConfigError(f"{setting.env} must be at least {setting.minimum}, not {value}")
    if setting.maximum is not None and value > setting.maximum:
        raise ConfigError(f"{setting.env} must be at most {setting.maximum}, not {value}")
    return value


def _url(setting: Setting, text: str) -> str:
    """Empty means not configured: the functions that need it say so when they first use it."""
    if not text:
        return ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _invalid(setting, "an http(s) URL", text)
    return text


def _base_url(setting: Setting, text: str) -> str:
    if not text:
        raise _invalid(setting, "an http(s) URL", text)
    return _url(setting, text).rstrip("/")


def _choice(setting: Setting, text: str) -> str:
    value = text.upper() if setting.upper else text
    if value not in setting.choices:
        raise _invalid(setting, f"one of {', '.join(setting.choices)}", value)
    return value


_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?[hms])+$")


def _duration(setting: Setting, text: str) -> str:
    if not text:
        return ""
    if not _DURATION.match(text):
        raise _invalid(setting, "a duration such as 30s, 5m or 1h30m", text)
    # Durations are the API's Cancel-After grammar, so their minimum is the API's.
    if setting.minimum is not None and duration_seconds(text) < setting.minimum:
        raise _invalid(setting, f"at least {setting.minimum:g}s (the API's minimum)", text)
    return text


def _prefix(setting: Setting, text: str) -> str:
    value = text.strip("/")
    if setting.maximum is not None and len(value.encode()) > setting.maximum:
        raise ConfigError(f"{setting.env} must be at most {setting.maximum:g} bytes")
    return f"{value}/" if value else ""


_QUEUE_PATH = re.compile(r"^projects/[a-z0-9.:-]+/locations/[a-z0-9-]+/queues/[A-Za-z0-9-]{1,100}$")


def _queue(setting: Setting, text: str) -> str:
    if text and not _QUEUE_PATH.match(text):
        raise _invalid(setting, "projects/PROJECT/locations/LOCATION/queues/QUEUE", text)
    return text


def _variants(setting: Setting, text: str) -> tuple[variants.Variant, ...]:
    """Parsed at start, so a bad value stops the function naming the variable."""
    try:
        return variants.parse_variants(text)
    except VariantError as exc:
        raise ConfigError(str(exc)) from None


def _flag(setting: Setting, text: str) -> bool:
    value = text.lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise _invalid(setting, "true or false", text)
    return value in ("true", "1", "yes")


_TOPIC_PATH = re.compile(r"^projects/[a-z0-9.:-]+/topics/[A-Za-z][A-Za-z0-9._~%+-]{2,254}$")


def _topic(setting: Setting, text: str) -> str:
    if text and not _TOPIC_PATH.match(text):
        raise _invalid(setting, "projects/PROJECT/topics/TOPIC", text)
    return text


_READERS: dict[Kind, Callable[[Setting, str], Any]] = {
    "text": _text,
    "names": _names,
    "hosts": _hosts,
    "signing_secrets": _signing_secrets,
    "whole": _whole,
    "number": _number,
    "url": _url,
    "base_url": _base_url,
    "choice": _choice,
    "duration": _duration,
    "prefix": _prefix,
    "queue": _queue,
    "variants": _variants,
    "flag": _flag,
    "topic": _topic,
}


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
