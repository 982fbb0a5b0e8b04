"""Every error the pipeline raises, in one place.

One base, `RetryLater`, for everything worth retrying: the caller releases what it holds and lets
the platform try again (the storage trigger raises, so Eventarc redelivers; the webhook answers 503,
so the API retries; the reconciler leaves the job for its next run). The other errors are final
answers that the core turns into outcomes; those that end a job carry the `reason` code its
failure record gets (`ImageRefused` before any prediction, `OutputRefused` and its kinds after).
Configuration errors (`ConfigError`) stop an instance at start.

Library errors are translated where they arise (`storage.py` for Cloud Storage, `predictions.py`
for the API, `outputs.py` for output downloads), so the core never sees google-api-core, requests or
urllib3 exception types.
"""

from __future__ import annotations


class RetryLater(Exception):
    """A transient failure: the same request may succeed later."""


class StorageUnavailable(RetryLater):
    """Cloud Storage answered 429/5xx, timed out, or could not be reached, after its own retries."""


class ApiUnavailable(RetryLater):
    """The predictions API throttled us or was unavailable past the retry budget."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class QueueUnavailable(RetryLater):
    """Cloud Tasks was unavailable or out of quota when a task was to be created or read."""


class OutputUnavailable(RetryLater):
    """The prediction's output could not be fetched now (network, 5xx): the sender should retry."""


class EventsUnavailable(RetryLater):
    """Pub/Sub did not take a completion event (unreachable, 429/5xx, or refused: a wrong topic or
    a missing grant is logged and retried by the sweep until it is fixed)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotifyUnavailable(RetryLater):
    """NOTIFY_URL did not answer 2xx: the notify queue retries the delivery with its backoff."""


class NotYetRecorded(RetryLater):
    """A webhook names a prediction that its job has not recorded yet: ask the sender to retry."""


class ApiRefused(Exception):
    """The predictions API refused the request in a way a retry cannot fix (401, 402, 413, 422 …)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BudgetSpent(RetryLater):
    """A spend budget window (DAILY_ or MONTHLY_PREDICTION_BUDGET) is spent: the submission is
    held, not failed. The task handler answers 429 with `retry_after` (seconds until the window
    turns), so the queue keeps the task and retries it with its backoff."""

    def __init__(self, message: str, period: str, retry_after: float) -> None:
        super().__init__(message)
        self.period = period
        self.retry_after = retry_after


class Contended(RetryLater):
    """A job record kept changing under every attempt of a compare-and-swap (jobs.JobStore.update)."""


class ApiAnswerUnknown(Exception):
    """The API answered a create in a shape that is neither a prediction nor a proxy's documented
    synchronous result: a failure record quoting its first bytes (a create is never retried)."""

    reason = "api_answer_unknown"


class OutputRefused(Exception):
    """The output can never be accepted (bad URL, host, size or content): record a failure."""

    reason = "output_refused"


class NameTaken(OutputRefused):
    """An output's object name holds an object that is not this job's output (a user's file, or
    another upload's output): it is never overwritten."""

    reason = "output_name_taken"


class OutputTooManyPixels(OutputRefused):
    """The model's output has more pixels than MAX_INPUT_PIXELS: it is not decoded."""

    reason = "output_too_many_pixels"


class NotFound(Exception):
    """The object (or the generation asked for) does not exist."""


class PreconditionFailed(Exception):
    """A conditional write lost: the object exists already or changed since it was read."""


class Conflict(Exception):
    """Another writer changed a job record first; re-read and decide again."""


class ImageRefused(Exception):
    """The upload can never be submitted as it is (an image that cannot be decoded or converted,
    custom metadata that names a bad override): record a failure with `reason` before any
    prediction is created. Not worth retrying: the same bytes and metadata give the same answer."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Superseded(Exception):
    """The upload this job is for is no longer the live generation of its name (replaced by a newer
    one, or deleted): the job ends `superseded` or `removed`, writing nothing, paying for nothing
    more. `deleted` tells which."""

    def __init__(self, message: str, deleted: bool = False) -> None:
        super().__init__(message)
        self.deleted = deleted


def decode_errors() -> tuple[type[BaseException], ...]:
    """What Pillow and pillow_heif raise for bad bytes (decoders have been seen raising all of
    these), which upright.py and variants.py translate into UnsupportedImage. Pillow is imported
    only when an image is really decoded."""
    import struct

    from PIL import Image

    return (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        RuntimeError,
        IndexError,
        KeyError,
        struct.error,
        MemoryError,
        Image.DecompressionBombError,
    )


class UnsupportedImage(ValueError):
    """An image that cannot be decoded or converted: an upload being prepared for the model
    (upright.py, which inputs.py turns into ImageRefused) or the model's output being rendered
    (variants.py, which complete.py records as `output_unsupported`)."""


class VariantError(ValueError):
    """A variant setting or an upload's variant metadata is invalid; the message names which."""


class SignatureError(Exception):
    """A webhook is not a validly signed, fresh delivery (answered 401; the reason is only logged)."""


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable."""
