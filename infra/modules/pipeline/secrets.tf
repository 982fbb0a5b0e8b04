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

# NOTIFY_URL's signing secret (whsec_..., the receiver's own, not the API's): only while
# notify_url is set. Like the others it is created without a version; add one before the
# deploy that turns notify_url on (infra/README.md, "Notifications").
resource "google_secret_manager_secret" "notify_secret" {
  count               = local.notify_enabled ? 1 : 0
  project             = var.project_id
  secret_id           = "${var.name_prefix}-notify-secret"
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
# (creates predictions; its deadline checks read them), the reconciler (reads and cancels
# them) and on_delete (cancels the running prediction of a replaced or deleted upload).
# on_upload only enqueues and never needs it.
resource "google_secret_manager_secret_iam_member" "api_token_accessor" {
  for_each = {
    tasks     = google_service_account.tasks.member
    reconcile = google_service_account.reconcile.member
    delete    = google_service_account.delete.member
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

# The notify secret: on_task signs every delivery with it; config.py checks at start that it
# is set wherever NOTIFY_URL is (bgremove/config.py, _check_notify), and every function that
# ends jobs has NOTIFY_URL (to know it must enqueue the notification), so all of them mount it.
resource "google_secret_manager_secret_iam_member" "notify_secret_accessor" {
  for_each  = { for name, member in local.announcers : name => member if local.notify_enabled }
  project   = var.project_id
  secret_id = google_secret_manager_secret.notify_secret[0].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}
