"""`make demo`: start the offline stack, drop photos into the uploads bucket, wait for their
cut-outs, save them with a contact sheet in demo-output/, print a table, and stop the stack.

    python -m offline_cloud.demo [IMAGE ...]

Without arguments it uses three photographs that ship with scikit-image. Exits non-zero unless
every image was processed.
"""

from __future__ import annotations

import io
import json
import mimetypes
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from google.cloud import storage
from PIL import Image, ImageDraw

from offline_cloud.client import storage_client
from offline_cloud.stack import ROOT, Stack, StackError, StackInfo, StackOptions

OUTPUT_DIR = ROOT / "demo-output"
SAMPLES = ("coffee", "astronaut", "chelsea")
TIMEOUT_SECONDS = 120


@dataclass
class Row:
    name: str
    original: bytes
    generation: int = 0
    prediction_id: str = ""
    status: str = "pending"
    seconds: float = 0.0
    output: bytes = b""


def sample_images(paths: list[str]) -> list[tuple[str, bytes, str]]:
    if paths:
        images = []
        for path in map(Path, paths):
            if not path.is_file():
                raise SystemExit(f"demo: no such file: {path}")
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
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
    print("starting the offline stack (storage emulator, Eventarc relay, predictions service, functions)...")
    stack = Stack(StackOptions(directory=ROOT / ".stack"))
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
    for row in rows:
        if row.output:
            (OUTPUT_DIR / Path(row.name).with_suffix(".png").name).write_bytes(row.output)
    sheet = OUTPUT_DIR / "contact-sheet.png"
    contact_sheet(rows).save(sheet)
    _print_table(rows)
    print(f"\ncut-outs and {sheet.relative_to(ROOT)} written to {OUTPUT_DIR.relative_to(ROOT)}/")
    failed = [row for row in rows if row.status != "completed"]
    if failed:
        print(f"demo: {len(failed)} of {len(rows)} images were not processed", file=sys.stderr)
        return 1
    return 0


def _wait(gcs: storage.Client, info: StackInfo, rows: list[Row], started: dict[str, float]) -> None:
    """Poll each upload's job record until it is final (completed or failed)."""
    from bgremove import naming

    deadline = time.monotonic() + TIMEOUT_SECONDS
    while time.monotonic() < deadline and any(row.status == "pending" for row in rows):
        for row in (r for r in rows if r.status == "pending"):
            job_id = naming.job_id(info.upload_bucket, row.name, row.generation)
            record = gcs.bucket(info.state_bucket).get_blob(naming.job_record_name(job_id))
            if record is None:
                continue
            job = json.loads(record.download_as_bytes())
            row.prediction_id = job.get("prediction_ids", [""])[-1] if job.get("prediction_ids") else ""
            if job["state"] in ("completed", "failed"):
                row.status = job["state"] if job["state"] == "completed" else f"failed: {job['reason']}"
                row.seconds = time.monotonic() - started[row.name]
                if job["state"] == "completed":
                    row.output = gcs.bucket(info.processed_bucket).blob(job["output_name"]).download_as_bytes()
        time.sleep(0.2)
    for row in rows:
        if row.status == "pending":
            row.status = f"timed out after {TIMEOUT_SECONDS}s"


def contact_sheet(rows: list[Row], height: int = 240) -> Image.Image:
    """Each original beside its cut-out, the cut-out over a checkerboard to show transparency."""
    pairs = []
    for row in rows:
        original = Image.open(io.BytesIO(row.original)).convert("RGBA")
        scale = height / original.height
        size = (max(1, round(original.width * scale)), height)
        original = original.resize(size)
        board = checkerboard(size)
        if row.output:
            board.alpha_composite(Image.open(io.BytesIO(row.output)).convert("RGBA").resize(size))
        pairs.append((original, board))
    gap = 8
    width = max((a.width + b.width + 3 * gap for a, b in pairs), default=100)
    sheet = Image.new("RGBA", (width, len(pairs) * (height + gap) + gap), "white")
    for i, (original, cutout) in enumerate(pairs):
        y = gap + i * (height + gap)
        sheet.paste(original, (gap, y))
        sheet.paste(cutout, (2 * gap + original.width, y))
    return sheet


def checkerboard(size: tuple[int, int], square: int = 12) -> Image.Image:
    board = Image.new("RGBA", size, (255, 255, 255, 255))
    draw = ImageDraw.Draw(board)
    for y in range(0, size[1], square):
        for x in range((y // square) % 2 * square, size[0], 2 * square):
            draw.rectangle((x, y, x + square - 1, y + square - 1), fill=(204, 204, 204, 255))
    return board


def _print_table(rows: list[Row]) -> None:
    headers = ("object", "prediction id", "status", "seconds")
    table = [(row.name, row.prediction_id or "-", row.status, f"{row.seconds:.2f}") for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print("\n" + line + "\n" + "-" * len(line))
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
