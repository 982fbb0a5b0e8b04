"""`make demo`: start the offline stack, drop photos into the uploads bucket, wait for their
cut-outs, save them with a contact sheet in demo-output/, print a table, and stop the stack.

    python -m offline_cloud.demo [IMAGE ...]

Without arguments it uses three photographs that ship with scikit-image. The stack is configured
with a few output variants (DEMO_VARIANTS: the cut-out, a white square JPEG cropped to the subject,
the mask), or those of the OUTPUT_VARIANTS environment variable when it is set; every variant of
every image is saved, and the contact sheet shows them side by side. Exits non-zero unless every
image was processed.
"""

from __future__ import annotations

import io
import json
import mimetypes
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import google.cloud.storage as storage
from PIL import Image, ImageDraw

from bgremove import jobs, naming
from offline_cloud.client import storage_client
from offline_cloud.stack import ROOT, Stack, StackError, StackInfo, StackOptions

OUTPUT_DIR = ROOT / "demo-output"
SAMPLES = ("coffee", "astronaut", "chelsea")
TIMEOUT_SECONDS = 120
# What the demo writes for each image (README, Outputs): the model's PNG as it is, what a marketplace
# wants (the subject on white, cropped with a margin, square, at most 1024 px, JPEG) and the mask.
DEMO_VARIANTS = [
    {"name": "cutout"},
    {
        "name": "white",
        "format": "jpeg",
        "background": "#ffffff",
        "crop": True,
        "margin": "5%",
        "canvas": "square",
        "max_size": 1024,
    },
    {"name": "mask", "mask": True},
]
# Phone formats that the standard library may not know by their extension.
CONTENT_TYPES = {".heic": "image/heic", ".heif": "image/heif", ".avif": "image/avif", ".webp": "image/webp"}


@dataclass
class Row:
    name: str
    original: bytes
    generation: int = 0
    prediction_id: str = ""
    status: str = "pending"
    seconds: float = 0.0
    outputs: list[tuple[str, str, bytes]] = field(default_factory=list)  # (variant, object name, bytes)


def sample_images(paths: list[str]) -> list[tuple[str, bytes, str]]:
    if paths:
        images = []
        for path in map(Path, paths):
            if not path.is_file():
                raise SystemExit(f"demo: no such file: {path}")
            content_type = (
                CONTENT_TYPES.get(path.suffix.lower())
                or mimetypes.guess_type(path.name)[0]
                or "application/octet-stream"
            )
            images.append((f"demo/{path.name}", path.read_bytes(), content_type))
        return images
    import skimage.data

    images = []
    for name in SAMPLES:
        buf = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(buf, "JPEG", quality=92)
        images.append((f"demo/{name}.jpg", buf.getvalue(), "image/jpeg"))
    return images


def run(paths: list[str]) -> int:
    images = sample_images(paths)
    variants = os.environ.get("OUTPUT_VARIANTS") or json.dumps(DEMO_VARIANTS)
    print("starting the offline stack (storage emulator, Eventarc relay, predictions service, functions)...")
    print(f"output variants: {', '.join(v.get('name', '?') for v in json.loads(variants))}")
    stack = Stack(StackOptions(directory=ROOT / ".stack", function_env={"OUTPUT_VARIANTS": variants}))
    try:
        info = stack.start()
    except StackError as exc:
        print(f"demo: the offline stack did not start: {exc}", file=sys.stderr)
        return 1
    try:
        gcs = storage_client(info)
        rows = [Row(name, data) for name, data, _ in images]
        started = {}
        for row, (_, data, content_type) in zip(rows, images, strict=True):
            blob = gcs.bucket(info.upload_bucket).blob(row.name)
            blob.upload_from_string(data, content_type=content_type)
            row.generation = int(blob.generation)
            started[row.name] = time.monotonic()
            print(f"uploaded gs://{info.upload_bucket}/{row.name}")
        _wait(gcs, info, rows, started)
    finally:
        stack.stop()
    OUTPUT_DIR.mkdir(exist_ok=True)
    written = 0
    for row in rows:
        for _, name, data in row.outputs:
            (OUTPUT_DIR / Path(name).name).write_bytes(data)
            written += 1
    sheet = OUTPUT_DIR / "contact-sheet.png"
    contact_sheet(rows).save(sheet)
    _print_table(rows)
    print(f"\n{written} outputs and {sheet.relative_to(ROOT)} written to {OUTPUT_DIR.relative_to(ROOT)}/")
    failed = [row for row in rows if row.status != jobs.COMPLETED]
    if failed:
        print(f"demo: {len(failed)} of {len(rows)} images were not processed", file=sys.stderr)
        return 1
    return 0


def _wait(gcs: storage.Client, info: StackInfo, rows: list[Row], started: dict[str, float]) -> None:
    """Poll each upload's job record until it is final (completed or failed)."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while time.monotonic() < deadline and any(row.status == "pending" for row in rows):
        for row in (r for r in rows if r.status == "pending"):
            job_id = naming.job_id(info.upload_bucket, row.name, row.generation)
            record = gcs.bucket(info.state_bucket).get_blob(naming.job_record_name(job_id))
            if record is None:
                continue
            job = json.loads(record.download_as_bytes())
            row.prediction_id = job.get("prediction_ids", [""])[-1] if job.get("prediction_ids") else ""
            if job["state"] in jobs.FINAL_STATES:
                row.status = job["state"] if job["state"] == jobs.COMPLETED else f"{jobs.FAILED}: {job['reason']}"
                row.seconds = time.monotonic() - started[row.name]
                if job["state"] == jobs.COMPLETED:
                    # One entry per variant; a record from before variants has only output_name.
                    outputs = job.get("outputs") or [{"variant": "cutout", "object": job["output_name"]}]
                    bucket = gcs.bucket(info.processed_bucket)
                    row.outputs = [
                        (o["variant"], o["object"], bucket.blob(o["object"]).download_as_bytes()) for o in outputs
                    ]
        time.sleep(0.2)
    for row in rows:
        if row.status == "pending":
            row.status = f"timed out after {TIMEOUT_SECONDS}s"


def contact_sheet(rows: list[Row], height: int = 240) -> Image.Image:
    """Each original beside every one of its outputs, named above; transparency over a checkerboard."""
    gap, label = 8, 16
    lines = []
    for row in rows:
        original = _open(row.original).convert("RGBA")
        tiles = [("original", original.resize(_fit(original.size, height)))]
        for variant, _, data in row.outputs:
            output = _open(data)
            tile = checkerboard(_fit(output.size, height))
            tile.alpha_composite(output.convert("RGBA").resize(tile.size))
            tiles.append((variant, tile))
        lines.append(tiles)
    width = max((sum(tile.width + gap for _, tile in tiles) + gap for tiles in lines), default=100)
    sheet = Image.new("RGBA", (width, len(lines) * (height + label + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    for i, tiles in enumerate(lines):
        y, x = gap + i * (height + label + gap), gap
        for name, tile in tiles:
            draw.text((x, y), name, fill=(60, 60, 60, 255))
            sheet.paste(tile, (x, y + label))
            x += tile.width + gap
    return sheet


def _open(data: bytes) -> Image.Image:
    try:  # HEIC/HEIF originals, when the user's own images are such
        import pillow_heif

        pillow_heif.register_heif_opener()
    except ImportError:
        pass
    return Image.open(io.BytesIO(data))


def _fit(size: tuple[int, int], height: int) -> tuple[int, int]:
    return max(1, round(size[0] * height / size[1])), height


def checkerboard(size: tuple[int, int], square: int = 12) -> Image.Image:
    board = Image.new("RGBA", size, (255, 255, 255, 255))
    draw = ImageDraw.Draw(board)
    for y in range(0, size[1], square):
        for x in range((y // square) % 2 * square, size[0], 2 * square):
            draw.rectangle((x, y, x + square - 1, y + square - 1), fill=(204, 204, 204, 255))
    return board


def _print_table(rows: list[Row]) -> None:
    headers = ("object", "prediction id", "status", "seconds", "outputs")
    table = [
        (row.name, row.prediction_id or "-", row.status, f"{row.seconds:.2f}", ", ".join(v for v, _, _ in row.outputs))
        for row in rows
    ]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print("\n" + line + "\n" + "-" * len(line))
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
