# Monitoring: log-based metrics counted from the functions' structured log lines, alert
# policies on them (and on Cloud Run's own 5xx count), and one dashboard.
#
# Every function writes one JSON object per line (bgremove/logs.py); Cloud Logging keeps
# `severity` at the top and every other key under jsonPayload. The lines the metrics count carry
# a field `event` (README, "Alerts and dashboard"). 2nd-gen functions are Cloud Run services:
# resource.type "cloud_run_revision", resource.labels.service_name the function's name, which
# starts with "<name_prefix>-" (functions.tf), so each filter names only this environment's
# functions and two environments in one project count apart. Metric names carry the prefix too.
#
# infra/checks/log_filters.py evaluates these filters offline against log lines of the offline
# stack and of the contract (tests/infra/test_log_filters.py); it reads only the subset of the
# logging query language written here (AND, OR, NOT, parentheses, =, =~, :*, >=, >, <, <=).

locals {
  # This environment's functions, as Cloud Logging sees them.
  log_scope = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=~\"^${var.name_prefix}-\""

  # The same services in Cloud Monitoring's filter language (built-in Cloud Run metrics).
  monitoring_scope = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=starts_with(\"${var.name_prefix}-\")"

  log_metric_prefix = "logging.googleapis.com/user"

  # Bounds of the queue-age distribution, in seconds: 1, 5, 15, 30 s; 1, 2, 5, 10, 15, 30 min;
  # 1, 2, 3, 6, 12 h; 1, 2, 3, 7, 14, 21, 31 days. A percentile is interpolated inside a bucket,
  # so a threshold on one of these bounds is exact (alert_queue_age_seconds, 3600 by default).
  queue_age_bounds = [
    1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
    86400, 172800, 259200, 604800, 1209600, 1814400, 2678400,
  ]

  alert_channels = var.alert_notification_channels
}

# ---------------------------------------------------------------------------
# Log-based metrics (counters: DELTA INT64, one per matching line)
# ---------------------------------------------------------------------------

# on_upload admitted a new upload: a job is queued.
resource "google_logging_metric" "jobs_admitted" {
  project     = var.project_id
  name        = "${var.name_prefix}-jobs-admitted"
  description = "Uploads admitted as queued jobs (event=job_admitted)."
  filter      = "${local.log_scope} AND jsonPayload.event=\"job_admitted\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "${var.name_prefix}: jobs admitted"
  }

  depends_on = [google_project_service.enabled]
}

# on_task created a prediction: each one is paid for (the spend the budgets count).
resource "google_logging_metric" "predictions_created" {
  project     = var.project_id
  name        = "${var.name_prefix}-predictions-created"
  description = "Predictions created by the task handler (event=prediction_created): the spend."
  filter      = "${local.log_scope} AND resource.labels.service_name=\"${local.task_function_name}\" AND jsonPayload.event=\"prediction_created\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "${var.name_prefix}: predictions created"
  }

  depends_on = [google_project_service.enabled]
}

# A job ended (any function may end one), by state and reason.
resource "google_logging_metric" "jobs_ended" {
  project     = var.project_id
  name        = "${var.name_prefix}-jobs-ended"
  description = "Jobs that ended (event=job_ended), by state (completed, failed, superseded, removed) and reason."
  filter      = "${local.log_scope} AND jsonPayload.event=\"job_ended\""

  label_extractors = {
    state  = "EXTRACT(jsonPayload.state)"
    reason = "EXTRACT(jsonPayload.reason)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "${var.name_prefix}: jobs ended"

    labels {
      key         = "state"
      value_type  = "STRING"
      description = "completed, failed, superseded or removed"
    }
    labels {
      key         = "reason"
      value_type  = "STRING"
      description = "why it failed (not_an_image, too_large, api_422, ...), else the state"
    }
  }

  depends_on = [google_project_service.enabled]
}

# The predictions API answered 429 (one line per answer).
resource "google_logging_metric" "api_throttled" {
  project     = var.project_id
  name        = "${var.name_prefix}-api-throttled"
  description = "Predictions API answers 429 (event=api_throttled)."
  filter      = "${local.log_scope} AND jsonPayload.event=\"api_throttled\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "${var.name_prefix}: API 429s"
  }

  depends_on = [google_project_service.enabled]
}

# A webhook whose signature did not verify (answered 401, nothing written).
resource "google_logging_metric" "webhooks_unauthorized" {
  project     = var.project_id
  name        = "${var.name_prefix}-webhooks-unauthorized"
  description = "Webhook deliveries refused for their signature (outcome=unauthorized, 401)."
  filter      = "${local.log_scope} AND resource.labels.service_name=\"${google_cloudfunctions2_function.webhook.name}\" AND severity>=WARNING AND jsonPayload.outcome=\"unauthorized\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "${var.name_prefix}: webhooks unauthorized"
  }

  depends_on = [google_project_service.enabled]
}

# A submission held because a spend budget window is spent (logged at each held dispatch).
resource "google_logging_metric" "budget_held" {
  project     = var.project_id
  name        = "${var.name_prefix}-budget-held"
  description = "Submissions held by a spent budget window (event=budget_held), by window (day, month)."
  filter      = "${local.log_scope} AND resource.labels.service_name=\"${local.task_function_name}\" AND jsonPayload.event=\"budget_held\""

  label_extractors = {
    window = "EXTRACT(jsonPayload.window)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "${var.name_prefix}: submissions held by budget"

    labels {
      key         = "window"
      value_type  = "STRING"
      description = "day or month"
    }
  }

  depends_on = [google_project_service.enabled]
}

# A previously held job got through.
resource "google_logging_metric" "budget_released" {
  project     = var.project_id
  name        = "${var.name_prefix}-budget-released"
  description = "Held submissions that got through (event=budget_released), by window."
  filter      = "${local.log_scope} AND resource.labels.service_name=\"${local.task_function_name}\" AND jsonPayload.event=\"budget_released\""

  label_extractors = {
    window = "EXTRACT(jsonPayload.window)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "${var.name_prefix}: held submissions released"

    labels {
      key         = "window"
      value_type  = "STRING"
      description = "day or month"
    }
  }

  depends_on = [google_project_service.enabled]
}

# How long each dispatched submission had waited since its job was queued (a distribution).
resource "google_logging_metric" "queue_age" {
  project         = var.project_id
  name            = "${var.name_prefix}-submission-queue-age"
  description     = "Seconds since the job was queued, at each submission dispatch (event=submission_dispatched)."
  filter          = "${local.log_scope} AND resource.labels.service_name=\"${local.task_function_name}\" AND jsonPayload.event=\"submission_dispatched\" AND jsonPayload.queue_age_seconds:*"
  value_extractor = "EXTRACT(jsonPayload.queue_age_seconds)"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "s"
    display_name = "${var.name_prefix}: submission queue age"
  }

  bucket_options {
    explicit_buckets {
      bounds = local.queue_age_bounds
    }
  }

  depends_on = [google_project_service.enabled]
}

# ---------------------------------------------------------------------------
# Alert policies. Each names var.alert_notification_channels (existing channel ids) and carries
# what it means and what to do (README, "Alerts and dashboard"). alerts_enabled = false keeps
# them, switched off.
# ---------------------------------------------------------------------------

# (a) A large share of the jobs that ended in the last 15 minutes failed, and enough of them.
resource "google_monitoring_alert_policy" "failure_share" {
  project               = var.project_id
  display_name          = "${var.name_prefix}: job failure share above ${var.alert_failure_share}"
  combiner              = "AND"
  enabled               = var.alerts_enabled
  notification_channels = local.alert_channels
  severity              = "ERROR"
  user_labels           = local.labels

  conditions {
    display_name = "failed / ended jobs over 15 min > ${var.alert_failure_share}"
    condition_threshold {
      filter             = "metric.type=\"${local.log_metric_prefix}/${google_logging_metric.jobs_ended.name}\" AND resource.type=\"cloud_run_revision\" AND metric.labels.state=\"failed\""
      denominator_filter = "metric.type=\"${local.log_metric_prefix}/${google_logging_metric.jobs_ended.name}\" AND resource.type=\"cloud_run_revision\""
      comparison         = "COMPARISON_GT"
      threshold_value    = var.alert_failure_share
      duration           = "0s"

      aggregations {
        alignment_period     = "900s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
      denominator_aggregations {
        alignment_period     = "900s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  conditions {
    display_name = "at least ${var.alert_failure_min_jobs} failed jobs over 15 min"
    condition_threshold {
      filter          = "metric.type=\"${local.log_metric_prefix}/${google_logging_metric.jobs_ended.name}\" AND resource.type=\"cloud_run_revision\" AND metric.labels.state=\"failed\""
      comparison      = "COMPARISON_GE"
      threshold_value = var.alert_failure_min_jobs
      duration        = "0s"

      aggregations {
        alignment_period     = "900s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.name_prefix}: many jobs failing"
    content   = <<-EOT
      More than a share of ${var.alert_failure_share} of the jobs that ended in the last 15
      minutes failed (and at least ${var.alert_failure_min_jobs} did). Each failure has a record in the
      state bucket and a reason (the dashboard's "Failures by reason").

      What to do: `bgremove status --json` (counts by state and reason), `bgremove show <job>`
      for one failed job; fix the cause (bad uploads: not_an_image, too_large; the API refusing:
      api_422, prediction_failed; attempts_exhausted: the API or the task handler kept failing),
      then `bgremove retry` the failed jobs that can succeed now.
    EOT
  }
}

# (b) A submission waited longer than the threshold before it was dispatched.
resource "google_monitoring_alert_policy" "queue_age" {
  project               = var.project_id
  display_name          = "${var.name_prefix}: submissions waiting longer than ${var.alert_queue_age_seconds} s"
  combiner              = "OR"
  enabled               = var.alerts_enabled
  notification_channels = local.alert_channels
  severity              = "WARNING"
  user_labels           = local.labels

  conditions {
    display_name = "99th percentile of submission queue age > ${var.alert_queue_age_seconds} s"
    condition_threshold {
      filter          = "metric.type=\"${local.log_metric_prefix}/${google_logging_metric.queue_age.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_queue_age_seconds
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_PERCENTILE_99"
        cross_series_reducer = "REDUCE_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.name_prefix}: submissions waiting long"
    content   = <<-EOT
      Submissions dispatched in the last 5 minutes had waited more than
      ${var.alert_queue_age_seconds} s since their upload was admitted (the age is measured at
      each dispatch, so a queue that dispatches nothing at all does not raise this: see the 5xx
      alert and the dashboard's queue depth).

      What to do: is a budget holding them (the budget alert, `budget_held` lines)? Is the API
      throttling (the dashboard's API 429s)? Is the task handler failing (the 5xx alert, the
      `<p>-tasks` logs)? Is the queue paused (`gcloud tasks queues describe ${var.name_prefix}-submit`)?
      A big drop simply takes its time at the queue's rate; `bgremove status` shows the backlog.
    EOT
  }
}

# (c) Many webhooks with a bad signature: a forged-webhook flood, or a rotated signing secret.
resource "google_monitoring_alert_policy" "webhooks_unauthorized" {
  project               = var.project_id
  display_name          = "${var.name_prefix}: more than ${var.alert_unauthorized_webhooks_per_5m} unauthorized webhooks in 5 min"
  combiner              = "OR"
  enabled               = var.alerts_enabled
  notification_channels = local.alert_channels
  severity              = "WARNING"
  user_labels           = local.labels

  conditions {
    display_name = "webhooks refused for their signature, per 5 min > ${var.alert_unauthorized_webhooks_per_5m}"
    condition_threshold {
      filter          = "metric.type=\"${local.log_metric_prefix}/${google_logging_metric.webhooks_unauthorized.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_unauthorized_webhooks_per_5m
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.name_prefix}: webhooks refused for their signature"
    content   = <<-EOT
      More than ${var.alert_unauthorized_webhooks_per_5m} webhook deliveries in 5 minutes failed
      signature verification. Each was answered 401 and wrote nothing.

      What to do: if the API's signing secret was rotated, put both secrets in the webhook
      secret (`WEBHOOK_SECRETS`, "whsec_NEW whsec_OLD") and roll the webhook function
      (infra/README.md, "Rotating secrets"); genuine deliveries refused meanwhile are retried by
      the API, and the sweep settles the jobs whose retries ran out. Otherwise it is a flood of
      forged requests: they are refused; look at the callers in the `${var.name_prefix}-webhook`
      request logs and block them in front of the function if it persists.
    EOT
  }
}

# (d) The functions answer 5xx (Cloud Run's own request count, not a log-based metric).
resource "google_monitoring_alert_policy" "function_errors" {
  project               = var.project_id
  display_name          = "${var.name_prefix}: functions answering 5xx"
  combiner              = "OR"
  enabled               = var.alerts_enabled
  notification_channels = local.alert_channels
  severity              = "ERROR"
  user_labels           = local.labels

  conditions {
    display_name = "5xx answers of one function, per 5 min > ${var.alert_5xx_per_5m}"
    condition_threshold {
      filter          = "metric.type=\"run.googleapis.com/request_count\" AND ${local.monitoring_scope} AND metric.labels.response_code_class=\"5xx\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_5xx_per_5m
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.service_name"]
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.name_prefix}: a function answers 5xx"
    content   = <<-EOT
      One of this environment's functions answered more than ${var.alert_5xx_per_5m} requests with
      a 5xx in 5 minutes. Some 5xx are deliberate retry signals: the task handler answers 503
      while the predictions API is unavailable and 500 while another dispatch holds a job's
      claim, the webhook 503 while its job is still being submitted, the sweep 503 when it cannot
      list. A sustained rate means a crash, a timeout (504) or a dependency down.

      What to do: read the service's logs (`gcloud run services logs read <service>
      --region=${var.region}`, severity >= WARNING: each retry line names its `error`); check the
      predictions API's status, Cloud Storage and the latest deploy.
    EOT
  }
}

# (e) A spend budget window is spent: submissions are held (not failed) until it turns.
resource "google_monitoring_alert_policy" "budget_held" {
  project               = var.project_id
  display_name          = "${var.name_prefix}: submissions held by the spend budget"
  combiner              = "OR"
  enabled               = var.alerts_enabled
  notification_channels = local.alert_channels
  severity              = "WARNING"
  user_labels           = local.labels

  conditions {
    display_name = "any submission held by a budget in 15 min"
    condition_threshold {
      filter          = "metric.type=\"${local.log_metric_prefix}/${google_logging_metric.budget_held.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period     = "900s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.window"]
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.name_prefix}: spend budget reached, submissions held"
    content   = <<-EOT
      The daily (${var.daily_prediction_budget}, 0 = none) or monthly
      (${var.monthly_prediction_budget}, 0 = none) prediction budget is spent: new submissions
      wait in the submissions queue (retried with its backoff) and nothing fails. The `window`
      label says which.

      What to do: wait for the window to turn (midnight at UTC${var.budget_utc_offset_hours >= 0 ? "+" : ""}${var.budget_utc_offset_hours}),
      or raise `daily_prediction_budget` / `monthly_prediction_budget` and deploy. Held jobs go on
      by themselves (`budget_released` lines).
    EOT
  }
}

# ---------------------------------------------------------------------------
# Dashboard
# ---------------------------------------------------------------------------

locals {
  dashboard_per_minute = {
    alignmentPeriod    = "60s"
    perSeriesAligner   = "ALIGN_SUM"
    crossSeriesReducer = "REDUCE_SUM"
  }

  dashboard = {
    displayName = "${var.name_prefix}: background removal"
    mosaicLayout = {
      columns = 48
      tiles = [
        {
          xPos   = 0
          yPos   = 0
          width  = 24
          height = 16
          widget = {
            title = "Images admitted, completed and failed per minute"
            xyChart = {
              dataSets = [
                {
                  plotType       = "LINE"
                  legendTemplate = "admitted"
                  timeSeriesQuery = {
                    timeSeriesFilter = {
                      filter      = "metric.type=\"${local.log_metric_prefix}/${google_logging_metric.jobs_admitted.name}\" AND resource.type=\"cloud_run_revision\""
                      aggregation = local.dashboard_per_minute
                    }
                  }
                },
                {
                  plotType       = "LINE"
                  legendTemplate = "$${metric.labels.state}"
                  timeSeriesQuery = {
                    timeSeriesFilter = {
                      filter = "metric.type=\"${local.log_metric_prefix}/${google_logging_metric.jobs_ended.name}\" AND resource.type=\"cloud_run_revision\" AND metric.labels.state=monitoring.regex.full_match(\"completed|failed\")"
                      aggregation = merge(local.dashboard_per_minute, {
                        groupByFields = ["metric.label.state"]
                      })
                    }
                  }
                },
              ]
              yAxis = { label = "per minute", scale = "LINEAR" }
            }
          }
        },
        {
          xPos   = 24
          yPos   = 0
          width  = 24
          height = 16
          widget = {
            title = "Failures by reason (per 10 minutes)"
            xyChart = {
              dataSets = [
                {
                  plotType       = "STACKED_BAR"
                  legendTemplate = "$${metric.labels.reason}"
                  timeSeriesQuery = {
                    timeSeriesFilter = {
                      filter = "metric.type=\"${local.log_metric_prefix}/${google_logging_metric.jobs_ended.name}\" AND resource.type=\"cloud_run_revision\" AND metric.labels.state=\"failed\""
                      aggregation = {
                        alignmentPeriod    = "600s"
                        perSeriesAligner   = "ALIGN_SUM"
                        crossSeriesReducer = "REDUCE_SUM"
                        groupByFields      = ["metric.label.reason"]
                      }
                    }
                  }
                },
              ]
              yAxis = { label = "failed jobs", scale = "LINEAR" }
            }
          }
        },
        {
          xPos   = 0
          yPos   = 16
          width  = 24
          height = 16
          widget = {
            title = "Submission queue depth (tasks waiting)"
            xyChart = {
              dataSets = [
                {
                  plotType       = "LINE"
                  legendTemplate = "tasks in ${google_cloud_tasks_queue.submit.name}"
                  timeSeriesQuery = {
                    timeSeriesFilter = {
                      filter = "metric.type=\"cloudtasks.googleapis.com/queue/depth\" AND resource.type=\"cloud_tasks_queue\" AND resource.labels.queue_id=\"${google_cloud_tasks_queue.submit.name}\""
                      aggregation = {
                        alignmentPeriod    = "60s"
                        perSeriesAligner   = "ALIGN_MAX"
                        crossSeriesReducer = "REDUCE_MAX"
                      }
                    }
                  }
                },
              ]
              yAxis = { label = "tasks", scale = "LINEAR" }
            }
          }
        },
        {
          xPos   = 24
          yPos   = 16
          width  = 24
          height = 16
          widget = {
            title = "Predictions API 429s per minute"
            xyChart = {
              dataSets = [
                {
                  plotType       = "LINE"
                  legendTemplate = "429 answers"
                  timeSeriesQuery = {
                    timeSeriesFilter = {
                      filter      = "metric.type=\"${local.log_metric_prefix}/${google_logging_metric.api_throttled.name}\" AND resource.type=\"cloud_run_revision\""
                      aggregation = local.dashboard_per_minute
                    }
                  }
                },
              ]
              yAxis = { label = "per minute", scale = "LINEAR" }
            }
          }
        },
        {
          xPos   = 0
          yPos   = 32
          width  = 24
          height = 16
          widget = {
            title = "Spend: predictions created per rolling 24 h, against the daily budget"
            xyChart = {
              dataSets = [
                {
                  plotType       = "LINE"
                  legendTemplate = "predictions created (24 h)"
                  timeSeriesQuery = {
                    timeSeriesFilter = {
                      filter = "metric.type=\"${local.log_metric_prefix}/${google_logging_metric.predictions_created.name}\" AND resource.type=\"cloud_run_revision\""
                      aggregation = {
                        alignmentPeriod    = "86400s"
                        perSeriesAligner   = "ALIGN_SUM"
                        crossSeriesReducer = "REDUCE_SUM"
                      }
                    }
                  }
                },
              ]
              thresholds = var.daily_prediction_budget > 0 ? [
                { label = "daily budget", value = var.daily_prediction_budget, color = "RED", direction = "ABOVE" },
              ] : []
              yAxis = { label = "predictions", scale = "LINEAR" }
            }
          }
        },
        {
          xPos   = 24
          yPos   = 32
          width  = 24
          height = 16
          widget = {
            title = "Predictions created and submissions held per minute"
            xyChart = {
              dataSets = [
                {
                  plotType       = "LINE"
                  legendTemplate = "created"
                  timeSeriesQuery = {
                    timeSeriesFilter = {
                      filter      = "metric.type=\"${local.log_metric_prefix}/${google_logging_metric.predictions_created.name}\" AND resource.type=\"cloud_run_revision\""
                      aggregation = local.dashboard_per_minute
                    }
                  }
                },
                {
                  plotType       = "LINE"
                  legendTemplate = "held ($${metric.labels.window})"
                  timeSeriesQuery = {
                    timeSeriesFilter = {
                      filter = "metric.type=\"${local.log_metric_prefix}/${google_logging_metric.budget_held.name}\" AND resource.type=\"cloud_run_revision\""
                      aggregation = merge(local.dashboard_per_minute, {
                        groupByFields = ["metric.label.window"]
                      })
                    }
                  }
                },
              ]
              yAxis = { label = "per minute", scale = "LINEAR" }
            }
          }
        },
      ]
    }
  }
}

resource "google_monitoring_dashboard" "pipeline" {
  project        = var.project_id
  dashboard_json = jsonencode(local.dashboard)

  depends_on = [google_project_service.enabled]
}
