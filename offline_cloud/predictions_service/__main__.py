"""Command line: ``python -m offline_cloud.predictions_service --port P --api-token T ...``.

By default it behaves like Replicate: the prediction body has no ``webhook`` field
(``--echo-webhook`` puts it back), creates are limited to 600 a minute and other calls to 3000,
and every prediction runs the real u2netp model. ``--fleet-latency SPEC`` swaps the model for
the fleet stand-in (see fleet.py) for scale runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from .config import (
    DEFAULT_CREATE_BURST,
    DEFAULT_CREATE_LIMIT_PER_MINUTE,
    DEFAULT_OTHER_BURST,
    DEFAULT_OTHER_LIMIT_PER_MINUTE,
    DEFAULT_PREFIXES,
    DEFAULT_RETRY_DELAYS,
    DEFAULT_VERSION,
    Settings,
)
from .latency import GRAMMAR, parse_latency
from .service import build_service


def _delays(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


def _latency(text: str) -> str:
    if not text.strip():
        return ""  # empty: the real model (a launcher may pass --fleet-latency= explicitly)
    try:
        parse_latency(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m offline_cloud.predictions_service",
        description="A local Replicate-compatible predictions API running a real background-removal model.",
    )
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
    parser.add_argument(
        "--echo-webhook",
        action="store_true",
        help="put webhook and webhook_events_filter in prediction bodies (Replicate's published schema has neither)",
    )
    limits = parser.add_argument_group(
        "rate limits", "token buckets, as Replicate's; 6 a minute with a burst of 1 plays an account low on credit"
    )
    limits.add_argument(
        "--create-limit-per-minute",
        type=float,
        default=DEFAULT_CREATE_LIMIT_PER_MINUTE,
        help="prediction creates a minute (default %(default)g; 0 = unlimited)",
    )
    limits.add_argument(
        "--create-burst", type=int, default=DEFAULT_CREATE_BURST, help="bucket size for creates (default %(default)s)"
    )
    limits.add_argument(
        "--other-limit-per-minute",
        type=float,
        default=DEFAULT_OTHER_LIMIT_PER_MINUTE,
        help="all other API calls a minute (default %(default)g; 0 = unlimited)",
    )
    limits.add_argument(
        "--other-burst", type=int, default=DEFAULT_OTHER_BURST, help="bucket size for other calls (default %(default)s)"
    )
    parser.add_argument(
        "--fleet-latency",
        type=_latency,
        default="",
        metavar="SPEC",
        help=(
            "fleet stand-in for scale runs: no model, each prediction waits a latency drawn from SPEC "
            f"and returns a labelled cheap cut-out; SPEC is {GRAMMAR} (default: run the real model)"
        ),
    )
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
        echo_webhook=args.echo_webhook,
        create_limit_per_minute=args.create_limit_per_minute,
        create_burst=args.create_burst,
        other_limit_per_minute=args.other_limit_per_minute,
        other_burst=args.other_burst,
        fleet_latency=args.fleet_latency,
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
