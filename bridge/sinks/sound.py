"""`SoundOut`, the Sink for `--out sound[:device]`: it plays the `audio` passed with each frame
(the generated sound of bridge.sinks.voice's `MelVoice`, else the music) through a PyAudio
output stream, from a ring buffer its callback only copies from.

PyAudio, and bridge.sources.line_in whose PortAudio helpers (device lookup, quiet start-up,
rate fallback, clean-up) this shares with `LineIn`, are imported when the sink opens, not on
import: building the sink from an `--out` spec needs no sound library."""
from __future__ import annotations

import threading

import numpy as np

from bridge.sinks.base import Sink

# Hz when no rate is given: MelVoice's default out_rate (seed 000 played its sound at 48 kHz).
DEFAULT_RATE = 48_000
DEFAULT_TARGET_LATENCY_S = 0.1  # most audio SoundOut holds before dropping the oldest
CALLBACK_FRAMES = 512  # samples per PortAudio callback (seed 000's; 10.7 ms at 48 kHz)
FADE_SAMPLES = 96  # 2 ms at 48 kHz: the fades that hide underflows, restarts and overflow cuts


def find_output_device(pa, device: int | str | None) -> dict:
    """The output device for an index, a case-insensitive name substring, or None / "default"
    / "" (blank); DeviceError listing the outputs when there is none such."""
    from bridge.sources.line_in import find_device
    if isinstance(device, str) and not device.strip():
        device = None
    return find_device(pa, device, "output")


class SoundOut(Sink):
    """`--out sound[:device]`: plays the `audio` that comes with each frame (the generated
    sound of a sound model, else the music) on a sound card through PyAudio. The frame itself
    is ignored.

    `send` only appends to a ring buffer; the PortAudio callback copies out of it and returns,
    never waiting. Playback starts once half of `target_latency_s` is buffered. When the ring
    runs dry (the model stalled) the callback ramps from the last sample to silence over
    FADE_SAMPLES and counts it in `underflows`; play resumes, faded in, once half the target is
    buffered again. When more than `target_latency_s` piles up (the engine's clock runs ahead
    of the sound card's), the oldest audio is dropped down to half the target, with a short
    cross-fade at the cut, counted in `overflows`: the delay stays bounded. (Until the device
    starts, a second or more through ALSA -> PulseAudio, sends overflow too and are counted.)

    `device`: index, case-insensitive name substring, or None / "default".
    `rate`: the sample rate of the audio sent (the voice's out_rate; the factory passes
    audio_rate). A device that refuses it runs at its own default rate, converted here."""

    kind = "sound"

    def __init__(self, device: int | str | None = None, rate: int | None = None,
                 target_latency_s: float = DEFAULT_TARGET_LATENCY_S,
                 callback_frames: int = CALLBACK_FRAMES):
        super().__init__()
        if rate is not None and int(rate) <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        if not target_latency_s > 0:
            raise ValueError(f"target_latency_s must be positive, got {target_latency_s}")
        if int(callback_frames) <= 0:
            raise ValueError(f"callback_frames must be positive, got {callback_frames}")
        self.device = device
        self.rate = int(rate or DEFAULT_RATE)
        self.target_latency_s = float(target_latency_s)
        self.callback_frames = int(callback_frames)
        self.device_name = ""
        self.device_rate = self.rate
        self.underflows = 0  # times the ring ran dry while playing
        self.overflows = 0  # times the oldest audio was dropped to bound the delay
        self.dropped_samples = 0
        self.played_samples = 0
        self._resample = None
        self._lock = threading.Lock()
        self._ring = np.zeros(0, np.float32)
        self._read = 0  # absolute sample counters; buffered = _write - _read
        self._write = 0
        self._limit = 0
        self._start_level = 0
        self._playing = False
        self._last = 0.0  # last sample played, where an underflow's fade starts
        self._pa = None
        self._stream = None

    # -- sink ------------------------------------------------------------------------------
    def _open(self, width: int, height: int, fps: float) -> None:
        from bridge.sources.line_in import open_at_rate, open_or_release, portaudio
        from bridge.sources.resample import LinearResampler
        self._pa = portaudio()
        with open_or_release(f"audio output {self.device!r} at {self.rate} Hz", self._release):
            info = find_output_device(self._pa, self.device)
            self.device_name = info["name"]
            self._stream, self.device_rate = open_at_rate(
                lambda rate: self._open_stream(info, rate), self.rate, info)
        if self.device_rate != self.rate:
            self._resample = LinearResampler(self.rate, self.device_rate)
        self._limit = max(int(self.target_latency_s * self.device_rate), 4 * self.callback_frames)
        self._start_level = self._limit // 2
        self._ring = np.zeros(2 * self._limit + self.callback_frames, np.float32)
        self._stream.start_stream()

    def _open_stream(self, info: dict, rate: int):
        import pyaudio
        from bridge.sources.line_in import quiet_stderr
        with quiet_stderr():
            return self._pa.open(
                format=pyaudio.paFloat32, channels=1, rate=rate, output=True,
                output_device_index=info["index"], stream_callback=self._callback,
                frames_per_buffer=self.callback_frames, start=False)

    def _send(self, frame: np.ndarray, capture_time: float, audio: np.ndarray | None) -> None:
        if audio is not None and np.size(audio):
            self.write(audio)

    def _close(self) -> None:
        self._release()

    def _release(self) -> None:
        from bridge.sources.line_in import close_portaudio
        close_portaudio(self._stream, self._pa)
        self._stream = self._pa = None

    # -- ring buffer -----------------------------------------------------------------------
    @property
    def buffered_s(self) -> float:
        """Seconds of audio waiting to be played."""
        return (self._write - self._read) / self.device_rate

    @property
    def latency_s(self) -> float:
        """Buffered audio plus PortAudio's own output latency: sent -> heard."""
        device = float(self._stream.get_output_latency()) if self._stream is not None else 0.0
        return self.buffered_s + device

    def write(self, samples: np.ndarray) -> None:
        """Queue mono samples at `rate` for playing (what `send` does with a frame's audio)."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        samples = np.clip(np.nan_to_num(samples), -1.0, 1.0)
        if self._resample is not None:
            samples = self._resample(samples)
        if len(samples) > self._limit:  # more than the whole budget at once: keep the newest
            self.dropped_samples += len(samples) - self._limit
            samples = samples[-self._limit:]
        size = len(self._ring)
        with self._lock:
            start = self._write % size
            first = min(len(samples), size - start)
            self._ring[start:start + first] = samples[:first]
            self._ring[:len(samples) - first] = samples[first:]
            self._write += len(samples)
            if self._write - self._read > self._limit:
                self._drop_oldest()

    def _drop_oldest(self) -> None:
        """Skip ahead to half the target, cross-fading from where the reader is to where it
        lands, so the cut is a 2 ms blend instead of a step. Called with the lock held."""
        size = len(self._ring)
        landing = self._write - self._start_level
        fade = min(FADE_SAMPLES, self._start_level)
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        old = self._ring[(self._read + np.arange(fade)) % size]
        new_index = (landing + np.arange(fade)) % size
        self._ring[new_index] = old * (1.0 - ramp) + self._ring[new_index] * ramp
        self.dropped_samples += landing - self._read
        self.overflows += 1
        self._read = landing

    def _callback(self, in_data, frame_count, time_info, status_flags):
        import pyaudio
        out = np.zeros(frame_count, np.float32)
        with self._lock:
            buffered = self._write - self._read
            if not self._playing and buffered >= self._start_level:
                self._playing = True
                restart = True
            else:
                restart = False
            if self._playing:
                take = min(frame_count, buffered)
                size = len(self._ring)
                start = self._read % size
                first = min(take, size - start)
                out[:first] = self._ring[start:start + first]
                out[first:take] = self._ring[:take - first]
                self._read += take
                if restart:  # fade in: the first sample may be anywhere in its wave
                    fade = min(FADE_SAMPLES, take)
                    out[:fade] *= np.linspace(0.0, 1.0, fade, dtype=np.float32)
                if take < frame_count:  # ran dry: ramp from the last sample down to silence
                    last = out[take - 1] if take else self._last
                    fade = min(FADE_SAMPLES, frame_count - take)
                    out[take:take + fade] = last * np.linspace(1.0, 0.0, fade + 1, dtype=np.float32)[1:]
                    self._playing = False
                    self.underflows += 1
                self.played_samples += take
        self._last = float(out[-1])
        return out.tobytes(), pyaudio.paContinue
