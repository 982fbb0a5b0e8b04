"""Process-wide objects, built once per instance and reused by every request (cold start cost is
paid once): the configuration, the storage seam, the job store, the predictions client, the
output downloader and the webhook keys, bundled into one `Deps` for the handlers."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bgremove import logs
from bgremove.config import Config, load_config
from bgremove.errors import ConfigError

if TYPE_CHECKING:
    import requests

    from bgremove.deps import Deps, OutputSource
    from bgremove.events import RestPublisher
    from bgremove.predictions import PredictionsClient
    from bgremove.storage import GcsObjects
    from bgremove.tasks import CloudTasksQueue

# main.py imports this module (and reads the configuration) at start; everything a seam needs is
# imported where the seam is built, at its first use, so a function's start imports only the
# configuration (requests, google-api-core, grpc and google-auth come with the storage client).


@functools.cache
def config() -> Config:
    cfg = load_config()
    logs.set_level(cfg.log_level)
    return cfg


@functools.cache
def deps() -> Deps:
    import requests

    from bgremove import events, outputs
    from bgremove.deps import Deps
    from bgremove.jobs import JobStore

    cfg = config()
    objects = objects_for(cfg)
    session = requests.Session()

    def open_output(url: str) -> OutputSource:
        return outputs.open_output(
            url, cfg.output_allowed_hosts, cfg.output_max_bytes, cfg.http_timeout_seconds, session
        )

    announcer = events.Announcer(cfg, publisher, task_queue)
    return Deps(
        objects=objects,
        store=JobStore(objects, cfg.state_bucket, announcer if announcer.active else None),
        predictions=predictions_client,
        open_output=open_output,
        webhook_keys=webhook_keys,
        queue=task_queue,
    )


def objects_for(cfg: Config) -> GcsObjects:
    import google.cloud.storage as gcs

    from bgremove.storage import GcsObjects

    return GcsObjects(gcs.Client(), cfg.http_timeout_seconds, cfg.storage_retry_seconds)


@functools.cache
def predictions_client() -> PredictionsClient:
    cfg = config()
    if not cfg.api_token:
        raise ConfigError("PREDICTIONS_API_TOKEN is required to create predictions but not set")
    if not cfg.webhook_url:
        raise ConfigError("WEBHOOK_URL is required to create predictions but not set")
    import requests

    return new_predictions_client(cfg, requests.Session())


def new_predictions_client(cfg: Config, session: requests.Session) -> PredictionsClient:
    """The API client as the configuration sets it, over `session` (the bench passes a counted one)."""
    from bgremove.predictions import PredictionsClient

    return PredictionsClient(
        cfg.api_base_url,
        cfg.api_token,
        timeout=cfg.http_timeout_seconds,
        max_attempts=cfg.api_max_attempts,
        backoff_seconds=cfg.api_backoff_seconds,
        backoff_max_seconds=cfg.api_backoff_max_seconds,
        session=session,
    )


@functools.cache
def task_queue() -> CloudTasksQueue:
    cfg = config()
    for name, value in (
        ("SUBMIT_QUEUE", cfg.submit_queue),
        ("DEADLINE_QUEUE", cfg.deadline_queue),
        ("TASK_HANDLER_URL", cfg.task_handler_url),
    ):
        if not value:
            raise ConfigError(f"{name} is required to enqueue tasks but not set")
    from bgremove.tasks import CloudTasksQueue

    return CloudTasksQueue(cfg.tasks_service_account, timeout_seconds=cfg.http_timeout_seconds)


@functools.cache
def publisher() -> RestPublisher:
    from bgremove import events

    return events.RestPublisher(config().http_timeout_seconds, events.emulator_host())


@functools.cache
def _notify_session() -> requests.Session:
    import requests

    return requests.Session()


def notify_post(url: str, body: bytes, headers: Mapping[str, str]) -> int:
    """One POST to NOTIFY_URL (no redirects: a signed delivery goes where it was configured)."""
    answer = _notify_session().post(
        url, data=body, headers=dict(headers), timeout=config().http_timeout_seconds, allow_redirects=False
    )
    return answer.status_code


@functools.cache
def notify_key() -> bytes:
    from bgremove.signatures import decode_secret

    try:
        return decode_secret(config().notify_secret)
    except ValueError:
        raise ConfigError("NOTIFY_SECRET is not whsec_<base64>") from None


@functools.cache
def webhook_keys() -> tuple[bytes, ...]:
    from bgremove.signatures import decode_secret

    secrets = config().webhook_secrets
    if not secrets:
        raise ConfigError("WEBHOOK_SECRETS is required to verify webhooks but not set")
    try:
        return tuple(decode_secret(secret) for secret in secrets)
    except ValueError:
        raise ConfigError("WEBHOOK_SECRETS holds a value that is not whsec_<base64>") from None
