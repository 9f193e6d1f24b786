"""`AudioStream`: audio from a URL (http/Icecast, rtsp, rtp/udp, srt, rtmp: whatever ffmpeg
opens), reconnecting with back-off, silence while it is down."""
from __future__ import annotations

import av
import numpy as np

from bridge import clock
from bridge.errors import SourceError
from bridge.sources.audio_base import (DEFAULT_BLOCK, DEFAULT_SAMPLE_RATE, STALE_AFTER_S, AudioSource,
                                       Pacer, rechunk)
from bridge.sources.base import State, Status
from bridge.sources.decode import (av_reason, ffmpeg_command_available, ffmpeg_command_chunks,
                                   mono_chunks, open_input)

BACKOFF_FIRST_S = 0.5
# At most one try a second: a stream that comes back is heard within 2 s (what a show needs),
# and one connection a second is no load on any server.
BACKOFF_MAX_S = 1.0
# Silence starts once no audio has arrived for this long: longer than network jitter,
# short enough that the visuals never look frozen.
GAP_BEFORE_SILENCE_S = 0.25


class AudioStream(AudioSource):
    """Reads `url` on one thread; a second thread feeds silence at the real rate whenever
    audio stops arriving (down, reconnecting, stalled), so readers always see time pass.

    Status: STARTING until the first audio, OK while it flows, RECONNECTING (with ffmpeg's
    reason) between attempts. Back-off doubles from 0.5 s to 1 s and resets after audio
    flowed again. `timeout_s` bounds every socket open and read (PyAV's `timeout=`).
    `options` go to ffmpeg as-is (e.g. {"rtsp_transport": "tcp"}).
    A stream that arrives faster than real time (an http file) is paced like a file.
    """

    kind = "stream"

    def __init__(self, url: str, sample_rate: int = DEFAULT_SAMPLE_RATE, block: int = DEFAULT_BLOCK,
                 channel: int | None = None, timeout_s: float = 3.0,
                 options: dict[str, str] | None = None):
        super().__init__(sample_rate, block)
        self.url = url
        self.channel = channel
        self.timeout_s = timeout_s
        # ffmpeg's default probe waits for seconds of a live stream before the first sample; an
        # audio stream's format shows in its first packets, so probe briefly (a reconnect was
        # heard 2.1 s after the server came back with the defaults, 0.6 s with these).
        self.options = {"probesize": "32768", "analyzeduration": "200000", **(options or {})}
        self.reconnects = 0
        self._last_audio = clock.now()
        self._use_ffmpeg_command = False

    def describe(self) -> str:
        return self.url

    @property
    def status(self) -> Status:
        # The silence feeder keeps the ring moving, so staleness is judged on real audio.
        st = super().status
        idle = clock.now() - self._last_audio
        if st.state is State.OK and idle > STALE_AFTER_S:
            return Status(State.LOST, f"no audio for {idle:.1f} s from {self.url}")
        return st

    def _start(self) -> None:
        self._last_audio = clock.now()
        self._spawn(self._read_loop, "audio-stream")
        self._spawn(self._fill_silence, "audio-stream-silence")

    def _read_loop(self) -> None:
        backoff = BACKOFF_FIRST_S
        while not self._stopping.is_set():
            got_audio, reason = self._read_once()
            if self._stopping.is_set():
                return
            if got_audio:
                backoff = BACKOFF_FIRST_S
            self.reconnects += 1
            self._set(State.RECONNECTING, f"{reason}; retry in {backoff:g} s")
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _read_once(self) -> tuple[bool, str]:
        """One connection, read until it fails: (whether audio flowed, why it stopped)."""
        got_audio = False
        container = None
        try:
            if self._use_ffmpeg_command:
                chunks = ffmpeg_command_chunks(self.url, self.sample_rate, self.timeout_s, self._stopping)
            else:
                container = open_input(self.url, timeout=(self.timeout_s, self.timeout_s),
                                       options=self.options)
                chunks = mono_chunks(container, self.sample_rate, self.channel)
            pacer = Pacer(self.sample_rate, self._stopping)
            for block in rechunk(chunks, self.block):
                if not pacer.wait(block.size):
                    return got_audio, "closed"
                self._last_audio = clock.now()
                self._write(block)
                if not got_audio:
                    got_audio = True
                    self._set(State.OK)
            return got_audio, f"{self.url}: stream ended"
        except SourceError as exc:
            if "Protocol not found" in str(exc) and ffmpeg_command_available():
                # PyAV's bundled ffmpeg lacks some protocols (SRT): read through the system's.
                self._use_ffmpeg_command = True
            return got_audio, str(exc)
        except (av.FFmpegError, OSError, ValueError) as exc:
            return got_audio, f"{self.url}: {av_reason(exc)}"
        finally:
            if container is not None:
                container.close()

    def _fill_silence(self) -> None:
        zeros = np.zeros(self.block, dtype=np.float32)
        pacer = Pacer(self.sample_rate, self._stopping)
        period = self.block / self.sample_rate
        while not self._stopping.wait(period):
            if clock.now() - self._last_audio < GAP_BEFORE_SILENCE_S:
                pacer.restart()  # audio is flowing; silence resumes on its own schedule later
                continue
            while pacer.wait(self.block) and clock.now() - self._last_audio >= GAP_BEFORE_SILENCE_S:
                self._write(zeros)
            pacer.restart()
