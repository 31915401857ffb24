"""Vision requests inside the engine: which towers see, describing files, indexing them, searching the index.

The profile decides the path. Starter: the `vision`/`perception` roles hold EfficientNet-Lite0 (labels) and
RapidOCR (text), and MiniLM (the router's embedder) embeds descriptions for search. Seed: a SigLIP2
image_encoder stands in for the classifier (zero-shot over the same ImageNet words, see seed.py) and embeds
images for search in its own image-text space; a VideoMAE video_encoder adds clip features per video segment.
A VLM in the vision role answers questions itself (vision/chat.py); this module still describes and indexes.

Towers are held through the residency manager like any other job, so nothing here loads behind its back.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nexus_engine.errors import BadInputError, ModelMissingError
from nexus_engine.protocol import DescribeRequest, Progress, SearchRequest, TokenChunk
from nexus_engine.vision import labels
from nexus_engine.vision.describe import ImageDescription, describe_image
from nexus_engine.vision.index import MediaIndex
from nexus_engine.vision.media import kind_of, open_image
from nexus_engine.vision.video import VideoDescription, describe_video, sample_frames

if TYPE_CHECKING:
    from nexus_engine.engine import Emit, Engine

log = logging.getLogger("nexus.vision")
HOWTO = ("the starter profile maps vision to efficientnet-lite0 and perception to efficientnet-lite0 + rapidocr "
         "in models.toml; check `nexus towers` and `nexus doctor`")


@dataclass
class Towers:
    """The towers that give this profile its eyes (names; None where the profile has none)."""

    vlm: str | None = None
    classifier: str | None = None  # EfficientNet-Lite0 (starter)
    ocr: str | None = None
    siglip: str | None = None  # SigLIP2 image-text encoder (seed)
    videomae: str | None = None
    embedder: str | None = None  # MiniLM, for the starter index

    @property
    def seeing(self) -> str | None:
        return self.classifier or self.siglip


def towers(engine: Engine) -> Towers:
    cfg, prof = engine.config, engine.profile
    specs = cfg.towers_for("vision", prof) + cfg.towers_for("perception", prof)
    found = Towers()
    for s in specs:
        if s.kind == "vlm" and found.vlm is None:
            found.vlm = s.name
        elif s.kind == "image_encoder" and s.backend == "efficientnet" and found.classifier is None:
            found.classifier = s.name
        elif s.kind == "image_encoder" and s.backend == "transformers" and found.siglip is None:
            found.siglip = s.name
        elif s.kind == "ocr" and found.ocr is None:
            found.ocr = s.name
        elif s.kind == "video_encoder" and found.videomae is None:
            found.videomae = s.name
    embedders = [t for t in cfg.towers.values() if t.kind == "embedder"]
    found.embedder = next((t.name for t in embedders if t.name == "minilm-router"), None) or (
        embedders[0].name if embedders else None)
    return found


@dataclass
class Described:
    path: str
    kind: str  # image | video
    description: ImageDescription | VideoDescription | None
    error: str = ""

    def sentence(self) -> str:
        return self.description.sentence() if self.description is not None else f"could not be read: {self.error}"


# -------------------------------------------------------------------------------------------- describing
def describe_files(engine: Engine, files: list[tuple[str, str]], emit: Emit, cancel: threading.Event,
                   request_id: str, *, strict: bool = False, index: bool = True) -> list[Described]:
    """Describe each (path, kind). strict: a bad file raises; else it is reported in its Described."""
    t = towers(engine)
    if t.seeing is None:
        raise ModelMissingError(f"no image classifier or image encoder serves vision/perception in profile "
                                f"{engine.profile!r}", HOWTO)
    names = [n for n in (t.seeing, t.ocr, t.videomae) if n]
    out: list[Described] = []
    with engine.residency.acquire(names, emit=emit, request_id=request_id) as lease:
        classifier = lease.tower(t.classifier) if t.classifier else _siglip_classifier(lease.tower(t.siglip))
        ocr = lease.tower(t.ocr) if t.ocr else None
        clip = lease.tower(t.videomae) if t.videomae else None
        for i, (path, kind) in enumerate(files):
            if cancel.is_set():
                break
            emit(Progress(id=request_id, step=i, total=len(files), message=f"describing {kind} {i + 1}/{len(files)}"))
            try:
                desc = _describe_one(path, kind, classifier, ocr, clip, emit, request_id, cancel)
            except BadInputError as e:
                if strict:
                    raise
                out.append(Described(path, kind, None, e.message))
                continue
            out.append(Described(path, kind, desc))
        emit(Progress(id=request_id, step=len(files), total=len(files), message="described"))
        if index and t.siglip and not t.classifier:  # seed: the encoder is already held: embed the images now
            _index_siglip(engine, out, lease.tower(t.siglip))
    if index and t.classifier:
        _index_starter(engine, t, out, emit, request_id)
    return out


def index_described(engine: Engine, described: list[Described], emit: Emit, request_id: str) -> None:
    """Add already-described files to the search index (the chat path does this after answering)."""
    t = towers(engine)
    if t.classifier:
        _index_starter(engine, t, described, emit, request_id)
    elif t.siglip and any(d.description is not None for d in described):
        with engine.residency.acquire((t.siglip,), emit=emit, request_id=request_id) as lease:
            _index_siglip(engine, described, lease.tower(t.siglip))


def _describe_one(path: str, kind: str, classifier: Any, ocr: Any, clip: Any, emit: Emit, request_id: str,
                  cancel: threading.Event) -> ImageDescription | VideoDescription:
    kind = kind if kind in ("image", "video") else kind_of(path)
    if kind == "image":
        img = open_image(path)
        return describe_image(img.image, classifier, ocr, width=img.width, height=img.height, notes=img.notes,
                              extra_frames=img.extra)
    if kind != "video":
        raise BadInputError(f"{Path(path).name}: not an image or a video", "attach PNG, JPEG, WebP, GIF, MP4, …")

    def progress(done: float, total: float, message: str) -> None:
        emit(Progress(id=request_id, step=int(done), total=int(total), message=message))

    frames, info = sample_frames(path, on_progress=progress, should_stop=cancel.is_set)
    return describe_video(frames, info, classifier, ocr, clip, on_progress=progress)


def _siglip_classifier(encoder: Any) -> Any:
    from nexus_engine.vision.seed import SiglipClassifier

    return SiglipClassifier(encoder)


# -------------------------------------------------------------------------------------------- indexing
def index_text(d: Described) -> str:
    """What the starter index embeds: everyday words, their classes and categories, and the OCR text."""
    desc = d.description
    assert desc is not None
    words = list(dict.fromkeys(desc.words()))
    cats = list(dict.fromkeys(c for w in words if (c := labels.category(w))))
    lines = desc.text if isinstance(desc, ImageDescription) else [x for s in desc.segments for x in s.text]
    return ". ".join(p for p in (", ".join(words), ", ".join(cats), " ".join(lines)) if p)


def _index_starter(engine: Engine, t: Towers, described: list[Described], emit: Emit, request_id: str) -> None:
    good = [d for d in described if d.description is not None]
    if not good or t.embedder is None:
        return
    try:
        texts = [index_text(d) for d in good]
        with engine.residency.acquire((t.embedder,), emit=emit, request_id=request_id) as lease:
            vecs = lease.tower(t.embedder).embed(texts)
        with MediaIndex() as idx:
            for d, text, vec in zip(good, texts, vecs, strict=True):
                spaces = {f"text:{t.embedder}": vec}
                if d.description.features is not None:
                    spaces[f"image:{t.classifier}"] = d.description.features
                idx.put(d.path, d.kind, d.sentence(), text, spaces)
    except Exception:  # the index is a convenience: never fail the answer because of it
        log.exception("indexing %d files failed", len(good))


def _index_siglip(engine: Engine, described: list[Described], encoder: Any) -> None:
    try:
        with MediaIndex() as idx:
            for d in described:
                if d.description is None:
                    continue
                vec = d.description.features
                idx.put(d.path, d.kind, d.sentence(), index_text(d), {f"siglip:{encoder.spec.name}": vec})
    except Exception:
        log.exception("indexing failed")


# ---------------------------------------------------------------------------------------------- requests
def describe(engine: Engine, req: DescribeRequest, emit: Emit, cancel: threading.Event) -> dict[str, Any]:
    """DescribeRequest: the description (starter), or the chat/VLM answer to `question` about the file."""
    kind = kind_of(req.path)
    if kind not in ("image", "video"):
        raise BadInputError(f"{Path(req.path).name}: not an image or a video", "give a PNG, JPEG, WebP, GIF or MP4…")
    t = towers(engine)
    question = req.question.strip() or ("Describe this image." if t.vlm and not req.question.strip() else "")
    if question:
        from nexus_engine.protocol import ChatRequest

        chat = ChatRequest(id=req.id, role="vision" if t.vlm else "reasoning", max_tokens=req.max_tokens,
                           messages=[{"role": "user", "content": question}],
                           attachments=[{"path": str(Path(req.path).resolve()), "kind": kind}])
        stats = engine.chat(chat, emit, cancel)
        return {**stats, "question": question}
    d = describe_files(engine, [(req.path, kind)], emit, cancel, req.id, strict=True, index=req.index)[0]
    assert d.description is not None
    emit(TokenChunk(id=req.id, text=d.sentence()))
    return {"finish": "done", "kind": kind, "tower": t.seeing, "description": d.description.to_dict()}


def search(engine: Engine, req: SearchRequest, emit: Emit, cancel: threading.Event) -> dict[str, Any]:
    """SearchRequest: index what is missing, then rank the index by the query text (or the `like` image)."""
    if not req.query.strip() and not req.like:
        raise BadInputError("the search is empty", "type what you are looking for")
    if not 1 <= req.limit <= 1000:
        raise BadInputError(f"limit must be 1 to 1000, got {req.limit}")
    t = towers(engine)
    space = f"siglip:{t.siglip}" if t.siglip else f"text:{t.embedder}"
    if req.like:
        space = f"siglip:{t.siglip}" if t.siglip else f"image:{t.classifier}"
    missing: list[tuple[str, str]] = []
    with MediaIndex() as idx:
        for p in dict.fromkeys(req.paths):
            if kind_of(p) in ("image", "video") and Path(p).is_file() and not idx.fresh(p, space):
                missing.append((p, kind_of(p)))
    described = describe_files(engine, missing, emit, cancel, req.id) if missing else []
    skipped = [{"path": d.path, "error": d.error} for d in described if d.description is None]
    query = _query_vector(engine, t, req, emit)
    with MediaIndex() as idx:
        hits = idx.search(space, query, req.limit, req.kind)
        total = idx.count(space)
    return {"finish": "done", "space": space, "indexed_now": len(described) - len(skipped), "skipped": skipped,
            "index_size": total, "results": [h.to_dict() for h in hits]}


def _query_vector(engine: Engine, t: Towers, req: SearchRequest, emit: Emit) -> Any:
    if req.like:
        d = describe_files(engine, [(req.like, kind_of(req.like))], emit, threading.Event(), req.id, strict=True,
                           index=False)[0]
        return d.description.features if d.description is not None else None
    name = t.siglip or t.embedder
    if name is None:
        raise ModelMissingError("no text embedder is declared, so text cannot be matched to images",
                                'declare [towers.minilm-router] (kind = "embedder") as the shipped models.toml does')
    with engine.residency.acquire((name,), emit=emit, request_id=req.id) as lease:
        tower = lease.tower(name)
        if t.siglip:
            return tower.embed_texts([req.query]).numpy()[0]
        return tower.embed([req.query])[0]
