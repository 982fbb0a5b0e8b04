"""What each function needs, per entry point: the expectations the wiring checks compare against.

Derived from the code (main.py, bgremove/runtime.py, submit.py, reconcile.py, complete.py):

- on_upload filters and admits: it enqueues submission tasks (runtime.task_queue needs both
  queues, the handler's URL and the OIDC account) and calls no API, so no token, no webhook
  URL, no signing;
- on_task creates predictions (token, WEBHOOK_URL, SIGNING_SERVICE_ACCOUNT for V4 signed URLs)
  and runs deadline checks, which schedule the next check, requeue lost work and ask whether
  a queued job's submission task still exists (GetTask);
- reconcile, the sweep, does what a deadline check does for every overdue open job: token
  (GET, cancel; runtime.predictions_client also wants WEBHOOK_URL), both queues, GetTask;
- the webhook function writes outputs and touches no queue.
"""

from __future__ import annotations

from infra.checks.queues import ENQUEUER, QUEUE_VIEWER

ENTRY_POINTS = {
    "on_upload": "cloud_event",
    "on_task": "http",
    "on_prediction_webhook": "http",
    "reconcile": "http",
}

TASK_ENV = frozenset({"SUBMIT_QUEUE", "DEADLINE_QUEUE", "TASK_HANDLER_URL", "TASKS_SERVICE_ACCOUNT"})

# Computed variables each function sets on top of the shared settings and the buckets.
EXTRA_ENV = {
    "on_upload": TASK_ENV,
    "on_task": TASK_ENV | {"WEBHOOK_URL", "SIGNING_SERVICE_ACCOUNT"},
    "reconcile": TASK_ENV | {"WEBHOOK_URL"},
    "on_prediction_webhook": frozenset(),
}

SECRETS = {
    "on_upload": frozenset(),
    "on_task": frozenset({"PREDICTIONS_API_TOKEN"}),
    "reconcile": frozenset({"PREDICTIONS_API_TOKEN"}),
    "on_prediction_webhook": frozenset({"WEBHOOK_SECRETS"}),
}

# Environment variable -> the google_cloud_tasks_queue resource it names.
QUEUES = {"SUBMIT_QUEUE": "submit", "DEADLINE_QUEUE": "deadline"}

# Queue-level roles per entry point: {queue resource: roles}.
QUEUE_GRANTS = {
    "on_upload": {"submit": {ENQUEUER}},
    "on_task": {"submit": {ENQUEUER, QUEUE_VIEWER}, "deadline": {ENQUEUER}},
    "reconcile": {"submit": {ENQUEUER, QUEUE_VIEWER}, "deadline": {ENQUEUER}},
    "on_prediction_webhook": {},
}
