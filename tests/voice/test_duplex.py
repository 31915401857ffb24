"""A speech-to-speech persona (a tiny random-weight PersonaPlex/Moshi built from a config) plugged into the voice
loop as its answer stage: the turn's audio goes to the persona, its own audio reaches the speaker, its text and
the ASR's transcript of the user land in the shared history, and the chat LLM is not used."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nexus_engine.history import History
from nexus_engine.protocol import Transcript, VoiceReply, VoiceState
from nexus_engine.testing import tiny_moshi_dir, tower_toml
from nexus_engine.voice.audio_files import decode_file
from nexus_engine.voice.audio_io import RATE, ArrayAudio
from nexus_engine.voice.wer import wer
from tests.voice.conftest import clips
from tests.voice.test_loop_memory import running


@pytest.fixture(scope="module")
def duplex_engine(tmp_path_factory: pytest.TempPathFactory, voice_home: dict[str, str]) -> Any:
    from nexus_engine.config import load_models_toml
    from nexus_engine.engine import Engine
    from nexus_engine.paths import SHIPPED_MODELS_TOML

    tmp = tmp_path_factory.mktemp("duplex")
    user = tmp / "models.toml"
    user.write_text(tower_toml("tiny-persona", "persona", tiny_moshi_dir(tmp / "moshi"), "persona",
                               latency="interactive", backend="moshi").replace('"fp32"', '"bf16"'))
    old = os.environ.get("NEXUS_CACHE")
    os.environ["NEXUS_CACHE"] = voice_home["NEXUS_CACHE"]
    try:
        yield Engine(load_models_toml([SHIPPED_MODELS_TOML, user]))
    finally:
        if old is None:
            os.environ.pop("NEXUS_CACHE", None)
        else:
            os.environ["NEXUS_CACHE"] = old


def test_a_speech_to_speech_persona_answers_the_turn_with_its_own_voice(duplex_engine: Any, tmp_path: Path) -> None:
    _, path, ref = clips()[1]
    audio = ArrayAudio(realtime=True, keep_output=True)
    with running(duplex_engine, audio, tmp_path, llm="tiny-persona") as run:
        ready = next(m for m in run.of(VoiceState) if m.state == "listening")
        audio.feed(np.concatenate([np.zeros(int(0.3 * RATE), np.float32), decode_file(path)]))
        run.wait(lambda: any(isinstance(m, VoiceReply) and m.final for m in run.of(VoiceReply)), 90, "the answer")
    assert ready.info["towers"]["duplex"] == "tiny-persona"
    final = next(t for t in run.of(Transcript) if t.final)
    assert wer(ref, final.text) <= 0.25, final.text  # the user's side still comes from the ASR
    done = run.of(VoiceReply)[-1]
    assert done.status == "done", done
    played = audio.output()
    assert played.size > 0 and float(np.sqrt(np.mean(played ** 2))) > 1e-4  # its own audio reached the speaker
    said = " ".join(m.text for m in run.of(VoiceReply) if not m.final).strip()
    print("[measure] persona said", repr(said), "audio", played.size / RATE, "s")
    with History(tmp_path / "history.sqlite3") as h:
        msgs = h.messages(final.conversation_id)
    assert [m.role for m in msgs[-2:]] == ["user", "assistant"] and msgs[-1].content.strip() == said
    towers = duplex_engine.residency.snapshot()["towers"]
    assert towers["tiny-persona"]["tier"] != "cold" and towers.get("smollm2-chat", {}).get("tier", "cold") == "cold"
