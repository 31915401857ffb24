"""Train the gate: features of every example (embeddings cached on disk), an MLP, calibrated thresholds.

1. Featurize train and test examples exactly as the router will (one text at a time, same embedder).
2. Out-of-fold probabilities on the training set (5 folds, grouped by template) -> per-role thresholds for
   the second role, by coordinate ascent on exact-set accuracy of the real selection rule.
   The out-of-fold scores blend the MLP with the neighbour vote exactly as the gate will (gate.py).
3. Fit the final MLP on all training examples, keep every training request in the neighbour bank, score the
   test split, and save weights + metrics to the gate folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nexus_engine import paths
from nexus_engine.config.schema import ROLES
from nexus_engine.router.dataset import Example, label_matrix
from nexus_engine.router.decide import EXCLUSIVE, select_roles
from nexus_engine.router.eval import score
from nexus_engine.router.features import ATTACH, EMBED_DIM, N_VIEWS, Embedder, featurize, make_turn, roles_vector
from nexus_engine.router.gate import Gate

log = logging.getLogger("nexus.router")


@dataclass(frozen=True)
class TrainConfig:
    hidden: int = 256
    epochs: int = 80
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-2
    dropout: float = 0.3
    noise: float = 0.1  # Gaussian noise on the text views: other phrasings land near, not on, the training ones
    folds: int = 5
    knn_k: int = 10  # neighbours in the vote
    knn_tau: float = 0.05  # softmax temperature over their similarities
    knn_weight: float = 0.3  # the vote's share of the final score
    seed: int = 0


# ------------------------------------------------------------------------------------------ features
def featurize_all(embedder: Embedder, examples: Sequence[Example], cache: Path | None = None,
                  progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(X (N, F), sentence embeddings (N, 384)). Encodings are cached on disk, keyed by embedder config and
    text. A previous turn counts with the roles the example gives it (unknown roles count as none)."""
    turns = [make_turn(e.prompt, e.attachments, e.voice, e.context) for e in examples]
    texts = sorted({t.text for t in turns})
    store = _EmbeddingCache(cache, embedder.config) if cache else None
    views: dict[str, np.ndarray] = store.get(texts) if store else {}
    todo = [t for t in texts if t not in views]
    for k, t in enumerate(todo):
        views[t] = embedder.encode(t)
        if progress and (k % 500 == 0 or k == len(todo) - 1):
            progress(k + 1, len(todo))
    if store and todo:
        store.put({t: views[t] for t in todo})
    X = np.stack([featurize(views[t.text], roles_vector(t.context_roles), t) for t in turns])
    E = np.stack([views[t.text][0] for t in turns])
    return X, E


class _EmbeddingCache:
    """One .npz per embedder config in the cache folder: {sha1(text): vector}."""

    def __init__(self, folder: Path, config: dict[str, Any]):
        tag = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
        self.path = folder / f"router-embeddings-{tag}.npz"

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha1(text.encode()).hexdigest()

    def get(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        try:
            with np.load(self.path) as z:
                have = dict(zip(z["keys"].tolist(), z["vecs"]))
        except (OSError, KeyError, ValueError):
            return {}
        return {t: have[k] for t in texts if (k := self._key(t)) in have}

    def put(self, new: dict[str, np.ndarray]) -> None:
        try:
            with np.load(self.path) as z:
                keys, vecs = z["keys"].tolist(), list(z["vecs"])
        except (OSError, KeyError, ValueError):
            keys, vecs = [], []
        keys += [self._key(t) for t in new]
        vecs += list(new.values())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(keys), vecs=np.stack(vecs).astype(np.float32))  # (N, 3, 384)
        tmp.replace(self.path)


# ------------------------------------------------------------------------------------------ the MLP
def fit(X: np.ndarray, Y: np.ndarray, cfg: TrainConfig) -> dict[str, np.ndarray]:
    """The MLP: binary cross-entropy per role, noise on the text views; returns numpy weights for Gate."""
    import torch

    seed = cfg.seed
    torch.manual_seed(seed)
    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], cfg.hidden), torch.nn.ReLU(), torch.nn.Dropout(cfg.dropout),
                              torch.nn.Linear(cfg.hidden, Y.shape[1]))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    emb = slice(0, N_VIEWS * EMBED_DIM)
    g = torch.Generator().manual_seed(seed)
    for _ in range(cfg.epochs):
        net.train()
        for idx in torch.randperm(len(x), generator=g).split(cfg.batch):
            xb = x[idx].clone()
            xb[:, emb] += cfg.noise * torch.randn(xb[:, emb].shape, generator=g)
            loss = loss_fn(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    l1, l2 = net[0], net[3]
    return {k: v.detach().numpy().astype(np.float32) for k, v in
            (("w1", l1.weight), ("b1", l1.bias), ("w2", l2.weight), ("b2", l2.bias))}


def _gate(w: dict[str, np.ndarray], X: np.ndarray, Y: np.ndarray, cfg: TrainConfig,
          thresholds: np.ndarray | None = None) -> Gate:
    """A gate from MLP weights, with the examples (X, Y) as its neighbour bank."""
    thr = thresholds if thresholds is not None else np.full(len(ROLES), 0.5, np.float32)
    return Gate(ROLES, w["w1"], w["b1"], w["w2"], w["b2"], thr.astype(np.float32), X[:, :EMBED_DIM].copy(),
                (X[:, ATTACH][:, ::2] > 0).astype(np.float32), Y.copy(), [""] * len(X), cfg.knn_k, cfg.knn_tau,
                cfg.knn_weight)


def out_of_fold(X: np.ndarray, Y: np.ndarray, groups: Sequence[str], cfg: TrainConfig) -> np.ndarray:
    """Probabilities for each training example from a gate that never saw its template (grouped folds), so
    the thresholds are set on phrasings the gate has not memorised."""
    rng = np.random.default_rng(cfg.seed)
    names = sorted(set(groups))
    fold_of = dict(zip(names, rng.permutation(len(names)) % cfg.folds))
    fold = np.array([fold_of[g] if g else rng.integers(cfg.folds) for g in groups])
    P = np.zeros_like(Y)
    for k in range(cfg.folds):
        tr, va = fold != k, fold == k
        P[va] = _gate(fit(X[tr], Y[tr], cfg), X[tr], Y[tr], cfg).scores(X[va])
    return P


def calibrate(P: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Per-role thresholds for the second role: coordinate ascent on exact-set accuracy of the selection rule
    over out-of-fold probabilities (ties go to the threshold nearest 0.5, the uncalibrated default)."""
    top = np.argsort(-P, axis=1)[:, :2]
    first, second = top[:, 0], top[:, 1]
    p2 = P[np.arange(len(P)), second]
    gold = Y > 0
    n_gold = gold.sum(1)
    one = (n_gold == 1) & gold[np.arange(len(P)), first]  # right when the runner-up stays out
    pair_ok = np.array([frozenset((ROLES[a], ROLES[b])) not in EXCLUSIVE for a, b in top])
    two = (n_gold == 2) & gold[np.arange(len(P)), first] & gold[np.arange(len(P)), second] & pair_ok

    def exact(thr: np.ndarray) -> float:
        return float(np.where((p2 >= thr[second]) & pair_ok, two, one).mean())

    grid = np.round(np.arange(0.1, 0.91, 0.025), 3)
    thr = np.full(Y.shape[1], 0.5, np.float32)
    for _ in range(3):
        for r in range(Y.shape[1]):
            thr[r] = max(grid, key=lambda t, r=r: (exact(np.where(np.arange(len(thr)) == r, t, thr)), -abs(t - 0.5)))
    return thr


# ------------------------------------------------------------------------------------------ all of it
def train(embedder: Embedder, train_ex: Sequence[Example], test_ex: Sequence[Example], out: Path | None,
          cfg: TrainConfig | None = None, log_fn: Callable[[str], None] = log.info) -> tuple[Gate, dict[str, Any]]:
    cfg = cfg or TrainConfig()
    cache = paths.cache_dir()
    log_fn(f"embedding {len(train_ex)} training and {len(test_ex)} test examples (cached in {cache})")
    X, _ = featurize_all(embedder, train_ex, cache, lambda k, n: log_fn(f"  embedded {k}/{n}"))
    Y = np.asarray(label_matrix(train_ex), np.float32)
    log_fn(f"calibrating thresholds on {cfg.folds}-fold out-of-fold scores")
    P = out_of_fold(X, Y, [e.group for e in train_ex], cfg)
    thr = calibrate(P, Y)
    oof = score(train_ex, [[ROLES[i] for i in select_roles(p, thr)[0]] for p in P])
    log_fn("fitting the final gate")
    gate = _gate(fit(X, Y, cfg), X, Y, cfg, thr)
    gate.bank_texts = [e.prompt[:160] for e in train_ex]
    metrics: dict[str, Any] = {"train_n": len(train_ex), "out_of_fold": _brief(oof)}
    if test_ex:
        Xt, _ = featurize_all(embedder, test_ex, cache)
        metrics["test"] = _brief(score(test_ex, [[ROLES[i] for i in select_roles(p, thr)[0]] for p in gate.scores(Xt)]))
    gate.meta = {"embedder": embedder.config, "train": asdict(cfg), "metrics": metrics,
                 "thresholds": {r: float(t) for r, t in zip(ROLES, thr)}}
    if out is not None:
        gate.save(out)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        log_fn(f"saved the gate to {out}")
    return gate, metrics


def _brief(rep: dict[str, Any]) -> dict[str, Any]:
    return {k: rep[k] for k in ("n", "top1_accuracy", "exact_set_accuracy", "mean_towers", "per_role")}
