"""The gRPC service `google.cloud.tasks.v2.CloudTasks`, the admin HTTP server, and the command line.

The RPCs are answered with grpc generic handlers and the proto-plus types' serialize/deserialize,
as eventarc_relay.py answers Pub/Sub Publish, so no generated servicer code is needed. RPCs not
listed here (IAM, RunTask, BatchCreateTasks, CMEK) answer UNIMPLEMENTED.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

import grpc
from google.cloud import tasks_v2
from google.cloud.tasks_v2.types import cloudtasks
from google.protobuf import empty_pb2

from offline_cloud.cloud_tasks import rules
from offline_cloud.cloud_tasks.dispatch import Dispatcher, DispatchLog
from offline_cloud.cloud_tasks.queues import ApiError, Emulator, Settings

log = logging.getLogger("offline_cloud.cloud_tasks")

SERVICE = "google.cloud.tasks.v2.CloudTasks"


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("context.abort returns only by raising")


def _unary(handle: Callable[[Any], Any], request_type: Any, serialize: Callable[[Any], bytes]) -> grpc.RpcMethodHandler:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return handle(request)
        except ApiError as exc:
            _abort(context, exc.code, exc.message)
        except rules.InvalidArgument as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    return grpc.unary_unary_rpc_method_handler(
        call, request_deserializer=request_type.deserialize, response_serializer=serialize
    )


def _empty(_: Any) -> empty_pb2.Empty:
    return empty_pb2.Empty()


def handlers(emulator: Emulator) -> grpc.GenericRpcHandler:
    e = emulator
    queue_out = tasks_v2.Queue.serialize
    task_out = tasks_v2.Task.serialize

    def empty_out(message: empty_pb2.Empty) -> bytes:
        return bytes(message.SerializeToString())

    def list_queues(r: cloudtasks.ListQueuesRequest) -> cloudtasks.ListQueuesResponse:
        queues, token = e.list_queues(r.parent, r.filter, r.page_size, r.page_token)
        return cloudtasks.ListQueuesResponse(queues=queues, next_page_token=token)

    def list_tasks(r: cloudtasks.ListTasksRequest) -> cloudtasks.ListTasksResponse:
        tasks, token = e.list_tasks(r.parent, r.response_view, r.page_size, r.page_token)
        return cloudtasks.ListTasksResponse(tasks=tasks, next_page_token=token)

    def update_queue(r: cloudtasks.UpdateQueueRequest) -> tasks_v2.Queue:
        paths = list(r.update_mask.paths) if "update_mask" in r else None
        return e.update_queue(r.queue, paths)

    def delete_queue(r: cloudtasks.DeleteQueueRequest) -> empty_pb2.Empty:
        e.delete_queue(r.name)
        return empty_pb2.Empty()

    def delete_task(r: cloudtasks.DeleteTaskRequest) -> empty_pb2.Empty:
        e.delete_task(r.name)
        return empty_pb2.Empty()

    methods = {
        "CreateQueue": _unary(lambda r: e.create_queue(r.parent, r.queue), cloudtasks.CreateQueueRequest, queue_out),
        "GetQueue": _unary(lambda r: e.get_queue(r.name), cloudtasks.GetQueueRequest, queue_out),
        "UpdateQueue": _unary(update_queue, cloudtasks.UpdateQueueRequest, queue_out),
        "ListQueues": _unary(list_queues, cloudtasks.ListQueuesRequest, cloudtasks.ListQueuesResponse.serialize),
        "DeleteQueue": _unary(delete_queue, cloudtasks.DeleteQueueRequest, empty_out),
        "PurgeQueue": _unary(lambda r: e.purge_queue(r.name), cloudtasks.PurgeQueueRequest, queue_out),
        "PauseQueue": _unary(lambda r: e.pause_queue(r.name), cloudtasks.PauseQueueRequest, queue_out),
        "ResumeQueue": _unary(lambda r: e.resume_queue(r.name), cloudtasks.ResumeQueueRequest, queue_out),
        "CreateTask": _unary(
            lambda r: e.create_task(r.parent, r.task, r.response_view), cloudtasks.CreateTaskRequest, task_out
        ),
        "GetTask": _unary(lambda r: e.get_task(r.name, r.response_view), cloudtasks.GetTaskRequest, task_out),
        "DeleteTask": _unary(delete_task, cloudtasks.DeleteTaskRequest, empty_out),
        "ListTasks": _unary(list_tasks, cloudtasks.ListTasksRequest, cloudtasks.ListTasksResponse.serialize),
    }
    return grpc.method_handlers_generic_handler(SERVICE, methods)


def serve_grpc(emulator: Emulator, port: int, host: str = "127.0.0.1", workers: int = 16) -> tuple[grpc.Server, int]:
    # A 1 MB task fits gRPC's default 4 MB receive cap; lift the send cap for large FULL list pages.
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", 8 * 1024 * 1024)]
    executor = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cloud-tasks-grpc")
    server = grpc.server(executor, options=options)
    server.add_generic_rpc_handlers((handlers(emulator),))
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"cannot listen on {host}:{port}")
    server.start()
    return server, bound


def serve_admin(
    emulator: Emulator, dispatch_log: DispatchLog, port: int, host: str = "127.0.0.1"
) -> ThreadingHTTPServer:
    """GET /health, GET|POST /faults, GET /stats, GET /log[?queue=NAME&limit=N]."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if url.path == "/health":
                return self._json(200, {"ok": True})
            if url.path == "/faults":
                return self._json(200, emulator.set_faults({}))
            if url.path == "/stats":
                return self._json(200, emulator.stats())
            if url.path == "/log":
                queue = query.get("queue", [None])[0]
                try:
                    limit = int(query.get("limit", ["0"])[0])
                except ValueError:
                    return self._json(400, {"error": "limit must be an integer"})
                return self._json(200, dispatch_log.recent(queue, limit or None))
            return self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            if urlsplit(self.path).path != "/faults":
                return self._json(404, {"error": "not found"})
            length = int(self.headers.get("Content-Length") or 0)
            try:
                payload = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(payload, dict):
                    raise ValueError("the body must be a JSON object")
                return self._json(200, emulator.set_faults(payload))
            except ValueError as exc:
                return self._json(400, {"error": str(exc)})

        def _json(self, status: int, payload: Any) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="cloud-tasks-admin", daemon=True).start()
    return server


def parse_faults(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--faults must be a JSON object")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m offline_cloud.cloud_tasks",
        description="An offline Cloud Tasks v2 (gRPC) emulator that dispatches HTTP tasks.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address for both servers (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="gRPC port of the Cloud Tasks API")
    parser.add_argument("--admin-port", type=int, required=True, help="HTTP port of /health /faults /stats /log")
    parser.add_argument("--pool", type=int, default=64, help="dispatch threads shared by all queues (default 64)")
    parser.add_argument(
        "--name-reservation-seconds",
        type=float,
        default=rules.DEFAULT_NAME_RESERVATION,
        help="how long a deleted or executed task's name stays taken (default 3600; production: up to ~24 h)",
    )
    parser.add_argument(
        "--min-dispatch-deadline",
        type=float,
        default=rules.MIN_DISPATCH_DEADLINE,
        help="TESTS ONLY: accept dispatch_deadline down to this many seconds (production minimum: 15)",
    )
    parser.add_argument("--faults", type=parse_faults, default={}, help='JSON, e.g. {"duplicate_rate": 0.1, "seed": 1}')
    parser.add_argument("--log-file", type=Path, help="append one JSON line per dispatch")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if args.pool < 1:
        parser.error("--pool must be at least 1")
    if args.min_dispatch_deadline <= 0:
        parser.error("--min-dispatch-deadline must be positive")

    # Everything goes to stderr: a launcher may read stdout, and the emulator has nothing to say there.
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(), format="%(asctime)s %(message)s")
    settings = Settings(
        pool_size=args.pool,
        name_reservation_seconds=args.name_reservation_seconds,
        min_dispatch_deadline=args.min_dispatch_deadline,
        log_file=args.log_file,
    )
    emulator = Emulator(settings)
    try:
        emulator.set_faults(args.faults)
    except ValueError as exc:
        parser.error(f"--faults: {exc}")
    dispatch_log = DispatchLog(settings.log_capacity, settings.log_file)
    dispatcher = Dispatcher(emulator, dispatch_log)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    dispatcher.start()
    grpc_server, grpc_port = serve_grpc(emulator, args.port, args.host)
    admin = serve_admin(emulator, dispatch_log, args.admin_port, args.host)
    log.info(
        "cloud tasks emulator: grpc %s:%d, admin http://%s:%d, pool %d",
        args.host,
        grpc_port,
        args.host,
        admin.server_address[1],
        args.pool,
    )
    stop.wait()
    log.info("cloud tasks emulator: stopping")
    admin.shutdown()
    grpc_server.stop(grace=1.0).wait()
    dispatcher.stop()
    dispatch_log.close()


if __name__ == "__main__":
    main()
