"""`nexus plan`: which towers of a profile fit where, in what quantization, and what cannot — without loading.

Sizes come from --vram/--ram, else from what the profile says it was sized for, else from this machine.
"""

from __future__ import annotations

import argparse
import json

from nexus_engine.config import load_config
from nexus_engine.config.units import parse_bytes
from nexus_engine.errors import BadInputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="show which towers fit in VRAM/RAM, offloaded or not at all (loads nothing)")
    # SUPPRESS: without it this sub-option's default would overwrite a global `nexus --profile X plan`
    p.add_argument("--profile", default=argparse.SUPPRESS, help="models.toml profile (same as the global option)")
    p.add_argument("--vram", help="GPU memory to plan for, e.g. 16GiB (default: the profile's, else this GPU)")
    p.add_argument("--ram", help="system memory to plan for, e.g. 32GiB (default: the profile's, else this machine)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _size(flag: str | None, declared: int | None, name: str) -> int | None:
    if flag is None:
        return declared
    try:
        return parse_bytes(flag)
    except ValueError as e:
        raise BadInputError(f"--{name}: {e}") from e


def run(args: argparse.Namespace) -> int:
    from nexus_engine.residency.budget import cuda_memory
    from nexus_engine.residency.footprints import FootprintStore
    from nexus_engine.residency.planner import plan_profile, render

    config = load_config()
    prof = config.profile(getattr(args, "profile", None))
    origin = {"vram": "--vram" if args.vram else "profile", "ram": "--ram" if args.ram else "profile"}
    vram = _size(args.vram, prof.vram, "vram")
    ram = _size(args.ram, prof.ram, "ram")
    if ram is None:
        import psutil

        ram, origin["ram"] = psutil.virtual_memory().total, "this machine"
    if vram is None:  # only look at the GPU (importing torch) when the profile wants one
        wants_gpu = any(s.device != "cpu" for s in config.profile_towers(prof.name))
        info = cuda_memory() if wants_gpu else None
        vram, origin["vram"] = (info[1], "this GPU") if info else (0, "no GPU needed" if not wants_gpu else "no GPU")
    plan = plan_profile(config, prof.name, vram, ram, store=FootprintStore(), origin=origin)
    print(json.dumps(plan.to_dict(), indent=2) if args.json else render(plan))
    return 0
