"""Audio files attached to a chat turn: heard by the profile's ASR tower, then answered by the chat model.

A voice note or recording dragged into the chat is transcribed first (the `hearing` tower, or `hearing_long` for
files past the router's LONG_AUDIO_S, through the residency manager like any tower), and the transcript goes to
the chat model as a report in the system message — the shape the AGID audio comparison measured as the text path
(research/agid/audio.py uses `report` below). Other attachments (images, videos) then take their own path with
the report already in place. The answer's stats name the ASR tower and what it heard (`heard`), so the app
shows that the audio went through a transcript. An unreadable, silent or non-speech file becomes a note the
model sees and the stats carry; the turn is still answered and nothing the user sent is lost.
"""

from __future__ import annotations

import dataclasses
import mimetypes
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nexus_engine.attachment_store import AUDIO_EXT
from nexus_engine.errors import BadInputError, BudgetError, ModelMissingError
from nexus_engine.protocol import ChatRequest, Progress

if TYPE_CHECKING:
    from nexus_engine.engine import Emit, Engine

ONE = "The user sent a voice message. Speech recognition heard: \u201c{}\u201d. Use only this transcript."
MANY = "The user sent {n} audio files. Speech recognition heard: {notes}. Use only these transcripts."
MAX_CHARS = 6000  # of transcript per turn (~1.5k tokens): a long recording is cut, and the note says so


@dataclasses.dataclass
class Heard:
    path: str
    text: str = ""
    duration_s: float = 0.0
    tower: str = ""
    note: str = ""  # why there is no (or only part of the) transcript
    name: str = ""  # the user's file name (the stored copy is named by its hash)

    def entry(self, i: int) -> str:
        """`[Audio 1 (note.wav, 4.2 s): “…”]`, or the note when nothing usable was heard."""
        size = f", {self.duration_s:.1f} s" if self.duration_s else ""
        head = f"Audio {i} ({self.name or Path(self.path).name}{size}"
        body = f"\u201c{self.text}\u201d" if self.text else "nothing was heard"
        return f"[{head}): {body}" + (f" ({self.note})" if self.note else "") + "]"


def audio_files(req: ChatRequest) -> list[str]:
    """The attachments of this turn that are audio (by the kind the app gave, else by extension or MIME type)."""
    return [str(a.get("path", "")) for a in req.attachments if is_audio(a)]


def _name(a: dict[str, Any]) -> str:
    return str(a.get("name") or Path(str(a.get("path", ""))).name)


def is_audio(a: dict[str, Any]) -> bool:
    if a.get("kind"):
        return a.get("kind") == "audio"
    path = str(a.get("path", ""))
    return Path(path).suffix.lower() in AUDIO_EXT or (mimetypes.guess_type(path)[0] or "").startswith("audio/")


def report(heard: list[Heard]) -> str:
    """The system-message report for what was heard: one voice message in the words the AGID comparison used."""
    if len(heard) == 1 and heard[0].text and not heard[0].note:
        return ONE.format(heard[0].text)
    return MANY.format(n=len(heard), notes=" ".join(h.entry(i + 1) for i, h in enumerate(heard)))


def answer_with_hearing(engine: Engine, req: ChatRequest, emit: Emit, cancel: threading.Event,
                        note: str = "") -> dict[str, Any]:
    """Transcribe the turn's audio files, then answer the turn (with its other attachments) from the report; or,
    for short audio alone with a trained audio projector, let the LLM hear it (consolidation/answer.py).
    note: why the projector path was left (it then comes back here, and the stats say so)."""
    from nexus_engine.consolidation import answer as consolidation
    from nexus_engine.vision import compose

    t0 = time.perf_counter()
    files = audio_files(req)
    rest = [a for a in req.attachments if not is_audio(a)]
    if not rest and not note:
        choice = consolidation.choose_audio(engine, files)
        if choice.path == consolidation.PROJECTOR:
            return consolidation.answer_with_projector(engine, req, emit, cancel, choice)
        note = choice.note
    heard = [hear(engine, str(a.get("path", "")), req.id, emit, cancel, _name(a)) for a in req.attachments
             if is_audio(a)]
    _cap(heard)
    hearing_ms = (time.perf_counter() - t0) * 1000
    if cancel.is_set():  # stopped while listening: no model is loaded to answer a turn nobody waits for
        return {"finish": "cancelled", "tokens": 0, "heard": [dataclasses.asdict(h) for h in heard],
                "hearing_ms": round(hearing_ms, 1), "total_ms": round(hearing_ms, 1)}
    role = req.role if rest or req.role not in ("vision", "perception") else "reasoning"
    stats = engine.chat(dataclasses.replace(req, messages=compose.with_report(req.messages, report(heard)),
                                            attachments=rest, role=role), emit, cancel)
    asr = [h.tower for h in heard if h.tower]
    towers = list(dict.fromkeys([*asr, *stats.get("towers", [stats.get("tower")])]))
    return {**stats, "towers": [t for t in towers if t], "hearing_ms": round(hearing_ms, 1),
            "heard": [dataclasses.asdict(h) for h in heard], **({"consolidation_note": note} if note else {})}


def hear(engine: Engine, path: str, request_id: str, emit: Emit, cancel: threading.Event, name: str = "") -> Heard:
    """One file's transcript; a file that cannot be heard is a Heard with a note, never an exception."""
    from nexus_engine.router.features import LONG_AUDIO_S
    from nexus_engine.voice.asr import phantom_reason, transcribe_long
    from nexus_engine.voice.audio_files import decode_file, probe_duration
    from nexus_engine.voice.audio_io import RATE, level_db, mono_float

    out = Heard(path, name=name or Path(path).name)
    try:
        long = probe_duration(path) > LONG_AUDIO_S
        out.tower = engine.tower_name(None, "hearing_long" if long else "hearing")
        emit(Progress(id=request_id, message=f"listening to {out.name}"))
        with engine.residency.acquire((out.tower,), emit=emit, request_id=request_id) as lease:
            tower = lease.tower(out.tower)
            if long:  # decoded as it goes: an hour-long file is never in memory at once
                res = transcribe_long(tower, path, cancel=cancel)
                out.text, out.duration_s = str(res.get("text", "")).strip(), float(res.get("duration_s", 0.0))
                return out
            audio = mono_float(decode_file(path))
            out.duration_s = round(len(audio) / RATE, 2)
            if audio.size == 0:
                out.note = "the file holds no audio"
            elif level_db(audio) < -60:  # digital silence: Whisper would invent a sentence
                out.note = "the file is silent"
            else:
                res = tower.transcribe(audio, RATE)
                out.text = str(res.text).strip()
                doubt = phantom_reason(res, audio, speech_ms=len(audio) / RATE * 1000)
                if doubt:
                    out.text, out.note = "", f"probably not speech: {doubt}"
    except BadInputError as e:  # unreadable or damaged file: say so, and answer the rest of the turn
        out.note = f"could not be read: {e.message}"
    except (ModelMissingError, BudgetError) as e:  # no ASR tower, its weights missing, or no room for it now
        out.note = f"not heard: {e.message}"
    return out


def _cap(heard: list[Heard]) -> None:
    """Cut transcripts to MAX_CHARS in all (evenly), at a word, and say how much was left out."""
    total = sum(len(h.text) for h in heard)
    if total <= MAX_CHARS:
        return
    for h in heard:
        keep = max(200, MAX_CHARS * len(h.text) // total)
        if len(h.text) > keep:
            cut = h.text[:keep].rsplit(" ", 1)[0]
            left = len(h.text[len(cut):].split())
            h.text = cut + " \u2026"
            h.note = f"transcript cut: {left} more words; `nexus transcribe` gives the whole text"
