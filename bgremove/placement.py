"""Where a job's outputs may go, decided from what the output name holds: the newest generation of
an upload wins, and nothing but this pipeline's own outputs for the same source name is replaced.

Each output object records the upload it was made from in its custom metadata (`keys.SOURCE`, the
gs:// name, and `keys.SOURCE_GENERATION`). A job writing an output judges what is there (`judge`): nothing
(create it, only if still absent), its own output (a redelivery: keep it), an output of an older
generation of the same upload (replace it, only if it is still that object generation), an
output of a newer generation (this job is superseded: write nothing), or anything else — a user's
file, another upload's output — which is never touched. The write itself is conditional on the
generation judged, so of two jobs racing for a name the storage decides, and the loser judges
again over what the winner wrote.

Also here: the delivery headers outputs copy from their upload.
"""

from __future__ import annotations

import contextlib
import enum
import posixpath
import re
from typing import Any
from urllib.parse import quote

from bgremove import errors, keys, logs
from bgremove.config import Config
from bgremove.deps import Deps
from bgremove.jobs import Job
from bgremove.objects import Delivery


class Verdict(enum.Enum):
    FREE = "free"  # nothing there: create it (if_generation_match=0)
    OURS = "ours"  # this job's output already: keep it
    OLDER = "older"  # this upload's output from an older generation: replace that object generation
    NEWER = "newer"  # this upload's output from a newer generation: this job is superseded
    FOREIGN = "foreign"  # a user's file or another upload's output: never touched


def judge(found: tuple[dict[str, str], int] | None, job: Job) -> Verdict:
    """What `job` may do with an output name holding `found` (its metadata and generation)."""
    if found is None:
        return Verdict.FREE
    metadata = found[0]
    if metadata.get(keys.JOB) == job.job_id:
        return Verdict.OURS
    if metadata.get(keys.OUTPUT) != "true" or metadata.get(keys.SOURCE) != job.source.object_uri:
        return Verdict.FOREIGN
    try:
        made_from = int(metadata.get(keys.SOURCE_GENERATION, ""))
    except ValueError:
        return Verdict.FOREIGN  # an output we cannot place in time is left alone
    if made_from < job.source.generation:
        return Verdict.OLDER
    if made_from > job.source.generation:
        return Verdict.NEWER
    return Verdict.FOREIGN  # the same upload generation but another job: not ours to replace


def delivery(job: Job, output_name: str, cache_control: str) -> Delivery:
    """The headers an output is served with: the upload's Cache-Control (or CACHE_CONTROL when
    set), its Content-Disposition naming the output's own file, and its Content-Language."""
    source = job.source
    return Delivery(
        cache_control=cache_control or source.cache_control,
        content_disposition=_disposition(source.content_disposition, posixpath.basename(output_name)),
        content_language=source.content_language,
    )


_DISPOSITION_TYPE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9!#$&+.^_`|~-]*)")


def _disposition(source: str, filename: str) -> str:
    """The upload's disposition type (inline, attachment) with the output's file name: a name copied
    as it was would download the PNG cut-out as `photo.jpg`."""
    if not source.strip():
        return ""
    matched = _DISPOSITION_TYPE.match(source)
    kind = matched.group(1).lower() if matched else "inline"
    ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_").replace("\\", "_")
    value = f'{kind}; filename="{ascii_name}"'
    if ascii_name != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"  # RFC 6266 / 5987 for other names
    return value


def copied_metadata(job: Job) -> dict[str, str]:
    """The upload's own custom metadata, which outputs carry too (never `bgremove-*` keys)."""
    return {k: v for k, v in job.source.custom.items() if not keys.is_ours(k)}


def delete_if_ours(job_id: str, entry: dict[str, Any], cfg: Config, deps: Deps) -> bool:
    """Delete one recorded output (`{"object", "generation"}`) only while it is still the object
    generation job `job_id` wrote: checked by a read (the storage emulator ignores delete
    preconditions) and by the delete's own precondition. True when it was deleted."""
    name, generation = str(entry.get("object", "")), int(entry.get("generation") or 0)
    found = deps.objects.metadata(cfg.processed_bucket, name)
    if found is None or found[1] != generation or found[0].get(keys.JOB) != job_id:
        logs.info("output left alone: it is no longer what this job wrote", job_id=job_id, output=name)
        return False
    with contextlib.suppress(errors.PreconditionFailed):
        deps.objects.delete(cfg.processed_bucket, name, if_generation_match=generation)
        return True
    return False
