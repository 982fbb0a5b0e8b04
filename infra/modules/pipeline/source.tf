# The deployable code: main.py, the bgremove package and requirements.txt from
# the repository root, and nothing else (no tests, no offline_cloud, no venvs).
locals {
  source_root = abspath("${path.module}/../../..")

  # Paths relative to the repository root (fileset patterns). Only these are
  # deployed; infra/checks/packaging.py checks this list.
  source_includes = ["main.py", "requirements.txt", "bgremove/**"]

  source_files = sort(distinct(flatten([
    for pattern in local.source_includes : [
      for file in fileset(local.source_root, pattern) : file
      if !strcontains(file, "__pycache__") && !endswith(file, ".pyc")
    ]
  ])))
}

data "archive_file" "source" {
  type        = "zip"
  output_path = "${path.root}/.terraform/tmp/${var.name_prefix}-source.zip"

  dynamic "source" {
    for_each = local.source_files
    content {
      filename = source.value
      content  = file("${local.source_root}/${source.value}")
    }
  }

  lifecycle {
    precondition {
      condition     = contains(local.source_files, "main.py") && contains(local.source_files, "requirements.txt")
      error_message = "main.py and requirements.txt must exist at the repository root."
    }
  }
}

# Named by the archive's hash: a code change is a new object, which makes the
# functions rebuild.
resource "google_storage_bucket_object" "source" {
  name         = "functions/source-${data.archive_file.source.output_sha256}.zip"
  bucket       = google_storage_bucket.source.name
  source       = data.archive_file.source.output_path
  content_type = "application/zip"
}
