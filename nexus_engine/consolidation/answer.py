"""Two towers, one answer: which path combines a vision or ASR tower with the chat LLM, and the projector path.

A chat turn with images (the profile's eyes are the starter classifier: `vision/chat.py` asks `choose`) or with
audio only (`voice/attached.py` asks `choose_audio`):
- **projector** when a trained projector adapter exists for the feature tower (`<adapters>/<tower>/vision_projector`
  or `audio_projector`) and its manifest's LLM is a declared transformers tower whose weights are the revision it
  was trained on: both towers are held through the residency manager, the file's features become prefix tokens of
  that LLM (the projector is attached to the loaded LLM and lives exactly as long as it), and the LLM answers;
- **text** otherwise (no adapter, videos, audio longer than the projector's 30 s window, another tower kind, a
  mismatched or damaged adapter): the existing text composition (labels + OCR, or the transcript, in the prompt).
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
MAX_AUDIO_S = 30.0  # the Whisper encoder's window: the audio projector never saw more


@dataclass
class Choice:
    path: str  # PROJECTOR | TEXT
    tower: str | None = None  # the feature tower: vision (image) or ASR (audio)
    llm: str | None = None
    folder: Path | None = None
    manifest: dict[str, Any] | None = None
    note: str = ""  # why the projector was not used, when an adapter was there
    modality: str = "image"  # image | audio


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
    """Projector or text for these images/videos (see module doc). Never raises: a bad adapter means text."""
    from nexus_engine.vision import service

    seeing = service.towers(engine).classifier
    if seeing is None or not media:
        return Choice(TEXT)
    videos = any(kind != "image" for _, kind in media)
    return _choice(engine, seeing, "image", root,
                   "videos are described as text (the projector was trained on still images)" if videos else "")


def choose_audio(engine: Engine, files: list[str], root: Path | None = None) -> Choice:
    """Projector or text (the transcript) for these audio files: the projector only takes short utterances."""
    from nexus_engine.voice.audio_files import probe_duration

    try:
        hearing = engine.tower_name(None, "hearing")
    except NexusError:
        return Choice(TEXT)
    if not files or not (adapters.adapter_dir(hearing, "audio_projector", root) / adapters.MANIFEST).is_file():
        return Choice(TEXT)
    longest = max(probe_duration(f) for f in files)  # 0.0 when unreadable: the projector path then reads the file
    # and falls back to the transcript with the reason
    long_note = (f"audio longer than {MAX_AUDIO_S:.0f} s is transcribed (the projector was trained on short "
                 "utterances)") if longest > MAX_AUDIO_S else ""
    return _choice(engine, hearing, "audio", root, long_note)


def _choice(engine: Engine, tower: str, modality: str, root: Path | None, refuse: str) -> Choice:
    """The adapter for `tower`, checked against the declared towers and their weights; `refuse`: a reason this
    turn takes the text path even with a good adapter."""
    from nexus_engine.consolidation import projector as pj

    kind = f"{'vision' if modality == 'image' else 'audio'}_projector"
    folder = adapters.adapter_dir(tower, kind, root)
    if not (folder / adapters.MANIFEST).is_file():
        return Choice(TEXT)
    try:
        manifest = adapters.read_manifest(folder, tower=tower, kind=kind)
        llm = manifest["teacher"]["tower"]
        spec = engine.config.towers.get(llm)
        if spec is None or spec.kind != "llm" or spec.backend != "transformers":
            raise NexusError(f"the projector feeds tower {llm!r}, which is not a declared transformers llm")
        if not (pj.supports if modality == "image" else pj.supports_audio)(engine.config.towers[tower]):
            raise NexusError(f"no projector feature reader for tower {tower!r}")
        if refuse:
            return Choice(TEXT, note=refuse)
        if _revision(spec) != manifest["teacher"]["revision"]:
            raise NexusError(f"the projector was trained on {llm} revision {manifest['teacher']['revision']}, "
                             f"but its weights are now {_revision(spec)}")
        source = manifest.get("source", {})
        feature_spec = engine.config.towers[tower]
        got = adapters.asr_revision(feature_spec) if modality == "audio" else _revision(feature_spec)
        if source.get("revision") and got != source["revision"]:
            raise NexusError(f"the projector was trained on other {tower} weights")
    except NexusError as e:
        log.warning("projector adapter in %s not used: %s", folder, e.message)
        return Choice(TEXT, note=f"projector adapter not used: {e.message}")
    return Choice(PROJECTOR, tower, llm, folder, manifest, modality=modality)


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
    from nexus_engine.towers.llm_transformers import _eos_ids

    assert choice.tower and choice.llm and choice.folder and choice.manifest
    audio = choice.modality == "audio"
    try:  # an unreadable file: the text path reports it in its notes and still answers
        files, inputs = _read_inputs(req, audio)
    except BadInputError as e:
        return _text_path(engine, req, emit, cancel, audio, f"projector not used: {e.message}")
    cfg = choice.manifest["config"]
    t0 = time.perf_counter()
    with engine.residency.acquire((choice.tower, choice.llm), emit=emit, request_id=req.id) as lease:
        emit(ResidencyEvent(id=req.id, snapshot=engine.residency.snapshot()))
        feature_tower, llm = lease.tower(choice.tower), lease.tower(choice.llm)
        model, tok = llm.torch_module(), llm.tokenizer
        proj = attached_projector(model, choice.folder, choice.manifest)
        n_prefix = len(inputs) * int(cfg["tokens"])
        messages, dropped, _ = fit_context(llm, req.messages, req.max_tokens + n_prefix)  # oldest turns go first
        with torch.inference_mode():
            if audio:
                feats = torch.stack([pj.audio_tokens(feature_tower, x) for x in inputs])  # [n, K, W]
                place, system = cfg.get("placeholder", pj.AUDIO), cfg.get("system", pj.SYSTEM_AUDIO)
            else:
                feats = pj.vision_tokens(feature_tower, inputs)
                place, system = pj.IMAGE, pj.SYSTEM
            prefix = proj(feats.to(model.get_input_embeddings().weight.device)).reshape(-1, proj.shape["out_width"])
            left, right = pj.prompt_halves(tok, messages, place, system)
            embeds = pj.embed_prompt(model, left, prefix, right)
        params = GenParams(max_tokens=req.max_tokens, seed=req.seed, **sampling(llm, req))
        stops = StopMatcher(req.stop)
        pieces = pj.generate(model, tok, embeds, params, cancel, _eos_ids(model, tok))
        n, t_first, finish = stream_answer(pieces, req, stops, emit, cancel)
        load = lease.info[choice.llm]
    t_end = time.perf_counter()
    if not audio:
        from nexus_engine.vision import service

        if service.towers(engine).seeing:  # the media search index still gets the files (as the VLM path does)
            service.describe_files(engine, files, emit, cancel, req.id)
    what = {"audio_tokens": int(prefix.shape[0]), "audio_files": len(inputs)} if audio else \
        {"image_tokens": int(prefix.shape[0]), "images": len(inputs)}
    return {"tower": choice.llm, "towers": [choice.tower, choice.llm], "consolidation": PROJECTOR,
            "consolidation_modality": choice.modality, "adapter": str(choice.folder),
            "adapter_sha256": choice.manifest["files"][adapters.ADAPTER_FILE][:16], **what, "finish": finish,
            "tokens": n, "prompt_tokens": int(embeds.shape[1]), "dropped_messages": dropped,
            "ttft_ms": ((t_first or t_end) - t0) * 1000, "total_ms": (t_end - t0) * 1000,
            "load_ms": load["load_ms"], "load_origin": load["origin"]}


def _read_inputs(req: ChatRequest, audio: bool) -> tuple[list[Any], list[Any]]:
    """(files, decoded inputs): 16 kHz mono float audio, or PIL images; BadInputError names a file that fails."""
    if audio:
        from nexus_engine.voice import attached
        from nexus_engine.voice.audio_files import decode_file
        from nexus_engine.voice.audio_io import mono_float

        paths = attached.audio_files(req)
        out = [mono_float(decode_file(p)) for p in paths]
        for p, x in zip(paths, out, strict=True):
            if x.size == 0:
                raise BadInputError(f"{Path(p).name} holds no audio")
        return paths, out
    from nexus_engine.vision import chat as vision_chat
    from nexus_engine.vision.media import open_image

    files = vision_chat._media(req)
    return files, [open_image(p).image for p, _ in files]


def _text_path(engine: Engine, req: ChatRequest, emit: Emit, cancel: threading.Event, audio: bool,
               note: str) -> dict[str, Any]:
    if audio:
        from nexus_engine.voice import attached

        return attached.answer_with_hearing(engine, req, emit, cancel, note=note)
    from nexus_engine.vision import chat as vision_chat

    return vision_chat.answer_with_perception(engine, req, emit, cancel, note=note)
