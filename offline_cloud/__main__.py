"""`python -m offline_cloud`: run the offline stack in the foreground until Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

from offline_cloud.stack import ROOT, Stack, StackError, StackOptions


def main() -> int:
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    # OFFLINE_STACK_DIR lets a second stack (a test's) run beside the one in .stack/.
    directory = Path(os.environ.get("OFFLINE_STACK_DIR") or ROOT / ".stack")
    stack = Stack(StackOptions(directory=directory))
    try:
        info = stack.start()
    except StackError as exc:
        print(f"offline stack failed to start: {exc}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                k: v
                for k, v in vars(info).items()
                if k in ("storage_emulator_host", "predictions_base_url", "webhook_url", "trigger_url")
            },
            indent=2,
        )
    )
    print(f"offline stack running; details in {stack.options.directory / 'stack.json'}; Ctrl-C stops it", flush=True)
    try:
        stopping.wait()
    finally:
        print("stopping the offline stack", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
