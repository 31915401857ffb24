"""The system's microphone and speaker through sounddevice/PortAudio (`SoundDeviceAudio`), and the device list.

Callbacks run on PortAudio's thread and only copy samples between preallocated rings (audio_io.Ring): no numpy
allocation, no locks, so a slow model can never glitch the sound. A device that cannot run at 16 kHz is opened at
its own rate and converted by `StreamResampler` on the loop's thread, not in the callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from nexus_engine.voice.audio_io import (
    FRAME,
    IN_LATENCY_S,
    OUT_LATENCY_S,
    RATE,
    AudioBackend,
    AudioDeviceError,
    Ring,
    StreamResampler,
)

log = logging.getLogger("nexus.voice.audio")


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
