"""Consolidation in the engine, on real towers (EfficientNet-Lite0 + a tiny transformers LLM built from a config):

- independence: each tower's adapter is its own folder; training one touches no other file (sha256 of every
  file before/after) and leaves the other's evaluation unchanged;
- the AGID text student loads with its tower through the residency manager (options.agid), and refuses a
  manifest written for another tower;
- an image turn takes the projector path when its adapter is there (and says so in the stats), the text
  composition otherwise, and falls back to text with a note when the adapter no longer matches the weights;
- models.toml's latent_width is validated; the app shows the path under the answer.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from nexus_engine import paths, testing
from nexus_engine.config.load import load_models_toml
from nexus_engine.consolidation import adapters
from nexus_engine.engine import Engine
from nexus_engine.errors import ConfigError
from nexus_engine.protocol import ChatRequest, TokenChunk
from nexus_engine.research.agid import scenes, text, vision
from nexus_engine.research.agid.teacher import Teacher, revision_of
from nexus_engine.research.agid.trainer import TrainConfig

ROLES = {"vision": "efficientnet-lite0", "perception": ["efficientnet-lite0"]}


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def _config(home: Path, lm: Path, options: str = "") -> Any:
    user = home / "models.toml"
    user.write_text(testing.tiny_lm_profile_toml(lm, ROLES, options))
    return load_models_toml([paths.SHIPPED_MODELS_TOML, user])


def _teacher(cfg: Any) -> Teacher:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = cfg.towers["tiny-lm"]
    folder = Path(spec.source.path)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Teacher(model, AutoTokenizer.from_pretrained(folder), spec, revision_of(spec))


def _train_text(teacher: Teacher, root: Path, work: Path) -> dict[str, Any]:
    cfg = text.TextConfig(tower="tiny-lm", remove=1, window=32, samples=0, eval_windows=2, gsm8k_eval=0,
                          min_rank=2, max_rank=4, speed=False, root=root, work=work,
                          local=TrainConfig(steps=10, lr=1e-2, checkpoint_every=10, log_every=100),
                          trajectory=TrainConfig(steps=2, lr=1e-3, warmup=1, checkpoint_every=2, log_every=100))
    return text.run_text(cfg, teacher, progress=lambda m: None)


def _train_projector(teacher: Teacher, effnet: Any, root: Path, seed: int) -> dict[str, Any]:
    cfg = vision.VisionConfig(llm="tiny-lm", ocr=None, train_scenes=12, eval_scenes=1, eval_novel=1,
                              coco=root / "no-coco", batch=4, max_new_tokens=2, root=root, seed=seed,
                              train=TrainConfig(steps=4, lr=1e-3, warmup=1, checkpoint_every=2, log_every=100))
    return vision.run_vision(cfg, progress=lambda m: None, teacher=teacher, vision_tower=effnet)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from nexus_engine import registry

    tmp = tmp_path_factory.mktemp("consolidation")
    lm = testing.tiny_causal_lm_dir(tmp / "tiny-lm", hidden=64, layers=3, seed=2)
    cfg = _config(tmp, lm)
    teacher = _teacher(cfg)
    effnet = registry.build(cfg.towers["efficientnet-lite0"])
    effnet.load()
    root = tmp / "adapters"
    res_text = _train_text(teacher, root, tmp / "work")
    before_projector = adapters.tree_hashes(root)
    res_vision = _train_projector(teacher, effnet, root, seed=0)
    return {"tmp": tmp, "lm": lm, "teacher": teacher, "effnet": effnet, "root": root, "text": res_text,
            "vision": res_vision, "before_projector": before_projector}


def test_training_one_towers_adapter_touches_no_other_file(setup: dict[str, Any]) -> None:
    from nexus_engine.consolidation.student import apply_text_adapter
    from nexus_engine.research.agid import textdata
    from nexus_engine.research.niwt.sweep import compare

    root, teacher = setup["root"], setup["teacher"]
    text_files = {k: v for k, v in setup["before_projector"].items() if k.startswith("tiny-lm/")}
    assert {"tiny-lm/text_bridges/adapter.safetensors", "tiny-lm/text_bridges/manifest.json",
            "tiny-lm/text_bridges/bitmask.json"} <= set(text_files)
    after_first = adapters.tree_hashes(root)
    assert {k: v for k, v in after_first.items() if k.startswith("tiny-lm/")} == text_files
    assert any(k.startswith("efficientnet-lite0/vision_projector/") for k in after_first)

    def text_eval() -> dict[str, float]:
        student = __import__("copy").deepcopy(teacher.model)
        apply_text_adapter(student, root / "tiny-lm" / "text_bridges", "tiny-lm", teacher.revision)
        return compare(teacher.model, student, textdata.eval_tasks(teacher.tok, 32, 2, 0))["text"]

    eval_before = text_eval()
    _train_projector(teacher, setup["effnet"], root, seed=1)  # retrain the other tower's adapter
    after = adapters.tree_hashes(root)
    assert {k: v for k, v in after.items() if k.startswith("tiny-lm/")} == text_files
    proj = "efficientnet-lite0/vision_projector/adapter.safetensors"
    assert after[proj] != after_first[proj]  # it really was retrained (another seed)
    assert text_eval() == eval_before


def _engine(setup: dict[str, Any], home: Path, options: str = "") -> Engine:
    return Engine(_config(home, setup["lm"], options), profile="t")


def _ask(engine: Engine, image: Path) -> tuple[str, dict[str, Any]]:
    got: list[str] = []

    def emit(msg: Any) -> None:
        if isinstance(msg, TokenChunk):
            got.append(msg.text)

    req = ChatRequest(id="r1", messages=[{"role": "user", "content": "What is in the image?"}], role="vision",
                      max_tokens=3, temperature=0.0, attachments=[{"path": str(image), "kind": "image"}])
    stats = engine.chat(req, emit, threading.Event())
    return "".join(got), stats


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "scene.png"
    scenes.render(5).image.save(path)
    return path


def test_image_turn_uses_the_projector_when_its_adapter_is_there(setup: dict[str, Any], nexus_home: Path,
                                                                 image: Path) -> None:
    import shutil

    shutil.copytree(setup["root"] / "efficientnet-lite0", paths.data_dir() / "adapters" / "efficientnet-lite0")
    _, stats = _ask(_engine(setup, nexus_home), image)
    assert stats["consolidation"] == "projector" and stats["tower"] == "tiny-lm"
    assert stats["towers"] == ["efficientnet-lite0", "tiny-lm"] and stats["image_tokens"] == 10
    assert stats["tokens"] >= 1 and "perception" not in stats


def test_unreadable_image_falls_back_to_the_text_path(setup: dict[str, Any], nexus_home: Path,
                                                     tmp_path: Path) -> None:
    import shutil

    shutil.copytree(setup["root"] / "efficientnet-lite0", paths.data_dir() / "adapters" / "efficientnet-lite0")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a PNG signature and nothing else
    _, stats = _ask(_engine(setup, nexus_home), bad)
    assert stats["consolidation"] == "text" and "projector not used" in stats["consolidation_note"]
    assert "could not be read" in stats["perception"][0]


def test_image_turn_without_adapter_composes_text(setup: dict[str, Any], nexus_home: Path, image: Path) -> None:
    _, stats = _ask(_engine(setup, nexus_home), image)
    assert stats["consolidation"] == "text" and stats["perception"] and "consolidation_note" not in stats


def test_adapter_for_other_weights_falls_back_to_text_with_a_note(setup: dict[str, Any], nexus_home: Path,
                                                                  image: Path) -> None:
    import shutil

    dest = paths.data_dir() / "adapters" / "efficientnet-lite0"
    shutil.copytree(setup["root"] / "efficientnet-lite0", dest)
    manifest = dest / "vision_projector" / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["teacher"]["revision"] = "sha256:ffffffffffffffff"
    manifest.write_text(json.dumps(doc))
    _, stats = _ask(_engine(setup, nexus_home), image)
    assert stats["consolidation"] == "text" and "revision" in stats["consolidation_note"]


def test_text_student_loads_with_its_tower_through_residency(setup: dict[str, Any], nexus_home: Path) -> None:
    from nexus_engine.research.agid.errors import AdapterMismatchError

    folder = setup["root"] / "tiny-lm" / "text_bridges"
    engine = _engine(setup, nexus_home, f'[towers.tiny-lm.options]\nagid = "{folder}"\n')
    tower, _ = engine.ensure_loaded("tiny-lm", lambda m: None)
    assert tower.torch_module().config.num_hidden_layers == 2  # one of three layers removed
    assert engine.residency.snapshot()["towers"]["tiny-lm"]["tier"] == "hot"
    req = ChatRequest(id="r2", messages=[{"role": "user", "content": "Hi"}], role="reasoning", max_tokens=2,
                      temperature=0.0)
    assert engine.chat(req, lambda m: None, threading.Event())["tokens"] >= 1
    # the same adapter named by another tower: refused, with the tower it belongs to in the message
    other = _config(nexus_home, setup["lm"], f'[towers.tiny-lm.options]\nagid = "{folder}"\n')
    spec = dataclasses.replace(other.towers["tiny-lm"], name="tiny-lm-2")
    from nexus_engine.towers.llm_transformers import TransformersChat

    with pytest.raises(AdapterMismatchError, match="for tower 'tiny-lm', not 'tiny-lm-2'"):
        TransformersChat(spec).load()


def test_latent_width_is_validated(tmp_path: Path) -> None:
    def load(extra: str) -> Any:
        user = tmp_path / "models.toml"
        user.write_text(f"[towers.efficientnet-lite0]\n{extra}\n")
        return load_models_toml([paths.SHIPPED_MODELS_TOML, user])

    assert load("latent_width = 256").towers["efficientnet-lite0"].latent_width == 256
    assert load("").towers["efficientnet-lite0"].width == 1280
    for bad in ("latent_width = 0", 'latent_width = "wide"', "width = -3"):
        with pytest.raises(ConfigError, match="width"):
            load(bad)


def test_app_shows_which_path_answered() -> None:
    pytest.importorskip("PySide6")
    from app.widgets.chat import format_info

    assert "image via trained projector" in format_info({"tower": "smollm2-hf", "consolidation": "projector"})
    assert "image via text notes" in format_info({"tower": "smollm2-chat", "consolidation": "text"})
    assert "image via" not in format_info({"tower": "smollm2-chat"})
