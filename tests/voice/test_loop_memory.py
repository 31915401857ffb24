"""The duplex loop in this process on the in-memory audio device (real time, real models): turn taking on real
speech (a thinking pause is not cut off; "yeah" over Nexus does not stop it), a device that disappears mid-call
and comes back, and the control case for the echo test (without echo cancellation Nexus does hear itself)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nexus_engine.history import History
from nexus_engine.protocol import Message, Transcript, VoiceReply, VoiceState
from nexus_engine.voice.audio_files import decode_file
from nexus_engine.voice.audio_io import RATE, ArrayAudio
from nexus_engine.voice.loop import VoiceLoop, VoiceSettings
from nexus_engine.voice.tts import Speaker
from nexus_engine.voice.wer import wer
from tests.voice.conftest import clips

STORYTELLER = "You are a storyteller. Whatever you are told, answer with a long story of at least six sentences."


class Run:
    def __init__(self) -> None:
        self.events: list[tuple[float, Message]] = []
        self.cond = threading.Condition()

    def __call__(self, msg: Message) -> None:
        with self.cond:
            self.events.append((time.monotonic(), msg))
            self.cond.notify_all()

    def of(self, kind: type) -> list[Any]:
        with self.cond:
            return [m for _, m in self.events if isinstance(m, kind)]

    def states(self) -> list[str]:
        return [m.state for m in self.of(VoiceState)]

    def wait(self, cond: Any, timeout: float, what: str) -> None:
        with self.cond:
            assert self.cond.wait_for(cond, timeout), f"timed out waiting for {what}: {self.states()[-8:]}"


@contextmanager
def running(engine: Any, audio: ArrayAudio, tmp_path: Path, **settings: Any) -> Iterator[Run]:
    run = Run()
    with History(tmp_path / "history.sqlite3") as history:
        loop = VoiceLoop(engine, audio, VoiceSettings(**settings), run, "test", history)
        stop = threading.Event()
        result: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: result.update(loop.run(stop)), daemon=True)
        thread.start()
        run.wait(lambda: "listening" in run.states(), 60, "the call to start")
        try:
            yield run
        finally:
            stop.set()
            thread.join(30)


@pytest.fixture(scope="module")
def say(tower: Any) -> Any:
    speaker = Speaker(tower("piper-joe"))

    def speech(text: str) -> np.ndarray:
        return speaker(text) * 0.8

    return speech


def test_a_thinking_pause_does_not_cut_the_user_off(engine: Any, say: Any, tmp_path: Path) -> None:
    first, second = "I was thinking that maybe we could", "go to the park tomorrow afternoon."
    audio = ArrayAudio(realtime=True, keep_output=False)
    pause = np.zeros(int(1.0 * RATE), np.float32)  # a second of thought after an unfinished phrase
    with running(engine, audio, tmp_path, max_tokens=20) as run:
        audio.feed(np.concatenate([say(first), pause, say(second)]))
        run.wait(lambda: bool([t for t in run.of(Transcript) if t.final]), 40, "the turn")
        time.sleep(1.5)
    finals = [t.text for t in run.of(Transcript) if t.final]
    assert len(finals) == 1 and wer(f"{first} {second}", finals[0]) <= 0.2, finals


def test_a_long_turn_is_transcribed_as_it_goes_and_cut_only_between_words(engine: Any, tmp_path: Path) -> None:
    """The 10 s clip has short pauses at its commas. The turn is cut at those whose final heard whole words, so
    the final at the end transcribes only the last seconds, and no word is lost or heard twice at a cut."""
    _, path, ref = clips()[0]
    clip = decode_file(path)
    audio = ArrayAudio(realtime=True, keep_output=False)
    with running(engine, audio, tmp_path, max_tokens=12) as run:
        audio.feed(np.concatenate([np.zeros(int(0.3 * RATE), np.float32), clip]))
        run.wait(lambda: bool(run.of(VoiceReply) and run.of(VoiceReply)[-1].final), 90, "the answer")
    final = next(t.text for t in run.of(Transcript) if t.final)
    stats = run.of(VoiceReply)[-1].stats
    assert wer(ref, final) <= 0.15, final
    assert 0 < stats["asr_final_audio_s"] < 0.6 * len(clip) / RATE, stats


def test_backchannels_do_not_stop_nexus_but_speech_does_within_200_ms(engine: Any, say: Any, tmp_path: Path) -> None:
    _, clip, ref = clips()[1]
    audio = ArrayAudio(realtime=True)
    with running(engine, audio, tmp_path, persona=STORYTELLER, max_tokens=200) as run:
        audio.feed(say("Tell me a story about a lighthouse keeper."))
        run.wait(lambda: run.states()[-1] == "speaking", 60, "Nexus to speak")
        time.sleep(1.0)
        n = len(run.states())
        audio.feed(say("Yeah, okay."))
        run.wait(lambda: "hearing" in run.states()[n:], 10, "Nexus to notice")
        run.wait(lambda: run.states()[-1] == "speaking", 10, "Nexus to go on after the yeah")
        time.sleep(1.5)
        at = audio.feed(decode_file(clip))  # now the user really talks
        run.wait(lambda: len([t for t in run.of(Transcript) if t.final]) >= 2, 40, "the interruption's turn")
        time.sleep(0.5)
    finals = [t.text for t in run.of(Transcript) if t.final]
    assert len(finals) == 2 and wer(ref, finals[1]) <= 0.25, finals  # "yeah, okay" was not a turn
    replies = [r for r in run.of(VoiceReply) if r.final]
    assert replies[0].status == "cancelled"
    out = np.concatenate(audio.out)
    onset = at + int(np.argmax(np.abs(decode_file(clip)) > 0.02))
    last = np.nonzero(np.abs(out[onset:onset + RATE // 2]) > 1e-3)[0]
    stopped_ms = (last[-1] if last.size else 0) * 1000 / RATE
    print(f"[measure] in-memory barge-in: Nexus's output stopped {stopped_ms:.0f} ms after the onset")
    assert stopped_ms <= 200


def test_the_call_survives_the_device_going_away(engine: Any, tmp_path: Path) -> None:
    _, clip, ref = clips()[1]
    audio = ArrayAudio(realtime=True, keep_output=False)
    with running(engine, audio, tmp_path, max_tokens=20) as run:
        time.sleep(0.5)
        audio.close()  # unplugged: no more frames
        audio.error = "the input device stopped"
        run.wait(lambda: "reconnecting" in run.states(), 10, "the reconnecting state")
        audio.error = None  # plugged back in: the loop's next start() succeeds
        run.wait(lambda: run.states()[-1] == "listening", 10, "listening again")
        audio.feed(decode_file(clip))
        run.wait(lambda: bool([t for t in run.of(Transcript) if t.final]), 40, "a turn after the reconnect")
    assert wer(ref, next(t.text for t in run.of(Transcript) if t.final)) <= 0.25


def test_without_echo_cancellation_nexus_would_hear_itself(engine: Any, say: Any, tmp_path: Path) -> None:
    """The control for the echo tests: the same echo path with the canceller and the gate off makes Nexus
    interrupt itself, so the echo tests can fail."""
    audio = ArrayAudio(realtime=True, keep_output=False, echo=(80.0, 0.5))
    with running(engine, audio, tmp_path, persona=STORYTELLER, max_tokens=60, aec=False) as run:
        audio.feed(say("Tell me a story about a lighthouse keeper."))
        run.wait(lambda: "speaking" in run.states(), 60, "Nexus to speak")
        spoke = len(run.states())
        run.wait(lambda: "hearing" in run.states()[spoke:], 20, "Nexus hearing itself")
