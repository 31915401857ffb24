"""Protocol: every message survives the wire, and malformed input becomes a ProtocolError, never a crash."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus_engine.errors import ProtocolError
from nexus_engine.protocol import (
    CONTROL,
    DATA,
    Cancel,
    ChatRequest,
    Done,
    Error,
    TokenChunk,
    decode,
    message_types,
)
from nexus_engine.towers.chat_format import StopMatcher


def test_every_message_type_round_trips() -> None:
    for name, cls in message_types().items():
        msg = cls()
        back = decode(msg.encode())
        assert type(back) is cls and back == msg, name


def test_tiers() -> None:
    assert Cancel.tier == CONTROL and ChatRequest.tier == DATA
    control = {n for n, c in message_types().items() if c.tier == CONTROL}
    assert {"ping", "cancel", "shutdown", "status"} <= control


def test_fields_survive() -> None:
    req = ChatRequest(messages=[{"role": "user", "content": "héllo ✓"}], max_tokens=7, temperature=0.1,
                      stop=["\n\n"], seed=3)
    assert decode(req.encode()) == req
    done = Done(id="x", stats={"tokens": 3, "nested": {"a": [1, 2.5]}})
    assert decode(done.encode()).stats == done.stats


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"\xff\xfe", "not a JSON message"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"type": "ping"}', "protocol version None"),
        (b'{"v": 99, "type": "ping"}', "protocol version 99"),
        (b'{"v": 1, "type": "exec"}', "unknown message type 'exec'"),
        (b'{"v": 1, "type": "chat", "messages": "hi"}', "field 'messages' has the wrong type"),
        (b'{"v": 1, "type": "chat", "max_tokens": true}', "field 'max_tokens' has the wrong type"),
        (b'{"v": 1, "type": "chat", "evil": 1}', "unknown field 'evil'"),
        (b'{"v": 1, "type": "token", "text": 5}', "field 'text' has the wrong type"),
        (b'{"v": 1, "type": "done", "stats": [1]}', "field 'stats' has the wrong type"),
        (b"[" * 100000, "not a JSON message"),
    ],
)
def test_malformed_messages_are_typed_errors(raw: bytes, fragment: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(raw)
    assert fragment in info.value.message


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(message_types())), st.dictionaries(st.text(max_size=12), json_values, max_size=5))
def test_fuzzed_messages_decode_or_raise_protocol_error(kind: str, fields: dict) -> None:
    raw = json.dumps({"v": 1, "type": kind, **fields}).encode()
    try:
        msg = decode(raw)
    except ProtocolError:
        return
    assert decode(msg.encode()) == msg  # anything accepted is well-typed enough to re-encode


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_never_crash_the_decoder(raw: bytes) -> None:
    try:
        decode(raw)
    except ProtocolError:
        pass


def test_error_carries_code_and_hint() -> None:
    err = decode(Error(id="r", code="model_missing", message="gone", hint="install it").encode())
    assert (err.code, err.message, err.hint) == ("model_missing", "gone", "install it")
    assert decode(TokenChunk(id="r", text="").encode()).text == ""


@pytest.mark.parametrize(
    ("stops", "pieces", "expected", "stopped"),
    [
        (["</s>"], ["Hel", "lo<", "/s", ">tail"], "Hello", True),
        (["</s>"], ["a<", "b"], "a<b", False),  # a false start is released
        (["\n\nUser:"], ["Hi\n", "\nUs", "er: x"], "Hi", True),
        (["ab", "b"], ["xa", "b"], "x", True),  # the earliest match wins
        ([], ["one ", "two"], "one two", False),
    ],
)
def test_stop_matcher(stops: list[str], pieces: list[str], expected: str, stopped: bool) -> None:
    m = StopMatcher(stops)
    out = "".join(m.feed(p) for p in pieces) + m.flush()
    assert (out, m.stopped) == (expected, stopped)


def test_stop_matcher_streams_without_needless_holding() -> None:
    m = StopMatcher(["STOP"])
    assert m.feed("hello ") == "hello "  # nothing that could start "STOP" is held back
    assert m.feed("S") == "" and m.feed("x") == "Sx"
