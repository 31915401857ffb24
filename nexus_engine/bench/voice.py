"""`nexus bench voice`: end-of-speech to first audio, stage by stage, through the real voice loop.

The LibriSpeech clips (../shared/data/librispeech, or --clips) are spoken into an in-memory device in real time
(audio_io.ArrayAudio: the same loop, echo canceller, VAD, turn taking, ASR, LLM and TTS as a call, without a
sound card, so it runs the same on a CI machine and a GPU box). Each clip is fed, the reply is awaited, then
the next clip follows. Per turn: the ground-truth end of speech (the clip's last sample above -35 dB of its
peak, at the moment the device delivered it) and the loop's stage times:

  vad_eot_ms          end of speech -> the turn is declared over (silence rule + transcript hint)
  asr_final_ms        end of speech -> the final transcript is known
  llm_first_token_ms  the reply's request -> its first token (the LLM's own latency)
  tts_first_audio_ms  synthesis time of the first spoken piece
  total_ms            end of speech -> the first reply sample handed to the speaker

Medians and p95 over the turns; the goal is 800 ms on a CPU with the starter pack, 300 ms on a GPU.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from nexus_engine import paths
from nexus_engine.config import load_config
from nexus_engine.engine import Engine
from nexus_engine.history import History
from nexus_engine.protocol import Message, Transcript, VoiceReply
from nexus_engine.voice.audio_files import decode_file
from nexus_engine.voice.audio_io import RATE, ArrayAudio
from nexus_engine.voice.loop import VoiceLoop, VoiceSettings
from nexus_engine.voice.wer import corpus_wer

DEFAULT_CLIPS = paths.REPO_ROOT.parent / "shared" / "data" / "librispeech"
STAGES = ("vad_eot_ms", "asr_final_ms", "llm_first_token_ms", "tts_first_audio_ms", "total_ms")


def load_clips(folder: Path) -> list[tuple[str, np.ndarray, str]]:
    """(name, 16 kHz audio, reference text) for every clip with a line in a *.trans.txt file."""
    refs: dict[str, str] = {}
    for trans in sorted(folder.glob("*.trans.txt")):
        for line in trans.read_text().splitlines():
            key, _, text = line.partition(" ")
            refs[key] = text
    clips = []
    for f in sorted(folder.iterdir()):
        if f.suffix in (".flac", ".wav") and f.stem in refs:
            clips.append((f.stem, decode_file(f), refs[f.stem]))
    return clips


def speech_end(audio: np.ndarray, below_peak_db: float = 35.0) -> int:
    """Sample index just after the last 10 ms block within `below_peak_db` of the clip's loudest block."""
    n = len(audio) // 160
    rms = np.sqrt(np.square(audio[:n * 160].reshape(n, 160)).mean(axis=1) + 1e-12)
    db = 20 * np.log10(rms)
    loud = np.nonzero(db >= db.max() - below_peak_db)[0]
    return int((loud[-1] + 1) * 160) if loud.size else len(audio)


def summarize(values: list[float]) -> dict[str, float | int | None]:
    v = sorted(x for x in values if x is not None)
    if not v:
        return {"n": 0, "median": None, "p95": None}
    p95 = v[min(len(v) - 1, round(0.95 * (len(v) - 1)))]
    return {"n": len(v), "median": round(statistics.median(v), 1), "p95": round(p95, 1), "min": round(v[0], 1),
            "max": round(v[-1], 1)}


def _device() -> dict[str, Any]:
    gpu = ""
    try:
        import ctranslate2

        if ctranslate2.get_cuda_device_count() > 0:
            gpu = "cuda"
    except Exception:
        pass
    return {"gpu": bool(gpu), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "load_avg": os.getloadavg()}


def run(rounds: int = 3, clips_dir: Path | None = None, profile: str | None = None, gap_s: float = 1.0,
        timeout_s: float = 60.0, device: str = "auto") -> dict[str, Any]:
    """device: "auto" runs the voice towers on the GPU when CUDA is there, "cpu" keeps them on the CPU."""
    folder = Path(clips_dir or DEFAULT_CLIPS)
    clips = load_clips(folder)
    if not clips:
        raise FileNotFoundError(f"no LibriSpeech clips with transcripts in {folder}")
    config = load_config()
    info = _device()
    if device == "auto" and info["gpu"]:  # the starter pack declares CPU towers; a GPU run moves ASR and TTS
        for role in ("hearing", "speech"):
            spec = config.tower_for(role, profile)
            if spec is not None:
                config.towers[spec.name] = dataclasses.replace(spec, device="gpu")
    engine = Engine(config, profile)
    replies: list[VoiceReply] = []
    finals: list[Transcript] = []
    got = threading.Condition()

    def emit(msg: Message) -> None:
        with got:
            if isinstance(msg, VoiceReply) and msg.final:
                replies.append(msg)
            elif isinstance(msg, Transcript) and msg.final:
                finals.append(msg)
            got.notify_all()

    audio = ArrayAudio(realtime=True, keep_output=False)
    with tempfile.TemporaryDirectory() as tmp, History(Path(tmp) / "bench.sqlite3") as history:
        loop = VoiceLoop(engine, audio, VoiceSettings(), emit, "bench", history)
        stop = threading.Event()
        result: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: result.update(loop.run(stop)), daemon=True)
        t_load = time.perf_counter()
        thread.start()
        while audio.ticks == 0 and thread.is_alive():  # models load, then the device clock starts
            time.sleep(0.05)
        load_s = time.perf_counter() - t_load
        turns = []
        try:
            for r in range(rounds):
                for name, clip, ref in clips:
                    n_before = len(replies)
                    pos = audio.feed(np.concatenate([np.zeros(int(0.3 * RATE), np.float32), clip]))
                    end_pos = pos + int(0.3 * RATE) + speech_end(clip)
                    with got:
                        got.wait_for(lambda n=n_before: len(replies) > n, timeout=timeout_s)  # type: ignore[misc]
                    time.sleep(gap_s)
                    reply = replies[n_before] if len(replies) > n_before else None
                    final = next((f.text for f in reversed(finals)), "")
                    turns.append(_turn(name, r, ref, final, reply, audio.wall_of(end_pos)))
        finally:
            stop.set()
            thread.join(30)
    stats = {s: summarize([t.get(s) for t in turns]) for s in STAGES}
    on_gpu = info["gpu"] and device == "auto"
    goal = 300.0 if on_gpu else 800.0
    median_total = stats["total_ms"]["median"]
    return {
        "bench": "voice", "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": {**info, "voice_towers_on": "gpu" if on_gpu else "cpu"},
        "pipeline": {"profile": engine.profile, "towers": _towers(engine), "aec": "speexdsp", "clips": str(folder)},
        "model_load_s": round(load_s, 2), "rounds": rounds, "turns": turns, "summary": stats,
        "wer": round(corpus_wer([(t["reference"], t["transcript"]) for t in turns]), 4),
        "goal_total_ms": goal, "goal_met": bool(median_total is not None and median_total <= goal),
        "phantom_turns": result.get("phantoms"),
    }


def _turn(name: str, r: int, ref: str, final: str, reply: VoiceReply | None, end_wall: float) -> dict[str, Any]:
    stats = dict(reply.stats) if reply is not None else {}
    first_audio = stats.pop("first_audio_wall", None)
    out: dict[str, Any] = {"clip": name, "round": r, "reference": ref, "transcript": final,
                           "status": reply.status if reply is not None else "no reply"}
    loop_end = stats.pop("speech_end_wall", None)
    # the loop measures from its own VAD estimate of the end of speech; re-base every "at" time on the truth
    shift = (loop_end - end_wall) * 1000 if loop_end and end_wall else 0.0
    for key in ("vad_eot_ms", "asr_final_ms"):
        out[key] = round(stats[key] + shift, 1) if stats.get(key) is not None else None
    out["asr_final_audio_s"] = stats.get("asr_final_audio_s")
    out["llm_first_token_ms"] = stats.get("llm_first_token_ms")
    out["tts_first_audio_ms"] = stats.get("tts_first_audio_ms")
    out["total_ms"] = round((first_audio - end_wall) * 1000, 1) if first_audio and end_wall else None
    out["vad_speech_end_error_ms"] = round(shift, 1)
    out["speculative"] = stats.get("speculative")
    return out


def _towers(engine: Engine) -> dict[str, str]:
    out = {}
    for role in ("hearing", "persona", "speech"):
        spec = engine.config.tower_for(role, engine.profile)
        out[role] = spec.name if spec else ""
    return out
