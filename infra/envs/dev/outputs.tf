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

output "function_names" {
  description = "Names of the three functions."
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
