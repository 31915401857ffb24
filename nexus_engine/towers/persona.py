"""Full-duplex persona on the Moshi architecture (PersonaPlex 7B).

Two checkpoint layouts exist, and the folder says which one this is:
- transformers layout (config.json with model_type "moshi", e.g. kmhf/hf-moshika): MoshiForConditionalGeneration
  with its Mimi codec inside, loaded like any transformers model (bitsandbytes int8 works here).
- native layout (nvidia/personaplex-7b-v1, Kyutai's own releases): `model.safetensors` (the LM) next to
  `tokenizer-*.safetensors` (Mimi) and `tokenizer_spm_*.model` (SentencePiece), no config.json. It loads only
  through NVIDIA's fork of Kyutai's `moshi` package from the PersonaPlex repository (its moshi/ folder;
  PersonaPlex widens the depth transformer to 16 codebooks, so PyPI's `moshi` cannot load it). That package is
  not installed here, so this path raises ModelMissingError naming it; it runs in bf16/fp16 (its loader has
  no int8) and uses the fork's accelerate CPU offload for device = "offload".

`respond(audio, sample_rate)` feeds the user's audio (24 kHz mono) and returns the persona's audio and text
for the same span of time: Moshi speaks while it listens, one 80 ms frame per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nexus_engine.config.schema import TowerSpec
from nexus_engine.errors import ConfigError, InternalError, ModelMissingError
from nexus_engine.towers import hf_loading
from nexus_engine.towers.asr_hf import mono_float, resample
from nexus_engine.towers.seed_common import (
    FLOATS,
    SeedTower,
    check_remote_code,
    input_device,
    load_errors,
    read_config,
    transformers_kwargs,
)

NATIVE_LM = "model.safetensors"
NATIVE_MIMI_GLOB = "tokenizer-*.safetensors"
NATIVE_TEXT_GLOB = "tokenizer_spm_*.model"
TEXT_EPAD, TEXT_PAD = 0, 3  # Moshi's text stream: 0 ends a padding run, 3 pads between words
NATIVE_PACKAGE_HINT = ("install NVIDIA's `moshi` package from the PersonaPlex repository (pip install its moshi/ "
                       "folder) together with sentencepiece, or use a checkpoint in transformers' Moshi format")


@dataclass
class Reply:
    audio: np.ndarray  # float32 mono at `sample_rate`
    sample_rate: int
    text: str


class MoshiPersona(SeedTower):
    QUANTS = ("int8", *FLOATS)
    # the depth decoder runs once per codebook per 80 ms frame: nf4's dequantization cost would miss that budget
    QUANT_WHY = "4-bit dequantization is too slow for Moshi's 80 ms frames"

    def _load(self, spec: TowerSpec, folder: Path) -> dict[str, Any]:
        if (folder / "config.json").exists():
            return self._load_transformers(spec, folder)
        if (folder / NATIVE_LM).exists():
            return self._load_native(spec, folder)
        raise ModelMissingError(f"tower {spec.name!r}: {folder} has neither config.json (transformers Moshi) nor "
                                f"{NATIVE_LM} (PersonaPlex / Kyutai layout)", "download the model into that folder")

    # ------------------------------------------------------------------------------- transformers layout
    def _load_transformers(self, spec: TowerSpec, folder: Path) -> dict[str, Any]:
        from transformers import MoshiForConditionalGeneration

        config = read_config(folder)
        check_remote_code(spec, config, folder)
        with load_errors(spec, folder):
            model = MoshiForConditionalGeneration.from_pretrained(folder, **transformers_kwargs(spec, folder)).eval()
        self._modules["model"] = model
        self._modules["tokenizer"] = _tokenizer(folder)
        self.layout = "transformers"
        self.sampling_rate = int(model.config.sampling_rate)
        self.frame_size = int(self.sampling_rate / model.config.audio_encoder_config.frame_rate)
        return {"layout": self.layout, "dtype": str(model.dtype).removeprefix("torch."),
                "frame_ms": 1000 * self.frame_size / self.sampling_rate}

    # ------------------------------------------------------------------------------------ native layout
    def _load_native(self, spec: TowerSpec, folder: Path) -> dict[str, Any]:
        if spec.quantization not in FLOATS:
            raise ConfigError(f"tower {spec.name!r}: the PersonaPlex/Kyutai checkpoint loads only in bf16/fp16/fp32 "
                              f"(its moshi loader has no {spec.quantization})",
                              f'set quantization = "bf16" and device = "offload" in [towers.{spec.name}] to fit it')
        try:
            import sentencepiece
            from moshi.models import LMGen, loaders
        except ImportError as e:
            raise ModelMissingError(f"tower {spec.name!r}: this PersonaPlex checkpoint needs the `moshi` package",
                                    NATIVE_PACKAGE_HINT) from e
        mimi_file = next(iter(sorted(folder.glob(NATIVE_MIMI_GLOB))), None)
        text_file = next(iter(sorted(folder.glob(NATIVE_TEXT_GLOB))), None)
        if mimi_file is None or text_file is None:
            raise ModelMissingError(f"tower {spec.name!r}: {folder} lacks the Mimi codec ({NATIVE_MIMI_GLOB}) or the "
                                    f"text tokenizer ({NATIVE_TEXT_GLOB})", "download the complete model repo")
        for path in (folder / NATIVE_LM, mimi_file):
            hf_loading.check_safetensors(path)  # a truncated download is named before moshi reads it
        device = "cuda" if torch.cuda.is_available() and spec.device != "cpu" else "cpu"
        with load_errors(spec, folder, "moshi"):
            mimi = loaders.get_mimi(mimi_file, device)
            lm = loaders.get_moshi_lm(folder / NATIVE_LM, device=device, dtype=hf_loading.torch_dtype(spec),
                                      cpu_offload=spec.device == "offload")
            text = sentencepiece.SentencePieceProcessor(str(text_file))
        self.sampling_rate = int(mimi.sample_rate)
        self.frame_size = int(mimi.sample_rate / mimi.frame_rate)
        lm_gen = LMGen(lm, sample_rate=mimi.sample_rate, frame_rate=mimi.frame_rate, device=device,
                       use_sampling=bool(spec.options.get("sampling", True)))
        self._modules.update(lm=lm, mimi=mimi, text=text, lm_gen=lm_gen)
        self.layout = "native"
        self._device = device
        return {"layout": self.layout, "lm": NATIVE_LM, "mimi": mimi_file.name, "text_tokenizer": text_file.name}

    # ------------------------------------------------------------------------------------------- talk
    @torch.inference_mode()
    def respond(self, audio: Any, sample_rate: int, max_frames: int | None = None) -> Reply:
        """The persona's audio + text for the span of `audio` (the user's side of the conversation)."""
        if not self.loaded:
            raise InternalError(f"tower {self.spec.name!r} is not loaded")
        samples = resample(mono_float(audio), sample_rate, self.sampling_rate)
        frames = max(1, -(-len(samples) // self.frame_size))  # whole 80 ms frames, the last one zero-padded
        frames = min(frames, max_frames or frames)
        samples = np.pad(samples, (0, frames * self.frame_size - len(samples)))[: frames * self.frame_size]
        if self.layout == "transformers":
            return self._respond_transformers(samples, frames)
        return self._respond_native(samples, frames)

    def _respond_transformers(self, samples: np.ndarray, frames: int) -> Reply:
        model = self._modules["model"]
        device = input_device(model)
        user = torch.from_numpy(samples)[None, None].to(device, model.dtype)  # [1, 1, T]
        # text and both audio streams must cover the same number of frames; the persona's own audio starts silent
        pad = model.config.pad_token_id if model.config.pad_token_id is not None else TEXT_PAD
        ids = torch.full((1, frames), pad, dtype=torch.long, device=device)
        out = model.generate(input_ids=ids, user_input_values=user, moshi_input_values=torch.zeros_like(user),
                             max_new_tokens=frames, do_sample=bool(self.spec.options.get("sampling", False)))
        wav = out.audio_sequences[0, 0].float().cpu().numpy()
        # sequences = [initial token, the `frames` input ids, new text tokens]
        tokens = [int(t) for t in out.sequences[0, 1 + frames:] if int(t) not in (TEXT_EPAD, pad)]
        tok = self._modules["tokenizer"]
        text = tok.decode(tokens, skip_special_tokens=True) if tok is not None else " ".join(map(str, tokens))
        return Reply(wav, self.sampling_rate, text.strip())

    def _respond_native(self, samples: np.ndarray, frames: int) -> Reply:
        mimi, lm_gen, text = self._modules["mimi"], self._modules["lm_gen"], self._modules["text"]
        pcm: list[np.ndarray] = []
        words: list[str] = []
        with mimi.streaming(1), lm_gen.streaming(1):
            for i in range(frames):
                chunk = torch.from_numpy(samples[i * self.frame_size:(i + 1) * self.frame_size])
                codes = mimi.encode(chunk[None, None].to(self._device))
                for c in range(codes.shape[-1]):
                    tokens = lm_gen.step(codes[:, :, c:c + 1])
                    if tokens is None:
                        continue
                    pcm.append(mimi.decode(tokens[:, 1:9]).float().cpu().numpy()[0, 0])  # 8 agent codebooks
                    token = int(tokens[0, 0, 0])
                    if token not in (TEXT_EPAD, TEXT_PAD):
                        words.append(text.id_to_piece(token).replace("▁", " "))
        wav = np.concatenate(pcm) if pcm else np.zeros(0, dtype=np.float32)
        return Reply(wav, self.sampling_rate, "".join(words).strip())

    def warmup(self) -> None:
        self.respond(np.zeros(self.frame_size, dtype=np.float32), self.sampling_rate, max_frames=1)



def _tokenizer(folder: Path) -> Any:
    """The text tokenizer saved with a transformers Moshi checkpoint, or None (the tiny test models have none)."""
    from transformers import AutoTokenizer

    if not any((folder / f).exists() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        return None
    return AutoTokenizer.from_pretrained(folder)
