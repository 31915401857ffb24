"""Task data and metrics: splits stay disjoint, chance is recognised, answers are parsed, retention is defined."""

from __future__ import annotations

import pytest
import torch

from nexus_engine import testing
from nexus_engine.research.niwt import data, metrics


def test_committed_samples_have_every_split() -> None:
    root = data.SAMPLES
    splits = {s: data.gsm8k_items(root, s) for s in ("select", "eval", "heal")}
    assert [len(v) for v in splits.values()] == [8, 32, 24]
    ids = [{it.index for it in v} for v in splits.values()]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2]) and not (ids[0] & ids[2])
    assert splits["eval"][0].answer.lstrip("-").isdigit() and "<<" not in splits["eval"][0].solution
    sel, ev = data.mmlu_items(root, "select", 57), data.mmlu_items(root, "eval", 57)
    assert len(sel) == len(ev) == 57 and len({i.subject for i in ev}) == 57
    assert not {i.question for i in sel} & {i.question for i in ev}
    assert all(0 <= i.answer <= 3 for i in ev)
    texts = [data.held_text(s) for s in ("select", "eval", "heal")]
    assert all(len(t) > 1500 for t in texts) and len(set(texts)) == 3


def test_shared_data_gives_the_same_items_as_the_samples() -> None:
    if not (data.SHARED / "gsm8k" / "test.jsonl").exists():
        pytest.skip("../shared/data is not here")
    assert data.gsm8k_items(data.SHARED, "eval") == data.gsm8k_items(data.SAMPLES, "eval")
    assert data.mmlu_items(data.SHARED, "eval", 57) == data.mmlu_items(data.SAMPLES, "eval", 57)


@pytest.mark.parametrize(("text", "want"), [
    ("so she has 18 eggs.\n#### 18", "18"), ("The answer is $1,200.", "1200"), ("It is 3.50 or 4", "4"),
    ("#### 7.00", "7"), ("no digits here", None), ("-5 degrees", "-5"),
])
def test_final_number(text: str, want: str | None) -> None:
    assert metrics.final_number(text) == want


def test_judge_flags_chance_and_floor() -> None:
    assert not metrics.judge("accuracy", 0.30, 40, 0.25)["usable"]  # 12/40 is not clearly above 25%
    assert metrics.judge("accuracy", 0.60, 40, 0.25)["usable"]
    assert not metrics.judge("exact match", 1 / 16, 16, 0.05)["usable"]
    assert metrics.judge("ppl", 0, 0, None)["usable"]
    assert metrics.wilson_low(0, 10) == pytest.approx(0.0, abs=1e-12)


def test_lm_task_scoring_and_retention() -> None:
    task = testing.tiny_lm_task(vocab=16, windows=2, window=8, batch=2)
    b = task.batches[0]
    logits = torch.randn(2, len(b.keep), 16, generator=torch.Generator().manual_seed(0))
    same = task.finalize(task.score(logits, logits, b))
    assert same["kl"] == pytest.approx(0.0, abs=1e-7) and same["top1_agreement"] == 1.0
    assert same["tokens"] == 2 * len(b.keep)
    worse = task.finalize(task.score(logits * 0, logits, b))  # uniform prediction
    assert worse["ppl"] == pytest.approx(16.0, rel=1e-5) and worse["kl"] > 0
    assert metrics.retention(task, {"ppl": 10.0}, {"ppl": 12.5}) == pytest.approx(0.8)


def test_choice_task_reads_the_letter_at_each_rows_last_position() -> None:
    items = data.mmlu_items(data.SAMPLES, "eval", 3)

    class Tok:  # one token per character: prompts differ in length, so rows end at different positions
        pad_token_id = 0
        eos_token_id = 0

        def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
            return {"input_ids": [1 + ord(c) % 90 for c in text]}

    task = metrics.mmlu_task(Tok(), items, batch=3)
    b = task.batches[0]
    logits = torch.zeros(3, len(b.keep), 100)
    for row in range(3):  # put the right answer's letter on top at that row's own last position
        logits[row, b.mask[row], task.letter_ids[int(b.targets[row])]] = 5.0
    got = task.finalize(task.score(logits, logits, b))
    assert got["accuracy"] == 1.0 and got["n"] == 3
