"""Healing: LoRA starts as the identity change, merges exactly, and distillation moves the collapsed model
towards the full one."""

from __future__ import annotations

import copy

import pytest
import torch

from nexus_engine import testing
from nexus_engine.research.niwt import collapse, heal
from nexus_engine.research.niwt.sweep import compare


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def test_neighbours_of_each_cut() -> None:
    kept = [0, 1, 3, 4, 7, 8, 9]  # 2 removed, then 5-6 removed
    assert heal.neighbours(kept, [2, 5, 6]) == [1, 2, 3, 4]  # collapsed indices of layers 1, 3 and 4, 7
    assert heal.neighbours(kept, [2], width=2) == [0, 1, 2, 3]
    assert heal.neighbours([1, 2, 3], [0]) == [0]  # a cut at the start has only a layer after it


def test_lora_starts_at_zero_and_merges_exactly() -> None:
    model = testing.tiny_llama(layers=3, vocab=64)
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        added = heal.add_lora(model, [0, 2], rank=4)
        assert len(added) == 2 * 7
        torch.testing.assert_close(model(input_ids=ids).logits, before)  # B = 0: no change yet
        for m in added:
            m.B.normal_(0, 0.05)
        wrapped = model(input_ids=ids).logits
        assert heal.merge_lora(model) == 14
        assert not any(isinstance(m, heal.LoRALinear) for m in model.modules())
        torch.testing.assert_close(model(input_ids=ids).logits, wrapped, rtol=1e-4, atol=1e-5)
    assert (wrapped - before).abs().max() > 1e-4


def test_healing_reduces_kl_to_the_full_model() -> None:
    teacher = testing.tiny_llama(layers=4, hidden=32, vocab=64, seed=1)
    with torch.no_grad():  # scale the weights up so removing a layer matters
        for p in teacher.parameters():
            if p.dim() == 2:
                p.mul_(5)
    student = copy.deepcopy(teacher)
    kept, removed = [0, 1, 3], [2]
    collapse.collapse_model(student, kept)
    windows = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(2))
    task = testing.tiny_lm_task(vocab=64, windows=4, window=16, seed=5)
    kl_before = compare(teacher, student, [task])["text"]["kl"]
    log = heal.heal(student, teacher, windows, kept, removed, heal.HealConfig(steps=60, lr=1e-2, rank=4), batch=4)
    kl_after = compare(teacher, student, [task])["text"]["kl"]
    assert log["adapted_layers"] == [1, 3] and log["loss_last"] < log["loss_first"]
    assert kl_after < 0.8 * kl_before  # also on windows it never trained on
