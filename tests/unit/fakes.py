"""In-memory stand-ins for the core's own seams (objects, predictions API, output downloads), for
the pure unit tier. They keep the semantics the core relies on — generations, create-only and
generation-conditional writes — and can be told to fail a method with any error, once or always.
The stack tests prove the same behaviour against the real emulator and service."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from bgremove import errors, naming, outputs
from bgremove.config import Config, load_config
from bgremove.deps import Deps, OutputSource
from bgremove.jobs import Decision, Job, JobStore
from bgremove.objects import Delivery, Readable
from bgremove.predictions import Prediction
from bgremove.tasks import Task

BASE_ENV = {
    "UPLOAD_BUCKET": "uploads",
    "PROCESSED_BUCKET": "processed",
    "STATE_BUCKET": "state",
    "PREDICTIONS_API_TOKEN": "r8_test",
    "WEBHOOK_URL": "https://hooks.example.com/webhook",
    "WEBHOOK_SECRETS": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "OUTPUT_ALLOWED_HOSTS": "replicate.delivery",
    "SUBMIT_QUEUE": "projects/p/locations/l/queues/submissions",
    "DEADLINE_QUEUE": "projects/p/locations/l/queues/deadlines",
    "TASK_HANDLER_URL": "https://tasks.example.com/on_task",
}


def config(**overrides: str) -> Config:
    return load_config({**BASE_ENV, **overrides})


@dataclass
class Stored:
    data: bytes
    generation: int
    content_type: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    delivery: Delivery | None = None


class Faulty:
    """`fail(method, exc, times)` makes the next `times` calls of `method` raise `exc`."""

    def __init__(self) -> None:
        self._faults: dict[str, list[BaseException]] = {}
        self.calls: list[str] = []

    def fail(self, method: str, exc: BaseException, times: int = 1) -> None:
        self._faults.setdefault(method, []).extend([exc] * times)

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        pending = self._faults.get(method)
        if pending:
            raise pending.pop(0)


class MemoryObjects(Faulty):
    """Buckets of live objects; every write bumps a global generation counter."""

    def __init__(self) -> None:
        super().__init__()
        self.buckets: dict[str, dict[str, Stored]] = {}
        self._generation = 1000
        self.copies: list[tuple[str, str, str, str]] = []
        self.unreadable: set[str] = set()  # object names whose reads fail (an outage of those)

    def put(
        self, bucket: str, name: str, data: bytes, content_type: str = "", metadata: dict[str, str] | None = None
    ) -> int:
        self._generation += 1
        self.buckets.setdefault(bucket, {})[name] = Stored(data, self._generation, content_type, dict(metadata or {}))
        return self._generation

    def get(self, bucket: str, name: str) -> Stored | None:
        return self.buckets.get(bucket, {}).get(name)

    def _at(self, bucket: str, name: str, generation: int | None) -> Stored:
        found = self.get(bucket, name)
        if found is None or (generation is not None and found.generation != generation):
            raise errors.NotFound(f"gs://{bucket}/{name}#{generation}")
        return found

    # --- the Objects seam ----------------------------------------------------------------------

    def read_head(self, bucket: str, name: str, generation: int, length: int) -> bytes:
        self._enter("read_head")
        return self._at(bucket, name, generation).data[:length]

    def read_bytes(self, bucket: str, name: str, generation: int) -> bytes:
        self._enter("read_bytes")
        return self._at(bucket, name, generation).data

    def copy(self, bucket: str, name: str, generation: int, to_bucket: str, to_name: str) -> None:
        self._enter("copy")
        found = self._at(bucket, name, generation)
        self.copies.append((bucket, name, to_bucket, to_name))
        self.put(to_bucket, to_name, found.data, found.content_type, found.metadata)

    def metadata(self, bucket: str, name: str) -> tuple[dict[str, str], int] | None:
        self._enter("metadata")
        found = self.get(bucket, name)
        return None if found is None else (dict(found.metadata), found.generation)

    def read_json(self, bucket: str, name: str) -> tuple[dict[str, Any], int] | None:
        self._enter("read_json")
        if name in self.unreadable:
            raise errors.StorageUnavailable(f"ServiceUnavailable reading {name}")
        found = self.get(bucket, name)
        return None if found is None else (json.loads(found.data), found.generation)

    def write_json(
        self,
        bucket: str,
        name: str,
        record: dict[str, Any],
        if_generation_match: int,
        metadata: dict[str, str] | None = None,
    ) -> int:
        self._enter("write_json")
        found = self.get(bucket, name)
        current = 0 if found is None else found.generation
        if current != if_generation_match:
            raise errors.PreconditionFailed(f"gs://{bucket}/{name}")
        return self.put(bucket, name, json.dumps(record).encode(), "application/json", metadata)

    def delete(self, bucket: str, name: str, if_generation_match: int | None = None) -> None:
        self._enter("delete")
        found = self.get(bucket, name)
        if found is None:
            return
        if if_generation_match is not None and found.generation != if_generation_match:
            raise errors.PreconditionFailed(f"gs://{bucket}/{name}")
        del self.buckets[bucket][name]

    def list_with_metadata(self, bucket: str, prefix: str) -> Iterator[tuple[str, dict[str, str]]]:
        self._enter("list_with_metadata")
        for name, stored in sorted(self.buckets.get(bucket, {}).items()):
            if name.startswith(prefix):
                yield name, dict(stored.metadata)

    def create_object(
        self,
        bucket: str,
        name: str,
        stream: Readable,
        size: int | None,
        content_type: str,
        metadata: dict[str, str],
        if_generation_match: int = 0,
        delivery: Delivery | None = None,
    ) -> int:
        self._enter("create_object")
        found = self.get(bucket, name)
        if (found.generation if found is not None else 0) != if_generation_match:
            raise errors.PreconditionFailed(f"gs://{bucket}/{name}")
        data = stream.read()
        generation = self.put(bucket, name, data, content_type, metadata)
        self.buckets[bucket][name].delivery = delivery
        return generation

    def signed_url(self, bucket: str, name: str, generation: int | None, ttl_seconds: int, signer_email: str) -> str:
        self._enter("signed_url")
        return f"https://storage.example.com/{bucket}/{name}?generation={generation}&X-Goog-Signature=sig"


class FakePredictions(Faulty):
    """Records what it was asked; `create` answers a new `starting` prediction."""

    def __init__(self) -> None:
        super().__init__()
        self.created: list[dict[str, str]] = []
        self.predictions: dict[str, Prediction] = {}
        self.canceled: list[str] = []
        self.answers: list[Prediction] = []  # what the next creates answer (a synchronous result …)

    def create(
        self, version: str, image: str, webhook: str, cancel_after: str = "", wait_seconds: int = 0
    ) -> Prediction:
        self._enter("create")
        pid = f"pred{len(self.created) + 1}"
        self.created.append(
            {
                "version": version,
                "image": image,
                "webhook": webhook,
                "cancel_after": cancel_after,
                "wait": str(wait_seconds),
            }
        )
        prediction = self.answers.pop(0) if self.answers else Prediction(id=pid, status="starting", version=version)
        self.predictions[prediction.id] = prediction
        return prediction

    def get(self, prediction_id: str) -> Prediction | None:
        self._enter("get")
        return self.predictions.get(prediction_id)

    def cancel(self, prediction_id: str) -> Prediction:
        self._enter("cancel")
        self.canceled.append(prediction_id)
        current = self.predictions[prediction_id]
        canceled = Prediction(id=current.id, status="canceled", version=current.version)
        self.predictions[prediction_id] = canceled
        return canceled


@dataclass
class FakeOutput:
    data: bytes
    content_type: str = "image/png"
    size: int | None = None
    _stream: io.BytesIO = field(default_factory=io.BytesIO)

    def __post_init__(self) -> None:
        self._stream = io.BytesIO(self.data)
        self.size = len(self.data) if self.size is None else self.size

    def read(self, n: int = -1) -> bytes:
        return self._stream.read(n)

    def tell(self) -> int:
        return self._stream.tell()

    def close(self) -> None:
        self._stream.close()


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


class FakeOutputs(Faulty):
    """Output downloads by URL: a URL maps to bytes, or `fail("open", exc)` makes it raise."""

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, bytes] = {}
        self.opened: list[str] = []

    def open(self, url: str) -> OutputSource:
        self._enter("open")
        self.opened.append(url)
        outputs.check_url(url, ("replicate.delivery",))  # the real URL checks, without the network
        return FakeOutput(self.files.get(url, PNG))


class FakePublisher(Faulty):
    """Pub/Sub's publish: records (topic, data, attributes); `fail("publish", exc)` to refuse."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[tuple[str, bytes, dict[str, str]]] = []

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        self._enter("publish")
        self.published.append((topic, data, dict(attributes)))
        return str(len(self.published))


class FakeQueue(Faulty):
    """Named tasks per queue; a name seen before answers False (ALREADY_EXISTS), as Cloud Tasks
    reserves it. `run` removes a task as a dispatch that succeeded would."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks: dict[str, dict[str, Task]] = {}
        self.seen: set[tuple[str, str]] = set()

    def enqueue(self, task: Task) -> bool:
        self._enter("enqueue")
        if (task.queue, task.name) in self.seen:
            return False
        self.seen.add((task.queue, task.name))
        self.tasks.setdefault(task.queue, {})[task.name] = task
        return True

    def exists(self, queue: str, name: str) -> bool:
        self._enter("exists")
        return name in self.tasks.get(queue, {})

    def pending(self, queue: str) -> list[Task]:
        return list(self.tasks.get(queue, {}).values())

    def drop(self, queue: str, name: str) -> None:
        self.tasks.get(queue, {}).pop(name, None)


@dataclass
class World:
    """One fake instance: the seams, and the Deps built over them."""

    objects: MemoryObjects = field(default_factory=MemoryObjects)
    api: FakePredictions = field(default_factory=FakePredictions)
    outputs: FakeOutputs = field(default_factory=FakeOutputs)
    queue: FakeQueue = field(default_factory=FakeQueue)
    keys: tuple[bytes, ...] = (b"test-key-0123456789",)
    announce: Callable[[Job], bool] | None = None  # the store's announcer (events.Announcer), if any

    @property
    def deps(self) -> Deps:
        return Deps(
            objects=self.objects,
            store=JobStore(self.objects, BASE_ENV["STATE_BUCKET"], self.announce),
            predictions=lambda: self.api,
            open_output=self.outputs.open,
            webhook_keys=lambda: self.keys,
            queue=lambda: self.queue,
        )

    def put(self, job: Job) -> int:
        """Arrange a test's starting state: create `job`'s record (listed open unless final)."""
        if not job.is_final:
            self.deps.store.ensure_open(job.job_id, job.created_at)
        return self.deps.store.save(job, 0)

    def write(self, job: Job) -> int:
        """Arrange a test's state change: `job` replaces its record through the store's
        compare-and-swap, as a transition would (so ending a job unlists it)."""
        return self.deps.store.update(job.job_id, lambda current: Decision(None, job)).generation


# --- images and call records for the input and output tests ---------------------------------------


def cutout_png(size: tuple[int, int] = (60, 40), box: tuple[int, int, int, int] = (15, 10, 45, 30)) -> bytes:
    """A model-like cut-out: an RGBA PNG, transparent but for an opaque orange rectangle at `box`."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(230, 120, 30, 255))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def race_next_save(world: World, job_id: str, move: Callable[[Job], Job], times: int = 1) -> None:
    """Conflict injection: the next `times` writes of the job's record each lose to a concurrent
    writer that first applies `move` to the record as it stands (a real change, not a spurious
    conflict), so the loser must re-read and decide again over the winner's record."""
    store = world.deps.store
    original = world.objects.write_json
    left = {"races": times}

    def racing(
        bucket: str,
        name: str,
        record: dict[str, Any],
        if_generation_match: int,
        metadata: dict[str, str] | None = None,
    ) -> int:
        if left["races"] > 0 and name == naming.job_record_name(job_id):
            left["races"] -= 1
            loaded = store.load(job_id)
            assert loaded is not None
            original(bucket, name, move(loaded[0]).to_json(), loaded[1], metadata)
        return original(bucket, name, record, if_generation_match, metadata)

    world.objects.write_json = racing  # type: ignore[method-assign]


def record_creates(objects: MemoryObjects) -> list[tuple[str, str]]:
    """Make `objects` record the (bucket, name) of every create_object call, whether it wins or not."""
    created: list[tuple[str, str]] = []
    original = objects.create_object

    def create_object(bucket: str, name: str, *args: Any, **kwargs: Any) -> int:
        created.append((bucket, name))
        return original(bucket, name, *args, **kwargs)

    objects.create_object = create_object  # type: ignore[method-assign]
    return created


def process(event: Any, cfg: Config, deps: Deps, now: float) -> Any:
    """An upload event, then its submission task as the queue would dispatch it (again, after a
    failed attempt left the job queued)."""
    from bgremove import admission, jobs, naming, submit

    admitted = admission.handle_upload(event, cfg, deps, now)
    job_id = naming.job_id(event.bucket, event.name, event.generation)
    loaded = deps.store.load(job_id)
    if loaded is not None and loaded[0].state == jobs.QUEUED:
        return submit.handle_submit_task(job_id, cfg, deps, now)
    return admitted
