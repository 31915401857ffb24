"""The trained gate: an MLP over the features blended with a vote of the most similar training requests.

    p_mlp = sigmoid(W2 · relu(W1 · x + b1) + b2)          x: (1179,)  W1: (H, 1179)  W2: (11, H)
    p_knn = Σ_top-k w_i · y_i / Σ w_i,  w_i = exp((s_i - s_1) / tau)
            s_i = cos(x's sentence embedding, bank_i) - 1 if the attachment kinds differ
    p     = (1 - knn_weight) · p_mlp + knn_weight · p_knn                                   (11,)

The MLP generalises across phrasings; the neighbour vote keeps a request close to its nearest labelled cousins
when the MLP extrapolates into a region it never saw (a history question it calls code). The bank is every
training request's sentence embedding (fp16), attachment kinds and roles; its texts make the explanation's
"like '…'". Inference takes well under a millisecond.

The folder holds gate.safetensors (weights, thresholds, bank) and gate.json (roles, the embedder it was trained
on, bank texts, metrics). Any problem reading it raises GateError with the reason; the router then falls back
to zero-shot.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nexus_engine import paths
from nexus_engine.config.schema import ROLES
from nexus_engine.router.features import ATTACH, EMBED_DIM, FEATURE_DIM, KINDS, one_thread

FORMAT = 2
WEIGHTS, META = "gate.safetensors", "gate.json"
SHIPPED_GATE = paths.REPO_ROOT / "data" / "router" / "gate"
GATE_ENV = "NEXUS_ROUTER_GATE"
MISMATCH = 1.0  # similarity penalty for a neighbour with other attachment kinds


class GateError(Exception):
    """The gate folder is missing, corrupt or was trained for other features."""


@dataclass
class Gate:
    roles: tuple[str, ...]
    w1: np.ndarray  # (H, FEATURE_DIM)
    b1: np.ndarray  # (H,)
    w2: np.ndarray  # (R, H)
    b2: np.ndarray  # (R,)
    thresholds: np.ndarray  # (R,) the runner-up joins the best role when it reaches its threshold
    bank: np.ndarray = field(default_factory=lambda: np.zeros((0, EMBED_DIM), np.float32))  # (N, 384)
    bank_kinds: np.ndarray = field(default_factory=lambda: np.zeros((0, len(KINDS)), np.float32))  # (N, 6) 0/1
    bank_roles: np.ndarray = field(default_factory=lambda: np.zeros((0, len(ROLES)), np.float32))  # (N, R)
    bank_texts: list[str] = field(default_factory=list)
    knn_k: int = 10
    knn_tau: float = 0.05
    knn_weight: float = 0.3
    meta: dict[str, Any] = field(default_factory=dict)  # embedder config, training settings, metrics
    _t: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------------------------------ scoring
    def scores(self, x: np.ndarray, sims: np.ndarray | None = None) -> np.ndarray:
        """x: (F,) or (B, F) -> probabilities (R,) or (B, R). `sims` (N,): the rows' shared text similarity to
        the bank, when the caller has it already (a request and its ablated copies share their text)."""
        import torch

        # torch on one thread, not numpy: OpenBLAS splits these products over every core and its spinning
        # helper threads tripled the router's median latency on a busy 2-core machine
        with one_thread(), torch.inference_mode():
            t = self._tensors()
            x2 = torch.from_numpy(np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32))
            p = torch.sigmoid(torch.relu(x2 @ t["w1"].T + t["b1"]) @ t["w2"].T + t["b2"])
            if len(self.bank) and self.knn_weight > 0:
                s = x2[:, :EMBED_DIM] @ t["bank"].T if sims is None else torch.from_numpy(sims).expand(len(x2), -1)
                p = (1 - self.knn_weight) * p + self.knn_weight * self._knn(x2, s, t)
            out = p.numpy().astype(np.float32)
        return out if np.ndim(x) == 2 else out[0]

    def _knn(self, x: Any, sims: Any, t: dict[str, Any]) -> Any:
        """The neighbour vote for (B, F) features whose text similarities to the bank are `sims` (B, N)."""
        import torch

        kinds = x[:, ATTACH][:, ::2]  # (B, 6) presence bits (ATTACH interleaves present, log1p(count))
        sims = sims - MISMATCH * (kinds[:, None, :] != t["bank_kinds"][None, :, :]).any(-1).float()
        s, idx = torch.topk(sims, min(self.knn_k, sims.shape[1]), dim=1)
        w = torch.exp((s - s[:, :1]) / self.knn_tau)
        return (w[:, :, None] * t["bank_roles"][idx]).sum(1) / w.sum(1, keepdim=True)

    def similarities(self, vec: np.ndarray) -> np.ndarray:
        """(N,) cosine of a sentence embedding to every training request."""
        import torch

        with one_thread(), torch.inference_mode():
            return (self._tensors()["bank"] @ torch.from_numpy(np.ascontiguousarray(vec, np.float32))).numpy()

    def _tensors(self) -> dict[str, Any]:
        """Torch views of the arrays (no copy), made once."""
        import torch

        if self._t is None:
            self._t = {k: torch.from_numpy(np.ascontiguousarray(getattr(self, k), dtype=np.float32))
                       for k in ("w1", "b1", "w2", "b2", "bank", "bank_kinds", "bank_roles")}
        return self._t

    def nearest(self, sims: np.ndarray, roles: list[str]) -> list[tuple[str, list[str], float] | None]:
        """For each role, the most similar training request with that role: (text, its roles, cosine)."""
        out: list[tuple[str, list[str], float] | None] = []
        for role in roles:
            masked = np.where(self.bank_roles[:, self.roles.index(role)] > 0, sims, -2.0)
            i = int(np.argmax(masked)) if len(masked) else 0
            out.append(None if not len(masked) or masked[i] <= -2.0 else
                       (self.bank_texts[i], [r for r, y in zip(self.roles, self.bank_roles[i]) if y > 0],
                        float(masked[i])))
        return out

    # ------------------------------------------------------------------------------------------ files
    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"w1": self.w1, "b1": self.b1, "w2": self.w2, "b2": self.b2, "thresholds": self.thresholds,
                   "bank": self.bank.astype(np.float16), "bank_kinds": self.bank_kinds.astype(np.uint8),
                   "bank_roles": self.bank_roles.astype(np.uint8)}
        meta = {"format": FORMAT, "roles": list(self.roles), "feature_dim": FEATURE_DIM,
                "knn": {"k": self.knn_k, "tau": self.knn_tau, "weight": self.knn_weight}, **self.meta,
                "bank_texts": self.bank_texts}
        # written to temporary names and renamed: a crash mid-save never leaves half a gate behind
        for name, write in ((WEIGHTS, lambda p: save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                                                          str(p))),
                            (META, lambda p: p.write_text(json.dumps(meta, indent=1, ensure_ascii=False)))):
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
            os.close(fd)
            write(Path(tmp))
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the gate is a shipped, readable file
            os.replace(tmp, folder / name)

    @classmethod
    def load(cls, folder: Path) -> Gate:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            meta = json.loads((folder / META).read_text())
            t = load_file(str(folder / WEIGHTS))
        except FileNotFoundError as e:
            raise GateError(f"no trained gate in {folder} ({Path(e.filename or '').name} missing)") from e
        except (OSError, ValueError, SafetensorError) as e:  # JSONDecodeError is a ValueError
            raise GateError(f"the gate in {folder} is corrupt: {e}") from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            got = meta.get("format") if isinstance(meta, dict) else meta
            raise GateError(f"{folder / META}: unknown format {got!r} (expected {FORMAT}); retrain the gate")
        roles = tuple(meta.get("roles", ()))
        if roles != ROLES:
            raise GateError(f"{folder}: trained for roles {list(roles)}, this build has {list(ROLES)}")
        knn = meta.get("knn", {})
        try:
            f32 = {k: v.astype(np.float32) for k, v in t.items()}
            gate = cls(roles, f32["w1"], f32["b1"], f32["w2"], f32["b2"], f32["thresholds"], f32["bank"],
                       f32["bank_kinds"], f32["bank_roles"], list(meta.get("bank_texts", [])),
                       int(knn.get("k", 10)), float(knn.get("tau", 0.05)), float(knn.get("weight", 0.3)),
                       {k: v for k, v in meta.items() if k != "bank_texts"})
        except (KeyError, TypeError, ValueError) as e:
            raise GateError(f"{folder / WEIGHTS}: {e}") from e
        gate._check(folder)
        return gate

    def _check(self, folder: Path) -> None:
        h, r, n = self.w1.shape[0], len(self.roles), len(self.bank)
        shapes = {"w1": (self.w1.shape, (h, FEATURE_DIM)), "b1": (self.b1.shape, (h,)), "w2": (self.w2.shape, (r, h)),
                  "b2": (self.b2.shape, (r,)), "thresholds": (self.thresholds.shape, (r,)),
                  "bank": (self.bank.shape, (n, EMBED_DIM)), "bank_kinds": (self.bank_kinds.shape, (n, len(KINDS))),
                  "bank_roles": (self.bank_roles.shape, (n, r))}
        for name, (got, want) in shapes.items():
            if got != want:
                raise GateError(f"{folder / WEIGHTS}: {name} has shape {got}, expected {want}")
        if len(self.bank_texts) != n:
            raise GateError(f"{folder}: {n} bank vectors but {len(self.bank_texts)} bank texts")
        for name in ("w1", "b1", "w2", "b2", "thresholds", "bank"):
            if not np.isfinite(getattr(self, name)).all():
                raise GateError(f"{folder / WEIGHTS}: {name} holds NaN or infinite values")


def gate_dir(explicit: Path | str | None = None) -> Path:
    """Where the gate is read from: the argument, else $NEXUS_ROUTER_GATE, else the one shipped in the repo."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(GATE_ENV)
    return Path(env).expanduser() if env else SHIPPED_GATE
