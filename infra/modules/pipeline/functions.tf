# Cloud Functions (2nd gen) built from the same source archive: six functions for five entry
# points (on_delete has one function per storage event type, since a function has one
# event_trigger). The entry points are the functions of the same name in main.py.
#
# Every function ends jobs, so every one gets local.event_env (EVENTS_TOPIC, NOTIFY_QUEUE), the
# publisher grant on the events topic and, while notify_url is set, NOTIFY_SECRET and the
# enqueuer grant on the notify queue (events.tf, tasks.tf, secrets.tf).

# Public HTTP endpoint for the prediction webhooks. Its authentication is the
# Standard Webhooks signature, checked in code with WEBHOOK_SECRETS.
resource "google_cloudfunctions2_function" "webhook" {
  # checkov:skip=CKV_GCP_124: the predictions API calls this endpoint from the internet; requests are authenticated by signature.
  project     = var.project_id
  location    = var.region
  name        = "${var.name_prefix}-webhook"
  description = "Receives signed prediction webhooks and stores the outputs."
  labels      = local.labels

  build_config {
    runtime         = "python311"
    entry_point     = "on_prediction_webhook"
    service_account = google_service_account.build.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  # available_memory: sized from peak RSS rendering a 25 MP output (variables.tf, webhook_function_memory).
  service_config {
    service_account_email            = google_service_account.webhook.email
    ingress_settings                 = "ALLOW_ALL"
    available_memory                 = var.webhook_function_memory
    timeout_seconds                  = var.webhook_function_timeout_seconds
    max_instance_count               = var.webhook_max_instances
    max_instance_request_concurrency = 1
    all_traffic_on_latest_revision   = true
    # local.task_env: its only tasks are notifications, made through runtime.task_queue,
    # which wants every queue and the handler's URL.
    environment_variables = merge(local.app_env, local.task_env, local.event_env)

    secret_environment_variables {
      key        = "WEBHOOK_SECRETS"
      project_id = var.project_id
      secret     = google_secret_manager_secret.webhook_secret.secret_id
      version    = "latest"
    }

    # NOTIFY_SECRET, only while notify_url is set (secrets.tf, notify_secret_accessor).
    dynamic "secret_environment_variables" {
      for_each = google_secret_manager_secret.notify_secret
      content {
        key        = "NOTIFY_SECRET"
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret_id
        version    = "latest"
      }
    }
  }

  depends_on = [
    google_project_iam_member.build,
    google_project_iam_member.build_gcf_buckets,
    google_storage_bucket_iam_member.build_source_viewer,
    google_secret_manager_secret_iam_member.webhook_secret_accessor,
    google_secret_manager_secret_iam_member.notify_secret_accessor,
    google_pubsub_topic_iam_member.events_publisher,
    google_cloud_tasks_queue_iam_member.notify_enqueuer,
    google_service_account_iam_member.notifiers_act_as_tasks_invoker,
  ]
}

# Anyone may call the webhook endpoint: the signature is its authentication.
resource "google_cloud_run_service_iam_member" "webhook_public" {
  # checkov:skip=CKV_GCP_102: public by design; every request must carry a valid Standard Webhooks signature.
  project  = var.project_id
  location = google_cloudfunctions2_function.webhook.location
  service  = google_cloudfunctions2_function.webhook.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# Storage trigger: one event per finalized object in the uploads bucket. It filters
# and admits each upload into the submission queue; it never calls the predictions API
# (no token, no webhook URL, no signing).
resource "google_cloudfunctions2_function" "upload" {
  project     = var.project_id
  location    = var.region
  name        = "${var.name_prefix}-on-upload"
  description = "Admits each new upload into the submission queue."
  labels      = local.labels

  build_config {
    runtime         = "python311"
    entry_point     = "on_upload"
    service_account = google_service_account.build.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  # available_memory: sized from peak RSS preparing a 25 MP upload (variables.tf, upload_function_memory).
  service_config {
    service_account_email            = google_service_account.upload.email
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    available_memory                 = var.upload_function_memory
    timeout_seconds                  = var.upload_function_timeout_seconds
    max_instance_count               = var.upload_max_instances
    max_instance_request_concurrency = 1
    all_traffic_on_latest_revision   = true
    environment_variables            = merge(local.app_env, local.task_env, local.event_env)

    # NOTIFY_SECRET, only while notify_url is set (secrets.tf, notify_secret_accessor).
    dynamic "secret_environment_variables" {
      for_each = google_secret_manager_secret.notify_secret
      content {
        key        = "NOTIFY_SECRET"
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret_id
        version    = "latest"
      }
    }
  }

  event_trigger {
    event_type            = "google.cloud.storage.object.v1.finalized"
    trigger_region        = lower(google_storage_bucket.uploads.location)
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.trigger.email

    event_filters {
      attribute = "bucket"
      value     = google_storage_bucket.uploads.name
    }
  }

  depends_on = [
    google_project_iam_member.build,
    google_project_iam_member.build_gcf_buckets,
    google_storage_bucket_iam_member.build_source_viewer,
    google_project_iam_member.gcs_pubsub_publisher,
    google_project_iam_member.trigger_event_receiver,
    google_cloud_tasks_queue_iam_member.submit_enqueuer,
    google_service_account_iam_member.enqueuers_act_as_tasks_invoker,
    google_secret_manager_secret_iam_member.notify_secret_accessor,
    google_pubsub_topic_iam_member.events_publisher,
    google_cloud_tasks_queue_iam_member.notify_enqueuer,
  ]
}

resource "google_cloud_run_service_iam_member" "upload_trigger_invoker" {
  project  = var.project_id
  location = google_cloudfunctions2_function.upload.location
  service  = google_cloudfunctions2_function.upload.name
  role     = "roles/run.invoker"
  member   = google_service_account.trigger.member
}

# Deletions: on_delete for the uploads bucket's `deleted` and `archived` events (REFERENCE §9;
# bgremove/removal.py). A 2nd-gen function has one event_trigger, so the entry point is deployed
# twice, as two functions with the same code, account, environment and retry policy (a separate
# google_eventarc_trigger to the first function's service would save a build, but 6.50's
# google_eventarc_trigger has no retry policy, and the checks read every trigger the same way
# from the function resources). On a versioned bucket (uploads is) a delete or an overwrite
# makes the live version noncurrent, which is `archived`; `deleted` fires only when a version
# is deleted for good (the noncurrent-version lifecycle rule), or, without versioning, on every
# delete and overwrite. Either way on_delete compares the event's generation with the live one,
# so it tells an overwrite from a removal and a late `deleted` of an old version does nothing new.
#
# Raising is the retry (RETRY_POLICY_RETRY), as for on_upload.
resource "google_cloudfunctions2_function" "delete" {
  project     = var.project_id
  location    = var.region
  name        = "${var.name_prefix}-on-delete"
  description = "Removes a deleted upload's outputs, or supersedes an overwritten upload's job (deleted events)."
  labels      = local.labels

  build_config {
    runtime         = "python311"
    entry_point     = "on_delete"
    service_account = google_service_account.build.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.delete.email
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    available_memory                 = var.delete_function_memory
    timeout_seconds                  = var.delete_function_timeout_seconds
    max_instance_count               = var.delete_max_instances
    max_instance_request_concurrency = 1
    all_traffic_on_latest_revision   = true
    # WEBHOOK_URL: cancelling a prediction goes through runtime.predictions_client, built only
    # with it; local.task_env: notifications go through runtime.task_queue.
    environment_variables = merge(local.app_env, local.task_env, local.event_env, {
      WEBHOOK_URL = google_cloudfunctions2_function.webhook.service_config[0].uri
    })

    secret_environment_variables {
      key        = "PREDICTIONS_API_TOKEN"
      project_id = var.project_id
      secret     = google_secret_manager_secret.api_token.secret_id
      version    = "latest"
    }

    # NOTIFY_SECRET, only while notify_url is set (secrets.tf, notify_secret_accessor).
    dynamic "secret_environment_variables" {
      for_each = google_secret_manager_secret.notify_secret
      content {
        key        = "NOTIFY_SECRET"
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret_id
        version    = "latest"
      }
    }
  }

  event_trigger {
    event_type            = "google.cloud.storage.object.v1.deleted"
    trigger_region        = lower(google_storage_bucket.uploads.location)
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.trigger.email

    event_filters {
      attribute = "bucket"
      value     = google_storage_bucket.uploads.name
    }
  }

  depends_on = [
    google_project_iam_member.build,
    google_project_iam_member.build_gcf_buckets,
    google_storage_bucket_iam_member.build_source_viewer,
    google_project_iam_member.gcs_pubsub_publisher,
    google_project_iam_member.trigger_event_receiver,
    google_storage_bucket_iam_member.uploads_viewer,
    google_storage_bucket_iam_member.processed_remover,
    google_secret_manager_secret_iam_member.api_token_accessor,
    google_secret_manager_secret_iam_member.notify_secret_accessor,
    google_pubsub_topic_iam_member.events_publisher,
    google_cloud_tasks_queue_iam_member.notify_enqueuer,
    google_service_account_iam_member.notifiers_act_as_tasks_invoker,
  ]
}

resource "google_cloud_run_service_iam_member" "delete_trigger_invoker" {
  project  = var.project_id
  location = google_cloudfunctions2_function.delete.location
  service  = google_cloudfunctions2_function.delete.name
  role     = "roles/run.invoker"
  member   = google_service_account.trigger.member
}

# The same for `archived`: versioned buckets only; the uploads bucket is versioned (storage.tf),
# and infra/checks fail when the two disagree.
resource "google_cloudfunctions2_function" "archive" {
  project     = var.project_id
  location    = var.region
  name        = "${var.name_prefix}-on-archive"
  description = "Removes a deleted upload's outputs, or supersedes an overwritten upload's job (archived events)."
  labels      = local.labels

  build_config {
    runtime         = "python311"
    entry_point     = "on_delete"
    service_account = google_service_account.build.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.delete.email
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    available_memory                 = var.delete_function_memory
    timeout_seconds                  = var.delete_function_timeout_seconds
    max_instance_count               = var.delete_max_instances
    max_instance_request_concurrency = 1
    all_traffic_on_latest_revision   = true
    # WEBHOOK_URL: cancelling a prediction goes through runtime.predictions_client, built only
    # with it; local.task_env: notifications go through runtime.task_queue.
    environment_variables = merge(local.app_env, local.task_env, local.event_env, {
      WEBHOOK_URL = google_cloudfunctions2_function.webhook.service_config[0].uri
    })

    secret_environment_variables {
      key        = "PREDICTIONS_API_TOKEN"
      project_id = var.project_id
      secret     = google_secret_manager_secret.api_token.secret_id
      version    = "latest"
    }

    # NOTIFY_SECRET, only while notify_url is set (secrets.tf, notify_secret_accessor).
    dynamic "secret_environment_variables" {
      for_each = google_secret_manager_secret.notify_secret
      content {
        key        = "NOTIFY_SECRET"
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret_id
        version    = "latest"
      }
    }
  }

  event_trigger {
    event_type            = "google.cloud.storage.object.v1.archived"
    trigger_region        = lower(google_storage_bucket.uploads.location)
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.trigger.email

    event_filters {
      attribute = "bucket"
      value     = google_storage_bucket.uploads.name
    }
  }

  depends_on = [
    google_project_iam_member.build,
    google_project_iam_member.build_gcf_buckets,
    google_storage_bucket_iam_member.build_source_viewer,
    google_project_iam_member.gcs_pubsub_publisher,
    google_project_iam_member.trigger_event_receiver,
    google_storage_bucket_iam_member.uploads_viewer,
    google_storage_bucket_iam_member.processed_remover,
    google_secret_manager_secret_iam_member.api_token_accessor,
    google_secret_manager_secret_iam_member.notify_secret_accessor,
    google_pubsub_topic_iam_member.events_publisher,
    google_cloud_tasks_queue_iam_member.notify_enqueuer,
    google_service_account_iam_member.notifiers_act_as_tasks_invoker,
  ]
}

resource "google_cloud_run_service_iam_member" "archive_trigger_invoker" {
  project  = var.project_id
  location = google_cloudfunctions2_function.archive.location
  service  = google_cloudfunctions2_function.archive.name
  role     = "roles/run.invoker"
  member   = google_service_account.trigger.member
}

# Task handler: internal HTTP, called only by Cloud Tasks with an OIDC token of
# tasks-invoker. Kind "submit" creates a job's prediction; kind "deadline" checks a job
# when it is due. Any non-2xx answer is the task's retry (429 also slows the queue).
#
# Ingress ALLOW_INTERNAL_ONLY: Cloud Tasks in the same project calling the run.app URL
# counts as internal traffic, so nothing outside the project reaches it at the network
# level; and roles/run.invoker is granted to tasks-invoker alone, so only tasks carrying
# that account's token get in. (ALLOW_ALL with IAM would also hold, but opens the URL to
# the internet for no caller that needs it.)
#
# The timeout stays within the 60 s dispatch deadline bgremove/tasks.py gives each
# task: Cloud Tasks then never retries an attempt that is still running.
resource "google_cloudfunctions2_function" "tasks" {
  project     = var.project_id
  location    = var.region
  name        = local.task_function_name
  description = "Cloud Tasks target: submits queued jobs and checks their deadlines."
  labels      = local.labels

  build_config {
    runtime         = "python311"
    entry_point     = "on_task"
    service_account = google_service_account.build.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.tasks.email
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    available_memory                 = var.task_function_memory
    timeout_seconds                  = var.task_function_timeout_seconds
    max_instance_count               = var.task_max_instances
    max_instance_request_concurrency = 1
    all_traffic_on_latest_revision   = true
    environment_variables = merge(local.app_env, local.task_env, local.event_env, {
      WEBHOOK_URL             = google_cloudfunctions2_function.webhook.service_config[0].uri
      SIGNING_SERVICE_ACCOUNT = google_service_account.tasks.email
    })

    secret_environment_variables {
      key        = "PREDICTIONS_API_TOKEN"
      project_id = var.project_id
      secret     = google_secret_manager_secret.api_token.secret_id
      version    = "latest"
    }

    # NOTIFY_SECRET, only while notify_url is set: kind notify signs each delivery with it (secrets.tf, notify_secret_accessor).
    dynamic "secret_environment_variables" {
      for_each = google_secret_manager_secret.notify_secret
      content {
        key        = "NOTIFY_SECRET"
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret_id
        version    = "latest"
      }
    }
  }

  lifecycle {
    precondition {
      condition     = length("${local.task_function_name}-${data.google_project.this.number}") <= 63
      error_message = "Cloud Run gives a deterministic URL (TASK_HANDLER_URL) only to SERVICE-PROJECT_NUMBER labels of at most 63 characters: shorten name_prefix."
    }
  }

  depends_on = [
    google_project_iam_member.build,
    google_project_iam_member.build_gcf_buckets,
    google_storage_bucket_iam_member.build_source_viewer,
    google_secret_manager_secret_iam_member.api_token_accessor,
    google_service_account_iam_member.tasks_signs_as_itself,
    google_cloud_tasks_queue_iam_member.submit_enqueuer,
    google_cloud_tasks_queue_iam_member.deadline_enqueuer,
    google_cloud_tasks_queue_iam_member.submit_viewer,
    google_service_account_iam_member.enqueuers_act_as_tasks_invoker,
    google_secret_manager_secret_iam_member.notify_secret_accessor,
    google_pubsub_topic_iam_member.events_publisher,
    google_cloud_tasks_queue_iam_member.notify_enqueuer,
  ]
}

# Only the tasks' OIDC identity may invoke the task handler: no public invoker, and
# neither the runtime accounts nor the scheduler.
resource "google_cloud_run_service_iam_member" "tasks_invoker" {
  project  = var.project_id
  location = google_cloudfunctions2_function.tasks.location
  service  = google_cloudfunctions2_function.tasks.name
  role     = "roles/run.invoker"
  member   = google_service_account.tasks_invoker.member
}

# TASK_HANDLER_URL is computed (see local.task_handler_url); after the handler is
# deployed, its Cloud Run service must list that URL, or every task would miss it.
data "google_cloud_run_v2_service" "tasks" {
  project  = var.project_id
  location = google_cloudfunctions2_function.tasks.location
  name     = google_cloudfunctions2_function.tasks.name

  lifecycle {
    postcondition {
      condition     = try(contains(self.urls, local.task_handler_url), false)
      error_message = "The task handler's Cloud Run service does not serve TASK_HANDLER_URL (local.task_handler_url); tasks would not reach it."
    }
  }
}

# Reconciler: internal HTTP, called by Cloud Scheduler with an OIDC token. The safety
# net: it sweeps the open jobs, settles finished predictions and puts lost work back in
# the submission queue (it never creates predictions itself, so it signs nothing).
resource "google_cloudfunctions2_function" "reconcile" {
  project     = var.project_id
  location    = var.region
  name        = "${var.name_prefix}-reconcile"
  description = "Sweeps open jobs and requeues lost work; run by Cloud Scheduler."
  labels      = local.labels

  build_config {
    runtime         = "python311"
    entry_point     = "reconcile"
    service_account = google_service_account.build.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.reconcile.email
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    available_memory                 = var.reconcile_function_memory
    timeout_seconds                  = var.reconcile_function_timeout_seconds
    max_instance_count               = var.reconcile_max_instances
    max_instance_request_concurrency = 1
    all_traffic_on_latest_revision   = true
    # WEBHOOK_URL: bgremove/runtime.py builds the API client (GET, cancel) only with it.
    environment_variables = merge(local.app_env, local.task_env, local.event_env, {
      WEBHOOK_URL = google_cloudfunctions2_function.webhook.service_config[0].uri
    })

    secret_environment_variables {
      key        = "PREDICTIONS_API_TOKEN"
      project_id = var.project_id
      secret     = google_secret_manager_secret.api_token.secret_id
      version    = "latest"
    }

    # NOTIFY_SECRET, only while notify_url is set (secrets.tf, notify_secret_accessor).
    dynamic "secret_environment_variables" {
      for_each = google_secret_manager_secret.notify_secret
      content {
        key        = "NOTIFY_SECRET"
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret_id
        version    = "latest"
      }
    }
  }

  depends_on = [
    google_project_iam_member.build,
    google_project_iam_member.build_gcf_buckets,
    google_storage_bucket_iam_member.build_source_viewer,
    google_secret_manager_secret_iam_member.api_token_accessor,
    google_cloud_tasks_queue_iam_member.submit_enqueuer,
    google_cloud_tasks_queue_iam_member.deadline_enqueuer,
    google_cloud_tasks_queue_iam_member.submit_viewer,
    google_service_account_iam_member.enqueuers_act_as_tasks_invoker,
    google_secret_manager_secret_iam_member.notify_secret_accessor,
    google_pubsub_topic_iam_member.events_publisher,
    google_cloud_tasks_queue_iam_member.notify_enqueuer,
  ]
}

resource "google_cloud_run_service_iam_member" "reconcile_scheduler_invoker" {
  project  = var.project_id
  location = google_cloudfunctions2_function.reconcile.location
  service  = google_cloudfunctions2_function.reconcile.name
  role     = "roles/run.invoker"
  member   = google_service_account.scheduler.member
}

resource "google_cloud_scheduler_job" "reconcile" {
  project          = var.project_id
  region           = var.region
  name             = "${var.name_prefix}-reconcile"
  description      = "Runs the bgremove reconciler."
  schedule         = var.reconcile_schedule
  time_zone        = var.reconcile_time_zone
  attempt_deadline = "${var.reconcile_function_timeout_seconds + 30}s"

  # The next tick is the retry.
  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.reconcile.service_config[0].uri
    body        = base64encode("{}")
    headers = {
      "Content-Type" = "application/json"
    }

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = google_cloudfunctions2_function.reconcile.service_config[0].uri
    }
  }

  depends_on = [google_cloud_run_service_iam_member.reconcile_scheduler_invoker]
}
