"""AGID on a tiny text teacher: cuts and bridges, the spectral rank, the whole pipeline (mask, recording,
local + trajectory training, retention rows, adapter + manifest), resume after an interrupt, and loading the
student back as a tower."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from nexus_engine import testing
from nexus_engine.config.schema import Source, TowerSpec
from nexus_engine.consolidation import adapters
from nexus_engine.research.agid import bridges as br
from nexus_engine.research.agid import text
from nexus_engine.research.agid.errors import TrainingInterrupted
from nexus_engine.research.agid.teacher import Teacher
from nexus_engine.research.agid.trainer import TrainConfig
from nexus_engine.research.niwt import collapse_model
from nexus_engine.research.niwt.sweep import compare


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def test_cuts_of_runs_of_removed_layers() -> None:
    cuts = br.cuts_of([0, 1, 4, 6], 8)
    assert [(c.first, c.last, c.at) for c in cuts] == [(2, 3, 2), (5, 5, 3), (7, 7, 4)]  # 7-7: the final norm
    assert [c.name for c in cuts] == ["2-3", "5-5", "7-7"]


def test_zero_bridges_are_the_plain_collapse_and_trained_ones_change_it() -> None:
    model = testing.tiny_llama(layers=4, vocab=64)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    plain = copy.deepcopy(model)
    collapse_model(plain, [0, 2, 3])
    collapse_model(model, [0, 2, 3])
    cuts = br.cuts_of([0, 2, 3], 4)
    bridged = br.Bridged(model, cuts, br.make_bridges(cuts, 32, {"1-1": 4}))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, plain(input_ids=ids).logits)
        bridged.bridges["1-1"].up.normal_(0, 0.5)
        assert (model(input_ids=ids).logits - plain(input_ids=ids).logits).abs().max() > 1e-3
    bridged.remove()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, plain(input_ids=ids).logits)


def test_spectral_rank_follows_the_update_rank() -> None:
    delta = testing.low_rank_activations(n=600, dim=48, rank=5)
    got = br.spectral_rank(delta, min_rank=1, max_rank=40)
    assert got["rank"] <= 5 and got["k99"] == 5
    assert br.spectral_rank(delta, min_rank=8)["rank"] == 8  # clamped


# ------------------------------------------------------------------------------------------- pipeline
def tiny_teacher(tmp: Path, layers: int = 5, hidden: int = 48) -> Teacher:
    """A tiny llama with SmolLM2's tokenizer and weights scaled up, so every removed layer matters."""
    folder = testing.tiny_causal_lm_dir(tmp / "tiny-lm", hidden=hidden, layers=layers, seed=3)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        for p in model.model.layers.parameters():
            if p.dim() == 2:
                p.mul_(3.0)
    for p in model.parameters():
        p.requires_grad_(False)
    spec = TowerSpec(name="tiny-lm", kind="llm", backend="transformers", capabilities=("reasoning",),
                     source=Source(path=str(folder)), quantization="fp32", width=hidden)
    return Teacher(model, AutoTokenizer.from_pretrained(folder), spec, "sha256:0123456789abcdef")


def tiny_config(tmp: Path, **kw: object) -> text.TextConfig:
    cfg = text.TextConfig(tower="tiny-lm", remove=2, window=32, samples=0, eval_windows=3, gsm8k_eval=0,
                          min_rank=4, max_rank=8, batch=4, speed=False, out=tmp / "out", root=tmp / "adapters",
                          work=tmp / "work",
                          local=TrainConfig(steps=40, lr=1e-2, warmup=2, checkpoint_every=20, log_every=100),
                          trajectory=TrainConfig(steps=10, lr=3e-3, warmup=2, checkpoint_every=4, log_every=100))
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Teacher, dict]:
    tmp = tmp_path_factory.mktemp("agid-text")
    teacher = tiny_teacher(tmp)
    res = text.run_text(tiny_config(tmp), teacher, progress=lambda m: None)
    return tmp, teacher, res


def test_pipeline_rows_and_agid_beats_the_untrained_collapse(trained: tuple[Path, Teacher, dict]) -> None:
    tmp, _, res = trained
    rows = res["rows"]
    assert set(rows) == {"teacher", "collapsed", "logit_only", "agid_local", "agid"}
    assert rows["teacher"]["retention"]["text"] == pytest.approx(1.0)
    assert res["sizes"]["layers_student"] == 3 and len(res["mask"]["removed"]) == 2
    for row in ("agid_local", "agid"):  # on the eval split, never trained on
        assert rows[row]["metrics"]["text"]["kl"] < rows["collapsed"]["metrics"]["text"]["kl"]
    local = res["curves"]["local"]["curve"]
    assert local[-1]["loss"] < local[0]["loss"]
    assert {"hidden", "kl"} <= set(res["curves"]["agid"]["curve"][0])
    assert "hidden" not in res["curves"]["logit"]["curve"][0]
    assert set(res["goal"]) >= {"ppl_retention_met", "beats_logit_only", "beats_collapsed"}
    # the adapter: one safetensors file + manifest + its bitmask, checkpoints cleared
    folder = Path(res["adapter"]["folder"])
    assert folder == tmp / "adapters" / "tiny-lm" / "text_bridges"
    m = adapters.read_manifest(folder, tower="tiny-lm", kind="text_bridges")
    assert m["teacher"]["revision"] == "sha256:0123456789abcdef" and m["bitmask"]["kept"] == res["mask"]["kept"]
    assert m["data"]["train"] == res["data"]["hash"] and "agid" in m["metrics"]
    assert not list((folder / "checkpoints").glob("*"))
    json.dumps(res)  # the results are plain JSON


def test_student_loads_back_with_the_same_metrics(trained: tuple[Path, Teacher, dict]) -> None:
    from nexus_engine.consolidation.student import apply_text_adapter
    from nexus_engine.research.agid import textdata

    _, teacher, res = trained
    student = copy.deepcopy(teacher.model)
    info = apply_text_adapter(student, Path(res["adapter"]["folder"]), "tiny-lm", teacher.revision)
    assert info["layers_after"] == 3 and set(info["bridges"]) == {c["name"] for c in res["mask"]["cuts"]}
    tasks = textdata.eval_tasks(teacher.tok, 32, 3, 0)
    got = compare(teacher.model, student, tasks)
    assert got["text"]["kl"] == pytest.approx(res["rows"]["agid"]["metrics"]["text"]["kl"], rel=1e-4)


def test_interrupted_run_resumes_to_the_same_adapter(trained: tuple[Path, Teacher, dict],
                                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _, teacher, res = trained
    cfg = tiny_config(tmp_path, work=Path(res["config"]["work"]))  # reuse the recorded activations
    real_train = text.train

    def interrupting(name: str, *a: object, **kw: object) -> object:
        if name == "agid":
            def stop(step: int) -> None:
                if step == 6:
                    raise KeyboardInterrupt
            kw["on_step"] = stop
        return real_train(name, *a, **kw)

    monkeypatch.setattr(text, "train", interrupting)
    with pytest.raises(TrainingInterrupted):
        text.run_text(cfg, teacher, progress=lambda m: None)
    ck = Path(cfg.root) / "tiny-lm" / "text_bridges" / "checkpoints"
    assert (ck / "agid-step-000007.json").exists() and (ck / "local-step-000040.json").exists()
    monkeypatch.setattr(text, "train", real_train)
    again = text.run_text(cfg, teacher, progress=lambda m: None)
    assert again["curves"]["agid"]["resumed_from"] == 7 and again["curves"]["local"]["resumed_from"] == 40
    assert again["adapter"]["sha256"] == res["adapter"]["sha256"]  # bit-identical to the uninterrupted run
    assert again["curves"]["agid"]["curve"] == res["curves"]["agid"]["curve"]


def test_cli_report_and_list(trained: tuple[Path, Teacher, dict], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    from nexus_engine.cli.main import main
    from nexus_engine.consolidation.adapters import write_json

    _, _, res = trained
    write_json(tmp_path / "results-text-tiny-lm.json", res)
    assert main(["train", "report", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "| AGID (local + trajectory) |" in report and "**Goal**" in report
    assert (tmp_path / "plots" / "text-tiny-lm-curves.png").stat().st_size > 1000
    assert main(["train", "list", "--adapters", str(Path(res["adapter"]["folder"]).parents[1])]) == 0
    assert "text_bridges" in capsys.readouterr().out
    assert main(["train", "report", "--out", str(tmp_path / "empty")]) == 2  # a clear error, not a traceback
