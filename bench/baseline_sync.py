"""The baseline for the billed-time figure: the same job done synchronously inside one storage-
triggered function, as `replicate.run` would do it.

It reads the upload, creates the prediction without a webhook, polls `GET /predictions/{id}` every
POLL_INTERVAL seconds (replicate-python's default is 0.5 s) until the prediction is terminal, then
downloads the output and writes it to the processed bucket (create-only). The function is billed
for all of that time, model time included.

    functions-framework --target on_upload_sync --source bench/baseline_sync.py

Environment: the pipeline's own (PREDICTIONS_BASE_URL, PREDICTIONS_API_TOKEN, MODEL_VERSION,
PROCESSED_BUCKET, STORAGE_EMULATOR_HOST, ...) plus BASELINE_POLL_INTERVAL and BASELINE_OUTPUT_PREFIX.
"""

from __future__ import annotations

import base64
import os
import posixpath
import time

import functions_framework
import requests
from cloudevents.http import CloudEvent
from google.cloud import storage

from bgremove import keys

TERMINAL = ("succeeded", "failed", "canceled", "aborted")
BASE_URL = os.environ["PREDICTIONS_BASE_URL"].rstrip("/")
TOKEN = os.environ["PREDICTIONS_API_TOKEN"]
VERSION = os.environ["MODEL_VERSION"]
PROCESSED_BUCKET = os.environ["PROCESSED_BUCKET"]
OUTPUT_PREFIX = os.environ.get("BASELINE_OUTPUT_PREFIX", "baseline/")
POLL_INTERVAL = float(os.environ.get("BASELINE_POLL_INTERVAL", "0.5"))
TIMEOUT = float(os.environ.get("BASELINE_TIMEOUT_SECONDS", "540"))

_session = requests.Session()
_session.headers["Authorization"] = f"Bearer {TOKEN}"
_storage = storage.Client()


@functions_framework.cloud_event
def on_upload_sync(cloud_event: CloudEvent) -> None:
    data = cloud_event.data
    bucket, name, generation = data["bucket"], data["name"], int(data["generation"])
    content_type = data.get("contentType") or "image/jpeg"
    image = _storage.bucket(bucket).blob(name, generation=generation).download_as_bytes()
    data_url = f"data:{content_type};base64,{base64.b64encode(image).decode()}"

    response = _session.post(f"{BASE_URL}/predictions", json={"version": VERSION, "input": {"image": data_url}})
    response.raise_for_status()
    prediction = response.json()
    deadline = time.monotonic() + TIMEOUT
    while prediction["status"] not in TERMINAL:
        if time.monotonic() > deadline:
            raise TimeoutError(f"prediction {prediction['id']} still {prediction['status']}")
        time.sleep(POLL_INTERVAL)
        response = _session.get(f"{BASE_URL}/predictions/{prediction['id']}")
        response.raise_for_status()
        prediction = response.json()
    if prediction["status"] != "succeeded":
        raise RuntimeError(f"prediction {prediction['id']} {prediction['status']}: {prediction.get('error')}")

    output = prediction["output"]
    url = output[0] if isinstance(output, list) else output
    png = requests.get(url, timeout=60)
    png.raise_for_status()
    target = OUTPUT_PREFIX + posixpath.splitext(name)[0] + ".png"
    blob = _storage.bucket(PROCESSED_BUCKET).blob(target)
    blob.metadata = {keys.PREDICTION_ID: prediction["id"], "baseline-source": f"gs://{bucket}/{name}"}
    blob.upload_from_string(png.content, content_type="image/png", if_generation_match=0)
