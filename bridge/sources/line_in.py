"""`LineIn`: a sound card input through PyAudio (PortAudio), and `list_audio_devices`.

Also the PortAudio helpers that bridge.sinks.sound's `SoundOut` (a sound card output) shares:
`portaudio`, `quiet_stderr`, `find_device`, `open_at_rate`, `open_or_release`,
`close_portaudio`."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading

import numpy as np
import pyaudio

from bridge import clock
from bridge.errors import DeviceError
from bridge.sources.audio_base import DEFAULT_BLOCK, DEFAULT_SAMPLE_RATE, AudioSource, Pacer
from bridge.sources.base import State
from bridge.sources.resample import LinearResampler

log = logging.getLogger(__name__)


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


# PortAudio says nothing when a device is unplugged or its server dies: the callbacks just stop.
# So a watchdog looks at when the last one came. Silence for this long (or a stream PortAudio
# itself reports inactive) means the device is gone.
STALL_AFTER_S = 0.5
RETRY_EVERY_S = 0.5  # a device that comes back is found within this (plus its own start-up)
FIRST_CALLBACK_WAIT_S = 3.0  # a reopened stream that stays silent this long is tried again
WATCH_EVERY_S = 0.05
RELEASE_WAIT_S = 0.5  # see LineIn._release


class LineIn(AudioSource):
    """Live input. The PortAudio callback only copies (one channel, or the mean of the first
    two) into the ring and returns: nothing in it may block, or the driver drops audio.

    `device`: index, case-insensitive name substring, or None/"default".
    `channel`: 0-based channel to keep; None downmixes the first two channels.

    A watchdog thread notices a device that went away (no callback for `STALL_AFTER_S`, or the
    stream inactive): the status turns RECONNECTING with the reason, silence is written at the
    real rate (the analysis sees time pass: the picture calms down instead of freezing on the
    last loud moment), and every `RETRY_EVERY_S` PortAudio is restarted (it only finds devices
    when it starts) and the same device opened again, by the name it had. `reopens` counts the
    times it came back, `lost_for_s` how long the last outage was. All PortAudio calls after the
    first open happen on the watchdog thread, never in the callback.
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
        self.reopens = 0
        self.lost_for_s = 0.0
        self.opened_at: float | None = None  # clock time the stream was last (re)opened
        self._last_callback: float | None = None
        self._stream_lock = threading.Lock()  # the watchdog and close() both release streams

    def describe(self) -> str:
        return f"audio input {self.device_name or self.device or 'default'}"

    def _start(self) -> None:
        self._open_device(self.device)  # the first open fails loudly: a wrong device stops the start
        self._spawn(self._watch, "line-in-watchdog")

    def _open_device(self, device) -> None:
        self._pa = portaudio()
        what = f"audio input {device!r} at {self.sample_rate} Hz"
        with open_or_release(what, self._release):
            info = find_device(self._pa, device, "input")
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
        self._last_callback = now
        if self._status.state is State.STARTING:
            self._set(State.OK)
        if status_flags & pyaudio.paInputOverflow:
            self.overflows += 1
        return None, pyaudio.paContinue

    def _stop(self) -> None:
        with self._stream_lock:
            self._release()

    def _release(self) -> None:
        """Let go of the stream and PortAudio, waiting at most RELEASE_WAIT_S: with its sound
        server gone, PortAudio's stop can wait for it for good (seen once in CI: the watchdog
        stuck there, so no silence was written and close() waited on it). Past the wait, the
        release finishes, or not, on its own thread."""
        stream, pa = self._stream, self._pa
        self._stream = self._pa = None
        if stream is None and pa is None:
            return
        released = threading.Event()

        def release():
            close_portaudio(stream, pa)
            released.set()
        threading.Thread(target=release, name="vjbridge-line-in-release", daemon=True).start()
        if not released.wait(RELEASE_WAIT_S):
            log.warning("audio input %r: PortAudio did not let go of the stream within %g s (its sound "
                        "server gone?); left to finish on its own", self.device_name or self.device,
                        RELEASE_WAIT_S)

    # --- the watchdog: loss, silence, return ------------------------------------------------------
    def _watch(self) -> None:
        opened_at = clock.now()
        limit = max(STALL_AFTER_S, 8 * self.block / self.sample_rate)
        while not self._stopping.wait(WATCH_EVERY_S):
            last = self._last_callback
            heard = last is not None and last >= opened_at  # from the stream open now
            quiet = clock.now() - (last if heard else opened_at)
            active = self._stream_ok()
            # The first callback after an open may take a while (FIRST_CALLBACK_WAIT_S).
            if active and (quiet <= limit if heard else quiet < FIRST_CALLBACK_WAIT_S):
                continue
            why = "the stream stopped" if not active else f"no audio callbacks for {quiet:.1f} s"
            opened_at = self._recover(why)
            if opened_at is None:
                return

    def _stream_ok(self) -> bool:
        """The stream is open and PortAudio says it runs (a vanished device may refuse even that)."""
        try:
            return self._stream is not None and self._stream.is_active()
        except Exception:
            return False

    def _recover(self, why: str) -> float | None:
        """The device is gone: play silence and reopen it until it is back. Returns when a new
        stream is open (its open time) or None when the source is closing."""
        lost_at = clock.now()
        name = self.device_name or self.device
        log.warning("audio input %r lost (%s); playing silence and reopening every %g s",
                    name, why, RETRY_EVERY_S)
        self._set(State.RECONNECTING, f"audio input {name!r}: {why}; reopening, playing silence")
        with self._stream_lock:
            if self._stopping.is_set():
                return None
            self._release()
        pacer = Pacer(self.sample_rate, self._stopping)
        silence = np.zeros(self.block, dtype=np.float32)
        next_try = lost_at + RETRY_EVERY_S
        while pacer.wait(self.block):
            self._write(silence)
            now = clock.now()
            if now < next_try:
                continue
            next_try = now + RETRY_EVERY_S
            try:
                with self._stream_lock:
                    if self._stopping.is_set():
                        return None
                    # By the name it had (indices move when devices come and go), else as asked.
                    self._open_device(name)
            except DeviceError as e:
                self._set(State.RECONNECTING, f"audio input {name!r}: {why}; {e}; retrying")
                continue
            opened = self.opened_at = clock.now()
            # Silence goes on until the first callback, so the ring never stands still.
            while not self._stopping.is_set() and (self._last_callback is None or self._last_callback < opened):
                if clock.now() - opened > FIRST_CALLBACK_WAIT_S or not self._stream_ok():
                    break
                if pacer.wait(self.block):
                    self._write(silence)
            if self._stopping.is_set():
                return None
            if self._last_callback is not None and self._last_callback >= opened:
                self.reopens += 1
                self.lost_for_s = clock.now() - lost_at
                self._set(State.OK)
                log.warning("audio input %r is back after %.1f s", self.device_name, self.lost_for_s)
                return opened
            with self._stream_lock:  # opened but silent: not really back, try again
                self._release()
        return None
