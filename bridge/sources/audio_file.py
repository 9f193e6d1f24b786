"""`AudioFile`: any file ffmpeg reads, played into the ring in real time, looped or once."""
from __future__ import annotations

import os
from typing import Iterator

import av
import numpy as np

from bridge.errors import SourceError
from bridge.sources.audio_base import DEFAULT_BLOCK, DEFAULT_SAMPLE_RATE, AudioSource, Pacer, rechunk
from bridge.sources.base import State
from bridge.sources.decode import av_reason, mono_chunks, open_input


class AudioFile(AudioSource):
    """Decodes `path` on its own thread and writes it block by block at the real rate.

    At the end it loops (`loop=True`) or reports ENDED and keeps writing silence, so readers
    see the sound stop instead of a window frozen on the last beat.
    `open()` decodes the first chunk itself, so a missing or corrupt file fails there with
    a one-line SourceError naming the path and ffmpeg's reason.
    """

    kind = "file"

    def __init__(self, path: str | os.PathLike, sample_rate: int = DEFAULT_SAMPLE_RATE,
                 block: int = DEFAULT_BLOCK, loop: bool = True, channel: int | None = None):
        super().__init__(sample_rate, block)
        self.path = os.fspath(path)
        self.loop = loop
        self.channel = channel

    def describe(self) -> str:
        return self.path

    def _start(self) -> None:
        first_pass = self._decode_pass()  # raises SourceError here, in the caller's thread
        self._spawn(lambda: self._run(first_pass), "audio-file")

    def _decode_pass(self) -> Iterator[np.ndarray]:
        """One pass over the file, already primed: the first chunk is decoded before return."""
        container = open_input(self.path)
        chunks = mono_chunks(container, self.sample_rate, self.channel)
        try:
            first = next(chunks)
        except StopIteration:
            container.close()
            raise SourceError(f"cannot decode {self.path}: no audio could be decoded") from None
        except (av.FFmpegError, OSError, ValueError) as exc:
            container.close()
            raise SourceError(f"cannot decode {self.path}: {av_reason(exc)}") from None

        def rest() -> Iterator[np.ndarray]:
            try:
                yield first
                yield from chunks
            finally:
                container.close()
        return rest()

    def _passes(self, first_pass: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        yield from first_pass
        while self.loop and not self._stopping.is_set():
            yield from self._decode_pass()

    def _run(self, first_pass: Iterator[np.ndarray]) -> None:
        pacer = Pacer(self.sample_rate, self._stopping)
        self._set(State.OK)
        try:
            for block in rechunk(self._passes(first_pass), self.block):
                if not pacer.wait(block.size):
                    return
                self._write(block)
        except (SourceError, av.FFmpegError, OSError, ValueError) as exc:
            self._set(State.LOST, f"{self.path}: {av_reason(exc)}")
        else:
            self._set(State.ENDED, f"end of {self.path}")
        zeros = np.zeros(self.block, dtype=np.float32)
        while pacer.wait(self.block):
            self._write(zeros)
