"""`nexus route "prompt" [--attach FILE …] [--json]`: which towers would serve this request, and why."""

from __future__ import annotations

import argparse
import json

from nexus_engine.config.schema import ROLES
from nexus_engine.router.decide import TIER_RANK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("route", help="route one request: the towers the router picks, its scores and why")
    p.add_argument("prompt", nargs="?", default="", help="the request text")
    p.add_argument("--attach", nargs="*", default=[], metavar="FILE",
                   help="attachments: file paths, or kinds (image video audio long_audio document)")
    p.add_argument("--voice", action="store_true", help="the turn came by voice")
    p.add_argument("--context", action="append", default=[], metavar="TEXT",
                   help="an earlier user turn (repeatable, oldest first)")
    p.add_argument("--resident", action="append", default=[], metavar="TOWER=TIER",
                   help="residency state for the cost term, e.g. smollm2-chat=hot (others count as cold)")
    p.add_argument("--gate", metavar="DIR", help="gate folder (default: $NEXUS_ROUTER_GATE or data/router/gate)")
    p.add_argument("--json", action="store_true", help="print the decision as one JSON object")
    p.set_defaults(func=run)


def _residency(items: list[str]) -> dict[str, str] | None:
    if not items:
        return None
    out = {}
    for item in items:
        tower, _, tier = item.partition("=")
        if tier not in TIER_RANK:
            raise SystemExit(f"nexus route: --resident {item!r}: expected TOWER=hot|warm|cold")
        out[tower] = tier
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from nexus_engine.router import Router

    torch.set_num_threads(1)  # a one-shot CLI: no pool of idle threads spinning beside the one that works
    router = Router(profile=args.profile, gate=args.gate)
    d = router.decide(args.prompt, args.attach, voice=args.voice, context=args.context,
                      residency=_residency(args.resident))
    if args.json:
        print(json.dumps(d.to_dict(), ensure_ascii=False))
        return 0
    if not d.towers:
        print("-> nothing to route")
    for role in d.towers:
        names = ", ".join(d.tower_names.get(role) or ["NOT INSTALLED"])
        print(f"-> {role:13} {d.scores.get(role, 0):.2f}  {names}")
    print(f"   why: {d.reason}")
    if d.scores:
        top = sorted(ROLES, key=lambda r: -d.scores.get(r, 0))[:5]
        print("   scores: " + "  ".join(f"{r} {d.scores.get(r, 0):.2f}" for r in top))
    print(f"   {d.ms:.1f} ms ({d.mode}, profile {d.profile})")
    for w in d.warnings:
        print(f"   warning: {w}")
    return 0
