"""The duplex voice loop: microphone ▸ echo canceller ▸ VAD ▸ turn taking ▸ ASR ▸ LLM ▸ TTS ▸ speaker.

Threads (all in the engine worker, next to the models):
- the capture thread (`run`) reads 20 ms frames, cancels the echo against what the speaker played, runs the VAD
  and the turn state machine, and makes every decision; it never waits on a model;
- the ASR thread (asr.StreamingASR) transcribes partials and finals;
- per reply, the LLM thread (local_client.Generation) and a TTS thread (`Reply`) that synthesizes each piece
  of the answer as soon as the chunker releases it and queues the audio for the speaker (reply.py).
Threads hand results to the capture thread through `inbox`, so the loop's state has one owner.

Latency: at the *pause* (64 ms of silence) the final transcription starts, and as soon as it is back the reply
starts too — speculatively: its audio is held until the end of the turn is confirmed (`end_ms` of silence
after a complete-sounding phrase). Speech that resumes cancels both. So by the end of the turn the first
sentence is usually synthesized and plays at once: end-of-speech to first audio ≈ max(end_ms, ASR + LLM first
clause + TTS first clause).

Turns are kept through a ChatSession on the shared History (source "voice"), so spoken turns appear in the text
chat and the text chat's turns are in the voice loop's context. The towers (ASR, TTS, VAD) are held by one
residency lease for the whole call: voice is interactive and is never evicted mid-call.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from nexus_engine.chat_session import ChatSession, Turn
from nexus_engine.errors import BadInputError, NexusError
from nexus_engine.history import History
from nexus_engine.protocol import (
    ChatRequest,
    Message,
    Transcript,
    VoiceLevel,
    VoiceReply,
    VoiceState,
)
from nexus_engine.voice.asr import AsrResult, StreamingASR
from nexus_engine.voice.audio_io import FRAME, RATE, AudioBackend, AudioDeviceError, Ring, level_db
from nexus_engine.voice.duplex import SpeechGeneration, is_speech_persona
from nexus_engine.voice.echo_path import EchoPath
from nexus_engine.voice.local_client import LocalClient
from nexus_engine.voice.reply import Reply, Times
from nexus_engine.voice.tts import Speaker
from nexus_engine.voice.turn_text import TurnText
from nexus_engine.voice.turns import TurnConfig, TurnEvent, TurnTaker, is_backchannel, sounds_complete
from nexus_engine.voice.vad import VadFrames, VadWindow

log = logging.getLogger("nexus.voice.loop")
Emit = Callable[[Message], None]

DEFAULT_PERSONA = ("You are Nexus, a friendly assistant talking with the user by voice on their own computer. "
                   "Answer in one or two short spoken sentences. No lists, no markdown, no emoji.")
ECHO_TAIL_S = 0.35  # after the speaker stops, the room (and the device buffers) still echo for this long
LEVEL_EVERY = 5  # frames between VoiceLevel events (100 ms)
RECONNECT_S = 2.0
BARGE_RESUME_S = 0.6  # after an interruption too short to be a turn, Nexus goes on after this much quiet
DEBUG = bool(os.environ.get("NEXUS_VOICE_DEBUG"))  # log every speech window heard while Nexus speaks
WARM_TEXT = "Sure, here is a short answer to warm the voice up."


@dataclass
class VoiceSettings:
    persona: str = DEFAULT_PERSONA
    conversation_id: int | None = None
    asr: str | None = None  # tower names; None = the profile's roles (hearing, speech, persona) and its VAD
    tts: str | None = None
    vad: str | None = None
    llm: str | None = None
    voice: str | None = None
    barge_in: bool = True
    push_to_talk: bool = False
    aec: bool = True
    speculate: bool = True
    max_tokens: int = 120
    partial_ms: float = 700.0
    turn: TurnConfig = field(default_factory=TurnConfig)


class VoiceLoop:
    def __init__(self, engine: Any, audio: AudioBackend, settings: VoiceSettings, emit: Emit, call_id: str = "",
                 history: History | None = None) -> None:
        self.engine, self.audio, self.cfg, self.emit, self.call_id = engine, audio, settings, emit, call_id
        self.history = history or History()
        self._own_history = history is None
        self.client = LocalClient(engine)
        self.session = ChatSession(self.client, self.history, settings.conversation_id,  # type: ignore[arg-type]
                                   system_prompt=settings.persona or DEFAULT_PERSONA, profile=engine.profile)
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.next_tag = 0
        self.barge = ""  # "" | "pending" (playback and generation paused, deciding) | "committed"
        self.resume_at = 0.0  # a pending barge-in whose speech stopped: resume the reply at this time
        self.turns = TurnTaker(replace(settings.turn))
        self.turns.vad_turns = not settings.push_to_talk
        self.muted = False
        self.barge_in = settings.barge_in
        self.turn_log: list[dict[str, Any]] = []
        self.state = ""
        self.phantoms = 0
        self.speaker: Speaker
        self.duplex: Any = None  # a speech-to-speech persona tower (duplex.py), when the persona is one
        self._reset_turn()
        self.reply: Reply | None = None
        self.chat_turn: Turn | None = None
        self.frames = 0
        self.t_ms = 0.0
        self.now = time.monotonic()
        self.rec = Ring(int(RATE * (settings.turn.max_turn_s + 6)))
        self._zeros = np.zeros(FRAME, dtype=np.float32)
        self._debug = tuple(Ring(RATE * 60) for _ in range(3)) if os.environ.get("NEXUS_VOICE_DUMP") else None
        self._level = [-100.0, 0.0, False]  # max dB, max speech prob, clipping since the last VoiceLevel
        self._last_partial = 0.0
        self._partial_ms = 0.0  # compute time of the last partial
        self._maybe_user = False  # the last VAD window was speech the echo gate let through
        self.echo: EchoPath | None = None  # the echo canceller and gate, from the start of the call

    def _reset_turn(self) -> None:
        self.turn_id = getattr(self, "turn_id", 0) + 1
        self.tt = TurnText(getattr(self, "asr", None), self._audio, self._new_tag)  # this turn's transcript
        self.awaiting = False  # the turn ended and waits for its transcripts
        self.turn_start: TurnEvent | None = None
        self.times = Times()

    # ------------------------------------------------------------------------------------------ control
    def control(self, mute: bool | None = None, barge_in: bool | None = None, ptt: bool | None = None,
                persona: str | None = None) -> None:
        """From any thread (the worker's reader); applied by the capture thread at its next frame."""
        self.inbox.put(("control", {"mute": mute, "barge_in": barge_in, "ptt": ptt, "persona": persona}))

    # --------------------------------------------------------------------------------------------- run
    def run(self, stop: threading.Event) -> dict[str, Any]:
        """The call, until `stop` is set. Raises AudioDeviceError when the devices cannot be opened at all."""
        self._state("connecting", "loading the voice models")
        names = self._tower_names()
        lease = self.engine.residency.acquire(tuple(n for n in names.values() if n), latency="interactive",
                                              emit=self.emit, request_id=self.call_id)
        try:
            self.speaker = Speaker(lease.tower(names["tts"]), self.cfg.voice)
            self.asr = StreamingASR(lease.tower(names["asr"]), lambda tag, r: self.inbox.put(("asr", (tag, r))))
            self.vad = VadFrames(lease.tower(names["vad"]).stream())
            self.duplex = lease.tower(names["duplex"]) if "duplex" in names else None
            if self.duplex is not None and not is_speech_persona(self.duplex):
                raise BadInputError(f"tower {names['duplex']!r} cannot answer speech with speech",
                                    "name a chat model or a PersonaPlex/Moshi tower as the voice persona")
            if self.duplex is not None:
                self.cfg = replace(self.cfg, speculate=False)  # nothing to start before the turn's audio is whole
            self.echo = EchoPath(self.cfg.aec)
            self.gate = self.echo.gate
            if not self.echo.aec.available and self.cfg.aec:
                self.turns.cfg.barge_threshold = max(self.turns.cfg.barge_threshold, 0.85)
            for name in names.values():  # first runs allocate (ORT, CTranslate2): pay that now, not in turn one
                lease.tower(name).warmup()
            self.speaker(WARM_TEXT)  # a sentence-sized input: ORT sizes its buffers on the first of each size
            lease.tower(names["asr"]).transcribe(np.zeros(4 * RATE, dtype=np.float32), RATE)
            if self.duplex is None:
                self._warm_llm()
            self.audio.start()
            persona = self.cfg.llm or getattr(self.engine.config.tower_for("persona", self.engine.profile), "name", "")
            shown = names if "duplex" in names else {**names, "llm": persona}
            info = {"towers": shown, "aec": self.echo.aec.name, "audio": self.audio.describe()}
            self._state("listening", "listening" if not self.cfg.push_to_talk else "hold the button to talk", info)
            while not stop.is_set():
                frame = self.audio.read(timeout=0.5)
                if frame is None:
                    if self.audio.error is not None:
                        self._reconnect(stop)
                    continue
                self._frame(frame)
        finally:
            self._shutdown()
            lease.release()
        return {"turns": self.turn_log, "conversation_id": self.session.conversation_id, "phantoms": self.phantoms,
                "echo": self.echo_report()}

    def _tower_names(self) -> dict[str, str]:
        e, c = self.engine, self.cfg
        vad = c.vad or next((t.name for t in e.config.towers.values() if t.kind == "vad"), None)
        if vad is None:
            raise BadInputError("no VAD tower is declared", "declare one with kind = \"vad\" in models.toml")
        names = {"asr": e.tower_name(c.asr, "hearing"), "tts": e.tower_name(c.tts, "speech"), "vad": vad}
        spec = e.config.towers.get(c.llm) if c.llm else e.config.tower_for("persona", e.profile)
        if spec is not None and spec.kind == "persona":  # speech to speech (PersonaPlex): it answers, not the LLM
            names["duplex"] = spec.name
        return names

    def _dump(self) -> None:
        """NEXUS_VOICE_DUMP=file.npz: the call's last minute of microphone, speaker reference and cleaned audio,
        for tuning the echo canceller and the VAD on a real room."""
        path = os.environ.get("NEXUS_VOICE_DUMP")
        if not path or self._debug is None:
            return
        n = min(self._debug[0].w, self._debug[0].cap)
        arrays = {}
        for name, ring in zip(("mic", "ref", "clean"), self._debug, strict=True):
            out = np.zeros(n, dtype=np.float32)
            ring.view_into(ring.w, out)
            arrays[name] = out
        np.savez(path, rate=RATE, **arrays)

    def _warm_llm(self) -> None:
        """Load the chat tower and run the persona's system prompt once: the first turn then pays neither the
        load nor the prompt (llama.cpp keeps the prefix in its KV cache)."""
        def forward(msg: Message) -> None:
            if msg.type_name in ("tower_event", "residency"):
                self.emit(msg)

        req = self._request(self._context("Hello."))
        req.max_tokens = 1
        try:
            self.engine.chat(req, forward, threading.Event())
        except NexusError as e:
            raise BadInputError(f"the voice persona's chat model cannot run: {e.message}", e.hint) from e

    def _shutdown(self) -> None:
        if self.reply is not None:
            self.reply.cancel()
        self.client.close()
        if self.chat_turn is not None and not self.chat_turn.done:
            self.chat_turn.wait(5)
        self._dump()
        try:
            self.audio.close()
        finally:
            if hasattr(self, "asr"):
                self.asr.close()
            if self.echo is not None:
                self.echo.close()
            if self._own_history:
                self.history.close()
            self._state("ended", "the call ended")

    def _reconnect(self, stop: threading.Event) -> None:
        """The device vanished mid-call: say so, stop talking, and reopen it until it is back or the call ends."""
        why = self.audio.error or "the audio device stopped"
        if self.reply is not None:
            self.reply.cancel()
        self.turns.reset()
        self._reset_turn()
        self._state("reconnecting", f"{why}; trying again…")
        self.audio.close()
        while not stop.wait(RECONNECT_S):
            try:
                self.audio.start()
            except AudioDeviceError as e:
                self._state("reconnecting", f"{e.message}; trying again…")
                continue
            self._state("listening", "the audio device is back")
            return

    # --------------------------------------------------------------------------------------- per frame
    def _frame(self, raw: np.ndarray) -> None:
        self.frames += 1
        self.t_ms = self.frames * FRAME * 1000 / RATE
        self.now = time.monotonic()
        assert self.echo is not None  # set up by run() before the first frame
        clean, ref = self.echo.cancel(raw, self.audio)
        if self._debug is not None:
            for ring, x in zip(self._debug, (raw, ref, clean), strict=True):
                ring.write(x, overwrite=True)
        peak = float(np.max(np.abs(raw)))
        if self.muted:
            clean = self._zeros
        self.rec.write(clean, overwrite=True)
        self.turns.assistant_speaking = self._speaking()
        self.turns.listening = self.barge_in
        clean_db = level_db(clean)
        # the user's first syllables (before a turn starts) must not teach the gate that the echo is louder
        self.gate.update(ref, clean, self.turns.s.in_turn or self.audio.paused or self._maybe_user)
        self.echo.measure(raw, clean, only_nexus=not self.turns.s.in_turn and self.audio.speaking)
        lv = self._level
        lv[0] = max(lv[0], clean_db if not self.muted else -100.0)
        lv[2] = lv[2] or peak >= 0.999
        for w in self.vad.feed(clean):
            if DEBUG and w.prob > 0.5 and self.turns.assistant_speaking:
                log.info("window p=%.2f %.1f dB, reference %.1f dB, residual %.1f dB: %s", w.prob, w.db,
                         self.gate.ref_db, self.gate.residual_db, "echo" if self.gate.is_echo(w.db) else "user")
            echo = self.gate.is_echo(w.db)
            self._maybe_user = w.prob >= 0.5 and not echo
            if echo and not self.turns.s.in_turn:
                w.prob = 0.0  # what is left of Nexus's own voice, not the user
            lv[1] = max(lv[1], w.prob)
            for ev in self.turns.feed(w):
                self._on_turn(ev, w)
        if self.frames % LEVEL_EVERY == 0:
            self.emit(VoiceLevel(id=self.call_id, db=round(lv[0], 1), speech=round(lv[1], 2), clipping=bool(lv[2])))
            self._level = [-100.0, 0.0, False]
        while not self.inbox.empty():
            kind, payload = self.inbox.get_nowait()
            if kind == "asr":
                self._on_asr(*payload)
            else:
                self._on_control(payload)
        self._tick()

    def echo_report(self) -> dict[str, Any]:
        return self.echo.report() if self.echo is not None else {"canceller": ""}

    def _speaking(self) -> bool:
        a = self.audio
        return a.speaking or a.paused or (a.last_out_at > 0 and self.now - a.last_out_at < ECHO_TAIL_S)

    def _wall(self, t_ms: float) -> float:
        """Monotonic time of audio time t_ms (frames arrive in real time, so count back from now)."""
        return self.now - (self.t_ms - t_ms) / 1000

    def _audio(self, start_ms: float, end_ms: float) -> np.ndarray:
        start = int(start_ms * RATE / 1000)
        end = min(int(end_ms * RATE / 1000), self.rec.w)
        out = np.zeros(max(0, end - start), dtype=np.float32)
        self.rec.view_into(end, out)
        return out

    # ------------------------------------------------------------------------------------- turn events
    def _on_turn(self, ev: TurnEvent, w: VadWindow) -> None:
        if ev.kind in ("start", "interrupt"):
            self._reset_turn()
            self.turn_start = ev
            self.tt.begin(ev.start_ms)
            self._last_partial = self.t_ms
            if ev.kind == "interrupt":
                self._interrupt()
            else:
                self.barge = ""
            if ev.kind == "start" and self.reply is not None and self.reply.committed and not self.reply.spoken:
                self._cancel_reply("the user went on speaking before the answer started")
            self._state("hearing", "interrupting" if ev.kind == "interrupt" else "hearing you")
        elif ev.kind == "pause":
            self.times.speech_end = self._wall(ev.t_ms)
            self.tt.pause(ev.t_ms, self.t_ms, ev.speech_ms)
        elif ev.kind == "resume":
            self.tt.resume(ev.t_ms)
            if self.reply is not None and not self.reply.committed:
                self._cancel_reply("the user went on")
        elif ev.kind == "segment":  # a monologue without pauses: cut it here
            self.tt.segment(self.t_ms, ev.speech_ms)
        elif ev.kind == "end":
            self.times.speech_end = self.times.speech_end or self._wall(ev.t_ms)
            self.times.eot = self.now
            self.awaiting = True
            self.tt.end(self.t_ms, ev.speech_ms)
            self._maybe_end()
        elif ev.kind == "drop":
            if self.barge == "pending":  # a cough or a word's first syllable: wait a moment before going on
                self.resume_at = self.now + BARGE_RESUME_S
            self._reset_turn()
            self._idle_state()

    def _new_tag(self) -> int:
        self.next_tag += 1
        return self.next_tag

    def _tick(self) -> None:
        """Per frame: partials, a barge-in that outlasted a backchannel, the reply's progress."""
        s = self.turns.s
        # a running partial delays a final that comes meanwhile: keep the ASR idle two thirds of the time
        every = max(self.cfg.partial_ms, 3 * self._partial_ms)
        if s.in_turn and not s.paused and self.t_ms - self._last_partial >= every:
            self._last_partial = self.t_ms
            self.tt.partial(self.turn_id, self.t_ms, s.speech_ms)
        if self.barge == "pending" and s.in_turn and s.speech_ms >= self.turns.cfg.backchannel_ms:
            self._barge_commit("the user kept talking")
        elif self.barge == "pending" and not s.in_turn and self.resume_at and self.now >= self.resume_at:
            self._resume_reply()
        r = self.reply
        if r is None:
            return
        if r.committed and not r.times.first_audio and self.audio.spoke_at >= r.commit_at - 0.05 and r.spoken:
            r.times.first_audio = self.audio.spoke_at
            self._state("speaking", "speaking")
        if r.committed and r.finished and not self.audio.speaking and not r.reported:
            self._finish_reply(r)

    # ---------------------------------------------------------------------------------------- results
    def _on_asr(self, tag: int, res: AsrResult) -> None:
        if not res.final:
            self._partial_ms = res.ms
            if tag == -self.turn_id and self.turns.s.in_turn and self.tt.partial_is_current():
                self.emit(Transcript(id=self.call_id, text=self.tt.text(res), final=False))
            return
        log.info("final (tag %d, pause tag %d, %.0f ms, %.1f s)%s: %r", tag, self.tt.pause_tag, res.ms, res.audio_s,
                 f" phantom: {res.phantom}" if res.phantom else "", res.text)
        kind, res = self.tt.final(tag, res)
        if kind == "part":
            self._maybe_end()
            return
        if kind == "stale":
            return  # an abandoned pause's final
        self.times.final, self.times.asr_ms, self.times.final_audio_s = time.monotonic(), res.ms, res.audio_s
        text = self.tt.text(res)
        self.turns.hint(True if res.phantom else sounds_complete(res.text))
        if self.barge == "pending" and not self.awaiting:
            if not self.tt.parts and (res.phantom or is_backchannel(res.text)):
                self.turns.reset()
                self._reset_turn()
                self._resume_reply()  # "mm-hmm": Nexus goes on
            return
        if self.awaiting:
            self._maybe_end()
        elif (self.cfg.speculate and text and not res.phantom and sounds_complete(res.text) and self.reply is None
              and not self.tt.transcribing and self.barge != "pending"):
            self._speculate(text)

    def _maybe_end(self) -> None:
        if self.awaiting and self.tt.ready():
            res = self.tt.pause_result
            assert res is not None
            self._end(self.tt.text(res), res.phantom)

    def _on_control(self, c: dict[str, Any]) -> None:
        if c["barge_in"] is not None:
            self.barge_in = bool(c["barge_in"])
        if c["persona"] is not None:
            self.session.system_prompt = c["persona"] or DEFAULT_PERSONA
        if c["mute"] is not None and c["mute"] != self.muted:
            self.muted = bool(c["mute"])
            self._state("muted", "the microphone is muted") if self.muted else self._idle_state()
        if c["ptt"] is not None:
            events = self.turns.press(self.t_ms) if c["ptt"] else self.turns.release(self.t_ms)
            for ev in events:
                self._on_turn(ev, VadWindow(self.t_ms, 1.0, 1.0, 0.0))

    # ------------------------------------------------------------------------------------------ replies
    def _context(self, text: str) -> list[dict[str, str]]:
        """The messages ChatSession will send once `text` is stored, so a speculative request can be adopted."""
        s = self.session
        if s.conversation_id is not None:
            msgs = s._context()
        else:
            msgs = [{"role": "system", "content": s.system_prompt}] if s.system_prompt else []
        if msgs and msgs[-1]["role"] == "user":
            msgs[-1] = {"role": "user", "content": f"{msgs[-1]['content']}\n\n{text}"}
        else:
            msgs.append({"role": "user", "content": text})
        return msgs

    def _request(self, messages: list[dict[str, str]]) -> ChatRequest:
        return ChatRequest(messages=messages, role="persona", voice=True, max_tokens=self.cfg.max_tokens,
                           **({"tower": self.cfg.llm} if self.cfg.llm else {}))

    def _speculate(self, text: str) -> None:
        if self.chat_turn is not None and not self.chat_turn.done:
            return  # the last answer is still being stored: its context is not final yet
        self.times.speculative = True
        gen = self.client.start(self._request(self._context(text)))
        self.reply = Reply(self, gen, committed=False, times=self.times)

    def _end(self, text: str, why: str) -> None:
        """The turn is over and its transcript known: store it and answer (or drop a phantom)."""
        self.awaiting = False
        if self.barge == "pending" and (not text or is_backchannel(text)):
            self._reset_turn()
            self._resume_reply()  # "mm-hmm" over Nexus: it goes on
            return
        if self.barge == "pending":
            self._barge_commit("the user said more than a backchannel")
        if not text:
            self.phantoms += 1
            log.info("dropped a turn: %s", why or "nothing was said")
            if self.reply is not None and not self.reply.committed:
                self._cancel_reply("phantom turn")
            self._reset_turn()
            self._idle_state()
            return
        self._commit(text)

    def _commit(self, text: str) -> None:
        if self.chat_turn is not None and not self.chat_turn.done:
            self.chat_turn.cancel()
            self.chat_turn.wait(5)
        spec = self.reply if self.reply is not None and not self.reply.committed else None
        self.client.pending = spec.gen if spec is not None else None
        self.times.llm_start = self.times.llm_start or time.monotonic()
        if self.duplex is not None:  # the persona hears the turn itself
            start = self.turn_start.start_ms if self.turn_start is not None else 0.0
            heard, tower, name = self._audio(start, self.t_ms), self.duplex, str(self.duplex.spec.name)
            self.client.next_generation = lambda req: SpeechGeneration(self.engine, req, tower, heard, name)
        try:
            kwargs = {"tower": self.cfg.llm} if self.cfg.llm else {}
            turn = self.session.send(text, role="persona", voice=True, max_tokens=self.cfg.max_tokens, **kwargs)
        except NexusError as e:
            log.warning("could not store the turn: %s", e)
            self._state("error", f"could not answer: {e.message}")
            return
        self.chat_turn = turn
        self._mark_voice(turn.user_message_id)
        gen = self.client.last
        if spec is not None and gen is spec.gen:
            reply = spec
        else:
            if spec is not None:
                spec.cancel()
            self.times.speculative = False
            reply = Reply(self, gen, committed=False, times=self.times)  # type: ignore[arg-type]
        self.reply = reply
        reply.commit(turn.message_id)
        self.emit(Transcript(id=self.call_id, text=text, final=True, message_id=turn.user_message_id,
                             conversation_id=self.session.conversation_id))
        self._state("thinking", "thinking")
        self._reset_turn_keep_times()

    def _reset_turn_keep_times(self) -> None:
        times = self.times
        self._reset_turn()
        self.times = times

    def _mark_voice(self, message_id: int) -> None:
        try:
            msg = self.history.get_message(message_id)
            self.history.update_message(message_id, meta={**(msg.meta if msg else {}), "source": "voice"})
        except NexusError:
            log.exception("could not mark message %s as spoken", message_id)

    def _finish_reply(self, r: Reply) -> None:
        r.reported = True
        stats = r.times.breakdown()
        self.turn_log.append({**stats, "status": r.status, "spoken": " ".join(r.spoken)})
        self.emit(VoiceReply(id=self.call_id, text="", final=True, status=r.status or "done", message_id=r.message_id,
                             conversation_id=self.session.conversation_id, stats=stats))
        if r.error:
            self._state("error", f"the answer failed: {r.error}")
        self.reply = None
        self._idle_state()

    def _cancel_reply(self, why: str) -> None:
        r = self.reply
        if r is None:
            return
        log.info("reply cancelled: %s", why)
        r.cancel()
        if r.committed:
            self.audio.flush()
            self.audio.resume()
            r.status = "cancelled"
            self._finish_reply(r)
        self.reply = None

    # ------------------------------------------------------------------------------------------ barge-in
    def _interrupt(self) -> None:
        """User speech over Nexus: pause playback and generation now; decide backchannel vs barge-in next."""
        self.barge, self.resume_at = "pending", 0.0
        self.audio.pause()
        if self.reply is not None:
            self.reply.pause()
        if self.turn_start is not None:
            lag = (self.now - self._wall(self.turn_start.t_ms)) * 1000
            log.info("interrupt detected %.0f ms after the user's onset", lag)

    def _resume_reply(self) -> None:
        self.barge, self.resume_at = "", 0.0
        if self.reply is not None:
            self.reply.resume()
        self.audio.resume()
        self._idle_state()

    def _barge_commit(self, why: str) -> None:
        self.barge = "committed"
        self._cancel_reply(f"barge-in: {why}")
        self.audio.flush()
        self.audio.resume()

    # --------------------------------------------------------------------------------------------- state
    def _idle_state(self) -> None:
        if self.muted:
            self._state("muted", "the microphone is muted")
        elif self.reply is not None and self.reply.committed:
            self._state("speaking" if self.reply.spoken else "thinking", "")
        else:
            self._state("listening", "listening" if not self.cfg.push_to_talk else "hold the button to talk")

    def _state(self, state: str, detail: str, info: dict[str, Any] | None = None) -> None:
        if state == self.state and not info and state != "error":
            return
        self.state = state
        self.emit(VoiceState(id=self.call_id, state=state, detail=detail,
                             conversation_id=self.session.conversation_id, info=info or {}))
