"""Argument schemas of the Terraform providers, built offline from the cdktf bindings.

The PyPI wheels cdktf-cdktf-provider-google and cdktf-cdktf-provider-archive (pinned in
requirements-schema.txt, downloaded by setup.sh into .cache/wheels) hold a jsii assembly that
describes every resource, data source and provider configuration, with each nested block as a
struct. This module reduces an assembly to a compact map, cached as JSON under
.cache/provider-schema/:

    {"resource" | "data" | "provider": {terraform type: SCHEMA}}
    SCHEMA = {"args": {name: {"required": bool, "block": None | {"list": bool, "args": {...}}}},
              "attrs": [every name readable on the object, arguments and computed attributes]}

and checks parsed Terraform against it: unknown arguments, missing required ones, blocks
written as arguments and the reverse (recursing into nested and dynamic blocks), and
references to attributes that do not exist.
"""

from __future__ import annotations

import difflib
import io
import json
import re
import tarfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from infra.checks.tfparse import CACHE_DIR, INFRA_DIR, is_block_list, items

REQUIREMENTS = INFRA_DIR / "checks" / "requirements-schema.txt"
WHEEL_DIR = CACHE_DIR / "wheels"
SCHEMA_DIR = CACHE_DIR / "provider-schema"
FORMAT_VERSION = 1

Schema = dict[str, Any]

_LINK = re.compile(
    r"\{@link https://registry\.terraform\.io/providers/[^/]+/[^/]+/[^/]+/docs"
    r"(?:/(resources|data-sources)/[^ #]*)? (\w+)\}"
)
_ARG_LINK = re.compile(r"#(\w+) ")
_BASES = {
    "cdktf.TerraformResource": "resource",
    "cdktf.TerraformDataSource": "data",
    "cdktf.TerraformProvider": "provider",
}


def pinned_wheels(requirements: Path = REQUIREMENTS) -> list[tuple[str, str]]:
    """(distribution, version) pairs pinned in requirements-schema.txt."""
    pins = []
    for line in requirements.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"^([A-Za-z0-9._-]+)==([A-Za-z0-9.+-]+)", line)
        if match:
            pins.append((match.group(1), match.group(2)))
    return pins


def wheel_path(distribution: str, version: str, wheel_dir: Path = WHEEL_DIR) -> Path:
    return wheel_dir / f"{re.sub(r'[-.]+', '_', distribution)}-{version}-py3-none-any.whl"


def load_schemas(wheel_dir: Path = WHEEL_DIR, cache_dir: Path = SCHEMA_DIR) -> dict[str, dict[str, Schema]]:
    """The merged schema map of every pinned provider (built once, then read from the cache)."""
    merged: dict[str, dict[str, Schema]] = {"resource": {}, "data": {}, "provider": {}}
    for distribution, version in pinned_wheels():
        wheel = wheel_path(distribution, version, wheel_dir)
        cached = cache_dir / f"{wheel.stem}.v{FORMAT_VERSION}.json"
        if cached.exists():
            schema = json.loads(cached.read_text(encoding="utf-8"))
        else:
            if not wheel.exists():
                raise FileNotFoundError(f"{wheel} is missing: run infra/checks/setup.sh")
            schema = build_schema(read_assembly(wheel))
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp")
            tmp.write_text(json.dumps(schema, separators=(",", ":")), encoding="utf-8")
            tmp.replace(cached)
        for kind in merged:
            merged[kind].update(schema[kind])
    return merged


def read_assembly(wheel: Path) -> dict[str, Any]:
    """The jsii assembly (package/.jsii inside _jsii/*.jsii.tgz) of a cdktf provider wheel."""
    with zipfile.ZipFile(wheel) as archive:
        members = [n for n in archive.namelist() if "/_jsii/" in n and n.endswith(".jsii.tgz")]
        if len(members) != 1:
            raise ValueError(f"{wheel}: expected one _jsii/*.jsii.tgz, found {members}")
        data = archive.read(members[0])
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        handle = tar.extractfile("package/.jsii")
        if handle is None:
            raise ValueError(f"{wheel}: no package/.jsii")
        assembly: dict[str, Any] = json.load(handle)
        return assembly


def build_schema(assembly: Mapping[str, Any]) -> dict[str, dict[str, Schema]]:
    """Reduce a jsii assembly to {"resource"|"data"|"provider": {type: schema}}."""
    types: Mapping[str, Any] = assembly["types"]
    result: dict[str, dict[str, Schema]] = {"resource": {}, "data": {}, "provider": {}}
    for spec in types.values():
        kind = _BASES.get(spec.get("base", ""))
        if spec.get("kind") != "class" or kind is None:
            continue
        match = _LINK.search(spec.get("docs", {}).get("summary", ""))
        if not match:
            continue
        tf_type = match.group(2)
        config = next(
            (p["type"].get("fqn") for p in spec.get("initializer", {}).get("parameters", []) if p["name"] == "config"),
            None,
        )
        args = _struct_args(types, config, set()) if config else {}
        attrs = sorted(
            set(args)
            | {"id"}
            | {
                _snake(p["name"])
                for p in spec.get("properties", [])
                if not p.get("static") and not p["name"].endswith("Input") and p["name"] != "tfResourceType"
            }
        )
        result[kind][tf_type] = {"args": args, "attrs": attrs}
    return result


def _struct_args(types: Mapping[str, Any], fqn: str, seen: set[str]) -> dict[str, Any]:
    struct = types[fqn]
    args: dict[str, Any] = {}
    for prop in struct.get("properties", []):
        link = _ARG_LINK.search(prop.get("docs", {}).get("remarks", ""))
        name = link.group(1) if link else _snake(prop["name"])
        block = _block_of(types, prop["type"], seen | {fqn})
        args[name] = {"required": not prop.get("optional", False), "block": block}
    return args


def _block_of(types: Mapping[str, Any], type_ref: Mapping[str, Any], seen: set[str]) -> dict[str, Any] | None:
    """A nested-block description when the property is a struct (or list of structs)."""
    candidates = type_ref["union"]["types"] if "union" in type_ref else [type_ref]
    for candidate in candidates:
        is_list = False
        if candidate.get("collection", {}).get("kind") == "array":
            candidate = candidate["collection"]["elementtype"]
            is_list = True
        fqn = candidate.get("fqn")
        if fqn and types.get(fqn, {}).get("datatype") and fqn not in seen:
            return {"list": is_list, "args": _struct_args(types, fqn, seen)}
    return None


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# ---------------------------------------------------------------------------
# Checking parsed Terraform
# ---------------------------------------------------------------------------

RESOURCE_META = frozenset({"count", "for_each", "depends_on", "provider", "lifecycle", "provisioner", "connection"})
DATA_META = frozenset({"count", "for_each", "depends_on", "provider", "lifecycle"})
PROVIDER_META = frozenset({"alias"})


def check_blocks(parsed: Mapping[str, Mapping[str, Any]], schemas: Mapping[str, Mapping[str, Schema]]) -> list[str]:
    """Problems in every resource, data and provider block of the parsed files."""
    problems: list[str] = []
    for file, body in parsed.items():
        for kind, meta in (("resource", RESOURCE_META), ("data", DATA_META)):
            for entry in body.get(kind, []):
                for tf_type, named in entry.items():
                    for name, block in named.items():
                        where = f"{file}: {'data.' if kind == 'data' else ''}{tf_type}.{name}"
                        schema = schemas[kind].get(tf_type)
                        if schema is None:
                            problems.append(f"{where}: unknown {kind} type {tf_type!r}")
                            continue
                        problems += _check_body(where, block, schema["args"], meta)
        for entry in body.get("provider", []):
            for name, block in entry.items():
                where = f"{file}: provider {name!r}"
                schema = schemas["provider"].get(name)
                if schema is None:
                    problems.append(f"{where}: unknown provider")
                    continue
                problems += _check_body(where, block, schema["args"], PROVIDER_META)
    return problems


def _check_body(where: str, body: Mapping[str, Any], args: Mapping[str, Any], meta: frozenset[str]) -> list[str]:
    problems: list[str] = []
    given = set()
    for key, value in items(body):
        if key == "dynamic":
            for entry in value:
                for label, dyn in entry.items():
                    given.add(label)
                    problems += _check_dynamic(f"{where}.dynamic.{label}", label, dyn, args)
            continue
        if key in meta:
            continue
        given.add(key)
        arg = args.get(key)
        if arg is None:
            close = difflib.get_close_matches(key, list(args), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{where}: unknown argument {key!r}{hint}")
            continue
        block = arg["block"]
        if block is None:
            if is_block_list(value):
                problems.append(f"{where}: {key!r} is an argument: write `{key} = ...`, not a block")
            continue
        if not is_block_list(value):
            problems.append(f"{where}: {key!r} is a block: write `{key} {{ ... }}`")
            continue
        if not block["list"] and len(value) > 1:
            problems.append(f"{where}: at most one {key!r} block")
        for index, nested in enumerate(value):
            label = f"{where}.{key}" if len(value) == 1 else f"{where}.{key}[{index}]"
            problems += _check_body(label, nested, block["args"], frozenset())
    for name, arg in args.items():
        if arg["required"] and name not in given:
            kind = "block" if arg["block"] else "argument"
            problems.append(f"{where}: missing required {kind} {name!r}")
    return problems


def _check_dynamic(where: str, label: str, dyn: Mapping[str, Any], args: Mapping[str, Any]) -> list[str]:
    arg = args.get(label)
    if arg is None or arg["block"] is None:
        return [f"{where}: {label!r} is not a nested block here"]
    problems: list[str] = []
    if "for_each" not in dyn:
        problems.append(f"{where}: dynamic block without for_each")
    content = dyn.get("content")
    if not is_block_list(content) or len(content) != 1:
        return problems + [f"{where}: dynamic block needs one content block"]
    return problems + _check_body(f"{where}.content", content[0], arg["block"]["args"], frozenset())


_REFERENCE = re.compile(
    r"(?<![\w.\"-])(data\.)?((?:google|archive)_[a-z0-9_]+)\.([a-zA-Z_][\w-]*)(?:\[[^\]]*\])?(?:\.([a-z_][a-z0-9_]*))?"
)


def check_references(parsed: Mapping[str, Mapping[str, Any]], schemas: Mapping[str, Mapping[str, Schema]]) -> list[str]:
    """References `[data.]TYPE.NAME[.ATTR]` must name a block of the same module and a real attribute."""
    by_module: dict[str, dict[str, Mapping[str, Any]]] = {}
    for file, body in parsed.items():
        by_module.setdefault(str(Path(file).parent), {})[file] = body
    problems: list[str] = []
    for files in by_module.values():
        declared: set[tuple[str, str, str]] = set()
        for body in files.values():
            for kind in ("resource", "data"):
                for entry in body.get(kind, []):
                    for tf_type, named in entry.items():
                        declared.update((kind, tf_type, name) for name in named)
        for file, body in files.items():
            for text in _strings(body):
                for match in _REFERENCE.finditer(text):
                    kind = "data" if match.group(1) else "resource"
                    tf_type, name, attr = match.group(2), match.group(3), match.group(4)
                    ref = match.group(0)
                    if (kind, tf_type, name) not in declared:
                        problems.append(f"{file}: {ref!r} refers to an undeclared {kind}")
                        continue
                    schema = schemas[kind].get(tf_type)
                    if attr and schema and attr not in schema["attrs"]:
                        problems.append(f"{file}: {ref!r}: {tf_type} has no attribute {attr!r}")
    return problems


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
