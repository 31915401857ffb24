"""Turn taking: when the user starts, pauses, resumes and finishes speaking, and when they interrupt Nexus.

A pure state machine (no audio, no threads, no clock of its own): `feed(window)` takes one VAD window in audio
time and returns events, so every rule here is unit-tested on synthetic probability sequences.

Rules, and why:
- Hysteresis: speech starts above `threshold` and continues until the probability falls below
  `neg_threshold`; a word's quiet tail does not end it.
- Onset: `min_speech_ms` of speech before a turn starts (a click or a cough is not a turn); the turn's audio
  starts `preroll_ms` earlier, so the first syllable is not cut.
- Pause (the hangover): `pause_ms` of silence is a *pause*: the loop starts the final transcription and the
  reply speculatively, but nothing is spoken yet. Speech that comes back is a `resume` and the speculation is
  dropped.
- End of turn: silence of `end_ms` after a phrase that sounds complete, `end_incomplete_ms` after one that
  does not ("…and", "um", "so the", a trailing comma): thinking pauses are not cut off. The loop tells the
  machine which with `hint()` once the pause's transcript is known; until then it waits up to the long limit.
- Too short (< `min_turn_ms` of speech): dropped, never a turn.
- While Nexus speaks, the bar is higher (`barge_threshold`, `barge_min_ms`): residual echo that the canceller
  left must not read as the user. Crossing it is an `interrupt`: the loop pauses playback and generation at
  once, then decides between a backchannel ("mm-hmm": resume) and a barge-in (stop, new turn).
- A monologue longer than `max_turn_s` is cut into `segment`s, transcribed as it goes.
- Push-to-talk: `press()` / `release()` start and end a turn regardless of the VAD.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from nexus_engine.voice.vad import WINDOW_MS, VadWindow


@dataclass
class TurnConfig:
    threshold: float = 0.5
    neg_threshold: float = 0.35
    min_speech_ms: float = 96.0
    preroll_ms: float = 300.0
    pause_ms: float = 64.0
    end_ms: float = 480.0
    end_incomplete_ms: float = 1400.0
    min_turn_ms: float = 200.0
    barge_threshold: float = 0.7
    barge_min_ms: float = 96.0
    backchannel_ms: float = 900.0  # speech during a reply shorter than this may be "mm-hmm"
    max_turn_s: float = 20.0


@dataclass
class TurnEvent:
    kind: str  # start | pause | resume | end | drop | interrupt | segment
    t_ms: float  # audio time the event refers to (speech onset for start, last speech for pause/end)
    start_ms: float = 0.0  # the turn's first sample (onset - preroll)
    speech_ms: float = 0.0  # voiced time in the turn so far
    while_speaking: bool = False  # the user spoke over Nexus


@dataclass
class TurnState:
    in_turn: bool = False
    paused: bool = False
    onset_run: float = 0.0  # consecutive speech before a start
    onset_at: float = 0.0
    start_ms: float = 0.0
    last_speech: float = 0.0
    silence: float = 0.0
    speech_ms: float = 0.0
    segment_start: float = 0.0
    complete: bool | None = None  # from hint(): does the transcript so far sound finished?
    while_speaking: bool = False
    ptt: bool = False
    events: list[TurnEvent] = field(default_factory=list)


class TurnTaker:
    def __init__(self, config: TurnConfig | None = None) -> None:
        self.cfg = config or TurnConfig()
        self.s = TurnState()
        self.assistant_speaking = False  # set by the loop: Nexus's audio is playing
        self.listening = True  # False: barge-in is off and Nexus speaks, so speech is ignored
        self.vad_turns = True  # False: push-to-talk only, the VAD never starts a turn

    # --------------------------------------------------------------------------------------- inputs
    def hint(self, complete: bool | None) -> None:
        self.s.complete = complete

    def press(self, t_ms: float) -> list[TurnEvent]:
        s = self.s
        if s.in_turn:
            s.ptt = True
            return []
        self._start(t_ms, t_ms)
        s.ptt = True
        return self._drain()

    def release(self, t_ms: float) -> list[TurnEvent]:
        s = self.s
        s.ptt = False
        if not s.in_turn:
            return []
        self._end(max(s.last_speech, t_ms))
        return self._drain()

    def reset(self) -> None:
        self.s = TurnState()

    def feed(self, w: VadWindow) -> list[TurnEvent]:
        c, s = self.cfg, self.s
        t = w.end_ms
        if s.ptt:  # the button decides; the VAD only keeps speech time for the record
            if w.prob >= c.neg_threshold:
                s.last_speech, s.speech_ms = t, s.speech_ms + WINDOW_MS
            return self._drain()
        speaking = self.assistant_speaking and not s.in_turn
        if not s.in_turn:
            if not self.vad_turns or (not self.listening and self.assistant_speaking):
                s.onset_run = 0.0
                return []
            thr, need = (c.barge_threshold, c.barge_min_ms) if speaking else (c.threshold, c.min_speech_ms)
            if w.prob >= thr:
                if s.onset_run == 0.0:
                    s.onset_at = t - WINDOW_MS
                s.onset_run += WINDOW_MS
                if s.onset_run >= need:
                    self._start(s.onset_at, t, while_speaking=speaking)
            elif w.prob < c.neg_threshold or speaking:
                s.onset_run = 0.0
            return self._drain()
        # in a turn
        voiced = w.prob >= (c.threshold if s.paused else c.neg_threshold)
        if voiced:
            if s.paused:
                s.events.append(TurnEvent("resume", t, s.start_ms, s.speech_ms, s.while_speaking))
                s.paused = False
                s.complete = None
            s.last_speech, s.silence = t, 0.0
            s.speech_ms += WINDOW_MS
            if (t - s.segment_start) / 1000 >= c.max_turn_s:
                s.events.append(TurnEvent("segment", t, s.segment_start, s.speech_ms, s.while_speaking))
                s.segment_start = t
            return self._drain()
        s.silence += WINDOW_MS
        if not s.paused and s.silence >= c.pause_ms:
            s.paused = True
            s.events.append(TurnEvent("pause", s.last_speech, s.start_ms, s.speech_ms, s.while_speaking))
        if s.speech_ms < c.min_turn_ms and s.silence >= c.pause_ms:
            s.events.append(TurnEvent("drop", s.last_speech, s.start_ms, s.speech_ms, s.while_speaking))
            self._clear()
            return self._drain()
        limit = {True: c.end_ms, False: c.end_incomplete_ms, None: c.end_incomplete_ms}[s.complete]
        if s.silence >= limit:
            self._end(s.last_speech)
        return self._drain()

    # ------------------------------------------------------------------------------------ internals
    def _start(self, onset: float, t: float, while_speaking: bool = False) -> None:
        s = self.s
        s.in_turn, s.paused, s.onset_run = True, False, 0.0
        s.start_ms = max(0.0, onset - self.cfg.preroll_ms)
        s.segment_start = s.start_ms
        s.last_speech, s.silence, s.speech_ms = t, 0.0, t - onset
        s.complete, s.while_speaking = None, while_speaking
        s.events.append(TurnEvent("interrupt" if while_speaking else "start", onset, s.start_ms, s.speech_ms,
                                  while_speaking))

    def _end(self, t: float) -> None:
        s = self.s
        kind = "end" if s.speech_ms >= self.cfg.min_turn_ms else "drop"
        s.events.append(TurnEvent(kind, t, s.start_ms, s.speech_ms, s.while_speaking))
        self._clear()

    def _clear(self) -> None:
        events = self.s.events
        self.s = TurnState(events=events)

    def _drain(self) -> list[TurnEvent]:
        out, self.s.events = self.s.events, []
        return out


# ----------------------------------------------------------------------------------------- language
# a turn ending on one of these is mid-thought
INCOMPLETE = frozenset({"and", "or", "but", "so", "because", "since", "although", "though", "if", "unless", "until",
    "while", "when", "whereas", "then", "than", "that", "which", "who", "whom", "whose", "where", "what", "why",
    "how", "the", "a", "an", "to", "of", "for", "from", "with", "without", "about", "into", "onto", "in", "on", "at",
    "by", "as", "like", "um", "uh", "er", "erm", "hmm", "my", "your", "our", "their", "his", "her", "its", "this",
    "these", "those", "is", "are", "was", "were", "be", "been", "being", "am", "i", "you", "we", "they", "he", "she",
    "it", "can", "could", "would", "should", "will", "shall", "may", "might", "must", "do", "does", "did", "have",
    "has", "had", "not", "very", "really", "just", "also"})
# acknowledgements, alone or in twos and threes
BACKCHANNELS = frozenset({"mm", "mhm", "mmhmm", "mmhm", "hmm", "hm", "uh-huh", "uhhuh", "yeah", "yep", "yes", "yup",
    "ok", "okay", "right", "sure", "alright", "cool", "nice", "wow", "oh", "ah", "aha", "gotcha", "indeed",
    "exactly", "true", "totally"})
BACKCHANNEL_PHRASES = frozenset({"i see", "got it", "uh huh", "i know", "that is right", "that's right", "of course"})
_WORDS = re.compile(r"[a-z']+(?:-[a-z']+)*")


def words(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


def sounds_complete(text: str) -> bool:
    """Does a transcript sound like a finished turn? Whisper ends nearly everything with a period, so the
    last word decides: a conjunction, article, preposition or filler means the speaker is mid-thought."""
    t = text.strip()
    if not t or t.endswith(("...", "…", ",", "-", ";", ":")):
        return False
    w = words(t)
    return bool(w) and w[-1] not in INCOMPLETE


def is_backchannel(text: str) -> bool:
    """'mm-hmm', 'yeah', 'okay', 'I see': acknowledgements that must not abort a reply."""
    w = words(text)
    if " ".join(w) in BACKCHANNEL_PHRASES:
        return True
    return 0 < len(w) <= 3 and all(x in BACKCHANNELS or x.replace("-", "") in BACKCHANNELS for x in w)
