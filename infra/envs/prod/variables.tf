variable "project_id" {
  description = "Google Cloud project of this environment."
  type        = string
}

variable "region" {
  description = "Region of this environment."
  type        = string
}

variable "name_prefix" {
  description = "Per-environment name prefix (see the module's variable)."
  type        = string
}

# Cloud Tasks admission (see the module's variables and infra/README.md, "Queues").
# Production keeps the module's defaults: the predictions API's 600 creates a minute.
# An account with little credit (6 creates a minute) needs
# submit_queue_max_dispatches_per_second = 0.1, set in terraform.tfvars.

variable "submit_queue_max_dispatches_per_second" {
  description = "Prediction creates per second the submission queue dispatches (the module's submit_queue_max_dispatches_per_second)."
  type        = number
  default     = 10
}

variable "submit_queue_max_concurrent_dispatches" {
  description = "Submission tasks in flight at once (the module's submit_queue_max_concurrent_dispatches)."
  type        = number
  default     = 100
}

variable "submit_queue_max_retry_duration_seconds" {
  description = "How long a submission task is retried before Cloud Tasks drops it and the sweep requeues the job (the module's submit_queue_max_retry_duration_seconds)."
  type        = number
  default     = 604800
}

variable "deadline_queue_max_dispatches_per_second" {
  description = "Deadline checks dispatched per second (the module's deadline_queue_max_dispatches_per_second)."
  type        = number
  default     = 50
}

variable "deadline_queue_max_concurrent_dispatches" {
  description = "Deadline checks in flight at once (the module's deadline_queue_max_concurrent_dispatches)."
  type        = number
  default     = 50
}

variable "task_max_instances" {
  description = "Upper bound on task handler instances (the module's task_max_instances); keep it at least submit_queue_max_concurrent_dispatches."
  type        = number
  default     = 100
}

# Outputs and completion events (see the module's variables and infra/README.md,
# "Deletions, events and notifications").

variable "delete_outputs" {
  description = "A deleted original takes its cut-outs with it (the module's delete_outputs, DELETE_OUTPUTS)."
  type        = bool
  default     = true
}

variable "cache_control" {
  description = "Cache-Control of every output; empty: each output copies its upload's (the module's cache_control, CACHE_CONTROL)."
  type        = string
  default     = ""
}

variable "output_url_base" {
  description = "Base of the output URLs in completion events (the module's output_url_base, OUTPUT_URL_BASE)."
  type        = string
  default     = "https://storage.googleapis.com"
}

variable "notify_url" {
  description = "Customer endpoint that also gets each completion event, signed; empty: off (the module's notify_url, NOTIFY_URL). Add the notify secret's value before the deploy that sets it (infra/README.md)."
  type        = string
  default     = ""
}

# Spend budget and alerts (see the module's variables; README, "Alerts and dashboard").

variable "daily_prediction_budget" {
  description = "Predictions created per budget day at most, then submissions are held (the module's daily_prediction_budget, DAILY_PREDICTION_BUDGET); 0 = no limit."
  type        = number
  default     = 0
}

variable "monthly_prediction_budget" {
  description = "Predictions created per budget month at most (the module's monthly_prediction_budget, MONTHLY_PREDICTION_BUDGET); 0 = no limit. Needs submit_queue_max_retry_duration_seconds 0 or at least 2678400, and state_retention_days at least 32."
  type        = number
  default     = 0
}

variable "alert_notification_channels" {
  description = "Existing notification channel ids (projects/P/notificationChannels/N) the alert policies notify (the module's alert_notification_channels); empty: incidents in the console only."
  type        = list(string)
  default     = []
}
