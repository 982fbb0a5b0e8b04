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

variable "upload_function_timeout_seconds" {
  description = "Timeout of the on_upload function (event functions: at most 540)."
  type        = number
  default     = 120

  validation {
    condition     = var.upload_function_timeout_seconds >= 1 && var.upload_function_timeout_seconds <= 540
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

variable "upload_max_instances" {
  description = "Upper bound on on_upload instances: bounds the fan-out of a bulk upload."
  type        = number
  default     = 10
}

variable "webhook_max_instances" {
  description = "Upper bound on webhook instances."
  type        = number
  default     = 20
}

variable "reconcile_max_instances" {
  description = "Upper bound on reconcile instances (one run at a time is enough)."
  type        = number
  default     = 1
}

variable "reconcile_schedule" {
  description = "Cron schedule of the reconcile job."
  type        = string
  default     = "*/10 * * * *"
}

variable "reconcile_time_zone" {
  description = "Time zone of reconcile_schedule."
  type        = string
  default     = "Etc/UTC"
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
  description = "API_MAX_ATTEMPTS: attempts per predictions API call."
  type        = number
  default     = 4

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
  description = "MAX_EVENT_AGE_SECONDS: older storage events are dropped instead of retried."
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

variable "reconcile_after_seconds" {
  description = "RECONCILE_AFTER_SECONDS: age after which an unfinished record is looked at by reconcile."
  type        = number
  default     = 900
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
