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
class PrefixRunConfig:
    """What every projector run (vision, audio) sets alike: the frozen LLM, batching, decoding, where it writes."""

    llm: str = "smollm2-hf"
    batch: int = 8
    max_new_tokens: int = 32
    repeat_penalty: float = 1.1  # the chat tower's setting (models.toml), for every path alike
    seed: int = 0
    device: str | None = None
    threads: int = 1
    out: Path = DEFAULT_OUT
    root: Path | None = None  # adapters root (default: <data folder>/adapters)
    fresh: bool = False


@dataclass
class VisionConfig(PrefixRunConfig):
    tower: str = "efficientnet-lite0"
    ocr: str | None = "rapidocr"
    train_scenes: int = 1200
    eval_scenes: int = 40  # held-out scenes with pairs seen in training
    eval_novel: int = 24  # held-out scenes with at least one never-trained colour-shape pair
    coco: Path | None = None  # default ../shared/data/coco; the COCO part is skipped when it is absent
    coco_share: float = 0.25  # of each batch
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=200, lr=1e-3, warmup=10,
                                                                   checkpoint_every=25, log_every=5))


@dataclass
class Item:
    feats: torch.Tensor  # [TOKENS, width]
    answers: list[str]  # reference captions (scenes: exactly one)
    image: Any = None  # PIL image, eval items only (the text path describes it)
    kinds: list[scenes.Kind] | None = None  # scenes only
    split: str = ""


def _prepare(cfg: VisionConfig, teacher: Teacher | None, vision_tower: Any) -> tuple[Any, ...]:
    device = pick_device(cfg.device)
    vspec = spec_of(cfg.tower, ("image_encoder",))
    if not pj.supports(vspec):
        raise NexusError(f"tower {cfg.tower!r} ({vspec.backend}) has no projector feature reader yet",
                         "the projector reads EfficientNet feature maps (efficientnet-lite0)")
    teacher = teacher or load_teacher(cfg.llm, str(device))
    w = checked_widths(vspec, teacher)
    vision_tower = vision_tower or load_tower(vspec)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    return device, vspec, teacher, w, vision_tower


def checked_widths(tower: Any, teacher: Teacher) -> dict[str, int]:
    """pj.widths, with the LLM's width checked against its real embedding table."""
    w = pj.widths(tower, teacher.spec)
    real = teacher.model.get_input_embeddings().weight.shape[1]
    if real != w["out_width"]:
        raise NexusError(f"[towers.{teacher.spec.name}] width = {w['out_width']} but its embeddings are {real} wide",
                         "fix width in models.toml")
    return w


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
    loss_fn = PrefixLoss(cfg, teacher, proj, data["train"], data["coco_train"], device)
    log = train("projector", dict(proj.named_parameters()), loss_fn, cfg.train, checkpoints=folder / "checkpoints",
                fingerprint_=fp, resume=not cfg.fresh, progress=progress)
    secs["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ocr_tower = ocr_tower if ocr_tower is not None else (load_tower(spec_of(cfg.ocr, ("ocr",))) if cfg.ocr else None)
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
    _, _, teacher, _, vision_tower = _prepare(cfg, teacher, vision_tower)
    folder = adapters.adapter_dir(cfg.tower, "vision_projector", cfg.root)
    proj, manifest = load_projector(folder, cfg.tower, "vision_projector", teacher)
    t0 = time.perf_counter()
    data = build_data(cfg, vision_tower, progress, train=False)
    ocr_tower = ocr_tower if ocr_tower is not None else (load_tower(spec_of(cfg.ocr, ("ocr",))) if cfg.ocr else None)
    ev = evaluate(cfg, teacher, proj, vision_tower, ocr_tower, data, progress)
    sha = manifest["files"][adapters.ADAPTER_FILE]
    res = previous if previous and previous.get("adapter", {}).get("sha256") == sha else {
        "kind": "vision", "llm": teacher.info, "vision": manifest["source"], "training": manifest["training"],
        "params": sum(p.numel() for p in proj.parameters()), "adapter": {"folder": str(folder), "sha256": sha}}
    res.update(eval=ev, goal=goal(ev), evaluated={"seconds": time.perf_counter() - t0,
                                                  "hashes": {k: v for k, v in data["hashes"].items() if "eval" in k}})
    return res


def load_projector(folder: Path, tower: str, kind: str, teacher: Teacher) -> tuple[pj.Projector, dict[str, Any]]:
    """An installed projector and its manifest, refused (AdapterMismatchError, RevisionMismatchError) when it was
    trained for another tower, another kind or other LLM weights."""
    from nexus_engine.research.agid.teacher import check_teacher

    manifest = adapters.read_manifest(folder, tower=tower, kind=kind)
    check_teacher(manifest["teacher"], teacher.info, f"the projector in {folder}")
    c = manifest["config"]
    proj = pj.Projector(c["in_width"], c["latent"], c["out_width"], c["tokens"])
    proj.load_state_dict(adapters.load_tensors(folder, manifest))
    return proj.to(teacher.model.get_input_embeddings().weight.device).eval(), manifest


def load_tower(spec: Any) -> Any:
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
class PrefixLoss:
    """Cross-entropy of the answer given [template | projected tokens | question]; batches are f(seed, step).

    cfg: anything with `seed` and `batch` (and `coco_share` when coco_items are given: that share of each batch
    comes from them). Vision by default; the audio projector passes its questions, placeholder and system prompt.
    """

    def __init__(self, cfg: Any, teacher: Teacher, proj: pj.Projector, train_items: list[Item],
                 coco_items: list[Item], device: torch.device, questions: tuple[str, ...] = scenes.QUESTIONS,
                 placeholder: str = pj.IMAGE, system: str = pj.SYSTEM) -> None:
        self.cfg, self.model, self.tok, self.proj, self.device = cfg, teacher.model, teacher.tok, proj, device
        self.items, self.coco = train_items, coco_items
        self.halves = [pj.prompt_halves(self.tok, [{"role": "user", "content": q}], placeholder, system)
                       for q in questions]
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
        rows = []
        for it in picks:
            halves = self.halves[int(torch.randint(0, len(self.halves), (1,), generator=g))]
            rows.append((it.feats, halves, it.answers[int(torch.randint(0, len(it.answers), (1,), generator=g))]))
        loss = self.loss(rows)
        return loss, {"ce": float(loss.detach())}

    def loss(self, rows: list[tuple[torch.Tensor, tuple[list[int], list[int]], str]]) -> torch.Tensor:
        """Mean cross-entropy over the answer tokens of (features [K, W], prompt halves, answer) rows."""
        feats = torch.stack([f for f, _, _ in rows]).to(self.device)
        return prefix_ce(self.model, self.proj(feats), [(halves, self._answer(text)) for _, halves, text in rows],
                         self.pad)

    @torch.no_grad()
    def answer_nll(self, items: list[Item], feats: list[torch.Tensor] | None = None) -> float:
        """Mean (over items) cross-entropy of each item's first answer after the first question, given its own
        features or, with `feats`, those (a shuffled list: does the projector carry *this* input?)."""
        feats = feats if feats is not None else [it.feats for it in items]
        per_item = [float(self.loss([(f, self.halves[0], it.answers[0])])) for it, f in zip(items, feats, strict=True)]
        return sum(per_item) / max(len(per_item), 1)


def prefix_ce(model: Any, prefix: torch.Tensor, rows: list[tuple[tuple[list[int], list[int]], list[int]]],
              pad: int) -> torch.Tensor:
    """Mean cross-entropy of each row's answer ids given [left | its prefix tokens | right] (the frozen LLM).

    prefix: [B, K, D] projected tokens, one row each; rows: ((left ids, right ids), answer ids), right-padded.
    """
    device = prefix.device
    emb = model.get_input_embeddings()
    xs, targets, spans = [], [], []
    for b, ((left, right), answer) in enumerate(rows):
        ids = torch.tensor(left + [pad] * prefix.shape[1] + right + answer, device=device)
        x = emb(ids).clone()
        k = len(left)
        x[k:k + prefix.shape[1]] = prefix[b].to(x.dtype)
        xs.append(x)
        start = len(ids) - len(answer)  # positions start-1 .. end-2 predict the answer tokens
        spans.append((start - 1, len(ids) - 1))
        targets.append(ids[start:])
    width = max(len(r) for r in xs)
    pad_vec = emb(torch.tensor([pad], device=device))[0]
    x = torch.stack([torch.cat([r, pad_vec.expand(width - len(r), -1)]) for r in xs])  # right-padded
    with autocast(device):
        hidden = model.model(inputs_embeds=x, use_cache=False).last_hidden_state  # [B, T, D]
    picked = torch.cat([hidden[b, s:e] for b, (s, e) in enumerate(spans)])
    logits = model.get_output_embeddings()(picked).float()
    return F.cross_entropy(logits, torch.cat(targets))


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
        embeds = chat_embeds(teacher, msgs)
    return greedy(teacher, embeds, cfg.max_new_tokens, cfg.repeat_penalty), context


Messages = list[dict[str, str]]


def chat_embeds(teacher: Teacher, messages: Messages) -> torch.Tensor:
    """[1, T, D]: the embeddings of `messages` in the LLM's chat template, ready for an answer."""
    ids = teacher.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                          return_dict=True)["input_ids"]
    model = teacher.model
    return model.get_input_embeddings()(torch.tensor([list(ids)], device=model.device))


def greedy(teacher: Teacher, embeds: torch.Tensor, max_new_tokens: int, repeat_penalty: float) -> str:
    """One greedy answer from prompt embeddings, with the chat tower's repeat penalty (every path alike)."""
    params = GenParams(max_tokens=max_new_tokens, temperature=0.0, repeat_penalty=repeat_penalty)
    pieces = pj.generate(teacher.model, teacher.tok, embeds, params, threading.Event(), eos_ids(teacher))
    return "".join(pieces).strip()


def text_prompt(image: Any, vision_tower: Any, ocr: Any, messages: Messages) -> tuple[Messages, str]:
    """The engine's text-composition prompt for one image (vision/describe.py + vision/compose.py)."""
    from nexus_engine.vision import compose
    from nexus_engine.vision.describe import describe_image
    from nexus_engine.vision.service import Described

    desc = describe_image(image, vision_tower, ocr, width=image.width, height=image.height)
    note = compose.note(1, Described("image.png", "image", desc))
    return compose.with_notes(messages, [note]), note


def eos_ids(teacher: Teacher) -> set[int]:
    from nexus_engine.towers.llm_transformers import _eos_ids

    return _eos_ids(teacher.model, teacher.tok)


def evaluate(cfg: VisionConfig, teacher: Teacher, proj: pj.Projector, vision_tower: Any, ocr: Any,
             data: dict[str, Any], progress: Any) -> dict[str, Any]:
    return compare_paths(data, ("eval_seen", "eval_novel", "eval_coco"),
                         lambda path, it: answer(teacher, path, it, proj, vision_tower, ocr, cfg), _score, progress)


PATHS = ("projector", "text", "none")


def compare_paths(data: dict[str, Any], splits: tuple[str, ...], answer_fn: Any, score_fn: Any,
                  progress: Any) -> dict[str, Any]:
    """{"<split>/<path>": n, mean scores, 4 samples}: answer_fn(path, item) -> (answer, context the LLM got) on
    every item of every split, score_fn(text, item) -> {metric: value}. The text path's context is scored too
    (`notes`: what that path could pass on at most)."""
    out: dict[str, Any] = {}
    for split in splits:
        items = data.get(split)
        if not items:
            continue
        for path in PATHS:
            rows, notes, samples = [], [], []
            for it in items:
                text, context = answer_fn(path, it)
                rows.append(score_fn(text, it))
                if path == "text":  # what the notes themselves say: the most this path could pass on
                    notes.append(score_fn(context, it))
                if len(samples) < 4:
                    samples.append({"reference": it.answers[0], "answer": text, "context": context})
            out[f"{split}/{path}"] = {"n": len(rows), "mean": mean_scores(rows), "samples": samples}
            if notes:
                out[f"{split}/{path}"]["notes"] = mean_scores(notes)
            mean = out[f"{split}/{path}"]["mean"]
            progress(f"eval {split} {path}: {', '.join(f'{k} {v:.2f}' for k, v in mean.items())}")
    return out


def _score(text: str, it: Item) -> dict[str, float]:
    return coco.score(text, it.answers) if it.kinds is None else scenes.score(text, it.kinds)


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


GOAL_METRICS = (("eval_seen", "objects"), ("eval_novel", "objects"), ("eval_coco", "hit"))


def goal(ev: dict[str, Any], metrics: tuple[tuple[str, str], ...] = GOAL_METRICS) -> dict[str, Any]:
    """The issue's goal: does the projector path name the right things more often than text composition?"""
    out: dict[str, Any] = {}
    for split, key in metrics:
        p, t = ev.get(f"{split}/projector"), ev.get(f"{split}/text")
        if p and t:
            out[split] = {"metric": key, "projector": p["mean"][key], "text": t["mean"][key],
                          "text_notes": t.get("notes", {}).get(key), "none": ev[f"{split}/none"]["mean"][key],
                          "projector_better": p["mean"][key] > t["mean"][key]}
    out["met"] = all(v["projector_better"] for v in out.values() if isinstance(v, dict))
    return out

