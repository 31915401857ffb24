"""Audio in and out for the voice loop: the microphone as 20 ms frames, the speaker as a queue, at 16 kHz mono.

Three backends with one interface (`AudioBackend`):
- `SoundDeviceAudio`: the real devices through sounddevice/PortAudio. Its callbacks run on PortAudio's thread
  and only copy samples between preallocated ring buffers (no numpy allocation, no locks, no Python objects
  beyond the slices), so a slow model can never glitch the sound. A device that cannot run at 16 kHz is opened
  at its own rate and converted by `StreamResampler` on the loop's thread, not in the callback.
- `ArrayAudio`: an in-memory "device" with its own clock thread (real time, or as fast as the consumer reads),
  for tests, benchmarks and transcribing arrays; an optional simulated echo path plays the speaker back into
  the microphone, delayed and attenuated, for echo-cancellation tests without a sound card.
- `file_audio(path)`: ArrayAudio over a decoded file.

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
from collections.abc import Callable
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
    return ArrayAudio(decode_file(path), realtime=realtime)


def decode_file(path: str | Path) -> np.ndarray:
    """A whole audio file -> 16 kHz mono float32; unreadable files are a clear BadInputError."""
    return np.concatenate(list(decode_chunks(path, 600.0)) or [np.zeros(0, dtype=np.float32)])


def decode_chunks(path: str | Path, chunk_s: float) -> Any:
    """Yield 16 kHz mono float32 blocks of about `chunk_s` seconds, decoding the file as it goes (an hour-long
    file is never in memory at once)."""
    import av

    from nexus_engine.config import limits

    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"no such audio file: {p}")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise BadInputError(f"{p.name} is not a readable audio file ({e})",
                            "convert it to WAV, FLAC, MP3 or OGG; the file may be truncated or corrupt") from e
    longest = limits.active().audio_seconds
    with container:
        streams = [s for s in container.streams if s.type == "audio"]
        if not streams:
            raise BadInputError(f"{p.name} has no audio stream")
        _check_length(p.name, _header_seconds(container, streams[0]), longest)  # before decoding anything
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        want = int(chunk_s * RATE)
        parts: list[np.ndarray] = []
        have = decoded = 0
        try:
            for frame in container.decode(streams[0]):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
                    have += parts[-1].size
                    decoded += parts[-1].size
                _check_length(p.name, decoded / RATE, longest)  # a header that said less (or nothing)
                if have >= want:
                    block = np.concatenate(parts)
                    yield block[:want]
                    parts, have = [block[want:]], block.size - want
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1))
        except (av.error.FFmpegError, ValueError) as e:
            raise BadInputError(f"{p.name} is corrupt after {have / RATE:.1f} s of audio ({e})",
                                "re-export or re-download the file") from e
        rest = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        while rest.size:
            yield rest[:want]
            rest = rest[want:]


def _header_seconds(container: Any, stream: Any) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return float(container.duration / 1e6) if container.duration else 0.0


def _check_length(name: str, seconds: float, longest: float) -> None:
    if seconds > longest:
        raise BadInputError(f"{name}: the audio is {_span(seconds)} long; the limit is {_span(longest)}",
                            "cut it shorter, or raise audio_seconds in [limits] of your models.toml")


def _span(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def probe_duration(path: str | Path) -> float:
    """Seconds of audio in a file (from its header; 0.0 when the container does not say)."""
    import av

    try:
        with av.open(str(path)) as c:
            s = next((s for s in c.streams if s.type == "audio"), None)
            if s is not None and s.duration is not None and s.time_base is not None:
                return float(s.duration * s.time_base)
            return float(c.duration / 1e6) if c.duration else 0.0
    except (av.error.FFmpegError, OSError, ValueError):
        return 0.0


# ---------------------------------------------------------------------------------------- sounddevice
class SoundDeviceAudio(AudioBackend):
    """The system's microphone and speaker through PortAudio. `input`/`output`: a device name (substring) or
    index; None is the system default."""

    name = "sounddevice"

    def __init__(self, input: str | int | None = None, output: str | int | None = None,
                 on_error: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.input, self.output = input, output
        self.on_error = on_error
        self._streams: list[Any] = []
        self._in_rate = RATE
        self._out_rate = RATE
        self._conv_in: StreamResampler | None = None
        self._raw = Ring(RATE * 2)  # device-rate microphone samples when the device cannot do 16 kHz
        self.info: dict[str, Any] = {}

    def start(self) -> None:
        sd = _sounddevice()
        self.error = None
        try:
            in_dev = _pick(sd, self.input, "input")
            out_dev = _pick(sd, self.output, "output")
            self._in_rate = _rate(sd, in_dev, "input")
            self._out_rate = _rate(sd, out_dev, "output")
        except AudioDeviceError:
            raise
        except Exception as e:  # PortAudio's own errors
            raise AudioDeviceError(f"audio devices unavailable: {e}", _HINT) from e
        if self._out_rate != RATE:  # an output that only runs at 44.1/48 kHz gets resampled speech, queued as is
            raise AudioDeviceError(f"the output device only runs at {self._out_rate} Hz",
                                   "choose another output device, or route it through PulseAudio/PipeWire")
        self._conv_in = StreamResampler(self._in_rate, RATE) if self._in_rate != RATE else None
        in_block = FRAME * self._in_rate // RATE
        try:
            ins = sd.InputStream(device=in_dev, channels=1, samplerate=self._in_rate, blocksize=in_block,
                                 dtype="float32", latency=IN_LATENCY_S, callback=self._in_cb,
                                 finished_callback=lambda: self._lost("input"))
            outs = sd.OutputStream(device=out_dev, channels=1, samplerate=RATE, blocksize=FRAME, dtype="float32",
                                   latency=OUT_LATENCY_S, callback=self._out_cb,
                                   finished_callback=lambda: self._lost("output"))
        except Exception as e:
            raise AudioDeviceError(f"could not open the audio devices: {e}", _HINT) from e
        self._streams = [outs, ins]
        outs.start()
        ins.start()
        self.info = {"input": sd.query_devices(ins.device)["name"], "output": sd.query_devices(outs.device)["name"],
                     "input_rate": self._in_rate, "latency_ms": [round(s.latency * 1000, 1) for s in self._streams]}

    def pause(self) -> None:
        super().pause()
        self._drop_queued(rewind=True)

    def flush(self) -> None:
        super().flush()
        self._drop_queued(rewind=False)

    def _drop_queued(self, rewind: bool) -> None:
        """Silence now: what PortAudio and the sound server still hold (~OUT_LATENCY_S) is dropped by restarting
        the output stream (~1 ms). On a pause, the speaker queue is rewound by that much, so a resumed reply goes on
        from the last sample actually heard."""
        out = self._streams[0] if self._streams else None
        if out is None or not out.active:
            return
        try:
            out.abort()
            if rewind:
                back = min(int(out.latency * RATE) + FRAME, self.speaker.r - self.burst_start,
                           self.speaker.cap - self.speaker.available())
                self.speaker.r -= max(0, back)
            out.start()
        except Exception as e:  # the device went away: read() reports it
            log.warning("could not restart the output stream: %s", e)

    def _in_cb(self, indata: np.ndarray, frames: int, t: Any, status: Any) -> None:
        if self._conv_in is None:
            self._on_input(indata[:, 0])
        else:  # converted on the loop's thread (read), never here
            self._raw.write(indata[:, 0], overwrite=True)

    def _out_cb(self, outdata: np.ndarray, frames: int, t: Any, status: Any) -> None:
        self._on_output(outdata[:, 0])

    def _lost(self, which: str) -> None:
        if any(s.active for s in self._streams) or not self._streams:
            return
        self.error = f"the {which} device stopped"

    def read(self, timeout: float = 1.0) -> np.ndarray | None:
        if self._conv_in is not None and self._raw.catch_up() + self._raw.available():
            block = np.zeros(self._raw.available(), dtype=np.float32)
            out = self._conv_in(block[:self._raw.read_into(block)])
            for i in range(0, len(out) - FRAME + 1, FRAME):  # stamps per converted frame
                self._on_input(out[i:i + FRAME])
        frame = super().read(timeout)
        if frame is None and self.error is None and self._streams and not self._streams[1].active:
            self.error = "the microphone stopped delivering audio"
        return frame

    def close(self) -> None:
        for s in self._streams:
            try:
                s.abort()
                s.close()
            except Exception:  # a device that vanished may fail to close; it is gone either way
                log.debug("closing a stream failed", exc_info=True)
        self._streams = []

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, **self.info}


_HINT = ("connect a microphone and speakers (or headphones), check the system's sound settings, and on Linux "
         "install PortAudio (apt install libportaudio2)")


def _sounddevice() -> Any:
    try:
        import sounddevice as sd
    except OSError as e:  # the PortAudio library is missing
        raise AudioDeviceError(f"audio is unavailable: {e}", _HINT) from e
    return sd


def _pick(sd: Any, want: str | int | None, kind: str) -> int:
    key = f"max_{kind}_channels"
    devices = sd.query_devices()
    if want is None or want == "":
        idx = sd.default.device[0 if kind == "input" else 1]
        if idx is None or idx < 0 or devices[idx][key] < 1:
            idx = next((d["index"] for d in devices if d[key] > 0), None)
        if idx is None:
            raise AudioDeviceError(f"no {'microphone' if kind == 'input' else 'speaker'} found", _HINT)
        return int(idx)
    if isinstance(want, int):
        if want < 0 or want >= len(devices) or devices[want][key] < 1:
            raise AudioDeviceError(f"audio device {want} is not an {kind} device", "`nexus talk --devices` lists them")
        return want
    for d in devices:
        if want.lower() in d["name"].lower() and d[key] > 0:
            return int(d["index"])
    raise AudioDeviceError(f"no {kind} device named {want!r}", "`nexus talk --devices` lists them")


def _rate(sd: Any, device: int, kind: str) -> int:
    """16 kHz when the device takes it (PulseAudio and PipeWire convert), else its default rate."""
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    try:
        check(device=device, channels=1, samplerate=RATE, dtype="float32")
        return RATE
    except Exception:
        return int(sd.query_devices(device)["default_samplerate"])


def list_devices() -> list[dict[str, Any]]:
    sd = _sounddevice()
    default_in, default_out = sd.default.device
    return [{"index": d["index"], "name": d["name"], "inputs": d["max_input_channels"],
             "outputs": d["max_output_channels"], "rate": d["default_samplerate"],
             "default": d["index"] in (default_in, default_out)} for d in sd.query_devices()]
