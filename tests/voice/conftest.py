"""Fixtures for the voice tests: real audio through PulseAudio null sinks, real models, the LibriSpeech clips.

PulseAudio (RECIPES.md, "Real audio without a sound card"): a virtual microphone `vmic` fed by `paplay
--device=mic_feed`, a speaker sink `spk` captured from `spk.monitor`, both kept awake by a `pacat` of zeros
(an idle null sink delays the first input stream and drops audio). Started here if it is not running, left
running if it was; tests that need it skip cleanly when pulseaudio is not installed. `echo_path()` loads a
module-loopback from the speaker into the microphone: the room between a laptop's speakers and its microphone.

Recorder reads parecord's stdout as it arrives and remembers when each block came, so a sample of a capture
can be put on the same monotonic clock as another capture (the barge-in test measures across two of them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

RATE = 16000
LIBRISPEECH = Path(os.environ.get("NEXUS_LIBRISPEECH", "/work/shared/data/librispeech"))
UID = os.getuid()
PULSE_ENV = {"XDG_RUNTIME_DIR": f"/run/user/{UID}", "PULSE_SERVER": f"unix:/run/user/{UID}/pulse/native"}
MODULES = ("module-native-protocol-unix", "module-null-sink sink_name=mic_feed rate=16000 channels=1",
           "module-remap-source master=mic_feed.monitor source_name=vmic",
           "module-null-sink sink_name=spk rate=16000 channels=1")


# ------------------------------------------------------------------------------------------------ data
def clips() -> list[tuple[str, Path, str]]:
    """(id, file, reference text) of the LibriSpeech clips; skips when they are not here."""
    trans = sorted(LIBRISPEECH.glob("*.trans.txt"))
    if not trans:
        pytest.skip(f"no LibriSpeech clips in {LIBRISPEECH}")
    out = []
    for t in trans:
        for line in t.read_text().splitlines():
            key, _, text = line.partition(" ")
            f = LIBRISPEECH / f"{key}.flac"
            if f.exists():
                out.append((key, f, text))
    return out


def write_wav(path: Path, audio: np.ndarray, rate: int = RATE) -> Path:
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


# ------------------------------------------------------------------------------------------- pulseaudio
def _pactl(*args: str, check: bool = True) -> str:
    env = {**os.environ, **PULSE_ENV}
    return subprocess.run(["pactl", *args], env=env, capture_output=True, text=True, check=check).stdout


class Pulse:
    """The running PulseAudio with the test devices, and the processes this session started."""

    def __init__(self) -> None:
        self.env = dict(PULSE_ENV)
        self.keepalive: list[subprocess.Popen[bytes]] = []
        self.started_daemon = False
        self.echo_module: str | None = None

    def start(self) -> None:
        os.makedirs(PULSE_ENV["XDG_RUNTIME_DIR"], mode=0o700, exist_ok=True)
        os.environ.update(PULSE_ENV)  # this process's PortAudio/pa clients, and the worker it spawns
        if subprocess.run(["pulseaudio", "--check"], env={**os.environ}).returncode != 0:
            cmd = ["pulseaudio", "-D", "-n", "--exit-idle-time=-1", "--disallow-exit", "--realtime=no",
                   "--high-priority=no", *[f"--load={m}" for m in MODULES]]
            subprocess.run(cmd, env={**os.environ}, check=True, capture_output=True)
            self.started_daemon = True
            for _ in range(50):
                if subprocess.run(["pactl", "info"], capture_output=True, env={**os.environ}).returncode == 0:
                    break
                time.sleep(0.1)
        sinks = _pactl("list", "short", "sinks")
        sources = _pactl("list", "short", "sources")
        for module in MODULES[1:]:  # a daemon someone else started may lack our devices
            name = module.split("_name=")[1].split()[0]
            if f"\t{name}\t" not in sinks + sources:
                _pactl("load-module", *module.split())
        _pactl("set-default-sink", "spk")
        _pactl("set-default-source", "vmic")
        running = _pactl("list", "sink-inputs")
        for sink in ("mic_feed", "spk"):  # an idle null sink delays the first stream and drops audio
            name = f"nexus-keepalive-{sink}"
            if f'application.name = "{name}"' in running:
                continue  # one is already playing zeros there (an earlier session)
            with open("/dev/zero", "rb") as zeros:
                self.keepalive.append(subprocess.Popen(
                    ["pacat", "--playback", f"--device={sink}", f"--client-name={name}", "--latency-msec=100",
                     "--raw", "--rate=16000", "--channels=1", "--format=s16le"], stdin=zeros,
                    env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.3)

    def stop(self) -> None:
        self.echo(False)
        for p in self.keepalive:
            p.terminate()
            p.wait(5)
        if self.started_daemon:
            subprocess.run(["pulseaudio", "-k"], env={**os.environ}, capture_output=True)

    def play(self, path: Path, sink: str = "mic_feed") -> subprocess.Popen[bytes]:
        """Start playing a file into a sink (the microphone by default); returns the paplay process."""
        return subprocess.Popen(["paplay", f"--device={sink}", str(path)], env={**os.environ},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def echo(self, on: bool, volume_pct: int = 50) -> None:
        """The speaker heard by the microphone (module-loopback spk.monitor -> mic_feed), at `volume_pct`."""
        if on and self.echo_module is None:
            self.echo_module = _pactl("load-module", "module-loopback", "source=spk.monitor", "sink=mic_feed",
                                      "latency_msec=20", "source_dont_move=true", "sink_dont_move=true").strip()
            time.sleep(0.3)
            for block in _pactl("list", "sink-inputs").split("Sink Input #")[1:]:
                if f"Owner Module: {self.echo_module}\n" in block:
                    _pactl("set-sink-input-volume", block.split("\n", 1)[0].strip(), f"{volume_pct}%")
        elif not on and self.echo_module is not None:
            _pactl("unload-module", self.echo_module, check=False)
            self.echo_module = None


class Recorder:
    """parecord of one source into memory, each block stamped with the monotonic time it arrived."""

    def __init__(self, source: str) -> None:
        self.proc = subprocess.Popen(["parecord", f"--device={source}", "--raw", "--rate=16000", "--channels=1",
                                      "--format=s16le", "--latency-msec=10"], env={**os.environ},
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.blocks: list[tuple[float, bytes]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            data = self.proc.stdout.read1(640)  # type: ignore[attr-defined]
            if not data:
                return
            self.blocks.append((time.monotonic(), data))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        self._thread.join(5)

    def audio(self) -> np.ndarray:
        raw = b"".join(b for _, b in self.blocks)
        return np.frombuffer(raw[:len(raw) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0

    def wall_of(self, index: int) -> float:
        """When sample `index` was captured: its block's arrival minus the samples that followed it in the block."""
        pos = 0
        for t, b in self.blocks:
            n = len(b) // 2
            if index < pos + n:
                return t - (pos + n - index) / RATE
            pos += n
        return self.blocks[-1][0] if self.blocks else 0.0


@pytest.fixture(scope="session")
def pulse() -> Iterator[Pulse]:
    if shutil.which("pulseaudio") is None or shutil.which("paplay") is None:
        pytest.skip("PulseAudio is not installed (apt install pulseaudio pulseaudio-utils)")
    p = Pulse()
    try:
        p.start()
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"PulseAudio could not start: {e}")
    yield p
    p.stop()


@contextmanager
def recording(source: str) -> Iterator[Recorder]:
    r = Recorder(source)
    try:
        time.sleep(0.2)  # the stream is connected and delivering before anything is played
        yield r
    finally:
        r.stop()


# ---------------------------------------------------------------------------------------------- engine
@pytest.fixture(scope="session")
def voice_home(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> dict[str, str]:
    """NEXUS_HOME for voice workers: the starter LLM on one thread (on 2 busy cores, llama.cpp's two spinning
    threads slow the ASR and TTS next to it several times over), caches shared with the session."""
    home = tmp_path_factory.mktemp("voice-home")
    (home / "config").mkdir()
    (home / "config" / "models.toml").write_text("[towers.smollm2-chat.options]\nn_threads = 1\n")
    return {"NEXUS_HOME": str(home), "NEXUS_CACHE": str(shared_cache), **PULSE_ENV}


@pytest.fixture(scope="session")
def voice_client(pulse: Pulse, voice_home: dict[str, str]) -> Iterator[Any]:
    """One real engine worker for the call tests (its models stay loaded between calls)."""
    from nexus_engine.client import EngineClient

    with EngineClient(env=voice_home) as client:
        yield client


@pytest.fixture(scope="session")
def engine(voice_home: dict[str, str]) -> Iterator[Any]:
    """An in-process Engine on the starter pack (for stage tests and the in-memory loop)."""
    from nexus_engine.config import load_models_toml
    from nexus_engine.engine import Engine
    from nexus_engine.paths import SHIPPED_MODELS_TOML

    old = {k: os.environ.get(k) for k in ("NEXUS_CACHE",)}
    os.environ["NEXUS_CACHE"] = voice_home["NEXUS_CACHE"]
    config = load_models_toml([SHIPPED_MODELS_TOML, Path(voice_home["NEXUS_HOME"]) / "config" / "models.toml"])
    yield Engine(config)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tower(engine: Any) -> Any:
    """tower(name) -> the loaded tower, through the engine's residency manager."""
    def get(name: str) -> Any:
        return engine.ensure_loaded(name, lambda m: None)[0]

    return get
