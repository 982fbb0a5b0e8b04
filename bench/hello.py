"""The cold-start yardstick: a hello-world HTTP function, started exactly as the pipeline's are
(`functions-framework --target hello --source bench/hello.py`)."""

from __future__ import annotations

import functions_framework


@functions_framework.http
def hello(request):  # type: ignore[no-untyped-def]
    return "hello\n"
