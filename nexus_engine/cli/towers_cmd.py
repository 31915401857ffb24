"""`nexus towers`: every declared tower, whether its weights are here, its quantization and footprint."""

from __future__ import annotations

import argparse
import json

from nexus_engine import weights
from nexus_engine.config import ROLES, load_config
from nexus_engine.config.units import fmt_bytes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("towers", help="list declared towers: installed or missing, quantization, footprint")
    p.add_argument("--all", action="store_true", help="all towers, not only the active profile's")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _measured(name: str, quant: str, device: str) -> int | None:
    try:  # measured footprints appear once the residency store has seen the tower load
        from nexus_engine.residency.footprints import FootprintStore
    except ImportError:
        return None
    fp = FootprintStore().get(name, quant, device)
    return None if fp is None else int(getattr(fp, "total", 0) or (fp.ram + fp.vram))


def rows(profile: str | None, show_all: bool) -> list[dict]:
    config = load_config()
    prof = config.profile(profile)
    served: dict[str, list[str]] = {}
    for role, names in prof.roles.items():
        for n in names:
            served.setdefault(n, []).append(role)
    specs = config.towers.values() if show_all else config.profile_towers(prof.name)
    out = []
    for spec in specs:
        ok, where = weights.installed(spec)
        out.append({
            "name": spec.name, "kind": spec.kind, "backend": spec.backend, "roles": served.get(spec.name, []),
            "quantization": spec.quantization, "device": spec.device, "latency": spec.latency,
            "installed": ok, "where": where, "source": spec.source.describe(), "license": spec.license,
            "measured_bytes": _measured(spec.name, spec.quantization, spec.device),
        })
    missing_roles = [r for r in ROLES if r not in prof.roles]
    if missing_roles:
        out.append({"name": None, "not_installed_roles": missing_roles})
    return out


def run(args: argparse.Namespace) -> int:
    table = rows(args.profile, args.all)
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print(f"{'tower':22} {'kind':13} {'roles':32} {'quant':6} {'device':8} {'footprint':>10}  status")
    for r in table:
        if r["name"] is None:
            print(f"\nroles with no tower in this profile: {', '.join(r['not_installed_roles'])}"
                  " (declare one in models.toml to enable them)")
            continue
        size = fmt_bytes(r["measured_bytes"]) if r["measured_bytes"] else "-"
        status = "installed" if r["installed"] else f"MISSING: {r['where']}"
        print(f"{r['name']:22} {r['kind']:13} {','.join(r['roles']) or '-':32} {r['quantization']:6} "
              f"{r['device']:8} {size:>10}  {status}")
    return 0
