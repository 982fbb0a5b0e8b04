"""What the core is given to work with: the seams to storage, the predictions API and output
downloads, bundled once per instance by `runtime.deps()` and passed to every handler.

The API client and the webhook keys are factories, called only when really needed, so an upload
that the filters skip never needs the API token and the reconciler never needs the signing keys.
Unit tests build a `Deps` over in-memory fakes of these seams.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from bgremove.jobs import JobStore
from bgremove.objects import Objects, Readable
from bgremove.predictions import Prediction
from bgremove.schedule import RunTimes
from bgremove.tasks import Queue


class PredictionsApi(Protocol):
    def create(
        self, version: str, image: str, webhook: str, cancel_after: str = "", wait_seconds: int = 0
    ) -> Prediction: ...

    def get(self, prediction_id: str) -> Prediction | None: ...

    def cancel(self, prediction_id: str) -> Prediction: ...


class OutputSource(Readable, Protocol):
    """An output being downloaded: a file-like reader the storage upload pulls from."""

    content_type: str
    size: int | None

    def close(self) -> None: ...


@dataclass(frozen=True)
class Deps:
    objects: Objects
    store: JobStore
    predictions: Callable[[], PredictionsApi]
    open_output: Callable[[str], OutputSource]
    webhook_keys: Callable[[], tuple[bytes, ...]]
    queue: Callable[[], Queue]
    # The run times of finished predictions this instance has seen: where polling starts.
    run_times: RunTimes = field(default_factory=RunTimes)
