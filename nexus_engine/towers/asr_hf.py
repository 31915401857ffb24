"""Seed speech recognition: Parakeet TDT and VibeVoice-ASR on transformers, Parakeet on NeMo when installed.

What actually loads these models (checked against transformers 5.24's source and the model repos):
- nvidia/parakeet-tdt-0.6b-v3: transformers >= 5 has ParakeetForTDT (model_type "parakeet_tdt": FastConformer
  encoder + LSTM prediction network + token-and-duration joint) and ParakeetProcessor; the hub repo ships
  config.json / model.safetensors / tokenizer.json next to the original `.nemo` archive. So backend
  "transformers" loads it with no extra package. Backend "nemo" loads the `.nemo` archive with NVIDIA NeMo
  (`pip install "nemo_toolkit[asr]"`, not installed here: a large install of its own); a `.nemo` holds a
  pickled checkpoint, so it is refused unless the tower sets options.allow_pickle.
- microsoft/VibeVoice-ASR: that repo is in the original VibeVoice code's format (VibeVoiceForASRTraining, from
  Microsoft's `vibevoice` GitHub package, not on PyPI). transformers >= 5 has VibeVoiceAsrForConditionalGeneration
  (model_type "vibevoice_asr") for the converted checkpoint microsoft/VibeVoice-ASR-HF: point the tower there.

TransformersASR picks the class from config.json `architectures` (a transformers class, never remote code) and
one of two input paths from the processor: a chat-style speech LM (the processor has
`apply_transcription_request`: VibeVoice) generates JSON segments (speaker, start, end, text); an encoder model
(Parakeet, Whisper-like) gets `processor(audio)` and `generate()`, and TDT durations become word timestamps.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nexus_engine.config.schema import TowerSpec
from nexus_engine.errors import BadInputError, ModelMissingError, UnsafeWeightsError
from nexus_engine.towers.seed_common import (
    BNB,
    FLOATS,
    SeedTower,
    cast_floats,
    check_quantization,
    check_remote_code,
    input_device,
    load_errors,
    read_config,
    transformers_kwargs,
)

# Parakeet is a 0.6B FastConformer: its convolutions and LSTM stay float under bitsandbytes, which only
# replaces Linear layers, so 4/8-bit saves little and is not what the model was validated with
ARCH_QUANTS = {"parakeet_tdt": FLOATS, "parakeet_ctc": FLOATS, "parakeet_rnnt": FLOATS}
ASR_STEPS_PER_SECOND = 25
MAX_NEW_TOKENS = 8192  # VibeVoice writes ~3 tokens per word plus JSON: about 20 minutes of speech


@dataclass
class Transcript:
    text: str
    segments: list[dict[str, Any]] = field(default_factory=list)  # start/end seconds (+ speaker) when known


def resample(audio: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Linear-interpolation resampling: enough for speech recognition features (mel filters drop the rest)."""
    if src == dst:
        return audio
    n = round(len(audio) * dst / src)
    return np.interp(np.linspace(0, len(audio) - 1, n), np.arange(len(audio)), audio).astype(np.float32)


def mono_float(audio: Any) -> np.ndarray:
    arr = np.asarray(audio)
    if arr.dtype == np.int16:
        arr = arr.astype(np.float32) / 32768.0
    arr = arr.astype(np.float32)
    if arr.ndim == 2:  # (samples, channels) or (channels, samples): average the shorter axis away
        arr = arr.mean(axis=int(np.argmin(arr.shape)))
    if arr.ndim != 1 or arr.size == 0:
        raise BadInputError(f"expected mono audio samples, got an array of shape {np.asarray(audio).shape}")
    return arr


class TransformersASR(SeedTower):
    QUANTS = (*BNB, *FLOATS)  # VibeVoice-ASR is a 9B speech LM: nf4 is how it fits next to the others

    def _load(self, spec: TowerSpec, folder: Path) -> dict[str, Any]:
        from transformers import AutoProcessor

        config = read_config(folder)
        model_type = config.get("model_type", "")
        check_quantization(spec, ARCH_QUANTS.get(model_type, self.QUANTS),
                           "Parakeet's convolution and LSTM layers stay float; run it in bf16/fp16")
        check_remote_code(spec, config, folder)
        cls = _model_class(spec, config)
        with load_errors(spec, folder):
            model = cls.from_pretrained(folder, **transformers_kwargs(spec, folder)).eval()
            proc = AutoProcessor.from_pretrained(folder)
        self._modules.update(model=model, processor=proc)
        self.chat = hasattr(proc, "apply_transcription_request")
        self.sampling_rate = int(proc.feature_extractor.sampling_rate)
        return {"model_type": model_type, "class": cls.__name__, "sampling_rate": self.sampling_rate,
                "dtype": str(model.dtype).removeprefix("torch.")}

    @torch.inference_mode()
    def transcribe(self, audio: Any, sample_rate: int, max_new_tokens: int | None = None) -> Transcript:
        model, proc = self._need("model"), self._need("processor")
        samples = resample(mono_float(audio), sample_rate, self.sampling_rate)
        if self.chat:
            return self._transcribe_chat(model, proc, samples, max_new_tokens or MAX_NEW_TOKENS)
        enc = cast_floats(proc(samples, sampling_rate=self.sampling_rate).to(input_device(model)), model.dtype)
        # a transducer step emits a token or skips frames (12.5 encoder frames/s for Parakeet): 25 steps per second
        # of audio covers both, where generate()'s default length would cut a long utterance short
        budget = max_new_tokens or int(len(samples) / self.sampling_rate * ASR_STEPS_PER_SECOND) + 32
        out = model.generate(**enc, max_new_tokens=budget)
        seqs = getattr(out, "sequences", out)
        durations = getattr(out, "durations", None)
        if durations is not None and "durations" in inspect.signature(proc.decode).parameters:
            texts, stamps = proc.decode(seqs, durations=durations, skip_special_tokens=True)  # TDT: word times
            return Transcript(_first(texts).strip(), list(stamps[0]))
        return Transcript(proc.batch_decode(seqs, skip_special_tokens=True)[0].strip())

    def _transcribe_chat(self, model: Any, proc: Any, samples: np.ndarray, max_new: int) -> Transcript:
        enc = proc.apply_transcription_request(audio=samples, prompt=self.spec.options.get("prompt"))
        enc = cast_floats(enc.to(input_device(model)), model.dtype)
        out = model.generate(**enc, max_new_tokens=max_new, do_sample=False)
        new = out[0, enc["input_ids"].shape[1]:]
        parsed = proc.decode(new, return_format="parsed")  # [{"Start", "End", "Speaker", "Content"}] or raw text
        if isinstance(parsed, list) and all(isinstance(s, dict) for s in parsed):
            segments = [{"start": s.get("Start"), "end": s.get("End"), "speaker": s.get("Speaker"),
                         "text": str(s.get("Content", ""))} for s in parsed]
            return Transcript(" ".join(s["text"] for s in segments).strip(), segments)
        return Transcript(proc.decode(new, skip_special_tokens=True).strip())

    def warmup(self) -> None:
        self.transcribe(np.zeros(self.sampling_rate // 2, dtype=np.float32), self.sampling_rate, max_new_tokens=2)


class NemoASR(SeedTower):
    """Parakeet from its `.nemo` archive through NVIDIA NeMo (only when nemo_toolkit is installed)."""

    QUANTS = FLOATS
    QUANT_WHY = "NeMo runs Parakeet in float precision; bitsandbytes is a transformers/diffusers feature"

    def _load(self, spec: TowerSpec, folder: Path) -> dict[str, Any]:
        archive = next(iter(sorted(folder.glob("*.nemo"))), None)
        if archive is None:
            raise ModelMissingError(f"tower {spec.name!r}: no .nemo archive in {folder}",
                                    "download the model's .nemo file, or use backend = \"transformers\" with its "
                                    "config.json + model.safetensors")
        try:
            import nemo.collections.asr as nemo_asr
        except ImportError as e:
            raise ModelMissingError(
                f"tower {spec.name!r}: backend 'nemo' needs NVIDIA NeMo, which is not installed",
                'pip install "nemo_toolkit[asr]", or set backend = "transformers" for this tower: transformers >= 5 '
                "loads Parakeet TDT (ParakeetForTDT) from the same repo's safetensors, with nothing else to "
                "install") from e
        if spec.options.get("allow_pickle") is not True:
            raise UnsafeWeightsError(
                f"tower {spec.name!r}: {archive.name} holds a pickled checkpoint, which can run code when loaded",
                f'use backend = "transformers" (safetensors), or set options.allow_pickle = true in '
                f"[towers.{spec.name}] if you trust where the file came from")
        device = "cuda" if torch.cuda.is_available() and spec.device != "cpu" else "cpu"
        with load_errors(spec, folder, "NeMo"):
            model = nemo_asr.models.ASRModel.restore_from(str(archive), map_location=torch.device(device)).eval()
        self._modules["model"] = model
        self.sampling_rate = int(getattr(model.cfg, "sample_rate", 16000))
        return {"archive": archive.name, "class": type(model).__name__}

    @torch.inference_mode()
    def transcribe(self, audio: Any, sample_rate: int, max_new_tokens: int | None = None) -> Transcript:
        model = self._need("model")
        samples = resample(mono_float(audio), sample_rate, self.sampling_rate)
        hyp = model.transcribe([samples], batch_size=1, verbose=False)[0]
        return Transcript(str(getattr(hyp, "text", hyp)).strip())


def _model_class(spec: TowerSpec, config: dict[str, Any]) -> Any:
    """The transformers class named in config.json `architectures` (e.g. ParakeetForTDT)."""
    import transformers

    for name in config.get("architectures") or []:
        cls = getattr(transformers, name, None)
        if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
            return cls
    raise ModelMissingError(f"tower {spec.name!r}: this transformers ({transformers.__version__}) has no class for "
                            f"architectures {config.get('architectures')} (model_type {config.get('model_type')!r})",
                            "upgrade transformers, or use the checkpoint converted for transformers (for VibeVoice-"
                            "ASR: microsoft/VibeVoice-ASR-HF)")


def _first(texts: Any) -> str:
    return texts if isinstance(texts, str) else texts[0]
