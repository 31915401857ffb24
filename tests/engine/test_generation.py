"""Image and video generation through the real worker, on tiny random pipelines built from configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus_engine import paths, testing
from nexus_engine.client import EngineClient
from nexus_engine.errors import BadInputError, ModelMissingError
from nexus_engine.protocol import Done, GenerateRequest, Progress


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipelines")
    return {"sd3": testing.tiny_sd3_dir(root / "sd3"), "svd": testing.tiny_svd_dir(root / "svd")}


@pytest.fixture
def client(pipelines: dict[str, Path]):
    paths.user_models_toml().write_text(
        testing.tower_toml("tiny-sd3", "image_gen", pipelines["sd3"], "imagination")
        + testing.tower_toml("tiny-svd", "video_gen", pipelines["svd"], "video")
        + testing.starter_roles(imagination="tiny-sd3", video="tiny-svd"))
    with EngineClient() as c:
        yield c


def test_image_with_progress_eta_preview_and_recipe(client: EngineClient) -> None:
    from PIL import Image

    handle = client.submit(GenerateRequest(prompt="a red cube", width=32, height=32, steps=3, seed=7,
                                           preview_every=1))
    events = list(handle)
    steps = [e for e in events if isinstance(e, Progress) and not e.preview]
    assert [(e.step, e.total) for e in steps] == [(1, 3), (2, 3), (3, 3)]
    assert steps[0].eta_s is not None and steps[-1].eta_s == 0
    previews = [e.preview for e in events if isinstance(e, Progress) and e.preview]
    assert len(previews) == 2 and all(Path(p).is_file() for p in previews)
    done = events[-1]
    assert isinstance(done, Done) and done.stats["finish"] == "done"
    with Image.open(done.stats["path"]) as im:
        assert im.size == (32, 32)
        assert (im.text["prompt"], im.text["seed"], im.text["steps"], im.text["model"]) == (
            "a red cube", "7", "3", "tiny-sd3")


def test_cancel_stops_between_steps(client: EngineClient) -> None:
    handle = client.submit(GenerateRequest(prompt="a slow cube", width=32, height=32, steps=50, seed=1))
    for msg in handle:
        if isinstance(msg, Progress) and msg.step == 2:
            handle.cancel()
    stats = handle.wait(60).stats
    assert stats["finish"] == "cancelled" and "path" not in stats


def test_video_is_an_mp4_with_frames(client: EngineClient, tmp_path: Path) -> None:
    import av
    import numpy as np
    from PIL import Image

    still = tmp_path / "still.png"
    Image.fromarray(np.full((32, 32, 3), 120, dtype=np.uint8)).save(still)
    stats = client.submit(GenerateRequest(kind="video", image=str(still), width=32, height=32, steps=2, frames=3,
                                          seed=0)).wait(120).stats
    with av.open(stats["path"]) as container:
        frames = list(container.decode(video=0))
    assert stats["path"].endswith(".mp4") and len(frames) == 3


@pytest.mark.parametrize(("change", "match"), [
    ({"prompt": " "}, "prompt is empty"),
    ({"width": 30}, "multiples of 8"),
    ({"width": 4096}, "out of range"),
    ({"steps": 0}, "steps must be"),
    ({"kind": "gif"}, "unknown generation kind"),
])
def test_bad_requests_are_clear_errors(client: EngineClient, change: dict, match: str) -> None:
    req = GenerateRequest(**{"prompt": "x", "width": 32, "height": 32, "steps": 1, **change})
    with pytest.raises(BadInputError, match=match):
        client.submit(req).wait(30)


def test_no_generation_tower_says_how_to_add_one() -> None:
    with EngineClient() as c:
        with pytest.raises(ModelMissingError, match="no image generation tower") as info:
            c.submit(GenerateRequest(prompt="a cat", width=32, height=32, steps=1)).wait(30)
    assert 'kind = "image_gen"' in info.value.hint
