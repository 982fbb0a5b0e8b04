"""Every resource, data source and provider block uses only arguments the provider knows, and all
the required ones, checked against the hashicorp/google 6.50 and hashicorp/archive 2.7 schemas
taken offline from the cdktf binding wheels."""

from __future__ import annotations

from typing import Any

from infra.checks.provider_schema import check_blocks, check_references
from infra.checks.tfparse import parse_texts


def test_schema_has_what_the_module_relies_on(schemas: dict[str, dict[str, Any]]) -> None:
    function = schemas["resource"]["google_cloudfunctions2_function"]["args"]
    trigger = function["event_trigger"]["block"]
    assert trigger["list"] is False
    assert {"event_type", "event_filters", "retry_policy", "service_account_email", "trigger_region"} <= set(
        trigger["args"]
    )
    assert trigger["args"]["event_filters"]["block"]["list"] is True
    assert function["name"]["required"] and function["location"]["required"]
    assert {"url", "service_config"} <= set(schemas["resource"]["google_cloudfunctions2_function"]["attrs"])
    assert "service_account_email" in function["service_config"]["block"]["args"]
    assert schemas["data"]["archive_file"]["args"]["type"]["required"]
    assert "output_sha256" in schemas["data"]["archive_file"]["attrs"]
    assert "member" in schemas["data"]["google_storage_project_service_account"]["attrs"]
    assert len(schemas["resource"]) > 1000


def test_schema_knows_the_cloud_tasks_resources(schemas: dict[str, dict[str, Any]]) -> None:
    """The names tasks.tf relies on, as the hashicorp/google 6.50 schema spells them."""
    queue = schemas["resource"]["google_cloud_tasks_queue"]
    args = queue["args"]
    assert args["name"]["required"] and args["location"]["required"]
    rate = args["rate_limits"]["block"]
    assert rate["list"] is False
    assert set(rate["args"]) == {"max_dispatches_per_second", "max_concurrent_dispatches"}  # max_burst_size: output
    retry = args["retry_config"]["block"]
    assert retry["list"] is False
    assert set(retry["args"]) == {"max_attempts", "max_retry_duration", "min_backoff", "max_backoff", "max_doublings"}
    assert args["stackdriver_logging_config"]["block"]["args"]["sampling_ratio"]["required"]
    assert "state" not in args, "the provider does not manage pause/resume; the README relies on that"
    assert {"id", "name", "location", "project"} <= set(queue["attrs"])
    member = schemas["resource"]["google_cloud_tasks_queue_iam_member"]["args"]
    assert {name for name, arg in member.items() if arg["required"]} == {"name", "role", "member"}
    assert {"project", "location", "condition"} <= set(member)
    assert "number" in schemas["data"]["google_project"]["attrs"]
    assert "urls" in schemas["data"]["google_cloud_run_v2_service"]["attrs"]
    assert schemas["data"]["google_cloud_run_v2_service"]["args"]["name"]["required"]


def test_blocks_use_known_and_required_arguments(
    tf: dict[str, dict[str, Any]], schemas: dict[str, dict[str, Any]]
) -> None:
    assert check_blocks(tf, schemas) == []


def test_references_name_declared_blocks_and_real_attributes(
    tf: dict[str, dict[str, Any]], schemas: dict[str, dict[str, Any]]
) -> None:
    assert check_references(tf, schemas) == []


BROKEN = """
resource "google_storage_bucket" "b" {
  name                 = "x"
  uniform_bucket_level = true
  versioning = {
    enabled = true
  }
  lifecycle_rule {
    action {
      type = "Delete"
    }
  }
  dynamic "cors" {
    for_each = [1]
    content {
      origins = ["a"]
    }
  }
  lifecycle {
    prevent_destroy = true
  }
}

resource "google_storage_bucket_object" "o" {
  name   = google_storage_bucket.b.nmae
  bucket = google_storage_bucket.missing.name
}

resource "google_cloudfunctions2_function" "f" {
  name     = "f"
  location = "europe-west1"
  event_trigger {
    event_type = "t"
    event_filter {
      attribute = "bucket"
      value     = "b"
    }
  }
}

resource "google_not_a_thing" "n" {}

provider "google" {
  projekt = "p"
}
"""


def test_schema_check_catches_mistakes(infra_tools: None, schemas: dict[str, dict[str, Any]]) -> None:
    parsed = parse_texts({"broken/main.tf": BROKEN})["broken/main.tf"]
    assert parsed["ok"], parsed
    files = {"broken/main.tf": parsed["body"]}
    problems = check_blocks(files, schemas) + check_references(files, schemas)
    expected = [
        "google_storage_bucket.b: unknown argument 'uniform_bucket_level'",
        "google_storage_bucket.b: 'versioning' is a block",
        "google_storage_bucket.b.lifecycle_rule: missing required block 'condition'",
        "google_storage_bucket.b: missing required argument 'location'",
        "google_storage_bucket.b.dynamic.cors.content: unknown argument 'origins'",
        "google_cloudfunctions2_function.f.event_trigger: unknown argument 'event_filter' (did you mean",
        "unknown resource type 'google_not_a_thing'",
        "provider 'google': unknown argument 'projekt'",
        "'google_storage_bucket.b.nmae': google_storage_bucket has no attribute 'nmae'",
        "'google_storage_bucket.missing.name' refers to an undeclared resource",
    ]
    for wanted in expected:
        assert any(wanted in p for p in problems), (wanted, problems)
    assert not any("prevent_destroy" in p or "'lifecycle'" in p for p in problems), problems
