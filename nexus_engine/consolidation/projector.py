"""The cross-modal projector (LLaVA-style): a vision or audio tower's features become prefix tokens of the chat LLM.

    features [B, K, W_in] --layernorm--> fc1 [W_in -> latent] + position --gelu--> fc2 [latent -> W_llm]
                          --rescaled to the LLM's embedding RMS--> K prefix tokens in the LLM's embedding space

Widths come from models.toml (`widths`): W_in = the tower's `width`, latent = its `latent_width` (the tower's
capability-normalized latent: wide for rich features, narrow for weak ones), W_llm = the LLM's `width`.
Vision: K = 1 + GRID*GRID tokens, the global mean of the last feature map and a GRID x GRID pooling of it (where
things are, how many). Audio: K = 1 + CHUNKS tokens, the mean of the ASR encoder's states over the speech and
CHUNKS equal stretches of it (what was said, in order). The LLM stays frozen; only this module is trained
(research/agid/vision.py, research/agid/audio.py).

The prompt is the LLM's own chat template with a placeholder (IMAGE or AUDIO) in the last user turn; its text is
split there and the prefix embeddings go between the two halves, for training and answering alike.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nexus_engine.errors import NexusError

GRID = 3
TOKENS = 1 + GRID * GRID
IMAGE = "<image>"
SYSTEM = "You are a helpful assistant. You can see the image the user attached."
CHUNKS = 12  # ~0.2 s of speech each for a 2-3 s utterance: about a word per token
AUDIO_TOKENS = 1 + CHUNKS
AUDIO = "<audio>"
SYSTEM_AUDIO = "You are a helpful assistant. You can hear the voice message the user sent."


class Projector(nn.Module):
    def __init__(self, in_width: int, latent: int, out_width: int, tokens: int = TOKENS, emb_rms: float = 1.0,
                 seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(in_width, latent)
        self.pos = nn.Parameter(torch.zeros(tokens, latent))
        self.fc2 = nn.Linear(latent, out_width)
        self.register_buffer("emb_rms", torch.tensor(float(emb_rms)))

    @property
    def shape(self) -> dict[str, int]:
        return {"in_width": self.fc1.in_features, "latent": self.fc1.out_features,
                "out_width": self.fc2.out_features, "tokens": int(self.pos.shape[0])}

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, K, W_in] -> [B, K, W_llm] on the LLM's embedding scale."""
        x = F.layer_norm(feats.float(), (feats.shape[-1],))
        y = self.fc2(F.gelu(self.fc1(x) + self.pos))
        return y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-6) * self.emb_rms


def embedding_rms(model: Any) -> float:
    w = model.get_input_embeddings().weight
    return float(w.detach().float().pow(2).mean(-1).sqrt().mean())


def widths(tower: Any, llm: Any) -> dict[str, int]:
    """Projector widths from models.toml: the feature tower's width and latent_width, the LLM's width."""
    for spec in (tower, llm):
        if not spec.width:
            raise NexusError(f"[towers.{spec.name}] has no width",
                             f"add width = <feature width> to [towers.{spec.name}] in models.toml "
                             "(EfficientNet-Lite0: 1280; Whisper base: 512; SmolLM2-135M: 576)")
    return {"in_width": tower.width, "latent": tower.latent_width or min(tower.width, llm.width),
            "out_width": llm.width}


# ------------------------------------------------------------------------------------------ features
def supports(spec: Any) -> bool:
    """Towers whose features this projector can read (the starter EfficientNet-Lite0)."""
    return spec.kind == "image_encoder" and spec.backend == "efficientnet"


@torch.inference_mode()
def vision_tokens(tower: Any, images: list[Any]) -> torch.Tensor:
    """PIL images -> [n, TOKENS, width]: global mean + GRID x GRID pooling of the tower's last feature map."""
    model = tower.torch_module()
    batch = torch.from_numpy(__import__("numpy").stack([tower.preprocess(im.convert("RGB")) for im in images]))
    fmap = model.extract_features(batch.to(next(model.parameters()).device))  # [n, 1280, 7, 7]
    grid = F.adaptive_avg_pool2d(fmap, GRID).flatten(2).transpose(1, 2)  # [n, GRID*GRID, C]
    return torch.cat([fmap.mean((2, 3))[:, None], grid], 1).float().cpu()


def supports_audio(spec: Any) -> bool:
    """ASR towers whose encoder states the audio projector can read (the starter Whisper base, CTranslate2)."""
    return spec.kind == "asr" and spec.backend == "faster_whisper"


def audio_tokens(tower: Any, samples: Any) -> torch.Tensor:
    """16 kHz mono float audio -> [AUDIO_TOKENS, width]: the Whisper encoder's states (what its decoder reads),
    averaged over the speech and over CHUNKS equal stretches of it.

    The encoder input is prepared as the ASR tower prepares it for an utterance (towers/asr_whisper.py): the
    log-mel of the audio alone, zero-padded to a whole second with a margin, at least MIN_FRAMES. Only the states
    of frames that hold audio are pooled: the padding says nothing about what was said."""
    import ctranslate2
    import numpy as np

    from nexus_engine.towers.asr_whisper import MARGIN_FRAMES, MAX_FRAMES, MIN_FRAMES

    model = tower.model  # faster_whisper.WhisperModel
    mel = model.feature_extractor(np.asarray(samples, dtype=np.float32), padding=0)  # [80, frames], 10 ms each
    k = min(mel.shape[1], MAX_FRAMES)
    n = min(MAX_FRAMES, max(MIN_FRAMES, -(-(k + MARGIN_FRAMES) // 100) * 100))
    x = np.zeros((1, mel.shape[0], n), dtype=np.float32)
    x[0, :, :k] = mel[:, :k]
    # a CPU StorageView exposes the array interface: np.array copies it out ([1, n / 2, width], 20 ms per state)
    states = np.array(model.model.encode(ctranslate2.StorageView.from_array(x), to_cpu=True))[0]
    speech = torch.from_numpy(states[:max(CHUNKS, -(-k // 2))].astype(np.float32))  # [T, width]
    chunks = F.adaptive_avg_pool1d(speech.T[None], CHUNKS)[0].T  # [CHUNKS, width]
    return torch.cat([speech.mean(0, keepdim=True), chunks])


# ------------------------------------------------------------------------------------------- prompts
def prompt_halves(tok: Any, messages: list[dict[str, str]], placeholder: str = IMAGE,
                  system: str = SYSTEM) -> tuple[list[int], list[int]]:
    """Token ids before and after the image (or audio), for `messages` whose last user turn mentions the
    placeholder (it is put first when missing). A conversation without a system message gets `system`, as in
    training."""
    msgs = [dict(m) for m in messages]
    if not msgs or msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": system})
    last = max(i for i, m in enumerate(msgs) if m["role"] == "user")
    if placeholder not in msgs[last]["content"]:
        msgs[last]["content"] = f"{placeholder}\n{msgs[last]['content']}"
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    left, _, right = text.partition(placeholder)
    enc = [tok(part, add_special_tokens=False)["input_ids"] for part in (left, right)]
    return list(enc[0]), list(enc[1])


def embed_prompt(model: Any, left: list[int], prefix: torch.Tensor, right: list[int]) -> torch.Tensor:
    """[1, len(left) + K + len(right), D]: token embeddings around the projected image tokens."""
    emb = model.get_input_embeddings()
    dev = emb.weight.device
    parts = [emb(torch.tensor([left], device=dev)), prefix.to(dev, emb.weight.dtype)[None] if prefix.dim() == 2
             else prefix.to(dev, emb.weight.dtype), emb(torch.tensor([right], device=dev))]
    return torch.cat(parts, 1)


@torch.inference_mode()
def generate(model: Any, tok: Any, embeds: torch.Tensor, params: Any, cancel: threading.Event,
             eos: set[int] | None = None) -> Iterator[str]:
    """Decode from prompt embeddings with a KV cache: greedy at temperature 0, else temperature/top-p, with the
    chat towers' repeat penalty (same helpers as towers/llm_transformers.py)."""
    from transformers import DynamicCache

    from nexus_engine.research.niwt.collapse import cache_kwarg
    from nexus_engine.towers.base import REPEAT_WINDOW
    from nexus_engine.towers.llm_transformers import _penalize, _sample, _TextPieces

    eos = eos if eos is not None else {tok.eos_token_id}
    cache = {cache_kwarg(model): DynamicCache(config=model.config)}  # `cache` in transformers 5.2x
    out = model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1, **cache)
    logits = out.logits[0, -1].float()
    gen = torch.Generator(device=logits.device).manual_seed(params.seed) if params.seed is not None else None
    text = _TextPieces(tok)
    generated: list[int] = []
    dev = embeds.device
    for step in range(params.max_tokens):
        if cancel.is_set():
            return
        token = _sample(_penalize(logits, generated[-REPEAT_WINDOW:], params.repeat_penalty), params, gen)
        generated.append(token)
        if token in eos:
            return
        piece = text.piece(token)
        if piece:
            yield piece
        if step + 1 < params.max_tokens:
            out = model(input_ids=torch.tensor([[token]], device=dev), use_cache=True, **cache)
            logits = out.logits[0, -1].float()
