# Secrets are created empty: their values are added out of band with
# `gcloud secrets versions add` (see infra/README.md) and never pass through
# terraform state. The functions read version "latest" at instance start.

resource "google_secret_manager_secret" "api_token" {
  project             = var.project_id
  secret_id           = "${var.name_prefix}-predictions-api-token"
  labels              = local.labels
  deletion_protection = var.deletion_protection

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

resource "google_secret_manager_secret" "webhook_secret" {
  project             = var.project_id
  secret_id           = "${var.name_prefix}-webhook-secrets"
  labels              = local.labels
  deletion_protection = var.deletion_protection

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

# The predictions API token: for the functions that call the API: the task handler
# (creates predictions; its deadline checks read them) and the reconciler (reads and
# cancels them). on_upload only enqueues and never needs it.
resource "google_secret_manager_secret_iam_member" "api_token_accessor" {
  for_each = {
    tasks     = google_service_account.tasks.member
    reconcile = google_service_account.reconcile.member
  }
  project   = var.project_id
  secret_id = google_secret_manager_secret.api_token.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}

# The webhook signing secret(s): for the webhook function only.
resource "google_secret_manager_secret_iam_member" "webhook_secret_accessor" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.webhook_secret.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.webhook.member
}
