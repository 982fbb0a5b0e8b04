"""What each function needs, per entry point: the expectations the wiring checks compare against.

Derived from the code (main.py, bgremove/runtime.py, submit.py, reconcile.py, complete.py,
removal.py, lifecycle.py, events.py):

- on_upload filters and admits: it enqueues submission tasks (runtime.task_queue needs both
  queues, the handler's URL and the OIDC account) and calls no API, so no token, no webhook
  URL, no signing;
- on_task creates predictions (token, WEBHOOK_URL, SIGNING_SERVICE_ACCOUNT for V4 signed URLs)
  and runs deadline checks, which schedule the next check, requeue lost work and ask whether
  a queued job's submission task still exists (GetTask); it delivers notifications (kind
  notify: NOTIFY_URL, signed with NOTIFY_SECRET);
- reconcile, the sweep, does what a deadline check does for every overdue open job: token
  (GET, cancel; runtime.predictions_client also wants WEBHOOK_URL), both queues, GetTask;
- the webhook function writes outputs and touches no submission or deadline queue;
- on_delete (deleted and archived events) reads the upload's live generation, deletes outputs
  and cancels the prediction of a job it ends (lifecycle.end_superseded: the token, and
  WEBHOOK_URL for runtime.predictions_client).

Every one of them ends jobs, and the store announces each end (events.Announcer): a publish to
EVENTS_TOPIC (roles/pubsub.publisher), and with NOTIFY_URL a notify task on NOTIFY_QUEUE made
through runtime.task_queue, which wants SUBMIT_QUEUE, DEADLINE_QUEUE and TASK_HANDLER_URL set
(TASKS_SERVICE_ACCOUNT for the token) even where only notifications are enqueued; and
config.py's start check wants NOTIFY_SECRET wherever NOTIFY_URL is set (`agrees_with`), so
every function mounts it, though only on_task signs with it.
"""

from __future__ import annotations

from infra.checks.queues import ENQUEUER, QUEUE_VIEWER

ENTRY_POINTS = {
    "on_upload": "cloud_event",
    "on_delete": "cloud_event",
    "on_task": "http",
    "on_prediction_webhook": "http",
    "reconcile": "http",
}

TASK_ENV = frozenset({"SUBMIT_QUEUE", "DEADLINE_QUEUE", "TASK_HANDLER_URL", "TASKS_SERVICE_ACCOUNT"})
EVENT_ENV = frozenset({"EVENTS_TOPIC", "NOTIFY_QUEUE"})

# Computed variables each function sets on top of the shared settings and the buckets.
EXTRA_ENV = {
    "on_upload": TASK_ENV | EVENT_ENV,
    "on_delete": TASK_ENV | EVENT_ENV | {"WEBHOOK_URL"},
    "on_task": TASK_ENV | EVENT_ENV | {"WEBHOOK_URL", "SIGNING_SERVICE_ACCOUNT"},
    "reconcile": TASK_ENV | EVENT_ENV | {"WEBHOOK_URL"},
    "on_prediction_webhook": TASK_ENV | EVENT_ENV,
}

SECRETS = {
    "on_upload": frozenset({"NOTIFY_SECRET"}),
    "on_delete": frozenset({"PREDICTIONS_API_TOKEN", "NOTIFY_SECRET"}),
    "on_task": frozenset({"PREDICTIONS_API_TOKEN", "NOTIFY_SECRET"}),
    "reconcile": frozenset({"PREDICTIONS_API_TOKEN", "NOTIFY_SECRET"}),
    "on_prediction_webhook": frozenset({"WEBHOOK_SECRETS", "NOTIFY_SECRET"}),
}

# Environment variable -> the google_cloud_tasks_queue resource it names.
QUEUES = {"SUBMIT_QUEUE": "submit", "DEADLINE_QUEUE": "deadline", "NOTIFY_QUEUE": "notify"}

# Queue-level roles per entry point: {queue resource: roles}. Every function that ends jobs
# enqueues their notifications (the notify queue exists only while NOTIFY_URL is set).
QUEUE_GRANTS = {
    "on_upload": {"submit": {ENQUEUER}, "notify": {ENQUEUER}},
    "on_delete": {"notify": {ENQUEUER}},
    "on_task": {"submit": {ENQUEUER, QUEUE_VIEWER}, "deadline": {ENQUEUER}, "notify": {ENQUEUER}},
    "reconcile": {"submit": {ENQUEUER, QUEUE_VIEWER}, "deadline": {ENQUEUER}, "notify": {ENQUEUER}},
    "on_prediction_webhook": {"notify": {ENQUEUER}},
}

# Entry points that publish completion events to EVENTS_TOPIC: all of them end jobs.
PUBLISHERS = frozenset(ENTRY_POINTS)
