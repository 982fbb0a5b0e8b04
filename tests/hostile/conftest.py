"""Fixtures for the hostile-input tests: a second stack with tight limits, pools of jobs whose real
webhook was dropped, and hostile HTTPS output hosts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import serving
from tests.hostile.support import STACKS, HostileHost, JobPool
from tests.support import StackClient

# The second stack: outputs under a prefix, two excluded prefixes, and small size caps. A 32x24
# photo's cut-out (about 2.5 KB) fits under OUTPUT_MAX_BYTES; a 160x120 one (about 43 KB) does not.
# Both stacks hold real jobs `submitted` with their webhooks dropped, to aim deliveries at them
# (JobPool); polling for results (RESULT_DELIVERY=auto, the default) would settle those jobs within
# seconds, so these stacks take results from webhooks alone: the first check comes after
# FIRST_CHECK_SECONDS (180 s), as in RESULT_DELIVERY=webhook deployments.
WEBHOOK_ONLY = {"RESULT_DELIVERY": "webhook"}
LIMITS_ENV = {
    **WEBHOOK_ONLY,
    "OUTPUT_PREFIX": "cutouts",
    "EXCLUDE_PREFIXES": "private/, tmp/",
    "MAX_UPLOAD_BYTES": "20000",
    "OUTPUT_MAX_BYTES": "32768",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The secrets test reads every log and answer, so it runs after everything else."""
    last = [item for item in items if item.nodeid.startswith("tests/hostile/test_secrets.py")]
    if last:
        items[:] = [item for item in items if item not in last] + last


@pytest.fixture(scope="session")
def main_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackClient]:
    with serving(tmp_path_factory.mktemp("hostile-stack"), function_env=WEBHOOK_ONLY) as client:
        STACKS.append(client.info)
        yield client


@pytest.fixture(scope="session")
def limits_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackClient]:
    with serving(tmp_path_factory.mktemp("limits-stack"), function_env=LIMITS_ENV) as client:
        STACKS.append(client.info)
        yield client


@pytest.fixture(scope="session")
def job_pool(main_stack: StackClient) -> JobPool:
    """Real jobs on the main stack, each left `submitted` with a succeeded prediction."""
    return JobPool(main_stack)


@pytest.fixture(scope="session")
def limits_job_pool(limits_stack: StackClient) -> JobPool:
    return JobPool(limits_stack, batch=2, fast_batch=2)


def _tls_dir(stack: StackClient) -> Path:
    return Path(stack.info.ca_bundle).parent


@pytest.fixture(scope="session")
def hostile_host(main_stack: StackClient) -> Iterator[HostileHost]:
    host = HostileHost(_tls_dir(main_stack))
    try:
        yield host
    finally:
        host.close()


@pytest.fixture(scope="session")
def limits_hostile_host(limits_stack: StackClient) -> Iterator[HostileHost]:
    host = HostileHost(_tls_dir(limits_stack))
    try:
        yield host
    finally:
        host.close()
