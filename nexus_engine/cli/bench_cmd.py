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
    result = module.run(**kwargs)
    out = args.out or paths.REPO_ROOT / "benchmarks" / "results" / f"{args.bench}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"\nwrote {out}")
    return 0
