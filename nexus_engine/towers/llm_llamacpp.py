"""Chat on llama.cpp (through the prebuilt `cyllama` binding): the CPU default for GGUF models.

On 2 cores it decodes the starter SmolLM2 GGUF about 6x faster than transformers in fp32. The KV cache is
kept between turns and only the part of the prompt that changed is decoded again, so the time to first
token of a follow-up turn does not grow with the conversation.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil

from nexus_engine import weights
from nexus_engine.config.schema import TowerSpec
from nexus_engine.errors import BadInputError, InternalError, ModelMissingError, PromptTooLongError
from nexus_engine.towers.base import REPEAT_WINDOW, Footprint, GenParams, LoadInfo, Stopwatch
from nexus_engine.towers.chat_format import render


def default_threads() -> int:
    """One thread per physical core: llama.cpp decode is memory-bound and hyperthreads only add contention."""
    return max(1, min(psutil.cpu_count(logical=False) or 1, os.cpu_count() or 1))


class LlamaCppChat:
    """A GGUF chat model on llama.cpp. Not thread-safe: the worker runs one request per tower at a time."""

    def __init__(self, spec: TowerSpec) -> None:
        self.spec = spec
        self._model = None
        self._ctx = None
        self._vocab = None
        self._template = ""
        self._past: list[int] = []  # tokens whose keys/values are in the KV cache
        self._footprint = Footprint()
        opts = spec.options
        self.n_threads = int(opts.get("n_threads") or 0) or default_threads()
        self.n_ctx = int(opts.get("n_ctx") or spec.context_length or 4096)
        # gpu: every layer; offload: the layers models.toml names (the rest, MoE experts first, stay in RAM);
        # cpu: none. A CPU-only llama.cpp build ignores the setting.
        default_layers = {"cpu": 0, "gpu": 999, "offload": 0}[spec.device]
        self.n_gpu_layers = int(opts.get("n_gpu_layers", default_layers))

    # ---------------------------------------------------------------------------------- lifecycle
    @property
    def loaded(self) -> bool:
        return self._ctx is not None

    @property
    def context_length(self) -> int:
        return self.n_ctx

    def load(self) -> LoadInfo:
        from cyllama.llama import llama_cpp as cy

        path = weights.resolve(self.spec)
        if path.suffix != ".gguf":
            raise ModelMissingError(f"tower {self.spec.name!r}: llama.cpp needs a .gguf file, got {path.name}",
                                    "set source.file to the .gguf inside the package/folder")
        _check_gguf(path)
        rss0 = psutil.Process().memory_info().rss
        with Stopwatch() as sw:
            cy.disable_logging()
            cy.ggml_backend_load_all()
            mp = cy.LlamaModelParams()
            mp.n_gpu_layers = self.n_gpu_layers
            try:
                model = cy.LlamaModel(str(path), mp)
            except Exception as e:  # the binding raises plain exceptions for unreadable files
                raise ModelMissingError(f"tower {self.spec.name!r}: llama.cpp could not load {path}: {e}",
                                        "the file may be truncated or not a GGUF model: reinstall it") from e
            cp = cy.LlamaContextParams()
            cp.n_ctx = self.n_ctx
            cp.n_batch = min(512, self.n_ctx)
            cp.n_threads = self.n_threads
            cp.n_threads_batch = self.n_threads
            cp.no_perf = True
            self._ctx = cy.LlamaContext(model, cp)
            self._model = model
            self._vocab = model.get_vocab()
            self._template = model.get_default_chat_template() or ""
            self._past = []
        rss1 = psutil.Process().memory_info().rss
        self._footprint = Footprint(ram=max(0, rss1 - rss0) or path.stat().st_size, measured=True)
        return LoadInfo(ms=sw.ms, origin=str(path), details={"n_threads": self.n_threads, "n_ctx": self.n_ctx})

    def unload(self) -> None:
        self._ctx = self._model = self._vocab = None
        self._past = []

    def footprint(self) -> Footprint:
        return self._footprint

    def warmup(self) -> None:
        for _ in self.stream([{"role": "user", "content": "Hi"}], GenParams(max_tokens=1, temperature=0),
                             threading.Event()):
            pass

    # ------------------------------------------------------------------------------------- tokens
    def _bos_eos(self) -> tuple[str, str]:
        v = self._vocab
        bos = v.token_to_piece(v.token_bos(), special=True) if v.token_bos() >= 0 else ""
        eos = v.token_to_piece(v.token_eos(), special=True) if v.token_eos() >= 0 else ""
        return bos, eos

    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        if not self.loaded:
            raise InternalError(f"tower {self.spec.name!r} is not loaded")
        if not self._template:
            raise BadInputError(f"{self.spec.name}: the GGUF file has no chat template")
        text = render(self._template, messages, *self._bos_eos())
        return list(self._vocab.tokenize(text, add_special=False, parse_special=True))

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(self.prompt_tokens(messages))

    # --------------------------------------------------------------------------------- generation
    def _sampler(self, params: GenParams):
        from cyllama.llama import llama_cpp as cy

        chain = cy.LlamaSampler(cy.LlamaSamplerChainParams())
        if params.repeat_penalty != 1.0:
            chain.add_penalties(REPEAT_WINDOW, params.repeat_penalty, 0.0, 0.0)
        if params.temperature <= 0:
            chain.add_greedy()
        else:
            chain.add_top_p(params.top_p, 1)
            chain.add_temp(params.temperature)
            chain.add_dist(params.seed if params.seed is not None else int.from_bytes(os.urandom(4), "little"))
        return chain

    def stream(self, messages: list[dict[str, str]], params: GenParams,
               cancel: threading.Event) -> Iterator[str]:
        from cyllama.llama import llama_cpp as cy

        tokens = self.prompt_tokens(messages)
        if len(tokens) + 1 > self.n_ctx:
            raise PromptTooLongError(f"the prompt is {len(tokens)} tokens; this model's window is {self.n_ctx}",
                                     "shorten the message or start a new conversation")
        # reuse the KV cache for the prefix shared with the previous turn; re-decode at least one token
        keep = 0
        for a, b in zip(self._past, tokens):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(tokens) - 1)
        self._ctx.memory_seq_rm(0, keep, -1)
        self._past = tokens[:keep]
        pending, pos = tokens[keep:], keep
        batch_size = self._ctx.n_batch
        while pending:  # prompt in n_batch slices; a cancel lands between slices
            if cancel.is_set():
                return
            chunk, pending = pending[:batch_size], pending[batch_size:]
            self._ctx.decode(cy.llama_batch_get_one(chunk, pos))
            self._past.extend(chunk)
            pos += len(chunk)
        sampler = self._sampler(params)
        budget = min(params.max_tokens, self.n_ctx - pos)
        decoder = _Utf8Pieces(self._vocab)
        for _ in range(budget):
            if cancel.is_set():
                return
            token = sampler.sample(self._ctx, -1)
            if self._vocab.is_eog(token):
                return
            piece = decoder.piece(token)
            if piece:
                yield piece
            self._ctx.decode(cy.llama_batch_get_one([token], pos))
            self._past.append(token)
            pos += 1


class _Utf8Pieces:
    """Token -> text; a multi-byte character split over tokens is held until it is complete."""

    def __init__(self, vocab) -> None:
        self.vocab = vocab
        self.pending: list[int] = []

    def piece(self, token: int) -> str:
        self.pending.append(token)
        try:
            text = "".join(self.vocab.token_to_piece(t, special=False) for t in self.pending)
        except UnicodeDecodeError:
            return "" if len(self.pending) < 4 else self._drop()
        self.pending = []
        return text

    def _drop(self) -> str:
        self.pending = []
        return "\ufffd"


def _check_gguf(path: Path) -> None:
    """Fail with the file's name before llama.cpp sees a file that is not GGUF (it would only say 'failed')."""
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ModelMissingError(f"cannot read {path}: {e}") from e
    if magic != b"GGUF":
        raise ModelMissingError(f"{path} is not a GGUF file (it starts with {magic!r})",
                                "the download may be corrupt: reinstall the package or re-download the file")
