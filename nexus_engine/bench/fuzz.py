"""`nexus bench fuzz`: every parser of outside input, fed hand-made hostile corpora (fuzz_cases.py) and
property-based cases (Hypothesis: mutated valid files, random bytes, random structures).

A case may succeed or fail with a typed NexusError whose message a user can read (non-empty, one short
paragraph, no traceback). Anything else is a crash (goal: 0). Targets: models.toml, protocol messages, NIWT
bitmask JSON and adapter manifests (through their public load/validate functions), images, audio files, audio
sample arrays, video containers, router inputs, and the size checks on chat/generate requests.

Figures per target: cases tried, ok, typed failures, crashes, unreadable messages, the slowest case, and the
first few crashes with their inputs (repr, cut), written as JSON by `nexus bench fuzz`.
"""

from __future__ import annotations

import os
import platform
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nexus_engine.bench import fuzz_cases as fc
from nexus_engine.errors import NexusError

MAX_MESSAGE = 1500  # a refusal longer than this is not something a user reads


@dataclass
class Tally:
    name: str
    cases: int = 0
    ok: int = 0
    typed: int = 0
    crashes: int = 0
    unreadable: int = 0
    slowest_ms: float = 0.0
    seconds: float = 0.0
    crash_examples: list[str] = field(default_factory=list)
    unreadable_examples: list[str] = field(default_factory=list)
    codes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in vars(self).items() if k != "name"}


def problem_with(err: NexusError) -> str:
    """'' when a user can read the error, else what is wrong with it."""
    msg = str(err.message or "").strip()
    if not msg:
        return "empty message"
    if len(msg) > MAX_MESSAGE:
        return f"message is {len(msg)} characters"
    if "Traceback (most recent call last)" in msg:
        return "message holds a traceback"
    return ""


@dataclass
class Target:
    name: str
    call: Callable[[Any], Any]  # the parser, fed one case
    corpus: Callable[[], list[tuple[str, Any]]]
    strategy: Callable[[], Any]  # -> a Hypothesis strategy of cases
    setup: Callable[[], Any] | None = None  # built once, before the first case (a Router, say)

    def check(self, case: Any, tally: Tally, label: str = "") -> None:
        t0 = time.perf_counter()
        try:
            self.call(case)
            tally.ok += 1
        except NexusError as e:
            tally.typed += 1
            tally.codes[e.code] = tally.codes.get(e.code, 0) + 1
            why = problem_with(e)
            if why:
                tally.unreadable += 1
                if len(tally.unreadable_examples) < 5:
                    tally.unreadable_examples.append(f"{label or _short(case)}: {why}: {e.message[:200]!r}")
        except Exception as e:  # the point of fuzzing: anything untyped is a crash to report, not to raise
            tally.crashes += 1
            if len(tally.crash_examples) < 5:
                tally.crash_examples.append(f"{label or _short(case)}: {type(e).__name__}: {str(e)[:200]}")
        finally:
            tally.cases += 1
            tally.slowest_ms = max(tally.slowest_ms, (time.perf_counter() - t0) * 1000)


def _short(case: Any) -> str:
    text = repr(case)
    return text if len(text) <= 120 else text[:117] + "..."


# ------------------------------------------------------------------------------------------------ targets
def targets(work: Path) -> tuple[dict[str, Target], dict[str, str]]:
    """The fuzz targets (name -> Target) and the ones skipped here with why. `work`: a scratch folder."""
    from hypothesis import strategies as st

    found: dict[str, Target] = {}
    skipped: dict[str, str] = {}
    rng_cases = st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 8))

    def files(seeds: Callable[[], list[tuple[str, bytes]]]) -> Any:
        def build(args: tuple[int, int, int]) -> tuple[str, bytes]:
            pick, seed, n = args
            all_seeds = seeds()
            ext, data = all_seeds[pick % len(all_seeds)]
            return ext, fc.mutate(data, random.Random(seed), n)
        return st.one_of(st.tuples(st.integers(0, 99), st.integers(0, 2**32 - 1), st.integers(1, 8)).map(build),
                         st.tuples(st.sampled_from([e for e, _ in seeds()]), st.binary(max_size=512)))

    def on_file(parse: Callable[[Path], Any]) -> Callable[[tuple[str, bytes]], Any]:
        def call(case: tuple[str, bytes]) -> Any:
            ext, data = case
            return parse(fc.write_case(work, f"case{ext}", data))
        return call

    # models.toml: the shipped file mutated line by line, merged with a fuzzed override
    def toml_call(case: tuple[str, str]) -> Any:
        from nexus_engine.config import load_models_toml

        shipped, override = case
        a = work / "shipped.toml"
        a.write_text(shipped, encoding="utf-8", errors="surrogatepass")
        files_ = [a]
        if override:
            b = work / "override.toml"
            b.write_text(override, encoding="utf-8", errors="surrogatepass")
            files_.append(b)
        return load_models_toml(files_)

    seed_toml = fc.toml_seed()
    found["models_toml"] = Target(
        "models_toml", toml_call,
        lambda: [(n, (t, "")) for n, t in fc.toml_corpus()] + [(f"override: {n}", (seed_toml, t))
                                                                 for n, t in fc.toml_corpus()],
        lambda: st.tuples(rng_cases.map(lambda a: _mutate_lines(seed_toml, *a)),
                          st.one_of(st.just(""), st.text(max_size=300), rng_cases.map(
                              lambda a: _mutate_lines("\n".join(t for _, t in fc.toml_corpus()[8:20]), *a)))))

    # protocol messages
    from nexus_engine.protocol import decode, message_types

    names = sorted(message_types())
    json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(
        max_size=20), lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=3), max_leaves=10)
    fields = sorted({f for cls in message_types().values() for f in cls.__dataclass_fields__})

    def message(args: tuple[str, dict[str, Any]]) -> bytes:
        import json

        kind, extra = args
        return json.dumps({"v": 1, "type": kind, **extra}).encode()

    found["protocol"] = Target(
        "protocol", decode, fc.protocol_corpus,
        lambda: st.one_of(st.binary(max_size=256),
                          st.tuples(st.sampled_from(names), st.dictionaries(st.sampled_from(fields) | st.text(
                              max_size=6), json_value, max_size=4)).map(message),
                          st.tuples(st.sampled_from(fc.protocol_seeds()), st.integers(0, 2**32 - 1)).map(
                              lambda a: fc.mutate(a[0], random.Random(a[1])))))

    # NIWT bitmask JSON (another module's public loader; only called here)
    seed_mask = fc.bitmask_seed()
    if seed_mask is None:
        skipped["bitmask"] = "nexus_engine.research.niwt.bitmask is not importable"
    else:
        from nexus_engine.research.niwt.bitmask import load_bitmask

        found["bitmask"] = _json_target("bitmask", work / "mask.json", load_bitmask, seed_mask, st)

    # adapter manifests (nexus_engine.consolidation.adapters: read_manifest validates)
    try:
        from nexus_engine.consolidation.adapters import MANIFEST, read_manifest
    except ImportError as e:
        skipped["adapter_manifest"] = f"nexus_engine.consolidation.adapters is not importable ({e})"
    else:
        folder = work / "adapter"
        folder.mkdir(exist_ok=True)
        found["adapter_manifest"] = _json_target("adapter_manifest", folder / MANIFEST,
                                                 lambda p: read_manifest(p.parent), fc.manifest_seed(), st)

    # media files
    from nexus_engine.vision.media import open_image
    from nexus_engine.vision.video import sample_frames
    from nexus_engine.voice.audio_files import decode_file, probe_duration
    from nexus_engine.voice.audio_io import mono_float

    found["image"] = Target("image", on_file(open_image), fc.image_corpus, lambda: files(fc.image_seeds))

    def audio_file(path: Path) -> Any:
        probe_duration(path)
        return mono_float(decode_file(path))  # what `nexus transcribe` does before the model sees anything

    found["audio_file"] = Target("audio_file", on_file(audio_file), fc.audio_corpus, lambda: files(fc.audio_seeds))
    video_seeds = lambda: [(".mp4", fc.video_bytes())]  # noqa: E731 - built on first use (encodes a video)
    found["video"] = Target("video", on_file(lambda p: sample_frames(p, max_frames=4)), fc.video_corpus,
                            lambda: files(_cached(video_seeds)))
    found["audio_samples"] = _samples_target(st)
    found["router"] = _router_target(st)
    found["requests"] = _requests_target(st)
    return found, skipped


def _cached(fn: Callable[[], Any]) -> Callable[[], Any]:
    box: list[Any] = []

    def get() -> Any:
        if not box:
            box.append(fn())
        return box[0]
    return get


def _mutate_lines(text: str, seed: int, n: int) -> str:
    """Line-level damage to a TOML file: delete, duplicate, swap, or replace a value with a hostile token."""
    rng = random.Random(seed)
    lines = text.splitlines()
    tokens = ["inf", "nan", "-1", "1e309", '"x"', "[]", "{}", "true", '"' + "a" * 300 + '"', "[[1]]", '""', "0"]
    for _ in range(n):
        if not lines:
            break
        i = rng.randrange(len(lines))
        op = rng.randrange(4)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif op == 2:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif "=" in lines[i]:
            lines[i] = lines[i].split("=", 1)[0] + "= " + rng.choice(tokens)
    return "\n".join(lines) + "\n"


def _json_target(name: str, path: Path, load: Callable[[Path], Any], seed: dict[str, Any], st: Any) -> Target:
    import json

    def call(case: bytes) -> Any:
        path.write_bytes(case)
        return load(path)

    def mutated(args: tuple[int, int]) -> bytes:
        rng = random.Random(args[0])
        doc: Any = seed
        for _ in range(args[1]):
            doc = fc.mutate_doc(doc, rng)
        return json.dumps(doc).encode()

    return Target(name, call, lambda: [(n, c) for n, c in fc.json_corpus()] + [("valid seed", json.dumps(
        seed).encode())], lambda: st.one_of(st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 4)).map(mutated),
                                           st.binary(max_size=200)))


def _samples_target(st: Any) -> Target:
    import numpy as np
    from hypothesis.extra import numpy as hnp

    from nexus_engine.voice.audio_io import mono_float, resample

    def call(case: tuple[Any, Any]) -> Any:
        audio, rate = case
        return resample(mono_float(audio), rate, 16000)  # every ASR tower's first step

    corpus = [("empty", (np.zeros(0, np.float32), 16000)), ("NaN", (np.full(100, np.nan), 16000)),
              ("inf", (np.full(100, np.inf), 16000)), ("rate 0", (np.zeros(100), 0)),
              ("rate -16000", (np.zeros(100), -16000)), ("rate 1.5", (np.zeros(100), 1.5)),
              ("rate 10 GHz", (np.zeros(100), 10**10)), ("3-D", (np.zeros((2, 2, 2)), 16000)),
              ("strings", (np.array(["a", "b"]), 16000)), ("objects", (np.array([None, 1], dtype=object), 16000)),
              ("complex", (np.zeros(4, np.complex64), 16000)), ("scalar", (np.float32(1.0), 16000)),
              ("int16 stereo", (np.zeros((100, 2), np.int16), 44100)), ("rate as string", (np.zeros(10), "16000"))]
    arrays = hnp.arrays(st.sampled_from([np.float32, np.float64, np.int16, np.int32]),
                        st.one_of(st.tuples(st.integers(0, 400)), st.tuples(st.integers(0, 200), st.integers(1, 3)),
                                  st.tuples(st.integers(1, 3), st.integers(0, 200))))
    rates = st.one_of(st.integers(-10, 10**6), st.sampled_from([8000, 16000, 22050, 44100, 48000]), st.floats(),
                      st.none())
    return Target("audio_samples", call, lambda: corpus, lambda: st.tuples(arrays, rates))


def _router_target(st: Any) -> Target:
    box: list[Any] = []

    def router() -> Any:
        if not box:
            from nexus_engine.router.decide import Router

            box.append(Router())
        return box[0]

    def call(case: tuple[Any, Any, bool, Any, Any]) -> Any:
        text, attachments, voice, context, residency = case
        return router().decide(text, attachments, voice=voice, context=context, residency=residency)

    items = st.one_of(st.none(), st.integers(), st.text(max_size=40),
                      st.sampled_from(["image", "video", "audio", "long_audio", "document", "x.png", "/nope.wav"]),
                      st.dictionaries(st.sampled_from(["path", "kind", "mime", "x"]),
                                      st.none() | st.text(max_size=20) | st.integers(), max_size=3))
    corpus = [("empty", ("", [], False, [], None)), ("None text", (None, [], False, [], None)),
              ("100k chars", ("why " * 25_000, [], False, [], None)), ("control chars", ("\x00\x1b[2J\ud800", [],
                                                                                          False, [], None)),
              ("attachment dict", ("look", [{"path": 3}], False, [], None)),
              ("residency junk", ("hi", [], False, [], {"smollm2-chat": 5, 3: "hot"})),
              ("context of None", ("and then?", [], True, [None, 5], None))]
    return Target("router", call, lambda: corpus, lambda: st.tuples(
        st.one_of(st.none(), st.text(max_size=300)), st.lists(items, max_size=4), st.booleans(),
        st.lists(st.one_of(st.none(), st.text(max_size=80), st.integers()), max_size=3),
        st.one_of(st.none(), st.dictionaries(st.text(max_size=12), st.sampled_from(["hot", "warm", "cold", "?"]) |
                                             st.integers(), max_size=3))), setup=router)


def _requests_target(st: Any) -> Target:
    from nexus_engine import generation
    from nexus_engine.config import limits
    from nexus_engine.engine import check_size
    from nexus_engine.protocol import ChatRequest, GenerateRequest
    from nexus_engine.towers.chat_format import check_messages

    def call(req: Any) -> Any:
        if isinstance(req, ChatRequest):
            check_messages(req.messages)
            return check_size(req, limits.active())
        return generation.check(req)

    messages = st.lists(st.dictionaries(st.sampled_from(["role", "content", "x"]),
                                        st.sampled_from(["user", "system", "assistant", "tool"]) | st.text(max_size=50)
                                        | st.none() | st.integers(), max_size=3), max_size=4)
    chat = st.builds(ChatRequest, messages=messages, max_tokens=st.integers(-5, 10**7))
    gen = st.builds(GenerateRequest, kind=st.sampled_from(["image", "video", "audio"]), prompt=st.text(max_size=300),
                    width=st.integers(-8, 10**5), height=st.integers(-8, 10**5), steps=st.integers(-1, 10**4),
                    frames=st.integers(-1, 10**4), image=st.none() | st.text(max_size=30),
                    preview_every=st.integers(-3, 50))
    corpus = [("huge prompt", ChatRequest(messages=[{"role": "user", "content": "x" * 500_001}])),
              ("max_tokens 10M", ChatRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=10**7)),
              ("image 100000 px", GenerateRequest(prompt="a cat", width=100_000, height=8)),
              ("video 100000 frames", GenerateRequest(kind="video", prompt="a cat", frames=100_000))]
    return Target("requests", call, lambda: corpus, lambda: st.one_of(chat, gen))


# ---------------------------------------------------------------------------------------------------- run
def run_target(target: Target, max_examples: int, seed: int = 0) -> Tally:
    """The corpus, then `max_examples` Hypothesis cases; never raises for a case (crashes are counted)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    tally = Tally(target.name)
    t0 = time.perf_counter()
    if target.setup is not None:
        target.setup()
    for label, case in target.corpus():
        target.check(case, tally, label)

    @hseed(seed)
    @settings(max_examples=max_examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(target.strategy())
    def prop(case: Any) -> None:
        target.check(case, tally)

    if max_examples > 0:
        prop()
    tally.seconds = time.perf_counter() - t0
    return tally


def run(max_examples: int = 300, seed: int = 0, only: tuple[str, ...] = ()) -> dict[str, Any]:
    try:
        import hypothesis  # noqa: F401 - a test dependency, not a runtime one
    except ImportError as e:
        raise NexusError("`nexus bench fuzz` needs Hypothesis",
                         'pip install -e ".[test]" (or pip install hypothesis)') from e
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nexus-fuzz-") as tmp:
        found, skipped = targets(Path(tmp))
        results = {name: run_target(t, max_examples, seed).to_dict() for name, t in found.items()
                   if not only or name in only}
    total = {k: sum(r[k] for r in results.values()) for k in ("cases", "ok", "typed", "crashes", "unreadable")}
    return {"bench": "fuzz", "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": platform.machine(),
            "cpus": os.cpu_count(), "max_examples_per_target": max_examples, "seed": seed,
            "seconds": round(time.perf_counter() - t0, 1), "total": total, "targets": results, "skipped": skipped,
            "goals": {"crashes == 0": total["crashes"] == 0, "every failure readable": total["unreadable"] == 0}}
