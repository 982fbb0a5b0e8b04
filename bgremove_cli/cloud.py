"""The clients a command uses, built once from a Target: the pipeline's own storage seam and job
store (bgremove.storage, bgremove.jobs), its Cloud Tasks seam for enqueueing (bgremove.tasks), and a
CloudTasksClient for what only operators do (queue state, depth, pause, resume).

Everything the pipeline writes goes through the pipeline's code; this module adds only reads
(listings of job records and objects, the queue's state) and the queue's pause and resume.
"""

from __future__ import annotations

import datetime
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bgremove import naming, tasks
from bgremove.config import Config, load_config
from bgremove.deps import Deps
from bgremove.errors import ConfigError
from bgremove.jobs import Job, JobStore
from bgremove.storage import GcsObjects
from bgremove.tasks import EMULATOR_HOST_VARIABLE, CloudTasksQueue
from bgremove_cli.failures import CliError, step
from bgremove_cli.target import Target

# Record reads run in parallel over one connection pool of this size.
READ_THREADS = 8
# ListTasks is paged (1,000 a page); the depth shown is exact up to this many, "at least" above.
DEFAULT_DEPTH_LIMIT = 10_000

STORAGE_READ_HINT = "the account needs roles/storage.objectViewer on that bucket"
STATE_WRITE_HINT = "the account needs roles/storage.objectUser (or objectAdmin) on the state bucket"
ENQUEUE_HINT = (
    "the account needs roles/cloudtasks.enqueuer on the submissions queue and roles/iam.serviceAccountUser "
    "on TASKS_SERVICE_ACCOUNT"
)
QUEUE_VIEW_HINT = "the account needs roles/cloudtasks.viewer on the queue"
QUEUE_ADMIN_HINT = "the account needs roles/cloudtasks.queueAdmin on the queue"


# The listing-metadata key that would name a record's upload (jobs.Source.uri). The core does not
# write it yet (see README, Operators, `show`): `bgremove show` uses it where a record has it and
# reads the records that do not.
SOURCE_METADATA = "source"


@dataclass(frozen=True)
class JobEntry:
    """One job record as the state bucket's listing shows it (no read of the record itself): the
    state is the record's custom metadata, written with every transition (jobs.JobStore.save);
    `created` and `updated` are the record object's own times, i.e. the admission and the last
    transition."""

    job_id: str
    state: str
    generation: int
    created: float
    updated: float
    # The upload the record is about, `gs://bucket/name#generation`, when the record's listing
    # metadata carries it (SOURCE_METADATA; records written before it do not, then "").
    source: str = ""
    # Why a queued job waits besides its turn: "budget" while a spend budget holds it.
    hold: str = ""


@dataclass(frozen=True)
class QueueInfo:
    name: str
    state: str  # RUNNING, PAUSED, DISABLED
    depth: int  # tasks in the queue (waiting, scheduled or being retried)
    depth_capped: bool  # True: there are at least `depth`
    rate_per_second: float  # max_dispatches_per_second
    max_concurrent: int

    @property
    def paused(self) -> bool:
        return self.state == "PAUSED"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "paused": self.paused,
            "depth": self.depth,
            "depth_capped": self.depth_capped,
            "max_dispatches_per_second": self.rate_per_second,
            "max_concurrent_dispatches": self.max_concurrent,
        }


class Cloud:
    def __init__(self, target: Target) -> None:
        self.target = target
        try:
            self.cfg: Config = load_config(target.env)
        except ConfigError as exc:
            where = "" if target.offline else " (give --stack .stack/stack.json or --env NAME, or export the variable)"
            raise CliError(f"{exc}{where}") from None
        target.activate()
        self._lock = threading.Lock()
        self._storage: Any = None
        self._tasks: Any = None
        self._objects: GcsObjects | None = None
        self._queue: CloudTasksQueue | None = None

    # --- clients ------------------------------------------------------------------------------

    @property
    def storage(self) -> Any:
        with self._lock:
            if self._storage is None:
                import google.cloud.storage as gcs
                import requests.adapters

                with step("connecting to Cloud Storage"):
                    client = gcs.Client(project=self.target.project or None)
                    # One pool big enough for the parallel record reads (requests keeps 10 by default).
                    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=READ_THREADS * 2)
                    http = client._http
                    http.mount("https://", adapter)
                    http.mount("http://", adapter)
                self._storage = client
            return self._storage

    @property
    def objects(self) -> GcsObjects:
        if self._objects is None:
            self._objects = GcsObjects(
                self.storage, self.cfg.http_timeout_seconds, min(self.cfg.storage_retry_seconds, 10.0)
            )
        return self._objects

    @property
    def store(self) -> JobStore:
        return JobStore(self.objects, self.cfg.state_bucket)

    def queue(self) -> CloudTasksQueue:
        """The pipeline's own enqueueing seam, as on_upload builds it (bgremove.runtime.task_queue)."""
        for variable, value in (
            ("SUBMIT_QUEUE", self.cfg.submit_queue),
            ("TASK_HANDLER_URL", self.cfg.task_handler_url),
        ):
            if not value:
                raise CliError(f"{variable} is required to admit work but not set")
        if self._queue is None:
            self._queue = CloudTasksQueue(self.cfg.tasks_service_account, timeout_seconds=self.cfg.http_timeout_seconds)
        return self._queue

    def deps(self) -> Deps:
        """What `bgremove.admission.admit` needs: storage, the job store and the queue. Admission calls
        no predictions API and verifies no webhook, so those seams refuse if ever asked."""

        def never(*_: Any) -> Any:
            raise CliError("internal: admission asked for a seam it never uses")

        return Deps(
            objects=self.objects,
            store=self.store,
            predictions=never,
            open_output=never,
            webhook_keys=never,
            queue=self.queue,
        )

    @property
    def tasks(self) -> Any:
        """A CloudTasksClient; plaintext to CLOUD_TASKS_EMULATOR_HOST when set, as bgremove.tasks does."""
        with self._lock:
            if self._tasks is None:
                with step("connecting to Cloud Tasks"):
                    self._tasks = tasks.new_client(os.environ.get(EMULATOR_HOST_VARIABLE, ""))
            return self._tasks

    # --- checks -------------------------------------------------------------------------------

    def preflight(self) -> None:
        """Fail fast, in one line, when nothing answers (a stopped stack) or a bucket is wrong."""
        if self.target.offline:
            import requests

            try:
                requests.get(f"{self.target.storage_host}/storage/v1/b", timeout=3)
            except requests.RequestException:
                stack_file = self.target.extra.get("stack_file", "stack.json")
                raise CliError(
                    f"no stack running: nothing answers at {self.target.storage_host} (from {stack_file}); "
                    "start it with `make stack`"
                ) from None
        self.require_bucket(self.cfg.state_bucket, "STATE_BUCKET")

    def require_bucket(self, bucket: str, variable: str = "", prefix: str = "") -> None:
        """That the bucket exists and its objects can be listed (one listing of at most 1 object:
        storage.objects.list, which every command needs anyway, not storage.buckets.get)."""
        from google.api_core import exceptions as gexc

        named = f" ({variable})" if variable else ""
        try:
            with step(f"listing gs://{bucket}/{prefix}{named}", STORAGE_READ_HINT):
                blobs = self.storage.list_blobs(
                    bucket,
                    prefix=prefix or None,
                    max_results=1,
                    timeout=self.cfg.http_timeout_seconds,
                    retry=_short_retry(),
                )
                list(blobs)
        except CliError as exc:
            if isinstance(exc.__cause__, gexc.NotFound):
                raise CliError(f"bucket gs://{bucket}{named} does not exist") from None
            raise

    # --- reads --------------------------------------------------------------------------------

    def job_entries(self, stop: Callable[[], bool] = lambda: False) -> list[JobEntry]:
        """Every job record in the state bucket, from one listing of jobs/ (no record reads)."""
        entries = []
        bucket = self.cfg.state_bucket
        with step(f"listing gs://{bucket}/{naming.JOBS_PREFIX}", STORAGE_READ_HINT):
            blobs = self.storage.list_blobs(
                bucket,
                prefix=naming.JOBS_PREFIX,
                fields="items(name,generation,metadata,timeCreated,updated),nextPageToken",
                timeout=self.cfg.http_timeout_seconds,
            )
            for blob in blobs:
                name = blob.name
                if not name.endswith(".json"):
                    continue
                job_id = name[len(naming.JOBS_PREFIX) : -len(".json")]
                if not naming.is_job_id(job_id):
                    continue
                metadata = blob.metadata or {}
                entries.append(
                    JobEntry(
                        job_id=job_id,
                        state=metadata.get("state", ""),
                        generation=int(blob.generation or 0),
                        created=_seconds(blob.time_created),
                        updated=_seconds(blob.updated),
                        source=metadata.get(SOURCE_METADATA, ""),
                        hold=metadata.get("hold", ""),
                    )
                )
                if stop():
                    break
        return entries

    def load_jobs(self, job_ids: Iterable[str]) -> dict[str, tuple[Job, int]]:
        """The records of `job_ids`, read in parallel; missing ones are left out."""
        store = self.store
        ids = list(job_ids)
        found: dict[str, tuple[Job, int]] = {}
        if not ids:
            return found
        reading = step(f"reading job records in gs://{self.cfg.state_bucket}", STORAGE_READ_HINT)
        with reading, ThreadPoolExecutor(READ_THREADS) as pool:
            for job_id, loaded in zip(ids, pool.map(store.load, ids), strict=True):
                if loaded is not None:
                    found[job_id] = loaded
        return found

    def objects_under(self, bucket: str, prefix: str, stop: Callable[[], bool] = lambda: False) -> Iterator[Any]:
        """The live objects under gs://bucket/prefix (their current generations)."""
        with step(f"listing gs://{bucket}/{prefix}", STORAGE_READ_HINT):
            for blob in self.storage.list_blobs(bucket, prefix=prefix or None, timeout=self.cfg.http_timeout_seconds):
                yield blob
                if stop():
                    return

    def generations_of(self, bucket: str, name: str) -> list[int]:
        """The generations of gs://bucket/name the bucket still keeps, the live one and, in a bucket
        with versioning (the uploads bucket in Terraform), the noncurrent ones: one listing of the
        name as a prefix with versions, names only (other names under that prefix are left out)."""
        with step(f"listing the generations of gs://{bucket}/{name}", STORAGE_READ_HINT):
            blobs = self.storage.list_blobs(
                bucket,
                prefix=name,
                versions=True,
                fields="items(name,generation),nextPageToken",
                timeout=self.cfg.http_timeout_seconds,
                retry=_short_retry(),
            )
            return sorted({int(b.generation) for b in blobs if b.name == name and b.generation}, reverse=True)

    def live_object(self, bucket: str, name: str) -> Any:
        with step(f"reading gs://{bucket}/{name}", STORAGE_READ_HINT):
            return self.storage.bucket(bucket).get_blob(
                name, timeout=self.cfg.http_timeout_seconds, retry=_short_retry()
            )

    # --- the queue ----------------------------------------------------------------------------

    def queue_info(self, name: str = "", depth_limit: int = DEFAULT_DEPTH_LIMIT) -> QueueInfo:
        from google.cloud import tasks_v2

        name = name or self._submit_queue()
        timeout = self.cfg.http_timeout_seconds
        with step(f"reading queue {name}", QUEUE_VIEW_HINT):
            queue = self.tasks.get_queue(name=name, timeout=timeout, retry=_short_retry())
            depth, capped = 0, False
            request = tasks_v2.ListTasksRequest(parent=name, response_view=tasks_v2.Task.View.BASIC, page_size=1000)
            for page in self.tasks.list_tasks(request=request, timeout=timeout, retry=_short_retry()).pages:
                depth += len(page.tasks)
                if depth >= depth_limit:
                    capped = bool(page.next_page_token)
                    break
        return QueueInfo(
            name=name,
            state=tasks_v2.Queue.State(queue.state).name,
            depth=depth,
            depth_capped=capped,
            rate_per_second=float(queue.rate_limits.max_dispatches_per_second),
            max_concurrent=int(queue.rate_limits.max_concurrent_dispatches),
        )

    def pause(self) -> QueueInfo:
        name = self._submit_queue()
        with step(f"pausing queue {name}", QUEUE_ADMIN_HINT):
            self.tasks.pause_queue(name=name, timeout=self.cfg.http_timeout_seconds, retry=_short_retry())
        return self.queue_info(name)

    def resume(self) -> QueueInfo:
        name = self._submit_queue()
        with step(f"resuming queue {name}", QUEUE_ADMIN_HINT):
            self.tasks.resume_queue(name=name, timeout=self.cfg.http_timeout_seconds, retry=_short_retry())
        return self.queue_info(name)

    def _submit_queue(self) -> str:
        if not self.cfg.submit_queue:
            raise CliError("SUBMIT_QUEUE is not set (projects/P/locations/L/queues/Q)")
        return self.cfg.submit_queue


def _short_retry() -> Any:
    """Retry transient errors for 10 s, not the libraries' 60-600 s: an operator is waiting."""
    from google.api_core import exceptions as gexc
    from google.api_core import retry as gretry

    return gretry.Retry(
        predicate=gretry.if_exception_type(gexc.ServiceUnavailable, gexc.TooManyRequests, gexc.InternalServerError),
        initial=0.2,
        maximum=2.0,
        timeout=10.0,
    )


def _seconds(value: datetime.datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0
