"""The vision side of AGID: rendered scenes whose captions are exactly true, the answer scorers, the prompt splice,
and the projector trained against a tiny frozen LLM on real EfficientNet-Lite0 features (it must carry what is
in the image: held-out captions are likelier with the right image than with another one)."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch

from nexus_engine.consolidation import adapters
from nexus_engine.consolidation import projector as pj
from nexus_engine.research.agid import coco, scenes, vision
from nexus_engine.research.agid.trainer import TrainConfig
from tests.research.prefix_reader import teach_to_read


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def _blobs(image: object, rgb: tuple[int, int, int]) -> int:
    """Connected regions of exactly this colour (4-neighbour flood fill)."""
    mask = np.all(np.asarray(image) == np.array(rgb, dtype=np.uint8), axis=-1)
    seen = np.zeros_like(mask)
    n = 0
    for y, x in zip(*np.nonzero(mask), strict=True):
        if seen[y, x]:
            continue
        n += 1
        todo = deque([(y, x)])
        seen[y, x] = True
        while todo:
            cy, cx = todo.popleft()
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    todo.append((ny, nx))
    return n


def test_scenes_are_deterministic_and_their_captions_are_exact() -> None:
    a, b = scenes.render(11), scenes.render(11)
    assert a.caption == b.caption and a.image.tobytes() == b.image.tobytes()
    checked = 0
    for seed in range(40):
        s = scenes.render(seed)
        assert not s.novel
        colors = [k.color for k in s.kinds]
        for k in s.kinds:
            if colors.count(k.color) == 1:  # two kinds of one colour would merge in this count
                assert _blobs(s.image, scenes.COLORS[k.color]) == k.count, (seed, s.caption)
                checked += 1
        assert scenes.score(s.caption, s.kinds)["exact"] == 1.0
    assert checked > 30
    assert all(scenes.render(seed, novel=True).novel for seed in range(10))


def test_scores() -> None:
    kinds = [scenes.Kind("red", "circle", 2), scenes.Kind("blue", "square", 1)]
    perfect = scenes.score("I see two red circles and a blue square.", kinds)
    assert perfect == {"objects": 1.0, "colors": 1.0, "shapes": 1.0, "counts": 1.0, "invented": 0.0, "exact": 1.0}
    half = scenes.score("There are three red circles and a green star.", kinds)
    assert half["objects"] == 0.5 and half["counts"] == 0.0 and half["invented"] == 1.0 and half["exact"] == 0.0
    assert coco.score("A man rides a bike past a sofa.", ["A person on a bicycle.", "A cyclist in town"]) == {
        "hit": 1.0, "named": 3.0, "invented": 1.0}


def test_prompt_halves_put_the_image_in_the_last_user_turn(tiny_lm: tuple[object, object]) -> None:
    _, tok = tiny_lm
    left, right = pj.prompt_halves(tok, [{"role": "user", "content": "What is this?"}])
    text_l, text_r = tok.decode(left), tok.decode(right)
    assert pj.SYSTEM in text_l and text_l.rstrip().endswith("user")
    assert "What is this?" in text_r and text_r.rstrip().endswith("assistant")


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nexus_engine import testing

    folder = testing.tiny_causal_lm_dir(tmp_path_factory.mktemp("lm") / "tiny", hidden=64, layers=2, seed=1)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def effnet() -> object:
    from nexus_engine import registry
    from nexus_engine.research.agid.teacher import spec_of

    tower = registry.build(spec_of("efficientnet-lite0", ("image_encoder",)))
    tower.load()
    return tower


def _scene_lm(effnet: object) -> tuple[object, object]:
    """A tiny llama over the scene vocabulary, made "VLM-ready" the way real ones are: trained together with a
    throwaway projector on captioned scenes, then frozen. (A random LM cannot read a prefix at all, and a text-only
    one never learned to look at those positions.)"""
    from nexus_engine import testing
    from nexus_engine.config.schema import Source, TowerSpec
    from nexus_engine.research.agid.teacher import Teacher

    words = ["the", "image", "shows", "a", "two", "three", "and", ".", "?", "what", "is", "in", "do", "you", "see",
             "describe", "shapes", "are", "picture", "shown", "here", "system", "user", "assistant", ":",
             *scenes.COLORS, *scenes.SHAPES, *(s + "s" for s in scenes.SHAPES)]
    tok = testing.tiny_word_tokenizer(tuple(words), max_length=512)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
                         "{% if add_generation_prompt %}assistant : {% endif %}")
    model = testing.tiny_llama(hidden=64, layers=2, vocab=len(tok.get_vocab()), seed=0)
    spec = TowerSpec(name="tiny-lm", kind="llm", backend="transformers", capabilities=(), source=Source(path="/x"),
                     quantization="fp32", width=64)
    pre = [scenes.render(50_000 + i) for i in range(64)]
    items = [vision.Item(f, [s.caption]) for f, s in zip(pj.vision_tokens(effnet, [s.image for s in pre]), pre,
                                                          strict=True)]
    throwaway = pj.Projector(1280, 64, 64, pj.TOKENS, emb_rms=pj.embedding_rms(model))
    loss = vision.PrefixLoss(vision.VisionConfig(batch=16, coco_share=0.0), Teacher(model, tok, spec, "-"), throwaway,
                             items, [], torch.device("cpu"))
    teach_to_read(model, loss, throwaway)
    return Teacher(model, tok, spec, "sha256:1111222233334444"), spec


def test_projector_learns_what_is_in_the_image(effnet: object, tmp_path: Path) -> None:
    teacher, _ = _scene_lm(effnet)
    cfg = vision.VisionConfig(llm="tiny-lm", ocr=None, train_scenes=16, eval_scenes=2, eval_novel=2,
                              coco=tmp_path / "no-coco", batch=8, max_new_tokens=4, out=tmp_path / "out",
                              root=tmp_path / "adapters",
                              train=TrainConfig(steps=120, lr=1e-2, warmup=2, checkpoint_every=60, log_every=1000))
    res = vision.run_vision(cfg, progress=lambda m: None, teacher=teacher, vision_tower=effnet)
    curve = res["curve"]["curve"]
    assert sum(r["loss"] for r in curve[-10:]) < 0.7 * sum(r["loss"] for r in curve[:10])
    assert set(res["eval"]) == {f"{s}/{p}" for s in ("eval_seen", "eval_novel") for p in ("projector", "text", "none")}
    assert res["vision"]["in_width"] == 1280 and res["vision"]["latent"] == 512 and res["vision"]["out_width"] == 64
    folder = Path(res["adapter"]["folder"])
    m = adapters.read_manifest(folder, tower="efficientnet-lite0", kind="vision_projector")
    assert m["teacher"]["tower"] == "tiny-lm" and "scenes/train" in m["data"]
    assert "notes" in res["eval"]["eval_seen/text"] and "notes" not in res["eval"]["eval_seen/projector"]
    # evaluating the installed adapter again gives the same answers, and keeps the training fields
    again = vision.reevaluate(cfg, dict(res), progress=lambda m: None, teacher=teacher, vision_tower=effnet)
    assert again["eval"] == res["eval"] and again["curve"] == res["curve"]
    # the projector carries the image: held-out captions are much likelier given their own image than another's
    proj = pj.Projector(1280, 512, 64, pj.TOKENS)
    proj.load_state_dict(adapters.load_tensors(folder, m))
    held = [scenes.render(900_000 + i) for i in range(8)]
    feats = pj.vision_tokens(effnet, [s.image for s in held])
    loss = vision.PrefixLoss(cfg, teacher, proj, [], [], torch.device("cpu"))
    with torch.no_grad():
        own = sum(_caption_nll(loss, feats[i], held[i].caption) for i in range(8)) / 8
        other = sum(_caption_nll(loss, feats[(i + 4) % 8], held[i].caption) for i in range(8)) / 8
    assert own < other - 0.2, (own, other)


def _caption_nll(loss: vision.PrefixLoss, feats: torch.Tensor, caption: str) -> float:
    item = vision.Item(feats, [caption])
    loss.items, loss.cfg.batch, loss.cfg.coco_share = [item], 1, 0.0
    value, _ = loss(0)
    return float(value)
