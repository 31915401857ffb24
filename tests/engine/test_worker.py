"""The real worker process: round trip, incremental streaming, cancel, control overtaking data, crash recovery."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from nexus_engine import paths
from nexus_engine.client import EngineClient
from nexus_engine.errors import ConfigError, ModelMissingError, PromptTooLongError, WorkerCrashedError
from nexus_engine.protocol import Done, Error, Pong, Started, TokenChunk, TowerEvent

STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to paint."}]


@pytest.fixture
def client():
    with EngineClient() as c:
        yield c


def test_round_trip_answers_sensibly(client: EngineClient) -> None:
    handle = client.chat([{"role": "user", "content": "Name three primary colors."}], temperature=0, max_tokens=64)
    events = list(handle)
    assert isinstance(events[0], Started)
    assert any(isinstance(e, TowerEvent) and e.action == "load" and e.bytes > 0 for e in events)
    text = "".join(e.text for e in events if isinstance(e, TokenChunk)).lower()
    assert sum(c in text for c in ("red", "blue", "yellow")) >= 2, text
    done = events[-1]
    assert isinstance(done, Done) and done.stats["tower"] == "smollm2-chat" and done.stats["tokens"] > 3


def test_streaming_is_incremental(client: EngineClient) -> None:
    # no clock: if the answer were sent only once it was complete, a cancel sent on the first chunk would come too
    # late and the answer would run to its token limit
    handle = client.chat(STORY, temperature=0, max_tokens=120)
    chunks = 0
    for msg in handle:
        if isinstance(msg, TokenChunk):
            chunks += 1
            if chunks == 1:
                handle.cancel()
    stats = handle.wait(10).stats
    assert stats["finish"] == "cancelled", stats
    assert 1 <= stats["tokens"] < 60, stats


def test_cancel_stops_within_a_few_tokens(client: EngineClient) -> None:
    handle = client.chat(STORY, temperature=0, max_tokens=400)
    seen = 0
    for msg in handle:
        if isinstance(msg, TokenChunk):
            seen += 1
            if seen == 3:
                handle.cancel()
    stats = handle.wait(10).stats
    assert stats["finish"] == "cancelled"
    assert stats["tokens"] <= 3 + 8, stats


def test_control_overtakes_queued_data(client: EngineClient) -> None:
    first = client.chat(STORY, temperature=0, max_tokens=200)
    queued = client.chat(STORY, temperature=0, max_tokens=200)
    for msg in first:  # wait until the first is generating
        if isinstance(msg, TokenChunk):
            break
    ms = client.ping(timeout=2)
    assert ms < 200  # answered mid-generation, not after 200 tokens
    status = client.status()
    assert status.busy == first.id and status.queued == 1
    queued.cancel()
    assert queued.wait(10).stats == {"finish": "cancelled", "started": False}
    assert not first.done  # the queued one finished first: the cancel did not wait in line
    first.cancel()
    first.wait(10)


def test_sigkill_mid_answer_restarts_and_replays_queued_work(client: EngineClient) -> None:
    running = client.chat(STORY, temperature=0, max_tokens=300)
    queued = client.chat([{"role": "user", "content": "Say hi."}], temperature=0, max_tokens=8)
    for msg in running:
        if isinstance(msg, TokenChunk):
            os.kill(client.worker_pid, signal.SIGKILL)
            break
    with pytest.raises(WorkerCrashedError, match="exit code -9"):
        running.wait(30)
    # the queued request never started, so it is replayed on the new worker and succeeds
    assert queued.wait(60).stats["tokens"] >= 1
    assert client.restarts == 1 and client.last_recovery_ms is not None
    assert client.chat([{"role": "user", "content": "Hello"}], max_tokens=4).wait(30)


def test_missing_weights_is_a_clear_error(tmp_path: Path) -> None:
    paths.user_models_toml().write_text(
        '[towers.smollm2-chat]\nsource = { path = "%s" }\n' % (tmp_path / "nowhere"))
    with EngineClient() as c:
        with pytest.raises(ModelMissingError, match="does not exist"):
            c.chat([{"role": "user", "content": "hi"}]).wait(30)
        assert c.ping() > 0  # the worker is still serving


def test_overlong_prompt_is_refused_with_numbers(client: EngineClient) -> None:
    huge = "word " * 6000
    with pytest.raises(PromptTooLongError, match=r"tokens but this model's context window is 4096"):
        client.chat([{"role": "user", "content": huge}]).wait(60)


def test_old_turns_are_dropped_to_fit_the_window() -> None:
    # a small window keeps the prompt decode short on 2 cores
    paths.user_models_toml().write_text("[towers.smollm2-chat.options]\nn_ctx = 512\n")
    history = []
    for i in range(8):
        history += [{"role": "user", "content": f"Fact {i}: " + "blah " * 40},
                    {"role": "assistant", "content": "Noted."}]
    history.append({"role": "user", "content": "Thanks."})
    with EngineClient() as c:
        stats = c.chat(history, max_tokens=8).wait(60).stats
    assert stats["dropped_messages"] > 0 and stats["prompt_tokens"] <= 512 - 8


def test_malformed_models_toml_fails_start_with_the_config_error() -> None:
    paths.user_models_toml().write_text("[towers.smollm2-chat\n")
    with pytest.raises(ConfigError, match="unreadable TOML"):
        EngineClient().start()


def test_protocol_garbage_gets_a_typed_error_and_the_worker_survives(client: EngineClient) -> None:
    got = []
    client.listener = got.append
    client._conn.send_bytes(b'{"v": 1, "type": "chat", "messages": 5}')
    deadline = time.time() + 5
    while not any(isinstance(m, Error) for m in got) and time.time() < deadline:
        time.sleep(0.02)
    err = next(m for m in got if isinstance(m, Error))
    assert err.code == "protocol_error" and "messages" in err.message
    assert isinstance(client._roundtrip(__import__("nexus_engine.protocol").protocol.Ping(), 5), Pong)
