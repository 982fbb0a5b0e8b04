"""Running predictions: cancel, Cancel-After deadlines and output expiry for every prediction, and
the executor that turns an input into an output (the real model on a bounded worker pool here;
the fleet stand-in in fleet.py)."""

from __future__ import annotations

import heapq
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from .config import Settings
from .faults import Faults
from .inputs import InputError, LocalResolver, load_image
from .model import BackgroundRemover
from .outputs import OutputFiles
from .stats import Stats
from .store import PredictionStore

log = logging.getLogger(__name__)
HOUSEKEEPING_INTERVAL = 0.1
EXPIRY_SWEEP_INTERVAL = 1.0


class Executor:
    """Runs created predictions to an outcome; the shared parts of both kinds."""

    def __init__(
        self,
        settings: Settings,
        store: PredictionStore,
        outputs: OutputFiles,
        faults: Faults,
        stats: Stats,
        stopping: threading.Event,
        local: LocalResolver | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.outputs = outputs
        self.faults = faults
        self.stats = stats
        self.stopping = stopping
        self.local = local

    def start(self) -> None:
        pass

    def submit(self, prediction_id: str) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        pass

    def load(self, image_url: str, draft: tuple[int, int] | None = None) -> Image.Image:
        return load_image(
            image_url,
            timeout=self.settings.input_fetch_timeout_seconds,
            max_bytes=self.settings.max_input_bytes,
            max_pixels=self.settings.max_input_pixels,
            local=self.local,
            draft=draft,
        )

    def output_url(self, prediction_id: str) -> str:
        return f"{self.store.public_base}/delivery/{prediction_id}/output.png"

    def publish(self, prediction_id: str) -> None:
        """Succeed with the output already written; drop it if a cancel came first."""
        if self.store.succeed(prediction_id, self.output_url(prediction_id)) is None:
            self.outputs.delete(prediction_id)  # canceled between the last check and now


class ModelExecutor(Executor):
    """u2netp on ``settings.workers`` threads; predictions beyond that wait in ``starting``."""

    def __init__(
        self,
        settings: Settings,
        store: PredictionStore,
        model: BackgroundRemover,
        outputs: OutputFiles,
        faults: Faults,
        stats: Stats,
        stopping: threading.Event,
        local: LocalResolver | None = None,
    ) -> None:
        super().__init__(settings, store, outputs, faults, stats, stopping, local)
        self.model = model
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="predict")

    def submit(self, prediction_id: str) -> None:
        self._pool.submit(self._run, prediction_id)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, prediction_id: str) -> None:
        prediction = self.store.get(prediction_id)
        if prediction is None or self.store.start(prediction_id) is None:
            return  # canceled or aborted while queued
        try:
            self._predict(prediction_id, prediction.input["image"], prediction.stop)
        except InputError as exc:
            self.store.finish(prediction_id, "failed", error=str(exc))
        except Exception as exc:  # a worker must never die silently
            log.exception("prediction %s crashed", prediction_id)
            self.store.finish(prediction_id, "failed", error=f"internal error: {exc}")
        status = self.store.status_of(prediction_id)
        if status != "processing":  # still processing only when the service is shutting down
            log.info("prediction %s finished: %s", prediction_id, status)

    def _sleep(self, stop: threading.Event, seconds: float) -> bool:
        """Sleep; True if the prediction was stopped or the service is shutting down."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if stop.wait(min(remaining, 0.1)) or self.stopping.is_set():
                return True
        return False

    def _predict(self, prediction_id: str, image_url: str, stop: threading.Event) -> None:
        latency = self.faults.seconds("model_latency_seconds")
        if latency > 0 and self._sleep(stop, latency):
            return
        if self.faults.roll("fail_rate"):
            self.stats.fault("failed_predictions")
            self.store.finish(prediction_id, "failed", error="injected failure")
            return
        image = self.load(image_url)
        if stop.is_set():
            return
        self.store.log(prediction_id, f"running u2netp on a {image.width}x{image.height} image")
        began = time.perf_counter()
        png = self.model.remove_background(image)
        elapsed = time.perf_counter() - began
        log.info("prediction %s: u2netp on %dx%d took %.2f s", prediction_id, image.width, image.height, elapsed)
        if stop.is_set():
            return  # canceled during inference: the result is discarded
        self.store.log(prediction_id, f"background removed in {elapsed:.2f} s")
        self.outputs.write(prediction_id, png)
        self.publish(prediction_id)


class Runner:
    """Cancel, deadlines and expiry, whichever executor runs the predictions."""

    def __init__(
        self,
        settings: Settings,
        store: PredictionStore,
        executor: Executor,
        outputs: OutputFiles,
        stopping: threading.Event,
    ) -> None:
        self.settings = settings
        self.store = store
        self.executor = executor
        self.outputs = outputs
        self.stopping = stopping
        self._deadlines: list[tuple[float, str]] = []
        self._deadlines_lock = threading.Lock()
        self._housekeeper = threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True)

    def start(self) -> None:
        self.executor.start()
        self._housekeeper.start()

    def shutdown(self) -> None:
        self.stopping.set()
        self.executor.shutdown()

    def submit(self, prediction_id: str, cancel_after: float | None) -> None:
        if cancel_after is not None:
            with self._deadlines_lock:
                heapq.heappush(self._deadlines, (time.monotonic() + cancel_after, prediction_id))
        self.executor.submit(prediction_id)

    def cancel(self, prediction_id: str) -> None:
        # Queued or running alike: the executor sees the terminal status and discards its work.
        if self.store.finish(prediction_id, "canceled"):
            log.info("prediction %s canceled", prediction_id)

    def expire(self, prediction_id: str | None = None) -> None:
        """Remove outputs older than the TTL (all, or one prediction's on access)."""
        expired = self.store.expire(time.time(), self.settings.output_ttl_seconds, prediction_id)
        for expired_id in expired:
            self.outputs.delete(expired_id)
            log.info("prediction %s data removed (output TTL)", expired_id)

    def _deadline_passed(self, prediction_id: str) -> None:
        if self.store.finish(prediction_id, "aborted", only_if=frozenset({"starting"})):
            log.info("prediction %s aborted: Cancel-After passed before it started", prediction_id)
        elif self.store.finish(prediction_id, "canceled", only_if=frozenset({"processing"})):
            log.info("prediction %s canceled: Cancel-After passed while running", prediction_id)

    def _housekeeping(self) -> None:
        next_sweep = 0.0
        while not self.stopping.wait(HOUSEKEEPING_INTERVAL):
            now = time.monotonic()
            due = []
            with self._deadlines_lock:
                while self._deadlines and self._deadlines[0][0] <= now:
                    due.append(heapq.heappop(self._deadlines)[1])
            for prediction_id in due:
                self._deadline_passed(prediction_id)
            if now >= next_sweep:
                next_sweep = now + EXPIRY_SWEEP_INTERVAL
                try:
                    self.expire()
                except OSError:
                    log.exception("output expiry sweep failed")
