"""Talking to a running offline stack from outside, as a user, the API or Eventarc would: shared by
the demo, the soak, the benchmarks and the tests."""

from __future__ import annotations

import time
import uuid

import google.cloud.storage as storage
import requests
from google.auth.credentials import AnonymousCredentials

from offline_cloud.eventarc_relay import binary_headers, rfc3339, storage_event
from offline_cloud.stack import PUBSUB_PROJECT, StackInfo


def storage_client(info: StackInfo, session: requests.Session | None = None) -> storage.Client:
    """A google-cloud-storage client for the stack's emulator (anonymous, as the emulator allows),
    over `session` when given (None: the client's own)."""
    return storage.Client(
        project=PUBSUB_PROJECT,
        # google-auth leaves AnonymousCredentials.__init__ unannotated.
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": info.storage_emulator_host},
        _http=session,
    )


def webhook_headers(
    secret: str, body: bytes, webhook_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for `body`, signed with `secret` as the predictions API signs."""
    from bgremove import signatures

    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex[:24]}"
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signatures.sign(signatures.decode_secret(secret), webhook_id, ts, body),
        "Content-Type": "application/json",
    }


def cloud_event_headers(event_id: str, bucket: str, name: str) -> dict[str, str]:
    """Binary-mode headers of a finalize CloudEvent, exactly as the Eventarc relay sends them."""
    return binary_headers(storage_event(event_id, bucket, name, {}, rfc3339(time.time())))
