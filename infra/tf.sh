#!/usr/bin/env bash
# Terraform for one environment of the pipeline.
#
#   infra/tf.sh plan ENV [terraform plan args...]     init, then plan
#   infra/tf.sh deploy ENV [terraform apply args...]  init, then apply (asks for approval)
#   infra/tf.sh bootstrap ENV                         init, then create only the APIs and the
#                                                     (empty) secrets, before their values exist
#                                                     (the notify secret only with notify_url)
#
# ENV is a directory under infra/envs (dev, prod). TF_STATE_BUCKET=<bucket> overrides the
# backend's placeholder bucket (-backend-config); TERRAFORM=<binary> picks another binary
# (for example tofu). See infra/README.md for the one-time steps.
set -euo pipefail

usage() {
  echo "usage: infra/tf.sh plan|deploy|bootstrap ENV [extra terraform args]   (ENV: one of infra/envs/*)" >&2
  exit 2
}

[[ $# -ge 2 ]] || usage
action="$1"
env_name="$2"
shift 2
case "$action" in
  plan | deploy | bootstrap) ;;
  *) usage ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
env_dir="infra/envs/$env_name"
if [[ ! "$env_name" =~ ^[a-z0-9_-]+$ || ! -d "$root/$env_dir" ]]; then
  echo "tf.sh: no environment '$env_name' (expected a directory $env_dir)" >&2
  exit 2
fi

terraform_bin="${TERRAFORM:-terraform}"
if ! command -v "$terraform_bin" >/dev/null 2>&1; then
  cat >&2 <<MSG
tf.sh: '$terraform_bin' is not on PATH.
Install Terraform >= 1.5 (https://developer.hashicorp.com/terraform/install), or set
TERRAFORM=/path/to/terraform (OpenTofu's 'tofu' works too). The offline checks need none of
this: .venv/bin/python -m pytest tests/infra
MSG
  exit 127
fi

init_args=(-input=false)
if [[ -n "${TF_STATE_BUCKET:-}" ]]; then
  init_args+=("-backend-config=bucket=$TF_STATE_BUCKET")
fi

cd "$root"
"$terraform_bin" -chdir="$env_dir" init "${init_args[@]}"
case "$action" in
  plan)
    "$terraform_bin" -chdir="$env_dir" plan -input=false "$@"
    ;;
  deploy)
    "$terraform_bin" -chdir="$env_dir" apply -input=false "$@"
    ;;
  bootstrap)
    "$terraform_bin" -chdir="$env_dir" apply -input=false \
      -target=module.pipeline.google_project_service.enabled \
      -target=module.pipeline.google_secret_manager_secret.api_token \
      -target=module.pipeline.google_secret_manager_secret.webhook_secret \
      -target=module.pipeline.google_secret_manager_secret.notify_secret \
      "$@"
    ;;
esac
