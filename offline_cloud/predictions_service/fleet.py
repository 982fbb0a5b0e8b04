"""The fleet stand-in: many predictions at once with realistic latency, but no model.

This machine runs about three real predictions a second, far fewer than the API admits (600
creates a minute), so a scale run against the real model measures the model, not the client.
With ``--fleet-latency SPEC`` each prediction instead:

1. starts at once (``processing``), as on a fleet with idle capacity;
2. draws a latency from SPEC (plus the ``model_latency_seconds`` knob);
3. meanwhile, on a small thread pool, fetches and decodes its input as the real path does (so bad
   inputs fail the same way) and makes a cheap cut-out: at most 256 px on the long side, alpha
   from a soft ellipse, an RGBA PNG carrying the text chunk ``keys.OFFLINE_FLEET=stand-in``;
4. once the latency has passed since it started, ends exactly as the real path would: injected
   failure (``fail_rate``), input error, or success; a cancel or Cancel-After that came first wins.

SPEC grammar (seconds): ``fixed:S``, ``uniform:A,B`` or ``lognormal:MEDIAN,SIGMA``, e.g.
``lognormal:3,0.5`` (see latency.py). Waiting predictions are entries in one scheduler heap, not
threads, so 10,000 in flight cost little memory; outputs wait on disk, as the real ones do.

It is labelled everywhere: the prediction logs say "fleet stand-in (not the model)", the PNG has
the text chunk, ``/_admin/stats`` says ``"mode": "fleet"`` and the service logs it at start.
"""

from __future__ import annotations

import io
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from PIL import Image, ImageDraw, ImageFilter
from PIL.PngImagePlugin import PngInfo

from bgremove import keys

from .config import Settings
from .faults import Faults
from .inputs import InputError, LocalResolver
from .latency import Latency, parse_latency
from .outputs import OutputFiles
from .runner import Executor
from .scheduler import Scheduler
from .stats import Stats
from .store import PredictionStore

log = logging.getLogger(__name__)
LABEL_VALUE = "stand-in"
LOG_LABEL = "fleet stand-in (not the model)"
MAX_SIDE = 256


def stand_in_cutout(image: Image.Image) -> bytes:
    """A labelled RGBA PNG: the image shrunk to MAX_SIDE, opaque inside a soft centred ellipse."""
    rgb = image.convert("RGB")
    rgb.thumbnail((MAX_SIDE, MAX_SIDE))
    width, height = rgb.size
    mask = Image.new("L", rgb.size, 0)
    # Inset so the corners (and edges' midpoints, a little) are clearly background.
    inset_x, inset_y = width * 0.08, height * 0.08
    ImageDraw.Draw(mask).ellipse((inset_x, inset_y, width - 1 - inset_x, height - 1 - inset_y), fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(max(1.0, min(width, height) / 64)))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(mask)
    info = PngInfo()
    info.add_text(keys.OFFLINE_FLEET, LABEL_VALUE)
    out = io.BytesIO()
    # Level 1: a scale run cares about throughput, not a few kilobytes.
    rgba.save(out, format="PNG", pnginfo=info, compress_level=1)
    return out.getvalue()


class FleetExecutor(Executor):
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
        super().__init__(settings, store, outputs, faults, stats, stopping, local)
        self.latency: Latency = parse_latency(settings.fleet_latency)
        self._rng = random.Random()
        self._rng_lock = threading.Lock()
        # Decoding and encoding only (the waiting is the scheduler's); a few threads overlap an
        # input fetch with the CPU work of others.
        self._pool = ThreadPoolExecutor(max(4, 2 * (os.cpu_count() or 1)), thread_name_prefix="fleet")
        self._scheduler = Scheduler("fleet-scheduler")

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        self._scheduler.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def in_flight(self) -> int:
        return len(self._scheduler)

    def submit(self, prediction_id: str) -> None:
        self._pool.submit(self._begin, prediction_id)

    def _sample(self) -> float:
        with self._rng_lock:
            return self.latency.sample(self._rng) + self.faults.seconds("model_latency_seconds")

    def _begin(self, prediction_id: str) -> None:
        prediction = self.store.get(prediction_id)
        if prediction is None or self.stopping.is_set() or self.store.start(prediction_id) is None:
            return  # canceled or aborted before it started
        began = time.monotonic()
        latency = self._sample()
        self.store.log(prediction_id, f"{LOG_LABEL}: simulated latency {latency:.2f} s")
        error: str | None = None
        try:
            image = self.load(prediction.input["image"], draft=(MAX_SIDE, MAX_SIDE))
            if prediction.stop.is_set():
                return
            self.outputs.write(prediction_id, stand_in_cutout(image))
        except InputError as exc:
            error = str(exc)
        except Exception as exc:  # as the real path: a crash fails the prediction, never the thread
            log.exception("prediction %s crashed", prediction_id)
            error = f"internal error: {exc}"
        self._scheduler.call_at(began + latency, partial(self._finish, prediction_id, error))

    def _finish(self, prediction_id: str, error: str | None) -> None:
        if self.store.status_of(prediction_id) != "processing":  # canceled or aborted meanwhile
            self.outputs.delete(prediction_id)
            return
        # The same order as the real path: an injected failure wins over the input's own outcome.
        if self.faults.roll("fail_rate"):
            self.stats.fault("failed_predictions")
            self.outputs.delete(prediction_id)
            self.store.finish(prediction_id, "failed", error="injected failure")
        elif error is not None:
            self.outputs.delete(prediction_id)
            self.store.finish(prediction_id, "failed", error=error)
        else:
            self.store.log(prediction_id, f"{LOG_LABEL}: output ready")
            self.publish(prediction_id)
        log.info("prediction %s finished: %s (fleet stand-in)", prediction_id, self.store.status_of(prediction_id))
