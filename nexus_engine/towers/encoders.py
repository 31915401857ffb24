"""Fast perception encoders on transformers: SigLIP/SigLIP2 image-text embeddings and VideoMAE clip features.

Both load with AutoModel + the model's own processor (AutoProcessor / AutoImageProcessor; without torchvision
transformers falls back to its PIL image processors, which give the same tensors). Outputs are plain fp32
CPU tensors so the router and projectors never care where the tower runs.

- ImageTextEncoder (SigLIP2 so400m): embed_images(images) -> [n, d], embed_texts(texts) -> [n, d], both
  L2-normalised, so `a @ b.T` is the cosine similarity SigLIP was trained on.
- VideoClipEncoder (VideoMAE): embed_clip(frames) -> [d], the mean of the last hidden states over the clip's
  patch tokens, after sampling `num_frames` evenly from the frames given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from nexus_engine.config.schema import TowerSpec
from nexus_engine.errors import BadInputError
from nexus_engine.towers.seed_common import (
    FLOATS,
    SeedTower,
    cast_floats,
    input_device,
    load_errors,
    pil_image,
    read_config,
    transformers_kwargs,
)

TEXT_LENGTH = 64  # SigLIP text towers were trained on text padded to 64 tokens


def _pooled(out: Any) -> torch.Tensor:
    """get_*_features returns a tensor in older transformers and an output object (pooler_output) in 5.x."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ImageTextEncoder(SeedTower):
    """SigLIP / SigLIP2 (and CLIP-like) dual encoders."""

    QUANTS = (*FLOATS, "int8")
    QUANT_WHY = "4-bit weights shift the embedding space the router and projectors are trained on"

    def _load(self, spec: TowerSpec, folder: Path) -> dict[str, Any]:
        from transformers import AutoModel, AutoProcessor

        config = read_config(folder)
        kwargs = transformers_kwargs(spec, folder)
        with load_errors(spec, folder):
            model = AutoModel.from_pretrained(folder, **kwargs).eval()
            proc = AutoProcessor.from_pretrained(folder)
        self._modules.update(model=model, processor=proc)
        return {"model_type": config.get("model_type", ""), "dtype": str(model.dtype).removeprefix("torch.")}

    @torch.inference_mode()
    def embed_images(self, images: list[Any]) -> torch.Tensor:
        """PIL images (or HxWx3 uint8 arrays) -> [n, d] unit vectors."""
        if not images:
            raise BadInputError("embed_images needs at least one image")
        model, proc = self._need("model"), self._need("processor")
        enc = proc(images=[pil_image(i) for i in images], return_tensors="pt").to(input_device(model))
        feats = _pooled(model.get_image_features(**cast_floats(enc, model.dtype)))
        return torch.nn.functional.normalize(feats.float(), dim=-1).cpu()

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Strings -> [n, d] unit vectors in the image embeddings' space."""
        if not texts:
            raise BadInputError("embed_texts needs at least one text")
        model, proc = self._need("model"), self._need("processor")
        length = int(self.spec.options.get("text_length", TEXT_LENGTH))
        enc = proc(text=list(texts), padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        feats = _pooled(model.get_text_features(**enc.to(input_device(model))))
        return torch.nn.functional.normalize(feats.float(), dim=-1).cpu()

    def warmup(self) -> None:
        self.embed_images([np.zeros((32, 32, 3), dtype=np.uint8)])
        self.embed_texts(["warm up"])


class VideoClipEncoder(SeedTower):
    """VideoMAE: one feature vector per clip."""

    QUANTS = FLOATS
    QUANT_WHY = "bitsandbytes only quantizes Linear layers; VideoMAE's cost is its 3-D patch embedding and attention"

    def _load(self, spec: TowerSpec, folder: Path) -> dict[str, Any]:
        from transformers import AutoImageProcessor, AutoModel

        config = read_config(folder)
        with load_errors(spec, folder):
            # a pre-training checkpoint (VideoMAEForPreTraining) loads its encoder into VideoMAEModel
            model = AutoModel.from_pretrained(folder, **transformers_kwargs(spec, folder)).eval()
            proc = AutoImageProcessor.from_pretrained(folder)
        self._modules.update(model=model, processor=proc)
        self.num_frames = int(config.get("num_frames", 16))
        return {"model_type": config.get("model_type", ""), "num_frames": self.num_frames,
                "dtype": str(model.dtype).removeprefix("torch.")}

    @torch.inference_mode()
    def embed_clip(self, frames: list[Any]) -> torch.Tensor:
        """Video frames (PIL images or HxWx3 uint8 arrays, in order) -> [d] clip feature."""
        if not frames:
            raise BadInputError("embed_clip needs at least one frame")
        model, proc = self._need("model"), self._need("processor")
        # the model was trained on exactly num_frames frames: sample them evenly (repeating short clips)
        idx = np.linspace(0, len(frames) - 1, self.num_frames).round().astype(int)
        clip = [np.asarray(pil_image(frames[i])) for i in idx]
        enc = proc(clip, return_tensors="pt").to(input_device(model))  # pixel_values [1, T, 3, H, W]
        hidden = model(**cast_floats(enc, model.dtype)).last_hidden_state  # [1, tokens, d]
        return hidden.float().mean(dim=1)[0].cpu()

    def warmup(self) -> None:
        self.embed_clip([np.zeros((32, 32, 3), dtype=np.uint8)])

