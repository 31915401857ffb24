"""Every seed tower kind loads through the registry and runs one real step, on a tiny random model of the same
architecture built from a config (nexus_engine.testing), on the CPU, offline.

Also: per-kind quantization checks, bitsandbytes nf4/int8 on a tiny MoE, weight safety (truncated safetensors,
pickle-only folders, remote code), offload decisions, and the clear errors for loaders whose package is not
installable here (NeMo, PersonaPlex's moshi, qwen-tts). towers/loaders.md has the table.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nexus_engine import paths, registry, testing
from nexus_engine.config import load_models_toml
from nexus_engine.config.schema import Source, TowerSpec
from nexus_engine.errors import CancelledError, ConfigError, ModelMissingError, UnsafeWeightsError
from nexus_engine.towers.base import GenParams
from nexus_engine.towers.seed_common import choose_device

BUILDERS = {"siglip2": testing.tiny_siglip2_dir, "videomae": testing.tiny_videomae_dir, "llava": testing.tiny_llava_dir,
            "parakeet": testing.tiny_parakeet_tdt_dir, "vibevoice": testing.tiny_vibevoice_asr_dir,
            "moshi": testing.tiny_moshi_dir, "sd3": testing.tiny_sd3_dir, "svd": testing.tiny_svd_dir}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """tiny("sd3") -> the folder of that tiny model, built once per module on first use."""
    root = tmp_path_factory.mktemp("seed")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = BUILDERS[name](root / name)
        return built[name]

    return get


def spec(kind: str, backend: str, folder: Path, **changes: Any) -> TowerSpec:
    base = TowerSpec(name=f"tiny-{kind}", kind=kind, backend=backend, capabilities=(), source=Source(path=str(folder)),
                     quantization="fp32", dtype="fp32", device="cpu")
    return dataclasses.replace(base, **changes)


def load(s: TowerSpec) -> Any:
    tower = registry.build(s)
    info = tower.load()
    assert tower.loaded and info.origin == "path"
    fp = tower.footprint()
    assert fp.measured and fp.ram > 0 and fp.vram == 0, fp  # measured from the loaded tensors, on the CPU
    return tower


def unload(tower: Any) -> None:
    tower.unload()
    assert not tower.loaded


# ------------------------------------------------------------------------------------------ the profile
def test_every_seed_tower_has_a_loader_that_takes_its_quantization() -> None:
    import importlib

    config = load_models_toml([paths.SHIPPED_MODELS_TOML])
    towers = config.profile_towers("seed-16gb")
    assert len(towers) >= 12
    for t in towers:
        target = registry.LOADERS.get((t.kind, t.backend))
        assert target, f"{t.name}: no loader for ({t.kind}, {t.backend})"
        module, cls = target.split(":")
        tower_cls = getattr(importlib.import_module(module), cls)
        if hasattr(tower_cls, "QUANTS"):
            assert t.quantization in tower_cls.QUANTS, f"{t.name}: {t.quantization} refused by {cls}"


def test_a_quantization_the_kind_cannot_take_is_refused_before_loading(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'nf4' is not supported for a video_encoder") as err:
        registry.build(spec("video_encoder", "transformers", tmp_path, quantization="nf4")).load()
    assert "bf16" in err.value.hint
    with pytest.raises(ConfigError, match="tts"):
        registry.build(spec("tts", "transformers", tmp_path, quantization="int8")).load()


def test_offload_is_chosen_when_a_gpu_tower_does_not_fit() -> None:
    gib = 2**30
    assert choose_device("gpu", 20 * gib, 15 * gib)[0] == "offload"
    assert "offloading" in choose_device("gpu", 20 * gib, 15 * gib)[1]
    assert choose_device("gpu", 4 * gib, 15 * gib) == ("gpu", "")
    assert choose_device("gpu", 20 * gib, None) == ("gpu", "")  # no GPU: the CPU fallback applies instead
    assert choose_device("cpu", 20 * gib, 1 * gib) == ("cpu", "")


# -------------------------------------------------------------------------------------------- MoE LLM
@pytest.mark.parametrize("quant", ["nf4", "int8"])
def test_tiny_moe_llm_loads_in_bitsandbytes_on_cpu(tmp_path_factory: pytest.TempPathFactory, quant: str) -> None:
    bnb = pytest.importorskip("bitsandbytes")
    root = tmp_path_factory.getbasetemp() / "moe"
    if not (root / "config.json").exists():
        testing.tiny_causal_lm_dir(root, moe=True)  # Qwen2MoE: fused experts + router, like GLM-4.7-Flash's class
    tower = load(spec("llm", "transformers", root, quantization=quant, dtype="auto"))
    mlp = tower._model.model.layers[0].mlp
    assert isinstance(mlp.shared_expert.down_proj, bnb.nn.Linear4bit if quant == "nf4" else bnb.nn.Linear8bitLt)
    # transformers 5 keeps routed experts as fused 3-D parameters, which bitsandbytes (Linear layers only) leaves
    # in the compute dtype: a quantized MoE is mostly bf16 experts (see towers/loaders.md)
    assert mlp.experts.gate_up_proj.dtype == torch.bfloat16
    messages = [{"role": "user", "content": "Hi"}]
    list(tower.stream(messages, GenParams(max_tokens=3, temperature=0), threading.Event()))
    assert len(tower._past) == tower.count_tokens(messages) + 2
    unload(tower)


# ------------------------------------------------------------------------------------------------ VLM
def test_tiny_vlm_answers_about_an_image(tiny: Any) -> None:
    tower = load(spec("vlm", "transformers", tiny("llava")))
    image = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    params = GenParams(max_tokens=4, temperature=0)
    pieces = list(tower.ask([image], "what is this", params, threading.Event()))
    assert pieces and all(isinstance(p, str) for p in pieces)
    assert list(tower.ask([image], "what is this", params, threading.Event())) == pieces  # greedy: repeatable
    cancel = threading.Event()
    cancel.set()
    assert list(tower.ask([image], "what is this", GenParams(max_tokens=50, temperature=0), cancel)) == []
    unload(tower)


def test_remote_code_is_refused_unless_the_spec_opts_in(tiny: Any, tmp_path: Path) -> None:
    folder = tmp_path / "remote"
    shutil.copytree(tiny("llava"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_step.StepForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_step.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(UnsafeWeightsError, match=r"modeling_step\.py") as err:
        registry.build(spec("vlm", "transformers", folder)).load()
    assert "trust_remote_code" in err.value.hint
    # opting in from a local path (not a pinned hub commit) is refused too, before any code is imported
    with pytest.raises(ConfigError, match="pinned to a commit"):
        registry.build(spec("vlm", "transformers", folder, trust_remote_code=True)).load()


# ------------------------------------------------------------------------------------------- encoders
def test_tiny_siglip2_embeds_images_and_texts_in_one_space(tiny: Any) -> None:
    tower = load(spec("image_encoder", "transformers", tiny("siglip2")))
    rng = np.random.default_rng(0)
    images = tower.embed_images([rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(2)])
    texts = tower.embed_texts(["a photo of a cat", "a dog"])
    assert images.shape == (2, 32) and texts.shape == (2, 32)
    assert torch.allclose(images.norm(dim=-1), torch.ones(2)) and torch.allclose(texts.norm(dim=-1), torch.ones(2))
    assert (images @ texts.T).shape == (2, 2)
    unload(tower)


def test_tiny_videomae_gives_one_feature_per_clip(tiny: Any) -> None:
    tower = load(spec("video_encoder", "transformers", tiny("videomae")))
    frames = [np.full((36, 44, 3), i * 20, dtype=np.uint8) for i in range(7)]  # resampled to the model's 4
    feature = tower.embed_clip(frames)
    assert feature.shape == (32,) and torch.isfinite(feature).all()
    assert torch.equal(tower.embed_clip(frames), feature)
    unload(tower)


# ------------------------------------------------------------------------------------------------ ASR
def test_tiny_parakeet_tdt_transcribes_with_timestamps(tiny: Any) -> None:
    tower = load(spec("asr", "transformers", tiny("parakeet")))
    assert tower.sampling_rate == 16000
    audio = (np.random.default_rng(0).standard_normal(8000) * 0.1).astype(np.float32)  # 1 s at 8 kHz: resampled
    out = tower.transcribe(audio, 8000)
    assert isinstance(out.text, str) and "<blank>" not in out.text
    assert all({"start", "end"} <= set(s) for s in out.segments)
    unload(tower)


def test_parakeet_refuses_bitsandbytes(tiny: Any) -> None:
    with pytest.raises(ConfigError, match="Parakeet"):
        registry.build(spec("asr", "transformers", tiny("parakeet"), quantization="nf4", dtype="auto")).load()


def test_tiny_vibevoice_asr_generates_a_transcript(tiny: Any) -> None:
    tower = load(spec("asr", "transformers", tiny("vibevoice")))
    assert tower.chat and tower.sampling_rate == 24000
    audio = (np.random.default_rng(1).standard_normal(24000) * 0.1).astype(np.float32)
    out = tower.transcribe(audio, 24000, max_new_tokens=4)
    assert isinstance(out.text, str)
    unload(tower)


def test_nemo_backend_names_the_package_to_install(tmp_path: Path) -> None:
    (tmp_path / "parakeet-tdt-0.6b-v3.nemo").write_bytes(b"not a real archive")
    if "nemo" in sys.modules or _installed("nemo"):
        pytest.skip("NeMo is installed here")
    with pytest.raises(ModelMissingError, match="NeMo") as err:
        registry.build(spec("asr", "nemo", tmp_path)).load()
    assert "nemo_toolkit" in err.value.hint and "transformers" in err.value.hint


# -------------------------------------------------------------------------------------------- persona
def test_tiny_moshi_listens_and_answers(tiny: Any) -> None:
    tower = load(spec("persona", "moshi", tiny("moshi")))
    assert tower.layout == "transformers" and tower.sampling_rate == 24000
    user = (np.random.default_rng(2).standard_normal(2 * tower.frame_size) * 0.1).astype(np.float32)
    reply = tower.respond(user, 24000)
    assert reply.sample_rate == 24000 and reply.audio.size > 0 and np.isfinite(reply.audio).all()
    unload(tower)


def test_personaplex_layout_without_its_moshi_package_says_what_to_install(tmp_path: Path) -> None:
    if _installed("moshi"):
        pytest.skip("a moshi package is installed here")
    for name in ("model.safetensors", "tokenizer-e351c8d8-checkpoint125.safetensors"):
        (tmp_path / name).write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ModelMissingError, match="moshi") as err:
        registry.build(spec("persona", "moshi", tmp_path, quantization="bf16", dtype="bf16")).load()
    assert "PersonaPlex" in err.value.hint
    with pytest.raises(ConfigError, match="int8"):  # the native loader has no int8: say so, don't half-load
        registry.build(spec("persona", "moshi", tmp_path, quantization="int8")).load()


# ------------------------------------------------------------------------------------------------ TTS
def _tts_folder(tmp_path: Path) -> Path:
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_tts"}))
    save_file({"w": torch.zeros(4, 4)}, str(tmp_path / "model.safetensors"))
    return tmp_path


def test_qwen3_tts_without_qwen_tts_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "qwen_tts", None)  # as if not installed, even where it is
    with pytest.raises(ModelMissingError, match="qwen-tts") as err:
        registry.build(spec("tts", "transformers", _tts_folder(tmp_path))).load()
    assert "transformers==4.57.3" in err.value.hint


def test_qwen3_tts_wiring_with_a_stand_in_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """qwen-tts cannot be installed next to transformers 5: a stand-in with its API checks the tower's calls."""
    calls: dict[str, Any] = {}

    class Qwen3TTSModel:
        def __init__(self) -> None:
            self.model = torch.nn.Linear(8, 8)

        @classmethod
        def from_pretrained(cls, path: str, **kwargs: Any) -> Qwen3TTSModel:
            calls["load"] = (path, kwargs)
            return cls()

        def generate_custom_voice(self, **kwargs: Any) -> tuple[list[np.ndarray], int]:
            calls["speak"] = kwargs
            return [np.zeros(2400, dtype=np.float32)], 24000

    monkeypatch.setitem(sys.modules, "qwen_tts", types.SimpleNamespace(Qwen3TTSModel=Qwen3TTSModel))
    folder = _tts_folder(tmp_path)
    tower = load(spec("tts", "transformers", folder, quantization="bf16", dtype="bf16", options={"speaker": "Aiden"}))
    assert calls["load"] == (str(folder), {"device_map": "cpu", "dtype": torch.bfloat16})
    wav, sr = tower.speak("Hello there.")
    assert sr == 24000 and wav.shape == (2400,)
    assert calls["speak"] == {"text": "Hello there.", "language": "Auto", "speaker": "Aiden"}
    unload(tower)


# ------------------------------------------------------------------------------------ image and video
def test_tiny_sd3_generates_with_progress_and_stops_between_steps(tiny: Any) -> None:
    tower = load(spec("image_gen", "diffusers", tiny("sd3")))
    seen: list[tuple[int, int]] = []
    image = tower.generate("a cat", steps=2, seed=0, size=(32, 32), on_step=lambda d, t: seen.append((d, t)))
    assert image.size == (32, 32) and seen == [(1, 2), (2, 2)]
    again = tower.generate("a cat", steps=2, seed=0, size=(32, 32))
    assert np.array_equal(np.asarray(again), np.asarray(image))  # seeded: repeatable
    seen.clear()
    with pytest.raises(CancelledError, match="after step 1 of 3"):
        tower.generate("a cat", steps=3, size=(32, 32), on_step=lambda d, t: seen.append((d, t)),
                       should_stop=lambda: bool(seen))
    assert seen == [(1, 3)]
    unload(tower)


def test_sd3_nf4_without_cuda_loads_in_float_and_says_so(tiny: Any) -> None:
    if torch.cuda.is_available():
        pytest.skip("checks the CPU fallback")
    tower = registry.build(spec("image_gen", "diffusers", tiny("sd3"), quantization="nf4", dtype="fp32"))
    info = tower.load()
    assert "needs a CUDA GPU" in info.details["note"] and "quantized" not in info.details
    assert tower.generate("a dog", steps=1, size=(32, 32)).size == (32, 32)
    unload(tower)


def test_sd3_offload_runs_through_diffusers_hooks(tiny: Any) -> None:
    # hooks that move each component to "cpu": the same accelerate code path as cuda:0, runnable here
    tower = registry.build(spec("image_gen", "diffusers", tiny("sd3"), device="offload",
                                options={"offload_device": "cpu"}))
    info = tower.load()
    assert info.details["placement"] == "model offload to cpu"
    assert tower._modules["pipe"]._all_hooks  # accelerate's cpu_offload_with_hook per component
    assert tower.generate("a cat", steps=1, size=(32, 32)).size == (32, 32)
    unload(tower)


def test_tiny_svd_animates_an_image(tiny: Any) -> None:
    tower = load(spec("video_gen", "diffusers", tiny("svd")))
    seen: list[int] = []
    image = np.random.default_rng(3).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    frames = tower.generate(image, steps=2, seed=0, size=(32, 32), frames=2, on_step=lambda d, t: seen.append(d))
    assert len(frames) == 2 and frames[0].size == (32, 32) and seen == [1, 2]
    with pytest.raises(CancelledError):
        tower.generate(image, steps=2, size=(32, 32), frames=2, should_stop=lambda: True)
    unload(tower)


# ----------------------------------------------------------------------------------------- weight safety
def test_truncated_safetensors_in_a_pipeline_names_the_file(tiny: Any, tmp_path: Path) -> None:
    folder = tmp_path / "sd3"
    shutil.copytree(tiny("sd3"), folder)
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    with weights.open("r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    with pytest.raises(ModelMissingError, match=r"transformer/diffusion_pytorch_model\.safetensors is truncated"):
        registry.build(spec("image_gen", "diffusers", folder)).load()


def test_corrupt_safetensors_header_names_the_file(tiny: Any, tmp_path: Path) -> None:
    folder = tmp_path / "siglip"
    shutil.copytree(tiny("siglip2"), folder)
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelMissingError, match=r"model\.safetensors is not a readable safetensors file"):
        registry.build(spec("image_encoder", "transformers", folder)).load()


def test_pickle_only_weights_are_refused_unless_allowed(tiny: Any, tmp_path: Path) -> None:
    from transformers import AutoModel

    folder = tmp_path / "pickled"
    shutil.copytree(tiny("videomae"), folder)
    (folder / "model.safetensors").unlink()
    model = AutoModel.from_pretrained(tiny("videomae"))
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(UnsafeWeightsError, match=r"pytorch_model\.bin"):
        registry.build(spec("video_encoder", "transformers", folder)).load()
    tower = load(spec("video_encoder", "transformers", folder, options={"allow_pickle": True}))
    assert tower.embed_clip([np.zeros((32, 32, 3), dtype=np.uint8)]).shape == (32,)


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def test_seed_tower_weights_swap_through_the_warm_tier(tiny: Any) -> None:
    """A multi-module seed tower exposes all its weights as one tree the warm tier moves in one copy."""
    from nexus_engine.residency.warm import WarmModule

    tower = load(spec("image_encoder", "transformers", tiny("siglip2")))
    texts = ["a photo of a cat", "a dog"]
    before = tower.embed_texts(texts)
    warm = WarmModule(tower.torch_module())
    warm.to_host(pin=False)
    warm.to_device("cpu")
    warm.to_host()
    assert torch.equal(tower.embed_texts(texts), before)
    unload(tower)
