"""What the functions are built from: entry points, runtime, source archive, imports.

- entry points: every function's build_config.entry_point is a function of main.py that
  functions_framework registered as a CloudEvent function (event-triggered functions) or an HTTP
  one (the others), as main.py imported in a subprocess shows (code_facts.entry_points);
- runtime: python3XY matches the project's Python;
- source archive: only main.py, bgremove/ and requirements.txt, named by hash;
- imports: every import in main.py and bgremove/ is bgremove, the standard library or a
  distribution listed in requirements.txt. This reads the import statements of the deployed
  sources (Python's own syntax, not the core's conventions): importing the code would miss the
  imports made inside functions, which are most of the heavy ones.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from infra.checks.code_facts import CLOUD_EVENT, DECORATORS, HTTP, EntryPoints
from infra.checks.tf_model import FUNCTION_TYPE, TfFunction
from infra.checks.tfparse import locals_of, single, top_blocks, unwrap

DEPLOYED_TOP_LEVEL = frozenset({"main.py", "requirements.txt", "bgremove"})


def check_entry_points(functions: Iterable[TfFunction], entry_points: EntryPoints | None) -> list[str]:
    """Each entry point is a function of main.py that functions_framework registered with the
    signature its trigger needs (code_facts.entry_points: main imported, not parsed)."""
    if entry_points is None:
        return ["main.py does not exist"]
    problems = []
    for fn in functions:
        wanted = CLOUD_EVENT if fn.event_trigger is not None else HTTP
        if not fn.entry_point:
            problems.append(f"{fn.name}: no build_config.entry_point")
        elif fn.entry_point not in entry_points.functions:
            problems.append(f"{fn.name}: entry point {fn.entry_point!r} is not a top-level function of main.py")
        elif entry_points.signatures.get(fn.entry_point) != wanted:
            have = entry_points.signatures.get(fn.entry_point)
            registered = f"registered as {have}" if have else "not registered with functions_framework"
            problems.append(
                f"{fn.name}: main.py's {fn.entry_point} needs @functions_framework.{DECORATORS[wanted]} ({registered})"
            )
    return problems


def check_runtime(functions: Iterable[TfFunction], python_version: tuple[int, int]) -> list[str]:
    """Every function runs the project's Python."""
    major, minor = python_version
    wanted = f"python{major}{minor}"
    return [
        f"{fn.name}: runtime {fn.runtime!r}, but the project uses Python {major}.{minor} ({wanted})"
        for fn in functions
        if fn.runtime != wanted
    ]


def check_source_archive(module: Mapping[str, Mapping[str, Any]], repo_root: Path) -> list[str]:
    """The archive holds main.py, bgremove/ and requirements.txt only, and is named by hash.

    The module must build data "archive_file" from a dynamic "source" block iterating a local
    list built with fileset() from `local.source_includes`: that list is checked, and the
    fileset is re-enacted here on repo_root to list what would be deployed.
    """
    problems: list[str] = []
    archives = [b for b in top_blocks(module, "data") if b.type == "archive_file"]
    if len(archives) != 1:
        return [f'expected one data "archive_file", found {len(archives)}']
    archive = archives[0]
    for forbidden in ("source_dir", "source_file", "source_content"):
        if forbidden in archive.body:
            problems.append(f'{archive.address}: uses {forbidden}; build it from the allow-list (dynamic "source")')
    dynamic_sources = [
        dyn for entry in archive.body.get("dynamic", []) for label, dyn in entry.items() if label == "source"
    ]
    if len(dynamic_sources) != 1 or unwrap(dynamic_sources[0].get("for_each")) != "local.source_files":
        problems.append(f'{archive.address}: needs one dynamic "source" with for_each = local.source_files')
    local_values = locals_of(module)
    includes = local_values.get("source_includes")
    if not isinstance(includes, list) or not all(isinstance(p, str) for p in includes):
        return problems + ["local.source_includes must be a literal list of fileset patterns"]
    if "source_includes" not in str(local_values.get("source_files", "")):
        problems.append("local.source_files must be built from local.source_includes")
    for pattern in includes:
        top = pattern.split("/", 1)[0]
        if top not in DEPLOYED_TOP_LEVEL:
            problems.append(f"local.source_includes: {pattern!r} deploys {top!r}, which is not part of the function")
    files = simulate_fileset(repo_root, includes)
    for needed in ("main.py", "requirements.txt"):
        if needed not in includes:
            problems.append(f"local.source_includes does not include {needed}")
    if not any(p.startswith("bgremove/") for p in includes):
        problems.append("local.source_includes does not include the bgremove package")
    package_files = [f for f in files if f.startswith("bgremove/")]
    if (repo_root / "bgremove" / "__init__.py").exists() and "bgremove/__init__.py" not in package_files:
        problems.append("the archive would not contain bgremove/__init__.py")
    for path in (repo_root / "bgremove").rglob("*.py") if (repo_root / "bgremove").exists() else []:
        rel = path.relative_to(repo_root).as_posix()
        if "__pycache__" not in rel and rel not in files:
            problems.append(f"the archive would leave out {rel}")
    objects = [
        b
        for b in top_blocks(module, "resource")
        if b.type == "google_storage_bucket_object"
        and f"data.archive_file.{archive.name}.output_path" in str(b.body.get("source", ""))
    ]
    if len(objects) != 1:
        problems.append("expected one google_storage_bucket_object uploading the archive's output_path")
    elif not re.search(
        rf"data\.archive_file\.{archive.name}\.output_(md5|sha|sha256|sha512|base64sha256)\b",
        str(objects[0].body.get("name", "")),
    ):
        problems.append(
            f"{objects[0].address}: its name must contain the archive's hash, or code changes will not redeploy"
        )
    else:
        uploaded = objects[0].name
        for fn in (b for b in top_blocks(module, "resource") if b.type == FUNCTION_TYPE):
            storage = single(single(single(fn.body, "build_config") or {}, "source") or {}, "storage_source") or {}
            if unwrap(storage.get("object")) != f"google_storage_bucket_object.{uploaded}.name":
                problems.append(f"{fn.address}: build_config.source.storage_source.object is not the archive object")
    return problems


def simulate_fileset(root: Path, patterns: Iterable[str]) -> list[str]:
    """Files fileset(root, pattern) would return for each pattern, less __pycache__/*.pyc."""
    found: set[str] = set()
    for pattern in patterns:
        regex = _glob_regex(pattern)
        top = pattern.split("/", 1)[0]
        if any(c in top for c in "*?[{"):
            candidates = [p for p in root.rglob("*") if p.is_file()]
        elif (root / top).is_dir():
            candidates = [p for p in (root / top).rglob("*") if p.is_file()]
        else:
            candidates = [root / top] if (root / top).is_file() else []
        found.update(rel for rel in (p.relative_to(root).as_posix() for p in candidates) if regex.fullmatch(rel))
    return sorted(f for f in found if "__pycache__" not in f and not f.endswith(".pyc"))


def _glob_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        elif pattern[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            parts.append("[^/]")
            i += 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(parts))


def check_imports(sources: Mapping[str, str], requirements_text: str | None) -> list[str]:
    """Every absolute import is bgremove, the standard library or a requirements.txt distribution.

    sources maps a display name to Python source. A distribution's modules are read from its
    installed metadata (the test venv has them); for one that is not installed, the module
    name is guessed from the distribution name. `from a.b import c` needs a.b.c when that is
    a module somewhere, else a.b, so a shared namespace (google.cloud) proves nothing alone.
    """
    if requirements_text is None:
        return ["requirements.txt does not exist"]
    provided: set[str] = set()
    for name in requirement_names(requirements_text):
        provided |= _modules_of(name)
    problems = []
    for source_name, source in sources.items():
        for module, names, line in _imports(source):
            top = module.split(".")[0]
            if top == "bgremove" or top in sys.stdlib_module_names:
                continue
            candidates = [f"{module}.{n}" for n in names if f"{module}.{n}" in _installed_modules()]
            needed = candidates or [module]
            for wanted in needed:
                if wanted not in provided:
                    hint = _installed_by(wanted)
                    extra = f" (installed here by {hint})" if hint else ""
                    problems.append(
                        f"{source_name}:{line}: imports {wanted}, "
                        f"which no distribution in requirements.txt provides{extra}"
                    )
    return problems


def requirement_names(text: str) -> list[str]:
    """Normalised distribution names of a requirements file (options and comments skipped)."""
    names = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if match:
            names.append(_normalise(match.group(1)))
    return names


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports(source: str) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every absolute import."""
    found: list[tuple[str, list[str], int]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((alias.name, [], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [a.name for a in node.names if a.name != "*"], node.lineno))
    return found


@functools.cache
def _modules_of(distribution: str) -> frozenset[str]:
    """Dotted names of the modules and packages a distribution installs, with every prefix."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return frozenset({distribution.replace("-", "_"), distribution.replace("-", ".")})
    names: set[str] = set()
    for file in files:
        parts = file.parts
        if not parts or parts[0] in ("..", "bin") or parts[0].endswith((".dist-info", ".egg-info", ".data")):
            continue
        if not file.name.endswith((".py", ".pyi", ".so", ".pyd")):
            continue
        leaf = parts[-1].split(".", 1)[0]
        dotted = list(parts[:-1]) if leaf == "__init__" else [*parts[:-1], leaf]
        names.update(".".join(dotted[:i]) for i in range(1, len(dotted) + 1))
    return frozenset(names)


@functools.cache
def _installed_modules() -> frozenset[str]:
    names: set[str] = set()
    for dist in importlib.metadata.distributions():
        names |= _modules_of(dist.metadata["Name"])
    return frozenset(names)


def _installed_by(module: str) -> str | None:
    for dist in importlib.metadata.distributions():
        if module in _modules_of(dist.metadata["Name"]):
            return str(dist.metadata["Name"])
    return None
