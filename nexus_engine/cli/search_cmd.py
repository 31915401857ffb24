"""`nexus search "…"`: find the images and videos attached in your chats (and any you describe) by meaning.

The history's attachments are handed to the engine, which indexes those not yet in the media index (next to
the history in the data folder) before ranking. `--like IMAGE` finds files that look like IMAGE.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nexus_engine.protocol import Message, Progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search the images and videos you attached, by meaning")
    p.add_argument("query", nargs="*", help="what you are looking for")
    p.add_argument("--like", type=Path, help="find files that look like this image")
    p.add_argument("-n", "--limit", type=int, default=10)
    p.add_argument("--kind", choices=["image", "video"], help="only images or only videos")
    p.add_argument("--add", type=Path, action="append", default=[], help="index this file too (repeatable)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nexus_engine.client import EngineClient
    from nexus_engine.history import History
    from nexus_engine.protocol import SearchRequest
    from nexus_engine.vision.index import history_media

    with History() as history:
        found = history_media(history)
    paths = [*found, *(str(p.expanduser().resolve()) for p in args.add)]
    req = SearchRequest(query=" ".join(args.query), like=str(args.like.resolve()) if args.like else "",
                        paths=paths, limit=args.limit, kind=args.kind or "")
    with EngineClient(profile=args.profile) as client:
        stats = client.submit(req, _progress).wait().stats
    print("\r\033[K", end="", file=sys.stderr)
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    for r in stats["results"]:
        print(f"{r['score']:6.3f}  {r['path']}\n        {r['description']}")
    if not stats["results"]:
        print("nothing indexed yet: attach images or videos in a chat, or pass --add FILE", file=sys.stderr)
    for s in stats["skipped"]:
        print(f"skipped {s['path']}: {s['error']}", file=sys.stderr)
    return 0


def _progress(msg: Message) -> None:
    if isinstance(msg, Progress) and msg.message:
        print(f"\r\033[K{msg.message}", end="", file=sys.stderr, flush=True)
