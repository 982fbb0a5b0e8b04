"""The operators' command against a running offline stack, as an operator runs it: the real
`bgremove` process (`python -m bgremove_cli`, the code the console script runs), its exit status,
stdout and stderr."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bgremove import jobs, naming
from offline_cloud.stack import ROOT
from tests.conftest import FAST_RETRIES, start_stack
from tests.support import StackClient, wait_for

# These tests are about admission (backfill, retry, pause, status), not cut-out quality: the
# predictions service runs as its labelled fleet stand-in (each prediction takes a fixed 0.5 s and
# returns a small labelled PNG, no model), and the API's create limit (6,000 a minute, burst 600,
# instead of 600 and 600) and the submission queue's rate (100 dispatches a second instead of 10) are
# raised, so that 1,000 backfilled objects finish in well under a minute on this 2-core machine
# instead of queueing for 100 s at the production pace. Retries are FAST_RETRIES (tests/conftest.py).
CLI_STACK_OPTIONS: dict[str, object] = {
    "trigger": False,  # a bucket that predates the deployment: uploads make objects, not jobs
    "fleet_latency": "fixed:0.5",
    "create_limit_per_minute": 6000.0,
    "create_burst": 600,
    "other_limit_per_minute": 30000.0,
    "other_burst": 3000,
    "submit_rate_per_second": 100.0,
}


@dataclass
class Cli:
    """A running stack and the command pointed at it."""

    stack: StackClient
    stack_json: Path

    def run(self, *args: str, timeout: float = 180, env: dict[str, str] | None = None) -> Result:
        argv = [sys.executable, "-m", "bgremove_cli", "--stack", str(self.stack_json), *args]
        return run(argv, timeout=timeout, env=env)

    def json(self, *args: str, timeout: float = 180) -> Any:
        result = self.run(*args, "--json", timeout=timeout)
        assert result.code == 0, result.stderr
        return json.loads(result.stdout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "bgremove_cli", "--stack", str(self.stack_json), *args]
        return subprocess.Popen(
            argv, cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    # --- the stack, read directly ---------------------------------------------------------------

    def upload_many(
        self, names: Iterable[str], data: bytes | None = None, content_type: str = "image/jpeg"
    ) -> dict[str, int]:
        payload = data if data is not None else small_jpeg()
        names = list(names)
        with ThreadPoolExecutor(16) as pool:
            generations = list(pool.map(lambda n: self.stack.upload(n, payload, content_type), names))
        return dict(zip(names, generations, strict=True))

    def job_ids(self, uploads: dict[str, int]) -> dict[str, str]:
        bucket = self.stack.info.upload_bucket
        return {name: naming.job_id(bucket, name, gen) for name, gen in uploads.items()}

    def listed_states(self) -> dict[str, str]:
        """job id -> state of every record, from the state bucket's listing (record metadata)."""
        found = {}
        for blob in self.stack.gcs.list_blobs(self.stack.info.state_bucket, prefix=naming.JOBS_PREFIX):
            found[blob.name[len(naming.JOBS_PREFIX) : -len(".json")]] = (blob.metadata or {}).get("state", "")
        return found

    def records(self, job_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The job records themselves (JSON), read in parallel; missing ones are left out."""
        bucket = self.stack.gcs.bucket(self.stack.info.state_bucket)

        def read(job_id: str) -> tuple[str, dict[str, Any] | None]:
            blob = bucket.get_blob(naming.job_record_name(job_id))
            return job_id, json.loads(blob.download_as_bytes()) if blob else None

        with ThreadPoolExecutor(16) as pool:
            return {k: v for k, v in pool.map(read, list(job_ids)) if v is not None}

    def wait_final(self, job_ids: Iterable[str], timeout: float = 150) -> dict[str, dict[str, Any]]:
        ids = set(job_ids)

        def all_final() -> bool:
            states = self.listed_states()
            return all(states.get(i) in jobs.FINAL_STATES for i in ids)

        wait_for(all_final, timeout, f"{len(ids)} jobs to end", interval=0.5)
        return self.records(ids)

    def outputs(self, prefix: str) -> dict[str, Any]:
        return {b.name: b for b in self.stack.gcs.list_blobs(self.stack.info.processed_bucket, prefix=prefix)}

    def assert_one_outcome_each(
        self, uploads: dict[str, int], records: dict[str, dict[str, Any]], prefix: str
    ) -> Counter[str]:
        """Every upload has exactly one job, in a final state; each completed job has exactly one
        output, written once (its generation is the one the job recorded) and carrying the job's
        id; a failed job has none; no output belongs to no job."""
        ids = self.job_ids(uploads)
        outputs = self.outputs(prefix)
        assert set(records) == set(ids.values())
        states: Counter[str] = Counter()
        expected_outputs = set()
        for name, job_id in ids.items():
            job = records[job_id]
            states[job["state"]] += 1
            assert job["state"] in ("completed", "failed"), (name, job["state"])
            target = naming.output_name(name)
            if job["state"] == "completed":
                blob = outputs.get(target)
                assert blob is not None, f"no output for {name}"
                assert (blob.metadata or {}).get("bgremove-job") == job_id
                assert int(blob.generation) == job["output_generation"]
                expected_outputs.add(target)
            else:
                assert target not in outputs, f"failed job {name} has an output"
        assert set(outputs) == expected_outputs, "an output belongs to no job"
        return states


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def one_line_error(self) -> str:
        """The command failed with exactly one line on stderr and no traceback."""
        assert self.code != 0, self.stdout
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        assert "Traceback" not in self.stderr, self.stderr
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith("bgremove: "), lines[0]
        return lines[0]


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("STORAGE_EMULATOR_HOST", "CLOUD_TASKS_EMULATOR_HOST")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.pop("BGREMOVE_DEBUG", None)
    env.update(extra or {})
    return env


def run(argv: list[str], timeout: float = 180, env: dict[str, str] | None = None) -> Result:
    done = subprocess.run(argv, cwd=ROOT, env=cli_env(env), capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in done.stderr, done.stderr
    return Result(done.returncode, done.stdout, done.stderr)


def small_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 40, 40)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    directory = tmp_path_factory.mktemp("cli-stack")
    # `retries` by name: otherwise mypy cannot tell that CLI_STACK_OPTIONS holds no `retries` key.
    running = start_stack(directory, retries=FAST_RETRIES, **CLI_STACK_OPTIONS)
    try:
        assert running.info is not None
        yield Cli(StackClient(running.info), directory / "stack.json")
    finally:
        running.stop()
