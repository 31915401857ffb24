"""Text the AGID student trains and is measured on, on the NIWT lab's splits.

- train: the lab's `heal` split (held-out prose + GSM8K items 40-63) plus `samples` answers the teacher writes
  itself to a fixed list of prompts (sampled, seeded): the lab's heal split is only ~4k tokens, and text the
  teacher generated is exactly the distribution whose trajectories the student must follow. All of it is cut
  into windows of `window` tokens.
- eval: the lab's `eval` split (held-out prose, GSM8K worked solutions), never trained on.
The dataset hash is the sha256 of the token ids, so a recording or checkpoint is tied to exactly this data.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from nexus_engine.research.niwt import data
from nexus_engine.research.niwt.metrics import LMTask, gsm8k_nll_task, text_task

PROMPTS = (
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how rain forms, in simple words.",
    "Give me three tips for keeping a small vegetable garden.",
    "What is the difference between a virus and a bacterium?",
    "Describe a busy market in the morning.",
    "How does a bicycle stay upright when it moves?",
    "Write a friendly email inviting a neighbour to a barbecue.",
    "Explain what a prime number is and give examples.",
    "Tell me about the history of paper.",
    "Write a poem about autumn leaves.",
    "How do I make a simple tomato soup?",
    "Why is the sky blue?",
    "Summarize the plot of a detective story you invent.",
    "What should I pack for a weekend hiking trip?",
    "Explain how a computer stores numbers.",
    "Describe the life cycle of a butterfly.",
    "Write a dialogue between a teacher and a curious student about the moon.",
    "How can I get better at remembering names?",
    "Explain photosynthesis to a ten-year-old.",
    "A train travels 60 miles in 1.5 hours. What is its average speed? Show your steps.",
    "Write instructions for planting a tree.",
    "What are some good habits for a healthy sleep?",
    "Describe a thunderstorm from the point of view of a cat.",
    "Explain why we have seasons on Earth.",
)


def _eos(tok: Any) -> list[int]:
    return [tok.eos_token_id] if tok.eos_token_id is not None else []


def heal_ids(tok: Any, root: Path) -> list[int]:
    """The lab's heal split as one token stream: held-out prose, then the GSM8K heal items."""
    parts = [data.held_text("heal")] + [f"Question: {it.question}\nAnswer: {it.solution}\n#### {it.answer}"
                                        for it in data.gsm8k_items(root, "heal")]
    ids: list[int] = []
    for p in parts:
        ids += tok(p, add_special_tokens=False)["input_ids"] + _eos(tok)
    return ids


@torch.inference_mode()
def teacher_samples(model: Any, tok: Any, n: int, new_tokens: int, seed: int, batch: int = 8) -> list[list[int]]:
    """`n` answers of the teacher to PROMPTS (cycled), temperature 0.8 / top-p 0.95, seeded per batch.

    Rows are left-padded for generation; each returned sample is its prompt (chat template) and its answer,
    up to and including EOS, without padding.
    """
    device = model.get_input_embeddings().weight.device
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    out: list[list[int]] = []
    for b0 in range(0, n, batch):
        prompts = [PROMPTS[(b0 + i) % len(PROMPTS)] for i in range(min(batch, n - b0))]
        rows = [list(tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                             tokenize=True, return_dict=True)["input_ids"]) for p in prompts]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        torch.manual_seed(seed * 7919 + b0)
        gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=0.8, top_p=0.95,
                             max_new_tokens=new_tokens, pad_token_id=pad)
        for r, g in zip(rows, gen[:, width:].tolist(), strict=True):
            answer: list[int] = []
            for t in g:
                answer.append(t)
                if t == tok.eos_token_id:
                    break
            out.append(r + answer)
    return out


def training_windows(tok: Any, model: Any, *, window: int, samples: int, seed: int,
                     root: Path | None = None, progress: Any = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """([N, window] token ids, description with hash) of the training text."""
    root = data.data_root(root)
    ids = heal_ids(tok, root)
    n_heal = len(ids)
    if samples:
        if progress:
            progress(f"data: the teacher writes {samples} answers ({window} new tokens each) to train on")
        for s in teacher_samples(model, tok, samples, window, seed):
            ids += s if s and s[-1] == tok.eos_token_id else s + _eos(tok)
    n = len(ids) // window
    if n == 0:
        raise ValueError(f"the training text has fewer than {window} tokens")
    x = torch.tensor(ids[:n * window], dtype=torch.long).view(n, window)
    digest = hashlib.sha256(x.numpy().tobytes()).hexdigest()
    return x, {"name": "agid-train", "hash": digest, "windows": n, "window": window, "tokens": n * window,
               "heal_tokens": n_heal, "teacher_samples": samples, "seed": seed,
               "description": f"NIWT heal split ({n_heal} tokens: held-out prose + GSM8K 40-63) + {samples} "
                              f"teacher answers to fixed prompts; {n} windows of {window} tokens"}


def eval_tasks(tok: Any, window: int, text_windows: int, gsm8k: int, root: Path | None = None) -> list[LMTask]:
    """The lab's eval split: held-out prose (second half of each window scored) and GSM8K solutions."""
    root = data.data_root(root)
    tasks = [text_task(tok, data.held_text("eval"), "text", window, 4, text_windows)]
    if gsm8k:
        tasks.append(gsm8k_nll_task(tok, data.gsm8k_items(root, "eval", gsm8k), 4))
    return tasks
