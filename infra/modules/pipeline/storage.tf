# Buckets. All of them: uniform bucket-level access, public access prevention
# enforced, usage logs written to the access-logs bucket. Encryption is
# Google-managed (see infra/README.md, "Encryption").

resource "google_storage_bucket" "access_logs" {
  # checkov:skip=CKV_GCP_62: this bucket is the access-log sink; logging it into itself would recurse.
  # checkov:skip=CKV_GCP_78: access logs are write-once objects deleted by age; versions add nothing.
  name                        = "${local.bucket_prefix}-logs"
  project                     = var.project_id
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = local.labels

  lifecycle_rule {
    condition {
      age = var.access_log_retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.enabled]
}

# Cloud Storage writes usage logs as this Google group.
resource "google_storage_bucket_iam_member" "access_logs_writer" {
  bucket = google_storage_bucket.access_logs.name
  role   = "roles/storage.objectCreator"
  member = "group:cloud-storage-analytics@google.com"
}

resource "google_storage_bucket" "uploads" {
  name                        = "${local.bucket_prefix}-uploads"
  project                     = var.project_id
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = local.labels

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
      send_age_if_zero           = false
    }
    action {
      type = "Delete"
    }
  }

  logging {
    log_bucket        = google_storage_bucket.access_logs.name
    log_object_prefix = "uploads/"
  }

  depends_on = [google_project_service.enabled]
}

resource "google_storage_bucket" "processed" {
  name                        = "${local.bucket_prefix}-processed"
  project                     = var.project_id
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = local.labels

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
      send_age_if_zero           = false
    }
    action {
      type = "Delete"
    }
  }

  logging {
    log_bucket        = google_storage_bucket.access_logs.name
    log_object_prefix = "processed/"
  }

  depends_on = [google_project_service.enabled]
}

# State records: small JSON objects rewritten under generation preconditions.
# Versioned so a bad write can be undone; both live records and old versions
# expire.
resource "google_storage_bucket" "state" {
  name                        = "${local.bucket_prefix}-state"
  project                     = var.project_id
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = local.labels

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age        = var.state_retention_days
      with_state = "LIVE"
    }
    action {
      type = "Delete"
    }
  }

  # Copies of uploads whose names cannot travel in a signed URL (bgremove/naming.py,
  # input_copy_name): needed only while the model reads them.
  lifecycle_rule {
    condition {
      age            = 1
      matches_prefix = ["inputs/"]
      with_state     = "LIVE"
    }
    action {
      type = "Delete"
    }
  }

  # Spend budget counters (bgremove's budget, many small objects per budget day): a month's
  # window needs its days for at most 31 days, so 40 keeps every open window with a margin.
  lifecycle_rule {
    condition {
      age            = var.budget_counter_retention_days
      matches_prefix = ["budget/"]
      with_state     = "LIVE"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
      with_state                 = "ARCHIVED"
      send_age_if_zero           = false
    }
    action {
      type = "Delete"
    }
  }

  logging {
    log_bucket        = google_storage_bucket.access_logs.name
    log_object_prefix = "state/"
  }

  # The first rule deletes every live object after state_retention_days, budget counters
  # included (a lifecycle condition cannot exclude a prefix): a counter deleted while its
  # window is open would free its slots, and the window would spend more than its budget.
  lifecycle {
    precondition {
      condition     = var.monthly_prediction_budget == 0 || var.state_retention_days >= 32
      error_message = "With monthly_prediction_budget set, state_retention_days must be at least 32: the budget counters (budget/ in the state bucket) must outlive their month."
    }
    precondition {
      condition     = var.daily_prediction_budget == 0 || var.state_retention_days >= 2
      error_message = "With daily_prediction_budget set, state_retention_days must be at least 2: the budget counters (budget/ in the state bucket) must outlive their day."
    }
  }

  depends_on = [google_project_service.enabled]
}

# Function source archives, one object per code version (named by hash).
resource "google_storage_bucket" "source" {
  name                        = "${local.bucket_prefix}-source"
  project                     = var.project_id
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = local.labels

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
      send_age_if_zero           = false
    }
    action {
      type = "Delete"
    }
  }

  logging {
    log_bucket        = google_storage_bucket.access_logs.name
    log_object_prefix = "source/"
  }

  depends_on = [google_project_service.enabled]
}
