"""Cloud Storage behind the `objects.Objects` seam: small reads, JSON records with preconditions,
create-only output writes and V4 signed URLs.

The same code runs against Cloud Storage and the offline emulator: the google-cloud-storage client
switches endpoint on STORAGE_EMULATOR_HOST, nothing here knows which one it talks to.

Every library error is translated here (`_translated`): a missing object becomes `NotFound`, a lost
precondition `PreconditionFailed`, and everything worth retrying — 429 and 5xx answers, timeouts,
connection errors, and google-api-core's `RetryError` when the client's own retries run out —
`StorageUnavailable`. The core sees no google or requests exception types.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import threading
from collections.abc import Iterator
from typing import Any

import requests
from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.auth import exceptions as gauth_exc

from bgremove.errors import NotFound, PreconditionFailed, StorageUnavailable
from bgremove.objects import Delivery, Readable

# Uploads up to this size go in one request, where the create-only precondition is enforced even by
# the emulator; larger ones stream resumably in chunks of this size, keeping memory flat.
CHUNK_SIZE = 8 * 1024 * 1024

# What is worth retrying later, whichever layer raised it.
_TRANSIENT: tuple[type[Exception], ...] = (
    gexc.TooManyRequests,
    gexc.InternalServerError,
    gexc.BadGateway,
    gexc.ServiceUnavailable,
    gexc.GatewayTimeout,
    gexc.RetryError,  # the client's own retries ran out (it wraps the last transient error)
    requests.ConnectionError,
    requests.Timeout,
    gauth_exc.TransportError,  # the metadata server or IAM, while signing
    ConnectionError,
    TimeoutError,
)

# What the library itself retries within STORAGE_RETRY_SECONDS (not RetryError: that is the end).
_RETRIED = tuple(exc for exc in _TRANSIENT if exc is not gexc.RetryError)


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except gexc.NotFound as exc:
        raise NotFound(what) from exc
    except gexc.PreconditionFailed as exc:
        raise PreconditionFailed(what) from exc
    except _TRANSIENT as exc:
        raise StorageUnavailable(f"{type(exc).__name__} on {what}") from exc
    except Exception as exc:
        # Resumable uploads raise google.cloud.storage.exceptions.InvalidResponse for 5xx.
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(status, int) and (status == 429 or status >= 500):
            raise StorageUnavailable(f"{type(exc).__name__} {status} on {what}") from exc
        raise


class GcsObjects:
    """One per process (see runtime.objects); `client` is a google.cloud.storage.Client."""

    def __init__(self, client: Any, timeout_seconds: float = 10.0, retry_seconds: float = 20.0) -> None:
        self._client = client
        self._timeout = timeout_seconds
        # The library retries idempotent calls (and conditional writes) for 120 s by default; a
        # webhook must answer within seconds, so the budget is ours to set (STORAGE_RETRY_SECONDS).
        self._retry = gretry.Retry(
            predicate=gretry.if_exception_type(*_RETRIED),
            initial=0.2,
            maximum=4.0,
            multiplier=2.0,
            timeout=retry_seconds,
        )
        self._lock = threading.Lock()
        self._credentials: Any = None

    def _blob(self, bucket: str, name: str, generation: int | None = None) -> Any:
        return self._client.bucket(bucket).blob(name, generation=generation)

    def read_head(self, bucket: str, name: str, generation: int, length: int) -> bytes:
        with _translated(f"gs://{bucket}/{name}#{generation}"):
            try:
                data: bytes = self._blob(bucket, name, generation).download_as_bytes(
                    start=0, end=length - 1, checksum=None, timeout=self._timeout, retry=self._retry
                )
            except gexc.RequestRangeNotSatisfiable:
                return b""
            return data

    def read_bytes(self, bucket: str, name: str, generation: int) -> bytes:
        with _translated(f"gs://{bucket}/{name}#{generation}"):
            data: bytes = self._blob(bucket, name, generation).download_as_bytes(
                timeout=self._timeout, retry=self._retry
            )
            return data

    def copy(self, bucket: str, name: str, generation: int, to_bucket: str, to_name: str) -> None:
        source = self._client.bucket(bucket)
        with _translated(f"gs://{bucket}/{name}#{generation}"):
            source.copy_blob(
                source.blob(name),
                self._client.bucket(to_bucket),
                to_name,
                source_generation=generation,
                timeout=self._timeout,
                retry=self._retry,
            )

    def metadata(self, bucket: str, name: str) -> tuple[dict[str, str], int] | None:
        with _translated(f"gs://{bucket}/{name}"):
            blob = self._client.bucket(bucket).get_blob(name, timeout=self._timeout, retry=self._retry)
        if blob is None:
            return None
        return dict(blob.metadata or {}), int(blob.generation)

    def read_json(self, bucket: str, name: str) -> tuple[dict[str, Any], int] | None:
        blob = self._blob(bucket, name)
        try:
            with _translated(f"gs://{bucket}/{name}"):
                data = blob.download_as_bytes(timeout=self._timeout, retry=self._retry)
        except NotFound:
            return None
        return json.loads(data), int(blob.generation)

    def write_json(
        self,
        bucket: str,
        name: str,
        record: dict[str, Any],
        if_generation_match: int,
        metadata: dict[str, str] | None = None,
    ) -> int:
        blob = self._blob(bucket, name)
        blob.metadata = metadata
        body = json.dumps(record, sort_keys=True, separators=(",", ":"))
        with _translated(f"gs://{bucket}/{name}"):
            blob.upload_from_string(
                body,
                content_type="application/json",
                if_generation_match=if_generation_match,
                timeout=self._timeout,
                retry=self._retry,
            )
        return int(blob.generation)

    def delete(self, bucket: str, name: str, if_generation_match: int | None = None) -> None:
        try:
            with _translated(f"gs://{bucket}/{name}"):
                self._blob(bucket, name).delete(
                    if_generation_match=if_generation_match, timeout=self._timeout, retry=self._retry
                )
        except NotFound:
            pass

    def list_with_metadata(self, bucket: str, prefix: str) -> Iterator[tuple[str, dict[str, str]]]:
        with _translated(f"gs://{bucket}/{prefix}*"):
            for blob in self._client.list_blobs(bucket, prefix=prefix, timeout=self._timeout, retry=self._retry):
                yield blob.name, dict(blob.metadata or {})

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
        blob = self._blob(bucket, name)
        blob.chunk_size = CHUNK_SIZE
        blob.metadata = metadata
        if delivery is not None:
            blob.cache_control = delivery.cache_control or None
            blob.content_disposition = delivery.content_disposition or None
            blob.content_language = delivery.content_language or None
        with _translated(f"gs://{bucket}/{name}"):
            # No library retry: the stream cannot be rewound; the webhook's sender retries instead.
            blob.upload_from_file(
                stream,
                size=size,
                content_type=content_type,
                if_generation_match=if_generation_match,
                checksum=None,
                timeout=self._timeout,
                retry=None,
            )
        return int(blob.generation)

    def signed_url(self, bucket: str, name: str, generation: int | None, ttl_seconds: int, signer_email: str) -> str:
        """With a key that can sign (a service-account key file, as the offline stack uses) it signs
        locally; with metadata-server credentials (Cloud Functions) it signs through IAM SignBlob,
        which needs roles/iam.serviceAccountTokenCreator on the signing account."""
        from google.auth import credentials as gcreds
        from google.auth.transport.requests import Request

        expiration = datetime.timedelta(seconds=ttl_seconds)
        blob = self._blob(bucket, name)
        with _translated(f"signing gs://{bucket}/{name}"):
            with self._lock:
                if self._credentials is None:
                    import google.auth

                    scopes = ["https://www.googleapis.com/auth/cloud-platform"]
                    self._credentials = google.auth.default(scopes=scopes)[0]
                creds = self._credentials
            if isinstance(creds, gcreds.Signing):
                url: str = blob.generate_signed_url(
                    version="v4", expiration=expiration, method="GET", generation=generation, credentials=creds
                )
                return url
            with self._lock:
                if not creds.valid:
                    creds.refresh(Request())
                token = creds.token
            email = signer_email or getattr(creds, "service_account_email", "")
            url = blob.generate_signed_url(
                version="v4",
                expiration=expiration,
                method="GET",
                generation=generation,
                service_account_email=email,
                access_token=token,
            )
            return url
