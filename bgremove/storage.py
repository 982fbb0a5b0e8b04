"""The narrow door to Cloud Storage: small reads, JSON records with preconditions, output writes
and V4 signed URLs. One client per process, created on first use (cold start stays cheap).

The same code runs against Cloud Storage and the offline emulator: the google-cloud-storage client
switches endpoint on STORAGE_EMULATOR_HOST, nothing here knows which one it talks to.
"""

from __future__ import annotations

import datetime
import json
import threading
from collections.abc import Iterator
from typing import IO, Any

from google.api_core import exceptions as gexc

_lock = threading.Lock()
_cache: dict[str, Any] = {}

# Uploads up to this size go in one request, where the create-only precondition is enforced even by
# the emulator; larger ones stream resumably in chunks of this size, keeping memory flat.
CHUNK_SIZE = 8 * 1024 * 1024


class PreconditionFailed(Exception):
    """A conditional write lost: the object exists already or changed since it was read."""


class NotFound(Exception):
    """The object (or the generation asked for) does not exist."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    gexc.TooManyRequests,
    gexc.InternalServerError,
    gexc.BadGateway,
    gexc.ServiceUnavailable,
    gexc.GatewayTimeout,
    ConnectionError,
    TimeoutError,
)


def client():  # type: ignore[no-untyped-def]
    with _lock:
        if "client" not in _cache:
            from google.cloud import storage

            _cache["client"] = storage.Client()
        return _cache["client"]


def _blob(bucket: str, name: str, generation: int | None = None):  # type: ignore[no-untyped-def]
    return client().bucket(bucket).blob(name, generation=generation)


def read_head(bucket: str, name: str, generation: int, length: int) -> bytes:
    """The first `length` bytes of one object generation (a range read)."""
    try:
        return _blob(bucket, name, generation).download_as_bytes(start=0, end=length - 1, checksum=None)
    except gexc.NotFound as exc:
        raise NotFound(f"gs://{bucket}/{name}#{generation}") from exc
    except gexc.RequestRangeNotSatisfiable:
        return b""


def read_bytes(bucket: str, name: str, generation: int) -> bytes:
    try:
        return _blob(bucket, name, generation).download_as_bytes()
    except gexc.NotFound as exc:
        raise NotFound(f"gs://{bucket}/{name}#{generation}") from exc


def copy(bucket: str, name: str, generation: int, to_bucket: str, to_name: str) -> None:
    """Server-side copy of one object generation (the bytes never pass through the function)."""
    source = client().bucket(bucket)
    try:
        source.copy_blob(source.blob(name), client().bucket(to_bucket), to_name, source_generation=generation)
    except gexc.NotFound as exc:
        raise NotFound(f"gs://{bucket}/{name}#{generation}") from exc


def metadata(bucket: str, name: str) -> tuple[dict[str, str], int] | None:
    """An object's custom metadata and generation, or None when absent."""
    blob = client().bucket(bucket).get_blob(name)
    if blob is None:
        return None
    return dict(blob.metadata or {}), int(blob.generation)


def read_json(bucket: str, name: str) -> tuple[dict[str, Any], int] | None:
    """A JSON record and the generation it was read at, or None when absent."""
    blob = _blob(bucket, name)
    try:
        data = blob.download_as_bytes()
    except gexc.NotFound:
        return None
    return json.loads(data), int(blob.generation)


def write_json(
    bucket: str, name: str, record: dict[str, Any], if_generation_match: int, metadata: dict[str, str] | None = None
) -> int:
    """Write a record only if its generation is still `if_generation_match` (0: only if absent).

    `metadata` is copied into the object's custom metadata, so a listing can filter records
    without reading each one."""
    blob = _blob(bucket, name)
    blob.metadata = metadata
    body = json.dumps(record, sort_keys=True, separators=(",", ":"))
    try:
        blob.upload_from_string(body, content_type="application/json", if_generation_match=if_generation_match)
    except gexc.PreconditionFailed as exc:
        raise PreconditionFailed(f"gs://{bucket}/{name}") from exc
    return int(blob.generation)


def list_with_metadata(bucket: str, prefix: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(name, custom metadata) of every object under `prefix`, page by page."""
    for blob in client().list_blobs(bucket, prefix=prefix):
        yield blob.name, dict(blob.metadata or {})


def create_object(
    bucket: str,
    name: str,
    stream: IO[bytes],
    size: int | None,
    content_type: str,
    metadata: dict[str, str],
) -> int:
    """Create an object from a stream, only if no object has that name (create-only)."""
    blob = _blob(bucket, name)
    blob.chunk_size = CHUNK_SIZE
    blob.metadata = metadata
    try:
        blob.upload_from_file(stream, size=size, content_type=content_type, if_generation_match=0, checksum=None)
    except gexc.PreconditionFailed as exc:
        raise PreconditionFailed(f"gs://{bucket}/{name}") from exc
    return int(blob.generation)


def signed_url(bucket: str, name: str, generation: int | None, ttl_seconds: int, signer_email: str) -> str:
    """A V4 signed GET URL for one object generation (the live one when `generation` is None).

    With a key that can sign (a service-account key file, as the offline stack uses) it signs
    locally; with metadata-server credentials (Cloud Functions) it signs through IAM SignBlob,
    which needs roles/iam.serviceAccountTokenCreator on the signing account.
    """
    import google.auth
    from google.auth import credentials as gcreds
    from google.auth.transport.requests import Request

    with _lock:
        if "credentials" not in _cache:
            _cache["credentials"] = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])[0]
        creds = _cache["credentials"]
    expiration = datetime.timedelta(seconds=ttl_seconds)
    blob = _blob(bucket, name)
    if isinstance(creds, gcreds.Signing):
        return blob.generate_signed_url(
            version="v4", expiration=expiration, method="GET", generation=generation, credentials=creds
        )
    with _lock:
        if not creds.valid:
            creds.refresh(Request())
        token = creds.token
    email = signer_email or getattr(creds, "service_account_email", "")
    return blob.generate_signed_url(
        version="v4",
        expiration=expiration,
        method="GET",
        generation=generation,
        service_account_email=email,
        access_token=token,
    )
