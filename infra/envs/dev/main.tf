terraform {
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "~> 2.4"
    }
  }

  # Remote state. "CHANGE-ME-tfstate" is a placeholder: create the bucket once
  # (infra/README.md) and put its name here, or keep the placeholder and run
  # infra/tf.sh with TF_STATE_BUCKET=<bucket>, which passes -backend-config.
  backend "gcs" {
    bucket = "CHANGE-ME-tfstate"
    prefix = "bgremove/dev"
  }
}

provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = {
    env = "dev"
  }
}

module "pipeline" {
  source = "../../modules/pipeline"

  project_id  = var.project_id
  region      = var.region
  name_prefix = var.name_prefix

  # Admission through Cloud Tasks: this environment's pace (variables.tf).
  submit_queue_max_dispatches_per_second   = var.submit_queue_max_dispatches_per_second
  submit_queue_max_concurrent_dispatches   = var.submit_queue_max_concurrent_dispatches
  submit_queue_max_retry_duration_seconds  = var.submit_queue_max_retry_duration_seconds
  deadline_queue_max_dispatches_per_second = var.deadline_queue_max_dispatches_per_second
  deadline_queue_max_concurrent_dispatches = var.deadline_queue_max_concurrent_dispatches
  task_max_instances                       = var.task_max_instances

  # Outputs and completion events (variables.tf).
  delete_outputs  = var.delete_outputs
  cache_control   = var.cache_control
  output_url_base = var.output_url_base
  notify_url      = var.notify_url

  # Spend budget and alerts (variables.tf).
  daily_prediction_budget     = var.daily_prediction_budget
  monthly_prediction_budget   = var.monthly_prediction_budget
  alert_notification_channels = var.alert_notification_channels

  # A throw-away environment: easy to tear down, verbose logs, small scale.
  force_destroy         = true
  deletion_protection   = false
  state_retention_days  = 7
  log_level             = "DEBUG"
  upload_max_instances  = 3
  webhook_max_instances = 3
}
