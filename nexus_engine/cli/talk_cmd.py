"""`nexus talk`: a spoken conversation in the terminal, on the default microphone and speaker.

The duplex loop runs in the engine worker (voice/loop.py); this command starts the call, prints what each side
says and the loop's state, and takes single-letter commands on stdin: m (mute/unmute), b (barge-in on/off),
q (hang up). Ctrl-C hangs up too. The turns are saved in the chat history (`nexus chat --list`).
"""

from __future__ import annotations

import argparse
import sys
import threading

from nexus_engine.protocol import (
    Done,
    Error,
    Message,
    Transcript,
    VoiceControl,
    VoiceReply,
    VoiceStart,
    VoiceState,
    VoiceStop,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("talk", help="talk with Nexus by microphone (full duplex, in the terminal)")
    p.add_argument("--input", default="", help="microphone (a device name or part of it; default: the system's)")
    p.add_argument("--output", default="", help="speaker (default: the system's)")
    p.add_argument("--devices", action="store_true", help="list the audio devices and exit")
    p.add_argument("--persona", default="", help="system prompt of the voice persona")
    p.add_argument("--conversation", type=int, help="continue this conversation")
    p.add_argument("--no-barge-in", action="store_true", help="do not let speech interrupt Nexus")
    p.add_argument("--no-aec", action="store_true", help="no echo cancellation (with headphones)")
    p.add_argument("--voice", help="TTS speaker name, for voices that have several")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nexus_engine.client import EngineClient

    if args.devices:
        from nexus_engine.voice.audio_device import list_devices

        for d in list_devices():
            kind = "/".join(k for k, n in (("in", d["inputs"]), ("out", d["outputs"])) if n)
            print(f"{d['index']:3} {'*' if d['default'] else ' '} {d['name']} ({kind}, {d['rate']:.0f} Hz)")
        return 0
    partial = [""]
    last = [""]  # the state shown last: a state line only when it changes
    ended = threading.Event()

    def on_event(msg: Message) -> None:
        if isinstance(msg, VoiceState):
            if msg.state in ("listening", "muted", "reconnecting", "error", "connecting") and msg.state != last[0]:
                print(f"\r[{msg.state}{': ' + msg.detail if msg.detail and msg.detail != msg.state else ''}]",
                      file=sys.stderr, flush=True)
            last[0] = msg.state
        elif isinstance(msg, Transcript):
            if msg.final:
                print(f"\ryou: {msg.text}" + " " * max(0, len(partial[0]) - len(msg.text)), flush=True)
                partial[0] = ""
            else:
                partial[0] = msg.text
                print(f"\r… {msg.text}", end="", file=sys.stderr, flush=True)
        elif isinstance(msg, VoiceReply):
            if msg.text:
                print(f"nexus: {msg.text}", flush=True)
            elif msg.status == "cancelled":
                print("[interrupted]", file=sys.stderr, flush=True)
        elif isinstance(msg, Done | Error):
            ended.set()

    start = VoiceStart(persona=args.persona, conversation_id=args.conversation, input_device=args.input,
                       output_device=args.output, barge_in=not args.no_barge_in, aec=not args.no_aec,
                       voice=args.voice)
    with EngineClient(profile=args.profile) as client:
        handle = client.submit(start, on_event)
        print("talk to Nexus; m + Enter mutes, b + Enter toggles barge-in, q + Enter (or Ctrl-C) hangs up",
              file=sys.stderr)
        threading.Thread(target=_keys, args=(client, ended, not args.no_barge_in), daemon=True).start()
        try:
            while not ended.wait(0.2):
                pass
        except KeyboardInterrupt:
            pass
        client.submit(VoiceStop())
        result = handle.wait(30)
    conv = result.stats.get("conversation_id")
    if conv is not None:
        print(f"bye — the conversation is saved (nexus chat --conversation {conv})", file=sys.stderr)
    return 0


def _keys(client: object, ended: threading.Event, barge_in: bool) -> None:
    muted = False
    for line in sys.stdin:
        key = line.strip().lower()
        if key == "q":
            ended.set()
            return
        if key == "m":
            muted = not muted
            client.submit(VoiceControl(mute=muted))  # type: ignore[attr-defined]  (the state line says so)
        elif key == "b":
            barge_in = not barge_in
            client.submit(VoiceControl(barge_in=barge_in))  # type: ignore[attr-defined]
            print(f"[barge-in {'on' if barge_in else 'off'}]", file=sys.stderr)
