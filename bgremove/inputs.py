"""The image reference sent to the model for an upload: a data URL (small files) or a V4 signed URL
of the upload generation, per INPUT_MODE and DATA_URL_MAX_BYTES."""

from __future__ import annotations

import base64

from bgremove import naming
from bgremove.config import Config
from bgremove.jobs import Source
from bgremove.objects import Objects


def image_reference(source: Source, content_type: str, cfg: Config, objects: Objects) -> str:
    """What the model is given: a data URL of the bytes, or a V4 signed URL of the upload."""
    use_data_url = cfg.input_mode == "data_url" or (cfg.input_mode == "auto" and source.size <= cfg.data_url_max_bytes)
    if use_data_url:
        data = objects.read_bytes(source.bucket, source.name, source.generation)
        return f"data:{content_type};base64,{base64.b64encode(data).decode()}"
    bucket, name = source.bucket, source.name
    generation: int | None = source.generation
    if not naming.survives_urls(name):
        # Sign a copy under a plain name instead (in the state bucket, where the lifecycle rule
        # removes it), since the URL of the original would reach another object.
        bucket, name = cfg.state_bucket, naming.input_copy_name(source.job_id)
        objects.copy(source.bucket, source.name, source.generation, bucket, name)
        generation = None
    return objects.signed_url(bucket, name, generation, cfg.signed_url_ttl_seconds, cfg.signing_service_account)
