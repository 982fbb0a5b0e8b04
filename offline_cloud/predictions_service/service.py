"""Wiring: model (or fleet stand-in), store, rate limits, webhooks and the HTTP(S) server."""

from __future__ import annotations

import logging
import shutil
import ssl
import tempfile
import threading
import time
from pathlib import Path

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from bgremove import keys

from .app import create_app
from .config import Settings
from .faults import Faults
from .files import UploadedFiles
from .fleet import LABEL_VALUE, FleetExecutor
from .model import BackgroundRemover, default_threads
from .outputs import OutputFiles
from .ratelimit import CREATE, OTHER, RateLimits
from .redirect import RedirectHop
from .runner import Executor, ModelExecutor, Runner
from .stats import Stats
from .store import PredictionStore
from .webhooks import WebhookDispatcher

log = logging.getLogger(__name__)


class _RequestHandler(WSGIRequestHandler):
    # Idle connections (or a TLS handshake that never finishes) must not hold a thread forever.
    timeout = 60
    # Status line, headers and body leave in separate writes; with Nagle's algorithm on, each answer
    # would wait for the client's delayed ACK (about 40 ms) as no real API or CDN makes it wait.
    disable_nagle_algorithm = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Plain lines: werkzeug's own adds terminal colour codes even when stderr is a file.
        log.info('%s "%s" %s', self.address_string(), self.requestline, code)


def _wrap_tls(server: BaseWSGIServer, certfile: Path, keyfile: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(certfile), str(keyfile))
    # Without do_handshake_on_connect=False the handshake runs in the accept loop, where one
    # silent client (a port probe) would stall every other connection.
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    server.ssl_context = context  # werkzeug reads this for wsgi.url_scheme and SSL errors


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self.faults = Faults(settings.faults)
        self.mode = "fleet" if settings.fleet else "model"
        self.stats = Stats(self.mode)
        self.limits = RateLimits(
            settings.create_limit_per_minute,
            settings.create_burst,
            settings.other_limit_per_minute,
            settings.other_burst,
        )
        self._temp_dir: Path | None = None
        data_dir = settings.data_dir
        if data_dir is None:
            data_dir = self._temp_dir = Path(tempfile.mkdtemp(prefix="predictions-"))
        self.outputs = OutputFiles(Path(data_dir) / "outputs")
        self.files = UploadedFiles(Path(data_dir) / "files", settings.prefixes)

        self.webhooks = WebhookDispatcher(
            secret=settings.webhook_secret,
            retry_delays=settings.webhook_retry_delays,
            timeout=settings.webhook_timeout_seconds,
            faults=self.faults,
            stats=self.stats,
            stopping=self.stopping,
        )
        # In front of the webhook URLs of predictions ``webhook_301_rate`` picks; bound on first use.
        self.redirect_hop = RedirectHop()
        self.store = PredictionStore(public_base="", on_event=self.webhooks.emit, echo_webhook=settings.echo_webhook)
        self.model: BackgroundRemover | None = None
        executor: Executor
        if settings.fleet:
            executor = FleetExecutor(
                settings, self.store, self.outputs, self.faults, self.stats, self.stopping, self.files.resolve
            )
        else:
            began = time.perf_counter()
            threads = settings.model_threads or default_threads(settings.workers)
            self.model = BackgroundRemover(threads=threads)
            self.model.warm_up()
            log.info(
                "model %s loaded in %.2f s (%d intra-op thread(s), %d worker(s))",
                self.model.model_path,
                time.perf_counter() - began,
                threads,
                settings.workers,
            )
            executor = ModelExecutor(
                settings,
                self.store,
                self.model,
                self.outputs,
                self.faults,
                self.stats,
                self.stopping,
                self.files.resolve,
            )
        self.runner = Runner(settings, self.store, executor, self.outputs, self.stopping)
        self.app = create_app(self)
        self.server = make_server(
            settings.host,
            settings.port,
            self.app,
            threaded=True,
            request_handler=_RequestHandler,
        )
        if settings.certfile is not None and settings.keyfile is not None:
            _wrap_tls(self.server, settings.certfile, settings.keyfile)
        self.port = self.server.server_port
        scheme = "https" if settings.tls else "http"
        self.url = f"{scheme}://{settings.host}:{self.port}"
        self.store.public_base = self.files.public_base = settings.public_base_url or self.url
        self._thread: threading.Thread | None = None

    @property
    def public_base(self) -> str:
        return self.store.public_base

    def serve_forever(self) -> None:
        self.runner.start()
        if self.settings.fleet:
            # Loud on purpose: outputs in this mode are not background removals.
            log.warning(
                "FLEET STAND-IN MODE: predictions do not run the model; latency %s; outputs are labelled "
                "cut-outs (PNG text chunk %s=%s)",
                self.settings.fleet_latency,
                keys.OFFLINE_FLEET,
                LABEL_VALUE,
            )
        log.info(
            "serving on %s (public base %s); mode %s; rate limits: creates %s, other calls %s; webhook echo %s",
            self.url,
            self.public_base,
            self.mode,
            self.limits.describe[CREATE],
            self.limits.describe[OTHER],
            "on" if self.settings.echo_webhook else "off",
        )
        self.server.serve_forever()

    def start(self) -> None:
        """Serve from a background thread (for in-process use)."""
        self._thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop a service started with ``start``."""
        if self._thread is not None:
            self.server.shutdown()  # blocks until serve_forever returns, so only from another thread
            self._thread.join(timeout=5)
        self.close()

    def close(self) -> None:
        self.stopping.set()
        self.server.server_close()
        self.runner.shutdown()
        self.redirect_hop.close()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)


def build_service(settings: Settings) -> Service:
    """Load the model and bind the socket; the service answers once ``serve_forever`` runs."""
    return Service(settings)
