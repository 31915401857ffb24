"""Images, videos and drawing inside a chat turn (called by Engine.chat before the chat model runs).

- Attachments + a VLM in the vision role (seed): the VLM answers the question about them directly.
- Attachments + perception towers (starter): describe first (Progress "describing image 1/2"), put the notes
  in front of the question (compose.py), then let the chat model answer; Done carries the descriptions.
- "draw …" (explicit, conservative match) or role="imagination": render through generation.generate with
  step progress and cancel and no timeout, then answer with the image as Markdown,
  `![model · seed S · N steps](path)`, which the app shows inline with that caption.

Every attached image/video is also added to the media search index on the way (service.describe_files).
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nexus_engine import generation
from nexus_engine.protocol import ChatRequest, GenerateRequest, TokenChunk
from nexus_engine.towers.base import GenParams
from nexus_engine.vision import compose, service
from nexus_engine.vision.media import kind_of, open_image
from nexus_engine.vision.video import sample_frames

if TYPE_CHECKING:
    from nexus_engine.engine import Emit, Engine

Handler = Callable[["Engine", ChatRequest, "Emit", threading.Event], dict[str, Any]]
VLM_FRAMES = 8  # frames of a video handed to a VLM

# "draw a fox", "can you paint me a lighthouse at dusk", "generate an image of a red cube"
_DRAW = re.compile(r"^\s*(?:please[,\s]+)?(?:(?:can|could|would|will) you\s+)?(?:please\s+)?"
                   r"(?:draw|paint|sketch|illustrate)\s+(?:me\s+|us\s+)?(?P<what>.+)$", re.I | re.S)
_MAKE = re.compile(r"^\s*(?:please[,\s]+)?(?:(?:can|could|would|will) you\s+)?(?:please\s+)?"
                   r"(?:generate|create|make|produce)\s+(?:me\s+|us\s+)?(?:an?\s+)?"
                   r"(?:image|picture|drawing|painting|illustration|photo|render)\s+(?:of\s+)?(?P<what>.+)$",
                   re.I | re.S)
# "draw a conclusion", "draw up a plan", "paint over it": the verb, not a picture
_NOT_ART = re.compile(r"^(?:an?\s+|the\s+|some\s+)?(?:conclusions?|comparisons?|distinctions?|parallels?|lines?\b|"
                      r"attention|inspiration|breath|blood|lots|straws?|cards?|water|up\b|out\b|on\b|from\b|over\b|"
                      r"near\b|closer|back\b|away\b|in\b|upon\b|a blank|the curtains)", re.I)


def imagine_prompt(text: str) -> str | None:
    """The picture asked for, when `text` plainly asks for one; None otherwise (then the chat model answers)."""
    m = _DRAW.match(text) or _MAKE.match(text)
    if m is None:
        return None
    what = m.group("what").strip().rstrip(".!?").strip()
    if not what or _NOT_ART.match(what):
        return None
    return what


def route(engine: Engine, req: ChatRequest) -> Handler | None:
    """Which vision handler takes this chat turn; None: the plain chat model does."""
    text = _last_user(req.messages)
    media = _media(req)
    if req.role == "imagination" or (not media and imagine_prompt(text) is not None):
        return imagine
    if not media:
        return None
    if service.towers(engine).vlm:
        return answer_with_vlm
    from nexus_engine.consolidation import answer as consolidation  # a trained projector, when there is one

    choice = consolidation.choose(engine, media)
    if choice.path == consolidation.PROJECTOR:
        return functools.partial(consolidation.answer_with_projector, choice=choice)
    return functools.partial(answer_with_perception, note=choice.note) if choice.note else answer_with_perception


# ---------------------------------------------------------------------------------------------- handlers
def answer_with_perception(engine: Engine, req: ChatRequest, emit: Emit, cancel: threading.Event,
                           note: str = "") -> dict[str, Any]:
    files = _media(req)
    t0 = time.perf_counter()
    names = {str(a.get("path", "")): a.get("name") for a in req.attachments}  # the user's file names
    if service.towers(engine).seeing is None:
        notes = [compose.unseen_note(i + 1, p, k, names.get(p)) for i, (p, k) in enumerate(files)]
        described = []
    else:
        described = service.describe_files(engine, files, emit, cancel, req.id, index=False)
        notes = [compose.note(i + 1, d, names.get(d.path)) for i, d in enumerate(described)]
    perception_ms = (time.perf_counter() - t0) * 1000
    stats = engine.chat(dataclasses.replace(req, messages=compose.with_notes(req.messages, notes), attachments=[],
                                            role="reasoning" if req.role == "vision" else req.role), emit, cancel)
    service.index_described(engine, described, emit, req.id)  # after the answer: it need not wait for this
    # consolidation: which path combined the towers (consolidation/answer.py); the app shows it under the answer
    return {**stats, "perception": [d.sentence() for d in described], "perception_ms": round(perception_ms, 1),
            "consolidation": "text", **({"consolidation_note": note} if note else {})}


def answer_with_vlm(engine: Engine, req: ChatRequest, emit: Emit, cancel: threading.Event) -> dict[str, Any]:
    from nexus_engine.engine import sampling

    name = service.towers(engine).vlm
    assert name is not None
    images: list[Any] = []
    for path, kind in _media(req):
        if kind == "image":
            images.append(open_image(path).image)
        else:
            frames, _ = sample_frames(path, max_frames=VLM_FRAMES, should_stop=cancel.is_set)
            images.extend(f.image for f in frames)
    question = _last_user(req.messages) or "Describe this."
    t0 = time.perf_counter()
    n, t_first = 0, None
    with engine.residency.acquire((name,), emit=emit, request_id=req.id) as lease:
        tower = lease.tower(name)
        params = GenParams(max_tokens=req.max_tokens, seed=req.seed, **sampling(tower, req))
        for piece in tower.ask(images, question, params, cancel):
            t_first = t_first or time.perf_counter()
            n += 1
            emit(TokenChunk(id=req.id, text=piece))
        load = lease.info[name]
    t_end = time.perf_counter()
    if service.towers(engine).seeing:  # index the files too (the VLM does not embed them)
        service.describe_files(engine, _media(req), emit, cancel, req.id)
    return {"tower": name, "finish": "cancelled" if cancel.is_set() else "eos", "tokens": n,
            "ttft_ms": ((t_first or t_end) - t0) * 1000, "total_ms": (t_end - t0) * 1000,
            "load_ms": load["load_ms"], "load_origin": load["origin"], "images": len(images)}


def imagine(engine: Engine, req: ChatRequest, emit: Emit, cancel: threading.Event) -> dict[str, Any]:
    """Render the asked-for picture; the answer is the image with its caption (model, seed, steps)."""
    text = _last_user(req.messages)
    prompt = imagine_prompt(text) or text.strip()
    try:
        spec = engine.config.towers.get(engine.tower_name(None, "imagination"))
    except Exception:  # generation.generate raises the clear "no tower, here is how to add one" error
        spec = None
    opts = spec.options if spec is not None else {}
    seed = req.seed if req.seed is not None else random.randrange(2**31)
    gen = GenerateRequest(id=req.id, prompt=prompt, seed=seed, steps=int(opts.get("steps", 28)),
                          width=int(opts.get("width", 512)), height=int(opts.get("height", 512)))
    stats = generation.generate(engine, gen, emit, cancel)
    if stats.get("finish") != "done":
        return stats
    caption = caption_of(stats["tower"], seed, gen.steps)
    emit(TokenChunk(id=req.id, text=f"![{caption}]({stats['path']})"))
    return {**stats, "caption": caption, "prompt": prompt}


def caption_of(tower: str, seed: int | None, steps: int) -> str:
    return f"{tower} · seed {seed} · {steps} steps"


# ---------------------------------------------------------------------------------------------- helpers
def _last_user(messages: list[dict[str, str]]) -> str:
    return next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")


def _media(req: ChatRequest) -> list[tuple[str, str]]:
    out = []
    for a in req.attachments:
        path = str(a.get("path", ""))
        kind = a.get("kind") if a.get("kind") in ("image", "video") else kind_of(path)
        if kind in ("image", "video"):
            out.append((path, str(kind)))
    return out

