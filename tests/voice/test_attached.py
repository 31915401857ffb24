"""Audio attached to a chat turn (voice/attached.py): heard by the real Whisper tower, answered by the real chat
model from the transcript; damaged, silent and mixed attachments still get an answer."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nexus_engine.protocol import ChatRequest, Progress
from nexus_engine.vision import compose
from nexus_engine.voice import attached
from nexus_engine.voice.wer import wer
from tests.voice.conftest import clips, write_wav

QUESTION = [{"role": "user", "content": "What did the speaker say?"}]


def _chat(engine: Any, attachments: list[dict[str, str]], events: list[Any] | None = None,
          cancel: threading.Event | None = None, messages: list[dict[str, str]] | None = None) -> dict[str, Any]:
    req = ChatRequest(messages=messages or QUESTION, attachments=attachments, max_tokens=12, temperature=0.0)
    return engine.chat(req, (events if events is not None else []).append, cancel or threading.Event())


def test_a_voice_note_is_heard_and_its_transcript_reaches_the_chat_model(engine: Any) -> None:
    _, clip, reference = clips()[0]
    events: list[Any] = []
    stats = _chat(engine, [{"path": str(clip), "kind": "audio"}], events)
    heard = stats["heard"]
    assert len(heard) == 1 and heard[0]["note"] == "" and heard[0]["duration_s"] > 1
    assert wer(reference, heard[0]["text"]) <= 0.3, heard[0]["text"]
    hearing = engine.tower_name(None, "hearing")
    assert stats["towers"][0] == hearing and stats["tower"] in stats["towers"] and stats["tokens"] >= 1
    assert any(isinstance(e, Progress) and clip.name in e.message for e in events)
    # the chat model's prompt holds the transcript: it is longer than the same question without the file by at
    # least the transcript's words
    plain = _chat(engine, [])
    assert "heard" not in plain
    assert stats["prompt_tokens"] - plain["prompt_tokens"] >= 0.8 * len(heard[0]["text"].split())


def test_damaged_silent_and_mixed_attachments_still_get_an_answer(engine: Any, tmp_path: Path) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    silent = write_wav(tmp_path / "silent.wav", np.zeros(16000, dtype=np.float32))
    image = next(iter(sorted(Path("/work/shared/data/coco").glob("*.jpg"))), None)
    files = [{"path": str(broken), "kind": "audio"}, {"path": str(silent), "kind": "audio"}]
    if image is not None:
        files.append({"path": str(image), "kind": "image"})
    stats = _chat(engine, files, messages=[{"role": "user", "content": "What is in these files?"}])
    notes = {Path(h["path"]).name: h["note"] for h in stats["heard"]}
    assert notes["broken.wav"].startswith("could not be read:") and "broken.wav" in notes["broken.wav"]
    assert notes["silent.wav"] == "the file is silent"
    assert stats["tokens"] >= 1
    if image is not None:  # the image took its own path after the audio was heard
        assert stats.get("perception") and stats.get("consolidation") in ("text", "projector")


def test_a_turn_cancelled_while_listening_loads_no_chat_model(engine: Any) -> None:
    _, clip, _ = clips()[0]
    cancel = threading.Event()
    cancel.set()
    stats = _chat(engine, [{"path": str(clip), "kind": "audio"}], cancel=cancel)
    assert stats["finish"] == "cancelled" and stats["tokens"] == 0 and len(stats["heard"]) == 1


# ------------------------------------------------------------------------------------------------ units
def test_report_is_the_agid_text_path_for_one_note_and_lists_several() -> None:
    one = [attached.Heard("/x/note.wav", "turn left at the lights", 2.5, "whisper-base")]
    assert attached.report(one) == attached.ONE.format("turn left at the lights")
    many = [*one, attached.Heard("/x/b.mp3", "", 1.0, "whisper-base", "the file is silent")]
    text = attached.report(many)
    assert text.startswith("The user sent 2 audio files.")
    assert "[Audio 1 (note.wav, 2.5 s): \u201cturn left at the lights\u201d]" in text
    assert "[Audio 2 (b.mp3, 1.0 s): nothing was heard (the file is silent)]" in text
    named = attached.Heard("/data/attachments/9c1e.flac", "hi", 1.0, name="voice memo.flac")
    assert named.entry(1).startswith("[Audio 1 (voice memo.flac, 1.0 s)")
    merged = compose.with_report([{"role": "system", "content": "Be brief."}, *QUESTION], text)
    assert merged[0]["content"].startswith("Be brief.\n\nThe user sent 2") and merged[1:] == QUESTION


@pytest.mark.parametrize(("attachment", "audio"), [
    ({"path": "/a/x.bin", "kind": "audio"}, True), ({"path": "/a/x.flac"}, True), ({"path": "/a/x.opus"}, True),
    ({"path": "/a/x.wav", "kind": "file"}, False), ({"path": "/a/x.png"}, False), ({"path": "/a/x.mp4"}, False)])
def test_which_attachments_are_audio(attachment: dict[str, str], audio: bool) -> None:
    assert attached.is_audio(attachment) is audio


def test_long_transcripts_are_cut_at_a_word_and_say_so() -> None:
    words = " ".join(f"word{i}" for i in range(3000))
    heard = [attached.Heard("/a.wav", words), attached.Heard("/b.wav", "short and whole")]
    attached._cap(heard)
    assert len(heard[0].text) <= attached.MAX_CHARS + 2 and heard[0].text.endswith(" \u2026")
    kept = len(heard[0].text.split()) - 1
    assert heard[0].note == f"transcript cut: {3000 - kept} more words; `nexus transcribe` gives the whole text"
    assert heard[1].text == "short and whole" and heard[1].note == ""


# ------------------------------------------------------------------------------------- audio projector path


@pytest.fixture
def projector_engine(tmp_path: Path, nexus_home: Path, shared_cache: Path,
                     monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Path]]:
    """An engine whose hearing tower has an audio projector adapter for its (tiny) chat LLM, as `nexus train audio`
    writes one; the weights are untrained: the path is under test here, the learning in test_agid_audio."""
    from nexus_engine import paths, testing
    from nexus_engine.config.load import load_models_toml
    from nexus_engine.consolidation import adapters
    from nexus_engine.consolidation import projector as pj
    from nexus_engine.engine import Engine
    from nexus_engine.research.agid.teacher import revision_of

    monkeypatch.setenv("NEXUS_CACHE", str(shared_cache))  # the joined Whisper weights of the session
    lm = testing.tiny_causal_lm_dir(tmp_path / "tiny-lm", hidden=64, layers=2, seed=3)
    user = tmp_path / "models.toml"
    user.write_text(testing.tiny_lm_profile_toml(lm, {"hearing": "whisper-base", "hearing_long": "whisper-base"}))
    config = load_models_toml([paths.SHIPPED_MODELS_TOML, user])
    proj = pj.Projector(512, 256, 64, pj.AUDIO_TOKENS)
    folder = adapters.adapter_dir("whisper-base", "audio_projector")
    adapters.write_adapter(folder, dict(proj.state_dict()), {
        "kind": "audio_projector", "tower": "whisper-base",
        "teacher": {"tower": "tiny-lm", "revision": revision_of(config.towers["tiny-lm"])},
        "source": {"tower": "whisper-base", "revision": adapters.asr_revision(config.towers["whisper-base"])},
        "config": {"in_width": 512, "latent": 256, "out_width": 64, "tokens": pj.AUDIO_TOKENS, "chunks": pj.CHUNKS,
                   "system": pj.SYSTEM_AUDIO, "placeholder": pj.AUDIO},
        "data": {}, "metrics": {}, "training": {}})
    engine = Engine(config, profile="t")
    yield engine, folder
    for name in list(engine.residency.towers()):  # the call tests after these want the CPU and memory back
        engine.residency.unload(name)


def _short_clip() -> Path:
    from nexus_engine.voice.audio_files import probe_duration

    return min((c for _, c, _ in clips()), key=probe_duration)


def test_short_audio_alone_takes_the_trained_projector(projector_engine: tuple[Any, Path]) -> None:
    engine, folder = projector_engine
    stats = _chat(engine, [{"path": str(_short_clip()), "kind": "audio"}])
    assert stats["consolidation"] == "projector" and stats["consolidation_modality"] == "audio"
    assert stats["towers"] == ["whisper-base", "tiny-lm"] and stats["adapter"] == str(folder)
    assert stats["audio_tokens"] == 13 and stats["audio_files"] == 1 and stats["tokens"] >= 1
    assert "heard" not in stats  # no transcript was made


def test_audio_projector_falls_back_to_the_transcript_with_the_reason(projector_engine: tuple[Any, Path],
                                                                     tmp_path: Path) -> None:
    engine, folder = projector_engine
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    stats = _chat(engine, [{"path": str(broken), "kind": "audio"}])
    assert "projector not used" in stats["consolidation_note"] and "broken.wav" in stats["consolidation_note"]
    assert stats["heard"][0]["note"].startswith("could not be read")
    # other ASR weights than the adapter heard with: refused, with the reason, and the transcript path answers
    manifest = folder / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["source"]["revision"] = "sha256:ffffffffffffffff"
    manifest.write_text(json.dumps(doc))
    stats = _chat(engine, [{"path": str(_short_clip()), "kind": "audio"}])
    assert "other whisper-base weights" in stats["consolidation_note"] and stats["heard"][0]["text"]
    assert stats["towers"] == ["whisper-base", "tiny-lm"] and "audio_tokens" not in stats
