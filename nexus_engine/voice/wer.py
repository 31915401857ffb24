"""Word error rate after standard English normalization, for the voice tests and `nexus bench voice`.

Normalization (in the spirit of Whisper's English normalizer, which lives in the openai-whisper package that
Nexus does not install): lower case, hyphens and punctuation to spaces, apostrophes kept inside words,
common contractions expanded, digits 0-20 spelled out, and British/American spelling variants mapped to one
form (counselled = counseled, colour = color, realise = realize), so a spelling variant is never an error.
"""

from __future__ import annotations

import re

CONTRACTIONS = {"won't": "will not", "can't": "can not", "cannot": "can not", "n't": " not", "'re": " are",
                "'ve": " have", "'ll": " will", "'m": " am", "'d": " would", "it's": "it is", "that's": "that is",
                "there's": "there is", "what's": "what is", "let's": "let us", "he's": "he is", "she's": "she is"}
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
           "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
VARIANTS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "ok": "okay", "grey": "gray", "whisky": "whiskey",
            "programme": "program", "catalogue": "catalog", "dialogue": "dialog", "practise": "practice",
            "cheque": "check", "tyre": "tire", "plough": "plow", "mould": "mold", "kerb": "curb"}
_RULES = [(re.compile(r"^(\w{3,})ll(ed|ing|er|ers)$"), r"\1l\2"),  # counselled -> counseled
          (re.compile(r"^(\w{3,})our(s|ed|ing|ite|ites|able)?$"), r"\1or\2"),  # colour, favourite
          (re.compile(r"^(\w{3,})is(e|es|ed|ing|ation|ations)$"), r"\1iz\2"),  # realise, organisation
          (re.compile(r"^(\w{2,})tre(s)?$"), r"\1ter\2")]  # centre, theatre


def normalize(text: str) -> list[str]:
    t = text.lower().replace("’", "'")
    t = re.sub(r"[\[(<][^\])>]*[\])>]", " ", t)  # [music], (laughs)
    for short, long in CONTRACTIONS.items():
        t = t.replace(short, long)
    t = re.sub(r"[^a-z0-9' ]+", " ", t)
    out = []
    for w in t.split():
        w = w.strip("'")
        if not w:
            continue
        if w.isdigit() and int(w) < len(NUMBERS):
            w = NUMBERS[int(w)]
        w = VARIANTS.get(w, w)
        if len(w) > 5:
            for rule, sub in _RULES:
                w = rule.sub(sub, w)
        out.append(w)
    return out


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(reference: str, hypothesis: str) -> float:
    ref, hyp = normalize(reference), normalize(hypothesis)
    return edit_distance(ref, hyp) / max(1, len(ref))


def corpus_wer(pairs: list[tuple[str, str]]) -> float:
    errors = sum(edit_distance(normalize(r), normalize(h)) for r, h in pairs)
    return errors / max(1, sum(len(normalize(r)) for r, _ in pairs))
