"""The audio side of AGID on real components: utterances spoken by the starter Piper voice, pooled Whisper base
encoder states, and a projector trained against a tiny frozen LLM. The projector must carry what was said (its
training answers get much likelier, and likelier with their own audio than with another utterance's), its adapter
is refused for another tower, an interrupted run resumes to the same weights, and training it leaves the vision
projector's files untouched."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from nexus_engine.consolidation import adapters
from nexus_engine.consolidation import projector as pj
from nexus_engine.research.agid import audio, scenes, vision
from nexus_engine.research.agid.errors import AdapterMismatchError, TrainingInterrupted
from nexus_engine.research.agid.teacher import Teacher, spec_of
from nexus_engine.research.agid.trainer import TrainConfig
from tests.research.prefix_reader import teach_to_read

TRAIN, EVAL = 24, 6


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Real towers, the utterances synthesized once into a cache, a tiny LLM made able to read a prefix, and a
    vision projector already installed in the adapters root the audio runs write to."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("audio")
    tts = vision.load_tower(spec_of("piper-joe", ("tts",)))
    asr = vision.load_tower(spec_of("whisper-base", ("asr",)))
    data = audio.build_data(_cfg(tmp), tts, asr, lambda m: None)
    teacher = _audio_lm(data["train"])
    root = tmp / "adapters"
    effnet = vision.load_tower(spec_of("efficientnet-lite0", ("image_encoder",)))
    vision.run_vision(vision.VisionConfig(llm="tiny-lm", ocr=None, train_scenes=8, eval_scenes=1, eval_novel=0,
                                          coco=tmp / "no-coco", batch=4, max_new_tokens=2, root=root,
                                          train=TrainConfig(steps=2, lr=1e-3, warmup=1, log_every=100)),
                      progress=lambda m: None, teacher=teacher, vision_tower=effnet)
    before = adapters.tree_hashes(root)
    res = audio.run_audio(_cfg(tmp, root), progress=lambda m: None, teacher=teacher, tts=tts, asr=asr)
    return {"tmp": tmp, "tts": tts, "asr": asr, "data": data, "teacher": teacher, "root": root, "res": res,
            "vision_before": before}


def _cfg(tmp: Path, root: Path | None = None, steps: int = 60, **train: Any) -> audio.AudioConfig:
    return audio.AudioConfig(llm="tiny-lm", train_utterances=TRAIN, eval_utterances=EVAL, eval_novel=EVAL, batch=8,
                             max_new_tokens=4, cache=tmp / "cache", root=root or tmp / "adapters", out=tmp / "out",
                             train=TrainConfig(**{"steps": steps, "lr": 1e-2, "warmup": 2, "checkpoint_every": 30,
                                                  "log_every": 1000} | train))


def _audio_lm(items: list[audio.Spoken]) -> Teacher:
    """A tiny llama over the utterances' vocabulary, made "ALM-ready" the way real ones are: trained together with
    a throwaway projector on spoken utterances, then frozen. (A random LM cannot read a prefix at all.)"""
    from nexus_engine import testing
    from nexus_engine.config.schema import Source, TowerSpec

    words = sorted({w for q in (*audio.QUESTIONS, *audio.CARRIERS, pj.SYSTEM_AUDIO, "The user mentioned .")
                    for w in q.replace("{}", "").replace("?", " ?").replace(".", " .").split()}
                   | {"a", "two", "three", "and", "system", "user", "assistant", ":", *scenes.COLORS, *scenes.SHAPES,
                      *(s + "s" for s in scenes.SHAPES)})
    tok = testing.tiny_word_tokenizer(tuple(words), max_length=512)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
                         "{% if add_generation_prompt %}assistant : {% endif %}")
    model = testing.tiny_llama(hidden=64, layers=2, vocab=len(tok.get_vocab()), seed=0)
    spec = TowerSpec(name="tiny-lm", kind="llm", backend="transformers", capabilities=(), source=Source(path="/x"),
                     quantization="fp32", width=64)
    throwaway = pj.Projector(512, 64, 64, pj.AUDIO_TOKENS, emb_rms=pj.embedding_rms(model))
    loss = audio.prefix_loss(audio.AudioConfig(batch=16), Teacher(model, tok, spec, "-"), throwaway, items,
                             torch.device("cpu"))
    teach_to_read(model, loss, throwaway)
    return Teacher(model, tok, spec, "sha256:2222333344445555")


def test_utterances_are_exact_and_whisper_hears_them(lab: dict[str, Any]) -> None:
    a, b = audio.utterance(7), audio.utterance(7)
    assert a == b and scenes.describe(list(a.kinds)) in a.text
    assert not any((k.color, k.shape) in scenes.NOVEL for i in range(TRAIN) for k in audio.utterance(i).kinds)
    assert all(audio.utterance(i, novel=True).kinds for i in range(5))
    data = lab["data"]
    held = data["eval_seen"] + data["eval_novel"]
    assert all(any((k.color, k.shape) in scenes.NOVEL for k in it.kinds) for it in data["eval_novel"])
    # the transcripts (the text path's input) name what was said: Piper and Whisper really ran
    assert sum(audio.score(it.transcript, it)["objects"] for it in held) / len(held) >= 0.75, [
        (it.text, it.transcript) for it in held]
    feats = torch.stack([it.feats for it in data["train"]])
    assert feats.shape == (TRAIN, pj.AUDIO_TOKENS, 512) and torch.isfinite(feats).all()
    assert (feats[0] - feats[1]).abs().mean() > 0.05  # different utterances, different states


def test_projector_learns_what_was_said(lab: dict[str, Any]) -> None:
    res, teacher = lab["res"], lab["teacher"]
    fit = res["nll"]["train_fit"]
    assert fit["trained"] < 0.6 * fit["untrained"], fit
    assert res["audio"]["in_width"] == 512 and res["audio"]["latent"] == 256 and res["audio"]["out_width"] == 64
    assert set(res["eval"]) == {f"{s}/{p}" for s in ("eval_seen", "eval_novel") for p in vision.PATHS}
    assert "notes" in res["eval"]["eval_seen/text"] and res["eval"]["eval_seen/text"]["samples"][0]["context"]
    m = adapters.read_manifest(Path(res["adapter"]["folder"]), tower="whisper-base", kind="audio_projector")
    assert m["teacher"]["tower"] == "tiny-lm" and m["source"]["tts"] == "piper-joe"
    assert set(m["data"]) == {"utterances/train", "utterances/eval_seen", "utterances/eval_novel"}
    # the projector carries the utterance, not just an identity it memorised: held-out answers (other sentences,
    # other speech) are likelier given their own audio than given another utterance's
    held = res["nll"]["eval_seen"]
    assert held["own"] < held["other"] - 0.3, held
    # and each training answer is likelier with its own audio than another's
    proj, _ = audio.load_projector(_cfg(lab["tmp"], lab["root"]), teacher)
    loss = audio.prefix_loss(_cfg(lab["tmp"]), teacher, proj, [], torch.device("cpu"))
    items = lab["data"]["train"]
    feats = [it.feats for it in items]
    own, other = loss.answer_nll(items), loss.answer_nll(items, feats[TRAIN // 2:] + feats[:TRAIN // 2])
    assert own < other - 0.2, (own, other)


def test_training_audio_leaves_the_vision_projector_alone(lab: dict[str, Any]) -> None:
    before, after = lab["vision_before"], adapters.tree_hashes(lab["root"])
    vision_files = {k: v for k, v in before.items() if k.startswith("efficientnet-lite0/")}
    assert "efficientnet-lite0/vision_projector/adapter.safetensors" in vision_files
    assert {k: v for k, v in after.items() if k.startswith("efficientnet-lite0/")} == vision_files
    assert {"whisper-base/audio_projector/adapter.safetensors", "whisper-base/audio_projector/manifest.json"} <= set(
        after)


def test_a_manifest_for_another_tower_is_refused(lab: dict[str, Any], tmp_path: Path) -> None:
    root = tmp_path / "adapters"
    shutil.copytree(lab["root"], root)
    cfg = _cfg(lab["tmp"], root)
    # another ASR tower pointed at this adapter
    shutil.copytree(root / "whisper-base", root / "whisper-small")
    with pytest.raises(AdapterMismatchError, match="for tower 'whisper-base', not 'whisper-small'"):
        audio.load_projector(audio.AudioConfig(tower="whisper-small", root=root), lab["teacher"])
    # the vision projector's folder put where the audio projector belongs
    target = root / "whisper-base" / "audio_projector"
    shutil.rmtree(target)
    shutil.copytree(root / "efficientnet-lite0" / "vision_projector", target)
    with pytest.raises(AdapterMismatchError, match="for tower 'efficientnet-lite0', not 'whisper-base'"):
        audio.load_projector(cfg, lab["teacher"])


def test_an_interrupted_run_resumes_from_its_checkpoint(lab: dict[str, Any], tmp_path: Path) -> None:
    towers = {"teacher": lab["teacher"], "tts": lab["tts"], "asr": lab["asr"]}
    straight = audio.run_audio(_cfg(lab["tmp"], tmp_path / "a", steps=4, checkpoint_every=2, log_every=1),
                               progress=lambda m: None, **towers)

    def stop_after_three(msg: str) -> None:
        if "step 3/4" in msg:
            raise KeyboardInterrupt

    cfg = _cfg(lab["tmp"], tmp_path / "b", steps=4, checkpoint_every=2, log_every=1)
    with pytest.raises(TrainingInterrupted):
        audio.run_audio(cfg, progress=stop_after_three, **towers)
    assert list((tmp_path / "b" / "whisper-base" / "audio_projector" / "checkpoints").glob("projector-step-*.json"))
    resumed = audio.run_audio(cfg, progress=lambda m: None, **towers)
    assert resumed["curve"]["resumed_from"] == 3
    assert resumed["curve"]["curve"] == straight["curve"]["curve"]
    assert resumed["adapter"]["sha256"] == straight["adapter"]["sha256"]
