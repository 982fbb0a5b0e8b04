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


def test_schema_knows_the_monitoring_resources(schemas: dict[str, dict[str, Any]]) -> None:
    """The names monitoring.tf relies on, as the hashicorp/google 6.50 schema spells them."""
    metric = schemas["resource"]["google_logging_metric"]["args"]
    assert metric["name"]["required"] and metric["filter"]["required"]
    assert {"label_extractors", "value_extractor", "metric_descriptor", "bucket_options"} <= set(metric)
    assert metric["label_extractors"]["block"] is None  # a map argument, not a block
    descriptor = metric["metric_descriptor"]["block"]
    assert {"metric_kind", "value_type"} <= {n for n, a in descriptor["args"].items() if a["required"]}
    assert descriptor["args"]["labels"]["block"]["list"] is True
    assert metric["bucket_options"]["block"]["args"]["explicit_buckets"]["block"]["args"]["bounds"]["required"]
    policy = schemas["resource"]["google_monitoring_alert_policy"]["args"]
    assert {n for n, a in policy.items() if a["required"]} == {"combiner", "conditions", "display_name"}
    threshold = policy["conditions"]["block"]["args"]["condition_threshold"]["block"]["args"]
    # The failure-share alert is a ratio: filter over denominator_filter, each with its aggregations.
    assert {"denominator_filter", "denominator_aggregations", "aggregations", "threshold_value"} <= set(threshold)
    assert {"comparison", "duration"} <= {n for n, a in threshold.items() if a["required"]}
    assert {"content", "mime_type", "subject"} <= set(policy["documentation"]["block"]["args"])
    assert {"notification_channels", "enabled", "severity", "user_labels", "alert_strategy"} <= set(policy)
    dashboard = schemas["resource"]["google_monitoring_dashboard"]["args"]
    assert dashboard["dashboard_json"]["required"]


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
