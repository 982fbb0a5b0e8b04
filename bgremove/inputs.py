"""The image reference sent to the model for an upload: a data URL (small files) or a V4 signed URL
of the upload generation, per INPUT_MODE and DATA_URL_MAX_BYTES.

Most uploads go to the model as they are, decided from the head bytes (images.HEAD_BYTES) alone:
nothing is decoded, and only a data URL reads the whole object. Some are prepared first
(`upright.prepare`), decided from the same head:

- an EXIF orientation other than 1, so the model sees the pixels upright whatever it does with
  EXIF (and when the head cannot tell, because EXIF may lie past it, the whole file is read and
  looked at; it is decoded only if it does need turning);
- HEIC/HEIF/AVIF (and GIF, when allowed): converted to JPEG, or PNG when the image has alpha;
- an animation (animated WebP, APNG, GIF): its first frame.

Prepared bytes go as a data URL when they fit (DATA_URL_MAX_BYTES in `auto` mode, MAX_UPLOAD_BYTES
in `data_url` mode, which the webhook body limit is checked against); otherwise they are written
create-only to the state bucket at `inputs/<job id>` and that object generation is signed. The
upload itself is never modified. An image that cannot be prepared raises ImageRefused
(`unsupported_image`), and so do per-upload overrides that name a bad value (`bad_metadata`), both
before any prediction is created.

Pillow and pillow_heif are imported by `upright` only when something is prepared, never here.
"""

from __future__ import annotations

import base64
import contextlib
import io

from bgremove import errors, images, keys, logs, naming, upright, variants
from bgremove.config import Config
from bgremove.jobs import Source
from bgremove.objects import Objects

UNSUPPORTED = "unsupported_image"
BAD_METADATA = "bad_metadata"
# Formats the model is not documented to read: always converted.
CONVERTED_TYPES = ("image/heic", "image/heif", "image/avif", "image/gif")


def image_reference(source: Source, content_type: str, cfg: Config, objects: Objects, head: bytes | None = None) -> str:
    """What the model is given: a data URL of the bytes, or a V4 signed URL of the upload (or of its
    prepared copy). `content_type` is the sniffed type; `head` the head bytes the caller has read
    (read again here when not given)."""
    check_overrides(source, cfg)
    use_data_url = cfg.input_mode == "data_url" or (cfg.input_mode == "auto" and source.size <= cfg.data_url_max_bytes)
    data: bytes | None = None
    if use_data_url:
        data = objects.read_bytes(source.bucket, source.name, source.generation)
        head = data  # the whole file: nothing can lie past it
    elif head is None:
        head = objects.read_head(source.bucket, source.name, source.generation, images.HEAD_BYTES)
    why = preparation_needed(head, content_type)
    if why:
        if data is None:
            data = objects.read_bytes(source.bucket, source.name, source.generation)
        prepared = _prepare(data, content_type, cfg)
        if prepared is not None:
            logs.info(
                "upload prepared for the model",
                job_id=source.job_id,
                why=prepared.why,
                content_type=prepared.content_type,
                width=prepared.width,
                height=prepared.height,
                bytes=len(prepared.data),
            )
            return _prepared_reference(source, prepared, cfg, objects)
    if data is not None and use_data_url:
        return _data_url(content_type, data)
    bucket, name = source.bucket, source.name
    generation: int | None = source.generation
    if not naming.survives_urls(name):
        # Sign a copy under a plain name instead (in the state bucket, where the lifecycle rule
        # removes it), since the URL of the original would reach another object.
        bucket, name = cfg.state_bucket, naming.input_copy_name(source.job_id)
        objects.copy(source.bucket, source.name, source.generation, bucket, name)
        generation = None
    return objects.signed_url(bucket, name, generation, cfg.signed_url_ttl_seconds, cfg.signing_service_account)


def preparation_needed(head: bytes, content_type: str) -> str:
    """Why the upload must be prepared before the model sees it, or '' when it can go as it is.
    Reads only `head` (pure byte parsing)."""
    if content_type in CONVERTED_TYPES:
        return f"{content_type} is converted to a type the model reads"
    if images.is_animated(head):
        return "animated: the model is sent the first frame"
    orientation = images.exif_orientation(head)
    if orientation != 1:
        return f"EXIF orientation {orientation}"
    if images.exif_beyond_head(head):
        return "EXIF may lie past the head"
    return ""


def check_overrides(source: Source, cfg: Config) -> None:
    """Refuse, before any prediction, per-upload overrides that could never be applied. Only when
    the claim recorded them (Source.metadata); otherwise the completion side checks them."""
    if source.metadata is None:
        return
    try:
        variants.select(cfg.output_variants, variants.overrides_from_metadata(source.metadata))
    except errors.VariantError as exc:
        raise errors.ImageRefused(BAD_METADATA, str(exc)) from None


def _prepare(data: bytes, content_type: str, cfg: Config) -> upright.Prepared | None:
    try:
        return upright.prepare(data, content_type, cfg.max_input_pixels)
    except errors.UnsupportedImage as exc:
        raise errors.ImageRefused(UNSUPPORTED, str(exc)) from None


def _data_url(content_type: str, data: bytes) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def _prepared_reference(source: Source, prepared: upright.Prepared, cfg: Config, objects: Objects) -> str:
    size = len(prepared.data)
    # The same limits the webhook body limit is checked against at start (config._check_webhook_limit).
    fits = (cfg.input_mode == "auto" and size <= cfg.data_url_max_bytes) or (
        cfg.input_mode == "data_url" and size <= cfg.max_upload_bytes
    )
    if fits:
        return _data_url(prepared.content_type, prepared.data)
    bucket, name = cfg.state_bucket, naming.input_copy_name(source.job_id)
    generation = _write_prepared(source, prepared, bucket, name, objects)
    return objects.signed_url(bucket, name, generation, cfg.signed_url_ttl_seconds, cfg.signing_service_account)


def _write_prepared(source: Source, prepared: upright.Prepared, bucket: str, name: str, objects: Objects) -> int:
    """Create the prepared copy (create-only) and return its generation. A copy an earlier attempt
    of this job wrote is reused; anything else under the name (a server-side copy of the original
    made by an earlier attempt for a name with dot segments) is replaced."""
    metadata = {
        keys.OUTPUT: "true",  # an object bgremove wrote, never an upload to process
        keys.INPUT: "prepared",
        keys.JOB: source.job_id,
        keys.SOURCE: f"gs://{source.bucket}/{source.name}",
        keys.SOURCE_GENERATION: str(source.generation),
    }
    for _ in range(3):
        try:
            stream = io.BytesIO(prepared.data)
            return objects.create_object(bucket, name, stream, len(prepared.data), prepared.content_type, metadata)
        except errors.PreconditionFailed:
            found = objects.metadata(bucket, name)
            if found is None:
                continue  # deleted meanwhile: create it again
            existing, generation = found
            if existing.get(keys.JOB) == source.job_id and existing.get(keys.INPUT) == "prepared":
                return generation  # the same upload generation, prepared the same way
            with contextlib.suppress(errors.PreconditionFailed):  # changed meanwhile: look again
                objects.delete(bucket, name, if_generation_match=generation)
    raise errors.RetryLater(f"gs://{bucket}/{name} keeps being taken while writing the prepared input")
