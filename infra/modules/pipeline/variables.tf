# ---------------------------------------------------------------------------
# Project and naming
# ---------------------------------------------------------------------------

variable "project_id" {
  description = "Google Cloud project that holds the pipeline."
  type        = string
}

variable "region" {
  description = "Region of the functions, the scheduler job and the buckets (for example europe-west1)."
  type        = string
}

variable "name_prefix" {
  description = "Short per-environment prefix for functions, service accounts, secrets and the scheduler job (for example bgr-dev)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,14}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 4-16 characters of a-z, 0-9 and '-', starting with a letter (service account ids are limited to 30 characters)."
  }
}

variable "bucket_prefix" {
  description = "Prefix of the bucket names, which are global: defaults to \"<project_id>-<name_prefix>\"."
  type        = string
  default     = null
}

variable "labels" {
  description = "Labels added to every resource that takes labels."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------
# Buckets
# ---------------------------------------------------------------------------

variable "force_destroy" {
  description = "Let terraform destroy non-empty buckets (only for throw-away environments)."
  type        = bool
  default     = false
}

variable "deletion_protection" {
  description = "Protect the Secret Manager secrets from terraform destroy."
  type        = bool
  default     = true
}

variable "state_retention_days" {
  description = "Days after which state records (the state bucket) are deleted by a lifecycle rule."
  type        = number
  default     = 30

  validation {
    condition     = var.state_retention_days >= 1
    error_message = "state_retention_days must be at least 1."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days a noncurrent (overwritten or deleted) object version is kept in the versioned buckets."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days must be at least 1."
  }
}

variable "access_log_retention_days" {
  description = "Days the bucket access logs are kept."
  type        = number
  default     = 90
}

# ---------------------------------------------------------------------------
# Functions: sizing and scheduling
# ---------------------------------------------------------------------------

# Memory of the functions, from peak RSS measured at the largest image accepted (MAX_INPUT_PIXELS,
# 25 MP) in the functions themselves (`make bench`, figure 6; bench/RESULTS.md), Python 3.11,
# Pillow 12.3, pillow-heif 1.8.1, one request per instance (max_instance_request_concurrency = 1):
#
#   on_upload, preparing a 25 MP upload (turned upright / converted, README "Outputs"):
#     EXIF-rotated JPEG 264 MiB, HEIC 313 MiB, EXIF-rotated WebP 562 MiB (libwebp's own buffers);
#     an upload that needs nothing decoded stays near the idle 70 MiB.
#   on_prediction_webhook, writing one variant from a 25 MP cut-out of 52 MB (its PNG bytes stay in
#     memory while it renders): passthrough no more than idle (streamed; 116-143 MiB), png
#     colour/crop/canvas 280-361 MiB, jpeg 368 MiB, mask 363 MiB, white square jpeg 453 MiB,
#     transparent webp 662 MiB.
#
# 1 GiB holds the worst of each (562 and 662 MiB) with a third to spare, for the gunicorn master
# (~30 MiB) and outputs up to OUTPUT_MAX_BYTES (a 128 MiB PNG adds ~80 MiB to the webp peak);
# 512 MiB would not (a rotated 25 MP WebP upload would be killed). The next tier, 2 GiB, is not
# needed for memory but doubles the CPU (1 vCPU instead of 0.583): worth it when variants that
# re-encode PNG run at 20+ MP, which take 14 s here at 25 MP on a full core.

variable "upload_function_memory" {
  description = "Memory of the on_upload function (it decodes uploads that must be turned upright or converted; see the measurements above)."
  type        = string
  default     = "1Gi"
}

variable "webhook_function_memory" {
  description = "Memory of the webhook function (it renders the output variants of one 25 MP cut-out at most; see the measurements above)."
  type        = string
  default     = "1Gi"
}

variable "reconcile_function_memory" {
  description = "Memory of the reconcile function (it settles and resubmits jobs one at a time with the same code as both other functions, so it needs the larger of their peaks)."
  type        = string
  default     = "1Gi"
}

variable "task_function_memory" {
  description = "Memory of the task handler (on_task): it inlines small inputs as data URLs and its deadline checks stream finished outputs into the processed bucket, like the reconciler."
  type        = string
  default     = "1Gi"
}

variable "delete_function_memory" {
  description = "Memory of the on_delete functions (deleted and archived): metadata reads, a few deletes and record writes, no image decoded; 512Mi leaves room above the ~70 MiB idle and gives 1/3 vCPU for the cold start (imports)."
  type        = string
  default     = "512Mi"
}

variable "upload_function_timeout_seconds" {
  description = "Timeout of the on_upload function (event functions: at most 540)."
  type        = number
  default     = 120

  validation {
    condition     = var.upload_function_timeout_seconds >= 1 && var.upload_function_timeout_seconds <= 540
    error_message = "An event-driven function times out after at most 540 seconds."
  }
}

variable "delete_function_timeout_seconds" {
  description = "Timeout of the on_delete functions (event functions: at most 540)."
  type        = number
  default     = 120

  validation {
    condition     = var.delete_function_timeout_seconds >= 1 && var.delete_function_timeout_seconds <= 540
    error_message = "An event-driven function times out after at most 540 seconds."
  }
}

variable "webhook_function_timeout_seconds" {
  description = "Timeout of the webhook function."
  type        = number
  default     = 300
}

variable "reconcile_function_timeout_seconds" {
  description = "Timeout of the reconcile function; the scheduler waits 30 s longer."
  type        = number
  default     = 540

  validation {
    condition     = var.reconcile_function_timeout_seconds >= 15 && var.reconcile_function_timeout_seconds <= 1770
    error_message = "Cloud Scheduler waits at most 1800 s, so the reconcile timeout must be 15-1770 seconds."
  }
}

variable "task_function_timeout_seconds" {
  description = "Timeout of the task handler (on_task). At most the 60 s dispatch deadline bgremove/tasks.py sets on every task, so Cloud Tasks never retries an attempt that is still running; one attempt makes one API call (HTTP_TIMEOUT_SECONDS) plus a few storage calls."
  type        = number
  default     = 55

  validation {
    condition     = var.task_function_timeout_seconds >= 15 && var.task_function_timeout_seconds <= 60
    error_message = "task_function_timeout_seconds must be 15-60: the tasks' dispatch deadline is 60 seconds."
  }
}

variable "upload_max_instances" {
  description = "Upper bound on on_upload instances: bounds the fan-out of a bulk upload."
  type        = number
  default     = 10
}

variable "delete_max_instances" {
  description = "Upper bound on instances of each on_delete function: bounds the fan-out of a bulk delete (each event is a few storage calls)."
  type        = number
  default     = 10
}

variable "webhook_max_instances" {
  description = "Upper bound on webhook instances."
  type        = number
  default     = 20
}

variable "task_max_instances" {
  description = "Upper bound on task handler instances (one request each). Keep it at least submit_queue_max_concurrent_dispatches: beyond it Cloud Run answers 429 and the queue backs off. In steady state about rate x request time are busy (10/s x ~1 s)."
  type        = number
  default     = 100

  validation {
    condition     = var.task_max_instances >= 1
    error_message = "task_max_instances must be at least 1."
  }
}

variable "reconcile_max_instances" {
  description = "Upper bound on reconcile instances (one run at a time is enough)."
  type        = number
  default     = 1
}

variable "reconcile_schedule" {
  description = "Cron schedule of the reconcile job, the safety-net sweep over open jobs (every 10 minutes by default)."
  type        = string
  default     = "*/10 * * * *"
}

variable "reconcile_time_zone" {
  description = "Time zone of reconcile_schedule."
  type        = string
  default     = "Etc/UTC"
}

# ---------------------------------------------------------------------------
# Cloud Tasks queues (tasks.tf). Not application settings: the code only gets the
# queues' paths (SUBMIT_QUEUE, DEADLINE_QUEUE). Limits apply to retries too.
#
# What bounds a queued task: it is retried until BOTH submit_queue_max_attempts and
# submit_queue_max_retry_duration_seconds are spent, and never lives longer than Cloud
# Tasks' 31-day retention. Then Cloud Tasks deletes it; the job stays `queued`; the
# sweep finds the task gone after QUEUED_CHECK_SECONDS and enqueues a new one, logging
# "reconcile: queued again (its submission task is gone)".
# ---------------------------------------------------------------------------

variable "submit_queue_max_dispatches_per_second" {
  description = "Submission queue: tasks dispatched per second, i.e. prediction creates per second. Default 10 = the predictions API's 600 creates a minute; an account with little credit (6 a minute) needs 0.1. Cloud Tasks allows at most 500."
  type        = number
  default     = 10

  validation {
    condition     = var.submit_queue_max_dispatches_per_second > 0 && var.submit_queue_max_dispatches_per_second <= 500
    error_message = "submit_queue_max_dispatches_per_second must be more than 0 and at most 500."
  }
}

variable "submit_queue_max_concurrent_dispatches" {
  description = "Submission queue: tasks in flight at once (each one API create). Default 100 = the rate x the 10 s HTTP timeout, so a slow API cannot pile up more. Cloud Tasks allows at most 5000."
  type        = number
  default     = 100

  validation {
    condition     = var.submit_queue_max_concurrent_dispatches >= 1 && var.submit_queue_max_concurrent_dispatches <= 5000
    error_message = "submit_queue_max_concurrent_dispatches must be 1-5000."
  }
}

variable "submit_queue_max_attempts" {
  description = "Submission queue: attempts per task, the first included; -1 (default) = unlimited, so submit_queue_max_retry_duration_seconds bounds a task. A task stops only when both are spent."
  type        = number
  default     = -1

  validation {
    condition     = var.submit_queue_max_attempts == -1 || var.submit_queue_max_attempts >= 1
    error_message = "submit_queue_max_attempts must be -1 (unlimited) or at least 1."
  }
}

variable "submit_queue_max_retry_duration_seconds" {
  description = "Submission queue: how long a failing task keeps being retried, counted from its first attempt (waiting its turn does not count: Cloud Tasks' 31-day retention bounds that); default 604800 (7 days) of 429s or outages. 0 = unlimited, leaving only the 31-day retention. When it runs out the task is deleted, the job stays queued, and the sweep enqueues a new task after QUEUED_CHECK_SECONDS, logging \"reconcile: queued again (its submission task is gone)\"."
  type        = number
  default     = 604800

  validation {
    condition     = var.submit_queue_max_retry_duration_seconds >= 0 && var.submit_queue_max_retry_duration_seconds <= 2678400
    error_message = "submit_queue_max_retry_duration_seconds must be 0-2678400 (Cloud Tasks keeps a task 31 days at most)."
  }
}

variable "submit_queue_min_backoff_seconds" {
  description = "Submission queue: wait before the first retry of a task (429, 503 or a timeout from on_task); default 10."
  type        = number
  default     = 10

  validation {
    condition     = var.submit_queue_min_backoff_seconds >= 0
    error_message = "submit_queue_min_backoff_seconds must not be negative."
  }
}

variable "submit_queue_max_backoff_seconds" {
  description = "Submission queue: longest wait between retries of a task; default 600."
  type        = number
  default     = 600

  validation {
    condition     = var.submit_queue_max_backoff_seconds >= 1
    error_message = "submit_queue_max_backoff_seconds must be at least 1."
  }
}

variable "submit_queue_max_doublings" {
  description = "Submission queue: times the backoff doubles before it grows linearly up to the maximum; default 5: with the default backoffs, retries wait 10, 20, 40, 80, 160, 320 s, then 600 s."
  type        = number
  default     = 5

  validation {
    condition     = var.submit_queue_max_doublings >= 0 && var.submit_queue_max_doublings <= 16
    error_message = "submit_queue_max_doublings must be 0-16."
  }
}

variable "deadline_queue_max_dispatches_per_second" {
  description = "Deadline queue: deadline checks dispatched per second (each reads one prediction: the API's other-calls limit is 3000 a minute = 50/s, the default). Checks are delayed tasks due when their job is, so they arrive at about the submission rate."
  type        = number
  default     = 50

  validation {
    condition     = var.deadline_queue_max_dispatches_per_second > 0 && var.deadline_queue_max_dispatches_per_second <= 500
    error_message = "deadline_queue_max_dispatches_per_second must be more than 0 and at most 500."
  }
}

variable "deadline_queue_max_concurrent_dispatches" {
  description = "Deadline queue: checks in flight at once; default 50."
  type        = number
  default     = 50

  validation {
    condition     = var.deadline_queue_max_concurrent_dispatches >= 1 && var.deadline_queue_max_concurrent_dispatches <= 5000
    error_message = "deadline_queue_max_concurrent_dispatches must be 1-5000."
  }
}

variable "deadline_queue_max_attempts" {
  description = "Deadline queue: attempts per check, the first included; -1 (default) = unlimited, bounded by deadline_queue_max_retry_duration_seconds."
  type        = number
  default     = -1

  validation {
    condition     = var.deadline_queue_max_attempts == -1 || var.deadline_queue_max_attempts >= 1
    error_message = "deadline_queue_max_attempts must be -1 (unlimited) or at least 1."
  }
}

variable "deadline_queue_max_retry_duration_seconds" {
  description = "Deadline queue: how long a check is retried; default 604800 (7 days). A check that runs out is covered by the sweep, which looks at every overdue open job."
  type        = number
  default     = 604800

  validation {
    condition     = var.deadline_queue_max_retry_duration_seconds >= 0 && var.deadline_queue_max_retry_duration_seconds <= 2678400
    error_message = "deadline_queue_max_retry_duration_seconds must be 0-2678400 (Cloud Tasks keeps a task 31 days at most)."
  }
}

variable "deadline_queue_min_backoff_seconds" {
  description = "Deadline queue: wait before the first retry of a check; default 10."
  type        = number
  default     = 10

  validation {
    condition     = var.deadline_queue_min_backoff_seconds >= 0
    error_message = "deadline_queue_min_backoff_seconds must not be negative."
  }
}

variable "deadline_queue_max_backoff_seconds" {
  description = "Deadline queue: longest wait between retries of a check; default 600."
  type        = number
  default     = 600

  validation {
    condition     = var.deadline_queue_max_backoff_seconds >= 1
    error_message = "deadline_queue_max_backoff_seconds must be at least 1."
  }
}

variable "deadline_queue_max_doublings" {
  description = "Deadline queue: times the backoff doubles before it grows linearly; default 5."
  type        = number
  default     = 5

  validation {
    condition     = var.deadline_queue_max_doublings >= 0 && var.deadline_queue_max_doublings <= 16
    error_message = "deadline_queue_max_doublings must be 0-16."
  }
}

# Notify queue (tasks.tf; only while notify_url is set): retries for a customer endpoint that
# is down for minutes or hours. With the defaults a delivery is retried after 10, 20, 40, 80,
# 160 s, then every 300 s, for 3 days; a receiver back from an outage gets it within about 5
# minutes.

variable "notify_queue_max_dispatches_per_second" {
  description = "Notify queue: deliveries to NOTIFY_URL per second; default 20 (twice the submission rate, so a backlog left by an outage drains while new job ends keep coming)."
  type        = number
  default     = 20

  validation {
    condition     = var.notify_queue_max_dispatches_per_second > 0 && var.notify_queue_max_dispatches_per_second <= 500
    error_message = "notify_queue_max_dispatches_per_second must be more than 0 and at most 500."
  }
}

variable "notify_queue_max_concurrent_dispatches" {
  description = "Notify queue: deliveries in flight at once; default 20. A receiver that hangs holds this many task-handler instances, each for HTTP_TIMEOUT_SECONDS, so keep it well below task_max_instances."
  type        = number
  default     = 20

  validation {
    condition     = var.notify_queue_max_concurrent_dispatches >= 1 && var.notify_queue_max_concurrent_dispatches <= 5000
    error_message = "notify_queue_max_concurrent_dispatches must be 1-5000."
  }
}

variable "notify_queue_max_attempts" {
  description = "Notify queue: attempts per delivery, the first included; -1 (default) = unlimited, bounded by notify_queue_max_retry_duration_seconds."
  type        = number
  default     = -1

  validation {
    condition     = var.notify_queue_max_attempts == -1 || var.notify_queue_max_attempts >= 1
    error_message = "notify_queue_max_attempts must be -1 (unlimited) or at least 1."
  }
}

variable "notify_queue_max_retry_duration_seconds" {
  description = "Notify queue: how long a delivery NOTIFY_URL does not take (no answer, or not 2xx) is retried, from its first attempt; default 259200 (3 days: an endpoint down over a weekend still gets every event). Then Cloud Tasks drops the task and that delivery is not made again; the event stays on the events topic and in the job record."
  type        = number
  default     = 259200

  validation {
    condition     = var.notify_queue_max_retry_duration_seconds >= 0 && var.notify_queue_max_retry_duration_seconds <= 2678400
    error_message = "notify_queue_max_retry_duration_seconds must be 0-2678400 (Cloud Tasks keeps a task 31 days at most)."
  }
}

variable "notify_queue_min_backoff_seconds" {
  description = "Notify queue: wait before the first retry of a delivery; default 10."
  type        = number
  default     = 10

  validation {
    condition     = var.notify_queue_min_backoff_seconds >= 0
    error_message = "notify_queue_min_backoff_seconds must not be negative."
  }
}

variable "notify_queue_max_backoff_seconds" {
  description = "Notify queue: longest wait between retries of a delivery; default 300, so a receiver back from an outage gets its deliveries within about 5 minutes."
  type        = number
  default     = 300

  validation {
    condition     = var.notify_queue_max_backoff_seconds >= 1
    error_message = "notify_queue_max_backoff_seconds must be at least 1."
  }
}

variable "notify_queue_max_doublings" {
  description = "Notify queue: times the backoff doubles before it grows linearly up to the maximum; default 5: retries wait 10, 20, 40, 80, 160 s, then 300 s."
  type        = number
  default     = 5

  validation {
    condition     = var.notify_queue_max_doublings >= 0 && var.notify_queue_max_doublings <= 16
    error_message = "notify_queue_max_doublings must be 0-16."
  }
}

variable "queue_log_sampling_ratio" {
  description = "Fraction of task dispatch attempts the queues write to Cloud Logging (0-1); default 1 (every attempt: a 10,000-image drop is about 10,000 entries)."
  type        = number
  default     = 1

  validation {
    condition     = var.queue_log_sampling_ratio >= 0 && var.queue_log_sampling_ratio <= 1
    error_message = "queue_log_sampling_ratio must be 0-1."
  }
}

# ---------------------------------------------------------------------------
# Application settings. Each one is the environment variable of the same name
# in upper case, read by bgremove/config.py, with the same default.
# ---------------------------------------------------------------------------

variable "predictions_base_url" {
  description = "PREDICTIONS_BASE_URL: base URL of the predictions API."
  type        = string
  default     = "https://api.replicate.com/v1"
}

variable "model_version" {
  description = "MODEL_VERSION: 64-hex version id of the background-removal model."
  type        = string
  default     = "95fcc2a26d3899cd6c2691c900465aaeff466285a65c14638cc5f36f34befaf1"
}

variable "webhook_tolerance_seconds" {
  description = "WEBHOOK_TOLERANCE_SECONDS: accepted clock skew of webhook timestamps."
  type        = number
  default     = 300

  validation {
    condition     = var.webhook_tolerance_seconds >= 1
    error_message = "webhook_tolerance_seconds must be at least 1."
  }
}

variable "webhook_max_body_bytes" {
  description = "WEBHOOK_MAX_BODY_BYTES: largest webhook body accepted; must hold the echo of the largest data-URL input (checked at start)."
  type        = number
  default     = 1048576

  validation {
    condition     = var.webhook_max_body_bytes >= 1024
    error_message = "webhook_max_body_bytes must be at least 1024."
  }
}

variable "max_input_pixels" {
  description = "MAX_INPUT_PIXELS: uploads whose header says more pixels end in a failure record before any prediction."
  type        = number
  default     = 25000000

  validation {
    condition     = var.max_input_pixels >= 1
    error_message = "max_input_pixels must be at least 1."
  }
}

variable "allowed_content_types" {
  description = "ALLOWED_CONTENT_TYPES: comma-separated content types that are processed (HEIC/HEIF/AVIF are converted before the model sees them)."
  type        = string
  default     = "image/jpeg,image/png,image/webp,image/heic,image/heif,image/avif"
}

variable "max_upload_bytes" {
  description = "MAX_UPLOAD_BYTES: larger uploads are skipped."
  type        = number
  default     = 26214400

  validation {
    condition     = var.max_upload_bytes >= 1
    error_message = "max_upload_bytes must be at least 1."
  }
}

variable "include_prefixes" {
  description = "INCLUDE_PREFIXES: comma-separated object name prefixes to process (empty: all)."
  type        = string
  default     = ""
}

variable "exclude_prefixes" {
  description = "EXCLUDE_PREFIXES: comma-separated object name prefixes to skip."
  type        = string
  default     = ""
}

variable "output_prefix" {
  description = "OUTPUT_PREFIX: prefix of the outputs in the processed bucket."
  type        = string
  default     = ""
}

variable "input_mode" {
  description = "INPUT_MODE: how the image is handed to the model: auto, signed_url or data_url."
  type        = string
  default     = "auto"

  validation {
    condition     = contains(["auto", "signed_url", "data_url"], var.input_mode)
    error_message = "input_mode must be auto, signed_url or data_url."
  }
}

variable "data_url_max_bytes" {
  description = "DATA_URL_MAX_BYTES: largest image sent inline as a data URL in auto mode."
  type        = number
  default     = 262144

  validation {
    condition     = var.data_url_max_bytes >= 0
    error_message = "data_url_max_bytes must not be negative."
  }
}

variable "signed_url_ttl_seconds" {
  description = "SIGNED_URL_TTL_SECONDS: lifetime of the V4 signed URL given to the model."
  type        = number
  default     = 3600

  validation {
    condition     = var.signed_url_ttl_seconds >= 60 && var.signed_url_ttl_seconds <= 604800
    error_message = "signed_url_ttl_seconds must be 60-604800."
  }
}

variable "cancel_after" {
  description = "CANCEL_AFTER: prediction deadline sent as Cancel-After (for example 15m, at least 5s; empty: none)."
  type        = string
  default     = "15m"

  validation {
    condition     = can(regex("^(?:[0-9]+(?:\\.[0-9]+)?[hms])*$", var.cancel_after))
    error_message = "cancel_after must be a duration such as 30s, 5m or 1h30m, or empty."
  }
}

variable "output_allowed_hosts" {
  description = "OUTPUT_ALLOWED_HOSTS: comma-separated hosts (and their subdomains) outputs may be downloaded from."
  type        = string
  default     = "replicate.delivery"
}

variable "output_max_bytes" {
  description = "OUTPUT_MAX_BYTES: largest model output downloaded."
  type        = number
  default     = 134217728

  validation {
    condition     = var.output_max_bytes >= 1
    error_message = "output_max_bytes must be at least 1."
  }
}

variable "http_timeout_seconds" {
  description = "HTTP_TIMEOUT_SECONDS: timeout of one call to the predictions API."
  type        = number
  default     = 10.0

  validation {
    condition     = var.http_timeout_seconds >= 0.1
    error_message = "http_timeout_seconds must be at least 0.1."
  }
}

variable "storage_retry_seconds" {
  description = "STORAGE_RETRY_SECONDS: how long the storage client retries a transient error before the request is retried later."
  type        = number
  default     = 20

  validation {
    condition     = var.storage_retry_seconds >= 0
    error_message = "storage_retry_seconds must not be negative."
  }
}

variable "api_max_attempts" {
  description = "API_MAX_ATTEMPTS: attempts per predictions API call within one function run. Default 1: no sleeping inside billed functions; a throttled or failed create is the task's retry, paced by the submission queue."
  type        = number
  default     = 1

  validation {
    condition     = var.api_max_attempts >= 1 && var.api_max_attempts <= 20
    error_message = "api_max_attempts must be 1-20."
  }
}

variable "api_backoff_seconds" {
  description = "API_BACKOFF_SECONDS: first backoff between attempts."
  type        = number
  default     = 0.5
}

variable "api_backoff_max_seconds" {
  description = "API_BACKOFF_MAX_SECONDS: longest backoff between attempts."
  type        = number
  default     = 8.0
}

variable "claim_ttl_seconds" {
  description = "CLAIM_TTL_SECONDS: how long a claim on an upload blocks other deliveries of its event."
  type        = number
  default     = 300
}

variable "max_event_age_seconds" {
  description = "MAX_EVENT_AGE_SECONDS: a storage event older than this when it is delivered ends as an event_too_old failure instead of being admitted. It bounds only the event's own redelivery: once admitted, the submission queue's retry settings bound the work."
  type        = number
  default     = 21600
}

variable "max_prediction_attempts" {
  description = "MAX_PREDICTION_ATTEMPTS: predictions started per upload before it is marked failed."
  type        = number
  default     = 3

  validation {
    condition     = var.max_prediction_attempts >= 1 && var.max_prediction_attempts <= 20
    error_message = "max_prediction_attempts must be 1-20."
  }
}

variable "queued_check_seconds" {
  description = "QUEUED_CHECK_SECONDS: how long a queued job waits before a check that its submission task still exists; when it is gone (retries spent, queue purged), the sweep enqueues a new one. Default 3600; at least 60."
  type        = number
  default     = 3600

  validation {
    condition     = var.queued_check_seconds >= 60
    error_message = "queued_check_seconds must be at least 60."
  }
}

variable "reconcile_after_seconds" {
  description = "RECONCILE_AFTER_SECONDS: age after which an unfinished record is looked at by reconcile."
  type        = number
  default     = 900
}

variable "first_check_seconds" {
  description = "FIRST_CHECK_SECONDS: the first deadline check after a prediction is created (the model's time plus the API's minute of webhook retries); later checks every reconcile_after_seconds."
  type        = number
  default     = 180

  validation {
    condition     = var.first_check_seconds >= 1
    error_message = "first_check_seconds must be at least 1."
  }
}

variable "result_delivery" {
  description = "RESULT_DELIVERY: where results come from: auto (a webhook, and polling at the model's pace anyway), webhook (the webhook; checks after first_check_seconds), poll (no webhook URL sent)."
  type        = string
  default     = "auto"

  validation {
    condition     = contains(["auto", "webhook", "poll"], var.result_delivery)
    error_message = "result_delivery must be auto, webhook or poll."
  }
}

variable "poll_first_check_seconds" {
  description = "POLL_FIRST_CHECK_SECONDS: the earliest first poll after a prediction is created (auto, poll); polling starts at the model's learned pace, backing off x2."
  type        = number
  default     = 5

  validation {
    condition     = var.poll_first_check_seconds >= 1
    error_message = "poll_first_check_seconds must be at least 1."
  }
}

variable "prefer_wait_seconds" {
  description = "PREFER_WAIT_SECONDS: ask for a synchronous create answer (Prefer: wait=N), settled at once; 0 never."
  type        = number
  default     = 0

  validation {
    condition     = var.prefer_wait_seconds >= 0 && var.prefer_wait_seconds <= 60
    error_message = "prefer_wait_seconds must be from 0 to 60."
  }
}

variable "daily_prediction_budget" {
  description = "DAILY_PREDICTION_BUDGET: predictions created per budget day at most; when spent, submissions are held in the submissions queue (not failed) until the day turns or the budget is raised. 0 = no limit."
  type        = number
  default     = 0

  validation {
    condition     = var.daily_prediction_budget >= 0 && floor(var.daily_prediction_budget) == var.daily_prediction_budget
    error_message = "daily_prediction_budget must be a whole number, at least 0."
  }
}

variable "monthly_prediction_budget" {
  description = "MONTHLY_PREDICTION_BUDGET: predictions created per budget month at most; held as for the daily budget. 0 = no limit."
  type        = number
  default     = 0

  validation {
    condition     = var.monthly_prediction_budget >= 0 && floor(var.monthly_prediction_budget) == var.monthly_prediction_budget
    error_message = "monthly_prediction_budget must be a whole number, at least 0."
  }
}

variable "budget_utc_offset_hours" {
  description = "BUDGET_UTC_OFFSET_HOURS: the budget's days and months begin at midnight in this UTC offset; 0 = UTC."
  type        = number
  default     = 0

  validation {
    condition     = var.budget_utc_offset_hours >= -12 && var.budget_utc_offset_hours <= 14 && floor(var.budget_utc_offset_hours) == var.budget_utc_offset_hours
    error_message = "budget_utc_offset_hours must be a whole number from -12 to 14."
  }
}

variable "reconcile_batch_size" {
  description = "RECONCILE_BATCH_SIZE: records handled per reconcile run."
  type        = number
  default     = 100

  validation {
    condition     = var.reconcile_batch_size >= 1 && var.reconcile_batch_size <= 10000
    error_message = "reconcile_batch_size must be 1-10000."
  }
}

variable "log_level" {
  description = "LOG_LEVEL: DEBUG, INFO, WARNING or ERROR."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], upper(var.log_level))
    error_message = "log_level must be DEBUG, INFO, WARNING or ERROR."
  }
}

variable "output_variants" {
  description = "OUTPUT_VARIANTS: JSON array of the output variants written per upload (README, Outputs); empty: the model's PNG as it is."
  type        = string
  default     = ""

  validation {
    # The shape only (a non-empty JSON array); each field is checked by bgremove/config.py at start.
    condition     = trimspace(var.output_variants) == "" || can(jsondecode(var.output_variants)[0])
    error_message = "output_variants must be empty or a non-empty JSON array of variant objects."
  }
}

variable "cache_control" {
  description = "CACHE_CONTROL: Cache-Control of every output; empty (default): each output copies its upload's Cache-Control."
  type        = string
  default     = ""
}

variable "delete_outputs" {
  description = "DELETE_OUTPUTS: a deleted original takes the cut-outs made from that generation with it (on_delete); false keeps them. An open job of a deleted upload ends removed either way."
  type        = bool
  default     = true
}

variable "output_url_base" {
  description = "OUTPUT_URL_BASE: base of the output URLs the completion events give ({base}/{bucket}/{name}); for example a CDN in front of the processed bucket."
  type        = string
  default     = "https://storage.googleapis.com"

  validation {
    condition     = can(regex("^https?://[^/?#]+", var.output_url_base))
    error_message = "output_url_base must be an http(s) URL."
  }
}

variable "notify_url" {
  description = "NOTIFY_URL: a customer endpoint that also gets each completion event, as a Standard Webhooks-signed POST made by on_task from a task on the notify queue. Empty (default): off. When set, the module also creates the notify queue, its grants and the NOTIFY_SECRET secret (whose value is added out of band before the deploy, see infra/README.md)."
  type        = string
  default     = ""

  validation {
    condition     = var.notify_url == "" || can(regex("^https?://[^/?#]+", var.notify_url))
    error_message = "notify_url must be empty or an http(s) URL."
  }
}

# ---------------------------------------------------------------------------
# Budget counters and monitoring (monitoring.tf; README, "Alerts and dashboard")
# ---------------------------------------------------------------------------

variable "budget_counter_retention_days" {
  description = "Days after which the spend budget's counters (budget/ in the state bucket) are deleted; at least 32, so a month's counters outlive their month. The state_retention_days rule deletes them too, when it is shorter."
  type        = number
  default     = 40

  validation {
    condition     = var.budget_counter_retention_days >= 32 && floor(var.budget_counter_retention_days) == var.budget_counter_retention_days
    error_message = "budget_counter_retention_days must be a whole number, at least 32."
  }
}

variable "alert_notification_channels" {
  description = "Existing Cloud Monitoring notification channels (ids: projects/P/notificationChannels/N) every alert policy notifies; empty: the alerts open incidents in the console only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for channel in var.alert_notification_channels : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", channel))])
    error_message = "alert_notification_channels must be ids of the form projects/PROJECT/notificationChannels/ID."
  }
}

variable "alerts_enabled" {
  description = "Whether the alert policies are switched on (false keeps them, disabled)."
  type        = bool
  default     = true
}

variable "alert_failure_share" {
  description = "Alert when more than this share of the jobs that ended in 15 minutes failed (0.1 = 10%)."
  type        = number
  default     = 0.1

  validation {
    condition     = var.alert_failure_share > 0 && var.alert_failure_share < 1
    error_message = "alert_failure_share must be between 0 and 1 (exclusive)."
  }
}

variable "alert_failure_min_jobs" {
  description = "The failure-share alert also needs at least this many failed jobs in the 15 minutes (one failure of two jobs is no incident)."
  type        = number
  default     = 5

  validation {
    condition     = var.alert_failure_min_jobs >= 1 && floor(var.alert_failure_min_jobs) == var.alert_failure_min_jobs
    error_message = "alert_failure_min_jobs must be a whole number, at least 1."
  }
}

variable "alert_queue_age_seconds" {
  description = "Alert when submissions dispatched in 5 minutes had waited longer than this since admission (99th percentile). Exact on a bound of the queue-age buckets (monitoring.tf)."
  type        = number
  default     = 3600

  validation {
    condition     = var.alert_queue_age_seconds >= 60
    error_message = "alert_queue_age_seconds must be at least 60."
  }
}

variable "alert_unauthorized_webhooks_per_5m" {
  description = "Alert when more webhook deliveries than this fail signature verification in 5 minutes."
  type        = number
  default     = 20

  validation {
    condition     = var.alert_unauthorized_webhooks_per_5m >= 0 && floor(var.alert_unauthorized_webhooks_per_5m) == var.alert_unauthorized_webhooks_per_5m
    error_message = "alert_unauthorized_webhooks_per_5m must be a whole number, at least 0."
  }
}

variable "alert_5xx_per_5m" {
  description = "Alert when one function answers more requests than this with a 5xx in 5 minutes (Cloud Run's request count)."
  type        = number
  default     = 10

  validation {
    condition     = var.alert_5xx_per_5m >= 0 && floor(var.alert_5xx_per_5m) == var.alert_5xx_per_5m
    error_message = "alert_5xx_per_5m must be a whole number, at least 0."
  }
}
