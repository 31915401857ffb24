"""`nexus chat`: stream an answer through the engine worker; with no prompt, an interactive REPL.

Every turn goes through ChatSession, so the conversation is in SQLite before the first token arrives and
survives Ctrl-C, a crashed worker or a killed terminal.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from nexus_engine.protocol import Message, TokenChunk

if TYPE_CHECKING:
    from nexus_engine.chat_session import ChatSession


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat with Nexus (streams; no prompt = interactive)")
    p.add_argument("prompt", nargs="*", help="what to ask; leave out for an interactive session")
    where = p.add_mutually_exclusive_group()
    where.add_argument("-c", "--continue", dest="cont", action="store_true", help="continue the latest conversation")
    where.add_argument("--conversation", type=int, help="continue conversation ID")
    p.add_argument("--list", action="store_true", help="list saved conversations and exit")
    p.add_argument("--tower", help="use this tower instead of the profile's choice")
    p.add_argument("--role", help="role whose tower answers (default: the router decides)")
    p.add_argument("--system", help="system prompt for a new conversation")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, help="default: the tower's setting in models.toml")
    p.add_argument("--top-p", type=float, help="default: the tower's setting in models.toml")
    p.add_argument("--repeat-penalty", type=float, help="default: the tower's setting in models.toml")
    p.add_argument("--seed", type=int)
    p.add_argument("--stop", action="append", default=[], help="stop sequence (repeatable)")
    p.add_argument("--stats", action="store_true", help="print tokens/s and time to first token after each answer")
    p.add_argument("--attach", action="append", default=[], metavar="FILE",
                   help="image, video or audio file sent with the (first) message (repeatable); a copy is kept with "
                        "the conversation")
    p.set_defaults(func=run)


def _printer(out: TextIO) -> Callable[[Message], None]:
    def on_event(msg: Message) -> None:
        if isinstance(msg, TokenChunk):
            out.write(msg.text)
            out.flush()

    return on_event


def _turn(session: ChatSession, text: str, args: argparse.Namespace,
          attachments: list[dict[str, Any]] | None = None) -> str:
    """One question and its streamed answer; Ctrl-C cancels the answer (the part so far is kept)."""
    turn = session.send(text, on_event=_printer(sys.stdout), attachments=attachments, tower=args.tower, role=args.role,
                        max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                        repeat_penalty=args.repeat_penalty,
                        stop=args.stop)
    try:
        status = turn.wait()
    except KeyboardInterrupt:
        turn.cancel()
        status = turn.wait(30)
    print()
    if status == "cancelled":
        print("[stopped — the partial answer is saved]", file=sys.stderr)
    elif status in ("error", "interrupted"):
        print(f"nexus: {turn.error or status}" + (" (the partial answer is saved)" if turn.text else ""),
              file=sys.stderr)
    elif args.stats and turn.stats:
        s = turn.stats
        print(f"[{s.get('tower')}: {s.get('tokens')} tokens, first token {s.get('ttft_ms', 0):.0f} ms, "
              f"{s.get('decode_tok_s', 0):.1f} tok/s]", file=sys.stderr)
        for h in s.get("heard") or []:  # what the ASR tower heard in attached audio
            what = f"\u201c{h['text']}\u201d" if h.get("text") else "nothing"
            print(f"[heard {h.get('name') or Path(h['path']).name} ({h.get('tower') or '-'}): {what}"
                  + (f" ({h['note']})" if h.get("note") else "") + "]", file=sys.stderr)
        if s.get("consolidation"):
            print(f"[consolidation: {s['consolidation']}" + (f" — {s['consolidation_note']}"
                  if s.get("consolidation_note") else "") + "]", file=sys.stderr)
    return status


def run(args: argparse.Namespace) -> int:
    from nexus_engine import attachment_store
    from nexus_engine.chat_session import ChatSession
    from nexus_engine.client import EngineClient
    from nexus_engine.errors import BadInputError
    from nexus_engine.history import History

    history = History()
    history.recover_interrupted()
    if args.list:
        for conv in history.list_conversations():
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(conv.updated))
            print(f"{conv.id:5}  {when}  {conv.title}")
        return 0
    conversation = args.conversation
    if args.cont:
        convs = history.list_conversations()
        conversation = convs[0].id if convs else None
    files = [attachment_store.attach(f) for f in args.attach]  # checked and stored before anything starts
    if files and not args.prompt:
        raise BadInputError("--attach needs a message to go with the files", 'add one: nexus chat "what is this?" '
                            "--attach FILE")
    with EngineClient(profile=args.profile) as client:
        session = ChatSession(client, history, conversation_id=conversation, system_prompt=args.system,
                              profile=args.profile)
        if args.prompt:
            status = _turn(session, " ".join(args.prompt), args, files)
            return {"done": 0, "cancelled": 130}.get(status, 1)
        return _repl(session, args)


def _repl(session: ChatSession, args: argparse.Namespace) -> int:
    print("Nexus chat — type a message; /new starts a new conversation, /quit or Ctrl-D leaves. "
          "Ctrl-C stops an answer.", file=sys.stderr)
    lock = threading.Lock()  # one turn at a time, even if a callback is still printing
    while True:
        try:
            line = input("\n> ").strip()
        except EOFError:
            print(file=sys.stderr)
            break
        except KeyboardInterrupt:
            print(file=sys.stderr)
            break
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line == "/new":
            session.new_conversation()
            print("[new conversation]", file=sys.stderr)
            continue
        with lock:
            _turn(session, line, args)
    if session.conversation_id is not None:
        print(f"bye — conversation {session.conversation_id} is saved (nexus chat --conversation "
              f"{session.conversation_id} to continue)", file=sys.stderr)
    return 0
