"""Each stage with the real starter models: Silero VAD, Whisper base (WER on LibriSpeech, no phantom text on
silence and noise), Piper (read back by Whisper), SpeexDSP echo cancellation (ERLE), long-form transcription
(chunks, progress, timestamps, cancel), bad files, and a seed tower plugged into the same stage interface
through the residency manager."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nexus_engine.errors import BadInputError
from nexus_engine.protocol import Progress, TranscribeRequest, Transcript
from nexus_engine.voice import aec
from nexus_engine.voice.asr import AsrResult, StreamingASR, phantom_reason, transcribe_long
from nexus_engine.voice.audio_files import decode_file
from nexus_engine.voice.audio_io import RATE
from nexus_engine.voice.service import transcribe
from nexus_engine.voice.tts import Speaker
from nexus_engine.voice.wer import corpus_wer, normalize, wer
from tests.voice.conftest import clips, write_wav


@pytest.fixture(scope="module")
def librispeech() -> list[tuple[str, np.ndarray, str]]:
    return [(key, decode_file(f), text) for key, f, text in clips()]


# ---------------------------------------------------------------------------------------------- VAD
def test_silero_tower_matches_the_packages_own_wrapper(tower: Any, librispeech: Any) -> None:
    import torch

    threads = torch.get_num_threads()
    try:
        from silero_vad import load_silero_vad  # sets torch.set_num_threads(1) for the whole process
    finally:
        torch.set_num_threads(threads)
    reference = load_silero_vad(onnx=True)
    ours = tower("silero-vad").stream()
    audio = librispeech[1][1]
    a, b = [], []
    for i in range(0, len(audio) - 512, 512):
        w = audio[i:i + 512]
        a.append(ours(w))
        b.append(float(reference(torch.from_numpy(w.copy()), RATE)))
    assert np.max(np.abs(np.array(a) - np.array(b))) < 1e-4
    assert max(a) > 0.9 and min(a) < 0.1  # it hears the speech and the pause around it
    assert torch.get_num_threads() == threads


# ---------------------------------------------------------------------------------------------- ASR
def test_whisper_transcribes_librispeech_within_15_percent_wer(tower: Any, librispeech: Any) -> None:
    asr = tower("whisper-base")
    pairs = []
    for _, audio, ref in librispeech:
        res = asr.transcribe(audio, RATE)
        assert phantom_reason(res, audio, 3000) == ""
        pairs.append((ref, res.text))
    score = corpus_wer(pairs)
    print(f"[measure] whisper-base WER on {len(pairs)} LibriSpeech clips: {score:.3f}")
    assert score <= 0.15, pairs


def test_silence_and_noise_are_not_turned_into_text(tower: Any) -> None:
    asr = tower("whisper-base")
    rng = np.random.default_rng(0)
    for audio in (np.zeros(2 * RATE, np.float32), (rng.standard_normal(2 * RATE) * 0.02).astype(np.float32),
                  (rng.standard_normal(2 * RATE) * 0.3).astype(np.float32)):
        res = asr.transcribe(audio, RATE)
        # Whisper does invent text here ("I'm not sure if I can do it." was seen); the filter must catch it
        assert phantom_reason(res, audio, speech_ms=400) != "", res


def test_streaming_asr_gives_partials_and_a_final(tower: Any, librispeech: Any) -> None:
    got: list[tuple[int, AsrResult]] = []
    done = threading.Event()

    def on_result(tag: int, r: AsrResult) -> None:
        got.append((tag, r))
        if r.final:
            done.set()

    stream = StreamingASR(tower("whisper-base"), on_result)
    audio = librispeech[0][1]
    stream.submit(1, audio[:RATE * 3], final=False, speech_ms=3000)
    stream.submit(1, audio[:RATE * 3], final=False, speech_ms=3000)  # skipped: a partial never queues up
    stream.submit(2, audio, final=True, speech_ms=9000)
    assert done.wait(30)
    stream.close()
    assert [(t, r.final) for t, r in got] == [(1, False), (2, True)]
    assert got[0][1].text.lower().startswith("he hoped") and wer(librispeech[0][2], got[1][1].text) <= 0.15


# ---------------------------------------------------------------------------------------------- TTS
def test_piper_speaks_and_whisper_reads_it_back(tower: Any) -> None:
    text = "The weather today is sunny and warm, with a light breeze from the west."
    audio = Speaker(tower("piper-joe"))(text)
    assert 2.0 < len(audio) / RATE < 8.0
    assert 20 * np.log10(np.sqrt(np.mean(audio ** 2))) > -30  # real energy, not a whisper
    heard = tower("whisper-base").transcribe(audio, RATE).text
    # small words come and go, and each Piper rendering differs: CI once heard "But weather to date is sunny…"
    # (4 of 14 words). Whisper base's ordinary error on one rendering, as in the test below; garbage would be ~1.0
    assert wer(text, heard) <= 0.3, heard


@pytest.mark.parametrize("text", [
    # ended after "I would" in 7 of 12 Piper renderings (each one differs slightly): too few words for the voice
    "I would like a purple circle and three purple stars.",
    # ended at "…a light breeze from" in 3 of 16: the last aligned word ends 0.5 s before the voice does
    "The weather today is sunny and warm, with a light breeze from the west.",
])
def test_whisper_does_not_stop_before_the_end_of_a_short_sentence(tower: Any, text: str) -> None:
    """On a short window Whisper base sometimes ends a decode early; such a decode is done again on a longer one."""
    speak, asr = Speaker(tower("piper-joe")), tower("whisper-base")
    heard = [asr.transcribe(speak(text), RATE).text for _ in range(6)]
    # what is checked is the end: every decode reaches the sentence's last word (a misheard or dropped word elsewhere,
    # "The water today…", is ordinary Whisper-base error, not an early stop)
    last = normalize(text)[-1:]
    assert all(normalize(h)[-1:] == last for h in heard), heard
    assert all(wer(text, h) <= 0.3 for h in heard), heard


# ---------------------------------------------------------------------------------------------- AEC
def test_speexdsp_cancels_an_echo_and_keeps_the_near_voice(librispeech: Any) -> None:
    if not aec.available():
        pytest.skip("libspeexdsp is not installed (apt install libspeexdsp1)")
    far = np.concatenate([librispeech[0][1], librispeech[0][1]])  # Nexus speaking, ~21 s
    near = np.zeros_like(far)
    start = 14 * RATE
    near[start:start + len(librispeech[1][1])] = librispeech[1][1]  # the user talks over it at second 14
    rng = np.random.default_rng(0)
    d = int(0.12 * RATE)  # 120 ms to the speaker and back, then a short decaying reverb
    room = np.zeros(d + 800)
    room[d] = 0.5
    room[d:d + 800] += rng.standard_normal(800) * 0.03 * np.exp(-np.arange(800) / 200)
    echo = np.convolve(far, room)[:len(far)].astype(np.float32)
    mic = echo + near + (rng.standard_normal(len(far)) * 1e-3).astype(np.float32)
    canceller, delay = aec.SpeexEchoCanceller(), aec.DelayEstimator()
    out = np.zeros_like(mic)
    for i in range(0, len(mic) - 319, 320):
        shift = max(0, (delay.feed(mic[i:i + 320], far[i:i + 320]) or 0) - 160)
        ref = far[max(0, i - shift):i - shift + 320] if i >= shift else np.zeros(320, np.float32)
        out[i:i + 320] = canceller.process(mic[i:i + 320], ref)
    assert delay.delay is not None and abs(delay.delay - d) < 16
    settled = slice(5 * RATE, start)  # after 5 s of speech, before the user talks
    erle = aec.erle_db(mic[settled], out[settled])
    print(f"[measure] speexdsp ERLE on a 120 ms echo path: {erle:.1f} dB")
    assert erle >= 15.0
    talk = slice(start, start + len(librispeech[1][1]))
    late = slice(start + 320, start + 320 + len(librispeech[1][1]))  # the preprocessor delays by one frame
    kept = float(np.dot(out[late], near[talk]) / np.dot(near[talk], near[talk]))
    assert kept > 0.6  # the canceller removed the echo, not the user


def test_the_echo_gate_tells_the_echo_from_the_user() -> None:
    gate = aec.EchoGate()
    rng = np.random.default_rng(1)
    for i in range(150):  # Nexus speaks; the canceller leaves its voice 20 dB down; now and then the user
        ref = (rng.standard_normal(320) * 0.1).astype(np.float32)
        gate.update(ref, ref * (0.1 if i % 5 else 1.0), user_turn=False)
    assert -23 < gate.residual_db < -16
    assert gate.is_echo(-40.0)  # the leftover echo (~ -40 dBFS)
    assert not gate.is_echo(-25.0)  # the user at a normal level
    quiet = aec.EchoGate()
    for _ in range(30):
        quiet.update(np.zeros(320, np.float32), np.zeros(320, np.float32), False)
    assert not quiet.is_echo(-50.0)  # nothing playing: nothing to gate


# ----------------------------------------------------------------------------------------- long form
@pytest.fixture(scope="module")
def long_file(librispeech: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """~75 s: the clips three times with pauses and a stretch of room noise, as a FLAC file."""
    import av

    rng = np.random.default_rng(2)
    parts, refs = [], []
    for _ in range(3):
        for _, audio, ref in librispeech:
            parts += [audio, np.zeros(RATE, np.float32), (rng.standard_normal(RATE * 4) * 0.003).astype(np.float32)]
            refs.append(ref)
    audio = np.concatenate(parts)
    path = tmp_path_factory.mktemp("long") / "long.flac"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("flac", rate=RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray((audio * 32767).astype(np.int16)[None], format="s16", layout="mono")
        frame.sample_rate = RATE
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path, " ".join(refs)


def test_long_form_transcribes_in_chunks_with_progress_and_timestamps(tower: Any, long_file: Any) -> None:
    path, ref = long_file
    progress: list[tuple[float, float]] = []
    result = transcribe_long(tower("whisper-base"), path, chunk_s=20.0,
                             on_progress=lambda done, total, new: progress.append((done, total)))
    assert result["finish"] == "done" and len(progress) >= 3
    assert [p[0] for p in progress] == sorted(p[0] for p in progress)
    assert progress[-1][0] == pytest.approx(result["duration_s"], abs=0.1) == pytest.approx(progress[-1][1], 0.02)
    starts = [s["start"] for s in result["segments"]]
    assert starts == sorted(starts) and result["segments"][-1]["end"] <= result["duration_s"] + 0.5
    score = wer(ref, result["text"])
    print(f"[measure] long-form WER over {result['duration_s']:.0f} s: {score:.3f} in {result['compute_s']} s")
    assert score <= 0.15


def test_long_form_can_be_cancelled_between_chunks(tower: Any, long_file: Any) -> None:
    cancel = threading.Event()
    result = transcribe_long(tower("whisper-base"), long_file[0], chunk_s=20.0,
                             on_progress=lambda *a: cancel.set(), cancel=cancel)
    assert result["finish"] == "cancelled" and 15 < result["duration_s"] < 25 and result["segments"]


def test_the_worker_side_transcription_reports_progress_and_survives_bad_files(engine: Any, tmp_path: Path) -> None:
    events: list[Any] = []
    two = write_wav(tmp_path / "two.wav", np.concatenate([decode_file(f) for _, f, _ in clips()]))
    stats = transcribe(engine, TranscribeRequest(path=str(two), long=True), events.append, threading.Event())
    assert stats["finish"] == "done" and stats["segments"]
    assert any(isinstance(e, Progress) for e in events) and any(isinstance(e, Transcript) for e in events)
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" + os.urandom(2000))
    with pytest.raises(BadInputError, match=r"not a readable audio file|corrupt|no audio"):
        transcribe(engine, TranscribeRequest(path=str(bad)), events.append, threading.Event())
    silent = write_wav(tmp_path / "silence.wav", np.zeros(RATE * 3, np.float32))
    assert transcribe(engine, TranscribeRequest(path=str(silent)), events.append, threading.Event())["text"] == ""
    odd = write_wav(tmp_path / "odd-rate.wav", decode_file(clips()[1][1])[::2], rate=8000)  # 8 kHz input
    out = transcribe(engine, TranscribeRequest(path=str(odd)), events.append, threading.Event())
    assert wer(clips()[1][2], out["text"]) <= 0.3


# ------------------------------------------------------------------------------------------ seed tower
def test_a_seed_asr_tower_plugs_into_the_same_stage_through_the_residency_manager(tmp_path: Path) -> None:
    """Parakeet TDT's architecture (tiny random weights): the ASR stage only needs transcribe(audio, rate)."""
    from nexus_engine import testing
    from nexus_engine.config.schema import ModelsConfig, Profile, Source, TowerSpec
    from nexus_engine.residency.budget import machine_budget
    from nexus_engine.residency.manager import ResidencyManager

    folder = testing.tiny_parakeet_tdt_dir(tmp_path / "parakeet")
    spec = TowerSpec(name="tiny-parakeet", kind="asr", backend="transformers", capabilities=("hearing",),
                     source=Source(path=str(folder)), quantization="fp32", dtype="fp32", device="cpu",
                     latency="interactive")
    config = ModelsConfig(towers={spec.name: spec}, profiles={"t": Profile("t", "", {"hearing": (spec.name,)})},
                          default_profile="t")
    manager = ResidencyManager(config, machine_budget())
    with manager.acquire([spec.name]) as lease:
        assert lease.latency == "interactive"
        got: list[AsrResult] = []
        done = threading.Event()
        stream = StreamingASR(lease.tower(spec.name), lambda tag, r: (got.append(r), done.set()))
        stream.submit(1, (np.random.default_rng(0).standard_normal(RATE) * 0.1).astype(np.float32), True, 1000)
        assert done.wait(30)
        stream.close()
        assert got and isinstance(got[0].text, str) and not got[0].phantom.startswith("error")
    assert dataclasses.asdict(got[0])["final"] is True
