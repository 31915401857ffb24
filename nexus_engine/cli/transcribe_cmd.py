"""`nexus transcribe FILE [--json] [--long]`: an audio file to text through the engine's ASR tower.

--long transcribes in chunks (any length: an hour-long recording) with progress on stderr and timestamps;
Ctrl-C stops between chunks and prints what was transcribed so far. --json prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nexus_engine.protocol import Message, Progress, TranscribeRequest


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcribe", help="transcribe an audio file (--long: chunked, with timestamps)")
    p.add_argument("file", type=Path, help="audio file (wav, flac, mp3, ogg, m4a, … anything ffmpeg reads)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--long", action="store_true", help="long-form: chunks, progress and [start-end] timestamps")
    p.add_argument("--tower", help="ASR tower (default: the profile's hearing / hearing_long tower)")
    p.set_defaults(func=run)


def stamp(seconds: float) -> str:
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def run(args: argparse.Namespace) -> int:
    from nexus_engine.client import EngineClient
    from nexus_engine.errors import BadInputError

    path = args.file.expanduser().resolve()
    if not path.is_file():
        raise BadInputError(f"no such file: {args.file}")
    tty = sys.stderr.isatty()

    def on_event(msg: Message) -> None:
        if isinstance(msg, Progress) and args.long:
            eta = f", about {msg.eta_s:.0f} s left" if msg.eta_s is not None else ""
            end = "\r" if tty else "\n"
            print(f"[{msg.message}{eta}]", end=end, file=sys.stderr, flush=True)

    with EngineClient(profile=args.profile) as client:
        handle = client.submit(TranscribeRequest(path=str(path), long=args.long, tower=args.tower), on_event)
        try:
            stats = handle.wait().stats
        except KeyboardInterrupt:
            handle.cancel()
            stats = handle.wait(60).stats
    if tty and args.long:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps({"file": str(path), **stats}, ensure_ascii=False, indent=2))
    elif args.long:
        for seg in stats.get("segments", []):
            print(f"[{stamp(seg['start'])} - {stamp(seg['end'])}] {seg['text']}")
    else:
        print(stats.get("text", ""))
    if stats.get("note"):
        print(f"nexus: {stats['note']}", file=sys.stderr)
    return 130 if stats.get("finish") == "cancelled" else 0
