"""Train the vision projector against the frozen chat LLM, and compare the three ways the LLM can answer about
an image: projector prefix tokens, the text composition (classifier labels + OCR in the prompt, what
nexus_engine/vision does today), and no image at all.

Data: rendered scenes with exact captions (scenes.py; some colour-shape pairs only in held-out scenes) and the
COCO pairs (coco.py; 16 images + their mirror images train, 8 are held out). Loss: cross-entropy of the caption
given [chat template | projected image tokens | question], answer tokens only; the LLM is frozen.
Eval: held-out scenes (seen pairs, novel pairs) and held-out COCO images, one greedy answer per path, scored by
what it names (scenes.score, coco.score).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nexus_engine import registry
from nexus_engine.consolidation import adapters
from nexus_engine.consolidation import projector as pj
from nexus_engine.errors import NexusError
from nexus_engine.research.agid import coco, scenes
from nexus_engine.research.agid.teacher import Teacher, autocast, load_teacher, pick_device, revision_of, spec_of
from nexus_engine.research.agid.text import DEFAULT_OUT, say
from nexus_engine.research.agid.trainer import TrainConfig, clear_checkpoints, fingerprint, train
from nexus_engine.research.niwt.lab import jsonable
from nexus_engine.towers.base import GenParams

QUESTION = "What is in the image?"


@dataclass
class VisionConfig:
    tower: str = "efficientnet-lite0"
    llm: str = "smollm2-hf"
    ocr: str | None = "rapidocr"
    train_scenes: int = 1200
    eval_scenes: int = 40  # held-out scenes with pairs seen in training
    eval_novel: int = 24  # held-out scenes with at least one never-trained colour-shape pair
    coco: Path | None = None  # default ../shared/data/coco; the COCO part is skipped when it is absent
    coco_share: float = 0.25  # of each batch
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=200, lr=1e-3, warmup=10,
                                                                   checkpoint_every=25, log_every=5))
    batch: int = 8
    max_new_tokens: int = 32
    repeat_penalty: float = 1.1  # the chat tower's setting (models.toml), for every path alike
    seed: int = 0
    device: str | None = None
    threads: int = 1
    out: Path = DEFAULT_OUT
    root: Path | None = None
    fresh: bool = False


@dataclass
class Item:
    feats: torch.Tensor  # [TOKENS, width]
    answers: list[str]  # reference captions (scenes: exactly one)
    image: Any = None  # PIL image, eval items only (the text path describes it)
    kinds: list[scenes.Kind] | None = None  # scenes only
    split: str = ""


def widths(vision: Any, llm: Any) -> dict[str, int]:
    """Projector widths from models.toml: the vision tower's width and latent_width, the LLM's width."""
    for spec in (vision, llm):
        if not spec.width:
            raise NexusError(f"[towers.{spec.name}] has no width",
                             f"add width = <feature width> to [towers.{spec.name}] in models.toml "
                             "(EfficientNet-Lite0: 1280; SmolLM2-135M: 576)")
    return {"in_width": vision.width, "latent": vision.latent_width or min(vision.width, llm.width),
            "out_width": llm.width}


def _prepare(cfg: VisionConfig, teacher: Teacher | None, vision_tower: Any) -> tuple[Any, ...]:
    device = pick_device(cfg.device)
    vspec = spec_of(cfg.tower, ("image_encoder",))
    if not pj.supports(vspec):
        raise NexusError(f"tower {cfg.tower!r} ({vspec.backend}) has no projector feature reader yet",
                         "the projector reads EfficientNet feature maps (efficientnet-lite0)")
    teacher = teacher or load_teacher(cfg.llm, str(device))
    w = widths(vspec, teacher.spec)
    if teacher.model.get_input_embeddings().weight.shape[1] != w["out_width"]:
        raise NexusError(f"[towers.{cfg.llm}] width = {w['out_width']} but its embeddings are "
                         f"{teacher.model.get_input_embeddings().weight.shape[1]} wide", "fix width in models.toml")
    vision_tower = vision_tower or _load(vspec)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    return device, vspec, teacher, w, vision_tower


def run_vision(cfg: VisionConfig, progress: Any = say, teacher: Teacher | None = None,
               vision_tower: Any = None, ocr_tower: Any = None) -> dict[str, Any]:
    t_all = time.perf_counter()
    device, vspec, teacher, w, vision_tower = _prepare(cfg, teacher, vision_tower)
    secs: dict[str, float] = {}
    t0 = time.perf_counter()
    data = build_data(cfg, vision_tower, progress)
    feat_w = data["train"][0].feats.shape[-1]
    if feat_w != w["in_width"]:
        raise NexusError(f"[towers.{cfg.tower}] width = {w['in_width']} but its features are {feat_w} wide",
                         "fix width in models.toml")
    secs["data"] = time.perf_counter() - t0
    proj = pj.Projector(**w, emb_rms=pj.embedding_rms(teacher.model), seed=cfg.seed).to(device)
    folder = adapters.adapter_dir(cfg.tower, "vision_projector", cfg.root)
    fp = fingerprint(asdict(cfg) | {"out": "", "root": "", "fresh": False}, teacher.info, data["hashes"], w)
    if cfg.fresh:
        clear_checkpoints(folder / "checkpoints", "projector")
    t0 = time.perf_counter()
    loss_fn = _Loss(cfg, teacher, proj, data["train"], data["coco_train"], device)
    log = train("projector", dict(proj.named_parameters()), loss_fn, cfg.train, checkpoints=folder / "checkpoints",
                fingerprint_=fp, resume=not cfg.fresh, progress=progress)
    secs["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ocr_tower = ocr_tower if ocr_tower is not None else (_load(spec_of(cfg.ocr, ("ocr",))) if cfg.ocr else None)
    ev = evaluate(cfg, teacher, proj, vision_tower, ocr_tower, data, progress)
    secs["eval"] = time.perf_counter() - t0
    res = {"kind": "vision", "llm": teacher.info, "vision": {"tower": cfg.tower, "revision": revision_of(vspec),
                                                              **w, "tokens": pj.TOKENS, "grid": pj.GRID},
           "config": jsonable(asdict(cfg)), "data": data["describe"], "hashes": data["hashes"],
           "eval": ev, "curve": log.to_dict(), "params": sum(p.numel() for p in proj.parameters()),
           "seconds": secs}
    res["goal"] = goal(ev)
    manifest = adapters.write_adapter(folder, dict(proj.state_dict()), {
        "kind": "vision_projector", "tower": cfg.tower, "teacher": teacher.info,
        "source": res["vision"], "config": {**w, "tokens": pj.TOKENS, "grid": pj.GRID, "system": pj.SYSTEM,
                                            "placeholder": pj.IMAGE},
        "data": data["hashes"], "metrics": {k: v["mean"] for k, v in ev.items()},
        "training": {"steps": cfg.train.steps, "first": log.first, "last": log.last, "seconds": log.seconds,
                     "seed": cfg.seed}})
    res["adapter"] = {"folder": str(folder), "sha256": manifest["files"][adapters.ADAPTER_FILE]}
    clear_checkpoints(folder / "checkpoints", "projector")
    secs["total"] = time.perf_counter() - t_all
    return res


def reevaluate(cfg: VisionConfig, previous: dict[str, Any] | None, progress: Any = say, teacher: Teacher | None = None,
               vision_tower: Any = None, ocr_tower: Any = None) -> dict[str, Any]:
    """Evaluate the installed projector again (after a change to the evaluation, say) without retraining it.
    The training fields of `previous` (a results JSON) are kept when it describes this same adapter."""
    from nexus_engine.research.agid.teacher import check_teacher

    _, _, teacher, _, vision_tower = _prepare(cfg, teacher, vision_tower)
    folder = adapters.adapter_dir(cfg.tower, "vision_projector", cfg.root)
    manifest = adapters.read_manifest(folder, tower=cfg.tower, kind="vision_projector")
    check_teacher(manifest["teacher"], teacher.info, f"the projector in {folder}")
    c = manifest["config"]
    proj = pj.Projector(c["in_width"], c["latent"], c["out_width"], c["tokens"])
    proj.load_state_dict(adapters.load_tensors(folder, manifest))
    proj.to(teacher.model.get_input_embeddings().weight.device).eval()
    t0 = time.perf_counter()
    data = build_data(cfg, vision_tower, progress, train=False)
    ocr_tower = ocr_tower if ocr_tower is not None else (_load(spec_of(cfg.ocr, ("ocr",))) if cfg.ocr else None)
    ev = evaluate(cfg, teacher, proj, vision_tower, ocr_tower, data, progress)
    sha = manifest["files"][adapters.ADAPTER_FILE]
    res = previous if previous and previous.get("adapter", {}).get("sha256") == sha else {
        "kind": "vision", "llm": teacher.info, "vision": manifest["source"], "training": manifest["training"],
        "params": sum(p.numel() for p in proj.parameters()), "adapter": {"folder": str(folder), "sha256": sha}}
    res.update(eval=ev, goal=goal(ev), evaluated={"seconds": time.perf_counter() - t0,
                                                  "hashes": {k: v for k, v in data["hashes"].items() if "eval" in k}})
    return res


def _load(spec: Any) -> Any:
    tower = registry.build(spec)
    tower.load()
    return tower


# ------------------------------------------------------------------------------------------------ data
def build_data(cfg: VisionConfig, tower: Any, progress: Any, train: bool = True) -> dict[str, Any]:
    base = cfg.seed * 1_000_000
    groups = {"train": [scenes.render(base + i) for i in range(cfg.train_scenes if train else 0)],
              "eval_seen": [scenes.render(base + 500_000 + i) for i in range(cfg.eval_scenes)],
              "eval_novel": [scenes.render(base + 700_000 + i, novel=True) for i in range(cfg.eval_novel)]}
    progress(f"data: {sum(map(len, groups.values()))} rendered scenes through {tower.spec.name}")
    out: dict[str, Any] = {"hashes": {f"scenes/{k}": scenes.dataset_hash(v) for k, v in groups.items()}}
    for name, group in groups.items():
        feats = _features(tower, [s.image for s in group])
        out[name] = [Item(f, [s.caption], s.image if name != "train" else None, s.kinds, name)
                     for f, s in zip(feats, group, strict=True)]
    pairs = coco.pairs(cfg.coco)
    train_pairs, eval_pairs = [p for p in pairs if not p.held_out and train], [p for p in pairs if p.held_out]
    from PIL import Image, ImageOps

    imgs = [Image.open(p.path).convert("RGB") for p in train_pairs]
    feats = _features(tower, imgs + [ImageOps.mirror(im) for im in imgs]) if imgs else []
    out["coco_train"] = [Item(f, train_pairs[i % len(train_pairs)].captions, split="coco_train")
                         for i, f in enumerate(feats)]
    eval_imgs = [Image.open(p.path).convert("RGB") for p in eval_pairs]
    out["eval_coco"] = [Item(f, p.captions, im, split="eval_coco")
                        for f, p, im in zip(_features(tower, eval_imgs) if eval_imgs else [], eval_pairs, eval_imgs,
                                            strict=True)]
    if train_pairs:
        out["hashes"]["coco/train"] = coco.pairs_hash(train_pairs)
    if eval_pairs:
        out["hashes"]["coco/eval"] = coco.pairs_hash(eval_pairs)
    out["describe"] = {k: len(out[k]) for k in ("train", "eval_seen", "eval_novel", "coco_train", "eval_coco")} | {
        "novel_pairs": sorted(f"{c} {s}" for c, s in scenes.NOVEL), "questions": list(scenes.QUESTIONS)}
    return out


def _features(tower: Any, images: list[Any], batch: int = 32) -> torch.Tensor:
    if not images:
        return torch.zeros(0, pj.TOKENS, 0)
    return torch.cat([pj.vision_tokens(tower, images[i:i + batch]) for i in range(0, len(images), batch)])


# ------------------------------------------------------------------------------------------------ loss
class _Loss:
    """Cross-entropy of the answer given [template | image tokens | question]; batches are f(seed, step)."""

    def __init__(self, cfg: VisionConfig, teacher: Teacher, proj: pj.Projector, train_items: list[Item],
                 coco_items: list[Item], device: torch.device) -> None:
        self.cfg, self.model, self.tok, self.proj, self.device = cfg, teacher.model, teacher.tok, proj, device
        self.items, self.coco = train_items, coco_items
        self.halves = [pj.prompt_halves(self.tok, [{"role": "user", "content": q}]) for q in scenes.QUESTIONS]
        end = self.tok("<|im_end|>", add_special_tokens=False)["input_ids"] if "<|im_end|>" in self.tok.get_vocab() \
            else [self.tok.eos_token_id]
        self.end = list(end)
        self.pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else (self.tok.eos_token_id or 0)

    def _answer(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"]) + self.end

    def __call__(self, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
        n_coco = round(self.cfg.batch * self.cfg.coco_share) if self.coco else 0
        picks = [self.items[int(i)] for i in torch.randint(0, len(self.items), (self.cfg.batch - n_coco,), generator=g)]
        picks += [self.coco[int(i)] for i in torch.randint(0, len(self.coco), (n_coco,), generator=g)] if n_coco else []
        feats = torch.stack([it.feats for it in picks]).to(self.device)
        prefix = self.proj(feats)  # [B, K, D]
        emb = self.model.get_input_embeddings()
        rows, targets, spans = [], [], []
        for b, it in enumerate(picks):
            left, right = self.halves[int(torch.randint(0, len(self.halves), (1,), generator=g))]
            answer = self._answer(it.answers[int(torch.randint(0, len(it.answers), (1,), generator=g))])
            ids = torch.tensor(left + [self.pad] * prefix.shape[1] + right + answer, device=self.device)
            x = emb(ids).clone()
            k = len(left)
            x[k:k + prefix.shape[1]] = prefix[b].to(x.dtype)
            rows.append(x)
            start = len(ids) - len(answer)  # positions start-1 .. end-2 predict the answer tokens
            spans.append((start - 1, len(ids) - 1))
            targets.append(ids[start:])
        width = max(len(r) for r in rows)
        pad_vec = emb(torch.tensor([self.pad], device=self.device))[0]
        x = torch.stack([torch.cat([r, pad_vec.expand(width - len(r), -1)]) for r in rows])  # right-padded
        with autocast(self.device):
            hidden = self.model.model(inputs_embeds=x, use_cache=False).last_hidden_state  # [B, T, D]
        picked = torch.cat([hidden[b, s:e] for b, (s, e) in enumerate(spans)])
        logits = self.model.get_output_embeddings()(picked).float()
        loss = F.cross_entropy(logits, torch.cat(targets))
        return loss, {"ce": float(loss.detach())}


# ------------------------------------------------------------------------------------------------ eval
@torch.inference_mode()
def answer(teacher: Teacher, path: str, item: Item, proj: pj.Projector | None, vision_tower: Any, ocr: Any,
           cfg: VisionConfig) -> tuple[str, str]:
    """(answer, the context the LLM got) for one item on one path: projector | text | none."""
    tok, model = teacher.tok, teacher.model
    user = [{"role": "user", "content": QUESTION}]
    context = ""
    if path == "projector":
        left, right = pj.prompt_halves(tok, user)
        embeds = pj.embed_prompt(model, left, proj(item.feats[None].to(model.device))[0], right)
        context = f"{pj.TOKENS} image tokens"
    else:
        msgs = user
        if path == "text":
            msgs, context = text_prompt(item.image, vision_tower, ocr, user)
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        embeds = model.get_input_embeddings()(torch.tensor([list(ids)], device=model.device))
    params = GenParams(max_tokens=cfg.max_new_tokens, temperature=0.0, repeat_penalty=cfg.repeat_penalty)
    eos = _eos_ids(teacher)
    return "".join(pj.generate(model, tok, embeds, params, threading.Event(), eos)).strip(), context


Messages = list[dict[str, str]]


def text_prompt(image: Any, vision_tower: Any, ocr: Any, messages: Messages) -> tuple[Messages, str]:
    """The engine's text-composition prompt for one image (vision/describe.py + vision/compose.py)."""
    from nexus_engine.vision import compose
    from nexus_engine.vision.describe import describe_image
    from nexus_engine.vision.service import Described

    desc = describe_image(image, vision_tower, ocr, width=image.width, height=image.height)
    note = compose.note(1, Described("image.png", "image", desc))
    return compose.with_notes(messages, [note]), note


def _eos_ids(teacher: Teacher) -> set[int]:
    from nexus_engine.towers.llm_transformers import _eos_ids

    return _eos_ids(teacher.model, teacher.tok)


def evaluate(cfg: VisionConfig, teacher: Teacher, proj: pj.Projector, vision_tower: Any, ocr: Any,
             data: dict[str, Any], progress: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split in ("eval_seen", "eval_novel", "eval_coco"):
        items = data[split]
        if not items:
            continue
        for path in ("projector", "text", "none"):
            rows, notes, samples = [], [], []
            for it in items:
                text, context = answer(teacher, path, it, proj, vision_tower, ocr, cfg)
                rows.append(_score(text, it))
                if path == "text":  # what the notes themselves say: the most this path could pass on
                    notes.append(_score(context, it))
                if len(samples) < 4:
                    samples.append({"reference": it.answers[0], "answer": text, "context": context})
            out[f"{split}/{path}"] = {"n": len(rows), "mean": _mean(rows), "samples": samples}
            if notes:
                out[f"{split}/{path}"]["notes"] = _mean(notes)
            mean = out[f"{split}/{path}"]["mean"]
            progress(f"eval {split} {path}: {', '.join(f'{k} {v:.2f}' for k, v in mean.items())}")
    return out


def _score(text: str, it: Item) -> dict[str, float]:
    return coco.score(text, it.answers) if it.kinds is None else scenes.score(text, it.kinds)


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


def goal(ev: dict[str, Any]) -> dict[str, Any]:
    """The issue's vision goal: does the projector path name the right things more often than text composition?"""
    out: dict[str, Any] = {}
    for split, key in (("eval_seen", "objects"), ("eval_novel", "objects"), ("eval_coco", "hit")):
        p, t = ev.get(f"{split}/projector"), ev.get(f"{split}/text")
        if p and t:
            out[split] = {"metric": key, "projector": p["mean"][key], "text": t["mean"][key],
                          "text_notes": t.get("notes", {}).get(key), "none": ev[f"{split}/none"]["mean"][key],
                          "projector_better": p["mean"][key] > t["mean"][key]}
    out["met"] = all(v["projector_better"] for v in out.values() if isinstance(v, dict))
    return out

