output "uploads_bucket" {
  description = "Bucket that receives the images to process."
  value       = module.pipeline.uploads_bucket
}

output "processed_bucket" {
  description = "Bucket that receives the transparent PNGs."
  value       = module.pipeline.processed_bucket
}

output "state_bucket" {
  description = "Bucket of the pipeline's state records."
  value       = module.pipeline.state_bucket
}

output "webhook_url" {
  description = "Public URL of the webhook function."
  value       = module.pipeline.webhook_url
}

output "task_handler_url" {
  description = "Internal URL of the task handler (on_task), the target of every task."
  value       = module.pipeline.task_handler_url
}

output "queue_names" {
  description = "Cloud Tasks queues (gcloud tasks queues pause|resume NAME --location=REGION)."
  value       = module.pipeline.queue_names
}

output "queue_ids" {
  description = "Full paths of the queues (SUBMIT_QUEUE, DEADLINE_QUEUE, NOTIFY_QUEUE)."
  value       = module.pipeline.queue_ids
}

output "events_topic" {
  description = "Pub/Sub topic of the completion events (EVENTS_TOPIC)."
  value       = module.pipeline.events_topic
}

output "function_names" {
  description = "Names of the functions."
  value       = module.pipeline.function_names
}

output "service_accounts" {
  description = "Emails of the service accounts."
  value       = module.pipeline.service_accounts
}

output "secret_ids" {
  description = "Secrets whose versions are added with gcloud (see infra/README.md)."
  value       = module.pipeline.secret_ids
}
