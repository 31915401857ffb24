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
    "vision": ("nexus_engine.bench.vision", "images/s described and ms per video frame (starter perception)"),
    "imagine": ("nexus_engine.bench.imagine", "s/step and peak memory of image generation, whole and offloaded"),
    "voice": ("nexus_engine.bench.voice", "voice loop: end of speech to first audio, per stage (median, p95)"),
    "chaos": ("nexus_engine.bench.chaos", "mixed requests while the worker is SIGKILLed: lost, recovery, integrity"),
    "stress": ("nexus_engine.bench.stress", "random requests vs the residency manager: peak bytes, OOMs, deadlocks"),
    "fuzz": ("nexus_engine.bench.fuzz", "fuzz every parser of outside input: cases, crashes, readable errors"),
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
        if name == "vision":
            b.add_argument("--images", type=Path, help="folder of images (default: the shared COCO sample)")
            b.add_argument("--seconds", type=float, default=12.0, help="length of the benchmark video")
        if name == "imagine":
            b.add_argument("--steps", type=int, default=4)
            b.add_argument("--size", type=int, default=64, help="image side in pixels")
            b.add_argument("--tower", help="image generation tower (default: the profile's)")
        if name == "voice":
            b.add_argument("--rounds", type=int, default=3, help="times each clip is spoken")
            b.add_argument("--clips", type=Path, help="folder of LibriSpeech-style clips with *.trans.txt")
            b.add_argument("--device", choices=["auto", "cpu"], default="auto",
                           help="auto: the ASR and TTS towers on the GPU when there is one")
        if name in ("chaos", "stress", "fuzz"):
            _reliability_args(name, b)
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
    elif args.bench == "vision":
        kwargs = {"images": args.images, "seconds": args.seconds, "profile": args.profile}
    elif args.bench == "imagine":
        kwargs = {"steps": args.steps, "size": args.size, "tower": args.tower, "profile": args.profile}
    elif args.bench == "voice":
        kwargs = {"rounds": args.rounds, "clips_dir": args.clips, "profile": args.profile, "device": args.device}
    elif args.bench in ("chaos", "stress", "fuzz"):
        kwargs = _reliability_kwargs(args)
    result = module.run(**kwargs)
    out = args.out or paths.REPO_ROOT / "benchmarks" / "results" / f"{args.bench}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"\nwrote {out}")
    return 0


def _reliability_args(name: str, b: argparse.ArgumentParser) -> None:
    """Options of the reliability harnesses (docs/reliability.md)."""
    b.add_argument("--seed", type=int, default=0)
    if name == "chaos":
        b.add_argument("--requests", type=int, default=60, help="requests in the mixed stream (at least)")
        b.add_argument("--kills", type=int, default=10, help="times the worker is SIGKILLed")
        b.add_argument("--inflight", type=int, default=3, help="requests outstanding at a time")
    if name == "stress":
        b.add_argument("--requests", type=int, default=1000)
        b.add_argument("--threads", type=int, default=4)
        b.add_argument("--budget-share", type=float, default=0.4, help="GPU budget / sum of the towers' sizes")
    if name == "fuzz":
        b.add_argument("--max-examples", type=int, default=300, help="Hypothesis cases per target (after the corpus)")
        b.add_argument("--only", action="append", default=[], metavar="TARGET", help="fuzz only these targets")


def _reliability_kwargs(args: argparse.Namespace) -> dict[str, object]:
    if args.bench == "chaos":
        return {"requests": args.requests, "kills": args.kills, "inflight": args.inflight, "seed": args.seed}
    if args.bench == "stress":
        return {"requests": args.requests, "threads": args.threads, "budget_share": args.budget_share,
                "seed": args.seed}
    return {"max_examples": args.max_examples, "seed": args.seed, "only": tuple(args.only)}
