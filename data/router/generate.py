"""Deterministic generator for the router's train.jsonl and test.jsonl.

    python data/router/generate.py [--data ../shared/data]

Every example comes from a *family* (one kind of request, with its roles and attachments) holding several
phrasing templates; each template is used a handful of times with different fillers, so no single pattern
dominates (the script prints the largest share). Real prompts come from GSM8K and MMLU questions, COCO
captions rephrased as requests and LibriSpeech transcripts (licenses in SOURCES.md); the rest are phrasings
written for this project. About a fifth of the templates — and disjoint slices of the real data — go to the
test split only, so test.jsonl checks phrasings the gate never trained on. heldout.jsonl is built separately
(build_heldout.py) from prompts written by hand before this script existed.

Labelling rules (docs/router.md has the full table): text-only requests go to reasoning (maths, writing,
planning, advice, the default), code, knowledge (facts), persona (small talk) or one of the generators
(imagination: pictures, video: clips, speech: reading given text aloud). An attached image goes to vision
(open questions about it) or perception (reading its text, naming the species/breed/kind, tagging); an attached
video to perception; short audio to hearing, long recordings to hearing_long. A request that needs a second
tower after the first (summarise the transcript, translate the OCR'd menu, animate the drawing) names both.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import banks as B  # the filler banks next to this script

HERE = Path(__file__).resolve().parent
SEED = 7

# ------------------------------------------------------------------------------------------ real data
MMLU_KNOWLEDGE = ("anatomy", "clinical_knowledge", "college_biology", "global_facts", "high_school_biology",
                  "high_school_geography", "high_school_government_and_politics", "high_school_psychology",
                  "high_school_us_history", "high_school_world_history", "human_aging", "international_law",
                  "jurisprudence", "management", "medical_genetics", "miscellaneous", "philosophy", "sociology",
                  "public_relations", "conceptual_physics", "high_school_european_history", "security_studies",
                  "high_school_macroeconomics", "high_school_microeconomics", "college_medicine", "human_sexuality",
                  "moral_disputes", "professional_psychology", "logical_fallacies", "electrical_engineering")
MMLU_MATH = ("elementary_mathematics", "high_school_mathematics")
# indices >= 1000 of GSM8K and these MMLU subjects are kept for build_heldout.py
GSM8K_LIMIT = 1000


@dataclass
class Real:
    gsm8k: list[tuple[int, str]]
    mmlu: list[tuple[str, str, list[str]]]  # (subject:row, question, choices)
    mmlu_math: list[tuple[str, str, list[str]]]
    captions: list[tuple[int, str]]  # (image id, caption)
    librispeech: list[tuple[str, str]]


def load_real(root: Path) -> Real:
    gsm = [(i, json.loads(line)["question"]) for i, line in enumerate((root / "gsm8k/test.jsonl").open())]
    gsm = [(i, q) for i, q in gsm if i < GSM8K_LIMIT]

    def mmlu(subjects: tuple[str, ...], max_len: int) -> list[tuple[str, str, list[str]]]:
        out = []
        for s in subjects:
            with (root / f"mmlu/test/{s}_test.csv").open(newline="") as f:
                for i, row in enumerate(csv.DictReader(f)):
                    q = row["question"].strip()
                    if len(q) <= max_len and "_" not in q and "\n" not in q.strip():
                        out.append((f"{s}:{i}", q, [row[f"choice{k}"] for k in range(4)]))
        return out

    caps = json.loads((root / "coco/captions.json").read_text())["annotations"]
    libri = []
    for line in (root / "librispeech").glob("*.trans.txt"):
        for row in line.read_text().splitlines():
            key, _, text = row.partition(" ")
            libri.append((key, text.lower()))
    return Real(gsm, mmlu(MMLU_KNOWLEDGE, 300), mmlu(MMLU_MATH, 300),
                [(c["image_id"], c["caption"].strip().rstrip(".")) for c in caps], libri)


# ------------------------------------------------------------------------------------------ families
@dataclass
class Family:
    """One kind of request: its roles, its attachments, and phrasings that each become one template."""

    name: str
    towers: list[str]
    templates: list[str]
    per: int = 5  # examples per template
    attach: list[list[str]] = field(default_factory=lambda: [[]])
    voice: float = 0.05  # share of turns that came by voice
    slots: dict[str, list[str] | Callable[[random.Random, str], str]] = field(default_factory=dict)


def pick(items: list) -> Callable[[random.Random, str], str]:
    return lambda rng, split: rng.choice(items)


def families(real: Real) -> list[Family]:
    """Every family; `split`-aware slots draw real data from disjoint train/test slices."""
    def part(items: list, split: str) -> list:
        cut = int(len(items) * 0.8)
        return items[:cut] if split == "train" else items[cut:]

    def gsm(rng: random.Random, split: str) -> str:
        return rng.choice(part(real.gsm8k, split))[1]

    def mmlu_q(rng: random.Random, split: str, pool: list | None = None) -> str:
        _, q, choices = rng.choice(part(pool or real.mmlu, split))
        style = rng.random()
        if style < 0.45 or not choices:
            return q
        letters = "ABCD" if style < 0.8 else "abcd"
        sep = "\n" if style < 0.65 else "  "
        return q + sep + sep.join(f"{letters[i]}) {c}" for i, c in enumerate(choices))

    def caption(rng: random.Random, split: str) -> str:
        ids = sorted({i for i, _ in real.captions})
        keep = set(part(ids, split))
        _, c = rng.choice([x for x in real.captions if x[0] in keep])
        return c[0].lower() + c[1:]

    def thing(rng: random.Random, split: str) -> str:
        return caption(rng, split) if rng.random() < 0.3 else rng.choice(B.THINGS)

    def payload(rng: random.Random, split: str) -> str:
        """Text a user pastes to be read out, rewritten or translated: real sentences of several kinds."""
        r = rng.random()
        if r < 0.1 and real.librispeech:
            return rng.choice(real.librispeech)[1]
        if r < 0.3:
            c = caption(rng, split)
            return c[0].upper() + c[1:] + "."
        if r < 0.45:
            return re.split(r"(?<=[.!?])\s", gsm(rng, split))[0]
        return rng.choice(B.SPEECH_TEXT)

    def long_text(rng: random.Random, split: str) -> str:
        """A pasted passage of several sentences (a report, an article, notes): the ask sits before or after."""
        return " ".join(payload(rng, split) for _ in range(rng.randint(4, 12)))

    def number(rng: random.Random, split: str) -> str:
        return str(rng.choice([3, 7, 12, 15, 18, 24, 36, 45, 60, 75, 120, 250, 1200, 4.5, 0.75]))

    common = {"thing": thing, "style": pick(B.STYLES), "asset": pick(B.ASSETS), "lang": pick(B.LANGS),
              "tech": pick(B.TECH), "task": pick(B.CODE_TASKS), "cq": pick(B.CODE_QUESTIONS), "err": pick(B.ERRORS),
              "snip": pick(B.SNIPPETS), "fact": pick(B.FACT_QUESTIONS), "person": pick(B.PEOPLE),
              "place": pick(B.PLACES), "landmark": pick(B.LANDMARKS), "event": pick(B.EVENTS),
              "concept": pick(B.CONCEPTS), "acro": pick(B.ACRONYMS), "chat": pick(B.SMALLTALK),
              "genre": pick(B.GENRES), "topic": pick(B.TOPICS), "list": pick(B.LISTS), "decision": pick(B.DECISIONS),
              "logic": pick(B.LOGIC), "analysis": pick(B.ANALYSES), "gsm": gsm,
              "mmlu": mmlu_q, "mmlu_math": lambda r, s: mmlu_q(r, s, real.mmlu_math), "text": payload,
              "long": long_text,
              "word": pick(B.WORDS), "animal": pick(B.ANIMALS), "obj": pick(B.OBJECTS), "meeting": pick(B.MEETINGS),
              "dur": pick(B.DURATIONS), "clip": pick(B.CLIPS), "nat": pick(B.LANGS_NAT), "n": number,
              "m": number, "feeling": pick(B.FEELINGS), "pevent": pick(B.EVENTS_PERSONAL),
              "who": pick(B.ROLES_PLAY), "u": lambda r, s: " to ".join(r.choice(B.UNITS)),
              "artwork": pick(B.ARTWORKS), "book": pick(B.BOOKS), "music": pick(B.WORKS_MUSIC), "film": pick(B.FILMS),
              "element": pick(B.ELEMENTS), "shell": pick(B.SHELL_TASKS), "gittask": pick(B.GIT_TASKS),
              "sqltask": pick(B.SQL_TASKS), "cron": pick(B.CRON_TASKS), "regex": pick(B.REGEX_TASKS),
              "w1": pick(B.NONSENSE), "w2": pick(B.NONSENSE), "w3": pick(B.NONSENSE), "items": pick(B.LIST_PAYLOADS),
              "vattr": lambda r, s: fill(r.choice(B.VISION_ATTRS), {"animal": pick(B.ANIMALS),
                                                                      "obj": pick(B.OBJECTS)}, r, s)}
    img, vid, aud, long_, doc = ["image"], ["video"], ["audio"], ["long_audio"], ["document"]
    fams = [
        # ---- reasoning: maths, logic, writing, planning, analysis, editing given text
        Family("math-gsm8k", ["reasoning"], ["{gsm}", "{gsm}", "{gsm} Show your work.", "Can you solve this? {gsm}",
               "help with this word problem: {gsm}", "{gsm} explain step by step", "my daughter's homework: {gsm}",
               "Solve: {gsm}", "{gsm} (I got a different answer than the book)", "how do I work this out? {gsm}"],
               per=14, voice=0.0),
        Family("math-mmlu", ["reasoning"], ["{mmlu_math}", "math question: {mmlu_math}",
               "{mmlu_math} which one and why?", "work this out please: {mmlu_math}"], per=8, voice=0.0),
        Family("math-quick", ["reasoning"], ["what's {n} percent of {m}?", "{n} times {m} minus 7", "convert {n} {u}",
               "split {m} euros between {n} people", "if I save {n} a week, how long until I have {m}?",
               "average speed if I drive {m} km in {n} hours?", "is {m} a prime number?",
               "how many weeks are in {m} days?", "what's {n} squared plus {m}?", "round {m} divided by 7 to two "
               "decimals"], per=5, voice=0.15),
        Family("logic", ["reasoning"], ["{logic}", "puzzle for you: {logic}", "can you figure this out — {logic}",
               "{logic} walk me through it", "brain teaser: {logic}", "I'm stuck on this: {logic}",
               "riddle: {logic}", "{logic} and explain your reasoning"], per=6, voice=0.15),
        Family("writing", ["reasoning"], ["write {genre} about {topic}", "could you draft {genre} about {topic}?",
               "I need {genre} for {topic}", "help me write {genre} about {topic}", "compose {genre} on {topic}",
               "can you put together {genre} about {topic}, keep it short", "write me {genre} about {topic} please",
               "give me a first draft of {genre} for {topic}", "{genre} about {topic}, funny tone",
               "jot down {genre} about {topic}", "I have to send {genre} about {topic}, can you help",
               "make up {genre} about {topic}"], per=6, voice=0.1),
        # words like paint/draw/picture inside a *text* request (a story about a painter) are not drawing requests
        Family("writing-art", ["reasoning"], ["write {genre} about {art}", "tell me a story about {art}",
               "a long story about {art}, please", "write a very long story about {art}",
               "could you write {genre} about {art}?", "make up a bedtime story about {art}",
               "I'd love {genre} about {art}", "write a poem about {art}", "tell me about {art}, as a fairy tale",
               "a funny story about {art}"], per=5, voice=0.1,
               slots={"art": pick(["a dragon who learns to paint", "a painter who lost her colours",
                                   "a boy who draws maps of imaginary cities", "an artist painting the sea",
                                   "a robot that wants to become a painter", "a cat who sketches birds",
                                   "a girl whose drawings come alive", "an old photographer and his last picture",
                                   "a street artist in Paris", "a museum guard who loves one painting",
                                   "a child's first crayon drawing", "an illustrator on a deadline",
                                   "two rival portrait painters", "a mural that changes every night"])}),
        Family("lists", ["reasoning"], ["make {list}", "can you write {list}?", "I need {list}", "put together {list}",
               "help me with {list}", "draft {list} for me"], per=6, voice=0.1),
        Family("decide", ["reasoning"], ["should I {decision}?", "help me decide whether to {decision}",
               "pros and cons: {decision}", "I can't decide if I should {decision}", "what would you do: "
               "{decision}?"], per=6, voice=0.15),
        Family("analysis", ["reasoning"], ["{analysis}", "{analysis}?", "give me your take: {analysis}",
               "think about this: {analysis}", "I'd like a thoughtful answer: {analysis}"], per=6, voice=0.1),
        Family("plan", ["reasoning"], ["plan a {n} day trip to {place}", "make me a workout plan for {n} weeks",
               "help me organise a party for {n} people", "how should I prepare for {pevent}?",
               "make a study plan for {concept}", "budget {m} euros a month for food, rent and fun",
               "a weekly schedule that fits in {n} hours of study", "give me a step by step plan to learn {nat}",
               "plan a date night on a small budget", "organise my weekend: laundry, groceries, gym, and a "
               "birthday party"], per=5, voice=0.1),
        Family("edit", ["reasoning"], ["rewrite this to sound more professional: \"{text}\"",
               "fix the grammar: \"{text}\"", "make this friendlier: {text}", "shorten this: {text}",
               "translate into {nat}: {text}", "what's the tone of this message? \"{text}\"",
               "read this and tell me what you think: {text}", "can you read my draft and improve it? {text}",
               "summarize in five words: {text}", "how would you say this in {nat}? {text}",
               "is this sentence correct? {text}", "make this sound more exciting: {text}",
               "translate \"{text}\" to {nat}", "paraphrase: {text}"], per=6),
        Family("long-paste", ["reasoning"], ["summarise the following: {long}", "{long}\n\nCan you summarize "
               "that in three bullet points?", "tl;dr please: {long}", "{long} — what's the main point here?",
               "rewrite this more clearly:\n{long}", "translate to {nat}:\n\n{long}", "{long}\n\nfix the grammar "
               "above", "Here are my notes. {long} Turn them into an email to my team."], per=4),
        Family("long-speak", ["speech"], ["read this aloud:\n\n{long}", "{long}\n\nread all of that out loud for "
               "me", "narrate the following passage: {long}", "text to speech, please: {long}"], per=4),
        Family("doc-reason", ["reasoning"], ["summarize this document", "give me the key points of the attached "
               "file", "proofread the attachment", "what are the main arguments in this paper?",
               "turn this report into five bullet points", "check this contract for anything unusual",
               "make a timeline from this file", "what does this pdf conclude?", "rewrite the attached letter "
               "more politely", "translate this document into {nat}"], per=4, attach=[doc]),
        Family("advice", ["reasoning"], ["how do I take better photos at night with my phone", "what's the best way "
               "to transcribe interviews for my thesis", "how can I improve my drawing skills", "tips for recording "
               "a podcast at home", "how do I get better at public speaking", "how do I make my videos more "
               "engaging", "describe a sunset in words, very poetic", "how do I learn to read music", "how can I "
               "sound more confident on calls", "write a description of an imaginary planet", "how do I stop "
               "overthinking", "how can I keep my houseplants alive", "any tips for a first marathon?", "how should "
               "I ask for a raise", "how do I get my toddler to sleep", "how can I save money on groceries"],
               per=3, voice=0.15),
        # ---- code
        Family("code-tech", ["code"], B.CODE_ACTIONS, per=6, voice=0.0),
        Family("code-write", ["code"], ["write {task} in {lang}", "{lang}: {task}", "can you code {task}?",
               "implement {task} using {lang}", "I need {task}, {lang} please", "show me {task} in {lang}",
               "give me {lang} code for {task}", "how would you write {task} in {lang}?"], per=6),
        Family("code-ask", ["code"], ["{cq}", "{cq}?", "quick {lang} question: {cq}", "explain: {cq}",
               "{cq} — with an example", "noob question, {cq}", "{cq}, I'm confused"], per=7, voice=0.05),
        Family("code-error", ["code"], ["I'm getting {err}, what does it mean?", "{err}", "how do I fix {err}",
               "my build fails with: {err}", "getting this error in {lang}: {err}", "{err} help",
               "why would I get \"{err}\"?", "deploy broke with {err}"], per=6),
        Family("code-fix", ["code"], ["what's wrong with this code: {snip}", "fix this: {snip}",
               "why doesn't this work? {snip}", "review this line: {snip}", "is this correct? {snip}",
               "optimize: {snip}", "{snip} <- bug?", "explain what this does: {snip}"], per=5),
        Family("code-file", ["code"], ["review this code for bugs", "why does this script crash?",
               "add type hints to this file", "write tests for the attached module", "refactor the attached code",
               "port this file to {lang}", "find the memory leak in this file"], per=4, attach=[doc]),
        Family("code-media", ["code"], ["write a python script that draws a spiral with turtle", "write code that "
               "converts speech to text using a library", "how do I resize an image in python with pillow",
               "write a function that reads an mp3 file's duration", "generate a random maze in javascript",
               "write a shader that draws a gradient", "how do I play a sound file in java", "write ffmpeg commands "
               "to trim a video", "write an opencv script that detects faces in a webcam feed", "code a "
               "text-to-speech call with pyttsx3", "write a canvas animation of bouncing balls in js",
               "how do I read exif data from a photo in python"], per=3),
        # ---- knowledge
        Family("know-mmlu", ["knowledge"], ["{mmlu}", "{mmlu}", "quiz question: {mmlu}",
               "which is right? {mmlu}", "{mmlu} what's the answer", "help me study: {mmlu}"], per=14, voice=0.0),
        Family("know-facts", ["knowledge"], ["{fact}?", "{fact}", "do you know {fact}?", "quick question: {fact}?",
               "I was wondering, {fact}?", "can you tell me {fact}?", "settle an argument: {fact}?",
               "{fact}? my kid asked me and I blanked", "trivia time — {fact}?", "remind me, {fact}?"], per=7,
               voice=0.25),
        Family("know-people", ["knowledge"], ["who was {person}?", "what is {person} famous for?", "when did "
               "{person} live?", "tell me about {person}", "what did {person} discover or do?", "why is {person} "
               "important?", "where was {person} born?", "short bio of {person}"], per=5, voice=0.2),
        Family("know-places", ["knowledge"], ["what's the capital of {place}?", "what language do they speak in "
               "{place}?", "where is {landmark}?", "how old is {landmark}?", "what currency is used in {place}?",
               "who built {landmark}?", "how big is {place}?", "what's the population of {place}?",
               "what's {place} known for?", "how tall is {landmark}?"], per=5, voice=0.2),
        Family("know-events", ["knowledge"], ["when did {event} happen?", "what caused {event}?", "why did {event} "
               "matter?", "what were the effects of {event}?", "give me the history of {event}", "summarize "
               "{event} for my history test"], per=5, voice=0.1),
        Family("know-concepts", ["knowledge"], ["what is {concept}?", "how does {concept} work?", "explain {concept} "
               "in simple terms", "{concept} — what is it exactly?", "can you explain {concept} like I'm ten",
               "what's the science behind {concept}?", "define {concept}", "tell me the basics of {concept}"],
               per=5, voice=0.15),
        Family("know-acro", ["knowledge"], ["what does {acro} stand for?", "{acro} stands for what?", "what's the "
               "meaning of {acro}?"], per=4),
        Family("know-media", ["knowledge"], ["who painted starry night", "tell me about the history of "
               "photography", "who invented the television", "when was the first movie with sound released",
               "who was the first person to record their voice", "how does a camera lens work", "who wrote the song "
               "imagine", "what is impressionism in art", "who directed the first animated feature film",
               "how do speakers turn electricity into sound"], per=3),
        # ---- persona
        Family("persona", ["persona"], ["{chat}", "{chat}", "{chat} :)", "{chat} haha", "hey. {chat}", "{chat}!!"],
               per=20, voice=0.35),
        Family("persona-feel", ["persona"], ["I'm {feeling} about {pevent}", "feeling {feeling} today", "so "
               "{feeling} right now", "honestly I'm a bit {feeling}", "I feel {feeling} because of {pevent}",
               "ugh, {feeling}", "just {feeling}, that's all"], per=6, voice=0.4),
        Family("persona-about", ["persona"], ["do you like {obj}s?", "what's your favourite {animal}?", "you're "
               "really {feeling} today, huh", "what do you think about me?", "are you happy?", "do you have a "
               "name?", "what would you do on a day off?", "if you could eat, what would you eat?", "do you "
               "remember me?", "how do you feel about mondays?"], per=4, voice=0.4),
        Family("persona-role", ["persona"], ["pretend you're {who} and say good morning", "talk like {who} for a "
               "bit", "can you be {who} for this chat?", "answer me as {who}: how's life?", "roleplay as {who}",
               "greet me like {who} would"], per=5, voice=0.3),
        # ---- vision: open questions about an attached image
        Family("vision", ["vision"], ["what's in this photo?", "describe this image", "what do you see here?",
               "can you tell me what's going on in this picture", "describe the scene in detail",
               "what is this?", "is there a {animal} in this picture?", "what's that {obj} in the photo?",
               "how many people are there?", "what colour is the {obj}?", "is this {thing}?",
               "does this look safe to you?", "what's wrong with this {obj}?", "explain this picture",
               "where was this taken, do you think?", "what time of day is it in this photo?",
               "what's the person doing?", "give me a caption for this photo", "is this photo edited?",
               "would this look good in my living room?", "what's funny about this image?",
               "how old does this building look?", "can you describe this for a blind friend",
               "write an instagram caption for this pic", "is my {obj} damaged?", "what is going on here",
               "what emotions does this picture show?", "is this dish cooked properly?", "how could I improve this "
               "shot?", "what's in the background?", "which country could this be?", "is anything missing from "
               "this setup?", "what is the man holding?", "any idea what this thing is?"], per=4, attach=[img],
               voice=0.1),
        Family("vision-multi", ["vision"], ["compare these two pictures", "which of these photos is better?",
               "what's different between these images?", "are these the same {obj}?", "describe both photos",
               "which one would you pick?"], per=4, attach=[["image", "image"], ["image", "image", "image"]]),
        Family("vision-empty", ["vision"], ["", "?", "this", "look", "hmm", "thoughts?"], per=2, attach=[img]),
        # ---- perception: read the text, name the kind, tag; any attached video
        Family("ocr", ["perception"], ["read the text in this image", "what does this sign say?",
               "extract the text from this screenshot", "transcribe the handwriting in this photo",
               "OCR this please", "what's written on the label?", "copy the text from this picture",
               "get the numbers off this receipt", "what does the note say?", "type out what's on this page",
               "read the license plate", "what's the title on this book cover?", "pull the email address from "
               "this card", "what's the serial number here?", "what's the date on this ticket?", "what does the "
               "writing on the wall say?", "grab the wifi password from this photo", "what's the address on this "
               "envelope?", "text from this scan please", "what does the screen say?"], per=4, attach=[img]),
        Family("classify", ["perception"], ["what kind of {animal} is this?", "what species is this {animal}?",
               "identify this {animal}", "what breed is this?", "what make of {obj} is this?",
               "tag this photo", "add keywords to this picture", "label everything in this image",
               "classify this picture", "which category does this photo belong in?", "name this plant",
               "sort these photos by subject", "what model of {obj} is this?", "which {animal} is that? just the "
               "name", "is this a {animal} or something else?"], per=4, attach=[img, ["image", "image"]]),
        Family("video-understand", ["perception"], ["what happens in this video?", "summarize this clip",
               "describe the video", "what sport is this?", "when does the {obj} appear in the video?",
               "is there anyone in this footage?", "what are they doing in this clip?", "tag this video",
               "find the part where someone waves", "what's going on here?", "classify the activity in "
               "this video", "count the {obj}s in this video", "did anything unusual happen in this footage?",
               "what animal is in this clip?", "is the dog in this video ok?", "does the car stop at the light in "
               "this recording?"], per=4, attach=[vid], voice=0.1),
        Family("video-empty", ["perception"], ["", "this", "?"], per=2, attach=[vid]),
        # ---- hearing: short audio
        Family("hearing", ["hearing"], ["transcribe this {clip}", "what does this {clip} say?",
               "what is being said here?", "write down this {clip}", "turn this {clip} into text",
               "speech to text please", "what did she say?", "can you type out this audio?",
               "what language is spoken in this {clip}?", "is this a man or a woman talking?",
               "write out the words in this {clip} exactly", "what's the phone number they say?",
               "caption this audio", "what's the song lyric here?", "I can't hear this well, what's said?",
               "what's the name mentioned in this {clip}?", "dictation: write this down word for word",
               "what time does he say in the {clip}?"], per=4, attach=[aud], voice=0.1),
        Family("hearing-video", ["hearing"], ["transcribe what they say in this video",
               "what are they saying in this clip?", "write subtitles for this short video", "what does the narrator "
               "say in this video?", "type out the dialogue in this clip"], per=4, attach=[vid]),
        Family("hearing-empty", ["hearing"], ["", "?", "this"], per=2, attach=[aud]),
        # ---- hearing_long
        Family("hearing-long", ["hearing_long"], ["transcribe this {dur} {meeting}", "full transcript of this "
               "{meeting} please", "transcribe the whole {meeting}", "write out everything said in this "
               "{meeting}", "transcript with speaker labels for this {meeting}", "I need timestamps and a "
               "transcript for this {meeting}", "who speaks when in this {meeting}?", "subtitles for this "
               "{dur} {meeting}", "transcribe this recording", "convert this {meeting} to text",
               "can you transcribe all of it?", "word-for-word transcript of this {dur} session",
               "what's said in this recording", "label the speakers in this recording", "write it all down"],
               per=5, attach=[long_]),
        Family("hearing-long-said", ["hearing_long"], ["transcribe this {dur} {meeting}", "here's the whole "
               "{dur} {meeting}, transcript please", "I recorded a {dur} {meeting}, can you write it all out?",
               "transcript of our {dur} {meeting} with speaker names", "captions for the full {dur} {meeting}"],
               per=5, attach=[aud]),
        Family("hearing-long-empty", ["hearing_long"], ["", "transcribe", "?"], per=2, attach=[long_]),
        # ---- speech: read given text aloud
        Family("speech", ["speech"], ["read this aloud: {text}", "say \"{text}\"", "can you read this out loud? "
               "{text}", "text to speech: {text}", "make an audio clip of: {text}", "I want to hear this "
               "spoken: {text}", "narrate this: {text}", "say this in a calm voice: {text}",
               "record a voiceover: \"{text}\"", "speak the following: {text}", "read this to me: {text}",
               "generate speech for: {text}", "announce: {text}", "turn this into audio: {text}",
               "say it out loud: {text}", "voice this: {text}", "create an mp3 that says \"{text}\"",
               "read the following slowly: {text}"], per=5, voice=0.1),
        Family("speech-word", ["speech"], ["how do you pronounce {word}? say it", "say {word} out loud",
               "pronounce \"{word}\" for me", "let me hear how {word} sounds", "say the word {word} slowly"], per=4),
        Family("speech-doc", ["speech"], ["read this document aloud", "turn this file into an audiobook",
               "read the attachment to me", "narrate this chapter", "make an mp3 of this article",
               "read it out loud please", "I want to listen to this instead of reading it"], per=4, attach=[doc]),
        # ---- imagination: make or edit a picture
        Family("imagine", ["imagination"], ["draw {thing}", "draw me {thing}", "paint {thing}",
               "generate an image of {thing}", "make a picture of {thing}", "can you create an image of {thing}?",
               "sketch {thing}", "I want a picture of {thing} in {style}", "{thing}, {style}",
               "render {thing}", "illustrate {thing}", "show me {thing} as {style}", "picture this: {thing}",
               "create art of {thing}", "design an image with {thing}", "make me a wallpaper of {thing}",
               "imagine {thing} and draw it", "could you paint {thing} in {style}?", "I'd like art showing "
               "{thing}", "visualize {thing}", "can I get an illustration of {thing}?", "doodle {thing}"], per=5,
               voice=0.1),
        Family("imagine-asset", ["imagination"], ["design {asset}", "make {asset}", "I need {asset}",
               "create {asset} in {style}", "can you draw {asset}?", "mock up {asset}"], per=6),
        Family("imagine-edit", ["imagination"], ["make this photo look like {style}", "turn this picture into "
               "{style}", "remove the background", "replace the sky with a sunset", "add a hat to the person",
               "make me look like a superhero in this photo", "restyle this image as {style}",
               "edit this photo so it's winter", "put a rainbow in this picture", "turn this photo into a "
               "cartoon", "make my dog wear sunglasses in this pic", "change the colour of the {obj} to red"],
               per=4, attach=[img]),
        # ---- video: make a clip
        Family("video-gen", ["video"], ["make a video of {thing}", "generate a short clip of {thing}",
               "animate {thing}", "create an animation of {thing}", "I want a video where {thing} moves",
               "render a short film of {thing}", "make a gif of {thing}", "a few seconds of video showing "
               "{thing}", "video clip: {thing}, {style}", "produce footage of {thing}", "a looping animation of "
               "{thing}", "can you film {thing}? (generated is fine)", "timelapse video of {thing}"], per=5,
               voice=0.05),
        Family("video-animate", ["video"], ["animate this photo", "make this picture move", "bring this image "
               "to life", "turn this photo into a video", "add motion to this picture", "make the clouds in "
               "this photo move", "create a short clip from this image", "animate this drawing", "make a gif from "
               "this picture", "make the water in this photo flow"], per=5, attach=[img]),
        Family("logic-words", ["reasoning"], ["if all {w1}s are {w2}s and all {w2}s are {w3}s, are all {w1}s "
               "{w3}s?", "some {w1}s are {w2}s and no {w2} is a {w3}. can a {w1} be a {w3}?", "every {w1} has two "
               "{w2}s and every {w2} has three {w3}s. how many {w3}s do 4 {w1}s have?", "is this valid: no {w1}s "
               "are {w2}s, some {w3}s are {w1}s, so some {w3}s are not {w2}s"], per=4),
        Family("code-command", ["code"], ["bash command to {shell}", "one-liner to {shell}", "how do I {shell} "
               "from the terminal?", "powershell: {shell}", "linux command that will {shell}", "git command to "
               "{gittask}", "how do I {gittask} in git?", "sql query that {sqltask}", "write a query that {sqltask}",
               "cron schedule for {cron}", "crontab line to run a script {cron}", "regex that matches {regex}",
               "give me a regular expression for {regex}", "git: how to {gittask}"], per=5),
        Family("know-culture", ["knowledge"], ["who painted {artwork}?", "who wrote {book}?", "who composed "
               "{music}?", "who directed {film}?", "when was {artwork} painted?", "what is {book} about?",
               "where is {artwork} kept today?", "what's the chemical symbol for {element}?", "what's the atomic "
               "number of {element}?", "is {element} a metal?"], per=5, voice=0.2),
        Family("vision-attr", ["vision"], ["{vattr}"], per=24, attach=[img]),
        Family("speech-list", ["speech"], ["read that back to me: {items}", "say my list out loud: {items}",
               "make an mp3 of this text: {text}", "read this out for me please — {items}", "I'm driving, read me "
               "this: {text}"], per=4, voice=0.2),
        # ---- two roles
        Family("long-summary", ["hearing_long", "reasoning"], ["summarize this {meeting}",
               "transcribe this {meeting} and list the action items", "what were the key decisions in this "
               "{dur} {meeting}?", "write minutes for this {meeting}", "give me the main points of this "
               "recording", "turn this {meeting} into a blog post", "what did they say about the budget in "
               "this {meeting}?", "transcribe and summarize", "did anyone disagree in this {meeting}? summarize",
               "pull out every deadline mentioned in this recording"], per=5, attach=[long_]),
        Family("long-summary-said", ["hearing_long", "reasoning"], ["summarize this {dur} {meeting}",
               "action items from our {dur} {meeting} please", "what did we decide in this {dur} {meeting}?",
               "minutes for the {dur} {meeting} I attached"], per=4, attach=[aud]),
        Family("short-summary", ["hearing", "reasoning"], ["summarize this {clip}", "what does my boss want "
               "in this {clip}? write a reply", "translate this {clip} into english", "turn this {clip} into "
               "a to-do list", "answer the question in this {clip}", "is the caller angry in this {clip}?",
               "transcribe and translate this to {nat}", "what's the gist of this {clip}?", "reply to this {clip} "
               "for me"], per=5, attach=[aud]),
        Family("ocr-reason", ["perception", "reasoning"], ["translate the text in this photo",
               "what's the total on this receipt plus tip?", "summarize the text in this screenshot",
               "read this letter and tell me what to do", "translate this menu into {nat}", "does this label "
               "contain gluten? read it for me", "add up the numbers on this page", "what does this sign mean in "
               "english?", "read this form and tell me what to fill in"], per=5, attach=[img]),
        Family("ocr-code", ["perception", "code"], ["fix the code in this screenshot", "what's the error in this "
               "screenshot and how do I fix it?", "explain the code in this picture", "convert the code in "
               "this image to {lang}", "the traceback is in the screenshot, help", "why does the code in this "
               "photo not compile?"], per=5, attach=[img]),
        Family("write-speak", ["reasoning", "speech"], ["write {genre} about {topic} and read it aloud",
               "compose {genre} about {topic}, then say it out loud", "make up {genre} about {topic} and narrate it",
               "solve this and say the answer: {logic}", "write {genre} about {topic} and turn it into audio",
               "come up with {genre} about {topic} and record it in your voice"], per=5),
        Family("write-speak-2", ["reasoning", "speech"], ["{genre} about {topic}, then read it to me",
               "first write {genre} about {topic}, then say it aloud", "can you write {genre} about {topic} and "
               "record it?", "I'd like {genre} about {topic} read out loud once it's written", "make {genre} "
               "about {topic} and narrate it for me", "work out {n} times {m} and say the result aloud"], per=4),
        Family("story-draw-2", ["reasoning", "imagination"], ["write {genre} about {topic}, plus a drawing",
               "{genre} about {topic} and a picture to go with it", "come up with a slogan for {asset} and draw "
               "it", "describe an imaginary creature and then paint it", "write {genre} about {topic}; then "
               "generate an image for it"], per=4),
        Family("know-speak", ["knowledge", "speech"], ["tell me out loud: {fact}?", "{fact}? say the answer aloud",
               "read me the answer to this: {fact}", "answer out loud: {fact}", "say aloud who {person} was"],
               per=4),
        Family("vision-speak", ["vision", "speech"], ["describe this photo out loud", "tell me what's in this "
               "picture with your voice", "narrate this image for me", "read me a description of this photo",
               "say out loud what you see in this picture"], per=4, attach=[img]),
        Family("ocr-speak", ["perception", "speech"], ["read the text in this photo out loud", "read this sign "
               "aloud", "read me this page (it's a photo)", "say what the label says", "read the words in this "
               "picture to me"], per=4, attach=[img]),
        Family("draw-animate", ["imagination", "video"], ["draw {thing} and animate it",
               "make a picture of {thing}, then turn it into a video", "create an image of {thing} and make it "
               "move", "generate {thing} as a still and then as a short clip", "design {asset} and an intro "
               "animation for it", "paint {thing} and then animate it"], per=5),
        Family("story-draw", ["reasoning", "imagination"], ["write {genre} about {topic} and illustrate it",
               "write {genre} about {topic} with a picture to go with it", "come up with {genre} about {topic} "
               "and draw the main scene", "invent a creature, describe it and draw it", "write {genre} about "
               "{topic} plus an illustration"], per=5),
        Family("know-draw", ["knowledge", "imagination"], ["what did a {x} look like? draw one",
               "tell me about the {x} and make a picture of it", "facts about the {x}, plus an illustration",
               "describe the {x} and generate an image of it"], per=4,
               slots={"x": pick(["mammoth", "dodo", "colosseum", "hanging gardens of babylon", "triceratops",
                                 "great library of alexandria", "viking longship", "terracotta army", "sabre-toothed "
                                 "cat", "lighthouse of alexandria"])}),
        Family("code-math", ["code", "reasoning"], ["explain the math of {x} and implement it in {lang}",
               "derive {x} and write code for it", "show me how {x} works with a {lang} example"], per=4,
               slots={"x": pick(["linear regression", "the fourier transform", "k-means", "compound interest",
                                 "bayes' theorem", "newton's method", "RSA encryption", "backpropagation"])}),
        Family("hear-speak", ["hearing", "speech"], ["listen to this {clip} and read it back clearly",
               "repeat what this {clip} says in a clearer voice", "say back what's in this {clip}"], per=3,
               attach=[aud]),
    ]
    for f in fams:
        f.slots = {**common, **f.slots}
    return fams


# ------------------------------------------------------------------------------------------ follow-ups
FOLLOWUPS = [  # (previous turn, its roles, follow-ups, roles of the follow-up): asks only the context explains
    ("write {task} in {lang}", ["code"], ["now in {lang}", "add error handling", "make it faster",
     "can you add comments?", "now write tests for it", "use recursion instead", "what's its complexity?",
     "rename the variables", "also handle empty input"], ["code"]),
    ("{cq}", ["code"], ["show me another example", "and in {lang}?", "what about edge cases?"], ["code"]),
    ("write {genre} about {topic}", ["reasoning"], ["make it shorter", "more formal please", "make it funnier",
     "translate it into {nat}", "try again with a warmer tone", "add a closing line", "less cheesy",
     "and in {nat}?", "can you make it rhyme?"], ["reasoning"]),
    ("draw {thing}", ["imagination"], ["make it darker", "now in {style}", "add a rainbow", "try another version",
     "more colorful", "zoom out a bit", "same but at night", "use softer colours", "put a hat on it"],
     ["imagination"]),
    ("draw {thing}", ["imagination"], ["now animate it", "make it into a video", "make it move",
     "can it be a gif?"], ["video"]),
    ("{fact}", ["knowledge"], ["and why is that?", "when was that?", "tell me more", "who else?",
     "how do we know?", "and what about the second one?"], ["knowledge"]),
    ("who was {person}?", ["knowledge"], ["where did they live?", "what else did they do?", "and their family?",
     "who came after?"], ["knowledge"]),
    ("tell me a joke", ["persona"], ["another one", "haha more", "that was bad, try again", "one more!"],
     ["persona"]),
    ("{chat}", ["persona"], ["haha yeah", "same here", "you too!"], ["persona"]),
    ("write {genre} about {topic}", ["reasoning"], ["read it out loud", "say it in a voice",
     "now read that aloud", "can I hear it?"], ["speech"]),
    ("make {list}", ["reasoning"], ["what if I only have half the time?", "make it simpler", "add a backup option",
     "cut it to five items", "swap the last two"], ["reasoning"]),
    ("plan a {n} day trip to {place}", ["reasoning"], ["swap the second day for something quieter",
     "add a rainy-day option", "make it cheaper"], ["reasoning"]),
    ("{gsm}", ["reasoning"], ["can you check that again?", "explain the second step",
     "what if the price doubles?"], ["reasoning"]),
]


# ------------------------------------------------------------------------------------------ generation
def fill(template: str, slots: dict, rng: random.Random, split: str) -> str:
    def sub(m: re.Match) -> str:
        v = slots[m.group(1)]
        return v(rng, split) if callable(v) else rng.choice(v)
    return re.sub(r"\{(\w+)\}", sub, template)


def noisy(text: str, rng: random.Random, voice: bool) -> str:
    """Surface variety: casing, punctuation, politeness, the odd typo; voice turns look like ASR output."""
    if not text:
        return text
    if voice:
        return re.sub(r"[^\w\s'%-]", "", text.lower()).strip()
    r = rng.random()
    if r < 0.25:
        text = text.lower()
    elif r < 0.35 and len(text) < 80:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.2:
        text = text.rstrip("?.!")
    if rng.random() < 0.12 and len(text) < 200:
        text = rng.choice(["hey, ", "hi, ", "please ", "ok so ", "quick one: ", "um, "]) + text
    if rng.random() < 0.1 and len(text) < 200:
        text += rng.choice([" please", " thanks", " pls", " asap", " :)", " thx"])
    if rng.random() < 0.06:
        words = text.split(" ")
        long_words = [i for i, w in enumerate(words) if len(w) > 5 and w.isalpha()]
        if long_words:
            i = rng.choice(long_words)
            w = words[i]
            j = rng.randrange(1, len(w) - 2)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
            text = " ".join(words)
    return text


def _h(key: str) -> int:
    return int(hashlib.sha1(key.encode()).hexdigest(), 16)


def test_templates(tids: list[str]) -> set[str]:
    """A fifth of a family's templates (at least one when it has three or more), chosen by hash: test only."""
    k = round(len(tids) * 0.2) if len(tids) >= 5 else (1 if len(tids) >= 3 else 0)
    return set(sorted(tids, key=_h)[:k])


def generate(real: Real) -> tuple[list[dict], list[dict]]:
    out: dict[str, list[dict]] = {"train": [], "test": []}
    seen: set[str] = set()
    fams = families(real)
    chat_pool = [(t, f.slots, f.towers) for f in fams for t in f.templates
                 if f.name in ("writing", "plan", "code-write", "code-tech", "know-facts", "persona", "imagine",
                               "logic", "know-people")]
    for fam in fams:
        rng = random.Random(f"{SEED}:{fam.name}")  # per family: adding a family leaves the others unchanged
        tids = [f"{fam.name}/{i}" for i in range(len(fam.templates))]
        test = test_templates(tids)
        for tid, template in zip(tids, fam.templates):
            split = "test" if tid in test else "train"
            for _ in range(fam.per * 3):  # retries for duplicates
                if sum(e["template"] == tid for e in out[split]) >= fam.per:
                    break
                voice = rng.random() < fam.voice and bool(template.strip())
                text = noisy(fill(template, fam.slots, rng, split), rng, voice)
                attach = list(rng.choice(fam.attach))
                key = f"{text}|{attach}"
                if key in seen:
                    continue
                seen.add(key)
                ex = {"prompt": text, "attachments": attach, "towers": list(fam.towers), "voice": voice,
                      "context": [], "template": tid, "source": _source(fam.name)}
                if rng.random() < 0.12 and fam.name not in ("persona",):  # an unrelated earlier turn: look past it
                    template_c, slots_c, towers_c = rng.choice(chat_pool)
                    ex["context"] = [{"text": fill(template_c, slots_c, rng, split), "towers": towers_c}]
                out[split].append(ex)
    rng = random.Random(f"{SEED}:follow-ups")
    for k, (prev, prev_roles, nexts, towers) in enumerate(FOLLOWUPS):
        slots = fams[0].slots
        test = test_templates([f"followup-{k}/{j}" for j in range(len(nexts))])
        for j, follow in enumerate(nexts):
            tid = f"followup-{k}/{j}"
            split = "test" if tid in test else "train"
            for _ in range(4 if "{" in follow else 3):
                ex = {"prompt": noisy(fill(follow, slots, rng, split), rng, False), "attachments": [],
                      "towers": towers, "voice": False,
                      "context": [{"text": fill(prev, slots, rng, split), "towers": prev_roles}],
                      "template": tid, "source": "written"}
                out[split].append(ex)
    out["train"] += _other_languages()
    rng = random.Random(SEED)
    for split in out:
        rng.shuffle(out[split])
    train_prompts = {e["prompt"] for e in out["train"]}
    out["test"] = [e for e in out["test"] if e["prompt"] not in train_prompts]
    return out["train"], out["test"]


def _source(family: str) -> str:
    if family == "math-gsm8k":
        return "gsm8k (MIT)"
    if family in ("know-mmlu", "math-mmlu"):
        return "mmlu (MIT)"
    return "written"


def _other_languages() -> list[dict]:
    """A few non-English requests (training only): MiniLM is English-first, these keep the obvious ones right."""
    rows = [("dessine un chat sur un toit", [], ["imagination"]), ("dibuja un perro en la playa", [], ["imagination"]),
            ("zeichne einen Drachen", [], ["imagination"]), ("hola, ¿cómo estás?", [], ["persona"]),
            ("salut, ça va ?", [], ["persona"]), ("hallo, wie geht's dir?", [], ["persona"]),
            ("ciao, come stai?", [], ["persona"]), ("buenos días", [], ["persona"]),
            ("¿cuánto es 15 por 4 menos 7?", [], ["reasoning"]), ("combien font 12 fois 8 ?", [], ["reasoning"]),
            ("Wie viel ist 25 Prozent von 80?", [], ["reasoning"]),
            ("¿quién escribió Don Quijote?", [], ["knowledge"]), ("quelle est la capitale du Japon ?", [],
                                                                   ["knowledge"]),
            ("wer hat die Relativitätstheorie entwickelt?", [], ["knowledge"]),
            ("escribe una función en javascript que ordene una lista", [], ["code"]),
            ("écris un script python qui lit un fichier", [], ["code"]),
            ("¿qué se ve en esta imagen?", ["image"], ["vision"]), ("décris cette photo", ["image"], ["vision"]),
            ("was ist auf diesem Bild?", ["image"], ["vision"]),
            ("transcribe este audio", ["audio"], ["hearing"]), ("écris ce que dit ce message", ["audio"], ["hearing"]),
            ("lee esto en voz alta: hola a todos", [], ["speech"]), ("lis ce texte à voix haute", ["document"],
                                                                     ["speech"]),
            ("haz un video de un gato bailando", [], ["video"]), ("anime cette photo", ["image"], ["video"]),
            ("你好", [], ["persona"]), ("画一只猫", [], ["imagination"]), ("こんにちは", [], ["persona"])]
    return [{"prompt": p, "attachments": a, "towers": t, "voice": False, "context": [], "template": f"lang/{i}",
             "source": "written"} for i, (p, a, t) in enumerate(rows)]


def write(rows: list[dict], path: Path) -> None:
    with path.open("w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE.parent.parent.parent / "shared" / "data")
    args = ap.parse_args()
    train, test = generate(load_real(args.data))
    write(train, HERE / "train.jsonl")
    write(test, HERE / "test.jsonl")
    for name, rows in (("train", train), ("test", test)):
        roles = Counter(r for e in rows for r in e["towers"])
        top = Counter(e["template"] for e in rows).most_common(1)[0]
        multi = sum(len(e["towers"]) > 1 for e in rows)
        print(f"{name}: {len(rows)} examples, {multi} with two roles, largest template {top[0]} "
              f"{top[1] / len(rows):.1%}; roles {dict(sorted(roles.items()))}")


if __name__ == "__main__":
    main()
