"""The NIWT lab on one tower, end to end: measure, sweep, record, analyse, choose, collapse, heal, report.

1. Full model on the `eval` split; every accuracy is judged against chance/floor (`metrics.judge`), and an
   unusable one is reported but drives nothing.
2. Perturbation sweep on the `select` split (prefix cache): every layer and block of 2-4 layers skipped, every
   attention and MLP zeroed; plus angular distance / block influence between layer inputs. The prefix sweep and
   the naive one are timed on the same variants and batch.
3. Activations (residual stream, MLP hidden) recorded to shards on each task's eval data; spectral analysis and
   principal bases.
4. For each usable task: which n layers to remove, for n = 1..max_remove, by five strategies (ranked by
   the sweep's loss change or by its KL, block influence (ShortGPT), best contiguous block (sweep / angular
   distance, Gromov et al.), greedy with re-evaluation), all scored on `select`. The best set per n is then
   measured on `eval` for every task.
5. Bitmask per task: the largest n whose select-split retention meets the target.
6. Healing (LoRA, distilled) at a few n, measured on `eval`; speed and weight bytes of full vs collapsed.
7. JSON numbers, bitmasks, PNG plots and the report (`report.py`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nexus_engine import paths, weights
from nexus_engine.config import load_config
from nexus_engine.config.schema import TowerSpec
from nexus_engine.errors import NexusError
from nexus_engine.research.niwt import bitmask as bm
from nexus_engine.research.niwt import collapse, data, heal, record, spectral
from nexus_engine.research.niwt import stack as st
from nexus_engine.research.niwt.metrics import (
    LMTask,
    Task,
    gsm8k_exact_match,
    gsm8k_nll_task,
    judge,
    mmlu_task,
    retention,
    task_rows,
    text_task,
)
from nexus_engine.research.niwt.select import choose_layers
from nexus_engine.research.niwt.sweep import SweepResult, Variant, compare, perturbations, run_variants, skip_variant

DEFAULT_OUT = paths.REPO_ROOT / "benchmarks" / "results" / "niwt"


@dataclass
class LabConfig:
    tower: str = "smollm2-hf"
    out: Path = DEFAULT_OUT
    work: Path | None = None  # activation shards (default: cache_dir()/niwt/<tower>)
    data: Path | None = None  # gsm8k/ and mmlu/ (default: ../shared/data, else data/research)
    window: int = 128  # tokens per held-out text window
    text_select_windows: int = 6
    text_eval_windows: int = 8
    gsm8k_select: int = 4
    gsm8k_eval: int = 12
    mmlu_select: int = 57
    mmlu_eval: int = 57
    gsm8k_em: int = 8  # questions decoded greedily to check the exact-match floor
    em_tokens: int = 160
    widths: tuple[int, ...] = (1, 2, 3, 4)
    target: float = 0.97
    max_remove: int = 10
    greedy_candidates: int = 4
    heal_at: tuple[int, ...] = (1, 2, 4)
    healing: heal.HealConfig = field(default_factory=heal.HealConfig)
    sites: tuple[str, ...] = ("residual", "mlp")
    min_position: int = 1  # spectra leave out each sequence's first token, an attention sink (spectral.analyze)
    threads: int = 1
    batch: int = 4


def say(msg: str) -> None:
    print(f"[niwt {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- loading
@dataclass
class Loaded:
    model: Any
    tok: Any
    spec: TowerSpec
    revision: str
    load_info: dict[str, Any]


def tower_spec(name: str, profile: str | None = None) -> TowerSpec:
    config = load_config()
    if name not in config.towers:
        raise NexusError(f"no tower {name!r} in models.toml", f"one of: {', '.join(sorted(config.towers))}")
    spec = config.towers[name]
    if spec.kind != "llm" or spec.backend != "transformers":
        raise NexusError(f"tower {name!r} is {spec.kind}/{spec.backend}; the NIWT lab profiles transformers LLMs",
                         "pick a tower with kind = \"llm\" and backend = \"transformers\" (e.g. smollm2-hf)")
    return spec


def load_tower(spec: TowerSpec) -> Loaded:
    """Load through the chat tower (GGUF conversion cache, dtype, quantization, safety checks all apply)."""
    from nexus_engine.towers.llm_transformers import TransformersChat

    tower = TransformersChat(spec)
    info = tower.load()
    model = tower.torch_module()
    return Loaded(model, tower.tokenizer, spec, revision_of(spec), {"ms": info.ms, "origin": info.origin})


def revision_of(spec: TowerSpec) -> str:
    """The hub commit when pinned, else a sha256 prefix of the weights file (or of the folder's file list)."""
    if spec.source.hub and spec.source.revision and spec.source.revision != "main":
        return spec.source.revision
    path = weights.resolve(spec)
    h = hashlib.sha256()
    if path.is_file():
        with path.open("rb") as f:
            h = hashlib.file_digest(f, "sha256")
    else:
        for p in sorted(path.glob("*.safetensors")):
            h.update(f"{p.name}:{p.stat().st_size}".encode())
    return f"sha256:{h.hexdigest()[:16]}"


def teacher_info(loaded: Loaded) -> dict[str, Any]:
    cfg = getattr(loaded.model.config, "text_config", None) or loaded.model.config
    return {"tower": loaded.spec.name, "model_type": cfg.model_type,
            "architecture": type(loaded.model).__name__, "num_layers": st.decoder_stack(loaded.model).n_layers,
            "hidden_size": int(cfg.hidden_size), "revision": loaded.revision}


# ------------------------------------------------------------------------------------------- tasks
def build_tasks(tok: Any, cfg: LabConfig, root: Path) -> dict[str, dict[str, Task]]:
    """{"select": {...}, "eval": {...}} with text, gsm8k (solution likelihood) and mmlu."""
    out: dict[str, dict[str, Task]] = {}
    for split, n_text, n_math, n_mmlu in (("select", cfg.text_select_windows, cfg.gsm8k_select, cfg.mmlu_select),
                                          ("eval", cfg.text_eval_windows, cfg.gsm8k_eval, cfg.mmlu_eval)):
        out[split] = {
            "text": text_task(tok, data.held_text(split), "text", cfg.window, cfg.batch, n_text),
            "gsm8k": gsm8k_nll_task(tok, data.gsm8k_items(root, split, n_math), cfg.batch),
            "mmlu": mmlu_task(tok, data.mmlu_items(root, split, n_mmlu), 2 * cfg.batch),
        }
    return out


def heal_windows(tok: Any, cfg: LabConfig, root: Path) -> torch.Tensor:
    """Healing split as [N, window] token ids: the heal text and the heal GSM8K items, end to end."""
    parts = [data.held_text("heal")] + [f"Question: {it.question}\nAnswer: {it.solution}\n#### {it.answer}"
                                        for it in data.gsm8k_items(root, "heal")]
    ids: list[int] = []
    for p in parts:
        ids += tok(p, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if tok.eos_token_id else [])
    n = len(ids) // cfg.window
    return torch.tensor(ids[:n * cfg.window]).view(n, cfg.window)


# ------------------------------------------------------------------------------------------ the lab
def run_lab(cfg: LabConfig, spec: TowerSpec | None = None) -> dict[str, Any]:
    t_lab = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(0)
    root = data.data_root(cfg.data)  # a missing data folder fails now, not after minutes of loading
    spec = spec or tower_spec(cfg.tower)
    loaded = load_tower(spec)
    # after the load, which sets the tower's own thread count: on a shared CPU one thread is often faster than
    # two (a descheduled OpenMP thread stalls every barrier; measured 1.45 s vs up to 2.6 s per forward)
    torch.set_num_threads(cfg.threads)
    model, tok = loaded.model, loaded.tok
    model.eval()
    stack = st.decoder_stack(model)
    L = stack.n_layers
    work = cfg.work or paths.cache_dir() / "niwt" / spec.name
    say(f"{spec.name}: {L} layers, data from {root}")
    tasks = build_tasks(tok, cfg, root)
    res: dict[str, Any] = {"tower": teacher_info(loaded), "config": jsonable(asdict(cfg)), "data_root": str(root),
                           "tasks": {s: {n: {"description": t.description, "dataset_hash": t.dataset_hash}
                                         for n, t in ts.items()} for s, ts in tasks.items()}}
    secs: dict[str, float] = {}

    # 1. full model on eval, usability ------------------------------------------------------------
    t0 = time.perf_counter()
    full_eval = run_variants(stack, list(tasks["eval"].values()), []).base
    usable = {"text": judge("ppl", 0, 0, None), "gsm8k": judge("ppl", 0, 0, None),
              "mmlu": judge("accuracy", full_eval["mmlu"]["accuracy"], full_eval["mmlu"]["n"], 0.25)}
    em_items = data.gsm8k_items(root, "eval", cfg.gsm8k_em)
    em_full = gsm8k_exact_match(model, tok, em_items, cfg.em_tokens) if cfg.gsm8k_em else None
    if em_full is not None:
        usable["gsm8k_em"] = judge("exact match", em_full["accuracy"], em_full["n"], 0.05)
    secs["full_eval"] = time.perf_counter() - t0
    res["full"] = {"eval": full_eval, "gsm8k_em": em_full}
    res["usable"] = usable
    say(f"full model: {json.dumps({k: _short(v) for k, v in full_eval.items()})}; usable "
        f"{ {k: v['usable'] for k, v in usable.items()} }")
    decide = [n for n in ("text", "gsm8k", "mmlu") if usable[n]["usable"]]

    # 2. perturbation sweep on select ----------------------------------------------------------------
    t0 = time.perf_counter()
    variants = perturbations(L, cfg.widths)
    sweep = run_variants(stack, [tasks["select"][n] for n in decide], variants, prefix=True, similarity=True,
                         progress=say)
    secs["sweep"] = time.perf_counter() - t0
    res["sweep"] = _sweep_json(sweep, variants, decide, tasks["select"])
    say(f"sweep: {len(variants)} variants in {secs['sweep']:.0f} s; layer calls {sweep.layer_calls} vs naive "
        f"{sweep.naive_layer_calls} ({sweep.layer_calls / sweep.naive_layer_calls:.2f}x)")
    res["prefix_cache"] = time_prefix_vs_naive(stack, tasks["select"]["text"], L)
    say(f"prefix vs naive: {res['prefix_cache']['ratio_seconds']:.2f}x time, "
        f"{res['prefix_cache']['ratio_layer_calls']:.2f}x layer calls")

    # 3. activations and spectra ---------------------------------------------------------------------
    t0 = time.perf_counter()
    res["spectral"], bases = {}, {}
    for name in ("text", "gsm8k"):
        task = tasks["eval"][name]
        seqs = task_rows(task)
        folder = work / f"activations-{name}"
        manifest = record.record_activations(
            model, seqs, folder, model_info=teacher_info(loaded), pad_id=_pad_id(tok),
            dataset={"name": f"{name}-eval", "hash": task.dataset_hash, "description": task.description},
            cfg=record.RecordConfig(sites=cfg.sites if name == "text" else ("residual",), shard_tokens=4096))
        tensors: dict[str, torch.Tensor] = {}
        res["spectral"][name] = spectral.analyze(folder, bases=tensors, min_position=cfg.min_position)
        res["spectral"][name]["activations"] = {"folder": str(folder), "tokens": manifest["tokens"],
                                                "shards": len(manifest["shards"])}
        bases[name] = _save_bases(tensors, cfg.out / "bases" / f"{spec.name}-{name}-residual.safetensors")
    secs["record_spectral"] = time.perf_counter() - t0
    say(f"activations + spectra in {secs['record_spectral']:.0f} s")

    # 4. choosing layers to remove -------------------------------------------------------------------
    t0 = time.perf_counter()
    res["selection"] = {n: choose_layers(stack, tasks["select"][n], sweep, cfg) for n in decide}
    secs["selection"] = time.perf_counter() - t0
    sets: dict[tuple[int, ...], Variant] = {}
    for n in decide:
        for row in res["selection"][n]["best"]:
            key = tuple(row["layers"])
            sets.setdefault(key, skip_variant(key))
    t0 = time.perf_counter()
    ev = run_variants(stack, list(tasks["eval"].values()), list(sets.values()), progress=say)
    secs["eval_sets"] = time.perf_counter() - t0
    res["collapsed_eval"] = {",".join(map(str, k)): _with_retention(ev.variants[v.name], full_eval, tasks["eval"])
                             for k, v in sets.items()}
    say(f"selection {secs['selection']:.0f} s, eval of {len(sets)} sets {secs['eval_sets']:.0f} s")

    # 5. bitmasks ----------------------------------------------------------------------------------
    res["bitmasks"] = {}
    for n in decide:
        sel = res["selection"][n]
        row = next((r for r in reversed(sel["best"]) if r["select_score"] >= cfg.target), None)
        removed = row["layers"] if row else []
        key = ",".join(map(str, removed))
        metrics_c = res["collapsed_eval"].get(key, {"metrics": full_eval, "retention": {}})
        doc = make_bitmask(loaded, tasks, n, removed, row["strategy"] if row else "none", sweep, res, metrics_c,
                           bases.get(n), cfg)
        path = bm.save_bitmask(doc, cfg.out / f"bitmask-{spec.name}-{n}.json")
        res["bitmasks"][n] = {"file": path.name, "removed": removed, "n": len(removed),
                              "eval_retention": metrics_c["retention"]}
        say(f"bitmask {path.name}: remove {removed}")

    # 6. healing, greedy decoding, speed ------------------------------------------------------------
    t0 = time.perf_counter()
    res["healed"] = {}
    windows = heal_windows(tok, cfg, root)
    main = decide[0]
    for n_rm in cfg.heal_at:
        rows = [r for r in res["selection"][main]["best"] if len(r["layers"]) == n_rm]
        if not rows:
            continue
        removed = rows[0]["layers"]
        kept = [i for i in range(L) if i not in removed]
        student = copy.deepcopy(model)
        collapse.collapse_model(student, kept)
        log = heal.heal(student, model, windows, kept, removed, cfg.healing, progress=say)
        metrics_h = compare(model, student, list(tasks["eval"].values()))
        res["healed"][str(n_rm)] = {"layers": removed, "heal": log,
                                    **_with_retention(metrics_h, full_eval, tasks["eval"])}
        say(f"healed n={n_rm}: {json.dumps(res['healed'][str(n_rm)]['retention'])}")
        del student
    secs["heal"] = time.perf_counter() - t0
    res["heal_tokens"] = int(windows.numel())

    goal_n = math.ceil(0.125 * L)
    goal_rows = [r for r in res["selection"][main]["best"] if len(r["layers"]) == goal_n]
    res["speed"] = {"full": collapse.speed(model)}
    if goal_rows:
        small = copy.deepcopy(model)
        collapse.collapse_model(small, [i for i in range(L) if i not in goal_rows[0]["layers"]])
        res["speed"][f"collapsed_{goal_n}"] = collapse.speed(small)
        if em_full is not None and usable["gsm8k_em"]["usable"]:
            res["collapsed_gsm8k_em"] = gsm8k_exact_match(small, tok, em_items, cfg.em_tokens)
        del small
    res["goal"] = summarize_goal(res, main, goal_n, cfg.target)
    secs["total"] = time.perf_counter() - t_lab
    res["seconds"] = secs
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / f"results-{spec.name}.json").write_text(json.dumps(jsonable(res), indent=1) + "\n")
    (cfg.out / ".gitignore").write_text("bases/\n")
    from nexus_engine.research.niwt import report

    report.write_report(cfg.out, spec.name)
    say(f"done in {secs['total']:.0f} s: {cfg.out}")
    return res


# ----------------------------------------------------------------------------------------- pieces
def _pad_id(tok: Any) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)


def time_prefix_vs_naive(stack: st.Stack, task: LMTask, n_layers: int, repeats: int = 2,
                         rows: int | None = 2) -> dict[str, Any]:
    """The same variants (every layer skipped), same batch, both ways, best of `repeats`, interleaved.

    The batch is the first `rows` rows of the task's first batch (None: all of it, as the sweep runs it). Two
    rows halve the time this check takes; on the starter model one session measured 0.60x with two rows and
    0.63x with four, and repeated runs of the same check differ by about 0.03 on the shared CPU.

    On a CPU the timed runs use one thread and count that thread's CPU time: other processes sharing the
    machine change the wall clock by tens of percent from one minute to the next, but not the CPU time our
    thread needs. Wall time is reported too.
    """
    b = task.batches[0]
    rows = rows or len(b.input_ids)
    one = LMTask(task.name, [type(b)(b.input_ids[:rows], b.keep, b.targets[:rows], b.mask[:rows])],
                 task.dataset_hash)
    variants = perturbations(n_layers, (1,), parts=False)
    threads = torch.get_num_threads()
    cpu = stack.device.type == "cpu"
    if cpu:
        torch.set_num_threads(1)
    clock = time.thread_time if cpu else time.perf_counter
    best = {m: float("inf") for m in ("prefix", "naive", "prefix_wall", "naive_wall")}
    calls: dict[str, int] = {}
    diff = 0.0
    try:
        for _ in range(repeats):
            runs = {}
            for mode in ("naive", "prefix"):
                t0, w0 = clock(), time.perf_counter()
                runs[mode] = run_variants(stack, [one], variants, prefix=mode == "prefix")
                best[mode] = min(best[mode], clock() - t0)
                best[f"{mode}_wall"] = min(best[f"{mode}_wall"], time.perf_counter() - w0)
                calls[mode] = runs[mode].layer_calls
            got = {mode: [r.variants[v.name][one.name]["nll"] for v in variants] for mode, r in runs.items()}
            diff = max(abs(a - b) for a, b in zip(got["prefix"], got["naive"]))
    finally:
        torch.set_num_threads(threads)
    return {"variants": len(variants), "tokens": one.batches[0].tokens, "clock": "thread CPU time, 1 thread"
            if cpu else "wall time", "seconds_prefix": best["prefix"], "seconds_naive": best["naive"],
            "ratio_seconds": best["prefix"] / best["naive"], "wall_seconds_prefix": best["prefix_wall"],
            "wall_seconds_naive": best["naive_wall"], "ratio_wall": best["prefix_wall"] / best["naive_wall"],
            "layer_calls_prefix": calls["prefix"], "layer_calls_naive": calls["naive"],
            "ratio_layer_calls": calls["prefix"] / calls["naive"], "max_abs_nll_difference": diff,
            "note": f"every single layer skipped, one batch of {rows} windows; both include the one unperturbed "
                    f"forward per batch; best of {repeats} interleaved runs"}


def _sweep_json(sweep: SweepResult, variants: list[Variant], decide: list[str],
                tasks: dict[str, Task]) -> dict[str, Any]:
    out: dict[str, Any] = {"base": sweep.base, "seconds": sweep.seconds, "layer_calls": sweep.layer_calls,
                           "naive_layer_calls": sweep.naive_layer_calls, "similarity": sweep.similarity,
                           "variants": {}}
    for v in variants:
        row = {}
        for n in decide:
            m, b = sweep.variants[v.name][n], sweep.base[n]
            row[n] = {"delta_nll": m["nll"] - b["nll"], "kl": m["kl"], "top1_agreement": m["top1_agreement"],
                      "retention": retention(tasks[n], b, m)} if "nll" in m else \
                {"delta_accuracy": m["accuracy"] - b["accuracy"], "kl": m["kl"], "retention": retention(tasks[n], b, m)}
        out["variants"][v.name] = row
    return out


def _importance(sweep_json: dict[str, Any], task: str, n_layers: int, kind: str, key: str = "delta_nll") -> list[float]:
    return [sweep_json["variants"][f"{kind} {i}"][task].get(key, 0.0) for i in range(n_layers)]


def _with_retention(metrics: dict[str, dict[str, float]], full: dict[str, dict[str, float]],
                    tasks: dict[str, Task]) -> dict[str, Any]:
    return {"metrics": metrics, "retention": {n: retention(t, full[n], metrics[n]) for n, t in tasks.items()}}


def _save_bases(tensors: dict[str, torch.Tensor], dest: Path) -> dict[str, Any]:
    from safetensors.torch import save_file

    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dest))
    with dest.open("rb") as f:
        sha = hashlib.file_digest(f, "sha256").hexdigest()
    return {"file": f"bases/{dest.name}", "sha256": sha,
            "k": {name.split(".")[1]: int(t.shape[0]) for name, t in tensors.items() if name.endswith(".basis")}}


def make_bitmask(loaded: Loaded, tasks: dict[str, dict[str, Task]], name: str, removed: list[int], strategy: str,
                 sweep: SweepResult, res: dict[str, Any], collapsed: dict[str, Any], bases: dict[str, Any] | None,
                 cfg: LabConfig) -> dict[str, Any]:
    teacher = teacher_info(loaded)
    L = teacher["num_layers"]
    sj = res["sweep"]
    t = tasks["select"][name]
    key = "delta_nll" if isinstance(t, LMTask) else "delta_accuracy"
    scores = {f"skip_{key}": _importance(sj, name, L, "skip", key),
              f"attn_zero_{key}": _importance(sj, name, L, "attn0", key),
              f"mlp_zero_{key}": _importance(sj, name, L, "mlp0", key),
              "skip_kl": _importance(sj, name, L, "skip", "kl"),
              "block_influence": sweep.similarity["block_influence"]}
    if key == "delta_accuracy":  # a drop in accuracy is negative: flip so higher = more important
        scores = {k: [-x for x in v] if "accuracy" in k else v for k, v in scores.items()}
    subspaces = []
    spec_task = res["spectral"].get(name)
    if spec_task is not None:
        for row in spec_task["sites"]["residual"]["layers"]:
            basis = None
            if bases is not None and str(row["layer"]) in bases["k"]:
                basis = {"file": bases["file"], "tensor": f"residual.{row['layer']}.basis",
                         "k": bases["k"][str(row["layer"])], "sha256": bases["sha256"]}
            subspaces.append({"layer": row["layer"], "site": "residual", "k90": row["k90"], "k95": row["k95"],
                              "k99": row["k99"], "effective_rank": row["effective_rank"], "basis": basis})
    metric = "ppl" if isinstance(t, LMTask) else "accuracy"
    metrics = {"full": res["full"]["eval"], "collapsed": collapsed["metrics"],
               "retention": collapsed["retention"], "usable": {k: v["usable"] for k, v in res["usable"].items()},
               "split": "eval"}
    data_hashes = {f"{s}/{n}": tk.dataset_hash for s, ts in tasks.items() for n, tk in ts.items()}
    return bm.new_bitmask(
        teacher=teacher,
        task={"name": name, "decision_metric": metric, "target_retention": cfg.target,
              "dataset_hash": t.dataset_hash, "description": f"select split: {t.description}"},
        skipped=removed, strategy=strategy,
        importance={"method": "perturbation sweep on the select split (prefix cache); delta = variant - full; "
                              "block_influence = 1 - cos(layer input, layer output) (ShortGPT)", "scores": scores},
        subspaces=subspaces, metrics=metrics,
        prov=bm.provenance(command=f"nexus profile run --tower {teacher['tower']}", data=data_hashes,
                           notes=f"largest set whose select-split score (min of {metric} retention and, for likelihood "
                                 f"tasks, exp(-KL)) >= {cfg.target}; "
                                 "metrics.retention is measured on the disjoint eval split"))


def summarize_goal(res: dict[str, Any], main: str, goal_n: int, target: float) -> dict[str, Any]:
    """The issue's goal, answered from the numbers: >= 12.5% of layers at >= target retention without healing,
    and how far healing extends it; per task, where the seed's 97-100% holds."""
    def eval_ret(layers: list[int]) -> dict[str, float]:
        return res["collapsed_eval"][",".join(map(str, layers))]["retention"]

    per_n = [{"n": r["n"], "layers": r["layers"], "strategy": r["strategy"], "select_retention": r["select_retention"],
              "select_kl_retention": r.get("select_kl_retention"), "eval_retention": eval_ret(r["layers"])}
             for r in res["selection"][main]["best"]]
    holds: dict[str, int] = {}
    own: dict[str, list[dict[str, Any]]] = {}
    for task in per_n[0]["eval_retention"] if per_n else []:
        # each usable task is judged on the sets chosen for it; an unusable one on the decision task's sets
        rows = res["selection"][task]["best"] if task in res["selection"] else res["selection"][main]["best"]
        own[task] = [{"n": r["n"], "layers": r["layers"], "eval_retention": eval_ret(r["layers"])[task]} for r in rows]
        ok = [row["n"] for row in own[task] if (row["eval_retention"] or 0) >= target]
        # the largest n such that every smaller n also holds (a curve that dips and recovers is not trusted)
        k = 0
        while k + 1 in ok:
            k += 1
        holds[task] = k
    healed = {int(n): h["retention"] for n, h in res.get("healed", {}).items()}
    healed_ok = [n for n, r in healed.items() if (r.get(main) or 0) >= target]
    goal_row = next((r for r in per_n if r["n"] == goal_n), None)
    return {"layers": res["tower"]["num_layers"], "goal_layers": goal_n, "target": target, "decision_task": main,
            "unhealed_at_goal": goal_row,
            "met_without_healing": bool(goal_row and (goal_row["eval_retention"][main] or 0) >= target),
            "largest_n_holding_per_task": holds, "per_task_own_sets": own, "healed_retention": healed,
            "largest_healed_n_holding": max(healed_ok) if healed_ok else 0, "per_n": per_n}


def _short(m: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in m.items() if k in ("ppl", "accuracy", "nll")}


def jsonable(x: Any) -> Any:
    """`x` with paths as strings and non-finite floats as null, ready for json.dumps."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
