"""Security defaults, each pinned by a test that fails if it regresses (docs/reliability.md, "Guaranteed").

- Pickle weights are refused by every loader unless the tower opts in, checked with a real malicious pickle whose
  unpickling would create a canary folder; every (kind, backend) in the registry is covered or named as a format
  that cannot hold pickles.
- No unrestricted unpickling or literal trust_remote_code=True anywhere in the source.
- trust_remote_code only with a hub source pinned to a commit (config and code-built specs).
- The worker starts with the hub off (HF_HUB_OFFLINE & co. in its environment) and a hub lookup never opens a socket.
- During a real session neither the client process nor the worker holds a socket another process could reach.
- Paths from outside are confined: traversal and symlinks out of a folder are refused; request ids are not paths.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from nexus_engine import paths, registry, safety, weights
from nexus_engine.client import EngineClient
from nexus_engine.config import load_config, load_models_toml
from nexus_engine.config.schema import Source, TowerSpec
from nexus_engine.errors import (
    BadInputError,
    ConfigError,
    ModelMissingError,
    NexusError,
    ProtocolError,
    UnsafeWeightsError,
)
from nexus_engine.protocol import decode

# (kind, backend) -> where the malicious pickle goes inside the model folder
PICKLE_CASES: dict[tuple[str, str], str] = {
    ("llm", "transformers"): "pytorch_model.bin",
    ("persona", "transformers"): "pytorch_model.bin",
    ("vlm", "transformers"): "pytorch_model.bin",
    ("image_encoder", "transformers"): "pytorch_model.bin",
    ("video_encoder", "transformers"): "pytorch_model.bin",
    ("asr", "transformers"): "pytorch_model.bin",
    ("tts", "transformers"): "pytorch_model.bin",
    ("persona", "moshi"): "pytorch_model.bin",
    ("asr", "nemo"): "model.nemo",
    ("image_gen", "diffusers"): "unet/diffusion_pytorch_model.bin",
    ("video_gen", "diffusers"): "unet/diffusion_pytorch_model.bin",
    ("embedder", "sentence_transformers"): "pytorch_model.bin",
    ("image_encoder", "efficientnet"): "models/efficientnet-lite0-57934424.pth",
    ("llm", "llama_cpp"): "model.bin",
    ("persona", "llama_cpp"): "model.bin",
}
# refused before the weights are read: llama.cpp takes only .gguf files; these packages are not installed here
REFUSED_EARLIER = {("llm", "llama_cpp"): "needs a .gguf", ("persona", "llama_cpp"): "needs a .gguf",
                   ("asr", "nemo"): "not installed", ("tts", "transformers"): "qwen-tts"}
# formats that cannot carry a pickle: what these backends load is ONNX, CTranslate2 or a package's own files
NOT_PICKLE = {("asr", "faster_whisper"): "CTranslate2 model.bin (flat tensors, no pickle)",
              ("tts", "piper_onnx"): "ONNX", ("vad", "silero"): "ONNX", ("ocr", "rapidocr"): "ONNX"}


class _Canary:
    """Unpickling this creates the folder `path`: proof that a loader ran code from a weights file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (self.path,)


def _pickle_folder(root: Path, rel: str, canary: Path) -> Path:
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(pickle.dumps({"weight": _Canary(canary)}))
    config = {"architectures": ["ParakeetForTDT"], "model_type": "parakeet_tdt"}  # enough to reach the weights
    for folder in {root, target.parent}:
        (folder / "config.json").write_text(json.dumps(config))
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusion3Pipeline",
                                                       "unet": ["diffusers", "UNet2DConditionModel"]}))
    (root / "modules.json").write_text("[]")
    return root


def _spec(kind: str, backend: str, folder: Path, **changes: Any) -> TowerSpec:
    quant = "gguf" if backend == "llama_cpp" else "fp32"
    file = "model.bin" if backend == "llama_cpp" else None
    base = TowerSpec(name=f"evil-{kind}", kind=kind, backend=backend, capabilities=(),
                     source=Source(path=str(folder), file=file), quantization=quant, dtype="fp32", device="cpu")
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(("kind", "backend"), sorted(PICKLE_CASES))
def test_pickle_weights_are_refused_by_default(kind: str, backend: str, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    folder = _pickle_folder(tmp_path / "model", PICKLE_CASES[kind, backend], canary)
    tower = registry.build(_spec(kind, backend, folder))
    with pytest.raises((UnsafeWeightsError, ModelMissingError)) as info:
        tower.load()
    assert not canary.exists(), f"{kind}/{backend} unpickled the weights file and ran its code"
    if (kind, backend) in REFUSED_EARLIER and info.type is ModelMissingError:
        assert REFUSED_EARLIER[kind, backend] in str(info.value)
        return
    assert info.type is UnsafeWeightsError, info.value  # the weights check itself refused, not something before
    assert "pickle" in info.value.message or "plain weights" in info.value.message
    assert "allow_pickle" in info.value.hint or "reinstall" in info.value.hint


def test_every_loader_is_covered_by_the_pickle_test() -> None:
    missing = set(registry.LOADERS) - set(PICKLE_CASES) - set(NOT_PICKLE)
    assert not missing, f"add these loaders to PICKLE_CASES or NOT_PICKLE: {sorted(missing)}"


def test_the_router_embedder_refuses_pickle_weights(tmp_path: Path) -> None:
    from nexus_engine.router.decide import embedder_for

    canary = tmp_path / "canary"
    folder = _pickle_folder(tmp_path / "minilm", "pytorch_model.bin", canary)
    shipped = load_config()
    spec = dataclasses.replace(shipped.towers["minilm-router"], source=Source(path=str(folder)))
    config = dataclasses.replace(shipped, towers={**shipped.towers, "minilm-router": spec})
    with pytest.raises(UnsafeWeightsError):
        embedder_for(config)
    assert not canary.exists()


def test_a_tower_can_opt_in_to_pickle_weights(tmp_path: Path) -> None:
    from nexus_engine.towers import hf_loading

    folder = _pickle_folder(tmp_path / "model", "pytorch_model.bin", tmp_path / "canary")
    spec = _spec("llm", "transformers", folder)
    with pytest.raises(UnsafeWeightsError):
        hf_loading.check_weights(spec, folder)
    opted = dataclasses.replace(spec, options={"allow_pickle": True})
    assert hf_loading.check_weights(opted, folder) is False  # -> from_pretrained(use_safetensors=False)


def _source_files() -> list[Path]:
    roots = [paths.REPO_ROOT / "nexus_engine", paths.REPO_ROOT / "app"]
    return [p for r in roots for p in r.rglob("*.py")]


def test_no_unrestricted_unpickling_or_literal_remote_code_in_the_source() -> None:
    bad = []
    for path in _source_files():
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                bad.append(f"{path}: torch.load without weights_only=True")
        for pattern, why in ((r"\bpickle\.loads?\(", "pickle.load"), (r"allow_pickle\s*=\s*True", "np.load pickle"),
                             (r"trust_remote_code\s*=\s*True", "literal trust_remote_code=True"),
                             (r"\bdill\.|\bcloudpickle\.|\bjoblib\.load", "a pickle-based loader")):
            if re.search(pattern, text):
                bad.append(f"{path}: {why}")
    assert not bad, "\n".join(bad)


def test_remote_code_needs_a_commit_pinned_hub_source(tmp_path: Path) -> None:
    from nexus_engine.towers.seed_common import check_remote_code

    body = ('[towers.x]\nkind = "vlm"\ncapabilities = ["vision"]\nquantization = "bf16"\n'
            "trust_remote_code = true\nsource = {src}\n[profiles.p.roles]\nvision = \"x\"\n")
    for src in ('{ hub = "org/x", revision = "main" }', '{ path = "/models/x" }', '{ hub = "org/x" }'):
        f = tmp_path / "m.toml"
        f.write_text(body.format(src=src))
        with pytest.raises(ConfigError, match="pinned to a commit"):
            load_models_toml([f])
    pinned = '{ hub = "org/x", revision = "' + "a" * 40 + '" }'
    f.write_text(body.format(src=pinned))
    assert load_models_toml([f]).towers["x"].trust_remote_code
    # a spec built in code skips the config check: the loader checks again
    unpinned = _spec("vlm", "transformers", tmp_path, trust_remote_code=True)
    with pytest.raises(ConfigError, match="pinned to a commit"):
        check_remote_code(unpinned, {"auto_map": {"AutoModel": "x.Model"}}, tmp_path)
    with pytest.raises(UnsafeWeightsError, match="ships its own Python code"):
        check_remote_code(_spec("vlm", "transformers", tmp_path), {"auto_map": {"AutoModel": "x.Model"}}, tmp_path)
    for spec in load_config().towers.values():  # the shipped file trusts no unpinned code
        assert not spec.trust_remote_code or spec.source.pinned, spec.name


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every outgoing connection attempt in this process is recorded and refused."""
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def test_hub_sources_are_looked_up_only_in_the_local_cache(no_network: list[Any], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    spec = TowerSpec(name="far", kind="llm", backend="transformers", capabilities=(),
                     source=Source(hub="org/not-here", revision="b" * 40), quantization="fp32")
    with pytest.raises(ModelMissingError, match="not in the local model cache") as info:
        weights.resolve(spec)
    assert "NEXUS_ALLOW_HUB=1" in info.value.hint
    assert no_network == [], f"a hub lookup tried to connect: {no_network}"


def test_offline_environment_unless_the_hub_is_enabled() -> None:
    assert safety.offline_env({})["HF_HUB_OFFLINE"] == "1"
    assert {"TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "DO_NOT_TRACK"} <= set(safety.offline_env({}))
    assert safety.offline_env({"NEXUS_ALLOW_HUB": "1"}) == {}
    env = {"HF_HUB_OFFLINE": "0"}
    safety.apply_offline(env)
    assert env["HF_HUB_OFFLINE"] == "0" and env["DO_NOT_TRACK"] == "1"  # what the user set explicitly is kept


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


@pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="needs Linux /proc")
def test_a_session_leaves_no_reachable_sockets_and_the_worker_starts_offline(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the conftest sets it; the client must set it itself
    paths.user_models_toml().write_text("[towers.smollm2-chat.options]\nn_threads = 1\n")
    with EngineClient() as client:
        env = _environ(client.worker_pid)
        assert {k: env.get(k) for k in safety.OFFLINE} == safety.OFFLINE
        handle = client.chat([{"role": "user", "content": "Say hi."}], max_tokens=8, role="reasoning")
        handle.wait(120)  # a model is loaded and answering: the moment a server would be listening
        for pid in (client.worker_pid, os.getpid()):
            assert safety.reachable_sockets(pid) == [], f"pid {pid}: {safety.reachable_sockets(pid)}"
        worker = safety.process_sockets(client.worker_pid)
        assert worker and all(s.kind == "unix" and not s.local for s in worker), worker  # anonymous socketpair
        # the worker's pipe and its fds are private to it: no other process shares the socket
        mine = safety.socket_inodes(client.worker_pid)
        others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (client.worker_pid, os.getpid())]
        for pid in others:
            try:
                shared = mine & safety.socket_inodes(int(pid))
            except OSError:
                continue
            assert not shared, f"process {pid} holds the worker's socket {shared}"


@pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="needs Linux /proc")
def test_the_socket_check_sees_what_others_could_reach(tmp_path: Path) -> None:
    pair = socket.socketpair()
    tcp = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    named = socket.socket(socket.AF_UNIX)
    named.bind(str(tmp_path / "s.sock"))
    try:
        found = {s.kind + ("-named" if s.kind == "unix" and s.local else "") for s in
                 safety.reachable_sockets(os.getpid())}
        assert {"tcp", "udp", "unix-named"} <= found, found
        assert {s.inode for s in safety.reachable_sockets(os.getpid())}.isdisjoint(
            {os.fstat(p.fileno()).st_ino for p in pair})  # a socketpair is not reachable
    finally:
        for sock in (*pair, tcp, udp, named):
            sock.close()


def test_confine_refuses_traversal_and_symlinks_out(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "attachments").mkdir(parents=True)
    (root / "attachments" / "ok.png").write_bytes(b"x")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (root / "attachments" / "link.png").symlink_to(outside)
    assert safety.confine("attachments/ok.png", root) == (root / "attachments" / "ok.png").resolve()
    for bad in ("../secret.txt", str(outside), "attachments/../../secret.txt", "attachments/link.png",
                "attachments/ok.png\0.txt"):
        with pytest.raises(BadInputError):
            safety.confine(bad, root)


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "a/b", "x" * 65, "nul\0", "white space"])
def test_request_ids_are_never_paths(bad_id: str) -> None:
    raw = json.dumps({"v": 1, "type": "generate", "id": bad_id, "prompt": "a cat"}).encode()
    with pytest.raises(ProtocolError, match="is not an id"):
        decode(raw)


def test_every_refusal_here_is_a_typed_error() -> None:
    assert issubclass(UnsafeWeightsError, NexusError) and issubclass(BadInputError, NexusError)
