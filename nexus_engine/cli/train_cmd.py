"""`nexus train …`: AGID adapters (nexus_engine/research/agid; docs/agid.md).

  text     collapsed student of an LLM tower + bridge adapters trained on the teacher's activation trajectories;
           retention table against the teacher, the untrained collapse and a logit-only baseline
  vision   projector from a vision tower's features to the chat LLM's prefix tokens; held-out comparison with
           the text-composition path and with no image
  audio    projector from the ASR tower's encoder states (utterances spoken by the TTS tower) to the chat LLM's
           prefix tokens; held-out comparison with the transcript in the prompt and with no audio
  speed    step time, tokens/s and memory of each stage on a random-weight seed-shape teacher (GPU runs)
  report   Markdown tables + learning-curve PNGs from the results JSONs
  list     the adapters installed in the user's data folder

Runs resume from their last checkpoint when started again with the same settings (--fresh starts over).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="AGID: train adapters (text student bridges, vision/audio projectors); reports")
    tsub = p.add_subparsers(dest="train_cmd", metavar="STEP", required=True)

    t = tsub.add_parser("text", help="collapsed student + bridges distilled from the teacher's activations")
    t.add_argument("--tower", default="smollm2-hf", help="a transformers llm tower (the teacher)")
    t.add_argument("--bitmask", type=Path, help="a NIWT bitmask (default: choose one removing --remove)")
    t.add_argument("--remove", type=float, default=0.25, help="fraction of layers to remove (or a count >= 1)")
    t.add_argument("--samples", type=int, default=48, help="teacher-written answers added to the heal split")
    t.add_argument("--local-steps", type=int, default=400)
    t.add_argument("--steps", type=int, default=80, help="end-to-end steps (AGID trajectory and logit-only alike)")
    t.add_argument("--batch", type=int, default=4, help="windows per end-to-end step")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--kl-weight", type=float, default=1.0, help="AGID's logit term (0: hidden states only)")
    t.add_argument("--rank", type=int, help="fixed bridge rank (default: k90 of each cut's update, 8..128)")
    _common(t)
    t.set_defaults(func=_text)

    v = tsub.add_parser("vision", help="projector: vision tower features -> chat LLM prefix tokens")
    v.add_argument("--tower", default="efficientnet-lite0", help="the vision tower (image_encoder)")
    v.add_argument("--llm", default="smollm2-hf", help="the chat LLM it feeds (a transformers llm tower)")
    v.add_argument("--scenes", type=int, default=1200, help="rendered training scenes")
    v.add_argument("--eval-scenes", type=int, default=40)
    v.add_argument("--eval-novel", type=int, default=24)
    v.add_argument("--steps", type=int, default=200)
    v.add_argument("--batch", type=int, default=8)
    v.add_argument("--lr", type=float, default=1e-3)
    v.add_argument("--coco", type=Path, help="COCO folder (default: ../shared/data/coco)")
    v.add_argument("--no-coco", action="store_true", help="scenes only")
    v.add_argument("--eval-only", action="store_true",
                   help="evaluate the installed projector again (keeps the training fields of the results JSON)")
    _common(v)
    v.set_defaults(func=_vision)

    a = tsub.add_parser("audio", help="projector: ASR encoder states of spoken utterances -> chat LLM prefix tokens")
    a.add_argument("--tower", default="whisper-base", help="the ASR tower whose encoder states are projected")
    a.add_argument("--tts", default="piper-joe", help="the voice that speaks the utterances")
    a.add_argument("--llm", default="smollm2-hf", help="the chat LLM it feeds (a transformers llm tower)")
    a.add_argument("--utterances", type=int, default=400, help="spoken training utterances")
    a.add_argument("--eval-utterances", type=int, default=24)
    a.add_argument("--eval-novel", type=int, default=16)
    a.add_argument("--steps", type=int, default=80)
    a.add_argument("--batch", type=int, default=8)
    a.add_argument("--lr", type=float, default=2e-3)
    _common(a)
    a.set_defaults(func=_audio)

    r = tsub.add_parser("report", help="Markdown tables + learning-curve PNGs from the results JSONs")
    r.add_argument("--out", type=Path, help="results folder (default: benchmarks/results/agid)")
    r.set_defaults(func=_report)

    sp = tsub.add_parser("speed", help="step time and memory of each AGID stage on a random-weight seed-shape teacher")
    sp.add_argument("--arch", default="tiny", help="qwen3-4b | llama-4b | smollm2-135m | tiny (random weights)")
    sp.add_argument("--device", default="cpu", help="cuda | cpu")
    sp.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"), help="the teacher's weights")
    sp.add_argument("--windows", type=int, default=16, help="recorded training windows")
    sp.add_argument("--seq", type=int, default=512, help="tokens per window")
    sp.add_argument("--batch", type=int, default=4, help="windows per end-to-end step")
    sp.add_argument("--rank", type=int, default=64, help="bridge rank")
    sp.add_argument("--local-steps", type=int, default=40)
    sp.add_argument("--steps", type=int, default=20, help="end-to-end (trajectory) steps")
    sp.add_argument("--projector-steps", type=int, default=20)
    sp.add_argument("--json", type=Path, help="write the numbers here")
    sp.set_defaults(func=_speed)

    ls = tsub.add_parser("list", help="installed adapters and their metrics")
    ls.add_argument("--adapters", type=Path, help="adapters root (default: <data folder>/adapters)")
    ls.set_defaults(func=_list)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cuda | cpu (default: cuda when there is one; bf16 autocast there)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadiest on a shared CPU)")
    p.add_argument("--out", type=Path, help="results folder (default: benchmarks/results/agid)")
    p.add_argument("--adapters", type=Path, help="adapters root (default: <data folder>/adapters)")
    p.add_argument("--fresh", action="store_true", help="ignore checkpoints and start over")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement")


def _save(res: dict[str, Any], out: Path, name: str) -> Path:
    from nexus_engine.consolidation.adapters import write_json

    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    write_json(path, res)
    print(f"wrote {path}", file=sys.stderr)
    return path


def _text(args: argparse.Namespace) -> int:
    from nexus_engine.research.agid import text
    from nexus_engine.research.agid.trainer import TrainConfig

    cfg = text.TextConfig(tower=args.tower, bitmask=args.bitmask, remove=args.remove, samples=args.samples,
                          batch=args.batch, kl_weight=args.kl_weight, rank=args.rank, seed=args.seed,
                          device=args.device, threads=args.threads, out=args.out or text.DEFAULT_OUT,
                          root=args.adapters, fresh=args.fresh)
    cfg.local.steps = args.local_steps
    cfg.trajectory.steps, cfg.trajectory.lr = args.steps, args.lr
    if args.quick:
        cfg.samples, cfg.eval_windows, cfg.gsm8k_eval, cfg.window = min(cfg.samples, 2), 2, 2, 64
        cfg.local = TrainConfig(steps=min(args.local_steps, 20), lr=3e-3, checkpoint_every=10, log_every=5)
        cfg.trajectory = TrainConfig(steps=min(args.steps, 4), lr=args.lr, warmup=1, checkpoint_every=2, log_every=1)
        cfg.speed = False
    res = text.run_text(cfg)
    _save(res, cfg.out, f"results-text-{res['tower']['tower']}.json")
    print(json.dumps(res["goal"], indent=1))
    return 0


def _vision(args: argparse.Namespace) -> int:
    from nexus_engine.research.agid import text, vision

    cfg = vision.VisionConfig(tower=args.tower, llm=args.llm, train_scenes=args.scenes, eval_scenes=args.eval_scenes,
                              eval_novel=args.eval_novel, batch=args.batch, seed=args.seed, device=args.device,
                              threads=args.threads, out=args.out or text.DEFAULT_OUT, root=args.adapters,
                              fresh=args.fresh, coco=args.coco)
    cfg.train.steps, cfg.train.lr = args.steps, args.lr
    if args.no_coco:
        cfg.coco = Path("/nonexistent")
    if args.quick:
        cfg.train_scenes, cfg.eval_scenes, cfg.eval_novel, cfg.max_new_tokens = 16, 2, 2, 8
        cfg.train.steps, cfg.train.checkpoint_every, cfg.train.log_every = min(args.steps, 4), 2, 1
    name = f"results-vision-{args.tower}.json"
    if args.eval_only:
        previous = json.loads((cfg.out / name).read_text()) if (cfg.out / name).is_file() else None
        res = vision.reevaluate(cfg, previous)
    else:
        res = vision.run_vision(cfg)
    _save(res, cfg.out, name)
    print(json.dumps(res["goal"], indent=1))
    return 0


def _audio(args: argparse.Namespace) -> int:
    from nexus_engine.research.agid import audio, text

    cfg = audio.AudioConfig(tower=args.tower, tts=args.tts, llm=args.llm, train_utterances=args.utterances,
                            eval_utterances=args.eval_utterances, eval_novel=args.eval_novel, batch=args.batch,
                            seed=args.seed, device=args.device, threads=args.threads,
                            out=args.out or text.DEFAULT_OUT, root=args.adapters, fresh=args.fresh)
    cfg.train.steps, cfg.train.lr = args.steps, args.lr
    if args.quick:
        cfg.train_utterances, cfg.eval_utterances, cfg.eval_novel, cfg.max_new_tokens = 16, 2, 2, 8
        cfg.train.steps, cfg.train.checkpoint_every, cfg.train.log_every = min(args.steps, 4), 2, 1
    res = audio.run_audio(cfg)
    _save(res, cfg.out, f"results-audio-{args.tower}.json")
    print(json.dumps({"goal": res["goal"], "nll": res["nll"]}, indent=1))
    return 0


def _speed(args: argparse.Namespace) -> int:
    from nexus_engine.research.agid.speed import train_speed
    from nexus_engine.research.agid.text import say

    res = train_speed(args.arch, args.device, args.dtype, windows=args.windows, seq=args.seq, batch=args.batch,
                      rank=args.rank, local_steps=args.local_steps, steps=args.steps,
                      projector_steps=args.projector_steps, progress=say)
    if args.json:
        _save(res, args.json.parent, args.json.name)
    print(json.dumps(res, indent=1))
    return 0


def _report(args: argparse.Namespace) -> int:
    from nexus_engine.research.agid import report, text

    for path in report.write_report(args.out or text.DEFAULT_OUT).values():
        print(path)
    return 0


def _list(args: argparse.Namespace) -> int:
    from nexus_engine.consolidation import adapters

    found = adapters.installed(args.adapters)
    if not found:
        print(f"no adapters under {args.adapters or adapters.adapters_root()}")
    for folder, m in found:
        print(f"{m['tower']:<20} {m['kind']:<17} teacher {m['teacher']['tower']}@{m['teacher']['revision']:<24} "
              f"{m['created']}  {folder}")
    return 0
