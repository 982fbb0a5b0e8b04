locals {
  bucket_prefix = coalesce(var.bucket_prefix, "${var.project_id}-${var.name_prefix}")
  labels        = merge({ app = "bgremove" }, var.labels)

  # Application settings shared by every function: the environment variables read by
  # bgremove/config.py. Per-function additions (local.task_env, local.event_env,
  # WEBHOOK_URL, SIGNING_SERVICE_ACCOUNT) and the secrets are set on each function.
  app_env = {
    UPLOAD_BUCKET             = google_storage_bucket.uploads.name
    PROCESSED_BUCKET          = google_storage_bucket.processed.name
    STATE_BUCKET              = google_storage_bucket.state.name
    PREDICTIONS_BASE_URL      = var.predictions_base_url
    MODEL_VERSION             = var.model_version
    WEBHOOK_TOLERANCE_SECONDS = var.webhook_tolerance_seconds
    WEBHOOK_MAX_BODY_BYTES    = var.webhook_max_body_bytes
    MAX_INPUT_PIXELS          = var.max_input_pixels
    ALLOWED_CONTENT_TYPES     = var.allowed_content_types
    MAX_UPLOAD_BYTES          = var.max_upload_bytes
    INCLUDE_PREFIXES          = var.include_prefixes
    EXCLUDE_PREFIXES          = var.exclude_prefixes
    OUTPUT_PREFIX             = var.output_prefix
    INPUT_MODE                = var.input_mode
    DATA_URL_MAX_BYTES        = var.data_url_max_bytes
    SIGNED_URL_TTL_SECONDS    = var.signed_url_ttl_seconds
    CANCEL_AFTER              = var.cancel_after
    OUTPUT_ALLOWED_HOSTS      = var.output_allowed_hosts
    OUTPUT_MAX_BYTES          = var.output_max_bytes
    HTTP_TIMEOUT_SECONDS      = var.http_timeout_seconds
    STORAGE_RETRY_SECONDS     = var.storage_retry_seconds
    API_MAX_ATTEMPTS          = var.api_max_attempts
    API_BACKOFF_SECONDS       = var.api_backoff_seconds
    API_BACKOFF_MAX_SECONDS   = var.api_backoff_max_seconds
    CLAIM_TTL_SECONDS         = var.claim_ttl_seconds
    MAX_EVENT_AGE_SECONDS     = var.max_event_age_seconds
    MAX_PREDICTION_ATTEMPTS   = var.max_prediction_attempts
    RECONCILE_AFTER_SECONDS   = var.reconcile_after_seconds
    FIRST_CHECK_SECONDS       = var.first_check_seconds
    RECONCILE_BATCH_SIZE      = var.reconcile_batch_size
    LOG_LEVEL                 = var.log_level
    OUTPUT_VARIANTS           = var.output_variants
    QUEUED_CHECK_SECONDS      = var.queued_check_seconds
    CACHE_CONTROL             = var.cache_control
    DELETE_OUTPUTS            = var.delete_outputs
    OUTPUT_URL_BASE           = var.output_url_base
    NOTIFY_URL                = var.notify_url
    RESULT_DELIVERY           = var.result_delivery
    POLL_FIRST_CHECK_SECONDS  = var.poll_first_check_seconds
    PREFER_WAIT_SECONDS       = var.prefer_wait_seconds
    DAILY_PREDICTION_BUDGET   = var.daily_prediction_budget
    MONTHLY_PREDICTION_BUDGET = var.monthly_prediction_budget
    BUDGET_UTC_OFFSET_HOURS   = var.budget_utc_offset_hours
  }

  # The task handler (entry point on_task) is named here because its URL must be known
  # before it exists: on_task enqueues tasks to itself (deadline checks, requeues), so
  # TASK_HANDLER_URL cannot be its own service_config[0].uri (a dependency cycle). Cloud
  # Run's deterministic URL, https://SERVICE-PROJECT_NUMBER.REGION.run.app, is a *.run.app
  # URL: Cloud Run accepts it as the OIDC audience, and Cloud Tasks requests to it count as
  # internal traffic (ALLOW_INTERNAL_ONLY ingress). data.google_cloud_run_v2_service.tasks
  # checks after deployment that the service really serves it.
  task_function_name = "${var.name_prefix}-tasks"
  task_handler_url   = "https://${local.task_function_name}-${data.google_project.this.number}.${var.region}.run.app"

  # What every function that enqueues tasks needs (bgremove/runtime.py task_queue): the two
  # queues (full paths), the handler's URL and the account whose OIDC token the tasks carry.
  task_env = {
    SUBMIT_QUEUE          = google_cloud_tasks_queue.submit.id
    DEADLINE_QUEUE        = google_cloud_tasks_queue.deadline.id
    TASK_HANDLER_URL      = local.task_handler_url
    TASKS_SERVICE_ACCOUNT = google_service_account.tasks_invoker.email
  }

  # Completion events (bgremove/events.py). Every function ends jobs (admission failures,
  # submissions, webhooks, deadline checks and the sweep, deletions), and the store announces
  # each end: it publishes one CloudEvent to EVENTS_TOPIC and, with NOTIFY_URL set, enqueues its
  # notification on NOTIFY_QUEUE (a task for on_task, made through runtime.task_queue, which
  # wants local.task_env too). These are the accounts that announce.
  announcers = {
    upload    = google_service_account.upload.member
    tasks     = google_service_account.tasks.member
    webhook   = google_service_account.webhook.member
    reconcile = google_service_account.reconcile.member
    delete    = google_service_account.delete.member
  }

  # NOTIFY_URL is the switch: the notify queue, its grants and the NOTIFY_SECRET secret exist
  # only while it is set (config.py requires NOTIFY_SECRET and NOTIFY_QUEUE with it, and
  # nothing reads them without it).
  notify_enabled = var.notify_url != ""

  event_env = {
    EVENTS_TOPIC = google_pubsub_topic.events.id # projects/P/topics/T, as config.py wants
    NOTIFY_QUEUE = local.notify_enabled ? google_cloud_tasks_queue.notify[0].id : ""
  }
}

# The project number, for the task handler's deterministic URL (Cloud Resource Manager).
data "google_project" "this" {
  project_id = var.project_id
  depends_on = [google_project_service.enabled]
}

# ---------------------------------------------------------------------------
# APIs
# ---------------------------------------------------------------------------

resource "google_project_service" "enabled" {
  for_each = toset([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "cloudtasks.googleapis.com",
    "eventarc.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])

  project                    = var.project_id
  service                    = each.value
  disable_on_destroy         = false
  disable_dependent_services = false
}
