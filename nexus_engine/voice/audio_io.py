"""Audio in and out for the voice loop: the microphone as 20 ms frames, the speaker as a queue, at 16 kHz mono.

Three backends with one interface (`AudioBackend`):
- `SoundDeviceAudio` (audio_device.py): the real devices through sounddevice/PortAudio. Its callbacks run on
  PortAudio's thread and only copy samples between preallocated ring buffers (no numpy allocation, no locks, no
  Python objects beyond the slices), so a slow model can never glitch the sound. A device that cannot run at
  16 kHz is opened at its own rate and converted by `StreamResampler` on the loop's thread, not in the callback.
- `ArrayAudio`: an in-memory "device" with its own clock thread (real time, or as fast as the consumer reads),
  for tests, benchmarks and transcribing arrays; an optional simulated echo path plays the speaker back into
  the microphone, delayed and attenuated, for echo-cancellation tests without a sound card.
- `file_audio(path)`: ArrayAudio over a file decoded by audio_files.py.

Echo-cancellation alignment: each backend keeps a history of what it sent to the speaker (including the
silence), and stamps every microphone frame with the speaker position at the moment the frame arrived.
`reference()` returns the speaker samples from just before that (smoothed) stamp, so the echo in a microphone
frame always lies *after* its reference (by the output + input latency), which is what an adaptive echo filter
needs, and the alignment stays steady from frame to frame.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from nexus_engine.errors import BadInputError, NexusError

log = logging.getLogger("nexus.voice.audio")

RATE = 16000
FRAME = 320  # 20 ms at 16 kHz
MIC_SECONDS = 4.0  # microphone backlog kept when the loop falls behind (older audio is dropped, counted)
SPEAKER_SECONDS = 120.0  # synthesized speech that may be queued ahead of playback
HISTORY_SECONDS = 2.0  # speaker history for the echo canceller
IN_LATENCY_S = 0.02  # PortAudio's "low" (9 ms on PulseAudio) underruns on a busy machine, and every underrun
OUT_LATENCY_S = 0.1  # shifts the echo against its reference; a barge-in drops the queued output at once


class AudioDeviceError(NexusError):
    code = "audio_device"


# ------------------------------------------------------------------------------------------ samples
MIN_RATE, MAX_RATE = 1000, 384_000  # sample rates any real recording or device uses


def mono_float(audio: Any) -> np.ndarray:
    """int16 / float, (n,) / (n, channels) / (channels, n) -> float32 mono in [-1, 1]. NaN or infinite samples
    are refused here, so no model ever sees them (Whisper decodes garbage from them, others crash)."""
    try:
        arr = np.asarray(audio)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{arr.dtype} samples")
        if arr.dtype == np.int16:
            arr = arr.astype(np.float32) / 32768.0
        with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become inf: refused below
            arr = arr.astype(np.float32, copy=False)
    except (TypeError, ValueError) as e:
        raise BadInputError(f"audio samples must be numbers ({e})") from e
    if arr.ndim == 2:  # average the shorter axis (the channels) away
        arr = arr.mean(axis=int(np.argmin(arr.shape))).astype(np.float32) if arr.size else arr.reshape(-1)
    if arr.ndim != 1:
        raise BadInputError(f"expected mono audio samples, got an array of shape {np.asarray(audio).shape}")
    if not np.isfinite(arr).all():
        raise BadInputError("the audio contains NaN or infinite samples", "the recording is damaged: record it again")
    return arr


def check_rate(rate: Any) -> int:
    """A sample rate as an int, or a BadInputError (0, negative, fractional and absurd rates are refused)."""
    if isinstance(rate, bool) or not isinstance(rate, int | np.integer) or not MIN_RATE <= rate <= MAX_RATE:
        raise BadInputError(f"unsupported sample rate {rate!r}", f"use {MIN_RATE} to {MAX_RATE} Hz (16000 is best)")
    return int(rate)


def resample(audio: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Band-limited (polyphase) resampling of a whole array."""
    src, dst = check_rate(src), check_rate(dst)
    if src == dst or audio.size == 0:
        return audio.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    # every common rate pair reduces to a denominator under 1000 (44100 -> 16000 is 160/441) and stays exact; an
    # odd rate (999983 Hz) is approximated instead of building a filter with millions of taps
    ratio = Fraction(dst, src).limit_denominator(1000)
    return resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)


def level_db(frame: np.ndarray) -> float:
    """RMS level in dBFS (-100 for digital silence)."""
    rms = math.sqrt(float(np.dot(frame, frame)) / max(1, frame.size))
    return 20 * math.log10(rms) if rms > 1e-5 else -100.0


class StreamResampler:
    """Polyphase resampling of a stream block by block (a device that only runs at 44.1/48 kHz).

    Output sample j sits at input position j*M/L; it is the dot product of the input history with one phase of
    a windowed-sinc low-pass (cut at the lower Nyquist), so nothing above 8 kHz folds into the speech band.
    """

    def __init__(self, src: int, dst: int, taps_per_phase: int = 24) -> None:
        from scipy.signal import firwin

        r = Fraction(dst, src)
        self.up, self.down = r.numerator, r.denominator
        n = taps_per_phase * self.up
        h = firwin(n, 1.0 / max(self.up, self.down), window=("kaiser", 8.0)) * self.up
        self.taps = taps_per_phase
        self.poly = h.reshape(taps_per_phase, self.up).T[:, ::-1].astype(np.float32)  # [phase, tap], newest last
        self.hist = np.zeros(taps_per_phase, dtype=np.float32)
        self.t = 0  # next output position, in units of 1/up input samples, relative to hist[taps-1]

    def __call__(self, block: np.ndarray) -> np.ndarray:
        x = np.concatenate([self.hist, block.astype(np.float32, copy=False)])
        last = len(x) - 1  # newest input sample index
        # output positions (in input samples, from x[taps-1] = the first new sample's predecessor)
        pos = []
        t = self.t
        while (self.taps - 1) + t // self.up <= last:
            pos.append(t)
            t += self.down
        self.t = t - self.up * len(block)
        self.hist = x[-self.taps:]
        if not pos:
            return np.zeros(0, dtype=np.float32)
        p = np.asarray(pos)
        base = (self.taps - 1) + p // self.up
        idx = base[:, None] - np.arange(self.taps - 1, -1, -1)[None, :]
        return np.einsum("ij,ij->i", x[idx], self.poly[p % self.up]).astype(np.float32)


# ---------------------------------------------------------------------------------------- ring buffers
class Ring:
    """Single-producer single-consumer float32 ring with absolute positions.

    `write` and `read_into` copy into preallocated memory only, so they are safe in an audio callback. Positions
    only grow (Python ints are atomic under the GIL), and `view(end, n)` reads history by absolute position,
    which is how the echo reference is looked up.
    """

    def __init__(self, capacity: int) -> None:
        self.buf = np.zeros(capacity, dtype=np.float32)
        self.cap = capacity
        self.w = 0  # total samples written
        self.r = 0  # total samples read
        self.dropped = 0

    def available(self) -> int:
        return min(self.w - self.r, self.cap)

    def space(self) -> int:
        return max(0, self.cap - (self.w - self.r))

    def catch_up(self) -> int:
        """The consumer fell more than a buffer behind an overwriting producer: skip to the newest half of the
        buffer (the producer may be writing over the oldest part right now). Returns the samples skipped.

        Only the consumer moves `r`: were the producer to advance it too, the consumer's own `r += n` could undo
        that move and replay audio from the previous lap (a phrase heard twice)."""
        behind = self.w - self.r
        if behind <= self.cap:
            return 0
        lost = behind - self.cap // 2
        self.r += lost
        self.dropped += lost
        return lost

    def write(self, x: np.ndarray, overwrite: bool = False) -> int:
        """Append; when full, either write over the oldest unread audio (overwrite: the consumer skips it, see
        catch_up) or write only what fits."""
        n = len(x)
        if not overwrite:
            n = min(n, self.space())
        start = self.w % self.cap
        first = min(n, self.cap - start)
        self.buf[start:start + first] = x[:first]
        if n > first:
            self.buf[:n - first] = x[first:n]
        self.w += n
        return n

    def read_into(self, out: np.ndarray) -> int:
        while True:
            self.catch_up()
            pos = self.r
            n = min(len(out), self.w - pos, self.cap)
            start = pos % self.cap
            first = min(n, self.cap - start)
            out[:first] = self.buf[start:start + first]
            if n > first:
                out[first:n] = self.buf[:n - first]
            if self.w - pos <= self.cap:  # nothing we copied was written over meanwhile (else: copy again)
                self.r = pos + n
                return n

    def view_into(self, end: int, out: np.ndarray) -> None:
        """Copy the `len(out)` samples written just before absolute position `end` (zeros where not kept)."""
        n = len(out)
        out[:] = 0.0
        a = max(end - n, self.w - self.cap, 0)
        hi = min(end, self.w)
        while a < hi:  # at most two pieces: up to the end of the buffer, then from its start
            b = min(hi, (a // self.cap + 1) * self.cap)
            out[a - (end - n):b - (end - n)] = self.buf[a % self.cap:a % self.cap + (b - a)]
            a = b

    def clear(self) -> None:
        self.r = self.w


# --------------------------------------------------------------------------------------------- backend
class AudioBackend:
    """The interface the voice loop uses. Subclasses fill the rings from their device callbacks.

    - read(timeout): the next 20 ms microphone frame (a reused buffer: copy it to keep it), or None.
    - reference(): the speaker samples aligned with the frame read last (for the echo canceller).
    - play(samples): queue 16 kHz audio; flush(): drop what is queued (barge-in); pause()/resume().
    - speaking: queued audio is playing; spoke_at: monotonic time the current burst's first sample went out.
    """

    name = "audio"

    def __init__(self) -> None:
        self.mic = Ring(int(RATE * MIC_SECONDS))
        self.stamps = np.zeros(int(RATE * MIC_SECONDS) // FRAME, dtype=np.int64)  # speaker position per frame
        self.frames_in = 0  # frames the device delivered (stamps index)
        self.frames_out = 0  # frames the consumer read
        self.speaker = Ring(int(RATE * SPEAKER_SECONDS))
        self.history = Ring(int(RATE * HISTORY_SECONDS))
        self.paused = False
        self.spoke_at = 0.0  # when the first sample of the current burst was handed to the device
        self.last_out_at = 0.0  # when audio was last handed to the device
        self.played = 0  # samples of speech handed to the device
        self.burst_start = 0  # speaker position where the current burst began
        self.error: str | None = None  # set when the device failed; the loop reports it and reopens
        self._frame = np.zeros(FRAME, dtype=np.float32)
        self._ref = np.zeros(FRAME, dtype=np.float32)
        self._stamp = 0
        # Devices deliver microphone blocks in bursts, so the speaker position seen by each callback jitters by
        # several frames; an echo canceller fed a reference that jumps back and forth never converges. The
        # reference of frame k is therefore k * FRAME + a steady offset: the median of the first second's
        # (stamp - k * FRAME), moved only when the timing changes for good (both sides share the device clock).
        self._offsets = np.zeros(50, dtype=np.int64)
        self._offset: int | None = None
        self._drift = 0
        self.realigned = 0  # how often the alignment moved (the loop resets its echo canceller then)

    # the device side (callbacks) ----------------------------------------------------------------------
    def _on_input(self, block: np.ndarray) -> None:
        """Called per delivered microphone block of FRAME samples."""
        self.stamps[self.frames_in % len(self.stamps)] = self.history.w
        self.mic.write(block, overwrite=True)
        self.frames_in += 1

    def _on_output(self, out: np.ndarray) -> None:
        """Fill `out` (FRAME samples or any block) from the speaker queue, zeros when idle or paused."""
        n = 0 if self.paused else self.speaker.read_into(out)
        if n < len(out):
            out[n:] = 0.0
        if n:
            now = time.monotonic()
            if self.spoke_at == 0.0:
                self.spoke_at = now
                self.burst_start = self.speaker.r - n
            self.last_out_at = now
            self.played += n
        self.history.write(out, overwrite=True)

    # the loop side ------------------------------------------------------------------------------------
    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def read(self, timeout: float = 1.0) -> np.ndarray | None:
        deadline = time.monotonic() + timeout
        while self.mic.available() < FRAME:
            if self.error is not None or time.monotonic() > deadline:
                return None
            time.sleep(0.003)
        if self.mic.catch_up() or self.mic.dropped:  # the loop fell behind: realign the stamps with the frames kept
            self.frames_out = max(self.frames_out, self.frames_in - self.mic.available() // FRAME)
        self.mic.read_into(self._frame)
        k = self.frames_out
        n = len(self._offsets)
        self._offsets[k % n] = int(self.stamps[k % len(self.stamps)]) - k * FRAME
        if k < n or k % n == 0:
            self._align(int(np.median(self._offsets[:min(k + 1, n)])), settled=k >= n)
        self._stamp = k * FRAME + self._offset
        self.frames_out += 1
        return self._frame

    def _align(self, estimate: int, settled: bool) -> None:
        """Move the reference alignment only when the device timing really changed (three seconds in a row more
        than 100 ms away): every move makes the echo canceller learn the room again."""
        if not settled or self._offset is None:
            self._offset = estimate
            return
        self._drift = self._drift + 1 if abs(estimate - self._offset) > RATE // 10 else 0
        if self._drift >= 3:
            self._offset, self._drift = estimate, 0
            self.realigned += 1

    def reference(self, delay: int = 0) -> np.ndarray:
        """The speaker samples aligned with the last frame read, `delay` samples earlier (the echo path's delay,
        once the echo canceller's estimator knows it). A reused buffer."""
        self.history.view_into(self._stamp - delay, self._ref)
        return self._ref

    def play(self, samples: np.ndarray, cancel: threading.Event | None = None) -> bool:
        """Queue audio (blocks while the queue is full); False when cancelled first."""
        x = samples.astype(np.float32, copy=False)
        i = 0
        while i < len(x):
            if cancel is not None and cancel.is_set():
                return False
            if self.speaker.available() == 0 and not self.paused:
                self.spoke_at = 0.0  # a new burst: its first sample's time is taken by the callback
            i += self.speaker.write(x[i:])
            if i < len(x):
                time.sleep(0.01)
        return True

    def flush(self) -> None:
        self.speaker.clear()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    @property
    def queued_s(self) -> float:
        return self.speaker.available() / RATE

    @property
    def speaking(self) -> bool:
        return self.speaker.available() > 0 and not self.paused

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name}


# ---------------------------------------------------------------------------------------- in memory
class ArrayAudio(AudioBackend):
    """A device made of arrays. The microphone plays `mic` (then silence, or more audio given to `feed`); the
    speaker's output is kept in `out` (with the monotonic time of each block in `out_times`).

    realtime=True paces both sides with a 20 ms clock (benchmarks, end-to-end tests); False runs the clock as
    fast as the consumer reads, keeping the same frame-by-frame pairing. `echo=(delay_ms, gain)` adds the
    speaker's output, delayed and scaled, to the microphone: an acoustic echo path.
    """

    name = "memory"

    def __init__(self, mic: np.ndarray | None = None, realtime: bool = True, echo: tuple[float, float] | None = None,
                 keep_output: bool = True) -> None:
        super().__init__()
        self.realtime = realtime
        self.echo = echo
        self.keep_output = keep_output
        self.out: list[np.ndarray] = []
        self.out_times: list[float] = []
        self.mic_pos = 0  # samples of the input fed to the microphone so far
        self.tick_times = np.zeros(RATE * 3600 // FRAME, dtype=np.float64)  # when each mic frame was delivered
        self.ticks = 0
        self._src = Ring(int(RATE * 3600)) if mic is not None and len(mic) > RATE * 3600 else Ring(RATE * 600)
        if mic is not None:
            self.feed(mic)
        self._echo_line = Ring(RATE * 2)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._in = np.zeros(FRAME, dtype=np.float32)
        self._outb = np.zeros(FRAME, dtype=np.float32)
        self._echo = np.zeros(FRAME, dtype=np.float32)

    def feed(self, samples: np.ndarray) -> int:
        """More microphone audio (16 kHz mono float), played after what is already queued; returns the
        microphone position (in samples) where it will start."""
        at = self.mic_pos + self._src.available()
        self._src.write(samples.astype(np.float32, copy=False))
        return at

    def wall_of(self, pos: int) -> float:
        """Monotonic time at which microphone sample `pos` was delivered (0.0 if not yet)."""
        k = pos // FRAME
        return float(self.tick_times[k]) if k < self.ticks else 0.0

    @property
    def fed_remaining_s(self) -> float:
        return self._src.available() / RATE

    def start(self) -> None:
        self._stop.clear()
        self.error = None
        self._thread = threading.Thread(target=self._clock, name="nexus-array-audio", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)

    def _clock(self) -> None:
        t_next = time.monotonic()
        while not self._stop.is_set():
            if self.realtime:
                t_next += FRAME / RATE
                delay = t_next - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            elif self.mic.available() >= 2 * FRAME:  # as fast as the consumer reads
                time.sleep(0.0005)
                continue
            self.tick()

    def tick(self) -> None:
        """One 20 ms period of the device: speaker block out, microphone block in."""
        self._on_output(self._outb)
        if self.keep_output:
            self.out.append(self._outb.copy())
            self.out_times.append(time.monotonic())
        n = self._src.read_into(self._in)
        self._in[n:] = 0.0
        self.mic_pos += FRAME
        if self.ticks < len(self.tick_times):
            self.tick_times[self.ticks] = time.monotonic()
            self.ticks += 1
        if self.echo is not None:
            delay_ms, gain = self.echo
            self._echo_line.write(self._outb * gain, overwrite=True)
            self._echo_line.view_into(self._echo_line.w - int(delay_ms * RATE / 1000), self._echo)
            self._in += self._echo
        self._on_input(self._in)

    def output(self) -> np.ndarray:
        return np.concatenate(self.out) if self.out else np.zeros(0, dtype=np.float32)


def file_audio(path: str | Path, realtime: bool = False) -> ArrayAudio:
    from nexus_engine.voice.audio_files import decode_file

    return ArrayAudio(decode_file(path), realtime=realtime)
