"""Fixtures: the offline stack, started by the same launcher as `make stack`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from offline_cloud.stack import Stack, StackOptions
from tests.support import StackClient

# Fast retry schedules so failure paths finish within a test's patience.
TEST_OPTIONS = {
    "webhook_retry_delays": "0.2,0.5,1,2",
    "relay_min_backoff": 0.2,
    "relay_max_backoff": 2.0,
    "relay_max_attempts": 6,
}


def start_stack(directory: Path, **options: object) -> Stack:
    stack = Stack(StackOptions(directory=directory, **{**TEST_OPTIONS, **options}))  # type: ignore[arg-type]
    stack.start()
    return stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackClient]:
    """One offline stack for the session; tests reset any fault they set."""
    running = start_stack(tmp_path_factory.mktemp("stack"))
    try:
        assert running.info is not None
        yield StackClient(running.info)
    finally:
        running.stop()


@pytest.fixture
def faults(stack: StackClient) -> Iterator[StackClient]:
    """The stack, with predictions-service faults cleared after the test."""
    yield stack
    stack.api("DELETE", "/_admin/faults").raise_for_status()
