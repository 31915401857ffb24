"""ChatSession with the real engine worker (starter tower smollm2-chat on CPU) and a real SQLite file.

Covers the round trip, conversation context, cancel, regenerate, engine errors, the worker being SIGKILLed
mid-answer, and the process that owns the session being SIGKILLed mid-answer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from nexus_engine import paths
from nexus_engine.chat_session import ChatSession
from nexus_engine.client import EngineClient
from nexus_engine.errors import BadInputError
from nexus_engine.history import History
from nexus_engine.protocol import Message, TokenChunk

LONG_PROMPT = "Write a long story about a dragon who learns to bake bread."


@pytest.fixture
def one_thread(nexus_home: Path) -> None:
    """Run the starter model on one thread (through the user models.toml in this test's NEXUS_HOME).

    Other test runs share these 2 cores; llama.cpp's two spinning threads then slow down ~20x, one does not.
    """
    paths.user_models_toml().write_text("[towers.smollm2-chat.options]\nn_threads = 1\n")


@pytest.fixture
def client(one_thread: None) -> Iterator[EngineClient]:
    c = EngineClient()
    c.start()
    yield c
    c.close()


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    h = History(tmp_path / "history.sqlite3")
    yield h
    h.close()


class Tokens:
    """An on_event callback that records token text and signals once `after` chunks have arrived."""

    def __init__(self, after: int = 1) -> None:
        self.parts: list[str] = []
        self.after = after
        self.reached = threading.Event()

    def __call__(self, msg: Message) -> None:
        if isinstance(msg, TokenChunk):
            self.parts.append(msg.text)
            if len(self.parts) >= self.after:
                self.reached.set()

    @property
    def text(self) -> str:
        return "".join(self.parts)


def test_round_trip(client: EngineClient, history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    session = ChatSession(client, history, profile="starter")
    writes: list[float] = []
    update = history.update_message

    def counting_update(*args: Any, **kwargs: Any) -> None:
        writes.append(time.monotonic())
        update(*args, **kwargs)

    monkeypatch.setattr(history, "update_message", counting_update)
    seen = Tokens()
    t0 = time.monotonic()
    turn = session.send("Name three primary colors.", on_event=seen, max_tokens=32, seed=1)
    assert turn.wait(60) == "done"
    # flushed while streaming, but not per token: at most one write per 250 ms, plus the final one
    assert 2 <= len(writes) <= 2 + (writes[-1] - t0) / 0.25 and len(writes) < len(seen.parts)

    user, answer = history.messages(session.conversation_id)
    assert (user.role, user.content, user.id) == ("user", "Name three primary colors.", turn.user_message_id)
    assert (answer.id, answer.role, answer.status) == (turn.message_id, "assistant", "done")
    assert answer.content.strip() and answer.content == seen.text == turn.text
    assert answer.meta["tower"] == "smollm2-chat" and answer.meta["tokens"] > 0 and answer.meta["ttft_ms"] > 0
    assert answer.meta["request_id"] == turn.request_id and "owner_pid" not in answer.meta
    conv = history.get_conversation(session.conversation_id)
    assert (conv.title, conv.profile) == ("Name three primary colors.", "starter")


def test_second_turn_sees_the_first(client: EngineClient, history: History) -> None:
    session = ChatSession(client, history, system_prompt="You are a terse assistant.")
    first = session.send("My name is Ada. Remember it.", max_tokens=24, seed=1)
    assert first.wait(60) == "done"
    second = session.send("What is my name?", max_tokens=24, seed=1)
    assert second.wait(60) == "done"

    assert session.last_request.messages == [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "My name is Ada. Remember it."},
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "What is my name?"},
    ]
    # and the worker really received it: the second prompt holds the whole first turn
    assert second.stats["prompt_tokens"] > first.stats["prompt_tokens"] + first.stats["tokens"]
    # the stored system prompt comes back when the conversation is reopened in a new session
    again = ChatSession(client, history, conversation_id=session.conversation_id)
    assert again._context()[0] == {"role": "system", "content": "You are a terse assistant."}

    first_id = session.conversation_id
    session.new_conversation()
    fresh = session.send("Hi.", max_tokens=4, stop=None, tower=None)  # None: the default, as the CLI passes it
    assert fresh.wait(60) == "done" and session.conversation_id != first_id
    assert [m["role"] for m in session.last_request.messages] == ["system", "user"]


def test_cancel_keeps_the_partial_answer(client: EngineClient, history: History) -> None:
    session = ChatSession(client, history)
    seen = Tokens(after=5)
    turn = session.send(LONG_PROMPT, on_event=seen, max_tokens=400, seed=1)
    assert seen.reached.wait(60)
    with pytest.raises(BadInputError, match="still being written"):
        session.send("one at a time")
    turn.cancel()
    assert turn.wait(60) == "cancelled"
    answer = history.get_message(turn.message_id)
    assert answer.status == "cancelled" and answer.meta["finish"] == "cancelled"
    assert answer.content.strip() and answer.content == turn.text == seen.text
    assert answer.meta["tokens"] < 400
    assert [m.role for m in history.messages(session.conversation_id)] == ["user", "assistant"]


def test_regenerate_supersedes_the_old_answer(client: EngineClient, history: History) -> None:
    session = ChatSession(client, history)
    old = session.send("Say hello.", max_tokens=12, seed=1)
    old.wait(60)
    new = session.regenerate(old.message_id, max_tokens=12, seed=2)
    assert new.wait(60) == "done" and new.user_message_id == old.user_message_id

    visible = history.messages(session.conversation_id)
    assert [m.id for m in visible] == [old.user_message_id, new.message_id]
    assert history.get_message(old.message_id).superseded_by == new.message_id
    assert session.last_request.messages == [{"role": "user", "content": "Say hello."}]
    with pytest.raises(BadInputError, match="last answer"):
        session.send("And goodbye.", max_tokens=4).wait(60)
        session.regenerate(new.message_id)


def test_attachments_are_stored_and_referenced(client: EngineClient, history: History, tmp_path: Path) -> None:
    picture = tmp_path / "cat.png"
    picture.write_bytes(b"\x89PNG not really")
    record = {"path": str(picture), "kind": "image", "mime": "image/png", "bytes": 16, "sha256": "ab",
              "meta": {"name": "cat.png", "width": 4}}
    session = ChatSession(client, history)
    with pytest.raises(BadInputError, match="absolute path"):
        session.send("look", attachments=[{**record, "path": "cat.png"}])
    assert session.conversation_id is None  # a bad attachment stores nothing
    turn = session.send("What is in this picture?", attachments=[record], max_tokens=8)
    assert turn.wait(60) == "done"
    assert session.last_request.attachments == [{"path": str(picture), "kind": "image", "mime": "image/png",
                                                 "name": "cat.png"}]
    (stored,) = history.attachments(turn.user_message_id)
    assert (stored.path, stored.kind, stored.sha256, stored.meta) == (str(picture), "image", "ab", record["meta"])
    again = session.regenerate(turn.message_id, max_tokens=8)  # the same files go with the regenerated turn
    assert again.wait(60) == "done"
    assert session.last_request.attachments == [{"path": str(picture), "kind": "image", "mime": "image/png",
                                                 "name": "cat.png"}]


def test_engine_error_is_stored_with_its_hint(client: EngineClient, history: History) -> None:
    session = ChatSession(client, history)
    turn = session.send("hello", tower="no-such-tower")
    assert turn.wait(60) == "error"
    answer = history.get_message(turn.message_id)
    assert answer.status == "error" and "no-such-tower" in answer.error and "hint:" in answer.error
    assert answer.meta["code"] == "model_missing"
    # the failed, empty answer is left out of the next prompt
    assert session.send("hello again", max_tokens=8).wait(60) == "done"
    assert [m["role"] for m in session.last_request.messages] == ["user"]


def test_worker_killed_mid_answer(client: EngineClient, history: History) -> None:
    session = ChatSession(client, history)
    seen = Tokens(after=1)
    turn = session.send(LONG_PROMPT, on_event=seen, max_tokens=400, seed=1)
    assert seen.reached.wait(60)
    os.kill(client.worker_pid, signal.SIGKILL)
    assert turn.wait(60) == "interrupted"

    user, answer = history.messages(session.conversation_id)
    assert user.content == LONG_PROMPT
    assert answer.status == "interrupted" and answer.content.strip() and answer.content == turn.text
    assert "stopped" in answer.error
    assert history.integrity_check() == "ok"

    # The client restarts the worker from its reader thread just after reporting the crash. Wait for that,
    # since a send() racing it can make the client spawn a second worker (reported to the lead).
    deadline = time.monotonic() + 30
    while not (client.restarts == 1 and client.alive) and time.monotonic() < deadline:
        time.sleep(0.05)
    nxt = session.send("Name three primary colors.", max_tokens=16, seed=1)
    assert nxt.wait(60) == "done" and nxt.text.strip()
    assert session.last_request.messages[1] == {"role": "assistant", "content": answer.content}


OWNER_SCRIPT = textwrap.dedent("""
    import sys
    from nexus_engine.chat_session import ChatSession
    from nexus_engine.client import EngineClient
    from nexus_engine.history import History

    client = EngineClient()
    client.start()
    print(client.worker_pid, flush=True)
    turn = ChatSession(client, History(sys.argv[1])).send(sys.argv[2], max_tokens=1000, seed=1)
    turn.wait(300)
""")


def test_owner_process_killed_mid_answer(tmp_path: Path, one_thread: None) -> None:
    db = tmp_path / "owned.sqlite3"
    History(db).close()  # create it, so the poller below can open it at once
    proc = subprocess.Popen([sys.executable, "-c", OWNER_SCRIPT, str(db), LONG_PROMPT], stdout=subprocess.PIPE,
                            text=True)
    worker_pid = int(proc.stdout.readline())
    try:
        with History(db) as watch:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # until a few flushes of text are on disk
                msgs = watch.messages(1) if watch.get_conversation(1) else []
                if len(msgs) == 2 and len(msgs[1].content) > 40:
                    break
                time.sleep(0.05)
            assert len(msgs) == 2 and msgs[1].status == "streaming", msgs
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.wait()
        # the orphaned worker sees EOF on its pipe and exits; make sure it does
        try:
            psutil.Process(worker_pid).wait(10)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            os.kill(worker_pid, signal.SIGKILL)
            pytest.fail("the worker outlived its owner by 10 s")

    with History(db) as h:
        assert h.integrity_check() == "ok"
        user, answer = h.messages(1)
        assert user.content == LONG_PROMPT
        assert answer.status == "streaming" and answer.content.startswith(msgs[1].content)
        assert h.recover_interrupted() == 1
        assert h.get_message(answer.id).status == "interrupted"
        assert h.get_message(answer.id).content == answer.content


def test_what_earlier_files_held_stays_in_the_conversation(history: History) -> None:
    """A follow-up question has the words of the voice note sent two turns ago (its file is not sent again)."""
    conv = history.create_conversation()
    history.add_message(conv, "user", "Summarize this.")
    history.add_message(conv, "assistant", "They want to meet on Friday.", meta={
        "heard": [{"path": "/data/attachments/9c.flac", "name": "memo.flac", "text": "Let us meet on Friday at ten.",
                   "note": ""}, {"path": "/data/attachments/1d.wav", "name": "blank.wav", "text": "",
                                 "note": "the file is silent"}],
        "perception": ["shows a cat; no readable text"]})
    history.add_message(conv, "user", "At what time?")
    session = ChatSession(None, history, conversation_id=conv)  # type: ignore[arg-type]  # the prompt only
    context = session._context()
    assert [m["role"] for m in context] == ["system", "user", "assistant", "user"]
    assert context[0]["content"] == ("Files the user attached earlier in this conversation: (attached: memo.flac, "
                                     "heard: \u201cLet us meet on Friday at ten.\u201d; blank.wav: the file is silent; "
                                     "picture 1: shows a cat; no readable text)")
    # the user turns stay as typed: the router reads them, and an old photo must not steer a new question
    assert [m["content"] for m in context[1:]] == ["Summarize this.", "They want to meet on Friday.", "At what time?"]
    # the question being answered gets its own files with the request, not a note
    history.add_message(conv, "assistant", "At ten.", meta={"tower": "smollm2-chat"})
    assert session._context()[0]["content"].startswith("Files the user attached earlier")
    session.system_prompt = "Be brief."
    assert session._context()[0]["content"].startswith("Be brief.\n\nFiles the user attached earlier")
