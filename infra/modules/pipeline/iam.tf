# Service accounts: one runtime identity per function, so each gets only what
# it needs, plus the Eventarc trigger, the scheduler, the Cloud Tasks OIDC and the
# build identities. The queue grants are in tasks.tf.

resource "google_service_account" "upload" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-upload"
  display_name = "bgremove on_upload runtime"
  depends_on   = [google_project_service.enabled]
}

resource "google_service_account" "webhook" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-webhook"
  display_name = "bgremove webhook runtime"
  depends_on   = [google_project_service.enabled]
}

resource "google_service_account" "reconcile" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-reconcile"
  display_name = "bgremove reconcile runtime"
  depends_on   = [google_project_service.enabled]
}

# Runtime of both deletion functions (the deleted and the archived trigger of on_delete).
resource "google_service_account" "delete" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-delete"
  display_name = "bgremove on_delete runtime"
  depends_on   = [google_project_service.enabled]
}

resource "google_service_account" "tasks" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-tasks"
  display_name = "bgremove on_task runtime (task handler)"
  depends_on   = [google_project_service.enabled]
}

# The identity in the OIDC token Cloud Tasks attaches to every task (TASKS_SERVICE_ACCOUNT):
# the only member with roles/run.invoker on the task handler. No function runs as it.
resource "google_service_account" "tasks_invoker" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-tasks-invoker"
  display_name = "bgremove Cloud Tasks OIDC (invokes on_task)"
  depends_on   = [google_project_service.enabled]
}

resource "google_service_account" "trigger" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-trigger"
  display_name = "bgremove Eventarc storage trigger"
  depends_on   = [google_project_service.enabled]
}

resource "google_service_account" "scheduler" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-scheduler"
  display_name = "bgremove Cloud Scheduler (reconcile)"
  depends_on   = [google_project_service.enabled]
}

resource "google_service_account" "build" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-build"
  display_name = "bgremove Cloud Build (function builds)"
  depends_on   = [google_project_service.enabled]
}

# ---------------------------------------------------------------------------
# Buckets
# ---------------------------------------------------------------------------

# uploads: read-only, for the function that hands images to the model: the task handler
# reads the image's head, inlines small ones and signs URLs of the others; and for on_delete,
# which reads the name's live generation (one metadata read) to tell an overwrite from a
# removal. on_upload only admits (the event carries name, size and type) and the reconciler
# requeues instead of submitting, so neither reads uploads.
resource "google_storage_bucket_iam_member" "uploads_viewer" {
  for_each = {
    tasks  = google_service_account.tasks.member
    delete = google_service_account.delete.member
  }
  bucket = google_storage_bucket.uploads.name
  role   = "roles/storage.objectViewer"
  member = each.value
}

# processed: outputs are created (objectCreator), and objectViewer sees whether an
# output exists and whose it is. Only the functions that store outputs get either:
# the webhook, and the reconciler and the task handler, whose deadline checks settle
# finished predictions the same way. Replacing an older generation's output (the
# newest generation wins) is an overwrite, which Cloud Storage allows only with
# storage.objects.delete: they also hold the output remover role below, and the code
# overwrites only with if_generation_match on an output it judged its own upload's.
resource "google_storage_bucket_iam_member" "processed_viewer" {
  for_each = {
    webhook   = google_service_account.webhook.member
    tasks     = google_service_account.tasks.member
    reconcile = google_service_account.reconcile.member
  }
  bucket = google_storage_bucket.processed.name
  role   = "roles/storage.objectViewer"
  member = each.value
}

resource "google_storage_bucket_iam_member" "processed_creator" {
  for_each = {
    webhook   = google_service_account.webhook.member
    tasks     = google_service_account.tasks.member
    reconcile = google_service_account.reconcile.member
  }
  bucket = google_storage_bucket.processed.name
  role   = "roles/storage.objectCreator"
  member = each.value
}

# state: records are rewritten under generation preconditions (update, delete), and
# the open-jobs index is written and deleted; the task handler also puts the signed
# copies of awkwardly named inputs here.
resource "google_storage_bucket_iam_member" "state_admin" {
  for_each = {
    upload    = google_service_account.upload.member
    webhook   = google_service_account.webhook.member
    tasks     = google_service_account.tasks.member
    reconcile = google_service_account.reconcile.member
    delete    = google_service_account.delete.member
  }
  bucket = google_storage_bucket.state.name
  role   = "roles/storage.objectAdmin"
  member = each.value
}

# processed, for on_delete: a deleted original's outputs are deleted, each only while it is
# still the object generation its job wrote (read its metadata, then delete with
# if_generation_match). That is storage.objects.get and storage.objects.delete and nothing
# else: no predefined role is that narrow (objectUser and objectAdmin could also create and
# overwrite outputs), hence this custom role, granted on the processed bucket only. The
# functions that write outputs hold it too: an overwrite (replacing an older generation's
# output) needs storage.objects.delete.
resource "google_project_iam_custom_role" "output_remover" {
  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}_output_remover"
  title       = "bgremove output remover (${var.name_prefix})"
  description = "Read an output's metadata and delete it: on_delete removes a deleted original's cut-outs."
  permissions = ["storage.objects.get", "storage.objects.delete"]
  depends_on  = [google_project_service.enabled]
}

resource "google_storage_bucket_iam_member" "processed_remover" {
  for_each = {
    delete    = google_service_account.delete.member
    webhook   = google_service_account.webhook.member
    tasks     = google_service_account.tasks.member
    reconcile = google_service_account.reconcile.member
  }
  bucket = google_storage_bucket.processed.name
  role   = google_project_iam_custom_role.output_remover.name
  member = each.value
}

# ---------------------------------------------------------------------------
# V4 signed URLs through IAM SignBlob: the function that starts predictions (the
# task handler, alone since admission goes through the queue) signs as itself.
# ---------------------------------------------------------------------------

resource "google_service_account_iam_member" "tasks_signs_as_itself" {
  service_account_id = google_service_account.tasks.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = google_service_account.tasks.member
}

# ---------------------------------------------------------------------------
# Storage trigger (Eventarc)
# ---------------------------------------------------------------------------

data "google_storage_project_service_account" "gcs" {
  project    = var.project_id
  depends_on = [google_project_service.enabled]
}

# The Cloud Storage service agent publishes the bucket notifications.
resource "google_project_iam_member" "gcs_pubsub_publisher" {
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = data.google_storage_project_service_account.gcs.member
}

resource "google_project_iam_member" "trigger_event_receiver" {
  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = google_service_account.trigger.member
}

# ---------------------------------------------------------------------------
# Function builds: the documented roles of a user-specified build service
# account (logs, images, source), storage limited to what builds read/write.
# ---------------------------------------------------------------------------

resource "google_project_iam_member" "build" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/artifactregistry.writer",
  ])
  project = var.project_id
  role    = each.value
  member  = google_service_account.build.member
}

resource "google_storage_bucket_iam_member" "build_source_viewer" {
  bucket = google_storage_bucket.source.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.build.member
}

# Cloud Functions stages sources and build caches in its own gcf-v2-* buckets.
resource "google_project_iam_member" "build_gcf_buckets" {
  project = var.project_id
  role    = "roles/storage.objectAdmin"
  member  = google_service_account.build.member

  condition {
    title       = "gcf-v2 buckets only"
    description = "Cloud Functions staging buckets (gcf-v2-sources-*, gcf-v2-uploads-*)."
    expression  = "resource.name.startsWith(\"projects/_/buckets/gcf-v2-\")"
  }
}
