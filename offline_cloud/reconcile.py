"""`make reconcile`: run one reconciler pass against the stack that `make stack` is running, as
Cloud Scheduler would call the deployed `reconcile` function."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import requests

from offline_cloud.stack import ROOT


def main() -> int:
    stack_json = Path(os.environ.get("OFFLINE_STACK_DIR") or ROOT / ".stack") / "stack.json"
    if not stack_json.exists():
        print(f"no running stack: {stack_json} is missing (start one with `make stack`)", file=sys.stderr)
        return 1
    url = json.loads(stack_json.read_text())["reconcile_url"]
    try:
        answer = requests.post(url, timeout=300)
    except requests.ConnectionError:
        print(f"the stack in {stack_json.parent} is not running (no answer at {url})", file=sys.stderr)
        return 1
    print(json.dumps(answer.json(), indent=2))
    return 0 if answer.ok else 1


if __name__ == "__main__":
    sys.exit(main())
