"""Every parser of outside input, fuzzed with its hostile corpus and a small Hypothesis budget (`nexus bench fuzz`
runs more): no crash, and every refusal a typed error with a message a user can read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nexus_engine.bench import fuzz
from nexus_engine.config import limits

EXAMPLES = {"router": 25, "audio_samples": 40, "video": 30}  # the slower targets get fewer cases
# crashes found in modules this harness may only call, reported to their owners (docs/reliability.md)
KNOWN = {"bitmask": "deep: RecursionError", "adapter_manifest": "deep: RecursionError"}


@pytest.fixture(scope="module")
def found(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, fuzz.Target]]:
    limits.reset()
    targets, _ = fuzz.targets(tmp_path_factory.mktemp("fuzz"))
    yield targets
    limits.reset()


@pytest.mark.parametrize("name", ["models_toml", "protocol", "bitmask", "adapter_manifest", "image", "audio_file",
                                  "audio_samples", "video", "router", "requests"])
def test_no_crash_and_readable_refusals(found: dict[str, fuzz.Target], name: str) -> None:
    if name not in found:
        pytest.skip(f"{name}: its module is not importable in this checkout")
    tally = fuzz.run_target(found[name], EXAMPLES.get(name, 60), seed=1)
    crashes = [c for c in tally.crash_examples if not c.startswith(KNOWN.get(name, "\0"))]
    assert tally.crashes == len(tally.crash_examples) - len(crashes) <= 1 and not crashes, tally.crash_examples
    assert tally.unreadable == 0, tally.unreadable_examples
    assert tally.cases >= EXAMPLES.get(name, 60)
    assert tally.typed > 0 or name == "router"  # the corpus does get refused (the router routes anything)


def test_deeply_nested_json_is_a_typed_error(found: dict[str, fuzz.Target], tmp_path: Path) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for name in KNOWN:
        tally = fuzz.Tally(name)
        found[name].check(deep, tally, "deep")
        assert tally.crashes == 0, tally.crash_examples


def test_the_fuzz_bench_writes_its_figures() -> None:
    r = fuzz.run(max_examples=3, only=("protocol", "requests"))
    assert set(r["targets"]) == {"protocol", "requests"} and r["total"]["cases"] > 20
    assert r["goals"] == {"crashes == 0": True, "every failure readable": True}
