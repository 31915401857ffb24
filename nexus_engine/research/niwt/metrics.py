"""Task metrics, each scored against the unperturbed model on the same batch.

- `LMTask`: next-token log-likelihood on scored positions: perplexity, top-1 agreement and KL(full || variant).
  Used for held-out text (the second half of each window is scored, so every scored token has at least half a
  window of context) and for GSM8K worked solutions (only the solution tokens are scored: "math-text
  perplexity", which stays meaningful on models far below GSM8K's exact-match floor).
- `ChoiceTask`: MMLU by the log-likelihood of the answer letter after "Answer:" (0-shot), plus agreement and KL of
  the 4-way letter distribution.
- `gsm8k_exact_match`: greedy decoding and the final number, for models above the floor.

A metric whose full-model value is not clearly above chance (or the floor) is flagged `usable: false` and never
drives a decision (`judge`). Batches are right-padded: with causal attention a real token never sees the padding
after it, so no attention mask is needed, and the prefix cache can inject hidden states unchanged.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from nexus_engine.errors import BadInputError
from nexus_engine.research.niwt.data import ChoiceItem, MathItem, digest


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T] right-padded
    keep: torch.Tensor  # [K] positions whose logits the task reads (shared by the batch)
    targets: torch.Tensor  # LM: [B, K] next token at each kept position; choice: [B] answer index
    mask: torch.Tensor  # LM: [B, K] bool, which (row, position) pairs count; choice: [B] index into keep
    lengths: list[int] | None = None  # real (unpadded) length of each row; None: no padding

    @property
    def tokens(self) -> int:
        return int(self.input_ids.numel())

    def rows(self) -> list[list[int]]:
        """The token ids of each row without its right padding."""
        ids = self.input_ids.tolist()
        return ids if self.lengths is None else [r[:n] for r, n in zip(ids, self.lengths)]


def task_rows(task: Task) -> list[list[int]]:
    """Every example of a task as unpadded token ids (what activation recording runs)."""
    return [r for b in task.batches for r in b.rows()]


@dataclass
class LMTask:
    """Next-token likelihood on scored positions (held-out text, GSM8K solutions)."""

    name: str
    batches: list[Batch]
    dataset_hash: str
    description: str = ""
    chance: float | None = None  # perplexity has no chance level that matters: always usable
    decision_metric: str = "ppl"
    _memo: tuple[torch.Tensor, ...] = field(default=(), repr=False, compare=False)

    def _base(self, base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log p, p and argmax of the full model's logits, computed once per batch: a sweep scores every
        variant against the same `base`, and over a 49k vocabulary these cost a tenth of a small model's forward."""
        if not self._memo or self._memo[0] is not base:  # `is`: the memo holds `base`, so its id is never reused
            logp = F.log_softmax(base, -1)
            self._memo = (base, logp, logp.exp(), base.argmax(-1))
        return self._memo[1], self._memo[2], self._memo[3]

    def release(self) -> None:
        """Drop the memo (a few hundred MB for long batches) once a batch is done."""
        self._memo = ()

    def score(self, logits: torch.Tensor, base: torch.Tensor, b: Batch) -> dict[str, float]:
        """Sums over one batch. logits, base: [B, K, V] fp32."""
        base_logp, base_p, base_top = self._base(base)
        logp = F.log_softmax(logits, -1)
        m = b.mask
        nll = -logp.gather(-1, b.targets.unsqueeze(-1)).squeeze(-1)  # [B, K]
        kl = (base_p * (base_logp - logp)).sum(-1)  # [B, K]
        agree = logits.argmax(-1) == base_top
        return {"nll": float(nll[m].sum()), "kl": float(kl[m].sum()), "agree": float(agree[m].sum()),
                "n": float(m.sum())}

    def finalize(self, s: dict[str, float]) -> dict[str, float]:
        n = max(s["n"], 1.0)
        return {"nll": s["nll"] / n, "ppl": math.exp(s["nll"] / n), "kl": s["kl"] / n,
                "top1_agreement": s["agree"] / n, "tokens": s["n"]}


@dataclass
class ChoiceTask:
    """Multiple choice by the log-likelihood of the answer letter (MMLU)."""

    name: str
    batches: list[Batch]
    dataset_hash: str
    letter_ids: list[int] = field(default_factory=list)
    description: str = ""
    chance: float | None = 0.25
    decision_metric: str = "accuracy"

    def _letters(self, logits: torch.Tensor, b: Batch) -> torch.Tensor:
        rows = torch.arange(logits.shape[0])
        return logits[rows, b.mask][:, self.letter_ids]  # [B, 4]

    def score(self, logits: torch.Tensor, base: torch.Tensor, b: Batch) -> dict[str, float]:
        mine, ref = self._letters(logits, b), self._letters(base, b)
        lp, base_lp = F.log_softmax(mine, -1), F.log_softmax(ref, -1)
        return {"correct": float((mine.argmax(-1) == b.targets).sum()),
                "agree": float((mine.argmax(-1) == ref.argmax(-1)).sum()),
                "kl": float((base_lp.exp() * (base_lp - lp)).sum()), "n": float(len(b.targets))}

    def release(self) -> None:
        """Nothing to drop: the letter distributions are tiny."""

    def finalize(self, s: dict[str, float]) -> dict[str, float]:
        n = max(s["n"], 1.0)
        return {"accuracy": s["correct"] / n, "top1_agreement": s["agree"] / n, "kl": s["kl"] / n, "n": s["n"]}


Task = LMTask | ChoiceTask


# ------------------------------------------------------------------------------------ building tasks
def _pad(rows: list[list[int]], pad: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)


def text_task(tok: Any, text: str, name: str = "text", window: int = 128, batch: int = 4,
              max_windows: int | None = None) -> LMTask:
    """Non-overlapping windows of `window` tokens; positions window//2 .. window-2 are scored."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    windows = [ids[i:i + window] for i in range(0, len(ids) - window + 1, window)][:max_windows]
    if not windows:
        raise BadInputError(f"{name}: the text has {len(ids)} tokens, fewer than one window of {window}",
                            "use a longer text or a smaller window")
    keep = torch.arange(window // 2, window - 1)
    batches = []
    for i in range(0, len(windows), batch):
        x = torch.tensor(windows[i:i + batch], dtype=torch.long)
        batches.append(Batch(x, keep, x[:, keep + 1], torch.ones(len(x), len(keep), dtype=torch.bool)))
    return LMTask(name, batches, digest(text, window), f"{len(windows)} windows of {window} tokens, "
                  f"second half of each scored ({len(windows) * len(keep)} tokens)")


def math_prompt(q: str) -> str:
    return f"Question: {q}\nAnswer:"


def gsm8k_nll_task(tok: Any, items: list[MathItem], batch: int = 4, name: str = "gsm8k") -> LMTask:
    """Likelihood of each worked solution given its question (teacher-forced), solution tokens only."""
    rows, spans = [], []
    for it in items:
        p = tok(math_prompt(it.question), add_special_tokens=False)["input_ids"]
        a = tok(" " + it.solution + f"\n#### {it.answer}", add_special_tokens=False)["input_ids"]
        rows.append(p + a)
        spans.append((len(p) - 1, len(p) + len(a) - 1))  # positions whose next token is a solution token
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths share a batch: less padding
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    batches = []
    for i in range(0, len(order), batch):
        idx = order[i:i + batch]
        x = _pad([rows[j] for j in idx], pad)
        keep = torch.arange(min(spans[j][0] for j in idx), max(spans[j][1] for j in idx))
        targets = x[:, (keep + 1).clamp(max=x.shape[1] - 1)]
        mask = torch.stack([(keep >= spans[j][0]) & (keep < spans[j][1]) for j in idx])
        batches.append(Batch(x, keep, targets, mask, [len(rows[j]) for j in idx]))
    n = sum(e - s for s, e in spans)
    return LMTask(name, batches, digest([it.index for it in items], items),
                  f"{len(items)} GSM8K worked solutions, teacher-forced ({n} solution tokens)")


LETTERS = ("A", "B", "C", "D")


def mmlu_prompt(it: ChoiceItem) -> str:
    opts = "\n".join(f"{letter}. {c}" for letter, c in zip(LETTERS, it.choices))
    return f"The following is a multiple choice question about {it.subject}.\n\n{it.question}\n{opts}\nAnswer:"


def mmlu_task(tok: Any, items: list[ChoiceItem], batch: int = 8, name: str = "mmlu") -> ChoiceTask:
    letter_ids = [tok(" " + letter, add_special_tokens=False)["input_ids"][-1] for letter in LETTERS]
    rows = [tok(mmlu_prompt(it), add_special_tokens=False)["input_ids"] for it in items]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    batches = []
    for i in range(0, len(order), batch):
        idx = order[i:i + batch]
        lasts = torch.tensor([len(rows[j]) - 1 for j in idx])
        keep, where = torch.unique(lasts, return_inverse=True)  # where[b]: row b's position inside keep
        batches.append(Batch(_pad([rows[j] for j in idx], pad), keep,
                             torch.tensor([items[j].answer for j in idx]), where, [len(rows[j]) for j in idx]))
    return ChoiceTask(name, batches, digest(items), letter_ids,
                      f"{len(items)} MMLU questions, 0-shot, answer-letter log-likelihood")


# ------------------------------------------------------------------------------------- GSM8K decode
def final_number(text: str) -> str | None:
    """The number after '####' if the model wrote one, else the last number in the text."""
    tail = text.split("####", 1)[1] if "####" in text else text
    nums = re.findall(r"-?\d[\d,]*(?:\.\d+)?", tail)
    if not nums:
        return None
    n = nums[0] if "####" in text else nums[-1]
    n = n.replace(",", "").rstrip(".")
    return n.split(".")[0] if re.fullmatch(r"-?\d+\.0+", n) else n  # 7.00 is GSM8K's 7


@torch.inference_mode()
def gsm8k_exact_match(model: Any, tok: Any, items: list[MathItem], max_new_tokens: int = 160) -> dict[str, Any]:
    """Greedy decoding, 0-shot with the chat template; exact match of the final number."""
    correct, samples = 0, []
    device = model.get_input_embeddings().weight.device
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    for it in items:
        msgs = [{"role": "user", "content": it.question + "\nSolve it step by step, then write the final "
                 "answer as a number after '####'."}]
        enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        ids = enc["input_ids"].to(device)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=pad)
        text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        got = final_number(text)
        correct += got == it.answer
        if len(samples) < 2:
            samples.append({"question": it.question[:120], "answer": it.answer, "got": got, "text": text[:300]})
    return {"accuracy": correct / max(len(items), 1), "correct": correct, "n": len(items), "samples": samples}


# ------------------------------------------------------------------------------------------ judging
def wilson_low(k: float, n: float, z: float = 1.96) -> float:
    """Lower end of the Wilson 95% interval of a proportion k/n."""
    if n <= 0:
        return 0.0
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def judge(metric: str, value: float, n: float, chance: float | None) -> dict[str, Any]:
    """Is a full-model accuracy clearly above chance/floor? Perplexities always are usable."""
    if chance is None:
        return {"usable": True, "why": "likelihood metric: no chance level"}
    low = wilson_low(value * n, n)
    usable = low > chance
    why = (f"{metric} {value:.3f} on {int(n)} items; 95% interval starts at {low:.3f}, "
           f"{'above' if usable else 'not above'} chance/floor {chance:.2f}")
    return {"usable": usable, "why": why, "wilson_low": low, "chance": chance}


def retention(task: Task, full: dict[str, float], variant: dict[str, float]) -> float:
    """Variant / full on the task's decision metric; for perplexity the ratio is full / variant (lower is better)."""
    if task.decision_metric == "ppl":
        return full["ppl"] / variant["ppl"]
    return variant[task.decision_metric] / full[task.decision_metric] if full[task.decision_metric] else float("nan")
