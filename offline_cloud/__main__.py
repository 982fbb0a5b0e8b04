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
    """StackOptions from the command line; the defaults are StackOptions' own (production's)."""
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
    # Relay timings default to Eventarc's (10-600 s backoff, no attempt cap, 24 h); shorten them here
    # for fast failure paths in local experiments.
    parser.add_argument(
        "--relay-min-backoff", type=float, default=defaults.relay_min_backoff, help="seconds (default: %(default)s)"
    )
    parser.add_argument(
        "--relay-max-backoff", type=float, default=defaults.relay_max_backoff, help="seconds (default: %(default)s)"
    )
    parser.add_argument(
        "--relay-max-attempts", type=int, default=defaults.relay_max_attempts, help="0: unlimited (default)"
    )
    parser.add_argument(
        "--relay-max-age", type=float, default=defaults.relay_max_age_seconds, help="seconds (default: 24 h)"
    )
    parser.add_argument(
        "--no-trigger",
        action="store_true",
        help="start without the storage trigger: uploads make no jobs, as in a bucket that predates the deployment",
    )
    # The predictions service's flags, with the service's defaults (StackOptions holds them).
    parser.add_argument(
        "--echo-webhook", action="store_true", help="put the `webhook` field in prediction bodies (default: left out)"
    )
    parser.add_argument(
        "--create-limit-per-minute",
        type=float,
        default=defaults.create_limit_per_minute,
        help="prediction creations per minute; 0 disables (default: %(default)s)",
    )
    parser.add_argument("--create-burst", type=int, default=defaults.create_burst, help="(default: %(default)s)")
    parser.add_argument(
        "--other-limit-per-minute",
        type=float,
        default=defaults.other_limit_per_minute,
        help="other API requests per minute (default: %(default)s)",
    )
    parser.add_argument("--other-burst", type=int, default=defaults.other_burst, help="(default: %(default)s)")
    parser.add_argument(
        "--fleet-latency",
        default=defaults.fleet_latency,
        metavar="SPEC",
        help="simulated prediction latency, e.g. lognormal:3,0.5 (default: the real model)",
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="a pipeline setting for the functions"
    )
    parser.add_argument(
        "--event-trigger",
        action="append",
        default=[],
        metavar="TYPE=TARGET",
        help="a storage trigger: events of TYPE (e.g. deleted) to a main.py function or a URL; TYPE= removes one",
    )
    parser.add_argument(
        "--pubsub-topic", action="append", default=[], metavar="TOPIC", help="a Pub/Sub topic to create at start"
    )
    parser.add_argument(
        "--events-topic",
        default=defaults.events_topic,
        metavar="TOPIC",
        help="the topic job ends are announced to (EVENTS_TOPIC), created at start; '' for none (default: %(default)s)",
    )
    parser.add_argument(
        "--notify-url", default=defaults.notify_url, help="NOTIFY_URL: a customer endpoint (default: unset)"
    )
    parser.add_argument(
        "--notify-secret",
        default=defaults.notify_secret,
        help="NOTIFY_SECRET (whsec_...; made when only the URL is given)",
    )
    parser.add_argument(
        "--keep-outputs",
        action="store_true",
        help="DELETE_OUTPUTS=false: a deleted upload's cut-outs stay (default: they are deleted)",
    )
    args = parser.parse_args(argv)

    def pairs(flag: str, items: list[str]) -> dict[str, str]:
        result = {}
        for item in items:
            name, sep, value = item.partition("=")
            if not sep:
                parser.error(f"{flag} takes NAME=VALUE, not {item!r}")
            result[name] = value
        return result

    function_env = pairs("--env", args.env)
    # Production's triggers, changed by those given; TYPE= (no target) removes that type's.
    given = {**defaults.event_triggers, **pairs("--event-trigger", args.event_trigger)}
    event_triggers = {type_: target for type_, target in given.items() if target}
    # OFFLINE_STACK_DIR lets a second stack (a test's) run beside the one in .stack/.
    return StackOptions(
        directory=Path(os.environ.get("OFFLINE_STACK_DIR") or ROOT / ".stack"),
        upload_bucket=args.upload_bucket,
        processed_bucket=args.processed_bucket,
        state_bucket=args.state_bucket,
        api_prefix=args.api_prefix,
        predictions_faults=json.loads(args.predictions_faults),
        relay_faults=json.loads(args.relay_faults),
        relay_min_backoff=args.relay_min_backoff,
        relay_max_backoff=args.relay_max_backoff,
        relay_max_attempts=args.relay_max_attempts,
        relay_max_age_seconds=args.relay_max_age,
        trigger=not args.no_trigger,
        predictions_echo_webhook=args.echo_webhook,
        create_limit_per_minute=args.create_limit_per_minute,
        create_burst=args.create_burst,
        other_limit_per_minute=args.other_limit_per_minute,
        other_burst=args.other_burst,
        fleet_latency=args.fleet_latency,
        function_env=function_env,
        event_triggers=event_triggers,
        pubsub_topics=args.pubsub_topic,
        events_topic=args.events_topic,
        notify_url=args.notify_url,
        notify_secret=args.notify_secret,
        delete_outputs=not args.keep_outputs,
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
    shown = (
        "storage_emulator_host",
        "predictions_base_url",
        "webhook_url",
        "trigger_url",
        "trigger_attached",
        "reconcile_url",
        "pubsub_emulator_host",
        "pubsub_rest_host",
        "events_topic",
        "event_triggers",
        "notify_url",
    )
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
