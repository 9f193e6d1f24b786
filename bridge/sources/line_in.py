"""`LineIn`: a sound card input through PyAudio (PortAudio), and `list_audio_devices`.

Also the PortAudio helpers that bridge.sinks.sound's `SoundOut` (a sound card output) shares:
`portaudio`, `quiet_stderr`, `find_device`, `open_at_rate`, `open_or_release`,
`close_portaudio`."""
from __future__ import annotations

import contextlib
import os
import sys

import numpy as np
import pyaudio

from bridge import clock
from bridge.errors import DeviceError
from bridge.sources.audio_base import DEFAULT_BLOCK, DEFAULT_SAMPLE_RATE, AudioSource
from bridge.sources.base import State
from bridge.sources.resample import LinearResampler


@contextlib.contextmanager
def quiet_stderr():
    """Hide the pages of ALSA/JACK probing noise PortAudio prints on Linux at start-up.

    It is C code writing to fd 2, so we redirect the descriptor, briefly, not sys.stderr."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def portaudio() -> pyaudio.PyAudio:
    """A PortAudio session, started without its probing noise; `terminate()` it when done."""
    with quiet_stderr():
        return pyaudio.PyAudio()


def _devices(pa: pyaudio.PyAudio) -> list[dict]:
    out = []
    for i in range(pa.get_device_count()):
        d = pa.get_device_info_by_index(i)
        out.append({
            "index": int(d["index"]),
            "name": str(d["name"]),
            "max_input_channels": int(d["maxInputChannels"]),
            "max_output_channels": int(d["maxOutputChannels"]),
            "default_sample_rate": float(d["defaultSampleRate"]),
        })
    return out


def list_audio_devices() -> list[dict]:
    """Every PortAudio device: index, name, max_input_channels, max_output_channels,
    default_sample_rate."""
    pa = portaudio()
    try:
        return _devices(pa)
    finally:
        pa.terminate()


DIRECTIONS = ("input", "output")


def find_device(pa: pyaudio.PyAudio, device: int | str | None, direction: str = "input") -> dict:
    """The input or output device (`direction`) for an index, a case-insensitive name (exact
    first, else substring), or None / "default". DeviceError naming `device` and listing the
    devices of that direction ("inputs: 3: USB Audio; ...") when there is none such."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    devices = _devices(pa)
    usable = [d for d in devices if d[f"max_{direction}_channels"] > 0]
    listed = f"{direction}s: " + ("; ".join(f"{d['index']}: {d['name']}" for d in usable) or "none")
    if device is None or (isinstance(device, str) and device.strip().lower() == "default"):
        default_info = (pa.get_default_input_device_info if direction == "input"
                        else pa.get_default_output_device_info)
        try:
            index = int(default_info()["index"])
        except (IOError, OSError):
            raise DeviceError(f"no default audio {direction} device; {listed}") from None
        return next(d for d in devices if d["index"] == index)
    if isinstance(device, int) or (isinstance(device, str) and device.strip().isdigit()):
        found = [d for d in usable if d["index"] == int(device)]
    else:
        wanted = device.strip().lower()
        exact = [d for d in usable if d["name"].lower() == wanted]
        found = exact or [d for d in usable if wanted in d["name"].lower()]
    if not found:
        raise DeviceError(f"no audio {direction} device {device!r}; {listed}")
    return found[0]


def find_input_device(pa: pyaudio.PyAudio, device: int | str | None) -> dict:
    """The input device for an index, a case-insensitive name substring, or None / "default"."""
    return find_device(pa, device, "input")


def open_at_rate(open_at, rate: int, info: dict, fall_back: bool = True):
    """`open_at(rate)`; where the device refuses that rate and `fall_back`, `open_at(the
    device's default rate)` (from `info`, a find_device dict). Returns (stream, the rate it
    opened at); when nothing opens, the last try's IOError / OSError / ValueError propagates."""
    rates = [int(rate)]
    if fall_back and int(info["default_sample_rate"]) != rates[0]:
        rates.append(int(info["default_sample_rate"]))
    for i, tried in enumerate(rates):
        try:
            return open_at(tried), tried
        except (IOError, OSError, ValueError):
            if i == len(rates) - 1:
                raise


@contextlib.contextmanager
def open_or_release(what: str, release):
    """Around the code that opens a stream: on any failure call `release()` (see
    close_portaudio), and turn a PortAudio error (IOError / OSError / ValueError) into a one-line
    DeviceError "cannot open {what}: {error}". A DeviceError passes through as it is."""
    try:
        yield
    except DeviceError:  # a subclass of OSError: ours already, pass it on unchanged
        release()
        raise
    except (IOError, OSError, ValueError) as exc:
        release()
        raise DeviceError(f"cannot open {what}: {' '.join(str(exc).split())}") from None


def close_portaudio(stream, pa: pyaudio.PyAudio | None) -> None:
    """Stop and close `stream`, then terminate `pa`; either may be None. Errors (a device that
    has gone away) are ignored: this runs on the way out, often after a failure."""
    if stream is not None:
        with contextlib.suppress(Exception):
            stream.stop_stream()
        with contextlib.suppress(Exception):
            stream.close()
    if pa is not None:
        with contextlib.suppress(Exception):
            pa.terminate()


class LineIn(AudioSource):
    """Live input. The PortAudio callback only copies (one channel, or the mean of the first
    two) into the ring and returns: nothing in it may block, or the driver drops audio.

    `device`: index, case-insensitive name substring, or None/"default".
    `channel`: 0-based channel to keep; None downmixes the first two channels.
    """

    kind = "line-in"

    def __init__(self, device: int | str | None = None, sample_rate: int = DEFAULT_SAMPLE_RATE,
                 block: int = DEFAULT_BLOCK, channel: int | None = None,
                 device_rate: int | None = None):
        super().__init__(sample_rate, block)
        self.device = device
        # The rate the device runs at. None: the analysis rate if the device takes it, else the
        # device's own default rate, converted to the analysis rate in the callback.
        self.device_rate = device_rate
        self._resample: LinearResampler | None = None
        self.channel = channel
        self.device_name = ""
        self.overflows = 0  # blocks the driver reported as overflowed (audio lost upstream)
        self._pa: pyaudio.PyAudio | None = None
        self._stream = None
        self._latency = 0.0
        self._channels = 1

    def describe(self) -> str:
        return f"audio input {self.device_name or self.device or 'default'}"

    def _start(self) -> None:
        self._pa = portaudio()
        what = f"audio input {self.device!r} at {self.sample_rate} Hz"
        with open_or_release(what, self._release):
            info = find_device(self._pa, self.device, "input")
            self.device_name = info["name"]
            available = max(1, info["max_input_channels"])
            if self.channel is not None and not 0 <= self.channel < available:
                raise DeviceError(f"channel {self.channel} out of range for {info['name']!r} "
                                  f"({available} input channels)")
            self._channels = self.channel + 1 if self.channel is not None else min(2, available)
            self._stream, _ = open_at_rate(lambda rate: self._open_stream(info, rate),
                                           self.device_rate or self.sample_rate, info,
                                           fall_back=not self.device_rate)
            # PortAudio's estimate of ADC -> callback delay; subtracted to date each block.
            self._latency = float(self._stream.get_input_latency())
        self._stream.start_stream()  # status turns OK with the first block, not before

    def _open_stream(self, info: dict, rate: int):
        self._resample = LinearResampler(rate, self.sample_rate) if rate != self.sample_rate else None
        with quiet_stderr():
            return self._pa.open(
                format=pyaudio.paFloat32, channels=self._channels, rate=rate, input=True,
                input_device_index=info["index"], stream_callback=self._callback,
                frames_per_buffer=max(64, round(self.block * rate / self.sample_rate)))

    def _callback(self, in_data, frame_count, time_info, status_flags):
        now = clock.now()
        samples = np.frombuffer(in_data, dtype=np.float32).reshape(-1, self._channels)
        if self.channel is not None:
            mono = samples[:, self.channel]
        else:
            mono = samples.mean(axis=1, dtype=np.float32)
        if self._resample is not None:
            mono = self._resample(mono)
        self._write(mono, now - self._latency)
        if self._status.state is State.STARTING:
            self._set(State.OK)
        if status_flags & pyaudio.paInputOverflow:
            self.overflows += 1
        return None, pyaudio.paContinue

    def _stop(self) -> None:
        self._release()

    def _release(self) -> None:
        close_portaudio(self._stream, self._pa)
        self._stream = self._pa = None
