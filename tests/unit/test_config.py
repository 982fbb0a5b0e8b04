"""Configuration: read once into a frozen dataclass; bad settings fail fast, naming the variable."""

from __future__ import annotations

import dataclasses

import pytest

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
