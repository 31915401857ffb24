"""Residency: which towers sit in VRAM (hot), in RAM (warm) or only on disk (cold), within one hard budget.

budget.py owns the byte accounting per device; footprints.py sizes towers (estimated, then measured and
stored); policy.py is the pure decision function (state in, loads/evictions out); planner.py runs that policy
over a whole profile for `nexus plan`. The manager that applies decisions to real towers builds on these.
"""

from nexus_engine.residency.budget import Budget, DeviceBudget
from nexus_engine.residency.footprints import FootprintStore, cost_for, estimate
from nexus_engine.residency.policy import (
    CPU,
    GPU,
    Decision,
    Evict,
    Limits,
    Load,
    Params,
    Refusal,
    Request,
    Resident,
    TowerCost,
    apply,
    decide,
)

__all__ = [
    "CPU", "GPU", "Budget", "Decision", "DeviceBudget", "Evict", "FootprintStore", "Limits", "Load", "Params",
    "Refusal", "Request", "Resident", "TowerCost", "apply", "cost_for", "decide", "estimate",
]
