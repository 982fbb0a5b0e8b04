"""Cloud Tasks, offline: the Cloud Tasks v2 gRPC API (`google.cloud.tasks.v2.CloudTasks`) answered
by a local process that keeps queues and tasks in memory and dispatches HTTP tasks to their URLs
with Cloud Tasks' rate limits, concurrency caps, retries, name deduplication and headers, so the
unmodified `google.cloud.tasks_v2.CloudTasksClient` works against it.

    python -m offline_cloud.cloud_tasks --port P --admin-port A [--pool N] \
        [--name-reservation-seconds S] [--faults JSON] [--log-file F] [--min-dispatch-deadline S]

    from offline_cloud import cloud_tasks
    tasks = cloud_tasks.client("127.0.0.1:P")   # a CloudTasksClient over an insecure channel

Modules: rules (pure rules: defaults, limits, burst size, backoff, give-up, OIDC token), queues
(state and the API operations), dispatch (scheduler thread + sender pool), server (gRPC handlers,
admin HTTP server, command line).

Rules chosen where Cloud Tasks does not publish one:
- max_burst_size = ceil(max_dispatches_per_second), at least 1, at most 100 (a default 500/s queue
  reports 100; the docs say the burst is generally at least the rate).
- A 429 or 503 answer halves the queue's effective rate (at most once a second, never below 1/64 of
  the configured rate) and empties its token bucket; each 2xx wins back 1/20 of the configured rate.
  Retry-After (seconds) on such an answer delays that task's retry, up to max_backoff.
- A deleted, purged, executed or dropped task's name stays reserved for --name-reservation-seconds
  (default 3600, the older docs' ~1 hour; production now says up to ~24 hours).
- Concurrency per queue is min(max_concurrent_dispatches, --pool): the pool is shared by all queues.

Defaults for what a queue leaves unset (as a new queue shows): 500 dispatches/s, 1000 concurrent,
100 attempts, backoff 0.1 s to 3600 s with 16 doublings, no max_retry_duration. A task's own
retry_config, where it sets a field, overrides the queue's.

Departures from production, on purpose: durations keep sub-second precision (production truncates
min/max_backoff and max_retry_duration to whole seconds) so tests can use short backoffs; the OIDC
token is an unsigned JWT (alg "none") that nothing can verify; X-CloudTasks-TaskRetryReason is not
sent. Not emulated: App Engine tasks, queue-level http_target overrides, RunTask, BatchCreateTasks,
IAM, the 7-day wait before a deleted queue's name can be reused, the slow ramp-up of new queues.
"""

from __future__ import annotations

from typing import Any

from bgremove import tasks


def client(endpoint: str) -> Any:
    """A real CloudTasksClient talking to the emulator at `endpoint` ("host:port"), built as the
    functions build theirs (bgremove.tasks.new_client)."""
    return tasks.new_client(endpoint)


__all__ = ["client"]
