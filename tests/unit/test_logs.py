"""Log lines are JSON for Cloud Logging and never carry a URL's secrets."""

from __future__ import annotations

import json

import pytest

from bgremove import logs


def test_log_line_is_json_with_severity_message_and_fields(capsys: pytest.CaptureFixture[str]) -> None:
    logs.info("upload submitted", object="gs://b/o.jpg", prediction_id="p1", skipped=None)
    entry = json.loads(capsys.readouterr().out)
    assert entry["severity"] == "INFO" and entry["message"] == "upload submitted"
    assert entry["object"] == "gs://b/o.jpg" and entry["prediction_id"] == "p1"
    assert "skipped" not in entry


def test_urls_in_free_text_lose_their_query() -> None:
    text = "GET https://h/b/o.jpg?X-Goog-Signature=abc&X-Goog-Date=1 failed; url: /b/o?X-Goog-Signature=def&x=1"
    scrubbed = logs.scrub_urls(text)
    assert "abc" not in scrubbed and "def" not in scrubbed
    assert "https://h/b/o.jpg?<redacted>" in scrubbed


def test_error_fields_are_scrubbed_when_logged(capsys: pytest.CaptureFixture[str]) -> None:
    logs.warning("failed", error="fetch https://h/o?token=s3cret failed")
    assert "s3cret" not in capsys.readouterr().out


def test_metric_events_are_written_at_any_log_level(capsys: pytest.CaptureFixture[str]) -> None:
    from bgremove import metrics

    logs.set_level("WARNING")
    try:
        logs.info("quiet")
        metrics.emit(metrics.Event.JOB_ADMITTED, "INFO", "upload admitted", job_id="j1")
    finally:
        logs.set_level("INFO")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["message"], line.get("event")) for line in lines] == [("upload admitted", "job_admitted")]
