"""`nexus animate IMAGE [--frames N --steps N --seed S]`: turn a still into a short MP4 with the video tower."""

from __future__ import annotations

import argparse
from pathlib import Path

from nexus_engine.cli.imagine_cmd import add_common, generate


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("animate", help="animate an image into a short video (needs a video generation tower)")
    p.add_argument("image", type=Path, help="the still to animate")
    p.add_argument("--prompt", default="", help="for text-guided video pipelines")
    p.add_argument("--frames", type=int, default=14)
    add_common(p, steps=25)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nexus_engine.errors import BadInputError
    from nexus_engine.protocol import GenerateRequest
    from nexus_engine.vision.media import open_image

    path = args.image.expanduser().resolve()
    open_image(path)  # a damaged or oversized image is refused here, with the same message as `describe`
    if not 1 <= args.frames <= 128:
        raise BadInputError(f"frames must be 1 to 128, got {args.frames}")
    return generate(args, GenerateRequest(kind="video", image=str(path), prompt=args.prompt, steps=args.steps,
                                          seed=args.seed, width=args.width, height=args.height, frames=args.frames,
                                          tower=args.tower))
