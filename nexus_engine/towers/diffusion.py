"""What the diffusers towers (image_gen, video_gen) share: loading a pipeline folder safely, quantizing its big
components, offloading, and running denoising steps that report progress and can stop between steps.

- Weights: every component folder listed in model_index.json is checked like a transformers folder
  (safetensors only unless options.allow_pickle; a truncated file is named).
- Quantization: nf4/int8 go through diffusers' PipelineQuantizationConfig (bitsandbytes) for the denoiser
  (`transformer` or `unet`) and, by default, SD3's T5-XXL text encoder (61 % of the pipeline);
  `options.quantize` lists other components. bitsandbytes in diffusers needs a CUDA GPU: without one the
  pipeline loads in the float dtype and LoadInfo says so.
- Offload: device "offload" (or a "gpu" tower larger than the free VRAM) uses diffusers' hooks:
  enable_model_cpu_offload (one component on the GPU at a time) or, with options.offload = "sequential",
  enable_sequential_cpu_offload (layer by layer: slowest, smallest). `options.offload_device` names the
  device the hooks move weights to (default cuda:0; the tests use "cpu" to exercise the model-offload hooks).
- Steps: callback_on_step_end calls `on_step(done, total)` after each step and asks `should_stop()`; a stop
  raises out of the pipeline between two steps and surfaces as CancelledError.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nexus_engine.config.schema import TowerSpec
from nexus_engine.errors import CancelledError
from nexus_engine.towers import hf_loading
from nexus_engine.towers.seed_common import BNB, FLOATS, SeedTower, load_errors, read_config

OnStep = Callable[[int, int], None]
ShouldStop = Callable[[], bool]
OnPreview = Callable[[int, Any], None]  # (step, PIL image)
DEFAULT_QUANTIZED = ("text_encoder_3",)  # SD3's T5-XXL: 4.7B of the pipeline's 7.7B parameters


def check_pipeline_weights(spec: TowerSpec, folder: Path, index: dict[str, Any]) -> bool:
    """Check each component folder's weights; True when all are safetensors (what from_pretrained is told)."""
    safe = True
    for name, value in index.items():
        sub = folder / name
        if name.startswith("_") or not isinstance(value, list) or not (sub / "config.json").exists():
            continue  # scheduler, tokenizers, feature extractors: config files only
        safe = hf_loading.check_weights(spec, sub) and safe
    return safe


class _Stop(Exception):
    """Raised from the step callback to leave the pipeline between two steps."""


class DiffusersTower(SeedTower):
    QUANTS = (*BNB, *FLOATS)

    def _load(self, spec: TowerSpec, folder: Path) -> dict[str, Any]:
        import diffusers

        index = read_config(folder, "model_index.json")
        use_safetensors = check_pipeline_weights(spec, folder, index)
        dtype = hf_loading.torch_dtype(spec)
        cuda = torch.cuda.is_available()
        details: dict[str, Any] = {"pipeline": index.get("_class_name", ""), "dtype": str(dtype).removeprefix("torch.")}
        kwargs: dict[str, Any] = {"torch_dtype": dtype, "use_safetensors": use_safetensors}
        if spec.quantization in BNB:
            if cuda:
                denoiser = "transformer" if "transformer" in index else "unet"
                extra = spec.options.get("quantize", [c for c in DEFAULT_QUANTIZED if c in index])
                parts = [denoiser, *(c for c in extra if c in index and c != denoiser)]
                kwargs["quantization_config"] = _quant_config(spec, dtype, parts)
                details["quantized"] = parts
            else:
                details["note"] = (f"diffusers' bitsandbytes needs a CUDA GPU: loaded in {details['dtype']} "
                                   f"instead of {spec.quantization}")
        with load_errors(spec, folder, "diffusers"):
            pipe = diffusers.DiffusionPipeline.from_pretrained(folder, **kwargs)
        pipe.set_progress_bar_config(disable=True)
        details["placement"] = self._place(spec, pipe, cuda)
        self._modules["pipe"] = pipe
        for name, comp in pipe.components.items():
            if isinstance(comp, torch.nn.Module):
                self._modules[name] = comp  # measured one by one; unload drops them with the pipeline
        return details

    @staticmethod
    def _place(spec: TowerSpec, pipe: Any, cuda: bool) -> str:
        target = spec.options.get("offload_device") or ("cuda:0" if cuda else None)
        if spec.device == "offload" and target is not None:
            if spec.options.get("offload") == "sequential":
                pipe.enable_sequential_cpu_offload(device=target)
                return f"sequential offload to {target}"
            pipe.enable_model_cpu_offload(device=target)
            return f"model offload to {target}"
        if spec.device in ("gpu", "offload") and cuda:
            pipe.to("cuda:0")
            return "cuda:0"
        return "cpu"

    def _run(self, call: dict[str, Any], steps: int, on_step: OnStep | None, should_stop: ShouldStop | None,
             on_preview: OnPreview | None = None, preview_every: int = 0) -> Any:
        """Run the pipeline with a per-step callback; CancelledError when `should_stop` says so between steps.
        With `on_preview`, every `preview_every` steps the current latents are decoded into a small image."""
        pipe = self._need("pipe")
        done = 0
        if on_preview is not None and preview_every > 0:
            call["callback_on_step_end_tensor_inputs"] = ["latents"]

        def step_end(_pipe: Any, i: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            nonlocal done
            done = i + 1
            if on_step is not None:
                on_step(done, steps)
            if on_preview is not None and preview_every > 0 and done % preview_every == 0 and done < steps:
                image = self._preview(tensors.get("latents"))
                if image is not None:
                    on_preview(done, image)
            if should_stop is not None and should_stop() and done < steps:
                raise _Stop
            return tensors

        if "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:
            call["callback_on_step_end"] = step_end
        try:
            with torch.inference_mode():
                return pipe(**call, num_inference_steps=steps)
        except _Stop:
            raise CancelledError(f"generation stopped after step {done} of {steps}") from None
        finally:
            if hasattr(pipe, "maybe_free_model_hooks"):
                pipe.maybe_free_model_hooks()  # offloaded components go back to RAM even after a stop

    def _preview(self, latents: Any) -> Any:
        """Latents -> a PIL image through the pipeline's own VAE (SD3: unscale and unshift first); None when the
        pipeline has no image VAE. Costs one VAE decode, which is why previews come every N steps."""
        pipe = self._need("pipe")
        vae = getattr(pipe, "vae", None)
        if latents is None or vae is None or latents.ndim != 4 or not hasattr(pipe, "image_processor"):
            return None
        cfg = vae.config
        z = latents[:1] / getattr(cfg, "scaling_factor", 1.0) + (getattr(cfg, "shift_factor", None) or 0.0)
        with torch.inference_mode():
            decoded = vae.decode(z.to(vae.dtype), return_dict=False)[0]
        return pipe.image_processor.postprocess(decoded, output_type="pil")[0]

    def _generator(self, seed: int | None) -> torch.Generator | None:
        if seed is None:
            return None
        device = "cuda" if self._need("pipe").device.type == "cuda" else "cpu"
        return torch.Generator(device=device).manual_seed(seed)


def _quant_config(spec: TowerSpec, dtype: torch.dtype, components: list[str]) -> Any:
    from diffusers import PipelineQuantizationConfig

    if spec.quantization == "nf4":
        return PipelineQuantizationConfig(quant_backend="bitsandbytes_4bit", components_to_quantize=components,
                                          quant_kwargs={"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                                                        "bnb_4bit_compute_dtype": dtype})
    return PipelineQuantizationConfig(quant_backend="bitsandbytes_8bit", components_to_quantize=components,
                                      quant_kwargs={"load_in_8bit": True})
