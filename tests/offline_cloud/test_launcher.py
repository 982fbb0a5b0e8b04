"""`make stack`'s launcher: it writes stack.json, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests

from offline_cloud.stack import ROOT
from tests.support import wait_for

REQUIRED_KEYS = {
    "storage_emulator_host", "upload_bucket", "processed_bucket", "state_bucket", "predictions_base_url",
    "api_token", "webhook_url", "webhook_secret", "trigger_url", "reconcile_url",
}  # fmt: skip


def test_launcher_writes_stack_json_and_sigint_stops_every_child(tmp_path: Path) -> None:
    env = {**os.environ, "OFFLINE_STACK_DIR": str(tmp_path)}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "offline_cloud", "--upload-bucket", "my-uploads", "--state-bucket", "my-state"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        stack_json = tmp_path / "stack.json"
        wait_for(stack_json.exists, 120, "stack.json")
        info = json.loads(stack_json.read_text())
        assert info.keys() >= REQUIRED_KEYS
        assert info["webhook_secret"].startswith("whsec_")
        children = [psutil.Process(pid) for pid in info["pids"].values()]
        descendants = psutil.Process(launcher.pid).children(recursive=True)
        assert len(children) == 6 and all(c.is_running() for c in children)
        # Everything answers on 127.0.0.1.
        buckets = requests.get(info["storage_emulator_host"] + "/storage/v1/b", timeout=5).json()["items"]
        assert {b["name"] for b in buckets} == {"my-uploads", "processed", "my-state"}
        assert (info["upload_bucket"], info["state_bucket"]) == ("my-uploads", "my-state")
        assert requests.get(info["trigger_url"], timeout=5).status_code in (200, 400, 405, 415, 500)

        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=30) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
    gone, alive = psutil.wait_procs(descendants, timeout=10)
    assert alive == [], f"left behind: {[p.pid for p in alive]}"


def test_a_taken_port_fails_the_start_with_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from offline_cloud import stack as stack_module

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([taken.getsockname()[1]])  # the storage emulator's port is the first one drawn
        real = stack_module.free_port
        monkeypatch.setattr(stack_module, "free_port", lambda: next(ports, None) or real())
        launcher = stack_module.Stack(stack_module.StackOptions(directory=tmp_path))

        with pytest.raises(stack_module.StackError, match="storage-emulator") as caught:
            launcher.start()

    assert "address already in use" in str(caught.value)
    assert launcher.processes == {}  # what had started was stopped
