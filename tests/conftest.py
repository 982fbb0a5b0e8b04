"""Fixtures: the offline stack, started by the same launcher as `make stack`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from offline_cloud.stack import Stack, StackOptions
from tests.support import StackClient

# Tests that need speed say so: production retries are slow by design (the relay, as Eventarc with
# RETRY_POLICY_RETRY, backs off 10-600 s for 24 h with no attempt cap; the predictions service
# retries a webhook for about a minute), and StackOptions defaults to production. These shorter
# schedules, and an attempt cap, make failure paths finish within a test's patience. Every stack the
# tests start through `start_stack` gets them unless the test passes `retries=` (e.g. `{}` for
# production timings).
FAST_RETRIES: dict[str, object] = {
    "webhook_retry_delays": "0.2,0.5,1,2",
    "relay_min_backoff": 0.2,
    "relay_max_backoff": 2.0,
    "relay_max_attempts": 6,
    # Cloud Tasks retries a failed dispatch after 10 s doubling to 600 s in production (Terraform).
    "tasks_min_backoff": 0.2,
    "tasks_max_backoff": 2.0,
}


def start_stack(directory: Path, retries: Mapping[str, object] = FAST_RETRIES, **options: object) -> Stack:
    """A started stack with `retries` (FAST_RETRIES unless told otherwise), then `options`, over
    StackOptions' production defaults."""
    stack = Stack(StackOptions(directory=directory, **{**retries, **options}))  # type: ignore[arg-type]
    stack.start()
    return stack


@contextlib.contextmanager
def serving(directory: Path, retries: Mapping[str, object] = FAST_RETRIES, **options: object) -> Iterator[StackClient]:
    """A started stack (as `start_stack`) for the length of the block: what a stack fixture yields."""
    running = start_stack(directory, retries, **options)
    try:
        assert running.info is not None
        yield StackClient(running.info)
    finally:
        running.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackClient]:
    """One offline stack for the session, with FAST_RETRIES; tests reset any fault they set."""
    with serving(tmp_path_factory.mktemp("stack")) as client:
        yield client


@pytest.fixture
def faults(stack: StackClient) -> Iterator[StackClient]:
    """The stack, with predictions-service faults cleared after the test."""
    yield stack
    stack.api("DELETE", "/_admin/faults").raise_for_status()
