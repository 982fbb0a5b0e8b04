# Cloud Tasks: admission at the predictions API's pace.
#
# on_upload admits each upload as a `queued` job and puts one HTTP task, named from the
# job id, on the submission queue; the queue dispatches it to the task handler (on_task),
# which creates the prediction. The queue's rate and concurrency are the admission limit;
# its retry settings replace sleeping inside billed functions: on_task answers 429 or 503
# and the queue backs off (and slows down on 429/503 by itself). Deadline checks are
# delayed tasks on a queue of their own, so they never use the submission rate.
#
# What bounds a queued task: the submission queue's retry settings (it stops when both
# max_attempts and max_retry_duration are spent) and Cloud Tasks' retention (a task lives
# at most 31 days). When a task runs out, Cloud Tasks deletes it; the job stays `queued`,
# the sweep (reconcile) finds its task gone after QUEUED_CHECK_SECONDS and enqueues a new
# one, logging "reconcile: queued again (its submission task is gone)". See infra/README.md,
# "Queues".
#
# The module sets no queue state: `gcloud tasks queues pause|resume` is the operator's
# switch, and an apply leaves it as it is. A deleted queue's name stays reserved for up
# to 3 days (Cloud Tasks' tombstone window), which matters when an environment is
# destroyed and rebuilt.

resource "google_cloud_tasks_queue" "submit" {
  project  = var.project_id
  location = var.region
  name     = "${var.name_prefix}-submit"

  rate_limits {
    max_dispatches_per_second = var.submit_queue_max_dispatches_per_second
    max_concurrent_dispatches = var.submit_queue_max_concurrent_dispatches
  }

  retry_config {
    max_attempts       = var.submit_queue_max_attempts
    max_retry_duration = "${var.submit_queue_max_retry_duration_seconds}s"
    min_backoff        = "${var.submit_queue_min_backoff_seconds}s"
    max_backoff        = "${var.submit_queue_max_backoff_seconds}s"
    max_doublings      = var.submit_queue_max_doublings
  }

  stackdriver_logging_config {
    sampling_ratio = var.queue_log_sampling_ratio
  }

  lifecycle {
    precondition {
      condition     = var.submit_queue_min_backoff_seconds <= var.submit_queue_max_backoff_seconds
      error_message = "submit_queue_min_backoff_seconds must not exceed submit_queue_max_backoff_seconds."
    }
    # A submission held by a spent budget waits by being retried (on_task answers 429) with
    # this queue's backoff; a monthly hold can last until the month turns, so its task must
    # not run out first. 0 = unlimited (Cloud Tasks' 31-day retention bounds it).
    precondition {
      condition     = var.monthly_prediction_budget == 0 || var.submit_queue_max_retry_duration_seconds == 0 || var.submit_queue_max_retry_duration_seconds >= 2678400
      error_message = "With monthly_prediction_budget set, submit_queue_max_retry_duration_seconds must be 0 (unlimited; Cloud Tasks keeps a task 31 days at most) or at least 2678400 (31 days): a submission held until the month turns is retried that long."
    }
  }

  depends_on = [google_project_service.enabled]
}

resource "google_cloud_tasks_queue" "deadline" {
  project  = var.project_id
  location = var.region
  name     = "${var.name_prefix}-deadline"

  rate_limits {
    max_dispatches_per_second = var.deadline_queue_max_dispatches_per_second
    max_concurrent_dispatches = var.deadline_queue_max_concurrent_dispatches
  }

  retry_config {
    max_attempts       = var.deadline_queue_max_attempts
    max_retry_duration = "${var.deadline_queue_max_retry_duration_seconds}s"
    min_backoff        = "${var.deadline_queue_min_backoff_seconds}s"
    max_backoff        = "${var.deadline_queue_max_backoff_seconds}s"
    max_doublings      = var.deadline_queue_max_doublings
  }

  stackdriver_logging_config {
    sampling_ratio = var.queue_log_sampling_ratio
  }

  lifecycle {
    precondition {
      condition     = var.deadline_queue_min_backoff_seconds <= var.deadline_queue_max_backoff_seconds
      error_message = "deadline_queue_min_backoff_seconds must not exceed deadline_queue_max_backoff_seconds."
    }
  }

  depends_on = [google_project_service.enabled]
}

# Notifications (only while notify_url is set): each job's end POSTed to NOTIFY_URL by
# on_task, one task per job and outcome, made by whichever function ended the job. The
# receiver is a customer's endpoint, so the retry settings are for an endpoint that is down
# for minutes (a deploy, a restart) or hours, not for an API that throttles:
#
# - backoff 10, 20, 40, 80, 160 s, then every 300 s: a receiver back after an outage of any
#   length gets its deliveries within about 5 minutes (the last wait), not 10;
# - retried for 3 days (259200 s; Stripe's webhook window), attempts unlimited: an endpoint
#   down over a weekend still gets every event. Then Cloud Tasks drops the task: that
#   delivery is not made again (the event stays on the events topic and in the job record);
# - 20 dispatches a second (twice the submission rate, so a backlog drains while new ends
#   keep coming) and 20 at once: a receiver that hangs holds at most 20 task-handler
#   instances, each for HTTP_TIMEOUT_SECONDS, so submissions keep their instances.
#
# A 429 or 503 from the receiver also slows the queue by itself.
resource "google_cloud_tasks_queue" "notify" {
  count    = local.notify_enabled ? 1 : 0
  project  = var.project_id
  location = var.region
  name     = "${var.name_prefix}-notify"

  rate_limits {
    max_dispatches_per_second = var.notify_queue_max_dispatches_per_second
    max_concurrent_dispatches = var.notify_queue_max_concurrent_dispatches
  }

  retry_config {
    max_attempts       = var.notify_queue_max_attempts
    max_retry_duration = "${var.notify_queue_max_retry_duration_seconds}s"
    min_backoff        = "${var.notify_queue_min_backoff_seconds}s"
    max_backoff        = "${var.notify_queue_max_backoff_seconds}s"
    max_doublings      = var.notify_queue_max_doublings
  }

  stackdriver_logging_config {
    sampling_ratio = var.queue_log_sampling_ratio
  }

  lifecycle {
    precondition {
      condition     = var.notify_queue_min_backoff_seconds <= var.notify_queue_max_backoff_seconds
      error_message = "notify_queue_min_backoff_seconds must not exceed notify_queue_max_backoff_seconds."
    }
  }

  depends_on = [google_project_service.enabled]
}

# ---------------------------------------------------------------------------
# Who may put tasks where: queue-level grants only (no project-wide Cloud Tasks
# role), each to the runtime account of a function whose code enqueues there.
# ---------------------------------------------------------------------------

# Submission queue, roles/cloudtasks.enqueuer (cloudtasks.tasks.create):
# - upload:    admits every upload (submit.admit -> enqueue_submission);
# - tasks:     a deadline check that finds a lost, expired or stuck prediction puts
#              the job back in this queue (reconcile_job -> _resubmit);
# - reconcile: the sweep does the same, and enqueues a new task for a queued job
#              whose task is gone.
resource "google_cloud_tasks_queue_iam_member" "submit_enqueuer" {
  for_each = {
    upload    = google_service_account.upload.member
    tasks     = google_service_account.tasks.member
    reconcile = google_service_account.reconcile.member
  }
  project  = google_cloud_tasks_queue.submit.project
  location = google_cloud_tasks_queue.submit.location
  name     = google_cloud_tasks_queue.submit.name
  role     = "roles/cloudtasks.enqueuer"
  member   = each.value
}

# Deadline queue, roles/cloudtasks.enqueuer:
# - tasks:     schedules a job's deadline check when it creates the prediction, and
#              the next check when a prediction is still running;
# - reconcile: the sweep schedules the next check of a still-running prediction.
# on_upload never schedules a deadline (it creates no prediction), so it gets none.
resource "google_cloud_tasks_queue_iam_member" "deadline_enqueuer" {
  for_each = {
    tasks     = google_service_account.tasks.member
    reconcile = google_service_account.reconcile.member
  }
  project  = google_cloud_tasks_queue.deadline.project
  location = google_cloud_tasks_queue.deadline.location
  name     = google_cloud_tasks_queue.deadline.name
  role     = "roles/cloudtasks.enqueuer"
  member   = each.value
}

# Submission queue, roles/cloudtasks.viewer (cloudtasks.tasks.get, the narrowest
# predefined role with it): before requeueing a `queued` job, reconcile_job asks
# whether its submission task still exists (GetTask). The sweep runs it, and so does a
# deadline check (the same function), hence both accounts.
resource "google_cloud_tasks_queue_iam_member" "submit_viewer" {
  for_each = {
    tasks     = google_service_account.tasks.member
    reconcile = google_service_account.reconcile.member
  }
  project  = google_cloud_tasks_queue.submit.project
  location = google_cloud_tasks_queue.submit.location
  name     = google_cloud_tasks_queue.submit.name
  role     = "roles/cloudtasks.viewer"
  member   = each.value
}

# Notify queue, roles/cloudtasks.enqueuer: every function that ends jobs enqueues the
# notification of each end (local.announcers), only while notify_url is set.
resource "google_cloud_tasks_queue_iam_member" "notify_enqueuer" {
  for_each = { for name, member in local.announcers : name => member if local.notify_enabled }
  project  = google_cloud_tasks_queue.notify[0].project
  location = google_cloud_tasks_queue.notify[0].location
  name     = google_cloud_tasks_queue.notify[0].name
  role     = "roles/cloudtasks.enqueuer"
  member   = each.value
}

# Creating a task that carries an OIDC token of tasks-invoker needs
# iam.serviceAccounts.actAs on that account: roles/iam.serviceAccountUser on it alone
# (not on the project), for exactly the accounts that enqueue.
resource "google_service_account_iam_member" "enqueuers_act_as_tasks_invoker" {
  for_each = {
    upload    = google_service_account.upload.member
    tasks     = google_service_account.tasks.member
    reconcile = google_service_account.reconcile.member
  }
  service_account_id = google_service_account.tasks_invoker.name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value
}

# The webhook and on_delete enqueue only notifications: actAs on tasks-invoker only while
# notify_url is set.
resource "google_service_account_iam_member" "notifiers_act_as_tasks_invoker" {
  for_each = {
    for name, member in {
      webhook = google_service_account.webhook.member
      delete  = google_service_account.delete.member
    } : name => member if local.notify_enabled
  }
  service_account_id = google_service_account.tasks_invoker.name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value
}
