"""Imagination: text-to-image on any diffusers pipeline folder (Stable Diffusion 3 Medium in the seed profile).

DiffusionPipeline.from_pretrained picks the class from model_index.json (StableDiffusion3Pipeline for SD3),
so a FLUX, SDXL or tiny test pipeline loads the same way. Loading, quantization, offload and per-step
progress/stop live in towers/diffusion.py.
"""

from __future__ import annotations

from typing import Any

from nexus_engine.errors import BadInputError
from nexus_engine.towers.diffusion import DiffusersTower, OnPreview, OnStep, ShouldStop


class ImageGenTower(DiffusersTower):
    def generate(self, prompt: str, negative: str = "", steps: int = 28, seed: int | None = None,
                 size: tuple[int, int] = (1024, 1024), on_step: OnStep | None = None,
                 should_stop: ShouldStop | None = None, guidance: float | None = None,
                 on_preview: OnPreview | None = None, preview_every: int = 0) -> Any:
        """One PIL image for `prompt`; `size` is (width, height). CancelledError if stopped between steps."""
        if not prompt.strip():
            raise BadInputError("describe the image to generate: the prompt is empty")
        width, height = size
        call: dict[str, Any] = {"prompt": prompt, "width": width, "height": height,
                                "generator": self._generator(seed), "output_type": "pil"}
        if negative:
            call["negative_prompt"] = negative
        if guidance is not None:
            call["guidance_scale"] = guidance
        return self._run(call, steps, on_step, should_stop, on_preview, preview_every).images[0]

    def warmup(self) -> None:
        self.generate("warm up", steps=1, size=(64, 64), seed=0)
