"""Train the audio projector against the frozen chat LLM, and compare the three ways the LLM can answer about a
voice message: projector prefix tokens (Whisper encoder states), the text composition (the ASR transcript in the
prompt, what the voice loop does today), and no audio at all.

Data, made offline: scene-like sentences with exact content ("Please draw two red circles and a blue square."),
their objects drawn as scenes.py draws a scene's (so the colour-shape pairs in `scenes.NOVEL` are only ever said in
held-out utterances), spoken by the starter Piper voice and heard by the starter Whisper base encoder. The pooled
encoder states, the audio and the held-out transcripts are cached under `<cache>/agid/<asr tower>/audio/`.
Loss: cross-entropy of "The user mentioned …" given [chat template | projected audio tokens | question], answer
tokens only (vision.PrefixLoss); the LLM is frozen. Eval: held-out utterances (seen pairs, novel pairs), one greedy
answer per path scored by what it names (scenes.score), and the answer's likelihood given its own audio vs another
utterance's.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nexus_engine import paths
from nexus_engine.consolidation import adapters
from nexus_engine.consolidation import projector as pj
from nexus_engine.errors import NexusError
from nexus_engine.research.agid import scenes, vision
from nexus_engine.research.agid.teacher import Teacher, load_teacher, pick_device, spec_of
from nexus_engine.research.agid.text import say
from nexus_engine.research.agid.trainer import TrainConfig, clear_checkpoints, fingerprint, train
from nexus_engine.research.niwt.lab import jsonable
from nexus_engine.voice import attached

RATE = 16000  # what the Whisper encoder reads (voice.tts.Speaker resamples Piper's 22 kHz to it)
CARRIERS = ("Please draw {}.", "I would like {}.", "There are {} on the table.", "Can you show me {}?",
            "My picture has {}.", "I saw {} this morning.")
QUESTIONS = ("Which shapes and colours did the user mention?", "What did the user say?",
             "What shapes and colours were mentioned?", "What did you hear?", "Which objects did the user talk about?")
QUESTION = QUESTIONS[0]  # the evaluation question
# the text path: the transcript as a report in the system message, the shape SmolLM2-135M follows best for images
# (vision/compose.py); the voice loop sends a transcript as the user's own turn, which leaves no room for a question
REPORT = attached.ONE  # the engine's words for one voice message: the comparison measures the engine's text path
GOAL_METRICS = (("eval_seen", "objects"), ("eval_novel", "objects"))
DIGITS = {"1": "one", "2": "two", "3": "three", "4": "four", "5": "five"}


@dataclass
class AudioConfig(vision.PrefixRunConfig):
    tower: str = "whisper-base"  # the ASR tower whose encoder states are projected
    tts: str = "piper-joe"  # the voice that speaks the training and eval utterances
    train_utterances: int = 400
    eval_utterances: int = 24  # held-out utterances with colour-shape pairs seen in training
    eval_novel: int = 16  # held-out utterances with at least one never-trained pair
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=80, lr=2e-3, warmup=5,
                                                                   checkpoint_every=10, log_every=5))
    cache: Path | None = None  # synthesized audio + features (default: <cache>/agid/<tower>/audio)


@dataclass(frozen=True)
class Utterance:
    seed: int
    kinds: tuple[scenes.Kind, ...]
    text: str  # what the voice says

    @property
    def answer(self) -> str:
        return f"The user mentioned {scenes.describe(list(self.kinds))}."


def utterance(seed: int, novel: bool | None = False) -> Utterance:
    """Utterance `seed`: a carrier sentence around one or two kinds of objects (novel as in scenes.render)."""
    rng = random.Random(seed)
    kinds = scenes.sample_kinds(rng, novel)
    return Utterance(seed, tuple(kinds), rng.choice(CARRIERS).format(scenes.describe(kinds)))


@dataclass
class Spoken(vision.Item):
    text: str = ""  # the sentence that was spoken
    transcript: str = ""  # what the ASR tower heard (eval items only: the text path's input)


# ------------------------------------------------------------------------------------------------ run
def _prepare(cfg: AudioConfig, teacher: Teacher | None, tts: Any, asr: Any) -> tuple[Any, ...]:
    device = pick_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    aspec = spec_of(cfg.tower, ("asr",))
    if not pj.supports_audio(aspec):
        raise NexusError(f"tower {cfg.tower!r} ({aspec.backend}) has no encoder-state reader yet",
                         "the audio projector reads Whisper encoder states through faster-whisper (whisper-base)")
    teacher = teacher or load_teacher(cfg.llm, str(device))
    w = vision.checked_widths(aspec, teacher)
    tts = tts or vision.load_tower(spec_of(cfg.tts, ("tts",)))
    asr = asr or vision.load_tower(aspec)
    return device, teacher, w, tts, asr


def run_audio(cfg: AudioConfig, progress: Any = say, teacher: Teacher | None = None, tts: Any = None,
              asr: Any = None) -> dict[str, Any]:
    t_all = time.perf_counter()
    device, teacher, w, tts, asr = _prepare(cfg, teacher, tts, asr)
    secs: dict[str, float] = {}
    t0 = time.perf_counter()
    data = build_data(cfg, tts, asr, progress)
    feat_w = data["train"][0].feats.shape[-1]
    if feat_w != w["in_width"]:
        raise NexusError(f"[towers.{cfg.tower}] width = {w['in_width']} but its encoder states are {feat_w} wide",
                         "fix width in models.toml")
    secs["data"] = time.perf_counter() - t0
    proj = pj.Projector(**w, tokens=pj.AUDIO_TOKENS, emb_rms=pj.embedding_rms(teacher.model), seed=cfg.seed)
    proj.to(device)
    folder = adapters.adapter_dir(cfg.tower, "audio_projector", cfg.root)
    fp = fingerprint(asdict(cfg) | {"out": "", "root": "", "cache": "", "fresh": False}, teacher.info,
                     data["hashes"], w)
    if cfg.fresh:
        clear_checkpoints(folder / "checkpoints", "projector")
    loss_fn = prefix_loss(cfg, teacher, proj, data["train"], device)
    fit_items = data["train"][:32]  # the same few training utterances before and after: did the fit happen?
    untrained = loss_fn.answer_nll(fit_items)
    t0 = time.perf_counter()
    log = train("projector", dict(proj.named_parameters()), loss_fn, cfg.train, checkpoints=folder / "checkpoints",
                fingerprint_=fp, resume=not cfg.fresh, progress=progress)
    secs["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    proj.eval()
    nll = {"train_fit": {"n": len(fit_items), "untrained": untrained, "trained": loss_fn.answer_nll(fit_items)}}
    nll |= {split: own_vs_other(loss_fn, data[split]) for split in ("eval_seen", "eval_novel") if data[split]}
    progress("answer cross-entropy (nats/token): " + "; ".join(
        f"{k} " + ", ".join(f"{a} {b:.3f}" for a, b in v.items() if a != "n") for k, v in nll.items()))
    ev = evaluate(cfg, teacher, proj, data, progress)
    secs["eval"] = time.perf_counter() - t0
    source = {"tower": cfg.tower, "revision": data["revisions"]["asr"], "tts": cfg.tts,
              "tts_revision": data["revisions"]["tts"], **w, "tokens": pj.AUDIO_TOKENS, "chunks": pj.CHUNKS}
    res = {"kind": "audio", "llm": teacher.info, "audio": source, "config": jsonable(asdict(cfg)),
           "data": data["describe"], "hashes": data["hashes"], "eval": ev, "nll": nll, "curve": log.to_dict(),
           "params": sum(p.numel() for p in proj.parameters()), "seconds": secs}
    res["goal"] = vision.goal(ev, GOAL_METRICS)
    manifest = adapters.write_adapter(folder, dict(proj.state_dict()), {
        "kind": "audio_projector", "tower": cfg.tower, "teacher": teacher.info, "source": source,
        "config": {**w, "tokens": pj.AUDIO_TOKENS, "chunks": pj.CHUNKS, "system": pj.SYSTEM_AUDIO,
                   "placeholder": pj.AUDIO},
        "data": data["hashes"], "metrics": {k: v["mean"] for k, v in ev.items()} | {"nll": nll},
        "training": {"steps": cfg.train.steps, "first": log.first, "last": log.last, "seconds": log.seconds,
                     "seed": cfg.seed}})
    res["adapter"] = {"folder": str(folder), "sha256": manifest["files"][adapters.ADAPTER_FILE]}
    clear_checkpoints(folder / "checkpoints", "projector")
    secs["total"] = time.perf_counter() - t_all
    return res


def prefix_loss(cfg: AudioConfig, teacher: Teacher, proj: pj.Projector, items: list[Spoken],
                device: torch.device) -> vision.PrefixLoss:
    """vision.PrefixLoss with the audio questions, placeholder and system prompt."""
    return vision.PrefixLoss(cfg, teacher, proj, items, [], device, questions=QUESTIONS, placeholder=pj.AUDIO,
                             system=pj.SYSTEM_AUDIO)


def own_vs_other(loss_fn: vision.PrefixLoss, items: list[Spoken]) -> dict[str, float]:
    """The reference answer's cross-entropy (nats per token) given its own audio, another utterance's (the list
    rotated by half) and all-zero encoder states: a projector that carries the utterance makes `own` the lowest."""
    feats = [it.feats for it in items]
    half = len(items) // 2 or 1
    return {"own": loss_fn.answer_nll(items), "other": loss_fn.answer_nll(items, feats[half:] + feats[:half]),
            "zeros": loss_fn.answer_nll(items, [torch.zeros_like(f) for f in feats])}


def load_projector(cfg: AudioConfig, teacher: Teacher) -> tuple[pj.Projector, dict[str, Any]]:
    """The installed audio projector of cfg.tower; refused when its manifest is another tower's, another kind's or
    was trained against other LLM weights."""
    folder = adapters.adapter_dir(cfg.tower, "audio_projector", cfg.root)
    return vision.load_projector(folder, cfg.tower, "audio_projector", teacher)


# ------------------------------------------------------------------------------------------------ data
def build_data(cfg: AudioConfig, tts: Any, asr: Any, progress: Any) -> dict[str, Any]:
    base = cfg.seed * 1_000_000
    groups = {"train": [utterance(base + i) for i in range(cfg.train_utterances)],
              "eval_seen": [utterance(base + 500_000 + i) for i in range(cfg.eval_utterances)],
              "eval_novel": [utterance(base + 700_000 + i, novel=True) for i in range(cfg.eval_novel)]}
    revisions = {"asr": adapters.asr_revision(asr.spec), "tts": adapters.file_revision(tts.files()[0])}
    cache = cfg.cache or paths.cache_dir() / "agid" / cfg.tower / "audio"
    out: dict[str, Any] = {"hashes": {}, "revisions": revisions, "speech_seconds": {}}
    for name, group in groups.items():
        got = synthesize(group, tts, asr, cache, revisions, transcribe=name != "train", progress=progress, label=name)
        out["hashes"][f"utterances/{name}"] = got["sha256"]
        out["speech_seconds"][name] = round(got["seconds"], 1)
        out[name] = [Spoken(f, [u.answer], kinds=list(u.kinds), split=name, text=u.text, transcript=t)
                     for f, u, t in zip(got["feats"], group, got["transcripts"], strict=True)]
    out["describe"] = {k: len(out[k]) for k in groups} | {
        "speech_seconds": out["speech_seconds"], "novel_pairs": sorted(f"{c} {s}" for c, s in scenes.NOVEL),
        "questions": list(QUESTIONS), "carriers": list(CARRIERS)}
    return out


def synthesize(group: list[Utterance], tts: Any, asr: Any, cache: Path, revisions: dict[str, str], *,
               transcribe: bool, progress: Any = say, label: str = "") -> dict[str, Any]:
    """Speak every utterance, pool the ASR encoder's states (pj.audio_tokens) and, for held-out ones, transcribe
    it. Returns feats (one [AUDIO_TOKENS, width] tensor each), transcripts ("" when not transcribed), sha256 (of
    the texts and the audio) and seconds (of speech in all).

    Piper samples its prosody noise (the same text never sounds quite the same twice), so the result is cached:
    one safetensors file (int16 audio, offsets, features) + a JSON (texts, transcripts, hashes) per group, keyed
    by the texts, both towers' weights and the pooling; a damaged cache file is made again."""
    from safetensors.torch import load_file, save_file

    from nexus_engine.voice.tts import Speaker

    key = fingerprint([u.text for u in group], revisions, pj.CHUNKS, transcribe)
    stem = cache / f"{label or 'utterances'}-{len(group)}-{key}"
    meta_path, tensors_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    if meta_path.is_file() and tensors_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if adapters.file_sha256(tensors_path) == meta["sha256"]:
                feats = load_file(str(tensors_path))["feats"]
                progress(f"data: {len(group)} {label} utterances from the cache ({tensors_path.name})")
                return {"feats": list(feats), "transcripts": list(meta["transcripts"]),
                        "sha256": str(meta["data_sha256"]), "seconds": float(meta["seconds"])}
        except (OSError, ValueError, KeyError):
            pass
        progress(f"data: {tensors_path.name} is damaged; synthesizing again")
    if not group:
        return {"feats": [], "transcripts": [], "sha256": hashlib.sha256(b"").hexdigest(), "seconds": 0.0}
    progress(f"data: speaking {len(group)} {label} utterances ({tts.spec.name}) and encoding them ({asr.spec.name})")
    speaker = Speaker(tts)
    h = hashlib.sha256()
    feats, clips, transcripts = [], [], []
    t0 = time.perf_counter()
    for i, u in enumerate(group):
        audio = speaker(u.text)  # float32, 16 kHz, peak <= 0.99
        clip = np.round(audio * 32767).astype(np.int16)
        h.update(u.text.encode())
        h.update(clip.tobytes())
        samples = clip.astype(np.float32) / 32767  # what is cached is what is heard, on every run alike
        feats.append(pj.audio_tokens(asr, samples))
        transcripts.append(asr.transcribe(samples, RATE).text if transcribe else "")
        clips.append(clip)
        if (i + 1) % 50 == 0:
            progress(f"data: {i + 1}/{len(group)} {label} utterances ({time.perf_counter() - t0:.0f} s)")
    cache.mkdir(parents=True, exist_ok=True)
    offsets = np.cumsum([0] + [len(c) for c in clips]).astype(np.int64)
    tmp = tensors_path.with_name(f".{tensors_path.name}.tmp")
    save_file({"feats": torch.stack(feats).contiguous(), "audio": torch.from_numpy(np.concatenate(clips)),
               "offsets": torch.from_numpy(offsets)}, str(tmp))
    tmp.replace(tensors_path)
    seconds = float(offsets[-1]) / RATE
    adapters.write_json(meta_path, {"texts": [u.text for u in group], "transcripts": transcripts, "rate": RATE,
                                    "revisions": revisions, "sha256": adapters.file_sha256(tensors_path),
                                    "data_sha256": h.hexdigest(), "seconds": seconds})
    return {"feats": feats, "transcripts": transcripts, "sha256": h.hexdigest(), "seconds": seconds}


# ------------------------------------------------------------------------------------------------ eval
def text_prompt(transcript: str, messages: vision.Messages) -> vision.Messages:
    """The conversation with the transcript reported in its system message."""
    return [{"role": "system", "content": REPORT.format(transcript)}, *messages]


@torch.inference_mode()
def answer(teacher: Teacher, path: str, item: Spoken, proj: pj.Projector | None, cfg: AudioConfig) -> tuple[str, str]:
    """(answer, the context the LLM got) for one utterance on one path: projector | text | none."""
    model = teacher.model
    user = [{"role": "user", "content": QUESTION}]
    context = ""
    if path == "projector":
        left, right = pj.prompt_halves(teacher.tok, user, pj.AUDIO, pj.SYSTEM_AUDIO)
        embeds = pj.embed_prompt(model, left, proj(item.feats[None].to(model.device))[0], right)
        context = f"{pj.AUDIO_TOKENS} audio tokens"
    else:
        msgs = user
        if path == "text":
            msgs, context = text_prompt(item.transcript, user), item.transcript
        embeds = vision.chat_embeds(teacher, msgs)
    return vision.greedy(teacher, embeds, cfg.max_new_tokens, cfg.repeat_penalty), context


def score(text: str, item: Spoken) -> dict[str, float]:
    """scenes.score, with digits read as words: Whisper and the LLM may write "2 red circles"."""
    return scenes.score(re.sub(r"\b[1-5]\b", lambda m: DIGITS[m.group(0)], text), item.kinds or [])


def evaluate(cfg: AudioConfig, teacher: Teacher, proj: pj.Projector, data: dict[str, Any],
             progress: Any) -> dict[str, Any]:
    return vision.compare_paths(data, ("eval_seen", "eval_novel"),
                                lambda path, it: answer(teacher, path, it, proj, cfg), score, progress)
