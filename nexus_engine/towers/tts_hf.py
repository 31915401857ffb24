"""Seed speech: Qwen3-TTS (12 Hz, 1.7B) through Qwen's `qwen-tts` package.

The truth about loading it (checked against PyPI and transformers 5.24): transformers has no Qwen3-TTS class;
the model's code lives in the official `qwen-tts` package (`Qwen3TTSModel.from_pretrained(folder,
device_map=…, dtype=…)`, then `generate_custom_voice(text, language, speaker, instruct)` for the CustomVoice
checkpoints or `generate_voice_design(text, language, instruct)` for VoiceDesign, each returning
(list of waveforms, sample rate)). qwen-tts 0.1.1 pins transformers==4.57.3 and accelerate==1.12.0 and needs
torchaudio, librosa, soundfile and sox, so it cannot share Nexus's environment (transformers 5); without it
this tower raises ModelMissingError saying so. The released checkpoints are named
Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice, -VoiceDesign and -Base (voice cloning).

options: mode ("custom_voice" | "voice_design"), speaker (default "Ryan"), language (default "Auto"),
instruct (style prompt).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from nexus_engine.config.schema import TowerSpec
from nexus_engine.errors import BadInputError, ModelMissingError
from nexus_engine.towers import hf_loading
from nexus_engine.towers.seed_common import FLOATS, SeedTower, load_errors, read_config

PACKAGE_HINT = ("pip install qwen-tts; note that qwen-tts 0.1.1 pins transformers==4.57.3 and accelerate==1.12.0 "
                "(Nexus runs transformers 5) and needs torchaudio, librosa, soundfile and sox, so it has to live in "
                "an environment of its own until Qwen releases a transformers-5 build")


class QwenTTS(SeedTower):
    QUANTS = FLOATS
    QUANT_WHY = "qwen-tts documents bf16/fp16/fp32 loads only, and a 1.7B talker fits a GPU in bf16"

    def _load(self, spec: TowerSpec, folder: Path) -> dict[str, Any]:
        try:
            from qwen_tts import Qwen3TTSModel
        except ImportError as e:
            raise ModelMissingError(f"tower {spec.name!r}: Qwen3-TTS needs the `qwen-tts` package", PACKAGE_HINT) from e
        config = read_config(folder)
        hf_loading.check_weights(spec, folder)  # safetensors only, truncation named by file
        device_map = "cuda:0" if torch.cuda.is_available() and spec.device != "cpu" else "cpu"
        with load_errors(spec, folder, "qwen-tts"):
            model = Qwen3TTSModel.from_pretrained(str(folder), device_map=device_map,
                                                  dtype=hf_loading.torch_dtype(spec))
        self._modules["tts"] = model
        net = getattr(model, "model", None)  # the nn.Module inside the wrapper, for the footprint
        if isinstance(net, torch.nn.Module):
            self._modules["net"] = net
        return {"model_type": config.get("model_type", ""), "device_map": device_map,
                "mode": self.spec.options.get("mode", "custom_voice")}

    def speak(self, text: str, voice: str | None = None, language: str | None = None,
              instruct: str | None = None) -> tuple[np.ndarray, int]:
        """Text -> (float32 mono waveform, sample rate)."""
        if not text.strip():
            raise BadInputError("nothing to say: the text is empty")
        model, opts = self._need("tts"), self.spec.options
        lang = language or opts.get("language", "Auto")
        style = instruct if instruct is not None else opts.get("instruct")
        with torch.inference_mode():
            if opts.get("mode", "custom_voice") == "voice_design":
                wavs, sr = model.generate_voice_design(text=text, language=lang, instruct=style or "")
            else:
                kwargs = {"instruct": style} if style else {}
                wavs, sr = model.generate_custom_voice(text=text, language=lang,
                                                       speaker=voice or opts.get("speaker", "Ryan"), **kwargs)
        return np.asarray(wavs[0], dtype=np.float32), int(sr)

    def warmup(self) -> None:
        self.speak("Hi.")
