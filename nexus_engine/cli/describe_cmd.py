"""`nexus describe IMAGE_OR_VIDEO [--question …]`: what the vision towers see, or their answer to a question.

Progress (frames read, images described) goes to stderr; the description or the streamed answer to stdout.
`--json` prints the full result (labels with scores, OCR lines, the video timeline) instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from nexus_engine.protocol import Message, Progress, TokenChunk


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("describe", help="describe an image or a video (or answer a question about it)")
    p.add_argument("path", type=Path, help="an image (PNG, JPEG, WebP, GIF…) or a video (MP4, MKV, WebM…)")
    p.add_argument("-q", "--question", default="", help="ask this about it instead of describing it")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--no-index", action="store_true", help="do not add it to the search index")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nexus_engine.client import EngineClient
    from nexus_engine.protocol import DescribeRequest

    req = DescribeRequest(path=str(args.path.expanduser().resolve()), question=args.question,
                          max_tokens=args.max_tokens, index=not args.no_index)
    with EngineClient(profile=args.profile) as client:
        handle = client.submit(req, None if args.json else _printer())
        try:
            done = handle.wait()
        except KeyboardInterrupt:
            handle.cancel()
            done = handle.wait(30)
    if args.json:
        print(json.dumps(done.stats, indent=2))
    else:
        print()
    return 130 if done.stats.get("finish") == "cancelled" else 0


def _printer() -> Callable[[Message], None]:
    """Progress on one rewritten stderr line, cleared before the answer's first text."""
    state = {"progress": False}

    def on_event(msg: Message) -> None:
        if isinstance(msg, Progress) and msg.message:
            print(f"\r\033[K{msg.message}", end="", file=sys.stderr, flush=True)
            state["progress"] = True
        elif isinstance(msg, TokenChunk):
            if state["progress"]:
                print("\r\033[K", end="", file=sys.stderr, flush=True)
                state["progress"] = False
            sys.stdout.write(msg.text)
            sys.stdout.flush()

    return on_event
