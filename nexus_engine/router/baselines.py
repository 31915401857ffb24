"""Three routers the trained gate must beat (`nexus router eval` reports all of them).

- keywords: hand-written regular expressions over the text plus attachment rules; no model at all. It is also
  what the router does when the embedding model itself is missing.
- zero-shot: cosine similarity of the request's embedding to short descriptions of each role, nudged by the
  attachments. It is the fallback when the trained gate file is missing or corrupt.
- always-reasoning: send everything to the biggest reasoning tower (what a single-model assistant does).
"""

from __future__ import annotations

import re

import numpy as np

from nexus_engine.config.schema import ROLES
from nexus_engine.router.features import Embedder, Turn

# ------------------------------------------------------------------------------------------ keywords
_RULES: tuple[tuple[str, str], ...] = (  # (role, pattern), first match wins the primary slot
    ("video", r"\b(animate|animation|video of|clip of|gif|make (it|this) move|bring .* to life|footage of)\b"),
    ("imagination", r"\b(draw|paint|sketch|illustrat\w*|render|generate an? (image|picture)|picture of|logo|"
                    r"wallpaper|poster|icon|sticker|design)\b"),
    ("speech", r"\b(read (this|it|that|me)? ?(out loud|aloud)|out loud|aloud|pronounce|text to speech|"
               r"narrate|voice ?over|say \")"),
    ("code", r"\b(python|javascript|typescript|rust|golang|java|c\+\+|sql|regex|bash|function|script|code|bug|"
             r"compile|error|exception|git|docker|api|class|def |npm|css|html)\b"),
    ("reasoning", r"(\d+\s*[-+*/x%]\s*\d+|\bsolve\b|\bcalculate\b|\bhow (much|many)\b|\bwrite\b|\bplan\b|"
                  r"\bsummar\w+|\btranslate\b|\bemail\b|\bessay\b|\bpoem\b|\bstory\b)"),
    ("knowledge", r"\b(who (was|is|wrote|invented|discovered|painted)|what is|what's the|when (did|was)|"
                  r"where is|capital of|history of|which (country|planet|element))\b"),
    ("persona", r"^(hi|hey|hello|yo|sup|thanks|thank you|good (morning|night|evening)|how are you|bye|lol|haha)\b"),
)
_OCR = re.compile(r"\b(text|read|says?|written|ocr|label|sign|receipt|handwriting|serial|breed|species|kind of|"
                  r"tag|classify|identify)\b", re.I)
_LONG = re.compile(r"\b(meeting|lecture|podcast|interview|hour|hours|webinar|seminar|conference|\d+ ?min)", re.I)


def keywords(turn: Turn) -> list[str]:
    text = turn.text.lower()
    roles: list[str] = []
    kinds = set(turn.kinds)
    if "long_audio" in kinds or ("audio" in kinds and _LONG.search(text)):
        roles.append("hearing_long")
    elif "audio" in kinds:
        roles.append("hearing")
    elif "video" in kinds and not re.search(r"\b(animate|make)\b", text):
        roles.append("perception")
    elif "image" in kinds and not re.search(r"\b(animate|draw|paint|style|turn (this|it|my))\b", text):
        roles.append("perception" if _OCR.search(text) else "vision")
    for role, pattern in _RULES:
        if len(roles) < 2 and role not in roles and re.search(pattern, text):
            roles.append(role)
    return roles or ["reasoning"]


def always_reasoning(turn: Turn) -> list[str]:
    return ["reasoning"]


# ------------------------------------------------------------------------------------------ zero-shot
DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "reasoning": ("solve a math word problem step by step", "write an email, essay, story or poem",
                  "plan my week and give advice", "summarize, rewrite or translate this text",
                  "a logic puzzle: think it through"),
    "code": ("write a function in python", "fix this bug and error in my code", "explain this programming concept",
             "write a SQL query or shell command"),
    "knowledge": ("a trivia question about history, geography or science", "who was this famous person",
                  "what is the capital of this country", "explain a fact about biology or medicine"),
    "vision": ("what is in this photo", "describe this image", "answer a question about this picture"),
    "perception": ("read the text in this image", "what breed or species is this", "what happens in this video",
                   "tag and classify these photos"),
    "hearing": ("transcribe this short voice message", "what is said in this audio clip"),
    "hearing_long": ("transcribe this two-hour meeting recording", "full transcript of a long lecture or podcast"),
    "persona": ("hi, how are you today", "small talk and chit chat", "tell me a joke", "I feel sad, cheer me up"),
    "speech": ("read this text aloud", "say this sentence out loud in a voice", "text to speech narration"),
    "imagination": ("draw me a picture", "generate an image of a cat", "paint an illustration or logo"),
    "video": ("make a short video clip", "animate this photo", "generate an animation"),
}
# attachments say more than wording about which towers can act at all
_BONUS: dict[str, dict[str, float]] = {
    "image": {"vision": 0.25, "perception": 0.15, "imagination": 0.05, "video": 0.05},
    "video": {"perception": 0.3},
    "audio": {"hearing": 0.3, "hearing_long": 0.1},
    "long_audio": {"hearing_long": 0.4},
    "document": {"reasoning": 0.05, "speech": 0.05},
}
_NEEDS = {"vision": ("image",), "perception": ("image", "video"), "hearing": ("audio", "video"),
          "hearing_long": ("audio", "long_audio")}


class ZeroShot:
    """Similarity to role descriptions; softmax over roles (temperature 0.05) so scores read as shares."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self.roles = ROLES
        self.desc = [embedder.embed_many(DESCRIPTIONS[r]) for r in ROLES]  # (n_r, 384) each

    def scores(self, vec: np.ndarray, turn: Turn) -> np.ndarray:
        sims = np.array([float((d @ vec).max()) for d in self.desc])
        kinds = set(turn.kinds)
        for kind in kinds:
            for role, bonus in _BONUS.get(kind, {}).items():
                sims[ROLES.index(role)] += bonus
        for role, needs in _NEEDS.items():  # no image, no vision; no audio, no hearing
            if not kinds & set(needs):
                sims[ROLES.index(role)] -= 0.3
        z = np.exp((sims - sims.max()) / 0.05)
        return z / z.sum()

    def predict(self, turn: Turn) -> tuple[list[str], np.ndarray]:
        p = self.scores(self.embedder.embed(turn.text), turn)
        order = np.argsort(-p)
        roles = [ROLES[order[0]]]
        if p[order[1]] >= 0.35:
            roles.append(ROLES[order[1]])
        return roles, p
