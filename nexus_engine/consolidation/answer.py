"""Two towers, one answer: which path combines a vision tower with the chat LLM, and the projector path itself.

A chat turn with images, in a profile whose eyes are the starter classifier (`vision/chat.py` asks `choose`):
- **projector** when a trained projector adapter exists for the seeing tower (`<adapters>/<tower>/vision_projector`)
  and its manifest's LLM is a declared transformers tower whose weights are the revision it was trained on: both
  towers are held through the residency manager, the image's features become prefix tokens of that LLM (the
  projector is attached to the loaded LLM and lives exactly as long as it), and the LLM answers;
- **text** otherwise (no adapter, videos, another tower kind, a mismatched or damaged adapter): the existing text
  composition (labels + OCR in the prompt, vision/compose.py).
Either way the answer's stats carry `consolidation` ("projector" | "text") and, for the projector, the adapter
and the towers, so the app can show which path answered; a refused adapter's reason is in `consolidation_note`.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nexus_engine.consolidation import adapters
from nexus_engine.errors import BadInputError, NexusError
from nexus_engine.protocol import ChatRequest, ResidencyEvent

if TYPE_CHECKING:
    from nexus_engine.engine import Emit, Engine

log = logging.getLogger("nexus.consolidation")
PROJECTOR, TEXT = "projector", "text"


@dataclass
class Choice:
    path: str  # PROJECTOR | TEXT
    vision: str | None = None
    llm: str | None = None
    folder: Path | None = None
    manifest: dict[str, Any] | None = None
    note: str = ""  # why the projector was not used, when an adapter was there


_REVISIONS: dict[tuple[str, float, int], str] = {}  # (file, mtime, size) -> revision: hashing a GGUF costs ~0.1 s


def _revision(spec: Any) -> str:
    from nexus_engine import weights
    from nexus_engine.research.agid.teacher import revision_of

    try:
        path = weights.resolve(spec)
        st = path.stat()
        key = (str(path), st.st_mtime, st.st_size)
    except (OSError, NexusError):
        return revision_of(spec)
    if key not in _REVISIONS:
        _REVISIONS[key] = revision_of(spec)
    return _REVISIONS[key]


def choose(engine: Engine, media: list[tuple[str, str]], root: Path | None = None) -> Choice:
    """Projector or text for these attachments (see module doc). Never raises: a bad adapter means text."""
    from nexus_engine.consolidation import projector as pj
    from nexus_engine.vision import service

    seeing = service.towers(engine).classifier
    if seeing is None or not media:
        return Choice(TEXT)
    folder = adapters.adapter_dir(seeing, "vision_projector", root)
    if not (folder / adapters.MANIFEST).is_file():
        return Choice(TEXT)
    try:
        manifest = adapters.read_manifest(folder, tower=seeing, kind="vision_projector")
        llm = manifest["teacher"]["tower"]
        spec = engine.config.towers.get(llm)
        if spec is None or spec.kind != "llm" or spec.backend != "transformers":
            raise NexusError(f"the projector feeds tower {llm!r}, which is not a declared transformers llm")
        if not pj.supports(engine.config.towers[seeing]):
            raise NexusError(f"no projector feature reader for tower {seeing!r}")
        if any(kind != "image" for _, kind in media):
            return Choice(TEXT, note="videos are described as text (the projector was trained on still images)")
        if _revision(spec) != manifest["teacher"]["revision"]:
            raise NexusError(f"the projector was trained on {llm} revision {manifest['teacher']['revision']}, "
                             f"but its weights are now {_revision(spec)}")
        source = manifest.get("source", {})
        if source.get("revision") and _revision(engine.config.towers[seeing]) != source["revision"]:
            raise NexusError(f"the projector was trained on other {seeing} weights")
    except NexusError as e:
        log.warning("projector adapter in %s not used: %s", folder, e.message)
        return Choice(TEXT, note=f"projector adapter not used: {e.message}")
    return Choice(PROJECTOR, seeing, llm, folder, manifest)


# the projector attached to each loaded LLM module: it is dropped with the module when the tower unloads
_ATTACHED: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_ATTACH_LOCK = threading.Lock()


def attached_projector(llm_module: Any, folder: Path, manifest: dict[str, Any]) -> Any:
    """The projector for this adapter on the LLM's device, loaded once per loaded LLM (checked by sha256)."""
    from nexus_engine.consolidation import projector as pj
    from nexus_engine.research.agid.errors import AdapterMismatchError

    sha = manifest["files"][adapters.ADAPTER_FILE]
    with _ATTACH_LOCK:
        slot = _ATTACHED.setdefault(llm_module, {})
        if sha not in slot:
            cfg = manifest["config"]
            width = llm_module.get_input_embeddings().weight.shape[1]
            if cfg["out_width"] != width:
                raise AdapterMismatchError(f"the projector in {folder} makes {cfg['out_width']}-wide tokens; the "
                                           f"LLM's embeddings are {width} wide", "retrain it for this LLM")
            proj = pj.Projector(cfg["in_width"], cfg["latent"], cfg["out_width"], cfg["tokens"])
            proj.load_state_dict(adapters.load_tensors(folder, manifest))
            weight = llm_module.get_input_embeddings().weight
            slot.clear()
            slot[sha] = proj.to(weight.device).eval()
        return slot[sha]


def answer_with_projector(engine: Engine, req: ChatRequest, emit: Emit, cancel: threading.Event,
                          choice: Choice) -> dict[str, Any]:
    import torch

    from nexus_engine.consolidation import projector as pj
    from nexus_engine.engine import fit_context, sampling, stream_answer
    from nexus_engine.towers.base import GenParams
    from nexus_engine.towers.chat_format import StopMatcher
    from nexus_engine.vision import chat as vision_chat
    from nexus_engine.vision import service
    from nexus_engine.vision.media import open_image

    assert choice.vision and choice.llm and choice.folder and choice.manifest
    files = vision_chat._media(req)
    try:  # an unreadable file: the text path reports it in its notes and still answers
        images = [open_image(p).image for p, _ in files]
    except BadInputError as e:
        return vision_chat.answer_with_perception(engine, req, emit, cancel, note=f"projector not used: {e.message}")
    t0 = time.perf_counter()
    with engine.residency.acquire((choice.vision, choice.llm), emit=emit, request_id=req.id) as lease:
        emit(ResidencyEvent(id=req.id, snapshot=engine.residency.snapshot()))
        vision, llm = lease.tower(choice.vision), lease.tower(choice.llm)
        model, tok = llm.torch_module(), llm.tokenizer
        proj = attached_projector(model, choice.folder, choice.manifest)
        n_image = len(images) * int(choice.manifest["config"]["tokens"])
        messages, dropped, _ = fit_context(llm, req.messages, req.max_tokens + n_image)  # oldest turns go first
        with torch.inference_mode():
            feats = pj.vision_tokens(vision, images)  # [n, K, W]
            prefix = proj(feats.to(model.get_input_embeddings().weight.device)).reshape(-1, proj.shape["out_width"])
            left, right = pj.prompt_halves(tok, messages)
            embeds = pj.embed_prompt(model, left, prefix, right)
        params = GenParams(max_tokens=req.max_tokens, seed=req.seed, **sampling(llm, req))
        stops = StopMatcher(req.stop)
        from nexus_engine.towers.llm_transformers import _eos_ids

        pieces = pj.generate(model, tok, embeds, params, cancel, _eos_ids(model, tok))
        n, t_first, finish = stream_answer(pieces, req, stops, emit, cancel)
        load = lease.info[choice.llm]
    t_end = time.perf_counter()
    if service.towers(engine).seeing:  # the media search index still gets the files (as the VLM path does)
        service.describe_files(engine, files, emit, cancel, req.id)
    return {"tower": choice.llm, "towers": [choice.vision, choice.llm], "consolidation": PROJECTOR,
            "adapter": str(choice.folder), "adapter_sha256": choice.manifest["files"][adapters.ADAPTER_FILE][:16],
            "image_tokens": int(prefix.shape[0]), "finish": finish, "tokens": n, "prompt_tokens": int(embeds.shape[1]),
            "dropped_messages": dropped,
            "ttft_ms": ((t_first or t_end) - t0) * 1000, "total_ms": (t_end - t0) * 1000,
            "load_ms": load["load_ms"], "load_origin": load["origin"], "images": len(images)}
