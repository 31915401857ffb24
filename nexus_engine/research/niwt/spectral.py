"""Spectral analysis of recorded activations: how many directions each layer really uses.

Per site and layer, from the shards in one streaming pass per pair of consecutive layers (memory: three
width x width float64 matrices, never the activations):
- standardized PCA: eigenvalues of the correlation matrix (each feature centred and scaled to unit variance, so
  a few huge-magnitude outlier features do not own the spectrum); cumulative explained variance; k90/k95/k99
  (the fewest components explaining 90/95/99 %); `numerical_rank` (eigenvalues above 1e-9 of the largest);
  `effective_rank` (Roy & Vetterli: exp of the entropy of the normalised singular values);
- between consecutive recorded layers of a site: linear CKA (Kornblith et al., on centred features); for the
  residual stream also the mean angular distance arccos(cos(x_i, x_i+1)) / pi of the raw vectors (Gromov et al.).
`principal_bases` keeps the top-k eigenvectors (+ mean and std, to standardize new activations) per layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nexus_engine.research.niwt.record import iter_activation_shards, read_manifest

THRESHOLDS = (0.90, 0.95, 0.99)


@dataclass
class _Moments:
    """Running n, sum x and sum x x^T of one layer's activations, in float64."""

    n: int = 0
    s: torch.Tensor | None = None
    ss: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        x = x.double()
        self.n += len(x)
        self.s = x.sum(0) if self.s is None else self.s + x.sum(0)
        self.ss = x.T @ x if self.ss is None else self.ss + x.T @ x

    @property
    def mean(self) -> torch.Tensor:
        return self.s / self.n

    def cov(self) -> torch.Tensor:
        m = self.mean
        return (self.ss - self.n * torch.outer(m, m)) / max(self.n - 1, 1)


def spectrum(cov: torch.Tensor) -> dict[str, Any]:
    """Standardized-PCA statistics from a covariance matrix [D, D]."""
    var = cov.diagonal().clamp(min=0)
    live = var > 1e-12 * max(float(var.max()), 1e-300)  # constant features carry no variance at all
    if not bool(live.any()):  # e.g. the attention output of a layer whose attention was zeroed
        return {**{f"k{round(t * 100)}": 0 for t in THRESHOLDS}, "numerical_rank": 0, "effective_rank": 0.0,
                "features": int(cov.shape[0]), "constant_features": int(cov.shape[0]), "explained_variance": []}
    std = var[live].sqrt()
    corr = cov[live][:, live] / torch.outer(std, std)
    eig = torch.linalg.eigvalsh(corr).flip(0).clamp(min=0)  # descending
    total = float(eig.sum()) or 1.0
    cum = (eig.cumsum(0) / total).tolist()
    ks = {f"k{round(t * 100)}": next((i + 1 for i, c in enumerate(cum) if c >= t - 1e-12), len(cum))
          for t in THRESHOLDS}
    sv = torch.where(eig > 1e-9 * float(eig[0]), eig, 0).sqrt()  # below the numerical-rank floor: round-off
    p = sv / max(float(sv.sum()), 1e-300)
    entropy = -float((p[p > 0] * p[p > 0].log()).sum())
    return {**ks, "numerical_rank": int((eig > 1e-9 * float(eig[0])).sum()), "effective_rank": math.exp(entropy),
            "features": int(cov.shape[0]), "constant_features": int((~live).sum()),
            "explained_variance": [round(c, 6) for c in _curve(cum)]}


def curve_ks(n: int, points: int = 64) -> list[int]:
    """The component counts k at which `explained_variance` samples a curve of n components: 1..16, then
    log-spaced up to n (all of 1..n when n <= points), so JSON stays small for wide layers."""
    if n <= points:
        return list(range(1, n + 1))
    step = (math.log(n) - math.log(17)) / (points - 17)
    return sorted({*range(1, 17), *(round(math.exp(math.log(17) + i * step)) for i in range(points - 16))})


def _curve(cum: list[float], points: int = 64) -> list[float]:
    return [cum[k - 1] for k in curve_ks(len(cum), points)]


def linear_cka(mx: _Moments, my: _Moments, cross: torch.Tensor) -> float:
    """Linear CKA from moments: ||C_xy||_F^2 / (||C_xx||_F ||C_yy||_F) with centred (co)variances."""
    cxy = cross - mx.n * torch.outer(mx.mean, my.mean)
    cxx, cyy = mx.cov() * (mx.n - 1), my.cov() * (my.n - 1)
    return float((cxy**2).sum() / (cxx.norm() * cyy.norm()))


def analyze(folder: Path | str, sites: tuple[str, ...] | None = None, bases: dict[str, torch.Tensor] | None = None,
            basis_site: str = "residual", basis_k: str = "k95", max_k: int = 256,
            min_position: int = 0) -> dict[str, Any]:
    """Spectral statistics of every recorded site/layer, and consecutive-layer similarity (see module doc).

    `bases`: a dict to fill with the principal bases of `basis_site` (as `principal_bases`), from the same pass.
    `min_position`: leave out rows at positions below it. The first token of a sequence is an attention sink in
    most LMs, with a residual norm 100x the others past the first few layers (SmolLM2: ~23600 vs a median ~155 at
    layer 15); one such row per sequence then owns the top principal component and pushes CKA to 1. The lab
    uses 1.
    """
    manifest = read_manifest(Path(folder))
    verify = True
    out: dict[str, Any] = {"model": manifest["model"], "dataset": manifest["dataset"], "tokens": manifest["tokens"],
                           "min_position": min_position, "sites": {}}
    for site, layers in manifest["sites"].items():
        if sites is not None and site not in sites:
            continue
        per_layer, cka, angular = [], [], []
        prev: _Moments | None = None
        for j, layer in enumerate(layers):
            cur = _Moments()
            nxt_name = f"{site}.{layer}"
            prev_name = f"{site}.{layers[j - 1]}" if j else None
            cross = None
            ang_sum = 0.0
            shards = iter_activation_shards(folder, [n for n in (nxt_name, prev_name) if n], verify=verify)
            verify = False  # one pass with checksums is enough; later passes read the same files
            for shard in shards:
                rows = shard["position"] >= min_position
                y = shard[nxt_name][rows]
                cur.add(y)
                if prev_name is not None:
                    x = shard[prev_name][rows].double()
                    cross = x.T @ y.double() if cross is None else cross + x.T @ y.double()
                    if site == "residual":  # an angle between MLP hidden vectors of two layers means nothing
                        cos = torch.nn.functional.cosine_similarity(x, y.double(), dim=-1).clamp(-1, 1)
                        ang_sum += float((torch.arccos(cos) / math.pi).sum())
            stats = spectrum(cur.cov())
            per_layer.append({"layer": layer, "tokens": cur.n, **stats})
            if bases is not None and site == basis_site:
                bases.update(_basis(f"{site}.{layer}", cur, min(max(stats[basis_k], 1), max_k)))
            if prev is not None and cross is not None:
                cka.append(linear_cka(prev, cur, cross))
                if site == "residual":
                    angular.append(ang_sum / cur.n)
            prev = cur
        out["sites"][site] = {"layers": per_layer, "consecutive": {
            "pairs": [[layers[j], layers[j + 1]] for j in range(len(layers) - 1)],
            "linear_cka": cka, "angular_distance": angular}}
    return out


def principal_bases(folder: Path | str, site: str, k_key: str = "k95", max_k: int = 256,
                    min_position: int = 0) -> dict[str, torch.Tensor]:
    """{f"{site}.{layer}.basis": [k, D], ".mean": [D], ".std": [D]} with k = min(k_key's value, max_k).

    Rows are unit eigenvectors of the standardized activations' correlation matrix, largest first; a vector x
    projects as basis @ ((x - mean) / std). `min_position`: as in `analyze`.
    """
    manifest = read_manifest(Path(folder))
    tensors: dict[str, torch.Tensor] = {}
    for j, layer in enumerate(manifest["sites"][site]):
        name = f"{site}.{layer}"
        m = _Moments()
        for shard in iter_activation_shards(folder, [name], verify=j == 0):
            m.add(shard[name][shard["position"] >= min_position])
        tensors.update(_basis(name, m, min(max(spectrum(m.cov())[k_key], 1), max_k)))
    return tensors


def _basis(name: str, m: _Moments, k: int, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    cov = m.cov()
    std = cov.diagonal().clamp(min=1e-12).sqrt()
    _, vec = torch.linalg.eigh(cov / torch.outer(std, std))  # ascending eigenvalues
    return {f"{name}.basis": vec[:, -k:].flip(1).T.contiguous().to(dtype), f"{name}.mean": m.mean.float(),
            f"{name}.std": std.float()}
