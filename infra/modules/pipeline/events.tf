# Completion events: each job's end, published once per outcome as a CloudEvent in the
# Pub/Sub protocol binding (bgremove/events.py; README, "Completion events"). Downstream
# systems subscribe to this topic; a message published while no subscription exists is not
# kept, so create the subscription before relying on it.
#
# Encryption: Google-managed, as the buckets and secrets (infra/README.md, "Encryption").
resource "google_pubsub_topic" "events" {
  # checkov:skip=CKV_GCP_83: Google-managed encryption, as every bucket and secret of the module; see infra/README.md, "Encryption".
  project = var.project_id
  name    = "${var.name_prefix}-events"
  labels  = local.labels

  depends_on = [google_project_service.enabled]
}

# Every function that ends jobs publishes with its own runtime account, over Pub/Sub's REST
# API (topics.publish): roles/pubsub.publisher on this topic only, never on the project.
resource "google_pubsub_topic_iam_member" "events_publisher" {
  for_each = local.announcers
  project  = google_pubsub_topic.events.project
  topic    = google_pubsub_topic.events.name
  role     = "roles/pubsub.publisher"
  member   = each.value
}
