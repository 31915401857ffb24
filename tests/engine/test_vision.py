"""Vision on the starter path with the real models: COCO descriptions, the chat path, video, bad input, drawing
from the chat (tiny random SD3 through the real worker), and the seed path on tiny VLM/SigLIP2 models."""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from nexus_engine import paths, testing
from nexus_engine.client import EngineClient
from nexus_engine.config import load_models_toml
from nexus_engine.engine import Engine
from nexus_engine.errors import BadInputError, ModelMissingError
from nexus_engine.protocol import ChatRequest, DescribeRequest, Done, Message, Progress, TokenChunk
from nexus_engine.vision import compose, labels, service
from nexus_engine.vision.chat import imagine_prompt
from nexus_engine.vision.describe import MAYBE, ImageDescription, Seen, seen_from

COCO = next((p for p in (paths.REPO_ROOT.parent / "shared/data/coco", Path("/work/shared/data/coco"))
             if (p / "captions.json").is_file()), None)
needs_coco = pytest.mark.skipif(COCO is None, reason="the COCO sample (shared/data/coco) is not here")
STOP = frozenset({"a", "an", "the", "of", "on", "in", "with", "and", "or", "to", "is", "are", "at", "by", "for",
                  "from", "some", "two", "it", "its", "that", "this", "there", "their"})


# ------------------------------------------------------------------------------------------ shared work
@contextmanager
def home(path: str) -> Iterator[None]:
    old = os.environ.get("NEXUS_HOME")
    os.environ["NEXUS_HOME"] = path
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("NEXUS_HOME", None)
        else:
            os.environ["NEXUS_HOME"] = old


@cache
def coco_described() -> tuple[str, Engine, list[service.Described], dict[str, list[str]]]:
    """Every COCO image described (and indexed) once per test run, in a home of its own: (home, engine,
    descriptions, captions by path). test_search.py ranks this index."""
    assert COCO is not None
    data = json.loads((COCO / "captions.json").read_text())
    files = {i["id"]: str(COCO / i["file_name"]) for i in data["images"]}
    captions: dict[str, list[str]] = {}
    for a in data["annotations"]:
        captions.setdefault(files[a["image_id"]], []).append(a["caption"])
    where = tempfile.mkdtemp(prefix="nexus-coco-")
    with home(where):
        engine = Engine(load_models_toml([paths.SHIPPED_MODELS_TOML]))
        described = service.describe_files(engine, [(f, "image") for f in files.values()], lambda m: None,
                                           threading.Event(), "coco")
    return where, engine, described, captions


def tokens(text: str) -> set[str]:
    """Lower-case words without stop words, with plain plural forms folded ('plates' -> 'plate')."""
    out = set()
    for w in re.findall(r"[a-z]+", text.lower()):
        if w not in STOP:
            out |= {w, w[:-1] if w.endswith("s") else w, w[:-2] if w.endswith("es") else w}
    return out


def mentions_caption_object(seen: list[Seen], captions: list[str]) -> bool:
    said = set().union(*(tokens(s.word) | tokens(" ".join(n for n, _ in s.classes)) for s in seen)) if seen else set()
    return bool(said & set().union(*(tokens(c) for c in captions)))


# ------------------------------------------------------------------------------------------------ COCO
@needs_coco
def test_coco_descriptions_mention_caption_objects(record_property: pytest.RecordProperty) -> None:
    _, _, described, captions = coco_described()
    assert all(d.description is not None for d in described)
    hits = [mentions_caption_object(d.description.seen, captions[d.path]) for d in described]
    rate = sum(hits) / len(hits)
    # random-label baseline: each image's own probabilities given to random classes (same confidence profile)
    rng = np.random.default_rng(0)
    base = []
    for _ in range(30):
        for d in described:
            probs = np.asarray([s.score for s in d.description.seen] + [0.0] * 1000)[:1000]
            base.append(mentions_caption_object(seen_from(probs[rng.permutation(1000)]), captions[d.path]))
    baseline = float(np.mean(base))
    sure = [(s, d) for d in described for s in d.description.seen if s.sure]
    maybe = [(s, d) for d in described for s in d.description.seen if not s.sure]
    precision = {band: (sum(mentions_caption_object([s], captions[d.path]) for s, d in items) / max(1, len(items)),
                        len(items)) for band, items in (("sure", sure), ("possibly", maybe))}
    report = {"images": len(hits), "hit_rate": round(rate, 3), "random_baseline": round(baseline, 3),
              "precision_sure": precision["sure"], "precision_possibly": precision["possibly"]}
    record_property("coco_description", report)
    print("\nCOCO starter description:", report)
    assert rate >= 0.6, report
    assert rate >= baseline + 0.4, report
    assert precision["sure"][0] >= 0.6, report  # a confident word is right most of the time


@needs_coco
def test_descriptions_say_possibly_and_cannot_tell() -> None:
    _, _, described, _ = coco_described()
    for d in described:
        text = d.sentence()
        parts = {p.split(" ", 1)[0]: p for p in text.split("; ")}
        for s in d.description.seen:
            assert s.score >= MAYBE
            assert s.phrase() in parts["shows" if s.sure else "possibly"]
        assert ("no readable text" in text) != bool(d.description.text)
    flat = seen_from(np.full(1000, 1 / 1000))
    assert flat == [] and "cannot tell" in service.Described("x.png", "image", _desc(flat)).sentence()


def _desc(seen: list[Seen]) -> ImageDescription:
    return ImageDescription(seen, [])


def test_ocr_text_is_quoted_verbatim(tmp_path: Path) -> None:
    from PIL import Image, ImageDraw, ImageFont

    path = tmp_path / "sign.png"
    im = Image.new("RGB", (480, 140), "white")
    ImageDraw.Draw(im).text((20, 40), "OPEN 24 HOURS", fill="black", font=ImageFont.load_default(size=40))
    im.save(path)
    engine = Engine(load_models_toml([paths.SHIPPED_MODELS_TOML]))
    stats = service.describe(engine, DescribeRequest(path=str(path)), lambda m: None, threading.Event())
    lines = stats["description"]["text"]
    assert "".join(lines).replace(" ", "") == "OPEN24HOURS"  # (RapidOCR may drop the narrow spaces)
    assert f'text in it: "{" / ".join(lines)}"' in stats["description"]["sentence"]  # quoted as read


def test_every_class_has_a_name_and_groups_sum() -> None:
    assert len(labels.names()) == 1000 and len(labels.word_of()) == 1000
    probs = np.zeros(1000)
    probs[[207, 208, 254]] = 0.2  # golden retriever, labrador, pug
    words = labels.group(probs)
    assert words[0][0] == "dog" and words[0][1] == pytest.approx(0.6)
    assert labels.word_of()[21] != "kite"  # ImageNet's kite is the bird of prey, not the toy


# ------------------------------------------------------------------------------------------- chat path
@needs_coco
def test_chat_with_an_image_describes_first_then_answers() -> None:
    where, engine, _, _ = coco_described()
    pizza = str(COCO / "000000160012.jpg")
    events: list[Message] = []
    with home(where):
        stats = engine.chat(ChatRequest(messages=[{"role": "user", "content": "What food is this?"}],
                                        attachments=[{"path": pizza, "kind": "image"}], max_tokens=24),
                            events.append, threading.Event())
    progress = [e.message for e in events if isinstance(e, Progress)]
    assert progress[0] == "describing image 1/1"
    assert "pizza" in stats["perception"][0] and stats["tower"] == "smollm2-chat"
    assert any(isinstance(e, TokenChunk) for e in events) and stats["tokens"] > 0


def test_report_goes_into_the_system_message() -> None:
    msgs = [{"role": "system", "content": "You are Nexus."}, {"role": "user", "content": "what is it?"}]
    out = compose.with_notes(msgs, ["[Image 1 (a.png): shows a cat (80%)]"])
    assert out[0]["role"] == "system" and out[0]["content"].startswith("You are Nexus.")
    assert "shows a cat (80%)" in out[0]["content"] and "cannot tell" in out[0]["content"]
    assert out[1] == msgs[1] and msgs[0]["content"] == "You are Nexus."  # the caller's list is untouched
    assert compose.with_notes([msgs[1]], ["[Image 1 (a.png): x]"])[0]["role"] == "system"


@pytest.mark.parametrize(("text", "prompt"), [
    ("draw a fox in the snow", "a fox in the snow"),
    ("Can you paint me a lighthouse at dusk?", "a lighthouse at dusk"),
    ("please generate an image of a red cube", "a red cube"),
    ("make a picture of two cats.", "two cats"),
    ("draw a conclusion from these numbers", None),
    ("draw up a plan for the week", None),
    ("what is a drawing?", None),
    ("how do I paint a wall", None),
    ("make a list of fruits", None),
])
def test_draw_intent_is_conservative(text: str, prompt: str | None) -> None:
    assert imagine_prompt(text) == prompt


# ------------------------------------------------------------------------------------------------ video
def _video(path: Path, scenes: list[Path], seconds: float = 2.0, fps: int = 5, codec: str = "mpeg4") -> Path:
    import av
    from PIL import Image

    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for scene in scenes:
            frame = np.asarray(Image.open(scene).convert("RGB").resize((320, 240)))
            for _ in range(int(seconds * fps)):
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@needs_coco
def test_video_timeline_follows_the_scenes(tmp_path: Path) -> None:
    where, engine, _, _ = coco_described()
    scenes = [COCO / "000000160012.jpg", COCO / "000000073326.jpg", COCO / "000000136334.jpg"]  # pizza, fridge, ski
    video = _video(tmp_path / "three.mp4", scenes)
    events: list[Message] = []
    with home(where):
        stats = service.describe(engine, DescribeRequest(path=str(video), index=False), events.append,
                                 threading.Event())
    d = stats["description"]
    reasons = [f["reason"] for f in d["frames"]]
    assert reasons[0] == "first" and reasons.count("scene change") == 2
    assert [s["seen"][0][0] for s in d["segments"]] == ["pizza", "refrigerator", "ski"]
    assert [round(s["start"]) for s in d["segments"]] == [0, 2, 4]
    assert "0:00–0:02 shows a pizza" in d["sentence"]
    assert any("reading video" in e.message or "describing frame" in e.message
               for e in events if isinstance(e, Progress))
    assert d["ms"]["per_frame"] > 0


# -------------------------------------------------------------------------------------------- bad input
def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    from PIL import Image

    good = tmp / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good, quality=90)
    data = good.read_bytes()
    files = {
        "zero-byte": (tmp / "empty.png", "empty (0 bytes)"),
        "corrupt": (tmp / "noise.jpg", "not a readable image"),
        "truncated": (tmp / "half.jpg", "damaged or incomplete"),
        "bomb": (tmp / "bomb.png", "megapixels"),
        "empty video": (tmp / "empty.mp4", "empty (0 bytes)"),
        "junk video": (tmp / "junk.mp4", "not a readable video"),
        "no frames": (tmp / "noframes.mkv", "no frames"),
        "not media": (tmp / "notes.txt", "not an image or a video"),
    }
    files["zero-byte"][0].write_bytes(b"")
    files["corrupt"][0].write_bytes(os.urandom(2048))
    files["truncated"][0].write_bytes(data[: len(data) // 2])
    Image.new("1", (12_000, 12_000)).save(files["bomb"][0])  # 144 MP, a few KB on disk
    files["empty video"][0].write_bytes(b"")
    files["junk video"][0].write_bytes(os.urandom(4096))
    files["not media"][0].write_text("hello")
    import av

    with av.open(str(files["no frames"][0]), "w") as out:  # a video stream, never a frame
        s = out.add_stream("ffv1", rate=5)
        s.width, s.height = 32, 32
        out.start_encoding()
    return files


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    engine = Engine(load_models_toml([paths.SHIPPED_MODELS_TOML]))
    for name, (path, message) in _bad_files(tmp_path).items():
        with pytest.raises(BadInputError, match=re.escape(message)) as info:
            service.describe(engine, DescribeRequest(path=str(path)), lambda m: None, threading.Event())
        assert path.name in info.value.message, name


def test_a_bad_attachment_does_not_sink_the_chat(tmp_path: Path) -> None:
    from PIL import Image

    engine = Engine(load_models_toml([paths.SHIPPED_MODELS_TOML]))
    broken, ok = tmp_path / "broken.png", tmp_path / "ok.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    Image.new("RGB", (64, 64), "white").save(ok)
    stats = engine.chat(ChatRequest(messages=[{"role": "user", "content": "what are these?"}], max_tokens=8,
                                    attachments=[{"path": str(broken), "kind": "image"},
                                                 {"path": str(ok), "kind": "image"}]),
                        lambda m: None, threading.Event())
    assert stats["perception"][0].startswith("could not be read: broken.png")
    assert "readable text" in stats["perception"][1]


def test_animated_and_odd_codec_inputs_are_described(tmp_path: Path) -> None:
    from PIL import Image

    gif = tmp_path / "blink.gif"
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "white", "blue", "white", "red")]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    engine = Engine(load_models_toml([paths.SHIPPED_MODELS_TOML]))
    stats = service.describe(engine, DescribeRequest(path=str(gif), index=False), lambda m: None, threading.Event())
    assert "an animated GIF with 5 frames; 4 of them were looked at" in stats["description"]["sentence"]
    odd = _video(tmp_path / "odd.mkv", [gif], seconds=1.0, codec="ffv1")  # lossless FFV1 in Matroska
    stats = service.describe(engine, DescribeRequest(path=str(odd), index=False), lambda m: None, threading.Event())
    assert stats["description"]["codec"] == "ffv1" and stats["description"]["frames"]


# ------------------------------------------------------------------------------------- CLI, worker
@needs_coco
def test_cli_describe_through_the_worker(capsys: pytest.CaptureFixture[str]) -> None:
    from nexus_engine.cli.main import main

    assert main(["describe", str(COCO / "000000136334.jpg")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("shows a ski (90%)") and "no readable text" in out
    assert main(["describe", str(COCO / "000000136334.jpg"), "--json", "--no-index"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["description"]["seen"][0]["word"] == "ski" and stats["tower"] == "efficientnet-lite0"


def test_cli_imagine_and_animate_without_a_tower_say_how_to_add_one(capsys: pytest.CaptureFixture[str],
                                                                   tmp_path: Path) -> None:
    from PIL import Image

    from nexus_engine.cli.main import main

    assert main(["imagine", "a red cube", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "no image generation tower is installed" in err and 'kind = "image_gen"' in err
    still = tmp_path / "still.png"
    Image.new("RGB", (64, 64)).save(still)
    assert main(["animate", str(still)]) == 2
    assert "no video generation tower" in capsys.readouterr().err
    assert main(["imagine", "  "]) == 2 and "prompt is empty" in capsys.readouterr().err
    assert main(["imagine", "x" * 3000]) == 2 and "the limit is 2000" in capsys.readouterr().err
    assert main(["animate", str(tmp_path / "nothing.png")]) == 2 and "does not exist" in capsys.readouterr().err


def tiny_sd3_toml(sd3: Path, steps: int) -> str:
    return (testing.tower_toml("tiny-sd3", "image_gen", sd3, "imagination",
                               options={"steps": steps, "width": 32, "height": 32})
            + testing.starter_roles(imagination="tiny-sd3"))


@pytest.fixture(scope="module")
def tiny_sd3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return testing.tiny_sd3_dir(tmp_path_factory.mktemp("sd3") / "sd3")


def test_draw_from_chat_renders_inline_with_caption_and_keeps_the_chat_tower(tiny_sd3: Path) -> None:
    from PIL import Image

    paths.user_models_toml().write_text(tiny_sd3_toml(tiny_sd3, 3))
    with EngineClient() as client:
        client.submit(ChatRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=2)).wait(120)
        handle = client.submit(ChatRequest(messages=[{"role": "user", "content": "draw a red cube"}], seed=5))
        events = list(handle)
        status = client.status()
    steps = [(e.step, e.total) for e in events if isinstance(e, Progress)]
    assert steps == [(1, 3), (2, 3), (3, 3)]
    text = "".join(e.text for e in events if isinstance(e, TokenChunk))
    m = re.fullmatch(r"!\[tiny-sd3 · seed 5 · 3 steps\]\((.+\.png)\)", text)
    assert m is not None, text
    with Image.open(m.group(1)) as im:
        assert im.size == (32, 32) and im.text["prompt"] == "a red cube" and im.text["seed"] == "5"
    done = events[-1]
    assert isinstance(done, Done) and done.stats["caption"] == "tiny-sd3 · seed 5 · 3 steps"
    assert status.towers["smollm2-chat"]["tier"] == "hot"  # the budget had room: the chat model stayed


def test_draw_from_chat_cancels_between_steps(tiny_sd3: Path) -> None:
    paths.user_models_toml().write_text(tiny_sd3_toml(tiny_sd3, 50))
    with EngineClient() as client:
        handle = client.submit(ChatRequest(messages=[{"role": "user", "content": "sketch a slow cube"}],
                                           role="imagination"))
        for msg in handle:
            if isinstance(msg, Progress) and msg.step == 2:
                handle.cancel()
        stats = handle.wait(60).stats
    assert stats["finish"] == "cancelled" and "path" not in stats


def test_draw_from_chat_without_a_tower_says_how_to_add_one() -> None:
    engine = Engine(load_models_toml([paths.SHIPPED_MODELS_TOML]))
    with pytest.raises(ModelMissingError, match="no image generation tower") as info:
        engine.chat(ChatRequest(messages=[{"role": "user", "content": "draw a cat"}]), lambda m: None,
                    threading.Event())
    assert "[profiles.starter.roles]" in info.value.hint


# --------------------------------------------------------------------------------------------- seed path
def seed_toml(llava: Path, siglip: Path) -> str:
    return (testing.tower_toml("tiny-llava", "vlm", llava, "vision", latency="interactive", device="cpu")
            + testing.tower_toml("tiny-siglip", "image_encoder", siglip, "perception", latency="interactive",
                                 device="cpu", backend="transformers")
            + testing.starter_roles(vision="tiny-llava", perception=["tiny-siglip"]))


def test_seed_path_vlm_answers_and_siglip_indexes(tmp_path: Path) -> None:
    from PIL import Image

    from nexus_engine.protocol import SearchRequest

    llava, siglip = testing.tiny_llava_dir(tmp_path / "llava"), testing.tiny_siglip2_dir(tmp_path / "siglip")
    paths.user_models_toml().write_text(seed_toml(llava, siglip))
    engine = Engine(load_models_toml([paths.SHIPPED_MODELS_TOML, paths.user_models_toml()]))
    image = tmp_path / "red.png"
    Image.new("RGB", (48, 48), "red").save(image)
    events: list[Message] = []
    stats = engine.chat(ChatRequest(messages=[{"role": "user", "content": "what is this"}], max_tokens=3,
                                    temperature=0.0, attachments=[{"path": str(image), "kind": "image"}]),
                        events.append, threading.Event())
    assert stats["tower"] == "tiny-llava" and stats["images"] == 1 and stats["tokens"] >= 1
    assert any(isinstance(e, TokenChunk) for e in events)
    found = service.search(engine, SearchRequest(query="a photo of a cat", paths=[str(image)]), lambda m: None,
                           threading.Event())
    assert found["space"] == "siglip:tiny-siglip" and [r["path"] for r in found["results"]] == [str(image)]



def test_an_image_line_is_an_inline_image_segment_for_the_app() -> None:
    from app.markdown import split_segments  # pure Python: no Qt is imported

    segs = split_segments("Here it is:\n![tiny-sd3 · seed 5 · 3 steps](/data/generated/a.png)\nDone.")
    assert [(s.kind, s.text, s.lang) for s in segs] == [
        ("text", "Here it is:", ""), ("image", "/data/generated/a.png", "tiny-sd3 · seed 5 · 3 steps"),
        ("text", "Done.", "")]
    assert [s.kind for s in split_segments("![x](https://example.com/a.png)")] == ["text"]  # remote: not loaded


def test_notes_name_files_as_the_user_named_them_not_by_their_stored_hash() -> None:
    from nexus_engine.vision import compose

    d = service.Described("/data/attachments/3f9a.png", "image", None, "truncated")
    assert compose.note(1, d, "cat.png") == "[Image 1 (cat.png): could not be read: truncated]"
    assert compose.note(1, d) == "[Image 1 (3f9a.png): could not be read: truncated]"
    assert "(clip.mp4)" in compose.unseen_note(2, "/data/attachments/77.mp4", "video", "clip.mp4")
