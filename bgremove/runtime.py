"""Process-wide objects, built once per instance and reused by every request (cold start cost is
paid once): the configuration, the job store, the predictions client and an HTTP session."""

from __future__ import annotations

import functools

import requests

from bgremove import logs
from bgremove.config import Config, ConfigError, load_config
from bgremove.jobs import JobStore
from bgremove.predictions import PredictionsClient
from bgremove.signatures import decode_secret


@functools.cache
def config() -> Config:
    cfg = load_config()
    logs.set_level(cfg.log_level)
    return cfg


@functools.cache
def job_store() -> JobStore:
    return JobStore(config().state_bucket)


@functools.cache
def http_session() -> requests.Session:
    return requests.Session()


@functools.cache
def predictions_client() -> PredictionsClient:
    cfg = config()
    if not cfg.api_token:
        raise ConfigError("PREDICTIONS_API_TOKEN is required to create predictions but not set")
    if not cfg.webhook_url:
        raise ConfigError("WEBHOOK_URL is required to create predictions but not set")
    return PredictionsClient(
        cfg.api_base_url,
        cfg.api_token,
        timeout=cfg.http_timeout_seconds,
        max_attempts=cfg.api_max_attempts,
        backoff_seconds=cfg.api_backoff_seconds,
        backoff_max_seconds=cfg.api_backoff_max_seconds,
        session=requests.Session(),
    )


@functools.cache
def webhook_keys() -> tuple[bytes, ...]:
    secrets = config().webhook_secrets
    if not secrets:
        raise ConfigError("WEBHOOK_SECRETS is required to verify webhooks but not set")
    try:
        return tuple(decode_secret(secret) for secret in secrets)
    except ValueError:
        raise ConfigError("WEBHOOK_SECRETS holds a value that is not whsec_<base64>") from None
