output "uploads_bucket" {
  description = "Bucket that receives the images to process."
  value       = google_storage_bucket.uploads.name
}

output "processed_bucket" {
  description = "Bucket that receives the transparent PNGs."
  value       = google_storage_bucket.processed.name
}

output "state_bucket" {
  description = "Bucket of the pipeline's state records."
  value       = google_storage_bucket.state.name
}

output "source_bucket" {
  description = "Bucket of the function source archives."
  value       = google_storage_bucket.source.name
}

output "access_logs_bucket" {
  description = "Bucket of the other buckets' usage logs."
  value       = google_storage_bucket.access_logs.name
}

output "webhook_url" {
  description = "Public URL the predictions API posts its webhooks to."
  value       = google_cloudfunctions2_function.webhook.service_config[0].uri
}

output "reconcile_url" {
  description = "Internal URL of the reconcile function."
  value       = google_cloudfunctions2_function.reconcile.service_config[0].uri
}

output "task_handler_url" {
  description = "Internal URL of the task handler (on_task): TASK_HANDLER_URL, the target and OIDC audience of every task."
  value       = local.task_handler_url
}

output "queue_names" {
  description = "Short names of the Cloud Tasks queues, for gcloud tasks queues describe|pause|resume NAME --location=REGION (notify: null while notify_url is empty)."
  value = {
    submit   = google_cloud_tasks_queue.submit.name
    deadline = google_cloud_tasks_queue.deadline.name
    notify   = local.notify_enabled ? google_cloud_tasks_queue.notify[0].name : null
  }
}

output "queue_ids" {
  description = "Full paths of the queues (projects/P/locations/L/queues/Q), as set in SUBMIT_QUEUE, DEADLINE_QUEUE and NOTIFY_QUEUE (notify: null while notify_url is empty)."
  value = {
    submit   = google_cloud_tasks_queue.submit.id
    deadline = google_cloud_tasks_queue.deadline.id
    notify   = local.notify_enabled ? google_cloud_tasks_queue.notify[0].id : null
  }
}

output "events_topic" {
  description = "The completion events' Pub/Sub topic (EVENTS_TOPIC, projects/P/topics/T): subscribe to it."
  value       = google_pubsub_topic.events.id
}

output "function_names" {
  description = "Names of the functions (delete and archive both run on_delete)."
  value = {
    upload    = google_cloudfunctions2_function.upload.name
    tasks     = google_cloudfunctions2_function.tasks.name
    webhook   = google_cloudfunctions2_function.webhook.name
    reconcile = google_cloudfunctions2_function.reconcile.name
    delete    = google_cloudfunctions2_function.delete.name
    archive   = google_cloudfunctions2_function.archive.name
  }
}

output "service_accounts" {
  description = "Emails of the service accounts the module created."
  value = {
    upload        = google_service_account.upload.email
    tasks         = google_service_account.tasks.email
    webhook       = google_service_account.webhook.email
    reconcile     = google_service_account.reconcile.email
    delete        = google_service_account.delete.email
    trigger       = google_service_account.trigger.email
    scheduler     = google_service_account.scheduler.email
    tasks_invoker = google_service_account.tasks_invoker.email
    build         = google_service_account.build.email
  }
}

output "secret_ids" {
  description = "Secret Manager secrets whose versions are added out of band (notify_secret: null while notify_url is empty)."
  value = {
    predictions_api_token = google_secret_manager_secret.api_token.secret_id
    webhook_secrets       = google_secret_manager_secret.webhook_secret.secret_id
    notify_secret         = local.notify_enabled ? google_secret_manager_secret.notify_secret[0].secret_id : null
  }
}

output "scheduler_job" {
  description = "Cloud Scheduler job that runs the reconciler."
  value       = google_cloud_scheduler_job.reconcile.name
}
