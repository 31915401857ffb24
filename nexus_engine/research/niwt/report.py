"""`nexus profile report`: the lab's results JSON -> PNG plots + one Markdown page + one self-contained HTML page.

The page is built once as a list of blocks (heading, paragraph, table, image) and rendered twice, so the
Markdown (for the repository) and the HTML (plots inlined as data URIs, opens anywhere) always agree.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

from nexus_engine.research.niwt import plot
from nexus_engine.research.niwt.spectral import curve_ks

Block = tuple[Any, ...]

LITERATURE = (
    "Literature bar: ShortGPT (Men et al., 2024) removes ~25% of a 13B model's layers by block influence and keeps "
    "~95% of MMLU without healing; Gromov et al. (2024, *The Unreasonable Ineffectiveness of the Deeper Layers*) "
    "keep MMLU flat to 40-50% removal with a short QLoRA healing, while their C4 perplexity rises steadily; "
    "Minitron (Sreenivas et al., 2024) finds depth pruning hurts GSM8K more than knowledge tasks. Those are 7-70B "
    "models; a 135M model has far less redundancy per layer, so its numbers are a lower bound on what the same code "
    "finds on a seed tower.")


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def make_plots(res: dict[str, Any], out: Path, tower: str) -> dict[str, Path]:
    pdir = out / "plots"
    goal, L = res["goal"], res["tower"]["num_layers"]
    target = goal["target"]
    plots: dict[str, Path] = {}
    series: dict[str, list[tuple[float, float]]] = {}
    for task in res["usable"]:
        if task == "gsm8k_em":
            continue
        tag = "" if res["usable"][task]["usable"] else " (near chance)"
        series[f"{task}{tag}"] = [(0, 1.0)] + [(r["n"], r["eval_retention"][task]) for r in goal["per_n"]]
    for task in ("text", "gsm8k"):
        pts = sorted((int(n), h.get(task)) for n, h in goal["healed_retention"].items())
        if pts:
            series[f"{task}, healed"] = pts
    plots["retention"] = plot.line_chart(
        pdir / f"{tower}-retention.png", series,
        f"{tower}: retention on the eval split vs layers removed (of {L}; chosen on '{goal['decision_task']}')",
        "layers removed", "retention", hlines=[(target, f"{target:.0%} target")], ylim=(0.0, 1.05))
    main = goal["decision_task"]
    curves = res["selection"][main]["curves"]
    plots["strategies"] = plot.line_chart(
        pdir / f"{tower}-strategies.png",
        {name: [(0, 1.0)] + [(r["n"], r["select_retention"]) for r in rows] for name, rows in curves.items()},
        f"{tower}: {main} retention by selection strategy (select split)", "layers removed", "retention",
        hlines=[(target, f"{target:.0%}")], ylim=(0.0, 1.05))
    sweep = res["sweep"]["variants"]
    rows, values = [], []
    for task in res["selection"]:
        key = "delta_nll" if "delta_nll" in sweep["skip 0"][task] else "delta_accuracy"
        for kind, label in (("skip", "skip"), ("attn0", "zero attn"), ("mlp0", "zero MLP")):
            rows.append(f"{label} ({task})")
            values.append([max(0.0, abs(sweep[f"{kind} {i}"][task][key])) for i in range(L)])
    plots["sweep"] = plot.heatmap(pdir / f"{tower}-sweep.png", rows, values,
                                  f"{tower}: loss increase (nats) when a layer or sub-block is removed")
    sim = res["sweep"]["similarity"]
    spec = res["spectral"]["text"]["sites"]["residual"]
    cons = spec["consecutive"]
    plots["similarity"] = plot.line_chart(
        pdir / f"{tower}-similarity.png",
        {"1 - cos(h_i, h_i+1)": list(enumerate(sim["block_influence"])),
         "angular distance / pi": list(enumerate(sim["angular_distance"]["1"][:L])),
         "1 - linear CKA": [(p[0], 1 - c) for p, c in zip(cons["pairs"], cons["linear_cka"])]},
        f"{tower}: how much each layer changes the residual stream (text; 1 - cos is ShortGPT's block "
        "influence)", "layer", "distance")
    ks = spec["layers"]
    plots["spectral"] = plot.line_chart(
        pdir / f"{tower}-spectral.png",
        {k: [(r["layer"], r[k]) for r in ks] for k in ("k90", "k95", "k99", "effective_rank")},
        f"{tower}: standardized-PCA dimensions of the residual stream entering each layer (text)",
        "layer (L = last layer's output)", "components")
    picks = sorted({0, 1, L // 4, L // 2, 3 * L // 4, L})
    def curve(r: dict[str, Any]) -> list[tuple[float, float]]:
        k = curve_ks(r["features"] - r["constant_features"])  # the components each stored point stands for
        return [(math.log2(kk), v) for kk, v in zip(k, r["explained_variance"])]

    plots["variance"] = plot.line_chart(
        pdir / f"{tower}-variance.png", {f"residual {r['layer']}": curve(r) for r in ks if r["layer"] in picks},
        f"{tower}: cumulative explained variance of the standardized residual stream", "log2(components k)",
        "explained", ylim=(0.0, 1.0))
    return plots


def blocks(res: dict[str, Any], plots: dict[str, Path], tower: str) -> list[Block]:
    goal, L = res["goal"], res["tower"]["num_layers"]
    main, target = goal["decision_task"], goal["target"]
    b: list[Block] = [("h1", f"NIWT profiling lab: {tower}")]
    t = res["tower"]
    b.append(("p", f"Teacher `{t['tower']}` ({t['architecture']}, {t['model_type']}, {L} layers, hidden "
                   f"{t['hidden_size']}, revision `{t['revision']}`). Data: `{res['data_root']}`. Layers are chosen on "
                   "the *select* split and every retention below is measured on the disjoint *eval* split; healing "
                   "trains on a third (*heal*) split. Retention = full / collapsed perplexity for likelihood tasks, "
                   "collapsed / full accuracy for accuracy tasks."))
    # headline
    g = goal["unhealed_at_goal"]
    hl = [f"**Goal (remove >= 12.5% = {goal['goal_layers']} layers at >= {target:.0%} {main} retention, no healing): "
          f"{'met' if goal['met_without_healing'] else 'not met'}**"]
    if g:
        hl.append(f"removing layers {g['layers']} ({g['strategy']}) keeps "
                  + ", ".join(f"{k} {_pct(v)}" for k, v in g["eval_retention"].items()) + " (eval split)")
    hl.append("largest n with retention >= target at every n up to it (eval, no healing): "
              + ", ".join(f"{k}: {v} of {L}" for k, v in goal["largest_n_holding_per_task"].items()))
    if goal["healed_retention"]:
        tried = sorted(goal["healed_retention"], key=int)
        hl.append(f"with healing: largest n tried whose {main} retention >= {target:.0%}: "
                  f"{goal['largest_healed_n_holding']} ({main} retention after healing: "
                  + ", ".join(f"n={n} {_pct(goal['healed_retention'][n].get(main))}" for n in tried) + ")")
    pc = res["prefix_cache"]
    hl.append(f"prefix-activation cache: the sweep costs {pc['ratio_seconds']:.2f}x the naive sweep ({pc['clock']}; "
              f"{pc['ratio_wall']:.2f}x wall clock, {pc['ratio_layer_calls']:.2f}x the layer forwards) on the same "
              f"variants; metrics agree to {pc['max_abs_nll_difference']:.1e} nats")
    b.append(("ul", hl))
    b.append(("h2", "Tasks and whether they can decide anything"))
    rows = []
    full = res["full"]["eval"]
    for task, u in res["usable"].items():
        if task == "gsm8k_em":
            em = res["full"]["gsm8k_em"]
            rows.append([task, f"greedy decode, {em['n']} questions", f"accuracy {_f(em['accuracy'])}",
                         "yes" if u["usable"] else "**no**", u["why"]])
            continue
        m = full[task]
        val = f"ppl {_f(m['ppl'])}" if "ppl" in m else f"accuracy {_f(m['accuracy'])}"
        rows.append([task, res["tasks"]["eval"][task]["description"], val, "yes" if u["usable"] else "**no**",
                     u["why"]])
    b.append(("table", ["task", "eval data", "full model", "usable", "why"], rows))
    b.append(("h2", "Retention vs layers removed (no healing)"))
    b.append(("img", plots["retention"], "retention vs layers removed"))
    tasks = list(goal["per_n"][0]["eval_retention"]) if goal["per_n"] else []
    rows = [[str(r["n"]), f"{100 * r['n'] / L:.0f}%", ",".join(map(str, r["layers"])), r["strategy"],
             f"{_pct(r['select_retention'])} / {_pct(r.get('select_kl_retention'))}"]
            + [_pct(r["eval_retention"][k]) for k in tasks] for r in goal["per_n"]]
    b.append(("table", ["n", "of layers", "removed", "strategy", f"{main} (select: retention / exp(−KL))"] +
              [f"{k} (eval){'' if res['usable'][k]['usable'] else ' near chance'}" for k in tasks], rows))
    ce = res["collapsed_eval"]
    rows = []
    for r in goal["per_n"]:
        m = ce[",".join(map(str, r["layers"]))]["metrics"]
        rows.append([str(r["n"])] + [f"{_pct(m[k].get('top1_agreement'))} / {_f(m[k].get('kl'))}" for k in tasks])
    b.append(("p", "Agreement with the full model on the same sets (eval): top-1 next-token agreement / mean KL(full ‖ "
                   "collapsed) in nats for the likelihood tasks; for MMLU, agreement of the chosen letter / KL of the "
                   "4-letter distribution. These need no labels, so they stay meaningful where accuracy is at chance."))
    b.append(("table", ["n"] + [f"{k} (eval)" for k in tasks], rows))
    own = goal.get("per_task_own_sets", {})
    if own and any(k != main for k in own):
        b.append(("p", "The same, each task on the layer sets chosen for it on its own select split (a near-chance "
                       "task has none and is shown on the decision task's sets):"))
        ns = [r["n"] for r in goal["per_n"]]
        by = {k: {r["n"]: r for r in rows_} for k, rows_ in own.items()}
        b.append(("table", ["n"] + [f"{k} (eval)" for k in own],
                  [[str(n)] + [f"{_pct(by[k][n]['eval_retention'])} ({','.join(map(str, by[k][n]['layers']))})"
                               if n in by[k] else "–" for k in own] for n in ns]))
    b.append(("p", "Where the seed's 97-100% holds: " + "; ".join(
        f"**{k}** up to {v} layer{'s' if v != 1 else ''} ({100 * v / L:.0f}%)"
        + ("" if res["usable"][k]["usable"] else " — but this metric is at chance, so it says nothing")
        for k, v in goal["largest_n_holding_per_task"].items()) + "."))
    if res.get("healed"):
        b.append(("h2", "Healing"))
        rows = []
        for n, h in sorted(res["healed"].items(), key=lambda kv: int(kv[0])):
            unhealed = next(r for r in goal["per_n"] if r["n"] == int(n))["eval_retention"]
            hl_ = h["heal"]
            rows.append([n, ",".join(map(str, h["layers"])), ",".join(map(str, hl_["adapted_layers"])),
                         f"{hl_['steps']} x {hl_['tokens_per_step']} tok, {hl_['seconds']:.0f} s"] +
                        [f"{_pct(unhealed[k])} → {_pct(h['retention'][k])}" for k in tasks])
        b.append(("table", ["n", "removed", "LoRA on", "training"] + [f"{k} (eval)" for k in tasks], rows))
        hc = res["config"]["healing"]
        b.append(("p", f"LoRA rank {hc['rank']} on q/k/v/o and gate/up/down of the kept layers next to each cut, "
                       f"distilled (KL to the full model) on {res['heal_tokens']} tokens of the heal split, lr "
                       f"{hc['lr']}, merged into the weights afterwards."))
    b.append(("h2", "Perturbation sweep (select split)"))
    b.append(("img", plots["sweep"], "sweep heatmap"))
    sel = res["selection"][main]
    kl = sel.get("single_skip_kl") or sel["single_skip_cost"]
    order = sorted(range(L), key=lambda i: kl[i])

    def cost(i: int) -> str:
        return f"{i} ({sel['single_skip_cost'][i]:+.3f} / {kl[i]:.3f})"

    b.append(("p", f"Least important single layers for {main} by KL (loss increase / KL to the full model, nats, "
                   "when skipped): " + ", ".join(cost(i) for i in order[:8]) + ". Most important: "
              + ", ".join(cost(i) for i in order[-4:][::-1]) + f". {len(res['sweep']['variants'])} variants "
              "(every layer and block of "
              f"{'/'.join(map(str, res['config']['widths']))} skipped; every attention and MLP zeroed)."))
    b.append(("img", plots["strategies"], "selection strategies"))
    b.append(("p", "Strategies: *ranked* removes the n layers whose single removal hurt least (change in loss), "
                   "*ranked_kl* those whose single removal moved the output distribution least (KL to the full "
                   "model: the less noisy estimate on a small sample); *block_influence* "
                   "the n with the smallest 1 - cos between input and output (ShortGPT); *block* the best contiguous "
                   "block (measured in the sweep up to 4, by angular distance beyond; Gromov et al.); *greedy* grows "
                   "the set one layer at a time, re-measuring the few candidates with the lowest single-skip KL."))
    b.append(("h2", "Prefix-activation cache"))
    b.append(("table", ["variants", "tokens", "clock", "naive s", "prefix s", "ratio", "wall ratio",
                        "layer-forward ratio", "max /Δ nll/"],
              [[str(pc["variants"]), str(pc["tokens"]), pc["clock"], _f(pc["seconds_naive"], 1),
                _f(pc["seconds_prefix"], 1), _f(pc["ratio_seconds"], 2), _f(pc["ratio_wall"], 2),
                _f(pc["ratio_layer_calls"], 2), f"{pc['max_abs_nll_difference']:.1e}"]]))
    sw = res["sweep"]
    b.append(("p", f"Whole sweep: {len(sw['variants'])} variants, {sw['seconds']['variants']:.0f} s for the variants "
                   f"+ {sw['seconds']['base']:.0f} s for the cached full forwards; {sw['layer_calls']} layer "
                   f"forwards instead of {sw['naive_layer_calls']} "
                   f"({sw['layer_calls'] / sw['naive_layer_calls']:.2f}x). Timed comparison: {pc['note']}."))
    b.append(("h2", "Spectral analysis (residual stream, text eval data)"))
    b.append(("img", plots["spectral"], "k90/k95/k99 per layer"))
    b.append(("img", plots["similarity"], "consecutive-layer distances"))
    b.append(("img", plots["variance"], "explained variance curves"))
    spec = res["spectral"]["text"]["sites"]["residual"]
    cka = dict(zip((p[0] for p in spec["consecutive"]["pairs"]), spec["consecutive"]["linear_cka"]))
    rows = [[str(r["layer"]), str(r["k90"]), str(r["k95"]), str(r["k99"]), _f(r["effective_rank"], 1),
             _f(cka.get(r["layer"]), 3)] for r in spec["layers"]]
    b.append(("table", ["residual entering layer", "k90", "k95", "k99", "effective rank", "CKA with next"], rows))
    mlp = res["spectral"]["text"]["sites"].get("mlp")
    if mlp:
        b.append(("p", "MLP hidden activations (k95 per layer): " +
                       ", ".join(f"{r['layer']}: {r['k95']}/{r['features']}" for r in mlp["layers"]) + "."))
    b.append(("p", f"Activations: {res['spectral']['text']['tokens']} tokens (text) and "
                   f"{res['spectral']['gsm8k']['tokens']} (gsm8k) per site and layer, in safetensors shards "
                   "(not committed; `nexus profile record` rewrites them)."))
    b.append(("h2", "Speed and memory"))
    rows = [[name, str(s["layers"]), _f(s["prefill_tok_s"], 0), _f(s["decode_tok_s"], 1),
             f"{s['weight_bytes'] / 2**20:.0f} MiB"] for name, s in res["speed"].items()]
    b.append(("table", ["model", "layers", "prefill tok/s (128-token prompt)", "decode tok/s", "weights"], rows))
    b.append(("p", "CPU timings are best-of-2 on a shared 2-core machine: read the ratio, not the absolute numbers. "
                   "The embeddings and the tied LM head (~28M of SmolLM2's 135M parameters) are not layers, so "
                   "removing k of 30 layers saves less than k/30 of the weights and time."))
    b.append(("h2", "Bitmasks"))
    rows = [[n, f"`{x['file']}`", ",".join(map(str, x["removed"])) or "none",
             ", ".join(f"{k} {_pct(v)}" for k, v in x["eval_retention"].items())] for n, x in res["bitmasks"].items()]
    b.append(("table", ["task", "file", "removed", "eval retention"], rows))
    b.append(("h2", "Against the literature"))
    b.append(("p", LITERATURE))
    secs = res["seconds"]
    b.append(("p", "Lab time: " + ", ".join(f"{k} {v:.0f} s" for k, v in secs.items()) + "."))
    return b


def extra_blocks(out: Path, tower: str, usable: dict[str, bool] | None = None) -> list[Block]:
    """Sections from the lab's other commands, when their JSONs are beside the results: `nexus profile sublayers`
    (sublayers-<tower>.json) and `nexus profile speed` on a GPU (niwt-speed-*-gpu.json)."""
    b: list[Block] = []
    sub = out / f"sublayers-{tower}.json"
    if sub.is_file():
        d = json.loads(sub.read_text(encoding="utf-8"))
        b.append(("h2", "Sub-layers: attention and MLP blocks (no healing)"))
        b.append(("p", f"Each layer's attention and MLP ranked by the KL of zeroing it alone (select split, task "
                       f"{d['decide']}); the k least important of one kind zeroed together, every task on the eval "
                       "split (`nexus profile sublayers`)."))
        tasks = list(d["full"])
        for part, label in (("attn", "attention"), ("mlp", "MLP")):
            rows = [[str(r["k"]), ",".join(map(str, r["zeroed"])), *(_pct(r["retention"][t]) for t in tasks)]
                    for r in d["curves"][part]]
            heads = [f"{t} retention" + ("" if (usable or {}).get(t, True) else " (near chance)") for t in tasks]
            b.append(("table", [f"{label} blocks zeroed", "layers", *heads], rows))
        best = "; ".join(f"{label}: " + ", ".join(f"{t} {k}" for t, k in d["largest_k_at_target"][part].items())
                         for part, label in (("attn", "attention"), ("mlp", "MLP")))
        b.append(("p", f"Largest k with every k up to it at >= {d['target']:.0%}: {best}."))
    speeds = sorted(out.glob("niwt-speed-*-gpu.json"))
    if speeds:
        b.append(("h2", "Sweep speed on a GPU (seed shapes, random weights)"))
        rows = []
        for path in speeds:
            d = json.loads(path.read_text(encoding="utf-8"))
            cfg = d["config"]
            rows.append([f"{d['arch']} ({cfg['num_hidden_layers']} × {cfg['hidden_size']})",
                         f"{d['device']}, {d['dtype']}", str(d["variants"]), f"{d['seconds_naive']:.2f} s",
                         f"{d['seconds_prefix']:.2f} s", f"{d['ratio_seconds']:.2f}×",
                         f"{d['ratio_layer_calls']:.2f}×", f"{d['max_abs_nll_difference']:.1e}"])
        b.append(("table", ["model", "device", "variants", "naive", "prefix cache", "time ratio",
                            "layer-forward ratio", "max abs Δ nll"], rows))
    return b


def render_md(bl: list[Block], out: Path) -> str:
    lines: list[str] = []
    for blk in bl:
        kind = blk[0]
        if kind == "h1":
            lines += [f"# {blk[1]}", ""]
        elif kind == "h2":
            lines += [f"## {blk[1]}", ""]
        elif kind == "p":
            lines += [blk[1], ""]
        elif kind == "ul":
            lines += [f"- {x}" for x in blk[1]] + [""]
        elif kind == "table":
            lines += ["| " + " | ".join(blk[1]) + " |", "|" + "---|" * len(blk[1])]
            lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in blk[2]] + [""]
        elif kind == "img":
            lines += [f"![{blk[2]}]({blk[1].relative_to(out).as_posix()})", ""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """The little Markdown the blocks use (**bold**, *italic*, `code`) as HTML."""
    import re

    s = html.escape(text)
    s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
    s = re.sub(r"\*(.+?)\*", r"<i>\1</i>", s)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", s)


def render_html(bl: list[Block], title: str) -> str:
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font:15px/1.5 system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px}"
             "th{background:#f4f4f4}img{max-width:100%}code{background:#f4f4f4;padding:0 3px}</style>"]
    for blk in bl:
        kind = blk[0]
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{html.escape(blk[1])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{_inline(blk[1])}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in blk[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_inline(h)}</th>" for h in blk[1])
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in blk[2])
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        elif kind == "img":
            data = base64.b64encode(Path(blk[1]).read_bytes()).decode()
            parts.append(f"<p><img alt='{html.escape(blk[2])}' src='data:image/png;base64,{data}'></p>")
    return "\n".join(parts) + "\n"


def write_report(out: Path, tower: str) -> dict[str, Path]:
    """Read results-<tower>.json in `out`; write plots/, report-<tower>.md and report-<tower>.html."""
    res = json.loads((out / f"results-{tower}.json").read_text(encoding="utf-8"))
    plots = make_plots(res, out, tower)
    bl = blocks(res, plots, tower)
    at = next((i for i, blk in enumerate(bl) if blk[:2] == ("h2", "Against the literature")), len(bl))
    bl[at:at] = extra_blocks(out, tower, {t: bool(u.get("usable", True)) for t, u in res.get("usable", {}).items()})
    md = out / f"report-{tower}.md"
    md.write_text(render_md(bl, out), encoding="utf-8")
    page = out / f"report-{tower}.html"
    page.write_text(render_html(bl, f"NIWT lab: {tower}"), encoding="utf-8")
    return {"markdown": md, "html": page, **plots}
