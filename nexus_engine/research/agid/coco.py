"""The COCO image-caption pairs in ../shared/data/coco (24 val2017 images, 5 captions each), split and scored.

Split: images sorted by id, every third one held out (8 images never trained on). Scoring an answer: the COCO
object categories it names (80 categories and their everyday synonyms: "man" and "skier" are a person, "sofa"
a couch), against the categories the five reference captions name. A hit is an answer naming at least one
object of the captions; "invented" counts objects it names that no caption mentions.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from nexus_engine import paths

_SYNONYMS = {
    "person": "person people man men woman women boy boys girl girls child children kid kids player players skier "
              "skiers snowboarder surfer surfers guy guys lady ladies rider riders skateboarder",
    "bicycle": "bicycle bicycles bike bikes", "car": "car cars", "motorcycle": "motorcycle motorcycles motorbike",
    "airplane": "airplane airplanes plane planes jet jets aircraft airliner", "bus": "bus buses",
    "train": "train trains",
    "truck": "truck trucks", "boat": "boat boats ship", "traffic light": "traffic light lights",
    "fire hydrant": "hydrant", "stop sign": "stop sign", "bench": "bench benches", "bird": "bird birds",
    "cat": "cat cats kitten", "dog": "dog dogs puppy", "horse": "horse horses", "sheep": "sheep", "cow": "cow cows",
    "elephant": "elephant elephants", "bear": "bear bears", "zebra": "zebra zebras", "giraffe": "giraffe giraffes",
    "backpack": "backpack", "umbrella": "umbrella umbrellas", "handbag": "handbag purse", "tie": "tie",
    "suitcase": "suitcase luggage", "frisbee": "frisbee", "skis": "ski skis", "snowboard": "snowboard",
    "sports ball": "ball", "kite": "kite kites", "baseball bat": "bat", "skateboard": "skateboard",
    "surfboard": "surfboard", "tennis racket": "racket racquet", "bottle": "bottle bottles", "wine glass": "glass",
    "cup": "cup cups mug", "fork": "fork", "knife": "knife", "spoon": "spoon", "bowl": "bowl bowls",
    "banana": "banana bananas", "apple": "apple apples", "sandwich": "sandwich sandwiches", "orange": "oranges",
    "broccoli": "broccoli", "carrot": "carrot carrots", "hot dog": "hotdog", "pizza": "pizza pizzas",
    "donut": "donut donuts doughnut doughnuts", "cake": "cake", "chair": "chair chairs", "couch": "couch sofa",
    "potted plant": "plant plants", "bed": "bed", "dining table": "table tables", "toilet": "toilet",
    "tv": "tv television", "laptop": "laptop", "mouse": "mouse", "remote": "remote", "keyboard": "keyboard",
    "cell phone": "phone cellphone", "microwave": "microwave", "oven": "oven stove", "toaster": "toaster",
    "sink": "sink", "refrigerator": "refrigerator fridge", "book": "book books", "clock": "clock",
    "vase": "vase", "scissors": "scissors", "teddy bear": "teddy", "toothbrush": "toothbrush",
}
WORDS = {w: cat for cat, ws in _SYNONYMS.items() for w in ws.split()}


def objects(text: str) -> set[str]:
    """COCO categories named in `text`."""
    return {WORDS[w] for w in re.findall(r"[a-z]+", text.lower()) if w in WORDS}


def score(answer: str, captions: list[str]) -> dict[str, float]:
    said, truth = objects(answer), set().union(*(objects(c) for c in captions))
    return {"hit": float(bool(said & truth)), "named": float(len(said)), "invented": float(len(said - truth))}


@dataclass
class Pair:
    path: Path
    captions: list[str]
    held_out: bool


def default_dir() -> Path | None:
    for p in (paths.REPO_ROOT.parent / "shared" / "data" / "coco", Path("/work/shared/data/coco")):
        if (p / "captions.json").is_file():
            return p
    return None


def pairs(folder: Path | None = None, every: int = 3) -> list[Pair]:
    """All images with their captions; every `every`-th image (by id) is held out. [] when there is no COCO."""
    folder = folder or default_dir()
    if folder is None or not (folder / "captions.json").is_file():
        return []
    data = json.loads((folder / "captions.json").read_text(encoding="utf-8"))
    caps: dict[int, list[str]] = {}
    for a in data["annotations"]:
        caps.setdefault(a["image_id"], []).append(a["caption"].strip())
    images = sorted(data["images"], key=lambda i: i["id"])
    return [Pair(folder / im["file_name"], caps.get(im["id"], []), k % every == every - 1)
            for k, im in enumerate(images) if (folder / im["file_name"]).is_file()]


def pairs_hash(items: list[Pair]) -> str:
    h = hashlib.sha256()
    for p in items:
        h.update(p.path.name.encode())
        h.update(hashlib.sha256(p.path.read_bytes()).digest())
        h.update(json.dumps(p.captions).encode())
    return h.hexdigest()
