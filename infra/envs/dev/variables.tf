variable "project_id" {
  description = "Google Cloud project of this environment."
  type        = string
}

variable "region" {
  description = "Region of this environment."
  type        = string
}

variable "name_prefix" {
  description = "Per-environment name prefix (see the module's variable)."
  type        = string
}
