"""Command line: ``python -m offline_cloud.predictions_service --port P --api-token T ...``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from .config import DEFAULT_PREFIXES, DEFAULT_RETRY_DELAYS, DEFAULT_VERSION, Settings
from .service import build_service


def _delays(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m offline_cloud.predictions_service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--public-base-url", default="", help="default: scheme://host:port")
    parser.add_argument(
        "--prefix",
        action="append",
        dest="prefixes",
        help=f"API path prefix, repeatable (default: {' '.join(DEFAULT_PREFIXES)})",
    )
    parser.add_argument("--api-token", required=True)
    parser.add_argument("--webhook-secret", required=True, help="whsec_<base64>")
    parser.add_argument("--model-version", default=DEFAULT_VERSION)
    parser.add_argument("--certfile", type=Path)
    parser.add_argument("--keyfile", type=Path)
    parser.add_argument("--data-dir", type=Path, help="default: a temporary directory")
    parser.add_argument("--output-ttl-seconds", type=float, default=3600.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model-threads", type=int, help="default: cores // workers")
    parser.add_argument(
        "--webhook-retry-delays",
        type=_delays,
        default=DEFAULT_RETRY_DELAYS,
        help="comma-separated seconds between terminal webhook attempts",
    )
    parser.add_argument("--faults", type=json.loads, default={}, help="JSON object of knobs")
    args = parser.parse_args(argv)
    return Settings(
        api_token=args.api_token,
        webhook_secret=args.webhook_secret,
        host=args.host,
        port=args.port,
        public_base_url=args.public_base_url,
        prefixes=tuple(args.prefixes or DEFAULT_PREFIXES),
        model_version=args.model_version,
        certfile=args.certfile,
        keyfile=args.keyfile,
        data_dir=args.data_dir,
        output_ttl_seconds=args.output_ttl_seconds,
        workers=args.workers,
        model_threads=args.model_threads,
        webhook_retry_delays=args.webhook_retry_delays,
        faults=args.faults,
    )


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    service = build_service(parse_args(argv))
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        service.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        service.close()


if __name__ == "__main__":
    main()
