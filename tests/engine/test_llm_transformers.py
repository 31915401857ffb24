"""The transformers chat tower: GGUF conversion + cache, streaming, cancel, quantized loads, weight safety.

Real models only: the starter SmolLM2 GGUF (converted once per session into the shared cache) and tiny
random models built by nexus_engine.testing. Everything runs offline on the CPU.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from nexus_engine import paths, testing
from nexus_engine.config import load_models_toml
from nexus_engine.config.schema import Source, TowerSpec
from nexus_engine.errors import ModelMissingError, PromptTooLongError, UnsafeWeightsError
from nexus_engine.towers import hf_loading, llm_transformers
from nexus_engine.towers.base import ChatTower, GenParams
from nexus_engine.towers.llm_transformers import MARKER, TransformersChat, _TextPieces, converted_dir

GREEDY = GenParams(max_tokens=16, temperature=0)
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
STORY = [{"role": "user", "content": "Write a long story about a cat who learns to sail."}]


def starter_spec() -> TowerSpec:
    return load_models_toml([paths.SHIPPED_MODELS_TOML]).towers["smollm2-hf"]


def tiny_spec(folder: Path, **changes: Any) -> TowerSpec:
    spec = TowerSpec(name="tiny", kind="llm", backend="transformers", capabilities=("reasoning",),
                     source=Source(path=str(folder)), quantization="fp32", dtype="fp32", device="cpu")
    return dataclasses.replace(spec, **changes)


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link where the filesystem allows it: no 540 MB copy of the converted model."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def run(tower: ChatTower, messages: list[dict[str, str]], params: GenParams = GREEDY) -> list[str]:
    return list(tower.stream(messages, params, threading.Event()))


# ------------------------------------------------------------------------------------ starter model
@pytest.fixture(scope="module")
def starter(shared_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Convert the starter GGUF (instance A), then load the cached copy (instance B, kept loaded).

    The conversion goes into the session's shared cache so later tests (and the worker test) reuse it; if
    another test file converted it already, A converts again in a fresh folder so "gguf-convert" is still
    the path under test.
    """
    spec = starter_spec()
    gguf = testing.starter_gguf()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEXUS_CACHE", str(shared_cache))
        cache = shared_cache if not (converted_dir(gguf) / MARKER).exists() else tmp_path_factory.mktemp("fresh")
        mp.setenv("NEXUS_CACHE", str(cache))
        a = TransformersChat(spec)
        info_a = a.load()
        tokens_a = run(a, QUESTION)
        a.unload()
        b = TransformersChat(spec)
        info_b = b.load()
    yield {"a": info_a, "b": info_b, "tokens_a": tokens_a, "tower": b, "folder": Path(info_b.details["cache"])}
    b.unload()


def test_gguf_conversion_and_cache_give_the_same_greedy_tokens(starter: dict[str, Any]) -> None:
    info_a, info_b, tower = starter["a"], starter["b"], starter["tower"]
    assert info_a.origin == "gguf-convert" and info_b.origin == "cache"
    assert info_a.details["cache"] == info_b.details["cache"]
    folder = starter["folder"]
    assert (folder / "model.safetensors").exists() and (folder / MARKER).exists()
    assert not list(folder.parent.glob(".tmp-*")), "the temporary conversion folder was left behind"
    assert info_b.ms < info_a.ms / 4, "loading the cache should be far faster than converting"
    assert tower.footprint().measured and tower.footprint().ram > 400e6  # 135M params in fp32
    tokens_b = run(tower, QUESTION)
    assert len(starter["tokens_a"]) >= 5
    assert tokens_b == starter["tokens_a"]
    assert "Paris" in "".join(tokens_b)


def test_stream_is_incremental_and_cancel_stops_it(starter: dict[str, Any]) -> None:
    tower: TransformersChat = starter["tower"]
    n_prompt = tower.count_tokens(STORY)
    cancel = threading.Event()
    gen = tower.stream(STORY, GenParams(max_tokens=64, temperature=0), cancel)
    first = next(gen)
    assert first
    # only the prompt has gone through the model: the first piece came out before the rest was computed
    assert len(tower._past) == n_prompt
    pieces = [first, next(gen), next(gen)]
    cancel.set()
    rest = list(gen)
    assert len(rest) <= 1, f"cancel let {len(rest)} more pieces through"
    assert len(tower._past) <= n_prompt + len(pieces) + 1


def test_follow_up_turn_reuses_the_kv_cache(starter: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    tower: TransformersChat = starter["tower"]
    run(tower, QUESTION, GenParams(max_tokens=1, temperature=0))  # the cache now holds the first turn's prompt
    answer = "".join(starter["tokens_a"])
    turn2 = [*QUESTION, {"role": "assistant", "content": answer}, {"role": "user", "content": "And of Germany?"}]
    fed: list[int] = []
    forward = tower._forward
    monkeypatch.setattr(tower, "_forward", lambda toks: fed.append(len(toks)) or forward(toks))
    params = GenParams(max_tokens=4, temperature=0)
    reused = run(tower, turn2, params)
    new_tokens = tower.count_tokens(turn2) - tower.count_tokens(QUESTION)
    assert fed[0] <= new_tokens + 1, f"recomputed {fed[0]} prompt tokens; only {new_tokens} are new"
    tower._reset_cache()
    assert run(tower, turn2, params) == reused


def test_seeded_sampling_repeats_and_differs_by_seed(starter: dict[str, Any]) -> None:
    tower = starter["tower"]
    hot = [GenParams(max_tokens=6, temperature=1.5, top_p=0.95, seed=s) for s in (1, 1, 2)]
    a, b, c = ("".join(run(tower, STORY, p)) for p in hot)
    assert a == b
    assert a != c


def test_multibyte_characters_are_never_split(starter: dict[str, Any]) -> None:
    tok = starter["tower"]._tok
    text = "Grüße aus Köln: 東京 🙂🚀 ok"
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) > len(text.split()), "the test needs characters spread over several tokens"
    pieces = [p for p in map(_TextPieces(tok).piece, ids) if p]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


# --------------------------------------------------------------------------------------- tiny models
@pytest.fixture(scope="module")
def tiny_dirs(starter: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    tok = starter["folder"]  # copy the tokenizer from the converted starter: skips a 5 s GGUF parse
    return {"dense": testing.tiny_causal_lm_dir(root / "dense", tokenizer_from=tok),
            "moe": testing.tiny_causal_lm_dir(root / "moe", moe=True, tokenizer_from=tok)}


@pytest.mark.parametrize("arch", ["dense", "moe"])
def test_tiny_model_loads_from_a_path_and_streams(tiny_dirs: dict[str, Path], arch: str) -> None:
    tower = TransformersChat(tiny_spec(tiny_dirs[arch]))
    info = tower.load()
    assert info.origin == "path" and info.details["dtype"] == "float32"
    assert tower.context_length == 512  # from the model config: the spec gives none
    tower.warmup()
    n_prompt = tower.count_tokens(QUESTION)
    params = GenParams(max_tokens=6, temperature=0)
    pieces = run(tower, QUESTION, params)
    assert len(tower._past) == n_prompt + params.max_tokens - 1, "stopped early (random model hit EOS?)"
    assert pieces and run(tower, QUESTION, params) == pieces
    model = tower._model  # fp32 parameters (the tied lm_head counted once) + buffers such as rotary inv_freq
    assert tower.footprint().ram == 4 * model.num_parameters() + sum(b.nbytes for b in model.buffers())
    tower.unload()
    assert not tower.loaded


@pytest.mark.parametrize("quant", ["nf4", "int8"])
def test_bitsandbytes_quantization_loads_and_runs_on_cpu(tiny_dirs: dict[str, Path], quant: str) -> None:
    # bitsandbytes 0.50 has CPU code paths for both: nf4 dequantizes in its fallback (the "Failed to load CPU
    # gemm_4bit_forward" note at import is about an optional faster kernel), int8 casts inputs to fp16.
    bnb = pytest.importorskip("bitsandbytes")
    fp32 = TransformersChat(tiny_spec(tiny_dirs["dense"]))
    fp32.load()
    full = fp32.footprint().ram
    fp32.unload()
    tower = TransformersChat(tiny_spec(tiny_dirs["dense"], quantization=quant, dtype="auto"))
    tower.load()
    layer = tower._model.model.layers[0].mlp.down_proj
    assert isinstance(layer, bnb.nn.Linear4bit if quant == "nf4" else bnb.nn.Linear8bitLt)
    if quant == "nf4":
        assert layer.weight.quant_state.quant_type == "nf4" and layer.compute_dtype == torch.bfloat16
    assert tower.footprint().ram < full
    n_prompt = tower.count_tokens(QUESTION)
    run(tower, QUESTION, GenParams(max_tokens=4, temperature=0))
    assert len(tower._past) == n_prompt + 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on machines without a CUDA GPU")
def test_gpu_request_without_cuda_falls_back_to_cpu_and_says_so(tiny_dirs: dict[str, Path]) -> None:
    tower = TransformersChat(tiny_spec(tiny_dirs["dense"], device="gpu", quantization="bf16", dtype="auto"))
    info = tower.load()
    assert info.details["device"] == "cpu" and info.details["dtype"] == "bfloat16"
    assert "no CUDA GPU" in info.details["note"]
    assert tower.footprint().vram == 0 and tower.footprint().ram > 0


def test_spec_maps_to_dtype_and_bitsandbytes_config() -> None:
    spec = tiny_spec(Path("."), quantization="nf4", dtype="auto")
    nf4 = hf_loading.bnb_config(spec)
    assert nf4.load_in_4bit and nf4.bnb_4bit_quant_type == "nf4" and nf4.bnb_4bit_use_double_quant
    assert nf4.bnb_4bit_compute_dtype == torch.bfloat16 and hf_loading.torch_dtype(spec) == torch.bfloat16
    assert hf_loading.bnb_config(dataclasses.replace(spec, quantization="int8")).load_in_8bit
    assert hf_loading.bnb_config(dataclasses.replace(spec, quantization="fp16")) is None
    assert hf_loading.torch_dtype(dataclasses.replace(spec, quantization="fp16")) == torch.float16
    assert hf_loading.torch_dtype(dataclasses.replace(spec, quantization="gguf")) == torch.float32
    assert hf_loading.torch_dtype(dataclasses.replace(spec, quantization="bf16", dtype="fp32")) == torch.float32
    assert hf_loading.placement(dataclasses.replace(spec, device="offload")).device_map == "auto"


def test_prompt_longer_than_the_window_is_refused(tiny_dirs: dict[str, Path]) -> None:
    tower = TransformersChat(tiny_spec(tiny_dirs["dense"], context_length=24))
    tower.load()
    assert tower.context_length == 24
    with pytest.raises(PromptTooLongError, match="window is 24"):
        run(tower, STORY)


# ------------------------------------------------------------------------------------------- errors
def test_missing_folder_names_the_path() -> None:
    tower = TransformersChat(tiny_spec(Path("/nonexistent/model-folder")))
    with pytest.raises(ModelMissingError, match="/nonexistent/model-folder") as err:
        tower.load()
    assert err.value.hint


def test_pickle_only_folder_is_refused_unless_allowed(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    folder = testing.pickle_only_dir(tmp_path / "pickled", tokenizer_from=tiny_dirs["dense"])
    with pytest.raises(UnsafeWeightsError, match=r"pytorch_model\.bin"):
        TransformersChat(tiny_spec(folder)).load()
    tower = TransformersChat(tiny_spec(folder, options={"allow_pickle": True}))
    tower.load()
    assert tower.loaded


def test_truncated_safetensors_names_the_file(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(tiny_dirs["dense"], folder)
    weights = folder / "model.safetensors"
    with weights.open("r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    with pytest.raises(ModelMissingError, match=r"model\.safetensors.*truncated"):
        TransformersChat(tiny_spec(folder)).load()


def test_corrupt_cache_is_deleted_and_rebuilt(starter: dict[str, Any], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXUS_CACHE", str(tmp_path))
    spec = starter_spec()
    good = starter["folder"]
    folder = converted_dir(testing.starter_gguf())
    folder.mkdir(parents=True)
    for f in good.iterdir():
        if f.name != "model.safetensors":
            shutil.copy2(f, folder / f.name)
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")  # cut mid-header
    converted: list[Path] = []

    def fake_convert(gguf: Path, dest: Path) -> Any:  # the real one takes ~16 s; its output is the good copy
        converted.append(dest)
        shutil.copytree(good, dest, copy_function=_link_or_copy)
        return llm_transformers._from_folder(spec, dest)

    monkeypatch.setattr(llm_transformers, "convert_gguf", fake_convert)
    tower = TransformersChat(spec)
    info = tower.load()
    assert converted == [folder]
    assert info.origin == "gguf-convert" and "model.safetensors" in info.details["rebuilt_because"]
    assert run(tower, QUESTION, GenParams(max_tokens=4, temperature=0)) == starter["tokens_a"][:4]


# ------------------------------------------------------------------------------------ through the worker
def test_worker_streams_from_the_transformers_tower(starter: dict[str, Any], shared_cache: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from nexus_engine.client import EngineClient
    from nexus_engine.protocol import ChatRequest, Done, TokenChunk

    monkeypatch.setenv("NEXUS_CACHE", str(shared_cache))
    with EngineClient(env={"NEXUS_CACHE": str(shared_cache)}) as client:
        handle = client.submit(ChatRequest(messages=QUESTION, tower="smollm2-hf", max_tokens=4, temperature=0))
        events = list(handle)
    chunks = [e.text for e in events if isinstance(e, TokenChunk)]
    assert isinstance(events[-1], Done), events[-1]
    assert len(chunks) >= 2 and "".join(chunks) == "".join(starter["tokens_a"][:4])
    assert events[-1].stats["load_origin"] == "cache"
