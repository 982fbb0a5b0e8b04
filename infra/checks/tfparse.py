"""Loading infra/*.tf as data, and a formatting check.

The parser (python-hcl2) lives in its own venv, .venv-hcl, made by infra/checks/setup.sh; this
module only calls it in a subprocess, so it runs on the project's interpreter with no extra
packages. Parsed bodies keep python-hcl2's shape: a block is a list of dicts, each marked
with "__is_block__": True; an attribute is a plain value (an expression is a "${...}" string).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra"
SETUP_SCRIPT = INFRA_DIR / "checks" / "setup.sh"
HCL_DUMP = INFRA_DIR / "checks" / "hcl_dump.py"
HCL_PYTHON = REPO_ROOT / ".venv-hcl" / "bin" / "python"
CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"
CACHE_DIR = REPO_ROOT / ".cache"

BLOCK_MARK = "__is_block__"
META_KEYS = frozenset({BLOCK_MARK, "__comments__", "__inline_comments__", "__start_line__", "__end_line__"})


class CheckToolError(RuntimeError):
    """A tool the checks need could not be set up or run."""


def run_setup(timeout: float = 900) -> None:
    """Run infra/checks/setup.sh (idempotent; about 0.1 s when everything is in place)."""
    proc = subprocess.run(["bash", str(SETUP_SCRIPT)], capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise CheckToolError(
            f"{SETUP_SCRIPT} failed with exit code {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )


def tf_files(root: Path = INFRA_DIR) -> list[Path]:
    """Every .tf file under root, skipping .terraform/ working directories."""
    return sorted(p for p in root.rglob("*.tf") if ".terraform" not in p.relative_to(root).parts)


def parse_texts(texts: Mapping[str, str], python: Path = HCL_PYTHON) -> dict[str, dict[str, Any]]:
    """Parse HCL texts in .venv-hcl: {name: {"ok": bool, "body" | "error": ...}}."""
    if not python.exists():
        raise CheckToolError(f"{python} is missing: run {SETUP_SCRIPT}")
    proc = subprocess.run(
        [str(python), str(HCL_DUMP)],
        input=json.dumps(dict(texts)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    if proc.returncode != 0:
        raise CheckToolError(f"hcl_dump.py failed ({proc.returncode}): {proc.stderr[-4000:]}")
    result: dict[str, dict[str, Any]] = json.loads(proc.stdout)
    return result


def parse_files(paths: list[Path], root: Path = REPO_ROOT) -> dict[str, dict[str, Any]]:
    """Parse files; keys are paths relative to root (posix)."""
    return parse_texts({p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in paths})


# ---------------------------------------------------------------------------
# Walking parsed bodies
# ---------------------------------------------------------------------------


def is_block_list(value: Any) -> TypeGuard[list[dict[str, Any]]]:
    """True for python-hcl2's representation of one or more blocks of the same type."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, dict) and item.get(BLOCK_MARK) is True for item in value)
    )


def labelled(value: Any) -> bool:
    """True for a labelled block: [{label: {...block...}}] (resource "t" "n", dynamic "x")."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, dict) and BLOCK_MARK not in item for item in value)
    )


def items(body: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """The arguments and blocks of a body, without python-hcl2's metadata keys."""
    for key, value in body.items():
        if key not in META_KEYS:
            yield key, value


@dataclass(frozen=True)
class Block:
    """A top-level resource or data block."""

    kind: str  # "resource" or "data"
    type: str
    name: str
    body: dict[str, Any]
    file: str

    @property
    def address(self) -> str:
        prefix = "data." if self.kind == "data" else ""
        return f"{prefix}{self.type}.{self.name}"


def top_blocks(parsed: Mapping[str, Mapping[str, Any]], kind: str) -> Iterator[Block]:
    """Resource ("resource") or data source ("data") blocks of parsed files."""
    for file, body in parsed.items():
        for entry in body.get(kind, []):
            for type_, named in entry.items():
                for name, block in named.items():
                    yield Block(kind, type_, name, block, file)


def single(body: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """The one block `key` inside body, or None."""
    value = body.get(key)
    if is_block_list(value) and len(value) == 1:
        block: dict[str, Any] = value[0]
        return block
    return None


def locals_of(parsed: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """All locals of a set of files (one module)."""
    merged: dict[str, Any] = {}
    for body in parsed.values():
        for block in body.get("locals", []):
            merged.update(dict(items(block)))
    return merged


def variables_of(parsed: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """All variable blocks of a set of files: {name: body}."""
    found: dict[str, dict[str, Any]] = {}
    for body in parsed.values():
        for entry in body.get("variable", []):
            found.update(entry)
    return found


_WHOLE_EXPR = re.compile(r"^\$\{(.*)\}$", re.DOTALL)


def unwrap(value: Any) -> Any:
    """'${expr}' -> 'expr' when the whole string is one interpolation; otherwise unchanged."""
    if isinstance(value, str):
        match = _WHOLE_EXPR.match(value)
        if match and _balanced(match.group(1)):
            return match.group(1)
    return value


def _balanced(text: str) -> bool:
    depth = 0
    in_string = False
    escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char in "{[(":
            depth += 1
        elif char in "}])":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def split_top_level(text: str, separator: str = ",") -> list[str]:
    """Split an expression on separators that are outside brackets and strings."""
    parts: list[str] = []
    depth = 0
    in_string = False
    escaped = False
    current: list[str] = []
    for char in text:
        if in_string:
            current.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char in "{[(":
            depth += 1
        elif char in "}])":
            depth -= 1
        if char == separator and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    tail = "".join(current).strip()
    if tail:
        parts.append(tail)
    return parts


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------

_OPENERS = {"{": "}", "[": "]", "(": ")"}
_CLOSERS = {"}", "]", ")"}
_HEREDOC = re.compile(r'<<-?\s*"?([A-Za-z_][A-Za-z0-9_]*)"?\s*$')


def format_problems(text: str, name: str = "<text>") -> list[str]:
    """Layout problems in the style of `terraform fmt`.

    Checks: UTF-8 text with LF line ends and a final newline, no tabs, no trailing whitespace,
    and 2-space indentation that follows bracket nesting: a line is indented two spaces per
    enclosing line that opened brackets; a line that starts by closing brackets lines up with
    the line that opened them. Heredoc bodies are not checked. `=` alignment is not checked.
    """
    problems: list[str] = []
    if "\r" in text:
        problems.append(f"{name}: carriage returns (use LF line ends)")
    if text and not text.endswith("\n"):
        problems.append(f"{name}: no newline at end of file")
    if text.endswith("\n\n"):
        problems.append(f"{name}: blank lines at end of file")
    stack: list[int] = []  # for each open bracket, the number of the line that opened it
    heredoc_end: str | None = None
    in_block_comment = False
    for number, raw in enumerate(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"), 1):
        where = f"{name}:{number}"
        if heredoc_end is not None:
            if raw.strip() == heredoc_end:
                heredoc_end = None
            continue
        if "\t" in raw:
            problems.append(f"{where}: tab character")
        if raw != raw.rstrip():
            problems.append(f"{where}: trailing whitespace")
        stripped = raw.strip()
        if not stripped:
            continue
        code, in_block_comment, heredoc_end = _code_of(raw, in_block_comment)
        lead = code.lstrip()
        leading_closers = 0
        for char in lead:
            if char in _CLOSERS:
                leading_closers += 1
            elif char != " ":
                break
        open_lines = stack[: len(stack) - leading_closers] if leading_closers else stack
        expected = 2 * len(set(open_lines))
        indent = len(raw) - len(raw.lstrip(" "))
        if not (in_block_comment and not code.strip()) and indent != expected:
            problems.append(f"{where}: indented {indent} spaces, expected {expected}")
        for char in code:
            if char in _OPENERS:
                stack.append(number)
            elif char in _CLOSERS:
                if not stack:
                    problems.append(f"{where}: unbalanced '{char}'")
                else:
                    stack.pop()
    if stack:
        problems.append(f"{name}: {len(stack)} bracket(s) left open")
    return problems


def _code_of(line: str, in_block_comment: bool) -> tuple[str, bool, str | None]:
    """The bracket-relevant part of a line: strings and comments blanked out.

    Returns (code, still inside a /* */ comment, heredoc terminator opened on this line).
    """
    out: list[str] = []
    i = 0
    in_string = False
    interp_depth = 0
    while i < len(line):
        char = line[i]
        if in_block_comment:
            if line.startswith("*/", i):
                in_block_comment = False
                i += 2
            else:
                i += 1
            out.append(" ")
            continue
        if in_string:
            if char == "\\":
                i += 2
                out.append("  ")
                continue
            if line.startswith("${", i) or line.startswith("%{", i):
                interp_depth += 1
                i += 2
                out.append("  ")
                continue
            if char == "}" and interp_depth:
                interp_depth -= 1
            elif char == '"' and not interp_depth:
                in_string = False
            out.append(" ")
            i += 1
            continue
        if char == '"':
            in_string = True
            out.append(" ")
            i += 1
            continue
        if char == "#" or line.startswith("//", i):
            break
        if line.startswith("/*", i):
            in_block_comment = True
            i += 2
            out.append("  ")
            continue
        out.append(char)
        i += 1
    code = "".join(out)
    heredoc = _HEREDOC.search(code.rstrip())
    return code, in_block_comment, heredoc.group(1) if heredoc else None
