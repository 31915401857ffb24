"""AGID on a text teacher: collapsed student + bridges, trained on the teacher's activation trajectories.

1. Mask: a NIWT bitmask (given, or chosen on the `select` split with >= 25 % of the layers removed).
2. Data: training windows (textdata.py); the teacher's residual stream recorded at the layers the student
   is compared on (NIWT recorder; shards verified on read); bridge ranks from the spectral analysis of what each
   removed block writes.
3. Students, all with the same bridges (same ranks, same parameter count), on the same data and step counts:
   - untrained: bridges at zero = the plain NIWT collapse;
   - logit-only: the bridges trained end to end with KL(teacher || student) on next-token distributions only
     (classic logit distillation: the baseline with the same parameter budget);
   - AGID local: each bridge fitted alone to map the recorded h_a to h_{b+1} (cheap: no model forward);
   - AGID: the local fit, then end-to-end trajectory matching (hidden_loss at every later kept layer + kl_weight
     * KL), with the same number of end-to-end steps as logit-only.
4. Eval split metrics against the teacher (NIWT `compare`: perplexity, KL, top-1 agreement), speed, size.
5. The AGID bridges + manifest go to `<adapters>/<tower>/text_bridges/`; numbers to the results JSON.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nexus_engine import paths
from nexus_engine.consolidation import adapters
from nexus_engine.research.agid import bridges as br
from nexus_engine.research.agid import mask, shards, textdata, trajectory
from nexus_engine.research.agid.teacher import Teacher, autocast, load_teacher, pick_device
from nexus_engine.research.agid.trainer import TrainConfig, TrainLog, clear_checkpoints, fingerprint, train
from nexus_engine.research.niwt import collapse_model
from nexus_engine.research.niwt.collapse import speed
from nexus_engine.research.niwt.lab import jsonable
from nexus_engine.research.niwt.metrics import LMTask, retention
from nexus_engine.research.niwt.sweep import compare

DEFAULT_OUT = paths.REPO_ROOT / "benchmarks" / "results" / "agid"


@dataclass
class TextConfig:
    tower: str = "smollm2-hf"
    bitmask: Path | None = None  # a NIWT bitmask; None: choose one removing `remove` of the layers
    remove: float = 0.25  # fraction of layers (or a count when >= 1)
    window: int = 128
    samples: int = 48  # teacher-written answers added to the heal split
    eval_windows: int = 8
    gsm8k_eval: int = 12
    min_rank: int = 8
    max_rank: int = 128
    rank: int | None = None  # fixed rank for every bridge (default: from the spectral analysis)
    local: TrainConfig = field(default_factory=lambda: TrainConfig(steps=400, lr=3e-3, warmup=10,
                                                                   checkpoint_every=100, log_every=50))
    trajectory: TrainConfig = field(default_factory=lambda: TrainConfig(steps=80, lr=1e-3, warmup=5,
                                                                        checkpoint_every=10, log_every=5))
    local_rows: int = 2048  # recorded tokens per local step
    batch: int = 4  # windows per end-to-end step
    kl_weight: float = 1.0  # AGID's optional logit term (0: hidden states only)
    seed: int = 0
    device: str | None = None
    threads: int = 1
    out: Path = DEFAULT_OUT
    root: Path | None = None  # adapters root (default: <data folder>/adapters)
    work: Path | None = None  # activation recordings (default: <cache>/agid/<tower>)
    data: Path | None = None  # gsm8k/ and mmlu/ (default: ../shared/data, else data/research)
    fresh: bool = False  # ignore checkpoints
    speed: bool = True


def say(msg: str) -> None:
    import sys

    print(f"[agid {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_text(cfg: TextConfig, teacher: Teacher | None = None, progress: Any = say) -> dict[str, Any]:
    t_all = time.perf_counter()
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    teacher = teacher or load_teacher(cfg.tower, str(device))
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads)  # after the load, which sets the tower's own thread count
    info = teacher.info
    tower, n_layers = info["tower"], info["num_layers"]
    folder = adapters.adapter_dir(tower, "text_bridges", cfg.root)
    work = cfg.work or paths.cache_dir() / "agid" / tower
    secs: dict[str, float] = {}

    # 1. mask ---------------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    doc, mask_file = _mask(cfg, teacher, work, progress)
    kept = mask.kept_of(doc)
    cuts = br.cuts_of(kept, n_layers)
    secs["mask"] = time.perf_counter() - t0
    progress(f"mask: {len(kept)} of {n_layers} layers kept; cuts {[c.name for c in cuts]}")

    # 2. data, recording, ranks -------------------------------------------------------------------------
    t0 = time.perf_counter()
    ids, data_info = textdata.training_windows(teacher.tok, teacher.model, window=cfg.window, samples=cfg.samples,
                                               seed=cfg.seed, root=cfg.data, progress=progress)
    need = sorted({c.first for c in cuts} | {kept[j] for j in range(cuts[0].at, len(kept))} | {n_layers})
    acts = _activations(teacher, ids, data_info, need, work, cfg, progress)
    stats = {i: trajectory.standard_stats(acts[i]) for i in need}
    ranks = {}
    for c in cuts:
        delta = (acts[c.last + 1].float() - acts[c.first].float()).reshape(-1, acts[c.first].shape[-1])
        ranks[c.name] = br.spectral_rank(delta[:: max(len(delta) // 8192, 1)], cfg.min_rank, cfg.max_rank)
        if cfg.rank:
            ranks[c.name]["rank"] = cfg.rank
    secs["data"] = time.perf_counter() - t0
    progress(f"data: {data_info['windows']} windows; bridge ranks {({k: v['rank'] for k, v in ranks.items()})}")

    # 3. students -----------------------------------------------------------------------------------------
    student = copy.deepcopy(teacher.model)
    collapse_model(student, kept)
    tasks = textdata.eval_tasks(teacher.tok, cfg.window, cfg.eval_windows, cfg.gsm8k_eval, cfg.data)
    ctx = _Context(cfg, teacher, student, cuts, ids, acts, stats, device, kept)
    fp = fingerprint(asdict(cfg) | {"out": "", "root": "", "work": "", "fresh": False, "speed": True}, info,
                     data_info["hash"], kept, {k: v["rank"] for k, v in ranks.items()})
    ckpt = folder / "checkpoints"
    if cfg.fresh:
        for name in ("logit", "local", "agid"):
            clear_checkpoints(ckpt, name)
    rows: dict[str, Any] = {}
    logs: dict[str, TrainLog] = {}
    t0 = time.perf_counter()
    full = compare(teacher.model, teacher.model, tasks)
    rows["teacher"] = _row(full, full, tasks)
    rows["collapsed"] = _row(full, compare(teacher.model, student, tasks), tasks)
    progress(f"eval: collapsed untrained {_short(rows['collapsed'])}")
    secs["eval"] = time.perf_counter() - t0
    hidden = int(info["hidden_size"])

    # logit-only baseline: same bridges, KL only
    t0 = time.perf_counter()
    b = br.Bridged(student, cuts, br.make_bridges(cuts, hidden, _ranks(ranks), cfg.seed))
    logs["logit"] = train("logit", b.parameters(), ctx.trajectory_loss(hidden_w=0.0, kl_w=1.0), cfg.trajectory,
                          checkpoints=ckpt, fingerprint_=fp, resume=not cfg.fresh,
                          progress=progress)
    rows["logit_only"] = _row(full, compare(teacher.model, student, tasks), tasks)
    progress(f"eval: logit-only {_short(rows['logit_only'])}")
    b.remove()
    secs["logit_only"] = time.perf_counter() - t0

    # AGID: local fit, then trajectory
    t0 = time.perf_counter()
    b = br.Bridged(student, cuts, br.make_bridges(cuts, hidden, _ranks(ranks), cfg.seed))
    logs["local"] = train("local", b.parameters(), ctx.local_loss(b), cfg.local, checkpoints=ckpt,
                          fingerprint_=fp, resume=not cfg.fresh, progress=progress)
    rows["agid_local"] = _row(full, compare(teacher.model, student, tasks), tasks)
    progress(f"eval: AGID local {_short(rows['agid_local'])}")
    logs["agid"] = train("agid", b.parameters(), ctx.trajectory_loss(hidden_w=1.0, kl_w=cfg.kl_weight),
                         cfg.trajectory, checkpoints=ckpt, fingerprint_=fp, resume=not cfg.fresh,
                         progress=progress)
    rows["agid"] = _row(full, compare(teacher.model, student, tasks), tasks)
    progress(f"eval: AGID {_short(rows['agid'])}")
    secs["agid"] = time.perf_counter() - t0

    # 4. speed and size ------------------------------------------------------------------------------------
    params = sum(p.numel() for p in b.parameters().values())
    sizes = {"teacher_bytes": _bytes(teacher.model), "student_bytes": _bytes(student), "bridge_params": params,
             "bridge_bytes": params * 4, "layers_teacher": n_layers, "layers_student": len(kept),
             "removed_fraction": 1 - len(kept) / n_layers}
    sp: dict[str, Any] = {}
    if cfg.speed:
        sp = {"teacher": speed(teacher.model), "agid": speed(student)}
    # 5. adapter + results -----------------------------------------------------------------------------
    res = {"kind": "text", "tower": info, "config": jsonable(asdict(cfg)), "mask": {
        "file": str(mask_file), "kept": kept, "removed": [i for i in range(n_layers) if i not in kept],
        "cuts": [asdict(c) | {"name": c.name} for c in cuts], "strategy": doc["layers"].get("strategy", "")},
        "ranks": ranks, "data": data_info, "eval_tasks": {t.name: {"hash": t.dataset_hash,
                                                                   "description": t.description} for t in tasks},
        "rows": rows, "sizes": sizes, "speed": sp, "curves": {k: v.to_dict() for k, v in logs.items()},
        "seconds": secs}
    res["goal"] = goal(rows, sizes)
    manifest = _save_adapter(folder, b, res, doc, mask_file, tower)
    res["adapter"] = {"folder": str(folder), "sha256": manifest["files"][adapters.ADAPTER_FILE]}
    for name in ("logit", "local", "agid"):
        clear_checkpoints(folder / "checkpoints", name)
    res["seconds"]["total"] = time.perf_counter() - t_all
    return res


# ------------------------------------------------------------------------------------------------ pieces
class _Context:
    """What the two losses read: the student, the recorded teacher trajectory and its statistics."""

    def __init__(self, cfg: TextConfig, teacher: Teacher, student: Any, cuts: list[br.Cut], ids: torch.Tensor,
                 acts: dict[int, torch.Tensor], stats: dict[int, tuple[torch.Tensor, torch.Tensor]],
                 device: torch.device, kept: list[int]) -> None:
        self.cfg, self.teacher, self.student, self.cuts, self.ids, self.acts = cfg, teacher, student, cuts, ids, acts
        self.device, self.kept = device, kept
        self.stats = {i: (m.to(device), s.to(device)) for i, (m, s) in stats.items()}
        self.n_layers = teacher.info["num_layers"]

    def _gen(self, step: int, salt: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + salt * 7_919 + step)

    def local_loss(self, bridged: br.Bridged) -> Any:
        flat = {i: a.reshape(-1, a.shape[-1]) for i, a in self.acts.items()}

        def loss(step: int) -> tuple[torch.Tensor, dict[str, float]]:
            rows = torch.randint(0, len(flat[self.n_layers]), (self.cfg.local_rows,), generator=self._gen(step, 1))
            total, parts = torch.zeros((), device=self.device), {}
            for c in self.cuts:
                x = flat[c.first][rows].to(self.device).float()
                y = flat[c.last + 1][rows].to(self.device).float()
                part = trajectory.hidden_loss(bridged.bridges[c.name](x), y, *self.stats[c.last + 1])
                total = total + part / len(self.cuts)
                parts[f"cut {c.name}"] = float(part.detach())
            return total, parts
        return loss

    def trajectory_loss(self, hidden_w: float, kl_w: float) -> Any:
        start, first = self.cuts[0].at, self.cuts[0].first
        positions = list(range(start, len(self.kept) + 1))
        window = self.ids.shape[1]
        keep = torch.arange(window // 2, window, device=self.device)

        def target(j: int) -> int:
            return self.kept[j] if j < len(self.kept) else self.n_layers

        def loss(step: int) -> tuple[torch.Tensor, dict[str, float]]:
            idx = torch.randperm(len(self.ids), generator=self._gen(step, 2))[:self.cfg.batch]
            ids = self.ids[idx].to(self.device)
            h0 = self.acts[first][idx].to(self.device, self.student.dtype)
            with autocast(self.device):
                got, logits = trajectory.student_run(self.student, ids, start, h0, keep if kl_w else None)
            total, parts = torch.zeros((), device=self.device), {}
            if hidden_w:
                h = sum(trajectory.hidden_loss(got[j], self.acts[target(j)][idx].to(self.device),
                                               *self.stats[target(j)]) for j in positions) / len(positions)
                total = total + hidden_w * h
                parts["hidden"] = float(h.detach())
            if kl_w:
                t_logits = trajectory.teacher_logits(self.teacher.model, ids, self.acts[self.n_layers][idx], keep)
                k = trajectory.kl(t_logits, logits)
                total = total + kl_w * k
                parts["kl"] = float(k.detach())
            return total, parts
        return loss


def _mask(cfg: TextConfig, teacher: Teacher, work: Path, progress: Any) -> tuple[dict[str, Any], Path]:
    if cfg.bitmask is not None:
        return mask.load_checked(cfg.bitmask, teacher), cfg.bitmask
    n_layers = teacher.info["num_layers"]
    n = int(cfg.remove) if cfg.remove >= 1 else math.ceil(cfg.remove * n_layers)
    dest = work / f"bitmask-{teacher.info['tower']}-agid-{n}.json"
    if dest.exists():  # chosen before for these weights: choosing again would give the same layers
        try:
            return mask.load_checked(dest, teacher), dest
        except Exception:  # another revision, or damaged: choose again
            dest.unlink()
    from nexus_engine.research.niwt import data
    from nexus_engine.research.niwt.metrics import text_task

    task = text_task(teacher.tok, data.held_text("select"), "text", cfg.window, 4)
    removed, scores = mask.choose(teacher, task, n, progress=progress)
    return mask.write(teacher, task, removed, scores, dest), dest


def _activations(teacher: Teacher, ids: torch.Tensor, data_info: dict[str, Any], need: list[int], work: Path,
                 cfg: TextConfig, progress: Any) -> dict[int, torch.Tensor]:
    key = hashlib.sha256(f"{data_info['hash']}:{need}".encode()).hexdigest()[:12]
    folder = work / f"activations-{key}"
    if not (folder / "manifest.json").exists():  # none yet, or a recording killed before its manifest
        progress(f"record: teacher residual stream at {len(need)} layers, {ids.numel()} tokens -> {folder}")
        with torch.inference_mode(), autocast(pick_device(cfg.device)):
            shards.record(teacher.model, ids, folder, info=teacher.info, dataset=data_info, layers=need)
    shards.verify(folder, teacher.info, data_info["hash"])
    got_ids, acts = shards.load_windows(folder, need, ids.shape[1])
    if not torch.equal(got_ids, ids):
        from nexus_engine.research.agid.errors import CorruptShardError

        raise CorruptShardError(f"the tokens recorded in {folder} are not the training windows", shards.HINT)
    return acts


def _ranks(ranks: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {k: int(v["rank"]) for k, v in ranks.items()}


def _row(full: dict[str, dict[str, float]], got: dict[str, dict[str, float]], tasks: list[LMTask]) -> dict[str, Any]:
    return {"metrics": got, "retention": {t.name: retention(t, full[t.name], got[t.name]) for t in tasks},
            "agreement": {t.name: got[t.name]["top1_agreement"] for t in tasks}}


def _short(row: dict[str, Any]) -> str:
    return ", ".join(f"{k}: ppl ret {row['retention'][k]:.3f} agree {row['agreement'][k]:.3f}"
                     for k in row["retention"])


def _bytes(model: Any) -> int:
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def goal(rows: dict[str, Any], sizes: dict[str, Any], target: float = 0.97) -> dict[str, Any]:
    """The issue's text goal, answered from the numbers (text task = held-out prose)."""
    a = rows["agid"]
    return {"target": target, "removed_fraction": sizes["removed_fraction"],
            "removed_at_least_25pct": sizes["removed_fraction"] >= 0.25,
            "agid_ppl_retention": a["retention"]["text"], "agid_top1_agreement": a["agreement"]["text"],
            "ppl_retention_met": a["retention"]["text"] >= target,
            "agreement_met": a["agreement"]["text"] >= target,
            "beats_collapsed": a["retention"]["text"] > rows["collapsed"]["retention"]["text"],
            "beats_logit_only": a["retention"]["text"] > rows["logit_only"]["retention"]["text"]
            and a["agreement"]["text"] >= rows["logit_only"]["agreement"]["text"]}


def _save_adapter(folder: Path, b: br.Bridged, res: dict[str, Any], doc: dict[str, Any], mask_file: Path,
                  tower: str) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    from nexus_engine.research.niwt import save_bitmask

    save_bitmask(doc, folder / "bitmask.json")  # the adapter folder is self-contained
    return adapters.write_adapter(folder, b.tensors(), {
        "kind": "text_bridges", "tower": tower, "teacher": res["tower"],
        "bitmask": {"file": "bitmask.json", "source": str(mask_file),
                    "sha256": adapters.file_sha256(folder / "bitmask.json"), "kept": res["mask"]["kept"],
                    "skipped": res["mask"]["removed"]},
        "config": {"cuts": [{**c, "rank": res["ranks"][c["name"]]["rank"]} for c in res["mask"]["cuts"]],
                   "hidden_size": res["tower"]["hidden_size"], "eps": 1e-5},
        "data": {"train": res["data"]["hash"], **{f"eval/{k}": v["hash"] for k, v in res["eval_tasks"].items()}},
        "metrics": {k: res["rows"][k]["retention"] | {"agreement": res["rows"][k]["agreement"]}
                    for k in ("collapsed", "logit_only", "agid")},
        "training": {k: {"steps": v["steps"], "first": v["curve"][0]["loss"] if v["curve"] else None,
                         "last": v["curve"][-1]["loss"] if v["curve"] else None, "seconds": v["seconds"]}
                     for k, v in res["curves"].items()} | {"seed": res["config"]["seed"]}})



