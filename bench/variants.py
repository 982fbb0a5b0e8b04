"""Figure 6: billed milliseconds per output variant kind, and peak memory at the largest output.

A dedicated stack is configured (OUTPUT_VARIANTS) with one variant of each kind; the predictions
service drops its own webhooks, so each upload leaves a real job in state `submitted` with a real,
succeeded prediction, and the upload's `keys.VARIANTS` metadata selects the one kind its job
writes. The bench then delivers each prediction's own body, signed as the service signs, to the
webhook function, one at a time, the kinds interleaved round after round so they share the
machine's noise:

- billed time: the webhook request's duration as its caller sees it (the function's billed time),
  for the model's real cut-out of a photo; `passthrough` (today's default, streamed) is the
  baseline each kind is compared with;
- memory: the gunicorn worker's VmHWM (reset through /proc/PID/clear_refs before each delivery, as
  figure 4 does) while it writes the kind from a 25-megapixel RGBA cut-out (5000x5000, served over
  HTTPS by bench/output_server.py), the largest output MAX_INPUT_PIXELS lets through;
- the upload side: the trigger worker's VmHWM while it prepares a 25-megapixel upload that must be
  turned upright or converted (EXIF-rotated JPEG and WebP, HEIC), with the model told to fail at
  once so only the submission is measured.

The Terraform memory of the functions (infra/modules/pipeline/variables.tf) is set from the peaks.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from pathlib import Path
from typing import Any

from bench import common, memory
from bgremove import jobs, keys, naming

KINDS: dict[str, dict[str, Any]] = {
    "passthrough": {"name": "cutout"},
    "png-colour": {"name": "colour", "background": "#ffffff"},
    "png-crop": {"name": "crop", "crop": True, "margin": "5%"},
    "png-canvas": {"name": "square", "canvas": "square"},
    "jpeg": {"name": "jpeg", "format": "jpeg", "background": "#ffffff"},
    "webp": {"name": "webp", "format": "webp"},
    "mask": {"name": "mask", "mask": True},
    "shop-jpeg": {
        "name": "shop",
        "format": "jpeg",
        "background": "#ffffff",
        "crop": True,
        "margin": "5%",
        "canvas": "square",
        "max_size": 2000,
    },
}
UPLOAD_KINDS = ("jpeg-orientation-6", "webp-orientation-3", "heic")
# The functions' memory (infra/modules/pipeline/variables.tf: webhook_function_memory and
# upload_function_memory), which these peaks are checked against.
WEBHOOK_MEMORY_BYTES = 1 * 2**30
UPLOAD_MEMORY_BYTES = 1 * 2**30


def run(ctx: common.Context) -> dict[str, Any]:
    photo_size = (160, 120) if ctx.quick else (1600, 1200)
    rounds = 1 if ctx.quick else 5
    large_side = 500 if ctx.quick else 5000
    files_dir = ctx.work_dir / "variant-outputs"
    files_dir.mkdir(exist_ok=True)
    ctx.log(f"variants: writing a {large_side}x{large_side} RGBA cut-out")
    large = large_cutout(files_dir / "large-cutout.png", large_side)

    directory = ctx.work_dir / "variants-stack"
    ctx.log("variants: starting a dedicated stack with one variant of each kind")
    stack = common.start_stack(
        directory,
        function_env={
            "OUTPUT_VARIANTS": json.dumps(list(KINDS.values())),
            "OUTPUT_MAX_BYTES": str(max(large.stat().st_size * 2, 128 * 2**20)),
            # The figure drops every webhook and delivers each one itself, timed: no check may settle
            # the job first, so the first comes after FIRST_CHECK_SECONDS (3 min), not a poll at 5 s.
            "RESULT_DELIVERY": "webhook",
        },
        predictions_faults={"webhook_drop_rate": 1.0},
    )
    server = None
    try:
        info = stack.info
        assert info is not None
        server, base_url = common.start_output_server(
            files_dir, directory / "tls", ctx.work_dir / "variants-output-server.log"
        )
        webhook = memory._worker(stack.processes["function-webhook"].pid)
        ctx.log(f"variants: {rounds} round(s) of {len(KINDS)} kinds at {photo_size[0]}x{photo_size[1]}")
        # Round 0 warms each kind up (imports, first use); rounds 1.. are measured, the kinds interleaved.
        order = [kind for _ in range(rounds + 1) for kind in KINDS]
        ready = _jobs(info, order, common.small_jpeg(1, photo_size))
        billed: dict[str, list[float]] = {kind: [] for kind in KINDS}
        for i, (kind, job) in enumerate(zip(order, ready, strict=True)):
            seconds = memory._deliver(info, webhook, job, job["prediction"]["output"])["seconds"]
            _check_written(info, job, kind)
            if i >= len(KINDS):
                billed[kind].append(seconds)

        ctx.log(f"variants: peak RSS writing each kind from a {large_side}x{large_side} cut-out")
        peaks: dict[str, dict[str, Any]] = {}
        for kind, job in zip(KINDS, _jobs(info, list(KINDS), common.small_jpeg(2)), strict=True):
            peaks[kind] = memory._deliver(info, webhook, job, f"{base_url}/{large.name}")
            _check_written(info, job, kind)

        ctx.log(f"variants: peak RSS of the upload function preparing {large_side}x{large_side} uploads")
        common.set_faults(info, fail_rate=1.0)  # the model's work is not measured here
        trigger = memory._worker(stack.processes["function-trigger"].pid)
        uploads = {kind: _upload_peak(info, trigger, kind, large_side) for kind in UPLOAD_KINDS}
        common.set_faults(info, fail_rate=0.0)
    finally:
        if server is not None:
            common.stop_process(server)
        stack.stop()
    return _summarise(billed, peaks, uploads, photo_size, large_side, large.stat().st_size, ctx.quick)


def large_cutout(path: Path, side: int) -> Path:
    """A model-like cut-out of a real photo: RGBA, an opaque elliptical subject on transparency, with
    mild sensor-like noise so the PNG is as large as a real photo's (a smooth upscale compresses to a
    fraction of that, and the PNG's bytes are held in memory while variants render)."""
    import numpy as np
    import skimage.data
    from PIL import Image, ImageDraw

    # scikit-image's sample loaders are unannotated.
    photo = skimage.data.astronaut()  # type: ignore[no-untyped-call]
    image = Image.fromarray(photo).resize((side, side), Image.Resampling.BICUBIC)
    noise = np.random.default_rng(side).integers(-4, 5, (side, side, 3), dtype=np.int8)
    pixels = np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    del noise
    alpha = Image.new("L", image.size, 0)
    ImageDraw.Draw(alpha).ellipse((side // 12, side // 16, side - side // 16, side - side // 25), fill=255)
    rgba = Image.fromarray(pixels).convert("RGBA")
    rgba.putalpha(alpha)
    rgba.save(path, "PNG", compress_level=1)
    return path


def _upload(info: common.StackInfo, kind: str, photo: bytes, index: int) -> tuple[str, str]:
    """Upload a photo whose job writes only `kind`; returns its name and job record name."""
    client = common.gcs(info)
    name = f"bench/variants/{kind}/{index}-{uuid.uuid4().hex[:8]}.jpg"
    blob = client.bucket(info.upload_bucket).blob(name)
    blob.metadata = {keys.VARIANTS: KINDS[kind]["name"]}
    blob.upload_from_string(photo, content_type="image/jpeg")
    return name, naming.job_record_name(naming.job_id(info.upload_bucket, name, int(blob.generation)))


def _ready(info: common.StackInfo, upload: tuple[str, str]) -> dict[str, Any]:
    """The upload's job once it is `submitted` with a succeeded prediction (whose webhook was dropped)."""
    name, record = upload
    client = common.gcs(info)

    def ready() -> dict[str, Any] | None:
        try:
            job = json.loads(common.read_latest(client, info.state_bucket, record))
        except Exception:
            return None
        if job["state"] in jobs.FINAL_STATES:
            raise RuntimeError(f"job for {name} is already {job['state']}: {job.get('error')}")
        if job["state"] != jobs.SUBMITTED:
            return None
        prediction = common.api(info, "GET", f"/v1/predictions/{job['prediction_ids'][-1]}")
        return {"name": name, "job": job, "prediction": prediction} if prediction["status"] == "succeeded" else None

    return common.wait_for(ready, 300, f"a submitted job with a succeeded prediction for {name}", interval=0.1)


def _jobs(info: common.StackInfo, kinds: list[str], photo: bytes) -> list[dict[str, Any]]:
    """One ready job per entry of `kinds`, all uploaded at once (the model service runs them in parallel)."""
    uploads = [_upload(info, kind, photo, i) for i, kind in enumerate(kinds)]
    return [_ready(info, upload) for upload in uploads]


def _check_written(info: common.StackInfo, job: dict[str, Any], kind: str) -> None:
    record = json.loads(
        common.read_latest(common.gcs(info), info.state_bucket, naming.job_record_name(job["job"]["job_id"]))
    )
    if record["state"] != jobs.COMPLETED or [o["variant"] for o in record["outputs"]] != [KINDS[kind]["name"]]:
        raise RuntimeError(f"{kind}: the job is {record['state']} with outputs {record.get('outputs')}")


def _upload_input(kind: str, side: int) -> tuple[bytes, str]:
    import skimage.data
    from PIL import Image

    # scikit-image's sample loaders are unannotated.
    photo = skimage.data.coffee()  # type: ignore[no-untyped-call]
    scene = Image.fromarray(photo).resize((side, side), Image.Resampling.BICUBIC)
    tags = Image.Exif()
    out = io.BytesIO()
    if kind == "jpeg-orientation-6":
        tags[0x0112] = 6
        scene.transpose(Image.Transpose.ROTATE_90).save(out, "JPEG", quality=90, exif=tags.tobytes())
        return out.getvalue(), "image/jpeg"
    if kind == "webp-orientation-3":
        tags[0x0112] = 3
        scene.transpose(Image.Transpose.ROTATE_180).save(out, "WEBP", quality=90, method=0, exif=tags.tobytes())
        return out.getvalue(), "image/webp"
    import pillow_heif

    pillow_heif.register_heif_opener()
    scene.save(out, "HEIF", quality=80)
    return out.getvalue(), "image/heic"


def _upload_peak(info: common.StackInfo, worker: Any, kind: str, side: int) -> dict[str, Any]:
    """Peak RSS of the trigger worker while it prepares and submits one upload of `kind`."""
    body, content_type = _upload_input(kind, side)
    client = common.gcs(info)
    name = f"bench/variants/uploads/{kind}-{uuid.uuid4().hex[:8]}"
    Path(f"/proc/{worker.pid}/clear_refs").write_text("5")  # VmHWM := current RSS
    idle = memory._status_kib(worker.pid, "VmRSS") * 1024
    blob = client.bucket(info.upload_bucket).blob(name)
    began = time.monotonic()
    blob.upload_from_string(body, content_type=content_type)
    record = naming.job_record_name(naming.job_id(info.upload_bucket, name, int(blob.generation)))

    def submitted() -> dict[str, Any] | None:
        try:
            job = json.loads(common.read_latest(client, info.state_bucket, record))
        except Exception:
            return None
        if job["state"] == jobs.FAILED and not job["prediction_ids"]:
            raise RuntimeError(f"{kind}: the upload failed before any prediction: {job['reason']} {job['error']}")
        return job if job["prediction_ids"] else None

    common.wait_for(submitted, 180, f"the submission of {name}", interval=0.05)
    elapsed = time.monotonic() - began
    peak = memory._status_kib(worker.pid, "VmHWM") * 1024
    return {
        "upload_bytes": len(body),
        "idle_rss_bytes": idle,
        "peak_rss_bytes": peak,
        "peak_above_idle_bytes": peak - idle,
        "seconds": round(elapsed, 3),
    }


def _summarise(
    billed: dict[str, list[float]],
    peaks: dict[str, dict[str, Any]],
    uploads: dict[str, dict[str, Any]],
    photo_size: tuple[int, int],
    large_side: int,
    large_bytes: int,
    quick: bool,
) -> dict[str, Any]:
    base = common.summary(billed["passthrough"])
    kinds: dict[str, dict[str, Any]] = {}
    for kind, seconds in billed.items():
        stats = common.summary(seconds)
        kinds[kind] = {
            "variant": KINDS[kind],
            "billed_seconds": stats,
            "ratio_to_passthrough": common.ratio(stats["p50"], base["p50"]),
            "large": peaks[kind],
        }
    worst = max(kinds, key=lambda k: kinds[k]["billed_seconds"]["p50"])
    peak_webhook = max(p["peak_rss_bytes"] for p in peaks.values())
    peak_upload = max(u["peak_rss_bytes"] for u in uploads.values())
    megapixels = large_side * large_side / 1e6
    return {
        "title": "Billed webhook time per output variant kind",
        "unit": "seconds",
        "method": (
            f"Webhook request duration as the caller sees it (the billed time), one kind per job, the kinds "
            f"interleaved; the model's real cut-out of a {photo_size[0]}x{photo_size[1]} photo. Memory: VmHWM of "
            f"the gunicorn worker (reset through /proc/PID/clear_refs) writing each kind from a "
            f"{large_side}x{large_side} ({megapixels:g} MP, {large_bytes / 1e6:.0f} MB) RGBA cut-out, and of the "
            f"trigger worker preparing a {megapixels:g} MP upload. Ratio = the slowest kind's p50 / passthrough's p50."
        ),
        "photo_size": list(photo_size),
        "large_megapixels": megapixels,
        "large_output_bytes": large_bytes,
        "kinds": kinds,
        "uploads": uploads,
        "slowest_kind": worst,
        "ratio": kinds[worst]["ratio_to_passthrough"],
        "peak_webhook_rss_bytes": peak_webhook,
        "peak_upload_rss_bytes": peak_upload,
        "webhook_memory_bytes": WEBHOOK_MEMORY_BYTES,
        "upload_memory_bytes": UPLOAD_MEMORY_BYTES,
        "target": (
            f"every kind's peak RSS at {megapixels:g} MP within the webhook's memory "
            f"({WEBHOOK_MEMORY_BYTES // 2**20} MiB), every prepared upload within on_upload's "
            f"({UPLOAD_MEMORY_BYTES // 2**20} MiB), with a quarter to spare"
        ),
        "target_met": None
        if quick
        else bool(peak_webhook <= 0.75 * WEBHOOK_MEMORY_BYTES and peak_upload <= 0.75 * UPLOAD_MEMORY_BYTES),
    }
