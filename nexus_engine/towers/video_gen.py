"""Video: Stable Video Diffusion XT 1.1 (image to video) on diffusers, or any video pipeline folder.

SVD animates a still image: `generate(image, …)` returns the frames as PIL images. A text-to-video pipeline
declared instead gets `prompt`. Loading, quantization (nf4/int8 for the UNet, CUDA only), offload and
per-step progress/stop live in towers/diffusion.py.
"""

from __future__ import annotations

import inspect
from typing import Any

from nexus_engine.errors import BadInputError
from nexus_engine.towers.diffusion import DiffusersTower, OnStep, ShouldStop
from nexus_engine.towers.seed_common import pil_image


class VideoGenTower(DiffusersTower):
    def generate(self, image: Any = None, prompt: str = "", negative: str = "", steps: int = 25,
                 seed: int | None = None, size: tuple[int, int] = (1024, 576), frames: int | None = None,
                 on_step: OnStep | None = None, should_stop: ShouldStop | None = None,
                 decode_chunk_size: int = 4) -> list[Any]:
        """Frames (PIL images) of one clip. `size` is (width, height); `frames` defaults to the model's own
        (25 for SVD-XT). decode_chunk_size bounds the VAE decoder's memory. CancelledError if stopped."""
        params = inspect.signature(self._need("pipe").__call__).parameters
        width, height = size
        call: dict[str, Any] = {"width": width, "height": height, "generator": self._generator(seed),
                                "output_type": "pil"}
        if "image" in params:
            if image is None:
                raise BadInputError("this video model animates a picture: give it an image")
            call["image"] = pil_image(image).resize((width, height))
        elif not prompt.strip():
            raise BadInputError("describe the video to generate: the prompt is empty")
        if "prompt" in params and prompt:
            call["prompt"] = prompt
        if "negative_prompt" in params and negative:
            call["negative_prompt"] = negative
        if frames is not None:
            call["num_frames"] = frames
        if "decode_chunk_size" in params:
            call["decode_chunk_size"] = decode_chunk_size
        return list(self._run(call, steps, on_step, should_stop).frames[0])

    def warmup(self) -> None:
        import numpy as np

        self.generate(np.zeros((64, 64, 3), dtype=np.uint8), steps=1, size=(64, 64), frames=2, seed=0)
