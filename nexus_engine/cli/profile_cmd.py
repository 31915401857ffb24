"""`nexus profile …`: the NIWT profiling lab (nexus_engine/research/niwt; docs/research.md).

  run       the whole lab on a tower: sweep, activations, spectra, bitmasks, collapse, healing, report
  report    rewrite the plots and the Markdown/HTML report from a results JSON
  record    record activations of a tower on a task's data into safetensors shards
  spectral  spectral statistics of recorded activations (JSON)
  collapse  load a tower with a bitmask applied and measure retention, speed and memory against the full tower
  validate  check a bitmask file against the schema
  speed     time the sweep (prefix cache vs naive) on a random-weight model of a seed architecture
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="NIWT lab: which layers a task needs; bitmasks; layer collapse")
    psub = p.add_subparsers(dest="profile_cmd", metavar="STEP", required=True)

    r = psub.add_parser("run", help="the whole lab on one tower (CPU minutes on the starter model)")
    r.add_argument("--tower", default="smollm2-hf", help="a transformers llm tower from models.toml")
    r.add_argument("--out", type=Path, help="results folder (default: benchmarks/results/niwt)")
    r.add_argument("--data", type=Path, help="folder with gsm8k/ and mmlu/ (default: ../shared/data, else samples)")
    r.add_argument("--max-remove", type=int, default=10, help="largest number of layers to try removing")
    r.add_argument("--heal-at", default="1,2,4", help="layer counts to heal and measure (comma list; '' for none)")
    r.add_argument("--heal-steps", type=int, default=60)
    r.add_argument("--gsm8k-em", type=int, default=8, help="questions decoded greedily for the exact-match floor")
    r.add_argument("--target", type=float, default=0.97, help="retention a bitmask must keep on the select split")
    r.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared CPU)")
    r.add_argument("--quick", action="store_true", help="tiny samples (a smoke test, not a measurement)")
    r.set_defaults(func=_run)

    rep = psub.add_parser("report", help="rewrite plots and report from results-<tower>.json")
    rep.add_argument("--out", type=Path, help="results folder (default: benchmarks/results/niwt)")
    rep.add_argument("--tower", default="smollm2-hf")
    rep.set_defaults(func=_report)

    rec = psub.add_parser("record", help="record activations into safetensors shards + manifest")
    rec.add_argument("--tower", default="smollm2-hf")
    rec.add_argument("--task", choices=["text", "gsm8k", "mmlu"], default="text")
    rec.add_argument("--split", choices=["select", "eval", "heal"], default="eval")
    rec.add_argument("--sites", default="residual,mlp", help="comma list of residual, mlp, attn")
    rec.add_argument("--layers", help="comma list of layer indices (default: all)")
    rec.add_argument("--shard-tokens", type=int, default=8192)
    rec.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    rec.add_argument("--data", type=Path)
    rec.add_argument("--out", type=Path, required=True, help="folder for the shards and manifest.json")
    rec.set_defaults(func=_record)

    sp = psub.add_parser("spectral", help="PCA/SVD statistics and layer similarity of recorded activations")
    sp.add_argument("folder", type=Path, help="a folder written by `nexus profile record`")
    sp.add_argument("--json", type=Path, help="write the numbers here (default: print)")
    sp.add_argument("--min-position", type=int, default=1,
                    help="leave out positions below this (default 1: each sequence's first token, an attention sink "
                         "whose huge norm would own the spectrum); 0 keeps every row")
    sp.set_defaults(func=_spectral)

    c = psub.add_parser("collapse", help="retention, speed and memory of a tower with a bitmask applied")
    c.add_argument("--tower", default="smollm2-hf")
    c.add_argument("--bitmask", type=Path, required=True)
    c.add_argument("--data", type=Path)
    c.add_argument("--json", type=Path, help="write the numbers here (default: print)")
    c.set_defaults(func=_collapse)

    sl = psub.add_parser("sublayers", help="zero the k least important attention / MLP blocks: retention per task")
    sl.add_argument("--tower", default="smollm2-hf")
    sl.add_argument("--k", default="1,2,3,4,6,8", help="how many blocks of one kind to zero together")
    sl.add_argument("--target", type=float, default=0.97)
    sl.add_argument("--data", type=Path)
    sl.add_argument("--json", type=Path, help="write the numbers here (default: print)")
    sl.set_defaults(func=_sublayers)

    v = psub.add_parser("validate", help="check a bitmask file against the schema")
    v.add_argument("bitmask", type=Path)
    v.set_defaults(func=_validate)

    s = psub.add_parser("speed", help="sweep time, prefix cache vs naive, on a random-weight seed architecture")
    s.add_argument("--arch", default="tiny", help="qwen3-4b | llama-4b | smollm2-135m | tiny")
    s.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    s.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None, help="default: bf16 on GPU, fp32 on CPU")
    s.add_argument("--batch", type=int, default=4)
    s.add_argument("--seq", type=int, default=512)
    s.add_argument("--layers", type=int, help="override the number of layers")
    s.add_argument("--widths", default="1,2,3,4", help="block widths to skip")
    s.add_argument("--out", type=Path, help="write the JSON here (default: print)")
    s.set_defaults(func=_speed)


def _emit(doc: Any, path: Path | None) -> None:
    text = json.dumps(doc, indent=1)
    if path is None:
        print(text)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from nexus_engine.research.niwt import lab

    cfg = lab.LabConfig(tower=args.tower, out=args.out or lab.DEFAULT_OUT, data=args.data, target=args.target,
                        max_remove=args.max_remove, gsm8k_em=args.gsm8k_em, threads=args.threads,
                        heal_at=tuple(int(x) for x in args.heal_at.split(",") if x.strip()))
    cfg.healing.steps = args.heal_steps
    if args.quick:
        cfg = quick(cfg)
    res = lab.run_lab(cfg)
    print(json.dumps({k: v for k, v in res["goal"].items() if k != "per_n"}, indent=1))
    return 0


def quick(cfg: Any) -> Any:
    """Tiny samples everywhere: exercises every step in well under a minute on the starter model."""
    q = copy.deepcopy(cfg)
    q.text_select_windows, q.text_eval_windows, q.window = 1, 2, 64
    q.gsm8k_select, q.gsm8k_eval, q.mmlu_select, q.mmlu_eval = 2, 2, 4, 4
    q.gsm8k_em, q.em_tokens = min(q.gsm8k_em, 1), 8
    q.widths, q.max_remove, q.greedy_candidates = (1, 2), min(q.max_remove, 3), 2
    q.heal_at = tuple(n for n in q.heal_at if n <= q.max_remove)[:1] or ((q.max_remove,) if q.heal_at else ())
    q.healing.steps = min(q.healing.steps, 4)
    return q


def _report(args: argparse.Namespace) -> int:
    from nexus_engine.research.niwt import lab, report

    written = report.write_report(args.out or lab.DEFAULT_OUT, args.tower)
    for path in written.values():
        print(path)
    return 0


def _task_sequences(loaded: Any, task: str, split: str, data_dir: Path | None) -> tuple[list[list[int]], str, str]:
    from nexus_engine.research.niwt import data, metrics

    tok, root = loaded.tok, data.data_root(data_dir)
    if task == "text":
        t = metrics.text_task(tok, data.held_text(split))
    elif task == "gsm8k":
        t = metrics.gsm8k_nll_task(tok, data.gsm8k_items(root, split))
    else:
        t = metrics.mmlu_task(tok, data.mmlu_items(root, "eval" if split == "heal" else split))
    return metrics.task_rows(t), t.dataset_hash, t.description


def _record(args: argparse.Namespace) -> int:
    from nexus_engine.research.niwt import lab, record

    loaded = lab.load_tower(lab.tower_spec(args.tower))
    seqs, digest, desc = _task_sequences(loaded, args.task, args.split, args.data)
    cfg = record.RecordConfig(sites=tuple(args.sites.split(",")), shard_tokens=args.shard_tokens, dtype=args.dtype,
                              layers=[int(x) for x in args.layers.split(",")] if args.layers else None)
    pad = loaded.tok.pad_token_id if loaded.tok.pad_token_id is not None else loaded.tok.eos_token_id
    manifest = record.record_activations(loaded.model, seqs, args.out, model_info=lab.teacher_info(loaded),
                                         dataset={"name": f"{args.task}-{args.split}", "hash": digest,
                                                  "description": desc}, cfg=cfg, pad_id=pad or 0)
    print(f"{manifest['tokens']} tokens, {len(manifest['shards'])} shards, {len(manifest['tensors'])} tensors "
          f"-> {args.out}")
    return 0


def _spectral(args: argparse.Namespace) -> int:
    from nexus_engine.research.niwt import spectral

    _emit(spectral.analyze(args.folder, min_position=args.min_position), args.json)
    return 0


def _collapse(args: argparse.Namespace) -> int:
    from nexus_engine.research.niwt import bitmask, collapse, data, lab, metrics
    from nexus_engine.research.niwt.sweep import compare

    doc = bitmask.load_bitmask(args.bitmask)
    loaded = lab.load_tower(lab.tower_spec(args.tower))
    full = loaded.model
    small = copy.deepcopy(full)
    info = collapse.collapse_model(small, doc, revision=loaded.revision)  # refuses another model's bitmask
    cfg = lab.LabConfig()
    tasks = lab.build_tasks(loaded.tok, cfg, data.data_root(args.data))["eval"]
    base = compare(full, full, list(tasks.values()))
    got = compare(full, small, list(tasks.values()))
    _emit({"bitmask": str(args.bitmask), **info, "full": base, "collapsed": got,
           "retention": {n: metrics.retention(t, base[n], got[n]) for n, t in tasks.items()},
           "speed": {"full": collapse.speed(full), "collapsed": collapse.speed(small)}}, args.json)
    return 0


def _sublayers(args: argparse.Namespace) -> int:
    from nexus_engine.research.niwt import data, lab
    from nexus_engine.research.niwt.stack import decoder_stack
    from nexus_engine.research.niwt.sublayers import sublayer_curves

    loaded = lab.load_tower(lab.tower_spec(args.tower))
    tasks = lab.build_tasks(loaded.tok, lab.LabConfig(), data.data_root(args.data))
    ks = tuple(int(k) for k in args.k.split(","))
    res = sublayer_curves(decoder_stack(loaded.model), tasks["select"], tasks["eval"], ks=ks, target=args.target)
    _emit({"tower": args.tower, "revision": loaded.revision, **res}, args.json)
    for part, curve in res["curves"].items():
        print(f"{part}: " + "; ".join(f"k={row['k']} " + ", ".join(f"{t} {r:.3f}" for t, r in row["retention"].items())
                                     for row in curve), file=sys.stderr)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from nexus_engine.research.niwt import bitmask

    doc = bitmask.load_bitmask(args.bitmask)
    print(f"{args.bitmask}: valid {doc['schema']} v{doc['version']}; {doc['teacher']['tower']} "
          f"removes {doc['layers']['skipped']} of {doc['teacher']['num_layers']} layers for {doc['task']['name']}")
    return 0


def _speed(args: argparse.Namespace) -> int:
    import torch

    from nexus_engine.research.niwt import speed

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bf16" if device.startswith("cuda") else "fp32")
    if args.arch not in speed.ARCHS:
        from nexus_engine.errors import NexusError

        raise NexusError(f"unknown architecture {args.arch!r}", f"one of: {', '.join(speed.ARCHS)}")
    _emit(speed.sweep_speed(args.arch, device, dtype, args.batch, args.seq,
                            tuple(int(x) for x in args.widths.split(",")), args.layers), args.out)
    return 0
