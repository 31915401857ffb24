"""The router: one request in, a decision out — which roles, which towers, the scores, and why.

    router = Router()                                   # models.toml's default profile, the shipped gate
    d = router.decide("what's in this photo", ["image"], residency={"efficientnet-lite0": "hot"})
    d.towers -> ["vision"]; d.want -> ("efficientnet-lite0",); d.reason -> "vision 0.98: image attachment …"

Selection: the best-scoring role, plus the runner-up when its probability reaches that role's calibrated
threshold and the pair makes sense together (never two speech recognizers or two image towers). Residency then
may swap the primary role for the runner-up: only when the runner-up's towers are hotter (hot > warm > cold),
the two scores are within CLOSE of each other and the leader is not clearly right (below CLEAR). Thresholds
never move, so residency cannot add a second role nobody asked for. Roles the profile leaves uninstalled stay
in the decision, listed in `not_installed`.

Fallbacks, each with a visible warning: no trained gate (missing, corrupt, other features) -> zero-shot
similarity to role descriptions; no embedding model -> keyword rules. An empty request routes nowhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nexus_engine import weights
from nexus_engine.config import ROLES, ModelsConfig, load_config
from nexus_engine.errors import NexusError
from nexus_engine.router import baselines
from nexus_engine.router.features import (
    ATTACH,
    HAS_CONTEXT,
    KINDS,
    PREV,
    VOICE,
    Embedder,
    Turn,
    featurize,
    get_embedder,
    make_turn,
    model_dir,
    roles_vector,
)
from nexus_engine.router.gate import Gate, GateError, gate_dir

log = logging.getLogger("nexus.router")

MAX_ROLES = 2
CLOSE = 0.10  # residency may break ties between scores this close
CLEAR = 0.90  # …but never against a role scored this high
TIP = 0.15  # a feature "tipped" a role when removing it moves the score by this much
TIER_RANK = {"hot": 0, "warm": 1, "cold": 2}
# one recognizer and one image tower per request: a long recording is never also a short one
EXCLUSIVE = {frozenset(("hearing", "hearing_long")), frozenset(("vision", "perception"))}


@dataclass
class RouteDecision:
    """What the router decided for one request (JSON-safe through to_dict, for the app's routing timeline)."""

    towers: list[str]  # roles, primary first; [] for an empty request
    tower_names: dict[str, list[str]]  # role -> towers serving it in the profile ([] when not installed)
    scores: dict[str, float]  # every role's probability (or zero-shot share)
    reason: str  # one line for people
    ms: float  # decision time, embedding included
    mode: str  # gate | zero-shot | keywords | empty
    profile: str
    not_installed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tipped: list[dict[str, Any]] = field(default_factory=list)  # {factor, role, detail, delta}
    attachments: list[str] = field(default_factory=list)  # the kinds the router saw

    @property
    def want(self) -> tuple[str, ...]:
        """Installed towers to make resident for this request, each once (the residency Request's `want`)."""
        return tuple(dict.fromkeys(n for r in self.towers for n in self.tower_names.get(r, ())))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "want": list(self.want)}


class Router:
    """Loads the embedder and the gate once; `decide` is cheap and thread-safe."""

    def __init__(self, config: ModelsConfig | None = None, profile: str | None = None,
                 gate: Path | str | None = None, embedder: Embedder | None = None):
        self.config = config or load_config()
        self.profile = self.config.profile(profile)
        self.warnings: list[str] = []  # standing warnings, repeated on every decision
        self.embedder = embedder or self._load_embedder()
        self.gate: Gate | None = None
        self.zero_shot: baselines.ZeroShot | None = None
        if self.embedder is not None:
            path = gate_dir(gate)
            try:
                self.gate = Gate.load(path)
                self._check_embedder()
            except GateError as e:
                self.warnings.append(f"router: {e}; routing by zero-shot similarity instead "
                                     "(run `nexus router train` to rebuild the gate)")
                log.warning(self.warnings[-1])
                self.gate = None
            self.zero_shot = baselines.ZeroShot(self.embedder)
        self.mode = "gate" if self.gate else "zero-shot" if self.embedder else "keywords"

    def _load_embedder(self) -> Embedder | None:
        try:
            return embedder_for(self.config)
        except Exception as e:  # missing package, corrupt weights, a library too old: route on keywords instead
            msg = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
            self.warnings.append(f"router: embedding model unavailable ({msg}); routing by keyword rules")
            log.warning(self.warnings[-1])
            return None

    def _check_embedder(self) -> None:
        trained = (self.gate.meta if self.gate else {}).get("embedder", {})
        running = self.embedder.config if self.embedder else {}
        if trained and running and trained != running:
            self.warnings.append(f"router: gate trained on {trained} embeddings, running {running}; "
                                 "decisions may be less accurate")

    # ------------------------------------------------------------------------------------------ decide
    def decide(self, text: str | None, attachments: Sequence[Any] = (), voice: bool = False,
               context: Sequence[Any] = (), residency: Mapping[str, Any] | None = None) -> RouteDecision:
        t0 = time.perf_counter()
        turn = make_turn(text, attachments, voice, context)
        warns = [*self.warnings, *turn.warnings]
        if not turn.text and not turn.kinds:
            return self._finish([], {}, "empty request: nothing to route", "empty", turn,
                                [*warns, "empty request: type something or attach a file"], [], t0)
        if self.gate is not None and self.embedder is not None:
            views = self.embedder.encode(turn.text)
            x = featurize(views, self._previous_roles(turn), turn)
            groups = _ablations(turn)
            sims = self.gate.similarities(views[0])  # shared by the neighbour vote and the explanation
            # the request and its ablated copies in one batch: one pass of the gate explains the decision
            P = self.gate.scores(np.stack([x, *(_without(x, idx) for _, _, idx in groups)]), sims)
            p = P[0]
            roles, why = select_roles(p, self.gate.thresholds)
            tipped = self._explain(P, groups, sims, roles, turn)
            mode = "gate"
        elif self.zero_shot is not None:
            roles, p = self.zero_shot.predict(turn)
            roles, why = [ROLES.index(r) for r in roles], "zero-shot similarity to role descriptions"
            tipped, mode = [], "zero-shot"
        else:
            names = baselines.keywords(turn)
            roles, p = [ROLES.index(r) for r in names], np.array([float(r in names) for r in ROLES])
            why, tipped, mode = "keyword rules", [], "keywords"
        if residency is not None:
            roles, swap = self._residency(p, roles, residency)
            if swap:
                tipped.append(swap)
        scores = {r: round(float(v), 4) for r, v in zip(ROLES, p)}
        chosen = [ROLES[i] for i in roles]
        return self._finish(chosen, scores, _reason(chosen, scores, tipped, why), mode, turn, warns, tipped, t0)

    def _previous_roles(self, turn: Turn) -> np.ndarray | None:
        """The previous turn's roles: as the caller reports them, else routed again here (its encoding is
        usually still in the embedder's cache)."""
        if not turn.context:
            return None
        if turn.context_roles is not None:
            return roles_vector(turn.context_roles)
        assert self.gate is not None and self.embedder is not None
        prev = make_turn(turn.context)
        chosen, _ = select_roles(self.gate.scores(featurize(self.embedder.encode(prev.text), None, prev)),
                                 self.gate.thresholds)
        return roles_vector([ROLES[i] for i in chosen])

    def _finish(self, roles: list[str], scores: dict[str, float], reason: str, mode: str, turn: Turn,
                warns: list[str], tipped: list[dict[str, Any]], t0: float) -> RouteDecision:
        names = {r: self._towers_for(r, turn) for r in roles}
        missing = [r for r in roles if not names[r]]
        for r in missing:
            warns.append(f"{r} is not installed in profile {self.profile.name!r}: declare a tower for it in "
                         "models.toml (`nexus towers --all` lists the candidates)")
        return RouteDecision(roles, names, scores, reason, round((time.perf_counter() - t0) * 1000, 3), mode,
                             self.profile.name, missing, warns, tipped, list(turn.kinds))

    def _towers_for(self, role: str, turn: Turn) -> list[str]:
        names = list(self.profile.roles.get(role, ()))
        if role != "perception" or len(names) < 2:
            return names
        # perception pairs an image tower with a video tower: load the one the attachment needs
        has_video = "video" in turn.kinds
        keep = [n for n in names if (self.config.towers[n].kind == "video_encoder") == has_video]
        return keep or names

    # ------------------------------------------------------------------------------------------ explain
    def _explain(self, P: np.ndarray, groups: list[tuple[str, str, list[int]]], sims: np.ndarray,
                 roles: list[int], turn: Turn) -> list[dict[str, Any]]:
        """Which inputs moved the chosen roles (P[0]: the request, P[k]: without feature group k-1), and the most
        similar training request with each role."""
        assert self.gate is not None
        out: list[dict[str, Any]] = []
        for (factor, detail, _), p0 in zip(groups, P[1:]):
            for i in roles:
                delta = float(P[0, i] - p0[i])
                if abs(delta) >= TIP:
                    out.append({"factor": factor, "role": ROLES[i], "detail": detail, "delta": round(delta, 3)})
        if turn.text:
            for i, near in zip(roles, self.gate.nearest(sims, [ROLES[i] for i in roles])):
                if near:
                    out.append({"factor": "phrase", "role": ROLES[i], "detail": f"like {_clip(near[0])!r}",
                                "delta": round(near[2], 3)})
        return out

    # ------------------------------------------------------------------------------------------ residency
    def _residency(self, p: np.ndarray, roles: list[int],
                   residency: Mapping[str, Any]) -> tuple[list[int], dict[str, Any] | None]:
        lead = roles[0]
        alt = next((int(i) for i in np.argsort(-p) if int(i) not in roles), None)
        if alt is None or p[lead] >= CLEAR or p[lead] - p[alt] > CLOSE:
            return roles, None
        t_lead, t_alt = self._tier(ROLES[lead], residency), self._tier(ROLES[alt], residency)
        if t_lead is None or t_alt is None or TIER_RANK[t_alt] >= TIER_RANK[t_lead]:
            return roles, None
        swap = {"factor": "residency", "role": ROLES[alt],
                "detail": f"{ROLES[alt]} is {t_alt}, {ROLES[lead]} is {t_lead}; scores within {CLOSE:.2f}",
                "delta": round(float(p[alt] - p[lead]), 3)}
        return [alt, *roles[1:]], swap

    def _tier(self, role: str, residency: Mapping[str, Any]) -> str | None:
        """The coldest tier among the towers a role needs (None when the role is not installed)."""
        names = self.profile.roles.get(role, ())
        if not names:
            return None
        tiers = []
        for n in names:
            v = residency.get(n)
            tier = getattr(v, "tier", v) if v is not None else "cold"  # policy.Resident or a plain string
            tiers.append(tier if tier in TIER_RANK else "cold")
        return max(tiers, key=TIER_RANK.__getitem__)


def embedder_for(config: ModelsConfig) -> Embedder:
    """The process's MiniLM embedder, from the models.toml tower `minilm-router` (or the first embedder)."""
    spec = config.towers.get("minilm-router") or next((t for t in config.towers.values() if t.kind == "embedder"),
                                                      None)
    if spec is None:
        raise NexusError("no embedder tower is declared in models.toml",
                         "declare [towers.minilm-router] (kind = \"embedder\") as the shipped models.toml does")
    from nexus_engine.towers.perception_starter import _check_sentence_weights

    folder = model_dir(weights.resolve(spec))
    _check_sentence_weights(spec, folder)  # safetensors only, like every tower (the router loads it itself)
    return get_embedder(folder)


def _ablations(turn: Turn) -> list[tuple[str, str, list[int]]]:
    """(factor, what it is, feature indices) for each input group the request has: attachments, voice, context."""
    groups: list[tuple[str, str, list[int]]] = []
    if turn.kinds:
        kinds = sorted(set(turn.kinds), key=KINDS.index)
        groups.append(("attachment", " + ".join(f"{k} attachment" for k in kinds), list(range(ATTACH.start,
                                                                                             ATTACH.stop))))
    if turn.voice:
        groups.append(("voice", "spoken turn", [VOICE]))
    if turn.context:
        groups.append(("context", f"previous turn {_clip(turn.context)!r}", [*range(PREV.start, PREV.stop),
                                                                              HAS_CONTEXT]))
    return groups


def _without(x: np.ndarray, idx: list[int]) -> np.ndarray:
    x0 = x.copy()
    x0[idx] = 0.0
    return x0


def select_roles(p: np.ndarray, thresholds: np.ndarray) -> tuple[list[int], str]:
    """The best role always; the runner-up too when it reaches its threshold and can work beside the first."""
    first, second = (int(i) for i in np.argsort(-p)[:2])
    if p[second] >= thresholds[second] and frozenset((ROLES[first], ROLES[second])) not in EXCLUSIVE:
        return [first, second], ""
    return [first], "" if p[first] >= 0.5 else "low confidence"


def _reason(roles: list[str], scores: dict[str, float], tipped: list[dict[str, Any]], why: str) -> str:
    parts = []
    for r in roles:
        bits = [f"{t['detail']} ({t['delta']:+.2f})" if t["factor"] != "phrase" else
                f"{t['detail']} (cos {t['delta']:.2f})" for t in tipped if t["role"] == r]
        parts.append(f"{r} {scores.get(r, 0):.2f}" + (": " + "; ".join(bits) if bits else ""))
    return " | ".join(parts) + (f" [{why}]" if why else "")


def _clip(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
