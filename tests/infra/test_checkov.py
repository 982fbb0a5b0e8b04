"""checkov (its own venv, no downloads) finds no failed check in infra/; skips are inline, with reasons."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from infra.checks.tfparse import INFRA_DIR, REPO_ROOT


def test_no_parsing_errors(checkov_report: dict[str, Any]) -> None:
    assert checkov_report["results"].get("parsing_errors", []) == []
    assert checkov_report["summary"]["parsing_errors"] == 0


def test_no_failed_checks(checkov_report: dict[str, Any]) -> None:
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for c in checkov_report["results"].get("failed_checks", [])
    ]
    assert failed == []
    assert checkov_report["summary"]["passed"] > 0


def test_checkov_saw_the_module(checkov_report: dict[str, Any]) -> None:
    resources = {c["resource"] for c in checkov_report["results"]["passed_checks"]}
    assert any("google_storage_bucket.uploads" in r for r in resources)
    assert any("google_cloudfunctions2_function" in r for r in resources)


def test_skips_are_inline_and_give_a_reason(checkov_report: dict[str, Any]) -> None:
    inline = {}
    for path in INFRA_DIR.rglob("*.tf"):
        for line in path.read_text(encoding="utf-8").splitlines():
            match = re.search(r"#\s*checkov:skip=(CKV2?_[A-Z]+_\d+)\s*:\s*(\S.*)?$", line)
            if match:
                assert match.group(2), f"{path}: {match.group(1)} skipped without a reason"
                inline[match.group(1)] = match.group(2)
    for check in checkov_report["results"].get("skipped_checks", []):
        comment = (check.get("check_result") or {}).get("suppress_comment", "").strip()
        assert check["check_id"] in inline, f"{check['check_id']} skipped, but not by an inline comment"
        assert comment, f"{check['check_id']} skipped without a reason"
    for name in (".checkov.yaml", ".checkov.yml"):
        assert not (REPO_ROOT / name).exists() and not (INFRA_DIR / name).exists(), "skips belong inline"


def test_checkov_is_pinned() -> None:
    pins = Path(INFRA_DIR / "checks" / "requirements-checkov.txt").read_text(encoding="utf-8")
    lines = [line for line in pins.splitlines() if line and not line.startswith("#")]
    assert any(line.startswith("checkov==") for line in lines)
    assert all("==" in line for line in lines), "every checkov dependency is pinned"
