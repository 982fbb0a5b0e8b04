#!/usr/bin/env bash
# Makes the tools of the offline Terraform checks, at the repository root:
#   .venv-hcl       python-hcl2 (requirements-hcl.txt)
#   .venv-checkov   checkov     (requirements-checkov.txt)
#   .cache/wheels   cdktf provider wheels, downloaded only (requirements-schema.txt)
# Everything comes from PyPI through pip. Idempotent: each part records the hash of its
# requirements file and is skipped while that matches, so a run with nothing to do takes
# well under a second. Set PYTHON to choose the interpreter (default: python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CHECKS="$ROOT/infra/checks"
CACHE="$ROOT/.cache"
PYTHON="${PYTHON:-python3}"

mkdir -p "$CACHE"
# One setup at a time (parallel test sessions share the venvs).
exec 9>"$CACHE/infra-setup.lock"
flock 9

digest() { sha256sum "$1" | cut -d' ' -f1; }

quiet_pip() {
  # pip's own output goes to a log, shown only when it fails.
  local log="$1"
  shift
  if ! "$@" >"$log" 2>&1; then
    echo "setup.sh: '$*' failed; last lines of $log:" >&2
    tail -n 40 "$log" >&2
    return 1
  fi
}

make_venv() {
  local venv="$ROOT/$1" requirements="$CHECKS/$2"
  local stamp="$venv/.requirements.sha256" want
  want="$(digest "$requirements")"
  if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  echo "setup.sh: creating $1 from infra/checks/$2" >&2
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  quiet_pip "$CACHE/setup-$1.log" "$venv/bin/python" -m pip install --disable-pip-version-check \
    --no-input -r "$requirements"
  echo "$want" >"$stamp"
}

fetch_wheels() {
  local requirements="$CHECKS/requirements-schema.txt" dir="$CACHE/wheels"
  local stamp="$dir/.requirements.sha256" want
  want="$(digest "$requirements")"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  echo "setup.sh: downloading provider schema wheels into .cache/wheels" >&2
  mkdir -p "$dir"
  quiet_pip "$CACHE/setup-wheels.log" "$ROOT/.venv-hcl/bin/python" -m pip download \
    --disable-pip-version-check --no-input --no-deps --only-binary=:all: --require-hashes \
    -r "$requirements" -d "$dir"
  echo "$want" >"$stamp"
}

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "setup.sh: $PYTHON not found (set PYTHON to a Python 3.10+ interpreter)" >&2
  exit 1
fi

make_venv .venv-hcl requirements-hcl.txt
make_venv .venv-checkov requirements-checkov.txt
fetch_wheels
