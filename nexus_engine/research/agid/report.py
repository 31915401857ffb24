"""`nexus train report`: Markdown tables and learning-curve PNGs from the results JSONs of `nexus train`.

Reads `results-text-<tower>.json`, `results-vision-<tower>.json` and `results-audio-<tower>.json` in the results
folder (and `nexus train speed` JSONs, `agid-speed-*.json` there or in `gpu/`) and writes `report.md` and
`plots/*.png` beside them (PNG charts are the NIWT lab's Pillow line charts).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nexus_engine.research.niwt.plot import line_chart

ROWS = (("teacher", "teacher"), ("collapsed", "collapsed, untrained"), ("logit_only", "logit-only distilled"),
        ("agid_local", "AGID, local fit only"), ("agid", "AGID (local + trajectory)"))


def write_report(out: Path) -> dict[str, Path]:
    out = Path(out)
    texts = sorted(out.glob("results-text-*.json"))
    visions = sorted(out.glob("results-vision-*.json"))
    audios = sorted(out.glob("results-audio-*.json"))
    speeds = sorted([*out.glob("agid-speed-*.json"), *out.glob("gpu/agid-speed-*.json")])
    if not texts and not visions and not audios and not speeds:
        from nexus_engine.errors import NexusError

        raise NexusError(f"no results-text-*.json, results-vision-*.json or results-audio-*.json in {out}",
                         "run `nexus train text` / `nexus train vision` / `nexus train audio` first")
    (out / "plots").mkdir(parents=True, exist_ok=True)
    lines = ["# AGID: activation-guided distillation and the vision and audio projectors", "",
             "Written by `nexus train report` from the results JSONs in this folder; how the numbers are made is "
             "in docs/agid.md.", ""]
    written: dict[str, Path] = {}
    for path in texts:
        res = json.loads(path.read_text(encoding="utf-8"))
        lines += text_section(res, out, written)
    for path in visions:
        res = json.loads(path.read_text(encoding="utf-8"))
        lines += vision_section(res, out, written)
    for path in audios:
        res = json.loads(path.read_text(encoding="utf-8"))
        lines += audio_section(res, out, written)
    if speeds:
        lines += speed_section([json.loads(p.read_text(encoding="utf-8")) for p in speeds])
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    written["report"] = report
    return written


def _f(x: Any, nd: int = 3) -> str:
    return "–" if x is None else f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _cut(c: dict[str, Any], res: dict[str, Any]) -> str:
    return f"{c['name']} (rank {res['ranks'][c['name']]['rank']})"


def text_section(res: dict[str, Any], out: Path, written: dict[str, Path]) -> list[str]:
    t, sz, rows = res["tower"], res["sizes"], res["rows"]
    tasks = list(rows["teacher"]["retention"])
    lines = [f"## Text: {t['tower']} ({t['num_layers']} layers), student without {len(res['mask']['removed'])} "
             f"layers ({sz['removed_fraction']:.0%})", "",
             f"Removed layers {res['mask']['removed']} (mask: {res['mask']['strategy']}), cuts "
             f"{', '.join(_cut(c, res) for c in res['mask']['cuts'])};"
             f" bridges: {sz['bridge_params']:,} parameters in total, the same for every trained row. Training data: "
             f"{res['data']['description']}. Metrics on the NIWT eval split, against the teacher.", ""]
    head = "| student | " + " | ".join(f"{k} ppl | {k} ppl retention | {k} top-1 agreement | {k} KL" for k in tasks)
    lines += [head + " |", "|---|" + "---:|" * (4 * len(tasks))]
    for key, label in ROWS:
        if key not in rows:
            continue
        r = rows[key]
        cells = []
        for k in tasks:
            m = r["metrics"][k]
            cells += [_f(m["ppl"], 2), _f(r["retention"][k]), _f(m["top1_agreement"]), _f(m["kl"])]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    sp = res.get("speed") or {}
    if sp:
        lines += ["", "| model | layers | weights | prefill tok/s | decode tok/s |", "|---|---:|---:|---:|---:|"]
        for key, label, layers in (("teacher", "teacher", sz["layers_teacher"]),
                                   ("agid", "AGID student (+ bridges)", sz["layers_student"])):
            s = sp[key]
            lines.append(f"| {label} | {layers} | {s['weight_bytes'] / 2**20:.1f} MiB | {s['prefill_tok_s']:.0f} | "
                         f"{s['decode_tok_s']:.1f} |")
    g = res["goal"]
    lines += ["", f"**Goal** (≥ {g['target']:.0%} of the teacher at ≥ 25 % fewer layers, beating the untrained "
              f"collapse and logit-only): removed {g['removed_fraction']:.0%}; AGID perplexity retention "
              f"{g['agid_ppl_retention']:.3f} ({'met' if g['ppl_retention_met'] else 'not met'}), top-1 agreement "
              f"{g['agid_top1_agreement']:.3f} ({'met' if g['agreement_met'] else 'not met'}); beats the untrained "
              f"collapse: {'yes' if g['beats_collapsed'] else 'no'}; beats logit-only: "
              f"{'yes' if g['beats_logit_only'] else 'no'}.", ""]
    curves = res["curves"]
    name = f"text-{t['tower']}"
    series = {label: [(r["step"], r["loss"]) for r in curves[k]["curve"]]
              for k, label in (("logit", "logit-only (KL)"), ("agid", "AGID trajectory (hidden + KL)")) if k in curves}
    if "agid" in curves and curves["agid"]["curve"] and "kl" in curves["agid"]["curve"][0]:
        series["AGID: its KL part"] = [(r["step"], r["kl"]) for r in curves["agid"]["curve"]]
    written[name] = line_chart(out / "plots" / f"{name}-curves.png", series, f"{t['tower']}: end-to-end training",
                               "step", "loss")
    if "local" in curves:
        written[name + "-local"] = line_chart(out / "plots" / f"{name}-local.png", {
            "AGID local fit (mean over cuts)": [(r["step"], r["loss"]) for r in curves["local"]["curve"]]},
            f"{t['tower']}: bridges fitted on recorded activations", "step", "hidden loss")
    lines += [f"![learning curves](plots/{name}-curves.png)", "", f"![local fit](plots/{name}-local.png)", ""]
    return lines


SPLITS = (("eval_seen", "held-out scenes (colour-shape pairs seen in training)", "objects"),
          ("eval_novel", "held-out scenes with a never-trained colour-shape pair", "objects"),
          ("eval_coco", "held-out COCO images", "hit"))


def vision_section(res: dict[str, Any], out: Path, written: dict[str, Path]) -> list[str]:
    v, ev = res["vision"], res["eval"]
    lines = [f"## Vision: {v['tower']} features → {res['llm']['tower']} prefix tokens", "",
             f"Projector {v['in_width']} → {v['latent']} → {v['out_width']}, {v['tokens']} image tokens "
             f"(global + {v['grid']}×{v['grid']} grid), {res['params']:,} parameters; LLM frozen. Trained on "
             f"{res['data']['train']} rendered scenes and {res['data']['coco_train']} COCO images (with mirror "
             f"images) for {res['config']['train']['steps']} steps. Answers are greedy "
             f"(≤ {res['config']['max_new_tokens']} tokens) to “What is in the image?”.", ""]
    for split, label, _ in SPLITS:
        lines += _path_table(ev, split, label, "images", "text composition (labels + OCR)", "no image",
                             "its notes alone")
    lines += _goal_and_curve(res, out, written, f"vision-{v['tower']}", "caption cross-entropy",
                             "the projector answers held-out image questions better than the text composition",
                             "its notes", "no image", f"{v['tower']} -> {res['llm']['tower']}: projector training")
    return lines


def _path_table(ev: dict[str, Any], split: str, label: str, unit: str, text_label: str, none_label: str,
                notes_label: str) -> list[str]:
    """One held-out split: each path's scores, the text path's notes scored as an answer, one sample answer."""
    rows = {p: ev.get(f"{split}/{p}") for p in ("projector", "text", "none")}
    if not rows["projector"]:
        return []
    keys = list(rows["projector"]["mean"])
    lines = [f"**{label}** ({rows['projector']['n']} {unit})", "",
             "| path | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for p, label_p in (("projector", "projector (trained)"), ("text", text_label), ("none", none_label)):
        if rows[p]:
            lines.append(f"| {label_p} | " + " | ".join(_f(rows[p]["mean"][k], 2) for k in keys) + " |")
    if rows["text"] and rows["text"].get("notes"):  # the notes, scored as if they were the answer
        lines.append(f"| *{notes_label} (what the text path could pass on)* | "
                     + " | ".join(_f(rows["text"]["notes"][k], 2) for k in keys) + " |")
    lines.append("")
    for p in ("projector", "text"):
        if rows[p] and rows[p]["samples"]:
            sample = rows[p]["samples"][0]
            answer = " ".join(sample["answer"].split())[:160]  # one line: a newline would end the list item
            lines.append(f"- {p}: reference “{sample['reference']}” → answer “{answer}”")
    return [*lines, ""]


def _goal_and_curve(res: dict[str, Any], out: Path, written: dict[str, Path], name: str, loss: str, goal: str,
                    notes: str, none: str, title: str) -> list[str]:
    """The goal line and the learning-curve plot of a projector's results."""
    g = res["goal"]
    lines = [f"**Goal** ({goal}): {'met' if g['met'] else 'not met'} — " + "; ".join(
        f"{k}: {d['metric']} {d['projector']:.2f} vs {d['text']:.2f} "
        f"({notes} {_f(d.get('text_notes'), 2)}, {none} {d['none']:.2f})" for k, d in g.items() if isinstance(d, dict)),
        ""]
    written[name] = line_chart(out / "plots" / f"{name}-curve.png",
                               {loss: [(r["step"], r["loss"]) for r in res["curve"]["curve"]]}, title, "step",
                               "loss (nats)")
    return [*lines, f"![{name} learning curve](plots/{name}-curve.png)", ""]


AUDIO_SPLITS = (("eval_seen", "held-out utterances (colour-shape pairs seen in training)"),
                ("eval_novel", "held-out utterances with a never-trained colour-shape pair"))


def audio_section(res: dict[str, Any], out: Path, written: dict[str, Path]) -> list[str]:
    a, ev, d = res["audio"], res["eval"], res["data"]
    lines = [f"## Audio: {a['tower']} encoder states → {res['llm']['tower']} prefix tokens", "",
             f"Projector {a['in_width']} → {a['latent']} → {a['out_width']}, {a['tokens']} audio tokens (mean + "
             f"{a['chunks']} stretches of the utterance), {res['params']:,} parameters; LLM frozen. Trained on "
             f"{d['train']} utterances ({d['speech_seconds']['train']:.0f} s of speech, spoken by {a['tts']}) for "
             f"{res['config']['train']['steps']} steps. Answers are greedy (≤ {res['config']['max_new_tokens']} "
             "tokens) to “Which shapes and colours did the user mention?”; the text path has the "
             f"{a['tower']} transcript in its system message.", ""]
    for split, label in AUDIO_SPLITS:
        lines += _path_table(ev, split, label, "utterances", "text composition (ASR transcript)", "no audio",
                             "the transcript alone")
    nll = res.get("nll") or {}
    if nll:
        lines += ["Cross-entropy of the reference answer (nats per answer token), teacher-forced:", "",
                  "| utterances | given its own audio | another utterance's audio | all-zero encoder states |",
                  "|---|---:|---:|---:|"]
        fit = nll.get("train_fit")
        if fit:
            lines.append(f"| {fit['n']} training utterances, before → after training | "
                         f"{_f(fit['untrained'])} → {_f(fit['trained'])} | – | – |")
        for split, label in AUDIO_SPLITS:
            if split in nll:
                r = nll[split]
                lines.append(f"| {label} | {_f(r['own'])} | {_f(r['other'])} | {_f(r['zeros'])} |")
        lines.append("")
    lines += _goal_and_curve(res, out, written, f"audio-{a['tower']}", "answer cross-entropy",
                             "the projector answers held-out questions about the audio better than the transcript in "
                             "the prompt", "the transcript alone", "no audio",
                             f"{a['tower']} -> {res['llm']['tower']}: audio projector training")
    return lines


def speed_section(runs: list[dict[str, Any]]) -> list[str]:
    """Step time and memory of every stage on random-weight seed-shape teachers (`nexus train speed`)."""
    gib = 2**30
    lines = ["## Training speed at seed scale (random-weight teachers)", "",
             "`nexus train speed`: the same stages on a teacher with a seed tower's shape and random weights (speed "
             "and memory depend on shapes only; the loss must still fall). ms/step is the median of the steady "
             "steps; loss is the mean of the first and last five steps.", "",
             "| teacher | device | batch × seq | stage | ms/step | tokens/s | loss | peak GiB |",
             "|---|---|---|---|---:|---:|---|---:|"]
    for r in runs:
        shape = f"{r['arch']} ({r['mask']['kept'] + len(r['mask']['removed'])} → {r['mask']['kept']} layers)"
        for stage in ("local", "agid", "projector"):
            s = r.get(stage)
            if not s:
                continue
            tok = f"{s['tokens_per_second']:,.0f}" if "tokens_per_second" in s else "–"
            peak = f"{s['peak_gpu_bytes'] / gib:.1f}" if "peak_gpu_bytes" in s else "–"
            lines.append(f"| {shape} | {r['device']}, {r['dtype']} | {r['batch']} × {r['seq']} | {stage} | "
                         f"{s['seconds_per_step'] * 1000:.0f} | {tok} | {s['loss_first5']:.4f} → "
                         f"{s['loss_last5']:.4f} | {peak} |")
        d = r.get("decode")
        if d:
            lines.append(f"| {shape} | {r['device']}, {r['dtype']} | batch 1 | student vs teacher | "
                         f"prefill {d['prefill_speedup']:.2f}× | decode {d['teacher']['decode_tok_s']:.0f} → "
                         f"{d['student']['decode_tok_s']:.0f} | – | – |")
    return [*lines, ""]
