"""The lab end to end (`nexus profile run` on a tiny random model with SmolLM2's tokenizer), the CLI, and the
real starter model where it is cheap: prefix cache = naive sweep, and a bitmask applied at tower load."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from nexus_engine import paths, testing
from nexus_engine.cli.main import main
from nexus_engine.cli.profile_cmd import quick
from nexus_engine.config import load_models_toml
from nexus_engine.config.schema import Source, TowerSpec
from nexus_engine.research.niwt import bitmask, collapse, lab, stack, sweep
from nexus_engine.towers.base import GenParams
from nexus_engine.towers.llm_transformers import TransformersChat


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def _spec(folder: Path, **options: Any) -> TowerSpec:
    return TowerSpec(name="tiny", kind="llm", backend="transformers", capabilities=("reasoning",),
                     source=Source(path=str(folder)), quantization="fp32", dtype="fp32", device="cpu",
                     options={"n_threads": 1, **options})


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return testing.tiny_causal_lm_dir(tmp_path_factory.mktemp("tiny") / "m", layers=4, hidden=32)


@pytest.fixture(scope="module")
def lab_run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("niwt")
    cfg = quick(lab.LabConfig(tower="tiny", out=out, threads=1))
    cfg.max_remove, cfg.heal_at = 2, (1, 2)
    cfg.healing.steps = 3
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEXUS_HOME", str(out / "home"))
        return lab.run_lab(cfg, spec=_spec(tiny_dir)), out


def test_lab_writes_numbers_bitmasks_plots_and_report(lab_run: tuple[dict[str, Any], Path]) -> None:
    res, out = lab_run
    assert res["tower"]["num_layers"] == 4
    assert not res["usable"]["mmlu"]["usable"]  # a random model is at chance, and the lab says so
    assert "not above" in res["usable"]["mmlu"]["why"]
    assert set(res["selection"]) == {"text", "gsm8k"}  # only usable tasks decide
    for name in ("text", "gsm8k"):
        doc = bitmask.load_bitmask(out / f"bitmask-tiny-{name}.json")  # validated on read
        assert doc["teacher"]["num_layers"] == 4 and len(doc["importance"]["scores"]["skip_delta_nll"]) == 4
        assert doc["subspaces"][0]["basis"]["file"].startswith("bases/")
        assert (out / doc["subspaces"][0]["basis"]["file"]).exists()
    assert res["prefix_cache"]["max_abs_nll_difference"] < 1e-4
    assert res["prefix_cache"]["ratio_layer_calls"] < 0.6
    assert set(res["healed"]) == {"1", "2"} and res["healed"]["1"]["heal"]["adapters"] > 0
    assert res["goal"]["goal_layers"] == 1 and res["speed"]["collapsed_1"]["layers"] == 3
    saved = json.loads((out / "results-tiny.json").read_text())
    assert saved["goal"]["largest_n_holding_per_task"].keys() == {"text", "gsm8k", "mmlu"}
    md = (out / "report-tiny.md").read_text()
    assert "Retention vs layers removed" in md and "Prefix-activation cache" in md
    html = (out / "report-tiny.html").read_text()
    assert html.count("data:image/png;base64,") == 6  # self-contained
    for png in (out / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_validate_and_report(lab_run: tuple[dict[str, Any], Path], capsys: pytest.CaptureFixture) -> None:
    _, out = lab_run
    assert main(["profile", "validate", str(out / "bitmask-tiny-text.json")]) == 0
    assert "valid nexus.niwt.bitmask v1" in capsys.readouterr().out
    (out / "broken.json").write_text("{}")
    assert main(["profile", "validate", str(out / "broken.json")]) == 2
    assert "missing 'teacher'" in capsys.readouterr().err
    (out / "report-tiny.md").unlink()
    assert main(["profile", "report", "--out", str(out), "--tower", "tiny"]) == 0
    assert (out / "report-tiny.md").exists()


def test_cli_speed_on_a_tiny_architecture(tmp_path: Path) -> None:
    assert main(["profile", "speed", "--arch", "tiny", "--seq", "32", "--batch", "2", "--widths", "1",
                 "--out", str(tmp_path / "s.json")]) == 0
    got = json.loads((tmp_path / "s.json").read_text())
    assert got["variants"] == 6 * 3 and got["max_abs_nll_difference"] < 1e-4 and got["ratio_layer_calls"] < 0.65


def test_bitmask_option_collapses_the_tower_at_load(tiny_dir: Path, lab_run: tuple[dict[str, Any], Path]) -> None:
    _, out = lab_run
    doc = bitmask.load_bitmask(out / "bitmask-tiny-text.json")
    doc["layers"] = {"keep": [True, False, True, True], "skipped": [1], "strategy": "manual"}
    path = bitmask.save_bitmask(doc, out / "manual.json")
    tower = TransformersChat(_spec(tiny_dir, bitmask=str(path)))
    info = tower.load()
    assert info.details["bitmask"] == {"removed": [1], "layers_before": 4, "layers_after": 3}
    assert tower.torch_module().config.num_hidden_layers == 3
    list(tower.stream([{"role": "user", "content": "Hi"}], GenParams(max_tokens=4, temperature=0), threading.Event()))
    # it decoded through a KV cache with one slot per remaining layer, holding the whole conversation
    assert len(tower._cache.layers) == 3 and tower._cache.get_seq_length() == len(tower._past) > 0
    reference = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    collapse.collapse_model(reference, [0, 2, 3])
    ids = torch.randint(0, 1000, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the tower runs exactly the reference model with layer 1 removed
        torch.testing.assert_close(tower.torch_module()(input_ids=ids).logits, reference(input_ids=ids).logits)
    tower.unload()


# ------------------------------------------------------------------------------------- starter model
def test_prefix_cache_matches_naive_on_the_starter_model(shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SmolLM2-135M (30 layers) converted once per session: same metrics both ways, far fewer layer forwards."""
    monkeypatch.setenv("NEXUS_CACHE", str(shared_cache))
    spec = load_models_toml([paths.SHIPPED_MODELS_TOML]).towers["smollm2-hf"]
    loaded = lab.load_tower(spec)
    st = stack.decoder_stack(loaded.model)
    assert st.n_layers == 30
    from nexus_engine.research.niwt import data, metrics

    task = metrics.text_task(loaded.tok, data.held_text("select"), window=32, batch=1, max_windows=1)
    variants = [sweep.Variant("skip 20", skip=frozenset({20})), sweep.Variant("attn0 27", zero_attn=frozenset({27})),
                sweep.Variant("mlp0 25", zero_mlp=frozenset({25})), sweep.skip_variant([26, 28])]
    pre = sweep.run_variants(st, [task], variants, prefix=True)
    naive = sweep.run_variants(st, [task], variants, prefix=False)
    for v in variants:
        for key in ("nll", "kl", "top1_agreement"):
            assert pre.variants[v.name]["text"][key] == pytest.approx(naive.variants[v.name]["text"][key], abs=1e-4)
    assert pre.layer_calls == 9 + 3 + 5 + 2 and naive.layer_calls == 29 + 30 + 30 + 28
    assert pre.variants["skip 20"]["text"]["kl"] > 0  # a real layer matters


def test_cli_record_spectral_and_collapse_on_a_declared_tower(tiny_dir: Path, lab_run: tuple[dict[str, Any], Path],
                                                              tmp_path: Path) -> None:
    """A tower declared in the user's models.toml, as a user would: record, analyse, collapse."""
    paths.user_models_toml().write_text(
        f'[towers.tiny-niwt]\nkind = "llm"\nbackend = "transformers"\ncapabilities = ["reasoning"]\n'
        f'source = {{ path = "{tiny_dir}" }}\nquantization = "fp32"\ndtype = "fp32"\ndevice = "cpu"\n'
        '[towers.tiny-niwt.options]\nn_threads = 1\n')
    acts = tmp_path / "acts"
    assert main(["profile", "record", "--tower", "tiny-niwt", "--task", "gsm8k", "--sites", "residual,attn",
                 "--layers", "0,2", "--shard-tokens", "300", "--out", str(acts)]) == 0
    manifest = json.loads((acts / "manifest.json").read_text())
    assert manifest["sites"] == {"residual": [0, 2], "attn": [0, 2]} and manifest["model"]["tower"] == "tiny-niwt"
    assert len(manifest["shards"]) >= 2 and manifest["dataset"]["name"] == "gsm8k-eval"
    assert main(["profile", "spectral", str(acts), "--json", str(tmp_path / "spec.json")]) == 0
    spec = json.loads((tmp_path / "spec.json").read_text())
    assert spec["sites"]["residual"]["consecutive"]["pairs"] == [[0, 2]]
    _, out = lab_run
    assert main(["profile", "collapse", "--tower", "tiny-niwt", "--bitmask", str(out / "bitmask-tiny-text.json"),
                 "--json", str(tmp_path / "c.json")]) == 0
    got = json.loads((tmp_path / "c.json").read_text())
    assert got["layers_after"] == 4 - len(got["removed"]) and set(got["retention"]) == {"text", "gsm8k", "mmlu"}
    assert got["speed"]["collapsed"]["layers"] == got["layers_after"]
