"""`nexus doctor`: check the environment and say exactly what to fix."""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys

from nexus_engine import paths, weights
from nexus_engine.config import load_config
from nexus_engine.errors import NexusError

OK, WARN, FAIL = "ok", "warn", "FAIL"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check Python, torch/CUDA, audio, the starter pack and the worker")
    p.add_argument("--no-worker", action="store_true", help="skip starting the engine worker")
    p.set_defaults(func=run)


def _check(results: list[tuple[str, str, str]], name: str, status: str, detail: str) -> None:
    results.append((status, name, detail))


def checks(profile: str | None, start_worker: bool = True) -> list[tuple[str, str, str]]:
    r: list[tuple[str, str, str]] = []
    v = sys.version_info
    _check(r, "python", OK if v >= (3, 11) else FAIL, f"{sys.version.split()[0]} at {sys.executable}")
    try:
        import torch

        cuda = torch.cuda.is_available()
        gpu = f", GPU: {torch.cuda.get_device_name(0)}" if cuda else ""
        has_smi = shutil.which("nvidia-smi") is not None
        status = WARN if (has_smi and not cuda) else OK
        hint = " — an NVIDIA driver is present but this torch is CPU-only: rerun setup" if status == WARN else ""
        _check(r, "torch", status, f"{torch.__version__}, CUDA {'yes' if cuda else 'no'}{gpu}{hint}")
    except ImportError as e:
        _check(r, "torch", FAIL, f"not importable ({e}): rerun ./setup.sh install")
    try:
        config = load_config()
        _check(r, "models.toml", OK, " + ".join(config.files))
    except NexusError as e:
        _check(r, "models.toml", FAIL, str(e))
        config = None
    if config is not None:
        prof = config.profile(profile)
        for spec in config.profile_towers(prof.name):
            ok, where = weights.installed(spec)
            _check(r, f"tower {spec.name}", OK if ok else (FAIL if prof.name == "starter" else WARN),
                   where if ok else f"missing: {where}")
    _check(r, "espeak-ng", OK if shutil.which("espeak-ng") else WARN,
           shutil.which("espeak-ng") or "not found: the voice needs it (sudo apt-get install espeak-ng)")
    try:
        import sounddevice as sd

        devices = sd.query_devices()
        n_in = sum(1 for d in devices if d["max_input_channels"] > 0)
        n_out = sum(1 for d in devices if d["max_output_channels"] > 0)
        _check(r, "audio", OK if n_in and n_out else WARN, f"{n_in} input and {n_out} output devices")
    except (OSError, ImportError) as e:
        _check(r, "audio", WARN, f"{e}: install PortAudio (sudo apt-get install libportaudio2)")
    qt = importlib.util.find_spec("PySide6") is not None
    if qt:  # imported in a child: the engine itself never imports Qt
        proc = subprocess.run([sys.executable, "-c", "import PySide6.QtWidgets"], capture_output=True, text=True,
                              timeout=60)
        detail = "PySide6 imports" if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1]
        _check(r, "qt", OK if proc.returncode == 0 else WARN, detail)
    else:
        _check(r, "qt", WARN, "PySide6 not installed: the desktop app will not start (rerun ./setup.sh)")
    _check(r, "data dir", OK, f"{paths.data_dir()} (history: {paths.history_db().name})")
    _check(r, "user models.toml", OK, f"{paths.user_models_toml()}"
           + ("" if paths.user_models_toml().exists() else " (not created yet; optional)"))
    if start_worker and config is not None:
        from nexus_engine.client import EngineClient

        try:
            with EngineClient(profile=profile) as client:
                _check(r, "engine worker", OK, f"started, ping {client.ping():.1f} ms")
        except NexusError as e:
            _check(r, "engine worker", FAIL, str(e))
    return r


def run(args: argparse.Namespace) -> int:
    results = checks(args.profile, not args.no_worker)
    for status, name, detail in results:
        print(f"[{status:4}] {name:24} {detail}")
    failed = [n for s, n, _ in results if s == FAIL]
    if failed:
        print(f"\n{len(failed)} problem(s) to fix: {', '.join(failed)}")
        return 1
    return 0
