"""`make stack`'s launcher: it writes stack.json, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # no types-psutil in requirements-dev.txt
import pytest
import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from offline_cloud.__main__ import _options as launcher_options
from offline_cloud.stack import NOTIFY_QUEUE, ROOT, StackOptions, main_defines, predictions_command, relay_command
from tests.support import StackClient, wait_for

REQUIRED_KEYS = {
    "storage_emulator_host", "upload_bucket", "processed_bucket", "state_bucket", "predictions_base_url",
    "predictions_service_url", "predictions_root_url", "api_token", "webhook_url", "webhook_secret",
    "trigger_url", "trigger_attached", "reconcile_url",
}  # fmt: skip


def _launch(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """`python -m offline_cloud ARGS` (as `make stack STACK_ARGS=...`) with its stack in tmp_path. It
    runs with production's relay timings: these tests never need a retry."""
    env = {**os.environ, "OFFLINE_STACK_DIR": str(tmp_path)}
    return subprocess.Popen(
        [sys.executable, "-m", "offline_cloud", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _stack_json(launcher: subprocess.Popen[bytes], directory: Path) -> dict[str, Any]:
    """stack.json once the launcher has written it; the launcher's output if it exits first."""
    stack_json = directory / "stack.json"
    wait_for(lambda: stack_json.exists() or launcher.poll() is not None, 120, "stack.json")
    if not stack_json.exists():
        output = launcher.stdout.read().decode(errors="replace") if launcher.stdout else ""
        raise AssertionError(f"the launcher exited with {launcher.returncode}:\n{output[-3000:]}")
    info: dict[str, Any] = json.loads(stack_json.read_text())
    return info


def _stop(launcher: subprocess.Popen[bytes]) -> None:
    if launcher.poll() is None:
        launcher.kill()
        launcher.wait(10)


def test_launcher_writes_stack_json_and_sigint_stops_every_child(tmp_path: Path) -> None:
    launcher = _launch(tmp_path, "--upload-bucket", "my-uploads", "--state-bucket", "my-state")
    try:
        info = _stack_json(launcher, tmp_path)
        assert info.keys() >= REQUIRED_KEYS
        assert info["webhook_secret"].startswith("whsec_")
        assert info["trigger_attached"] is True
        # The official Replicate client appends /v1/... to its base_url itself.
        assert info["predictions_root_url"] == info["predictions_service_url"]
        assert info["predictions_base_url"] == info["predictions_root_url"] + "/v1"
        children = [psutil.Process(pid) for pid in info["pids"].values()]
        descendants = psutil.Process(launcher.pid).children(recursive=True)
        # Four services and four functions, and on_delete (for deleted and archived) once it exists.
        assert len(children) == 8 + main_defines("on_delete") and all(c.is_running() for c in children)
        # Everything answers on 127.0.0.1.
        buckets = requests.get(info["storage_emulator_host"] + "/storage/v1/b", timeout=5).json()["items"]
        assert {b["name"] for b in buckets} == {"my-uploads", "processed", "my-state"}
        assert (info["upload_bucket"], info["state_bucket"]) == ("my-uploads", "my-state")
        assert requests.get(info["trigger_url"], timeout=5).status_code in (200, 400, 405, 415, 500)

        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=30) == 0
    finally:
        _stop(launcher)
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


def test_no_trigger_starts_a_stack_whose_uploads_make_no_deliveries(tmp_path: Path) -> None:
    launcher = _launch(tmp_path, "--no-trigger")
    try:
        info = _stack_json(launcher, tmp_path)
        assert info["trigger_attached"] is False
        gcs = storage.Client(
            project="p",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": info["storage_emulator_host"]},
        )
        blob = gcs.bucket(info["upload_bucket"]).blob("predates/photo.jpg")
        blob.upload_from_string(b"\xff\xd8\xff\xe0", content_type="image/jpeg")

        def relay_log() -> list[dict[str, Any]]:
            log: list[dict[str, Any]] = requests.get(info["relay_admin_url"] + "/deliveries", timeout=5).json()["log"]
            return log

        detached = wait_for(lambda: [e for e in relay_log() if e["kind"] == "detached"], 30, "the detached event")
        assert detached[0]["subject"] == "objects/predates/photo.jpg"
        time.sleep(1)  # a delivery would start at once
        assert {e["kind"] for e in relay_log()} == {"detached"}  # nothing received, attempted or final
        assert list(gcs.list_blobs(info["state_bucket"])) == []  # and so no job

        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=30) == 0
    finally:
        _stop(launcher)


def test_the_stack_passes_every_predictions_service_flag_and_relay_timing(tmp_path: Path) -> None:
    defaults = StackOptions(directory=tmp_path)
    argv = predictions_command(defaults, 1, "https://localhost:1", "r8_t", "whsec_s", tmp_path / "c", tmp_path / "k")

    def value(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert value("--create-limit-per-minute") == "600.0" and value("--create-burst") == "600"
    assert value("--other-limit-per-minute") == "3000.0" and value("--other-burst") == "3000"
    assert "--fleet-latency=" in argv and "--echo-webhook" not in argv  # the real model; `webhook` left out

    relay = relay_command(defaults, 1, 2, "http://127.0.0.1:3/", tmp_path / "log")
    assert relay[relay.index("--min-backoff") + 1] == "10.0" and relay[relay.index("--max-backoff") + 1] == "600.0"
    assert relay[relay.index("--max-attempts") + 1] == "0" and relay[relay.index("--max-age") + 1] == "86400.0"
    assert "--detached" not in relay

    # The launcher's own flags reach StackOptions, and from there the commands.
    flags = [
        "--no-trigger", "--echo-webhook", "--create-limit-per-minute", "0", "--create-burst", "5",
        "--other-limit-per-minute", "60", "--other-burst", "7", "--fleet-latency", "lognormal:3,0.5",
    ]  # fmt: skip
    options = launcher_options(flags)
    assert (options.trigger, options.predictions_echo_webhook, options.fleet_latency) == (
        False,
        True,
        "lognormal:3,0.5",
    )
    argv = predictions_command(options, 1, "https://localhost:1", "r8_t", "whsec_s", tmp_path / "c", tmp_path / "k")
    assert value("--create-limit-per-minute") == "0.0" and value("--create-burst") == "5"
    assert value("--other-limit-per-minute") == "60.0" and value("--other-burst") == "7"
    assert "--fleet-latency=lognormal:3,0.5" in argv and "--echo-webhook" in argv
    assert "--detached" in relay_command(options, 1, 2, "http://127.0.0.1:3/", tmp_path / "log")
    relay = relay_command(options, 1, 2, "http://127.0.0.1:3/", tmp_path / "log", rest_port=4)
    assert relay[relay.index("--rest-port") + 1] == "4" and relay[relay.index("--grpc-port") + 1] == "1"
    # The pipeline's announcements: the events topic by default, NOTIFY_* and DELETE_OUTPUTS by flag.
    assert (options.events_topic, options.notify_url, options.delete_outputs) == ("bgremove-events", "", True)
    options = launcher_options(
        [
            "--notify-url",
            "http://127.0.0.1:9/hook",
            "--notify-secret",
            "whsec_x",
            "--keep-outputs",
            "--events-topic",
            "",
        ]
    )
    assert (options.notify_url, options.notify_secret, options.delete_outputs, options.events_topic) == (
        "http://127.0.0.1:9/hook",
        "whsec_x",
        False,
        "",
    )
    assert launcher_options(["--event-trigger", "deleted=", "--event-trigger", "archived="]).event_triggers == {}
    # With no flags, the launcher's options are StackOptions' production defaults.
    assert launcher_options([]) == StackOptions(directory=launcher_options([]).directory)


def test_the_stack_gives_the_functions_productions_queues_topic_and_links(stack: StackClient) -> None:
    from offline_cloud import cloud_tasks

    info, env = stack.info, stack.info.function_env
    assert env["NOTIFY_QUEUE"] == info.notify_queue == NOTIFY_QUEUE
    assert env["OUTPUT_URL_BASE"] == info.storage_emulator_host  # event links point at the emulator
    assert env["DELETE_OUTPUTS"] == "true"
    assert "NOTIFY_URL" not in env and "NOTIFY_SECRET" not in env and info.notify_url == ""
    client = cloud_tasks.client(info.tasks_endpoint)
    notify, submit = (client.get_queue(name=q, timeout=10) for q in (info.notify_queue, info.submit_queue))
    assert notify.retry_config == submit.retry_config  # the same retry shape as the other queues
