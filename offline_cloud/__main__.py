"""`python -m offline_cloud` (`make stack`): run the offline stack in the foreground until Ctrl-C.

Options set bucket names, fault knobs and function settings; `--help` lists them."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from offline_cloud.stack import ROOT, Stack, StackError, StackOptions


def _options(argv: list[str] | None) -> StackOptions:
    defaults = StackOptions()
    parser = argparse.ArgumentParser(prog="python -m offline_cloud", description=__doc__)
    parser.add_argument("--upload-bucket", default=defaults.upload_bucket)
    parser.add_argument("--processed-bucket", default=defaults.processed_bucket)
    parser.add_argument("--state-bucket", default=defaults.state_bucket)
    parser.add_argument(
        "--api-prefix", default=defaults.api_prefix, help="prefix the pipeline calls, e.g. /replicate/v1"
    )
    parser.add_argument("--predictions-faults", default="{}", help='JSON, e.g. {"fail_rate": 0.1}')
    parser.add_argument("--relay-faults", default="{}", help='JSON, e.g. {"duplicate_rate": 0.1}')
    parser.add_argument("--relay-max-attempts", type=int, default=defaults.relay_max_attempts)
    parser.add_argument("--relay-max-age", type=float, default=defaults.relay_max_age_seconds, help="seconds")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="a pipeline setting for the functions"
    )
    args = parser.parse_args(argv)
    function_env = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--env takes NAME=VALUE, not {item!r}")
        function_env[name] = value
    # OFFLINE_STACK_DIR lets a second stack (a test's) run beside the one in .stack/.
    return StackOptions(
        directory=Path(os.environ.get("OFFLINE_STACK_DIR") or ROOT / ".stack"),
        upload_bucket=args.upload_bucket,
        processed_bucket=args.processed_bucket,
        state_bucket=args.state_bucket,
        api_prefix=args.api_prefix,
        predictions_faults=json.loads(args.predictions_faults),
        relay_faults=json.loads(args.relay_faults),
        relay_max_attempts=args.relay_max_attempts,
        relay_max_age_seconds=args.relay_max_age,
        function_env=function_env,
    )


def main(argv: list[str] | None = None) -> int:
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    stack = Stack(_options(argv))
    try:
        info = stack.start()
    except StackError as exc:
        print(f"offline stack failed to start: {exc}", file=sys.stderr)
        return 1
    shown = ("storage_emulator_host", "predictions_base_url", "webhook_url", "trigger_url", "reconcile_url")
    print(json.dumps({k: v for k, v in vars(info).items() if k in shown}, indent=2))
    print(f"offline stack running; details in {stack.options.directory / 'stack.json'}; Ctrl-C stops it", flush=True)
    try:
        stopping.wait()
    finally:
        print("stopping the offline stack", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
