"""Audio file, silence and the factory, with real ffmpeg decoding and the real clock."""
from __future__ import annotations

import time

import numpy as np
import pytest

from bridge import clock
from bridge.errors import SourceError
from bridge.sources.audio import (AudioFile, AudioStream, LineIn, Silence, decode_audio,
                                  open_audio_source)
from bridge.sources.audio_base import rechunk
from bridge.sources.base import State
from tests.helpers.streams import AMEN, wait_for


@pytest.fixture
def corrupt_mp3(tmp_path):
    path = tmp_path / "broken song.mp3"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    return path


def test_rechunk_cuts_exact_blocks_and_keeps_every_sample():
    chunks = [np.arange(0, 5), np.arange(5, 6), np.arange(6, 23)]
    blocks = list(rechunk(chunks, 4))
    assert [b.size for b in blocks] == [4, 4, 4, 4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(blocks), np.arange(23))


def test_decode_audio_is_mono_float32_at_the_asked_rate():
    full = decode_audio(AMEN, 44_100)
    half = decode_audio(AMEN, 22_050)
    assert full.dtype == np.float32 and full.ndim == 1
    assert abs(full.size / 44_100 - 1.75) < 0.02  # the loop is 1.75 s long
    assert abs(half.size - full.size / 2) < 200
    assert np.sqrt(np.mean(full ** 2)) > 0.05


def test_audio_file_is_paced_in_real_time():
    with AudioFile(AMEN, loop=True) as src:
        t0 = clock.now()
        time.sleep(1.0)
        written, elapsed = src.ring.written, clock.now() - t0
        assert src.status.state is State.OK
    seconds = written / src.sample_rate
    assert 0.75 * elapsed <= seconds <= 1.25 * elapsed, (seconds, elapsed)
    assert src.status.state is State.CLOSED


def test_audio_file_content_matches_decode_audio_then_ends():
    expected = decode_audio(AMEN, 22_050)
    with AudioFile(AMEN, sample_rate=22_050, block=1024, loop=False) as src:
        assert wait_for(lambda: src.status.state is State.ENDED, timeout=5.0), src.status
        got, _, t = src.ring.read_since(0)
        assert abs(t - clock.now()) < 0.5  # capture times are live, on the one clock
        before = src.ring.written
        time.sleep(0.2)
        tail, _ = src.ring.latest(2048)
        assert src.ring.written > before and not tail.any()  # silence keeps time moving
    np.testing.assert_allclose(got[:expected.size], expected, atol=1e-6)


def test_audio_file_loops():
    with AudioFile(AMEN, sample_rate=8000, loop=True) as src:
        assert wait_for(lambda: src.ring.written > 2.2 * 1.75 * 8000, timeout=6.0)
        assert src.status.state is State.OK
        window, _ = src.ring.latest(4000)
        assert np.sqrt(np.mean(window ** 2)) > 0.02  # still sound on the second pass


def test_corrupt_file_is_one_line_source_error_with_path(corrupt_mp3):
    src = AudioFile(corrupt_mp3)
    with pytest.raises(SourceError) as err:
        src.open()
    message = str(err.value)
    assert str(corrupt_mp3) in message and "\n" not in message
    assert src.status.state is State.CLOSED
    src.close()  # idempotent after a failed open
    with pytest.raises(SourceError, match="broken song.mp3"):
        decode_audio(corrupt_mp3)


def test_silence_writes_zeros_at_the_real_rate():
    with Silence(sample_rate=16_000, block=256) as src:
        t0 = clock.now()
        time.sleep(0.5)
        written, elapsed = src.ring.written, clock.now() - t0
        window, _ = src.ring.latest(1000)
    assert 0.75 * elapsed <= written / 16_000 <= 1.25 * elapsed
    assert not window.any()


def test_factory_picks_the_kind_and_does_not_open(tmp_path):
    assert isinstance(open_audio_source("silence"), Silence)
    assert isinstance(open_audio_source(str(AMEN)), AudioFile)
    assert isinstance(open_audio_source("srt://127.0.0.1:9/live"), AudioStream)
    line = open_audio_source("3")
    assert isinstance(line, LineIn) and line.device == "3"
    assert isinstance(open_audio_source("default"), LineIn)
    src = open_audio_source(str(AMEN), sample_rate=16_000, block=128, loop=False)
    assert (src.sample_rate, src.block, src.loop, src.status.state) == (16_000, 128, False, State.CLOSED)
    with pytest.raises(SourceError, match="no such audio file"):
        open_audio_source(str(tmp_path / "missing.wav"))
