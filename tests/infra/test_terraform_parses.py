"""Every Terraform file parses, is laid out like `terraform fmt` output, and the layout is as documented."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra.checks.tf_model import check_module_calls, module_variables
from infra.checks.tfparse import INFRA_DIR, REPO_ROOT, format_problems, single, unwrap
from tests.infra.conftest import ENV_ROOTS, MODULE_DIR, hcl_files


def test_every_file_parses(parse_results: dict[str, dict[str, Any]]) -> None:
    assert len(parse_results) == len(hcl_files())
    broken = {name: result["error"] for name, result in parse_results.items() if not result["ok"]}
    assert not broken, broken


@pytest.mark.parametrize("path", hcl_files(), ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_formatting(path: Path) -> None:
    assert format_problems(path.read_text(encoding="utf-8"), path.relative_to(REPO_ROOT).as_posix()) == []


def test_format_check_catches_layout_problems() -> None:
    bad = 'resource "a" "b" {\n  x = [\n   1,\n  ]\n\ty = 2 \n    z = "{"\n}\n\n'
    problems = format_problems(bad, "bad.tf")
    assert "bad.tf:3: indented 3 spaces, expected 4" in problems
    assert "bad.tf:5: tab character" in problems
    assert "bad.tf:5: trailing whitespace" in problems
    assert "bad.tf:6: indented 4 spaces, expected 2" in problems
    assert "bad.tf: blank lines at end of file" in problems
    good = 'locals {\n  a = merge(local.b, {\n    C = "}"\n  })\n  d = <<EOT\nfree { text\nEOT\n}\n'
    assert format_problems(good, "good.tf") == []


def test_layout_module_and_environment_roots(tf: dict[str, dict[str, Any]]) -> None:
    assert any(name.startswith(f"{MODULE_DIR}/") for name in tf)
    for root in ENV_ROOTS:
        assert f"{root}/main.tf" in tf, root
        assert f"{root}/terraform.tfvars" in tf, root


@pytest.mark.parametrize("root", ENV_ROOTS)
def test_environment_root(root: str, roots: dict[str, dict[str, dict[str, Any]]]) -> None:
    files = roots[root]
    main = files[f"{root}/main.tf"]
    terraform = main["terraform"][0]
    backend = terraform["backend"][0]
    assert list(backend) == ["gcs"], "state lives in a GCS backend"
    gcs = backend["gcs"]
    assert gcs.get("bucket") and gcs.get("prefix", "").endswith(root.rsplit("/", 1)[1])
    google = terraform["required_providers"][0]["google"]
    assert google["source"] == "hashicorp/google" and google["version"].startswith("~> 6.")
    assert [list(p) for p in main["provider"]] == [["google"]]
    (call,) = [body for entry in main["module"] for body in entry.values()]
    assert call["source"] == "../../modules/pipeline"
    tfvars = files[f"{root}/terraform.tfvars"]
    assert {"project_id", "region", "name_prefix"} <= set(tfvars)
    declared = {name for body in files.values() for entry in body.get("variable", []) for name in entry}
    assert set(k for k in tfvars if not k.startswith("__")) <= declared, "tfvars sets undeclared variables"


def test_module_calls_match_module_variables(
    roots: dict[str, dict[str, dict[str, Any]]], module: dict[str, dict[str, Any]]
) -> None:
    assert check_module_calls(roots, module_variables(module)) == []


def test_module_pins_providers(module: dict[str, dict[str, Any]]) -> None:
    (terraform,) = [block for body in module.values() for block in body.get("terraform", [])]
    providers = terraform["required_providers"][0]
    assert providers["google"]["version"].startswith("~> 6.")
    assert providers["archive"]["source"] == "hashicorp/archive"


def test_apis_enabled(module: dict[str, dict[str, Any]]) -> None:
    apis = [
        "cloudfunctions",
        "run",
        "eventarc",
        "pubsub",
        "storage",
        "secretmanager",
        "cloudbuild",
        "artifactregistry",
        "iam",
        "iamcredentials",
        "cloudscheduler",
        "cloudresourcemanager",
        "cloudtasks",
        "logging",
        "monitoring",
    ]
    wanted = {f"{api}.googleapis.com" for api in apis}
    services = [
        block
        for body in module.values()
        for entry in body.get("resource", [])
        for block in entry.get("google_project_service", {}).values()
    ]
    assert len(services) == 1
    listed = set(re.findall(r'"([a-z]+\.googleapis\.com)"', str(unwrap(services[0]["for_each"]))))
    assert listed == wanted


def test_buckets_are_private_and_versioned(module: dict[str, dict[str, Any]]) -> None:
    buckets = {
        name: block
        for body in module.values()
        for entry in body.get("resource", [])
        for name, block in entry.get("google_storage_bucket", {}).items()
    }
    assert {"uploads", "processed", "state", "source"} <= set(buckets)
    for name, bucket in buckets.items():
        assert bucket["uniform_bucket_level_access"] is True, name
        assert bucket["public_access_prevention"] == "enforced", name
    for name in ("uploads", "processed"):
        assert (single(buckets[name], "versioning") or {}).get("enabled") is True, name
    state_rules = [single(rule, "condition") or {} for rule in buckets["state"]["lifecycle_rule"]]
    assert any(unwrap(c.get("age")) == "var.state_retention_days" for c in state_rules)


def test_secrets_have_no_versions_in_terraform(module: dict[str, dict[str, Any]]) -> None:
    types = {t for body in module.values() for entry in body.get("resource", []) for t in entry}
    assert "google_secret_manager_secret" in types
    assert "google_secret_manager_secret_version" not in types, "secret values must not pass through state"


def test_tf_sh_fails_clearly_without_terraform() -> None:
    script = INFRA_DIR / "tf.sh"
    assert script.stat().st_mode & stat.S_IXUSR, "infra/tf.sh must be executable"
    subprocess.run(["bash", "-n", str(script)], check=True)
    env = {**os.environ, "TERRAFORM": "terraform-not-installed-here"}
    proc = subprocess.run(["bash", str(script), "plan", "dev"], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 127, proc.stderr
    assert "terraform-not-installed-here" in proc.stderr and "PATH" in proc.stderr
    usage = subprocess.run(["bash", str(script), "frobnicate", "dev"], capture_output=True, text=True, check=False)
    assert usage.returncode == 2 and "usage" in usage.stderr
    unknown = subprocess.run(["bash", str(script), "plan", "staging"], capture_output=True, text=True, check=False)
    assert unknown.returncode == 2 and "infra/envs/staging" in unknown.stderr


def test_terraform_fmt_agrees_when_terraform_is_installed() -> None:
    """Cross-check of format_problems: `terraform fmt -check` where a terraform binary exists.

    Terraform is not needed by these checks (nor installable offline); this only runs where a
    machine happens to have it.
    """
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("no terraform binary on PATH (optional cross-check)")
    proc = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", "infra"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null", "CHECKPOINT_DISABLE": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
