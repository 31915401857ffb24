"""Build heldout.jsonl: the hand-written prompts in heldout.txt plus real questions the generator never sees.

    python data/router/build_heldout.py [--data ../shared/data]

heldout.txt was written by hand before generate.py existed, in a different voice (casual, typos, indirect asks,
file names instead of kinds). The real items are GSM8K questions from index 1000 on (generate.py stops at 999)
and MMLU questions from subjects generate.py does not read, each with a wrapper that generate.py does not use.
Deterministic: the same inputs give the same file.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
MMLU_HELDOUT = ("astronomy", "nutrition", "world_religions", "prehistory", "us_foreign_policy", "virology",
                "marketing", "business_ethics")
GSM8K_START = 1000
N_GSM8K, N_MMLU = 40, 40
# wrappers written for this file only
GSM_WRAP = ["{q}", "{q}", "ok math question. {q}", "{q} pls help, show steps", "can u work this out for me: {q}",
            "{q} — I keep getting the wrong number"]
MMLU_WRAP = ["{q}", "{q}", "hey do you know this one? {q}", "{q} (studying for a quiz)", "{q} just the answer"]


def parse_txt(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|", 3)]
        if len(parts) != 4:
            raise SystemExit(f"{path}:{n}: expected 'roles | attachments | flags | prompt'")
        roles, attach, flags, prompt = parts
        voice = "voice" in flags.split()
        context = flags.split("ctx=", 1)[1].split(";;") if "ctx=" in flags else []
        rows.append({"prompt": prompt, "attachments": [a.strip() for a in attach.split(",") if a.strip()],
                     "towers": [r.strip() for r in roles.split(",")], "voice": voice,
                     "context": [c.strip() for c in context], "source": "written (heldout.txt)"})
    return rows


def real_items(root: Path) -> list[dict]:
    rng = random.Random(11)
    gsm = [json.loads(line)["question"] for line in (root / "gsm8k/test.jsonl").open()][GSM8K_START:]
    rows = [{"prompt": rng.choice(GSM_WRAP).format(q=q), "attachments": [], "towers": ["reasoning"],
             "voice": False, "context": [], "source": "gsm8k (MIT)"} for q in rng.sample(gsm, N_GSM8K)]
    pool = []
    for s in MMLU_HELDOUT:
        with (root / f"mmlu/test/{s}_test.csv").open(newline="") as f:
            for row in csv.DictReader(f):
                q = row["question"].strip()
                if len(q) <= 300 and "_" not in q and "\n" not in q:
                    choices = [row[f"choice{k}"] for k in range(4)]
                    pool.append(q if rng.random() < 0.6 else q + " " + " / ".join(choices))
    rows += [{"prompt": rng.choice(MMLU_WRAP).format(q=q), "attachments": [], "towers": ["knowledge"],
              "voice": False, "context": [], "source": "mmlu (MIT)"} for q in rng.sample(pool, N_MMLU)]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE.parent.parent.parent / "shared" / "data")
    args = ap.parse_args()
    rows = parse_txt(HERE / "heldout.txt") + real_items(args.data)
    with (HERE / "heldout.jsonl").open("w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    roles = Counter(r for e in rows for r in e["towers"])
    print(f"heldout: {len(rows)} examples, {sum(len(e['towers']) > 1 for e in rows)} with two roles; "
          f"roles {dict(sorted(roles.items()))}")


if __name__ == "__main__":
    main()
