"""`bgremove show gs://BUCKET/NAME`: an upload name through its generations, one job each.

A job is keyed by `bucket/name#generation` and its record is named by the key's digest, so the
state bucket's listing cannot say which records belong to a name. They are found in three ways,
cheapest first:

- the generations the uploads bucket still keeps (`Cloud.generations_of`: the live one, and the
  noncurrent ones in a bucket with versioning): each gives its job id directly;
- records whose listing metadata names their upload (`SOURCE_METADATA`, `source`: the core does
  not write it yet, so today no record has it; where one does, it is matched without a read);
- the other records, read newest first, at most `scan` of them: what a name's older generations
  need when the bucket keeps no versions of them (no versioning, or its noncurrent versions
  deleted by the lifecycle rule).

`plan` decides what to read from one listing of `jobs/`; `select` keeps the name's jobs among what
was read. Both are pure, as are the rows and the table.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from bgremove import jobs, naming
from bgremove.jobs import Job
from bgremove_cli.cloud import JobEntry
from bgremove_cli.status import STATE_STYLES

# Records of unknown upload read, newest first, to find generations the bucket keeps no version of.
DEFAULT_SCAN = 1000


def listed_source(entry: JobEntry) -> tuple[str, str, int] | None:
    """(bucket, name, generation) from the entry's listing metadata, when it names the upload the
    record is keyed by (its digest is the record's job id); None when absent or inconsistent."""
    uri = entry.source
    if not uri.startswith("gs://"):
        return None
    path, _, generation = uri[len("gs://") :].rpartition("#")
    bucket, _, name = path.partition("/")
    if not (bucket and name and generation.isdigit()):
        return None
    if naming.job_id(bucket, name, generation) != entry.job_id:
        return None
    return bucket, name, int(generation)


@dataclass(frozen=True)
class Plan:
    """Which records to read for one name, and what that covers."""

    read: tuple[str, ...]  # job ids, the name's known ones first
    from_versions: int  # records of generations the bucket keeps
    from_metadata: int  # records whose listing metadata names this upload
    scanned: int  # records of unknown upload read to look
    unread: int  # records of unknown upload left unread (beyond `scan`)
    listed: int  # records in the listing

    @property
    def complete(self) -> bool:
        """Every record that could be this name's was read or ruled out."""
        return self.unread == 0


def plan(entries: Iterable[JobEntry], bucket: str, name: str, generations: Iterable[int], scan: int) -> Plan:
    """What to read to find every job of gs://bucket/name: the records of `generations` (those the
    bucket keeps) that exist, the records the listing metadata says are this name's, and up to
    `scan` of the records that say nothing, the most recently changed first."""
    listing = list(entries)
    present = {e.job_id for e in listing}
    known = [naming.job_id(bucket, name, g) for g in sorted(set(generations), reverse=True)]
    versions = [job_id for job_id in known if job_id in present]
    matched: list[tuple[int, str]] = []  # (generation, job id)
    unknown: list[JobEntry] = []
    skip = set(known)
    for e in listing:
        if e.job_id in skip:
            continue
        source = listed_source(e)
        if source is None:
            unknown.append(e)
        elif source[:2] == (bucket, name):
            matched.append((source[2], e.job_id))
    matched.sort(reverse=True)
    unknown.sort(key=lambda e: (e.updated, e.job_id), reverse=True)
    scanned = [e.job_id for e in unknown[: max(0, scan)]]
    return Plan(
        read=(*versions, *(job_id for _, job_id in matched), *scanned),
        from_versions=len(versions),
        from_metadata=len(matched),
        scanned=len(scanned),
        unread=len(unknown) - len(scanned),
        listed=len(listing),
    )


def select(loaded: Mapping[str, tuple[Job, int]], bucket: str, name: str) -> list[Job]:
    """The jobs of gs://bucket/name among the records read, newest generation first (a name's
    generations only grow)."""
    found = [
        job
        for job_id, (job, _) in loaded.items()
        if job.source.bucket == bucket and job.source.name == name and job.job_id == job_id
    ]
    return sorted(found, key=lambda j: j.source.generation, reverse=True)


def outputs_of(job: Job) -> list[dict[str, Any]]:
    """What the job wrote (a removed job: what was deleted), one entry per object, in order;
    records older than variants name only their first output."""
    if job.outputs:
        return [dict(o) for o in job.outputs]
    if job.output_name and job.state != jobs.REMOVED:
        return [{"variant": "", "object": job.output_name, "generation": job.output_generation}]
    return []


def rows(found: list[Job], live_generation: int | None, processed_bucket: str) -> list[dict[str, Any]]:
    """One entry per job, newest first: what `show --json` prints and the table shows.

    An output another job of a newer generation of the name wrote too (the same object name) is
    marked `replaced` by that generation: the newest generation's outputs replace older ones."""
    written: dict[str, int] = {}  # object name -> the newest generation whose job wrote it
    result = []
    for job in found:  # newest first
        outputs: list[dict[str, Any]] = []
        for o in outputs_of(job):
            obj, generation = str(o.get("object", "")), int(o.get("generation") or 0)
            newer = written.get(obj)
            outputs.append(
                {
                    "variant": str(o.get("variant", "")),
                    "object": obj,
                    "generation": generation,
                    "uri": f"gs://{processed_bucket}/{obj}#{generation}",
                    "deleted": job.state == jobs.REMOVED,
                    "replaced_by_generation": newer,
                }
            )
        if job.state == jobs.COMPLETED:
            for o in outputs:
                written.setdefault(o["object"], job.source.generation)
        result.append(
            {
                "generation": job.source.generation,
                "live": live_generation is not None and job.source.generation == live_generation,
                "job_id": job.job_id,
                "state": str(job.state),
                "reason": job.reason,
                "error": job.error,
                "prediction_ids": list(job.prediction_ids),
                "outputs": outputs,
                "created_at": iso(job.created_at),
                "ended_at": iso(job.updated_at) if job.is_final else None,
            }
        )
    return result


def coverage(p: Plan, bucket: str) -> str:
    """How the jobs were found and what was not looked at, in one sentence."""
    parts = [f"{p.from_versions:,} found by the generations gs://{bucket} keeps"]
    if p.from_metadata:
        parts.append(f"{p.from_metadata:,} named by their listing metadata")
    parts.append(f"{p.scanned:,} of the other {p.scanned + p.unread:,} read")
    text = f"job records ({p.listed:,} listed): " + "; ".join(parts)
    if p.unread:
        text += f"; the {p.unread:,} least recently changed were not read, so older generations may be missing"
        text += " (--scan reads more)"
    return text


def render(
    uri: str, table_rows: list[dict[str, Any]], live_generation: int | None, live_has_job: bool, note: str
) -> RenderableType:
    if live_generation is None:
        live = Text("live generation: none (the upload does not exist now)")
    elif live_has_job:
        live = Text.assemble("live generation: ", (str(live_generation), "bold"))
    else:
        live = Text(
            f"live generation: {live_generation}, which has no job yet (`bgremove backfill {uri}` admits it)",
            style="yellow",
        )
    count = len(table_rows)
    parts: list[RenderableType] = [
        Text(f"{uri}: {count} generation{'s' if count != 1 else ''} with a job, newest first", style="bold"),
        live,
    ]
    for row in table_rows:
        head = Text.assemble(
            "\n", (f"#{row['generation']}", "bold"), "  ", (row["state"], STATE_STYLES.get(row["state"], ""))
        )
        if row["live"]:
            head.append("  live", style="bold green")
        head.append(f"  ended {_when(row['ended_at'])}" if row["ended_at"] else "  not ended", style="dim")
        details = Table.grid(padding=(0, 2))
        details.add_column(style="dim")
        details.add_column(overflow="fold")
        details.add_row("  job", row["job_id"])
        details.add_row("  predictions", escape(", ".join(row["prediction_ids"])) or "—")
        details.add_row("  outputs", "\n".join(escape(_output_line(o)) for o in row["outputs"]) or "—")
        if row["state"] == jobs.FAILED:
            details.add_row("  reason", escape(f"{row['reason']}: {row['error']}" if row["error"] else row["reason"]))
        elif row["error"]:
            details.add_row("  why", escape(row["error"]))
        parts += [head, details]
    parts += [Text(""), Text(note, style="dim")]
    return Group(*parts)


def _when(stamp: str) -> str:
    return stamp.replace("T", " ").rstrip("Z") + " UTC"


def _output_line(o: Mapping[str, Any]) -> str:
    line = str(o["uri"])
    if o.get("variant"):
        line += f" ({o['variant']})"
    if o.get("deleted"):
        line += " deleted"
    elif o.get("replaced_by_generation"):
        line += f" replaced by {o['replaced_by_generation']}'s"
    return line


def iso(ts: float) -> str:
    """UTC to the millisecond: a name's generations can end within a second of each other."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"
