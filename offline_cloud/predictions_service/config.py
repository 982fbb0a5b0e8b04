"""Settings of one predictions server."""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .latency import parse_latency

DEFAULT_MODEL = "lucataco/remove-bg"
DEFAULT_VERSION = "95fcc2a26d3899cd6c2691c900465aaeff466285a65c14638cc5f36f34befaf1"
DEFAULT_PREFIXES = ("/v1", "/replicate/v1")
DEFAULT_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
# Replicate's documented limits: 600 prediction creates a minute and 3000 other calls, with bursts.
DEFAULT_CREATE_LIMIT_PER_MINUTE = 600.0
DEFAULT_CREATE_BURST = 600
DEFAULT_OTHER_LIMIT_PER_MINUTE = 3000.0
DEFAULT_OTHER_BURST = 3000


@dataclass
class Settings:
    api_token: str
    webhook_secret: str
    host: str = "127.0.0.1"
    port: int = 0
    # Empty means "derived from host, bound port and scheme" once the socket is bound.
    public_base_url: str = ""
    prefixes: tuple[str, ...] = DEFAULT_PREFIXES
    model: str = DEFAULT_MODEL
    model_version: str = DEFAULT_VERSION
    certfile: Path | None = None
    keyfile: Path | None = None
    # None means a fresh temporary directory, removed at shutdown.
    data_dir: Path | None = None
    output_ttl_seconds: float = 3600.0
    workers: int = 2
    # None means "share the cores between the workers" (see model.default_threads).
    model_threads: int | None = None
    webhook_retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    webhook_timeout_seconds: float = 10.0
    input_fetch_timeout_seconds: float = 30.0
    max_input_bytes: int = 20 * 1024 * 1024
    max_input_pixels: int = 40_000_000
    faults: dict[str, Any] = field(default_factory=dict)
    # Replicate's published prediction schema has no ``webhook`` field; echo it only when asked.
    echo_webhook: bool = False
    # Token buckets; a limit of 0 turns that bucket off.
    create_limit_per_minute: float = DEFAULT_CREATE_LIMIT_PER_MINUTE
    create_burst: int = DEFAULT_CREATE_BURST
    other_limit_per_minute: float = DEFAULT_OTHER_LIMIT_PER_MINUTE
    other_burst: int = DEFAULT_OTHER_BURST
    # A latency distribution (see fleet.py); empty means run the real model.
    fleet_latency: str = ""

    def __post_init__(self) -> None:
        if not self.webhook_secret.startswith("whsec_"):
            raise ValueError("webhook_secret must start with 'whsec_'")
        try:
            base64.b64decode(self.webhook_secret.removeprefix("whsec_"), validate=True)
        except binascii.Error as exc:
            raise ValueError("webhook_secret must be 'whsec_' followed by base64") from exc
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("certfile and keyfile go together")
        prefixes = []
        for prefix in self.prefixes:
            prefix = "/" + prefix.strip("/")
            if prefix == "/":
                raise ValueError("a prefix cannot be the root path")
            prefixes.append(prefix)
        self.prefixes = tuple(dict.fromkeys(prefixes))
        self.public_base_url = self.public_base_url.rstrip("/")
        for name in ("create", "other"):
            limit = getattr(self, f"{name}_limit_per_minute")
            if not math.isfinite(limit) or limit < 0:
                raise ValueError(f"{name}_limit_per_minute must be a finite number >= 0")
            if getattr(self, f"{name}_burst") < 1:
                raise ValueError(f"{name}_burst must be at least 1")
        self.fleet_latency = self.fleet_latency.strip()
        if self.fleet_latency:
            parse_latency(self.fleet_latency)  # raises ValueError with the grammar on a bad spec

    @property
    def tls(self) -> bool:
        return self.certfile is not None

    @property
    def fleet(self) -> bool:
        return bool(self.fleet_latency)
