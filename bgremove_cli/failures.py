"""Errors as operators read them: one line that says what failed and what to do, never a traceback.

Commands raise `CliError` for what they detect themselves; everything else the Google libraries,
the network or the file system raise is turned into a `CliError` by `explain`, with the step that
was running (`step("listing gs://uploads/")`), so the message names the bucket, queue or file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

# Exit statuses: 0 done, 1 an error, 2 a bad argument (click's convention), 130 interrupted (Ctrl-C).
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An error with a message fit for the operator; `status` is the exit status."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


class Interrupted(Exception):
    """Ctrl-C outside the places that stop cleanly by themselves."""


@contextlib.contextmanager
def step(what: str, hint: str = "") -> Iterator[None]:
    """Translate any library error raised while doing `what` into one CliError line; `hint` is
    added to permission errors (the role the step needs)."""
    try:
        yield
    except CliError:
        raise
    except Exception as exc:
        raise explain(exc, what, hint) from exc


def explain(exc: BaseException, what: str = "", hint: str = "") -> CliError:
    """One line for an exception raised while doing `what`."""
    from google.api_core import exceptions as gexc

    prefix = f"{what}: " if what else ""
    cause = _root(exc)
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return CliError(f"{prefix}no such file: {exc.filename or exc}")
    if isinstance(exc, PermissionError):
        return CliError(f"{prefix}permission denied on {exc.filename or exc}")
    if isinstance(exc, gexc.NotFound):
        return CliError(f"{prefix}not found ({_first_line(exc.message)})")
    if isinstance(exc, gexc.Forbidden | gexc.PermissionDenied | gexc.Unauthorized | gexc.Unauthenticated):
        extra = f"; {hint}" if hint else ""
        return CliError(f"{prefix}permission denied ({_first_line(exc.message)}){extra}")
    if isinstance(exc, gexc.InvalidArgument | gexc.BadRequest | gexc.FailedPrecondition):
        return CliError(f"{prefix}refused by the service ({_first_line(exc.message)})")
    if _is_unreachable(exc) or _is_unreachable(cause):
        return CliError(f"{prefix}cannot reach the service ({_first_line(str(cause) or type(cause).__name__)})")
    try:
        from google.auth import exceptions as gauth

        if isinstance(exc, gauth.DefaultCredentialsError):
            return CliError(
                f"{prefix}no Google credentials: run `gcloud auth application-default login` "
                "or set GOOGLE_APPLICATION_CREDENTIALS (or use --stack for the offline stack)"
            )
    except ImportError:  # pragma: no cover - google-auth comes with the storage client
        pass
    from bgremove.errors import ConfigError

    if isinstance(exc, ConfigError):
        return CliError(f"{prefix}{exc}")
    return CliError(
        f"{prefix}unexpected {type(exc).__name__}: {_first_line(str(exc))} (BGREMOVE_DEBUG=1 shows the traceback)"
    )


def _is_unreachable(exc: BaseException) -> bool:
    import requests
    from google.api_core import exceptions as gexc

    from bgremove import errors

    return isinstance(
        exc,
        ConnectionError
        | TimeoutError
        | requests.ConnectionError
        | requests.Timeout
        | gexc.ServiceUnavailable
        | gexc.DeadlineExceeded
        | gexc.RetryError
        | errors.RetryLater,
    )


def _root(exc: BaseException) -> BaseException:
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc


def _first_line(text: str) -> str:
    text = (text or "").strip()
    line = text.splitlines()[0] if text else ""
    return line[:300]
