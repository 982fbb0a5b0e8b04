"""Names derived from an upload: the job key, state-record paths and the output object name.

Object names are flat in Cloud Storage, but people download them into directories, so an output
name never keeps `.`/`..` segments or empty segments (a backslash counts as a separator too, as it
does on Windows), stays within the 1,024-byte limit and always lands inside the configured prefix.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import unicodedata

MAX_OBJECT_NAME_BYTES = 1024
JOBS_PREFIX = "jobs/"
OPEN_PREFIX = "open/"
INPUTS_PREFIX = "inputs/"
OUTPUT_EXTENSION = ".png"


def job_key(bucket: str, name: str, generation: str | int) -> str:
    """The identity of one upload: one object generation gets at most one job."""
    return f"{bucket}/{name}#{generation}"


def job_id(bucket: str, name: str, generation: str | int) -> str:
    """A fixed-length id for the job key, safe in object names and URLs."""
    return hashlib.sha256(job_key(bucket, name, generation).encode()).hexdigest()


def is_job_id(value: str) -> bool:
    """What `job_id` makes: 64 lower-case hex digits (the task handler and the webhook check it)."""
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def job_record_name(job: str) -> str:
    return f"{JOBS_PREFIX}{job}.json"


def open_index_name(job: str) -> str:
    """The index entry that lists a job as open (see jobs.JobStore)."""
    return f"{OPEN_PREFIX}{job}"


def input_copy_name(job: str) -> str:
    """Where an upload whose name cannot travel in a URL is copied for the model to read."""
    return f"{INPUTS_PREFIX}{job}"


def survives_urls(name: str) -> bool:
    """False when HTTP clients would rewrite the name's URL path: they remove `.` and `..`
    segments (RFC 3986 5.2.4) before sending, so a signed URL would ask for another object."""
    return not any(segment in (".", "..") for segment in name.split("/"))


def output_name(source_name: str, prefix: str = "") -> str:
    """The processed object name: the same path under `prefix`, with the extension `.png`."""
    cleaned = "".join(ch for ch in source_name if unicodedata.category(ch) != "Cc")
    segments = [seg for seg in re.split(r"[/\\]", cleaned) if seg not in ("", ".", "..")]
    if not segments:
        segments = ["image"]
    stem, _ = posixpath.splitext(segments[-1])
    segments[-1] = (stem or segments[-1]) + OUTPUT_EXTENSION
    name = prefix + "/".join(segments)
    if len(name.encode()) <= MAX_OBJECT_NAME_BYTES:
        return name
    # Too long: keep a readable head and add a digest of the full source name, so two long names
    # that share a head still get different outputs and the same name always maps the same way.
    digest = hashlib.sha256(source_name.encode()).hexdigest()[:16]
    tail = f"-{digest}{OUTPUT_EXTENSION}"
    budget = MAX_OBJECT_NAME_BYTES - len(prefix.encode()) - len(tail.encode())
    if budget < 1:
        raise ValueError(f"the output prefix is too long to leave room for a name ({len(prefix.encode())} bytes)")
    head = "/".join(segments)[:budget]
    while len(head.encode()) > budget:
        head = head[:-1]
    return prefix + head.rstrip("/") + tail
