"""Plan a whole profile for a given VRAM and RAM, without loading anything: `nexus plan`.

Uses the same estimates and the same policy as the running engine, in three passes:
1. resident: interactive towers that run whole (on the GPU or the CPU), voice first, each placed only where
   it fits next to the ones already placed (nothing is evicted to make the steady state);
2. warm: the interactive towers left over that would fit the GPU whole, copied to page-locked RAM while its
   share allows, so a switch costs a copy instead of a load from disk;
3. on demand: for every tower not resident, the policy's decision from that steady state when it is asked
   for: where it runs (whole, offloaded and how split), what it pushes out, how long the load takes, or why
   it cannot run, and whether a smaller quantization would.
"""

from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from nexus_engine.config.schema import BACKEND_QUANTS, QUANT_BYTES_PER_PARAM, ModelsConfig, TowerSpec
from nexus_engine.config.units import fmt_bytes
from nexus_engine.residency.budget import PAGE_LOCKED_SHARE, Budget
from nexus_engine.residency.footprints import MARGIN, FootprintStore, cost_for, estimate
from nexus_engine.residency.policy import (
    CPU,
    GPU,
    Decision,
    Evict,
    Limits,
    Load,
    Params,
    Request,
    Resident,
    TowerCost,
    apply,
    decide,
    used,
)

# which roles stay resident first when not all fit: the voice loop (ears, mouth, the LLM between), then the rest
ROLE_PRIORITY = ("hearing", "speech", "reasoning", "persona", "perception", "vision", "code", "knowledge",
                 "hearing_long", "imagination", "video")
NOW = 1_000_000.0  # the plan's clock: residents were used "just now", so background requests respect them


@dataclass
class Row:
    tower: str
    roles: list[str]
    latency: str
    quantization: str
    params: int | None
    device: str  # as declared
    size: int | None  # the whole tower in its quantized form
    basis: str  # measured, or how it was estimated
    placement: str  # resident | warm | on demand | waits | cannot fit | unknown size
    where: str = ""  # GPU, CPU, GPU+RAM (offload), RAM (page-locked)…
    vram: int = 0
    ram: int = 0
    load_ms: float | None = None
    evicts: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class Plan:
    profile: str
    vram: int
    ram: int
    vram_limit: int
    ram_limit: int
    rows: list[Row]
    missing_roles: list[str]
    origin: dict[str, str] = field(default_factory=dict)  # where vram/ram came from: flag, profile, machine

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def by_placement(self, placement: str) -> list[Row]:
        return [r for r in self.rows if r.placement == placement]


def plan_profile(config: ModelsConfig, profile: str | None, vram: int, ram: int,
                 store: FootprintStore | None = None, params: Params | None = None,
                 origin: dict[str, str] | None = None) -> Plan:
    prof = config.profile(profile)
    budget = Budget.fixed(vram, ram)
    limits = Limits(budget.limit(GPU), budget.limit(CPU), int(budget.limit(CPU) * PAGE_LOCKED_SHARE))
    roles: dict[str, list[str]] = {}
    for role, names in prof.roles.items():
        for n in names:
            roles.setdefault(n, []).append(role)
    # helpers (router embeddings, VAD) serve no role but run in every profile
    specs = [s for s in config.towers.values() if s.name in roles or not s.capabilities]
    costs = {s.name: c for s in specs if (c := cost_for(s, store)) is not None}
    rank = {s.name: min((ROLE_PRIORITY.index(r) for r in roles.get(s.name, [])), default=-1) for s in specs}
    by_rank = sorted(specs, key=lambda s: rank[s.name])

    state: dict[str, Resident] = {}
    for s in by_rank:  # 1. resident
        c = costs.get(s.name)
        if c is None or s.latency != "interactive" or s.device == "offload":
            continue
        frozen = {n: replace(r, pinned=True) for n, r in state.items()}
        d = decide(Request((s.name,), now=NOW), frozen, costs, limits, params)
        if d.ok and all(isinstance(a, Load) and a.mode == "full" for a in d.actions):
            state = apply(state, d.actions[-1], NOW)
    resident = set(state)
    for s in by_rank:  # 2. warm
        c = costs.get(s.name)
        if c is None or s.name in state or s.latency != "interactive" or c.device == "cpu":
            continue
        locked = sum(r.ram for r in state.values() if r.tier == "warm")
        if c.gpu_bytes <= limits.vram and used(state)[1] + c.ram_bytes <= limits.ram \
                and locked + c.ram_bytes <= limits.page_locked:
            state[s.name] = Resident(s.name, "warm", 0, c.ram_bytes, last_used=NOW, page_locked=True)

    rows = []
    for s in by_rank:  # 3. on demand, from the steady state
        c = costs.get(s.name)
        row = _row(s, roles.get(s.name, []), c, store)
        if c is None:
            row.placement, row.note = "unknown size", "add `params` to its models.toml entry, or load it once"
        elif s.name in resident:
            r = state[s.name]
            row.placement, row.where, row.vram, row.ram = "resident", "GPU" if r.vram else "CPU", r.vram, r.ram
        else:
            _on_demand(row, s, state, costs, limits, params, store)
            if s.name in state:
                row.placement = "warm"
        rows.append(row)
    missing = [r for r in ROLE_PRIORITY if r not in prof.roles]
    return Plan(prof.name, vram, ram, limits.vram, limits.ram, rows, missing, dict(origin or {}))


def _row(spec: TowerSpec, roles: list[str], cost: TowerCost | None, store: FootprintStore | None) -> Row:
    est = estimate(spec)
    basis = "measured" if cost and cost.measured else (est.basis if est else "unknown")
    return Row(spec.name, roles, spec.latency, spec.quantization, spec.params, spec.device,
               cost.gpu_bytes if cost else None, basis, "on demand")


def _on_demand(row: Row, spec: TowerSpec, state: dict[str, Resident], costs: dict[str, TowerCost],
               limits: Limits, params: Params | None, store: FootprintStore | None) -> None:
    d = decide(Request((spec.name,), now=NOW + 1), state, costs, limits, params)
    if d.ok:
        _fill(row, d)
        cost = costs[spec.name]
        if row.where.endswith("(offload)") and cost.offload == "split" and cost.split_ram_bytes > cost.ram_bytes:
            row.note = (f"its layers in RAM stay unquantized ({spec.dtype if spec.dtype != 'auto' else 'bf16'}): "
                        f"transformers cannot run {spec.quantization} layers on the CPU")
        return
    refusal = d.refused[0]
    if refusal.retry:  # blocked by recently used interactive towers: what happens once they are idle
        later = NOW + (params or Params()).keep_interactive_s + 2
        d2 = decide(Request((spec.name,), now=later), state, costs, limits, params)
        if d2.ok:
            _fill(row, d2)
            row.placement = "waits"
            row.note = f"while the interactive towers are in use: {refusal.reason}"
            return
    row.placement, row.note = "cannot fit", refusal.reason
    alt = _smaller_quant(spec, state, costs, limits, params, store)
    if alt:
        row.note += f". {alt}"


def _fill(row: Row, d: Decision) -> None:
    load = next(a for a in d.actions if isinstance(a, Load))
    row.vram, row.ram, row.load_ms = load.vram, load.ram, load.est_ms
    row.where = ("CPU" if load.device == CPU else "GPU" if load.mode == "full" else "GPU+RAM (offload)")
    row.evicts = [f"{a.tower}->{a.to}" for a in d.actions if isinstance(a, Evict)]


def _smaller_quant(spec: TowerSpec, state: dict[str, Resident], costs: dict[str, TowerCost], limits: Limits,
                   params: Params | None, store: FootprintStore | None) -> str:
    """The largest quantization below the declared one that the backend loads and that would run."""
    mine = QUANT_BYTES_PER_PARAM[spec.quantization]
    smaller = sorted((q for q in BACKEND_QUANTS[spec.backend] if q != "gguf" and QUANT_BYTES_PER_PARAM[q] < mine),
                     key=lambda q: -QUANT_BYTES_PER_PARAM[q])
    for q in smaller:
        alt = replace(spec, quantization=q)
        cost = cost_for(alt, store)
        if cost is None:
            continue
        d = decide(Request((spec.name,), now=NOW + 1e9), state, {**costs, spec.name: cost}, limits, params)
        if d.ok:
            load = next(a for a in d.actions if isinstance(a, Load))
            how = "whole on the GPU" if load.mode == "full" else \
                f"offloaded, {fmt_bytes(load.vram)} VRAM + {fmt_bytes(load.ram)} RAM"
            pushed = sum(isinstance(a, Evict) for a in d.actions)
            after = f", once the {pushed} towers it pushes out are idle" if pushed else ""
            return f"As {q} ({fmt_bytes(cost.gpu_bytes)}) it would run {how}{after}"
    return "No smaller quantization its backend loads would fit either" if smaller else ""


# ------------------------------------------------------------------------------------------------ text
def render(plan: Plan) -> str:
    src = {k: f" ({v})" if v else "" for k, v in (("vram", plan.origin.get("vram")), ("ram", plan.origin.get("ram")))}
    vram = (f"  VRAM {fmt_bytes(plan.vram)}{src['vram']}: towers may hold {fmt_bytes(plan.vram_limit)} "
            "(the rest is kept for the CUDA context and activations)" if plan.vram else
            f"  VRAM none{src['vram']}: every tower runs on the CPU")
    out = [f"Plan for profile {plan.profile!r} — nothing is loaded.", vram,
           f"  RAM  {fmt_bytes(plan.ram)}{src['ram']}: towers may hold {fmt_bytes(plan.ram_limit)} "
           f"(the rest is kept for the OS and the app; at most {PAGE_LOCKED_SHARE:.0%} of it page-locked)",
           f"  sizes: parameters × bytes per parameter × {MARGIN:.2f} until measured after a first load", ""]
    head = f"{'tower':20} {'roles':20} {'latency':11} {'quant':5} {'params':>6} {'size':>10}  placement"
    out.append(head)
    out.append("-" * len(head))
    for r in plan.rows:
        params = f"{r.params / 1e9:.3g}B" if r.params and r.params >= 1e9 else \
            (f"{r.params / 1e6:.3g}M" if r.params else "-")
        size = fmt_bytes(r.size) if r.size is not None else "?"
        roles = ",".join(r.roles) or "(helper)"
        if len(roles) > 20:
            roles = roles[:19] + "…"
        out.append(f"{r.tower:20} {roles:20} {r.latency:11} {r.quantization:5} {params:>6} {size:>10}  "
                   f"{_placement(r)}")
        for line in _details(r):
            out += textwrap.wrap(line, width=118, initial_indent=" " * 22, subsequent_indent=" " * 24)
    out += ["", _totals(plan)]
    if plan.missing_roles:
        out.append(f"Roles not installed in this profile: {', '.join(plan.missing_roles)}")
    return "\n".join(out)


def _placement(r: Row) -> str:
    if r.placement == "resident":
        return f"resident on the {r.where}" + (f" ({fmt_bytes(r.ram)} RAM)" if r.where == "CPU" else "")
    if r.placement == "warm":
        return f"warm in page-locked RAM ({fmt_bytes(r.size or 0)}); to the GPU in ~{_secs(r.load_ms)}"
    if r.placement in ("on demand", "waits"):
        where = r.where if r.where != "GPU+RAM (offload)" else \
            f"offloaded: {fmt_bytes(r.vram)} VRAM + {fmt_bytes(r.ram)} RAM"
        when = "on demand" if r.placement == "on demand" else "when interactive towers are idle"
        return f"{when}, {where}; load ~{_secs(r.load_ms)} from disk"
    return r.placement.upper() if r.placement == "cannot fit" else r.placement


def _details(r: Row) -> list[str]:
    lines = []
    if r.evicts:
        lines.append("when loaded, pushes out: " + ", ".join(r.evicts))
    if r.note:
        lines.append(("why: " if r.placement == "cannot fit" else "note: ") + r.note)
    return lines


def _secs(ms: float | None) -> str:
    return "?" if ms is None else (f"{ms / 1000:.1f} s" if ms >= 100 else f"{ms:.0f} ms")


def _totals(plan: Plan) -> str:
    hot = plan.by_placement("resident")
    warm = plan.by_placement("warm")
    v = sum(r.vram for r in hot)
    ram = sum(r.ram for r in hot) + sum(r.size or 0 for r in warm)
    return (f"Steady state: {len(hot)} resident ({fmt_bytes(v)} of {fmt_bytes(plan.vram_limit)} VRAM), "
            f"{len(warm)} warm; RAM held {fmt_bytes(ram)} of {fmt_bytes(plan.ram_limit)}. "
            f"{len(plan.by_placement('cannot fit'))} cannot fit.")
