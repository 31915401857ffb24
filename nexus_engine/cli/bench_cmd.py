"""`nexus bench NAME`: run a benchmark and write its JSON to benchmarks/results/ (or --out)."""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

from nexus_engine import paths

# name -> (module, help); each module has run(**kwargs) -> dict and optional add_args(parser)
BENCHES = {
    "chat": ("nexus_engine.bench.chat", "chat backends through the engine vs raw llama.cpp"),
    "swap": ("nexus_engine.bench.swap", "swap-in bandwidth: warm tier vs pinned copy vs naive .to()"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark and write JSON")
    bsub = p.add_subparsers(dest="bench", metavar="NAME", required=True)
    for name, (module, help_text) in BENCHES.items():
        b = bsub.add_parser(name, help=help_text)
        b.add_argument("--out", type=Path, help="JSON file to write (default: benchmarks/results/NAME-DATE.json)")
        if name == "chat":
            b.add_argument("--runs", type=int, default=5)
            b.add_argument("--max-tokens", type=int, default=128)
            b.add_argument("--backend", action="append", choices=["llama_cpp", "transformers"],
                           help="only these backends (repeatable; default both)")
        if name == "swap":
            b.add_argument("--repeats", type=int, default=5, help="timed rounds after one warm-up round")
            b.add_argument("--device", help="torch device to swap to (default: cuda:0 if available, else cpu)")
            b.add_argument("--layers", type=int, help="decoder layers of the model (default: 22 on a GPU, 6 on a CPU)")
        b.set_defaults(func=run, module=module)


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(args.module)
    kwargs = {}
    if args.bench == "chat":
        kwargs = {"runs": args.runs, "max_tokens": args.max_tokens, "profile": args.profile}
        if args.backend:
            kwargs["backends"] = tuple(args.backend)
    elif args.bench == "swap":
        kwargs = {"repeats": args.repeats, "device": args.device, "layers": args.layers}
    result = module.run(**kwargs)
    out = args.out or paths.REPO_ROOT / "benchmarks" / "results" / f"{args.bench}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"\nwrote {out}")
    return 0
