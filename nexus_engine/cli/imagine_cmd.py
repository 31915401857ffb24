"""`nexus imagine "prompt" [--steps N --seed S]`: draw an image with the profile's imagination tower.

Step progress and ETA on stderr; the PNG's path and its caption (model, seed, steps) on stdout. Ctrl-C stops
between two steps. Without an image generation tower it says so and prints the models.toml lines to add one.
"""

from __future__ import annotations

import argparse
import sys

from nexus_engine.protocol import Message, Progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("imagine", help="draw an image from a prompt (needs an image generation tower)")
    p.add_argument("prompt", help="what to draw")
    add_common(p, steps=28)
    p.add_argument("--negative", default="", help="what to keep out of the image")
    p.set_defaults(func=run)


def add_common(p: argparse.ArgumentParser, steps: int) -> None:
    p.add_argument("--steps", type=int, default=steps, help=f"denoising steps (default {steps})")
    p.add_argument("--seed", type=int, help="fix the seed to reproduce an image (default: random, printed)")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--tower", help="use this tower instead of the profile's")


def run(args: argparse.Namespace) -> int:
    from nexus_engine.protocol import GenerateRequest

    return generate(args, GenerateRequest(kind="image", prompt=args.prompt, negative_prompt=args.negative,
                                          steps=args.steps, seed=args.seed, width=args.width, height=args.height,
                                          tower=args.tower))


def generate(args: argparse.Namespace, req: Message) -> int:
    """Submit a GenerateRequest, show its progress, print the result (shared with `nexus animate`)."""
    from nexus_engine.client import EngineClient
    from nexus_engine.vision.chat import caption_of

    with EngineClient(profile=args.profile) as client:
        handle = client.submit(req, _progress)
        try:
            done = handle.wait()  # no timeout: a slow machine only takes longer
        except KeyboardInterrupt:
            handle.cancel()
            done = handle.wait(60)
    print("\r\033[K", end="", file=sys.stderr)
    stats = done.stats
    if stats.get("finish") != "done":
        print(f"nexus: {stats.get('finish', 'stopped')} — nothing was saved", file=sys.stderr)
        return 130
    print(stats["path"])
    print(caption_of(stats["tower"], stats.get("seed"), stats["steps"]), f"· {stats['total_ms'] / 1000:.1f} s",
          file=sys.stderr)
    return 0


def _progress(msg: Message) -> None:
    if isinstance(msg, Progress) and msg.total:
        eta = f" · {msg.eta_s:.0f} s left" if msg.eta_s is not None else ""
        print(f"\r\033[Kstep {msg.step}/{msg.total}{eta}", end="", file=sys.stderr, flush=True)
