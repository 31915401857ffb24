"""`nexus router train` and `nexus router eval FILE.jsonl`: build the gate, and measure it against baselines."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("router", help="train the router's gate or evaluate it on labelled requests")
    rsub = p.add_subparsers(dest="router_command", metavar="ACTION", required=True)

    t = rsub.add_parser("train", help="train the gate on data/router/train.jsonl and save it with its metrics")
    t.add_argument("--train", type=Path, help="training JSONL (default: data/router/train.jsonl)")
    t.add_argument("--test", type=Path, help="test JSONL scored after training (default: data/router/test.jsonl)")
    t.add_argument("--out", type=Path, help="gate folder to write (default: data/router/gate)")
    t.add_argument("--epochs", type=int, help="training epochs (default: TrainConfig's)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    t.set_defaults(func=run_train)

    e = rsub.add_parser("eval", help="score the router (and the baselines) on a JSONL of labelled requests")
    e.add_argument("file", type=Path, help='JSONL lines: {"prompt": str, "attachments": [...], "towers": [roles]}')
    e.add_argument("--gate", metavar="DIR", help="gate folder (default: $NEXUS_ROUTER_GATE or data/router/gate)")
    e.add_argument("--plot", type=Path, help="confusion-matrix PNG (default: ./router-eval-<file>.png)")
    e.add_argument("--no-baselines", action="store_true", help="score the router only")
    e.add_argument("--json", action="store_true", help="print one JSON object (router metrics at the top level)")
    e.set_defaults(func=run_eval)


def _say(args: argparse.Namespace, msg: str) -> None:
    print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)


def run_train(args: argparse.Namespace) -> int:
    import torch

    from nexus_engine.config import load_config
    from nexus_engine.router import dataset, gate, train
    from nexus_engine.router.decide import embedder_for

    torch.set_num_threads(1)  # one text at a time: a second thread only adds contention
    cfg = train.TrainConfig(seed=args.seed, **({"epochs": args.epochs} if args.epochs else {}))
    train_ex = dataset.load_jsonl(args.train or dataset.TRAIN)
    test_path = args.test or dataset.TEST
    test_ex = dataset.load_jsonl(test_path) if test_path.exists() else []
    out = args.out or gate.SHIPPED_GATE
    _, metrics = train.train(embedder_for(load_config()), train_ex, test_ex, out, cfg, lambda m: _say(args, m))
    if args.json:
        print(json.dumps({"out": str(out), **metrics}))
        return 0
    for split in ("out_of_fold", "test"):
        if split in metrics:
            m = metrics[split]
            print(f"{split}: n={m['n']}  top-1 {m['top1_accuracy']:.1%}  exact-set {m['exact_set_accuracy']:.1%}  "
                  f"towers/request {m['mean_towers']:.2f}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from nexus_engine.router import Router, baselines, dataset
    from nexus_engine.router import eval as ev
    from nexus_engine.router.features import make_turn

    examples = dataset.load_jsonl(args.file)
    torch.set_num_threads(1)  # a one-shot CLI: no pool of idle threads spinning beside the one that works
    router = Router(profile=args.profile, gate=args.gate)
    for w in router.warnings:
        _say(args, f"warning: {w}")
    reset = router.embedder.clear_cache if router.embedder else None
    _say(args, f"routing {len(examples)} requests with the {router.mode} router …")
    report = ev.run(examples, lambda e: router.decide(e.prompt, e.attachments, e.voice, e.context).towers,
                    reset=reset)
    results: dict[str, dict[str, Any]] = {}
    if not args.no_baselines:
        def turn(e: dataset.Example) -> Any:
            return make_turn(e.prompt, e.attachments, e.voice, e.context)

        results["keywords"] = ev.run(examples, lambda e: baselines.keywords(turn(e)))
        if router.zero_shot is not None:
            zs = router.zero_shot
            results["zero_shot"] = ev.run(examples, lambda e: zs.predict(turn(e))[0], reset=reset)
        results["always_reasoning"] = ev.run(examples, lambda e: baselines.always_reasoning(turn(e)))
    plot = args.plot or Path(f"router-eval-{args.file.stem}.png")
    ev.confusion_png(report, plot, f"{router.mode} router on {args.file.name}")
    beats = all(report["exact_set_accuracy"] > r["exact_set_accuracy"] and report["top1_accuracy"] >
                r["top1_accuracy"] for r in results.values())
    if args.json:
        brief = ("n", "top1_accuracy", "exact_set_accuracy", "mean_towers", "p50_ms", "p95_ms", "per_role")
        print(json.dumps({"mode": router.mode, **report, "errors": report["errors"][:50], "plot": str(plot),
                          "warnings": router.warnings, "beats_baselines": beats if results else None,
                          "baselines": {k: {f: v[f] for f in brief} for k, v in results.items()}}))
        return 0
    print(ev.render(f"router ({router.mode})", report))
    print(f"\n  confusion plot: {plot}")
    if results:
        print("\nbaselines:")
        for name, rep in results.items():
            print("  " + ev.render(name, rep, details=False))
        print(f"\nthe {router.mode} router {'beats' if beats else 'does NOT beat'} every baseline "
              "on top-1 and exact-set accuracy")
    return 0
