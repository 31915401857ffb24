"""Acoustic echo cancellation: Nexus must not hear itself through the speakers.

The canceller is SpeexDSP's (libspeexdsp, `apt install libspeexdsp1`; on other systems the speexdsp package of
the platform), called through ctypes: the MDF adaptive filter (`speex_echo_cancellation`) learns the path from
the speaker signal (the reference: what the audio backend sent to the device, aligned per frame, see
audio_io.py) to the microphone and subtracts its estimate; the preprocessor linked to it
(`speex_preprocess_run` with the echo state) suppresses the residual echo the linear filter leaves. Noise
suppression is kept mild (-6 dB: the preprocessor only applies the residual-echo gain when its denoiser runs) and
AGC and dereverb stay off: they change the user's voice, and Whisper is trained on raw speech. The preprocessor
works on overlapping windows and delays its output by exactly one frame (20 ms); measured on a LibriSpeech
echo at 100 ms delay, the pair removes ~25-35 dB once converged (~3 s of speech), the linear filter alone ~15-20.

When the library is missing, `EchoCanceller.create()` returns a `Passthrough` that says so (`available`
False); the loop then raises its barge-in threshold and reports "echo cancellation unavailable" in its state.
`erle_db` is the standard measure of how much echo was removed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Any

import numpy as np

log = logging.getLogger("nexus.voice.aec")

SPEEX_ECHO_SET_SAMPLING_RATE = 24
SPEEX_PREPROCESS_SET_DENOISE = 0
SPEEX_PREPROCESS_SET_AGC = 2
SPEEX_PREPROCESS_SET_VAD = 4
SPEEX_PREPROCESS_SET_DEREVERB = 8
SPEEX_PREPROCESS_SET_NOISE_SUPPRESS = 18
SPEEX_PREPROCESS_SET_ECHO_SUPPRESS = 20
SPEEX_PREPROCESS_SET_ECHO_SUPPRESS_ACTIVE = 22
SPEEX_PREPROCESS_SET_ECHO_STATE = 24

_LIB: Any = None


def _lib() -> Any:
    """The speexdsp shared library, loaded once; None when it is not installed."""
    global _LIB
    if _LIB is None:
        name = ctypes.util.find_library("speexdsp") or "libspeexdsp.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            _LIB = False
            return None
        p, i, i16p = ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int16)
        lib.speex_echo_state_init.restype = p
        lib.speex_echo_state_init.argtypes = [i, i]
        lib.speex_echo_state_destroy.argtypes = [p]
        lib.speex_echo_state_reset.argtypes = [p]
        lib.speex_echo_ctl.argtypes = [p, i, p]
        lib.speex_echo_cancellation.argtypes = [p, i16p, i16p, i16p]
        lib.speex_preprocess_state_init.restype = p
        lib.speex_preprocess_state_init.argtypes = [i, i]
        lib.speex_preprocess_state_destroy.argtypes = [p]
        lib.speex_preprocess_ctl.argtypes = [p, i, p]
        lib.speex_preprocess_run.argtypes = [p, i16p]
        lib.speex_preprocess_run.restype = i
        _LIB = lib
    return _LIB or None


def available() -> bool:
    return _lib() is not None


class Passthrough:
    """No echo cancellation (the library is missing): the microphone as it is."""

    available = False
    name = "none"

    def process(self, mic: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return mic

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


class SpeexEchoCanceller:
    """SpeexDSP MDF echo canceller + residual echo suppressor on float frames of `frame` samples.

    filter_ms: how long an echo it models: the room's reverberation plus what the delay compensation (see
    DelayEstimator) leaves; longer filters converge more slowly.
    process() reuses preallocated int16 buffers: no allocation per frame besides the returned view.
    """

    available = True
    name = "speexdsp"

    def __init__(self, frame: int = 320, rate: int = 16000, filter_ms: float = 128.0,
                 suppress_db: int = -40, suppress_active_db: int = -15, noise_db: int = -6) -> None:
        lib = _lib()
        if lib is None:
            raise OSError("libspeexdsp is not installed")
        self.lib, self.frame, self.rate = lib, frame, rate
        taps = int(rate * filter_ms / 1000)
        self.echo = lib.speex_echo_state_init(frame, taps)
        self.pre = lib.speex_preprocess_state_init(frame, rate)
        r = ctypes.c_int(rate)
        lib.speex_echo_ctl(self.echo, SPEEX_ECHO_SET_SAMPLING_RATE, ctypes.byref(r))
        for key, value in ((SPEEX_PREPROCESS_SET_DENOISE, 1), (SPEEX_PREPROCESS_SET_NOISE_SUPPRESS, noise_db),
                           (SPEEX_PREPROCESS_SET_AGC, 0),
                           (SPEEX_PREPROCESS_SET_DEREVERB, 0),
                           (SPEEX_PREPROCESS_SET_ECHO_SUPPRESS, suppress_db),
                           (SPEEX_PREPROCESS_SET_ECHO_SUPPRESS_ACTIVE, suppress_active_db)):
            v = ctypes.c_int(value)
            lib.speex_preprocess_ctl(self.pre, key, ctypes.byref(v))
        lib.speex_preprocess_ctl(self.pre, SPEEX_PREPROCESS_SET_ECHO_STATE, ctypes.c_void_p(self.echo))
        self._mic = np.zeros(frame, dtype=np.int16)
        self._ref = np.zeros(frame, dtype=np.int16)
        self._out = np.zeros(frame, dtype=np.int16)
        self._res = np.zeros(frame, dtype=np.float32)
        ptr = ctypes.POINTER(ctypes.c_int16)
        self._pm, self._pr, self._po = (a.ctypes.data_as(ptr) for a in (self._mic, self._ref, self._out))

    def process(self, mic: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """One frame: microphone and speaker reference (float32, [-1, 1]) -> the microphone without the echo."""
        np.clip(mic * 32767.0, -32768, 32767, out=self._res)
        self._mic[:] = self._res
        np.clip(ref * 32767.0, -32768, 32767, out=self._res)
        self._ref[:] = self._res
        self.lib.speex_echo_cancellation(self.echo, self._pm, self._pr, self._po)
        self.lib.speex_preprocess_run(self.pre, self._po)
        np.multiply(self._out, 1.0 / 32768.0, out=self._res)
        return self._res

    def reset(self) -> None:
        self.lib.speex_echo_state_reset(self.echo)

    def close(self) -> None:
        if self.echo:
            self.lib.speex_preprocess_state_destroy(self.pre)
            self.lib.speex_echo_state_destroy(self.echo)
            self.echo = self.pre = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def create(frame: int = 320, rate: int = 16000, **kwargs: Any) -> SpeexEchoCanceller | Passthrough:
    try:
        return SpeexEchoCanceller(frame, rate, **kwargs)
    except OSError as e:
        log.warning("echo cancellation unavailable: %s (install libspeexdsp1)", e)
        return Passthrough()


def erle_db(mic: np.ndarray, out: np.ndarray) -> float:
    """Echo return loss enhancement: how much quieter the echo is after cancellation (higher is better)."""
    e_in = float(np.mean(np.square(mic, dtype=np.float64)))
    e_out = float(np.mean(np.square(out, dtype=np.float64)))
    return 10 * np.log10(e_in / max(e_out, 1e-12))


class DelayEstimator:
    """The echo path's bulk delay (device buffers + the room), from the correlation of microphone and speaker.

    A short adaptive filter converges several times faster than a long one (measured on a PulseAudio echo path
    with 55 ms of delay: 20 dB after 1 s with 64 ms of taps behind a known delay, 5 dB with 300 ms of taps and
    none), so the loop shifts the reference by this delay and gives the canceller only the room's tail.
    Every `every` frames while the speaker plays, the last `window_s` are cross-correlated (FFT) over lags
    0..max_ms; a peak with normalized correlation above `min_corr`, seen twice within 2 ms, becomes the delay
    (and replaces a known one only when it is more than 5 ms away).
    """

    def __init__(self, rate: int = 16000, max_ms: float = 500.0, window_s: float = 1.5, every: int = 25,
                 min_corr: float = 0.4) -> None:
        self.rate, self.every, self.min_corr = rate, every, min_corr
        self.max_lag = int(rate * max_ms / 1000)
        self.n = int(rate * window_s)
        self.mic = np.zeros(self.n, dtype=np.float32)
        self.ref = np.zeros(self.n + self.max_lag, dtype=np.float32)
        self.frames = 0
        self.delay: int | None = None
        self._last: int | None = None
        self.corr = 0.0

    def feed(self, mic: np.ndarray, ref: np.ndarray) -> int | None:
        k = len(mic)
        self.mic[:-k] = self.mic[k:]
        self.mic[-k:] = mic
        self.ref[:-k] = self.ref[k:]
        self.ref[-k:] = ref
        self.frames += 1
        if self.frames % self.every == 0 and float(np.dot(self.ref[-self.n:], self.ref[-self.n:])) > self.n * 1e-5:
            self._estimate()
        return self.delay

    def _estimate(self) -> None:
        from scipy.signal import fftconvolve

        # c[lag] = sum_t mic[t] * ref[t - lag], lag = 0..max_lag: mic against the reference reversed
        c = fftconvolve(self.ref, self.mic[::-1], mode="valid")[::-1]  # len = max_lag + 1
        lag = int(np.argmax(np.abs(c)))
        seg = self.ref[self.max_lag - lag:self.max_lag - lag + self.n]
        norm = float(np.sqrt(np.dot(self.mic, self.mic) * np.dot(seg, seg))) + 1e-12
        self.corr = float(abs(c[lag])) / norm
        if self.corr < self.min_corr:
            self._last = None
            return
        # twice in a row, and a few samples of jitter must not move it: every move restarts the canceller, and
        # the filter's taps cover small shifts anyway
        steady = self._last is not None and abs(lag - self._last) <= self.rate // 500
        if steady and (self.delay is None or abs(lag - self.delay) > self.rate // 200):
            self.delay = lag
        self._last = lag


class EchoGate:
    """Tells Nexus's own voice (what the canceller left of it) from the user talking over it.

    The canceller needs seconds of speech to converge and never removes everything, and Silero hears speech at
    any level, so the leftover echo alone would read as the user. The gate learns how loud the leftover is
    relative to the speaker signal: per frame, the level after the canceller minus the loudest reference of the
    last `tail_ms` (the echo's delay), tracked as its 70th percentile (a quantile tracker, `step_db` per frame).
    A percentile rather than a mean, because the user's words before a turn starts, and the gaps between
    Nexus's words, are minorities that must not pull it up or down. While the speaker was active within the
    tail, a window is the user only when it is `margin_db` above that expected leftover. It starts at 0 dB (the
    echo as loud as the speaker), so the echo never passes for the user while the gate learns.
    """

    def __init__(self, tail_ms: float = 320.0, margin_db: float = 6.0, frame_ms: float = 20.0,
                 active_db: float = -55.0, quantile: float = 0.7, step_db: float = 1.0) -> None:
        self.window = np.zeros(max(1, int(tail_ms / frame_ms)))  # reference power per frame
        self.frame_ms = frame_ms
        self.span = len(self.window)  # how many of the last frames the echo may come from
        self.i = 0
        self.margin_db = margin_db
        self.active = 10 ** (active_db / 10)
        self.q, self.step = quantile, step_db
        self.residual_db = 0.0

    def aligned(self, tail_ms: float) -> None:
        """The reference now arrives aligned with its echo (the delay is compensated): only the last `tail_ms`
        of it can still be heard, so the gate compares against less of the past."""
        self.span = max(1, min(len(self.window), int(tail_ms / self.frame_ms)))

    def _peak(self) -> float:
        idx = (self.i - 1 - np.arange(self.span)) % len(self.window)
        return float(self.window[idx].max())

    def update(self, ref: np.ndarray, clean: np.ndarray, user_turn: bool) -> None:
        self.window[self.i % len(self.window)] = float(np.dot(ref, ref)) / max(1, ref.size)
        self.i += 1
        peak = self._peak()
        if user_turn or peak < self.active:
            return
        x = 10 * np.log10(float(np.dot(clean, clean)) / max(1, clean.size) + 1e-12) - 10 * np.log10(peak)
        self.residual_db += self.step * (self.q - float(x < self.residual_db))  # the q-quantile of x

    @property
    def ref_db(self) -> float:
        return 10 * float(np.log10(self._peak() + 1e-12))

    def is_echo(self, level_db: float) -> bool:
        """Could a window at `level_db` (after the canceller) be only Nexus's own voice?"""
        peak = self._peak()
        if peak < self.active:
            return False
        return level_db < 10 * np.log10(peak) + self.residual_db + self.margin_db
