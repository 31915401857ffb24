"""A stand-in for the worker's generate handler, used by the screenshot test, speaking the real protocol.

It saves a tiny random-weight diffusers pipeline (DDPMPipeline: UNet2DModel + DDPMScheduler from a config, 32×32)
to --pipeline (the folder the test declares as an image_gen tower in models.toml), then reads one encoded
GenerateRequest from stdin, loads the pipeline back with from_pretrained and denoises step by step, writing one
encoded message per stdout line: a Progress per step (ETA, preview PNG), then Done with the output path.

TODO(engine): the worker has no GenerateRequest handler yet (it answers "cannot handle 'generate'"); once it has
one, the screenshot test submits the panel's request to the worker and this file goes.

    python -m tests.app.tiny_generate --pipeline DIR --out DIR [--hold-at K]

The folder gets a `.ready` file once saved. --hold-at K waits for a line on stdin after step K, so a test can
photograph the panel mid-progress.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from nexus_engine.protocol import Done, Error, GenerateRequest, Message, Progress, Started, decode


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--pipeline", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--hold-at", type=int, default=0)
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)  # the app and Xvfb share the CI machine's 2 cores
    save_pipeline(args.pipeline)
    req = decode(sys.stdin.readline().encode())
    if not isinstance(req, GenerateRequest):
        emit(Error(id=req.id, code="bad_input", message=f"expected a generate request, got {req.type_name}"))
        return 1
    emit(Started(id=req.id))
    try:
        path, total_ms = generate(req, args.pipeline, args.out, args.hold_at)
    except Exception as e:  # reported the way the worker reports a failed request
        emit(Error(id=req.id, code="internal_error", message=f"{type(e).__name__}: {e}"))
        return 1
    emit(Done(id=req.id, stats={"path": str(path), "total_ms": total_ms, "tower": "tiny-ddpm"}))
    return 0


def emit(msg: Message) -> None:
    sys.stdout.write(msg.encode().decode() + "\n")
    sys.stdout.flush()


def save_pipeline(folder: Path) -> None:
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    if not (folder / ".ready").exists():
        torch.manual_seed(0)
        unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
                           block_out_channels=(32, 64), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                           up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8)
        DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(folder)
        (folder / ".ready").touch()


def generate(req: GenerateRequest, folder: Path, out: Path, hold_at: int) -> tuple[Path, float]:
    import torch
    from diffusers import DDPMPipeline
    from PIL import Image

    pipe: Any = DDPMPipeline.from_pretrained(folder)
    unet, scheduler = pipe.unet.eval(), pipe.scheduler
    scheduler.set_timesteps(req.steps)
    out.mkdir(parents=True, exist_ok=True)

    def to_png(sample: torch.Tensor, name: str) -> Path:
        pixels = ((sample[0].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).to(torch.uint8).numpy()  # (32, 32, 3)
        path = out / name
        Image.fromarray(pixels).resize((req.width, req.height), Image.Resampling.NEAREST).save(path)
        return path

    seed = req.seed if req.seed is not None else 0
    sample = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps, start=1):
            sample = scheduler.step(unet(sample, t).sample, t, sample).prev_sample
            spent = time.perf_counter() - t0
            preview = to_png(sample, f"{req.id}-step{i:03d}.png") if req.preview_every else None
            emit(Progress(id=req.id, step=i, total=req.steps, message="denoising (tiny test pipeline)",
                          eta_s=spent / i * (req.steps - i), preview=str(preview or "")))
            if i == hold_at:
                sys.stdin.readline()
                t0 = time.perf_counter() - spent  # the hold is not generation time
    return to_png(sample, f"{req.id}.png"), (time.perf_counter() - t0) * 1000


if __name__ == "__main__":
    sys.exit(main())
