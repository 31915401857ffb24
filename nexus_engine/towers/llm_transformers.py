"""Chat on transformers: the backend for GPU towers, bitsandbytes quantization and research hooks.

Sources: a folder of safetensors (a path, a package, or a hub snapshot already in the local cache), loaded
with the spec's quantization and device; or a GGUF file (the starter SmolLM2), which transformers
dequantizes to fp32 in ~16 s: it is converted once and kept as safetensors under
`cache_dir()/converted/<name>-<size>-<sha256 prefix>`, so later loads take ~0.4 s and a changed file
converts again.

Generation is a plain decode loop over a DynamicCache (no `generate()`), so a cancel lands before every
token and the cache is kept between turns: only the part of the prompt that changed is computed again,
as in the llama.cpp tower.
"""

from __future__ import annotations

import gc
import hashlib
import inspect
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from nexus_engine import paths, weights
from nexus_engine.config.schema import TowerSpec
from nexus_engine.errors import InternalError, ModelMissingError, NexusError, PromptTooLongError
from nexus_engine.towers import hf_loading
from nexus_engine.towers.base import REPEAT_WINDOW, Footprint, GenParams, LoadInfo, Stopwatch
from nexus_engine.towers.chat_format import check_messages
from nexus_engine.towers.llm_llamacpp import default_threads

log = logging.getLogger("nexus.towers.transformers")

MARKER = "nexus-converted.json"  # written last: a cache folder without it is incomplete
PREFILL_CHUNK = 512  # prompt tokens per forward: bounds activation memory and lets a cancel land


class TransformersChat:
    """A causal LM on transformers. Not thread-safe: the worker runs one request per tower at a time."""

    def __init__(self, spec: TowerSpec) -> None:
        self.spec = spec
        self._model: Any = None
        self._tok: Any = None
        self._cache: Any = None  # DynamicCache holding keys/values of self._past
        self._past: list[int] = []
        self._eos: set[int] = set()
        self._cache_kwarg = "past_key_values"
        self._logits_kw: dict[str, int] = {}
        self._device = torch.device("cpu")
        self._footprint = Footprint()
        self._collapsed: dict[str, Any] = {}  # what options.bitmask removed (research/niwt/collapse.py)
        opts = spec.options
        self.n_threads = int(opts.get("n_threads") or 0) or default_threads()
        self._n_ctx = int(opts.get("n_ctx") or spec.context_length or 0)

    # ---------------------------------------------------------------------------------- lifecycle
    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def context_length(self) -> int:
        return self._n_ctx or 4096

    def load(self) -> LoadInfo:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the worker's stderr is a terminal or a log, not a progress UI
        torch.set_num_threads(self.n_threads)
        path = weights.resolve(self.spec)
        probe = hf_loading.MemoryProbe()
        with Stopwatch() as sw:
            if path.suffix == ".gguf":
                model, tok, origin, details = self._load_gguf(path)
            elif path.is_dir():
                model, tok = _from_folder(self.spec, path)
                origin, details = self.spec.source.kind, {"path": str(path)}
            else:
                raise ModelMissingError(f"tower {self.spec.name!r}: transformers needs a model folder or a .gguf "
                                        f"file, got {path}", f"fix source in [towers.{self.spec.name}]")
            self._install(model, tok)
        ram, vram, measured = hf_loading.measured_footprint(model, probe)
        self._footprint = Footprint(ram=ram, vram=vram, measured=True)
        note = hf_loading.placement(self.spec).note
        if note:
            details["note"] = note
        details.update(measured, device=str(self._device), dtype=str(model.dtype).removeprefix("torch."),
                       quantization=self.spec.quantization, n_threads=self.n_threads, n_ctx=self.context_length)
        if self._collapsed:
            details["bitmask"] = {k: self._collapsed[k] for k in ("removed", "layers_before", "layers_after")}
            if "agid" in self._collapsed:
                details["agid"] = {k: self._collapsed[k] for k in ("agid", "bridges", "adapter_sha256")}
        return LoadInfo(ms=sw.ms, origin=origin, details=details)

    def _install(self, model: Any, tok: Any) -> None:
        if self.spec.options.get("bitmask"):  # a NIWT feature bitmask: its skipped layers leave the forward
            from nexus_engine.research.niwt.collapse import collapse_model

            self._collapsed = collapse_model(model, Path(str(self.spec.options["bitmask"])).expanduser())
        elif self.spec.options.get("agid"):  # an AGID student: its bitmask's layers removed, trained bridges added
            from nexus_engine.consolidation.student import apply_text_adapter
            from nexus_engine.research.agid.teacher import revision_of

            self._collapsed = apply_text_adapter(model, Path(str(self.spec.options["agid"])).expanduser(),
                                                 self.spec.name, revision_of(self.spec))
        model.eval()
        self._model, self._tok = model, tok
        self._device = model.get_input_embeddings().weight.device
        params = inspect.signature(model.forward).parameters
        # transformers 5 renamed the forward's cache argument; older releases call it past_key_values
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._logits_kw = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        cfg = getattr(model.config, "text_config", None) or model.config
        limit = getattr(cfg, "max_position_embeddings", None)
        want = self._n_ctx or limit or 4096
        self._n_ctx = min(want, limit) if limit else want  # never past the positions the model was trained on
        self._eos = _eos_ids(model, tok)
        self._reset_cache()

    def unload(self) -> None:
        self._model = self._tok = self._cache = None
        self._past = []
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def tokenizer(self) -> Any:
        """The loaded tokenizer (None before load): research tools score text with it."""
        return self._tok

    def footprint(self) -> Footprint:
        return self._footprint

    def torch_module(self) -> torch.nn.Module | None:
        """The weights the residency manager's warm tier moves between RAM and the GPU."""
        return self._model

    def release_cache(self) -> None:
        """Drop the KV cache before a swap-out: it would otherwise stay on the GPU after the weights left."""
        if self._model is not None:
            self._reset_cache()

    def warmup(self) -> None:
        # two tokens: the prompt pass and one single-token decode step, so both paths' kernels are loaded
        for _ in self.stream([{"role": "user", "content": "Hi"}], GenParams(max_tokens=2, temperature=0),
                             threading.Event()):
            pass

    # ------------------------------------------------------------------------------- gguf -> cache
    def _load_gguf(self, gguf: Path) -> tuple[Any, Any, str, dict[str, Any]]:
        folder = converted_dir(gguf)
        details: dict[str, Any] = {"cache": str(folder), "gguf": str(gguf)}
        if (folder / MARKER).exists():
            try:
                model, tok = _from_folder(self.spec, folder)
                return model, tok, "cache", details
            except torch.OutOfMemoryError:
                raise
            except Exception as e:  # a damaged cache is rebuilt, never trusted
                log.warning("converted cache %s is unusable (%s); deleting it and converting again", folder, e)
                details["rebuilt_because"] = f"{type(e).__name__}: {e}"[:300]
                shutil.rmtree(folder, ignore_errors=True)
        model, tok = convert_gguf(gguf, folder)
        if hf_loading.bnb_config(self.spec) is not None or self.spec.device == "offload":
            del model  # quantization and offload are applied while loading: reload the fp32 copy just saved
            gc.collect()
            model, tok = _from_folder(self.spec, folder)
        else:
            where = hf_loading.placement(self.spec)
            model = model.to(device=where.device, dtype=hf_loading.torch_dtype(self.spec))
        return model, tok, "gguf-convert", details

    # ------------------------------------------------------------------------------------- tokens
    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        if not self.loaded:
            raise InternalError(f"tower {self.spec.name!r} is not loaded")
        check_messages(messages)
        enc = self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(enc["input_ids"])

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(self.prompt_tokens(messages))

    # --------------------------------------------------------------------------------- generation
    def _reset_cache(self) -> None:
        from transformers import DynamicCache

        self._cache = DynamicCache(config=self._model.config)
        self._past = []

    def _rollback(self, keep: int) -> None:
        """Drop cached positions past `keep`; a cache that cannot be cropped (linear attention…) starts over."""
        extra = self._cache.get_seq_length() - keep
        if extra > 0 and getattr(self._cache, "is_croppable", True):
            self._cache.crop(-extra)  # a negative count removes that many positions (transformers 4 and 5)
        if self._cache.get_seq_length() != keep:
            self._reset_cache()
        else:
            self._past = self._past[:keep]

    @torch.inference_mode()
    def _forward(self, tokens: list[int]) -> torch.Tensor:
        """Append `tokens` to the cache; the logits of the last one (fp32, shape [vocab])."""
        ids = torch.tensor([tokens], dtype=torch.long, device=self._device)  # [1, n]
        try:
            out = self._model(input_ids=ids, use_cache=True, **{self._cache_kwarg: self._cache}, **self._logits_kw)
        except BaseException:
            self._reset_cache()  # some layers may have appended already: the cache no longer matches _past
            raise
        self._past.extend(tokens)
        return out.logits[0, -1].float()

    def stream(self, messages: list[dict[str, str]], params: GenParams,
               cancel: threading.Event) -> Iterator[str]:
        tokens = self.prompt_tokens(messages)
        if len(tokens) + 1 > self.context_length:
            raise PromptTooLongError(f"the prompt is {len(tokens)} tokens; this model's window is "
                                     f"{self.context_length}", "shorten the message or start a new conversation")
        if torch.get_num_threads() != self.n_threads:  # another library (silero-vad) may have changed it
            torch.set_num_threads(self.n_threads)
        # reuse cached keys/values for the prefix shared with the previous turn; recompute at least one token
        keep = 0
        for a, b in zip(self._past, tokens):
            if a != b:
                break
            keep += 1
        self._rollback(min(keep, len(tokens) - 1))
        pending = tokens[len(self._past):]
        logits = None
        while pending:
            if cancel.is_set():
                return
            chunk, pending = pending[:PREFILL_CHUNK], pending[PREFILL_CHUNK:]
            logits = self._forward(chunk)
        assert logits is not None
        gen = None
        if params.temperature > 0 and params.seed is not None:
            gen = torch.Generator(device=logits.device).manual_seed(params.seed)
        text = _TextPieces(self._tok)
        budget = min(params.max_tokens, self.context_length - len(self._past))
        generated: list[int] = []
        for step in range(budget):
            if cancel.is_set():
                return
            token = _sample(_penalize(logits, generated[-REPEAT_WINDOW:], params.repeat_penalty), params, gen)
            generated.append(token)
            if token in self._eos:
                return
            piece = text.piece(token)
            if piece:
                yield piece
            if step + 1 < budget:  # the last token needs no forward: nobody reads its logits
                logits = self._forward([token])


# ------------------------------------------------------------------------------------------- helpers
def _penalize(logits: torch.Tensor, recent: list[int], penalty: float) -> torch.Tensor:
    """llama.cpp's repeat penalty, so both backends sample alike: logits of recently generated tokens are
    divided by the penalty when positive, multiplied when negative."""
    if penalty == 1.0 or not recent:
        return logits
    logits = logits.clone()
    idx = torch.tensor(sorted(set(recent)), device=logits.device)
    seen = logits[idx]
    logits[idx] = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits


def _sample(logits: torch.Tensor, params: GenParams, gen: torch.Generator | None) -> int:
    """Greedy when temperature <= 0, else temperature + nucleus (top-p) sampling. logits: [vocab] fp32."""
    if params.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if 0 < params.top_p < 1:
        p, idx = probs.sort(descending=True)
        p[(p.cumsum(0) - p) >= params.top_p] = 0  # tokens after the nucleus already holds top_p
        return int(idx[torch.multinomial(p, 1, generator=gen)])
    return int(torch.multinomial(probs, 1, generator=gen))


class _TextPieces:
    """Token ids -> new text. Decodes a short window and emits its new suffix, holding it while it ends in
    an incomplete multi-byte character (U+FFFD), so a character split over tokens comes out whole."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        self.ids: list[int] = []
        self.prefix = 0  # window start: a few tokens of context so leading spaces decode right
        self.read = 0  # tokens already emitted

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def piece(self, token: int) -> str:
        self.ids.append(token)
        before = self._decode(self.ids[self.prefix:self.read])
        now = self._decode(self.ids[self.prefix:])
        if len(now) <= len(before) or (now.endswith("\ufffd") and len(self.ids) - self.read < 4):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return now[len(before):]


def _eos_ids(model: Any, tok: Any) -> set[int]:
    """Every id that ends a turn: the tokenizer's EOS and the model's (generation) config EOS list."""
    out: set[int] = set()
    for value in (tok.eos_token_id, getattr(model.generation_config, "eos_token_id", None),
                  getattr(model.config, "eos_token_id", None)):
        if isinstance(value, int):
            out.add(value)
        elif isinstance(value, list | tuple):
            out.update(int(v) for v in value)
    return out


def _from_folder(spec: TowerSpec, folder: Path) -> tuple[Any, Any]:
    """Model + tokenizer from a folder of safetensors, with the spec's dtype, quantization and device."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = hf_loading.from_pretrained_kwargs(spec, folder)  # refuses pickle-only and truncated weights
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=spec.trust_remote_code)
    except NexusError:
        raise
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        raise ModelMissingError(f"tower {spec.name!r}: transformers could not load {folder}: {e}",
                                "the folder needs config.json, tokenizer files and *.safetensors weights; "
                                "download the model again if a file is damaged") from e
    return model, tok


# --------------------------------------------------------------------------------- gguf conversion
def converted_dir(gguf: Path) -> Path:
    """cache_dir()/converted/<stem>-<size>-<sha256[:16]>: a different file (even same name) gets a new key."""
    with gguf.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()  # ~0.1 s for the 98 MB starter file
    return paths.cache_dir() / "converted" / f"{gguf.stem}-{gguf.stat().st_size}-{digest[:16]}"


def convert_gguf(gguf: Path, dest: Path) -> tuple[Any, Any]:
    """Dequantize a GGUF model with transformers and save it as safetensors at `dest`, atomically.

    Written into a temporary sibling folder and renamed into place last, so a kill mid-conversion leaves
    no half cache (only a temp folder, removed by the next conversion). Returns the in-memory fp32 model
    and tokenizer.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(dest)
    tmp = dest.parent / f".tmp-{dest.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    log.info("converting %s to safetensors in %s (once; ~16 s on 2 cores)", gguf.name, dest)
    try:
        try:
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise ModelMissingError(f"transformers could not read the GGUF file {gguf}: {e}",
                                    "the file may be truncated or of an unsupported architecture: reinstall it") from e
        # the dequantized weights are plain fp32 now; without this save_pretrained refuses a "GGUF-quantized" model
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps({"source": str(gguf), "size": gguf.stat().st_size}))
        if dest.exists() and not (dest / MARKER).exists():  # a folder without the marker is never a cache
            shutil.rmtree(dest)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / MARKER).exists():  # not another process finishing first: a real failure
                raise
            log.info("another process converted %s first; using its copy", gguf.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model, tok


def _remove_stale_temps(dest: Path) -> None:
    """Temp folders left by conversions that were killed (their process is gone)."""
    import psutil

    for old in dest.parent.glob(f".tmp-{dest.name}-*"):
        pid = old.name.removeprefix(f".tmp-{dest.name}-").split("-")[0]
        if not (pid.isdigit() and psutil.pid_exists(int(pid))):
            shutil.rmtree(old, ignore_errors=True)
