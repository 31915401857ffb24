"""The lab's data: held-out text, GSM8K and MMLU items, and where they are read from.

Held-out text (`data/research/text_{select,eval,heal}.txt`) was written for this project and is committed, so
text metrics never depend on a download. GSM8K and MMLU are read from `../shared/data` when it is there and
from the small licensed samples under `data/research/` otherwise (same layout; see data/research/SOURCES.md).

Three disjoint splits keep the measurement honest: `select` picks layers, `eval` reports retention, `heal`
trains the healing adapters. A layer set is never scored on the data that chose it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from nexus_engine import paths
from nexus_engine.errors import BadInputError

SAMPLES = paths.REPO_ROOT / "data" / "research"
SHARED = paths.REPO_ROOT.parent / "shared" / "data"

# GSM8K test items used by each split (indices into test.jsonl; the committed sample holds items 0..63)
GSM8K_SPLITS = {"select": range(0, 8), "eval": range(8, 40), "heal": range(40, 64)}
# MMLU: one question per subject, round-robin over the sorted subjects; `select` and `eval` take different rows
MMLU_ROWS = {"select": 0, "eval": 1}


class DataMissingError(BadInputError):
    """A data file the lab needs is missing or unreadable (the message names it and what should be there)."""


LAYOUT_HINT = ("a data folder holds gsm8k/test.jsonl (GSM8K's JSON lines) and mmlu/test/<subject>_test.csv "
               "(MMLU's CSVs); omit --data to use ../shared/data or the samples in data/research/")


def data_root(explicit: Path | None = None) -> Path:
    """`explicit` (checked), else ../shared/data when it has gsm8k and mmlu, else the committed samples."""
    if explicit is not None:
        explicit = Path(explicit).expanduser()
        missing = [str(explicit / p) for p in ("gsm8k/test.jsonl", "mmlu/test") if not (explicit / p).exists()]
        if missing:
            raise DataMissingError(f"data folder {explicit} lacks {' and '.join(missing)}", LAYOUT_HINT)
        return explicit
    if (SHARED / "gsm8k" / "test.jsonl").exists() and (SHARED / "mmlu" / "test").is_dir():
        return SHARED
    return SAMPLES


def held_text(split: str) -> str:
    path = SAMPLES / f"text_{split}.txt"
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataMissingError(f"held-out text {path} is missing: {e.strerror or e}",
                               "it is committed with the repository (data/research/); restore it with git") from e


@dataclass(frozen=True)
class MathItem:
    index: int
    question: str
    solution: str  # worked solution without the <<calculator>> annotations
    answer: str  # the final number, as GSM8K writes it after ####


def gsm8k_items(root: Path, split: str, limit: int | None = None) -> list[MathItem]:
    wanted = list(GSM8K_SPLITS[split])[:limit]
    if not wanted:
        return []
    path = root / "gsm8k" / "test.jsonl"
    out: list[MathItem] = []
    lines = 0
    try:
        with path.open(encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i > wanted[-1]:
                    break
                lines = i + 1
                if i in wanted:
                    out.append(_math_item(i, line, path))
    except OSError as e:
        raise DataMissingError(f"cannot read GSM8K from {path}: {e.strerror or e}", LAYOUT_HINT) from e
    if len(out) < len(wanted):
        raise DataMissingError(f"{path} has {lines} items; the {split} split needs items "
                               f"{wanted[0]}..{wanted[-1]}", LAYOUT_HINT)
    return out


def _math_item(i: int, line: str, path: Path) -> MathItem:
    try:
        row = json.loads(line)
        work, sep, final = row["answer"].rpartition("####")
        if not sep:
            raise ValueError("the answer has no '#### <number>' line")
        return MathItem(i, row["question"].strip(), re.sub(r"<<[^>]*>>", "", work).strip(),
                        final.strip().replace(",", ""))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataMissingError(f"{path}, line {i + 1}: not a GSM8K item ({e})",
                               'each line is {"question": ..., "answer": "... #### 42"}') from e


@dataclass(frozen=True)
class ChoiceItem:
    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: int  # 0..3


def mmlu_items(root: Path, split: str, limit: int = 57) -> list[ChoiceItem]:
    """`limit` questions, one per subject in turn (row MMLU_ROWS[split] + 2k of each subject's test file)."""
    files = sorted((root / "mmlu" / "test").glob("*_test.csv"))
    if not files:
        raise DataMissingError(f"no MMLU files (*_test.csv) in {root / 'mmlu' / 'test'}", LAYOUT_HINT)
    rows = {f.name.removesuffix("_test.csv"): _read_csv(f) for f in files}
    out: list[ChoiceItem] = []
    k = 0
    while len(out) < limit:
        row_i = MMLU_ROWS[split] + 2 * (k // len(files))
        if all(row_i >= len(r) for r in rows.values()):
            break
        subject = files[k % len(files)].name.removesuffix("_test.csv")
        if row_i < len(rows[subject]):
            r = rows[subject][row_i]
            if len(r) < 6 or r[5].strip() not in ANSWERS:
                raise DataMissingError(f"{root / 'mmlu' / 'test' / (subject + '_test.csv')}, row {row_i + 1}: "
                                       f"expected question, 4 choices and an answer A-D, got {r[:6]}", LAYOUT_HINT)
            out.append(ChoiceItem(subject.replace("_", " "), r[0], (r[1], r[2], r[3], r[4]), _answer(r[5])))
        k += 1
    return out


ANSWERS = ("A", "B", "C", "D", "0", "1", "2", "3")


def _answer(cell: str) -> int:
    """MMLU's answer column: a letter A-D (the original CSVs) or an index 0-3 (the shared copies)."""
    return ANSWERS.index(cell.strip()) % 4


def _read_csv(path: Path) -> list[list[str]]:
    try:
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataMissingError(f"cannot read MMLU file {path}: {e}", LAYOUT_HINT) from e
    return rows[1:] if rows and rows[0][:1] == ["question"] else rows  # shared files have a header row


def digest(*parts: object) -> str:
    """sha256 of the items a task was built from: recorded in manifests and bitmasks as the dataset hash."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, default=lambda o: o.__dict__, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()
