"""Parse HCL files with python-hcl2 and print them as JSON.

Runs inside .venv-hcl (python-hcl2 is kept out of the project's venv). Reads a JSON object
{name: hcl text} on stdin and prints {name: {"ok": true, "body": {...}} | {"ok": false,
"error": "..."}} on stdout. Strings lose their quotes; blocks carry "__is_block__": true.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import hcl2  # type: ignore[import-not-found]
from hcl2.utils import SerializationOptions  # type: ignore[import-not-found]

OPTIONS = SerializationOptions(strip_string_quotes=True, with_comments=False, explicit_blocks=True)


def parse(text: str) -> dict[str, Any]:
    try:
        return {"ok": True, "body": hcl2.loads(text, serialization_options=OPTIONS)}
    except Exception as exc:  # any parser failure is reported, not raised
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def main() -> int:
    sources: dict[str, str] = json.load(sys.stdin)
    json.dump({name: parse(text) for name, text in sources.items()}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
