"""`MelVoice` turns a sound model's mel spectrogram into continuous audio, one engine tick at a
time (bridge.engine); bridge.sinks.sound's `SoundOut` plays it.

How a tick's mel becomes sound (seed 000, "YouTube Mirror", ran librosa's mel_to_audio with
fast Griffin-Lim, 5 iterations, 5 mel frames, n_fft 1,024, hop 512, 2,048 samples per call at
48 kHz; those numbers are the defaults below):

1. dB -> mel power (10^(dB/10), ref 1.0 as bridge.analysis); NaN/inf count as silence.
2. mel power -> linear power per STFT bin by a non-negative least-squares-ish inverse of the
   filterbank the mels were made with (pinv + clamp by default; "nnls" adds projected-gradient
   steps; see MelInverse for the measured errors), carried to the output's STFT bins by
   interpolation in frequency, then the square root. Where in Hz the mel bands land
   (`mel_scale`: "analysis" or "seed") is told in bridge.sinks.mel_inverse.
3. Fast Griffin-Lim (Perraudin et al. 2013, momentum 0.99 as librosa) on a block of
   `block_samples` (more when a tick needs more), vectorised in torch (torch.fft on all frames
   at once, overlap-add by index_add).
4. The block is Hann-windowed and overlap-added into a pending buffer that starts at the next
   sample to be played; the first `n_samples` are divided by the summed windows (so any hop
   between blocks keeps the gain constant) and handed out. The rest waits for the next block.
5. A slow peak limiter and a soft clip keep the output within [-1, 1].

Phase of a new block ("continue", the default, or "random" as the seed did): "continue" reads
the audio already made (the played history plus the previous block's pending tail), takes the
phase of its last full STFT frame and each bin's instantaneous frequency (from the phase change
over one sample), and extrapolates that phase to the new block's frames; bins with no energy
there start from a random phase. Griffin-Lim then refines from that start while holding the
samples that are already fixed (`anchor`), so the new block continues the old one's waves
instead of cross-fading against unrelated ones. Measured on four real recordings (see
bridge.sinks.voice_measure): with "random" the joins dip 2-4 dB below the audio around them
(waves of unrelated phase partly cancel in the cross-fade); with "continue" they stay within
0.7 dB.
"""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from bridge.analysis.spectral import hann_window, mel_filterbank
from bridge.errors import InputMismatch
from bridge.sinks.mel_inverse import INVERSES, MEL_SCALES, MelInverse, analysis_to_output_bins

DEFAULT_OUT_RATE = 48_000  # seed 000 played its sound at 48 kHz
GRIFFIN_LIM_ITERATIONS = 5  # seed 000
BLOCK_SAMPLES = 2_048  # seed 000: samples made per mel_to_audio call
MEL_FRAMES_PER_BLOCK = 5  # seed 000: 5 mel frames -> (5 - 1) · 512 = 2,048 samples
GRIFFIN_LIM_MOMENTUM = 0.99  # librosa's default for fast Griffin-Lim
# A block overlaps the next by at least this share of its length: the summed Hann windows then
# stay above 2·sin²(π/8) ≈ 0.29 everywhere, so normalising by them never divides by ~0.
MIN_OVERLAP_SHARE = 0.25
# Below this summed window, samples are scaled down instead of normalised: only the very first
# block's head lies there, and it fades in over a few ms instead of starting with a step.
WINDOW_SUM_FLOOR = 0.05
SILENCE_POWER_DB = -100.0  # power_to_db's floor (amin 1e-10): what NaN and -inf turn into
LOUDEST_POWER_DB = 120.0  # anything louder is clipped here before 10^(dB/10)
# "continue" phase: bins of the audio already made that are this far below its loudest bin
# (-80 dB) hold no phase worth continuing (silence, rounding noise): they start at random.
WEAK_BIN_SHARE = 1e-4
PHASE_MODES = ("continue", "random")


@dataclass
class VoiceConfig:
    out_rate: int = DEFAULT_OUT_RATE  # Hz of the audio made
    analysis_rate: int = 44_100  # Hz of the analysis the model's mels came from
    n_mels: int = 128
    n_fft: int = 1_024  # synthesis STFT, at out_rate (seed 000: the analysis numbers)
    hop: int = 512
    block_samples: int = BLOCK_SAMPLES  # samples per Griffin-Lim block (more if a tick needs)
    mel_frames: int = MEL_FRAMES_PER_BLOCK  # the centre frames of each mel that are voiced
    iterations: int = GRIFFIN_LIM_ITERATIONS
    momentum: float = GRIFFIN_LIM_MOMENTUM
    phase: str = "continue"  # PHASE_MODES
    anchor: bool = True  # "continue" only: also hold Griffin-Lim to the audio already made
    inverse: str = "pinv"  # INVERSES, see MelInverse
    nnls_steps: int = 10
    mel_scale: str = "analysis"  # MEL_SCALES, see bridge.sinks.mel_inverse
    gain: float = 1.0  # linear gain before the limiter (1: the analysed level)
    ceiling: float = 0.9  # the limiter keeps peaks at or below this; soft clip above
    attack_s: float = 0.005  # the limiter's gain falls at most full scale in this time
    release_s: float = 0.5  # limiter gain recovers (63 %) over this time
    silence_db: float = -80.0  # blocks whose loudest mel bin is below this are not synthesised
    seed: int = 0  # random phases

    def __post_init__(self) -> None:
        for name in ("out_rate", "analysis_rate", "n_mels", "n_fft", "hop", "block_samples",
                     "mel_frames"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if self.hop > self.n_fft:
            raise ValueError(f"hop ({self.hop}) must not exceed n_fft ({self.n_fft})")
        if self.block_samples < self.n_fft:
            raise ValueError(f"block_samples ({self.block_samples}) must be at least n_fft ({self.n_fft})")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.phase not in PHASE_MODES:
            raise ValueError(f"phase must be one of {PHASE_MODES}, got {self.phase!r}")
        if self.inverse not in INVERSES:
            raise ValueError(f"inverse must be one of {INVERSES}, got {self.inverse!r}")
        if self.nnls_steps < 0:
            raise ValueError(f"nnls_steps must be >= 0, got {self.nnls_steps}")
        if self.mel_scale not in MEL_SCALES:
            raise ValueError(f"mel_scale must be one of {MEL_SCALES}, got {self.mel_scale!r}")
        if not self.gain >= 0.0 or not 0.0 < self.ceiling <= 1.0:
            raise ValueError(f"gain must be >= 0 and ceiling in (0, 1], got {self.gain}, {self.ceiling}")
        if not self.attack_s > 0.0 or not self.release_s > 0.0:
            raise ValueError(f"attack_s and release_s must be positive, got {self.attack_s}, {self.release_s}")


@contextlib.contextmanager
def one_torch_thread():
    """Run the voice's torch work on one intra-op thread, then restore the setting.

    Its tensors are tiny (5 frames of 1,024 samples): threads cannot help, and when the cores
    are busy (a model on the CPU, other processes) the thread pool's spin-waits can cost far
    more than the work: a (5, 1,024) rfft measured 11.5 ms on 2 threads of a loaded 2-core
    VM against 10 µs on 1. The setting is process-wide, so it is held only while we run."""
    previous = torch.get_num_threads()
    if previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --- the voice -----------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _ola_window(length: int) -> np.ndarray:
    return hann_window(length)


def _soft_clip(x: np.ndarray, knee: float) -> np.ndarray:
    """Identity up to |x| = knee, then a tanh shoulder that approaches 1: never outside (-1, 1),
    continuous in value and slope, so a rare overshoot rounds off instead of clicking."""
    if knee >= 1.0:
        return np.clip(x, -1.0, 1.0)
    over = np.abs(x) - knee
    if not (over > 0).any():
        return x
    shaped = knee + (1.0 - knee) * np.tanh(np.maximum(over, 0.0) / (1.0 - knee))
    return np.where(over > 0, np.sign(x) * shaped, x).astype(np.float32)


class MelVoice:
    """Streams audio from one mel spectrogram (dB) per call; see the module docstring.

        voice = MelVoice.for_model(model)             # out_rate 48 kHz by default
        audio = voice.render(mel_db, n_samples)       # (n_samples,) float32 in [-1, 1]

    Consecutive calls join seamlessly: each call's block is cross-faded into what is still
    pending from the previous one. `joins` lists, for the calls so far (up to 10,000), where in
    the output stream each cross-fade starts and how long it is (used by `measure_voice`)."""

    def __init__(self, config: VoiceConfig | None = None):
        self.config = c = config or VoiceConfig()
        self.out_rate = int(c.out_rate)
        with one_torch_thread():
            self.inverse = MelInverse(mel_filterbank(c.analysis_rate, c.n_fft, c.n_mels),
                                      analysis_to_output_bins(c), c.inverse, c.nnls_steps)
        self._stft_window = torch.hann_window(c.n_fft, periodic=True)
        self._np_window = hann_window(c.n_fft).astype(np.float64)
        self._rng = np.random.default_rng(c.seed)
        self._history_len = c.n_fft + 1  # enough to take one full STFT frame + 1 sample back
        self._layouts: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.reset()

    @classmethod
    def for_model(cls, model, out_rate: int | None = None, **options) -> "MelVoice":
        """The voice for a sound model: its mel settings from `model.sound_analysis()`."""
        return cls.for_analysis(model.sound_analysis(), out_rate=int(out_rate or DEFAULT_OUT_RATE),
                                **options)

    @classmethod
    def for_analysis(cls, analysis, **options) -> "MelVoice":
        """The voice for mels made by `analysis` (an AnalysisConfig); `options` are the other
        VoiceConfig fields."""
        return cls(VoiceConfig(analysis_rate=analysis.sample_rate, n_mels=analysis.n_mels,
                               n_fft=analysis.n_fft, hop=analysis.hop, **options))

    def reset(self) -> None:
        """Forget everything made so far (the next call starts from silence)."""
        self._acc = np.zeros(0, np.float32)  # Σ window · block, from the next output sample on
        self._wsum = np.zeros(0, np.float32)  # Σ window
        self._pending = 0  # samples of _acc that blocks already cover
        self._history = np.zeros(self._history_len, np.float32)  # last samples handed out
        self._limiter_gain = 1.0
        self.position = 0  # samples handed out so far
        self.joins: list[tuple[int, int]] = []  # (output sample where a block starts, overlap)

    # -- per call --------------------------------------------------------------------------
    def render(self, mel_db: np.ndarray, n_samples: int) -> np.ndarray:
        """Exactly `n_samples` of mono float32 audio at `out_rate`, within [-1, 1]."""
        c = self.config
        mel_db = np.asarray(mel_db)
        if mel_db.ndim != 2 or mel_db.shape[0] != c.n_mels or mel_db.shape[1] < 1:
            raise InputMismatch(
                f"MelVoice.render: mel_db must be ({c.n_mels}, frames), got {mel_db.shape}")
        n = int(n_samples)
        if n < 0:
            raise InputMismatch(f"MelVoice.render: n_samples must be >= 0, got {n_samples}")
        if n == 0:
            return np.zeros(0, np.float32)
        length = self._block_length(n)
        with one_torch_thread():
            block = self._synthesise(mel_db, length)
        out = self._overlap_add(block, n)
        return self._limit(out)

    def _block_length(self, n: int) -> int:
        """Samples in this call's block: the seed's 2,048, or enough to overlap the next block by
        MIN_OVERLAP_SHARE when a tick needs more; a whole number of hops (STFT frames)."""
        hop = self.config.hop
        wanted = max(self.config.block_samples, math.ceil(n / (1.0 - MIN_OVERLAP_SHARE)))
        return int(math.ceil(wanted / hop) * hop)

    def _mel_power(self, mel_db: np.ndarray, frames: int) -> np.ndarray:
        """(n_mels, frames) mel power: the centre `mel_frames` of the input, stretched (linear
        interpolation in dB) to the block's STFT frames."""
        c = self.config
        db = np.nan_to_num(mel_db.astype(np.float32), nan=SILENCE_POWER_DB,
                           posinf=SILENCE_POWER_DB, neginf=SILENCE_POWER_DB)
        db = np.clip(db, SILENCE_POWER_DB, LOUDEST_POWER_DB)
        used = min(c.mel_frames, db.shape[1])
        first = (db.shape[1] - used) // 2
        db = db[:, first:first + used]
        if used != frames:
            where = np.linspace(0.0, used - 1.0, frames)
            left = np.floor(where).astype(int)
            right = np.minimum(left + 1, used - 1)
            frac = (where - left).astype(np.float32)
            db = db[:, left] * (1.0 - frac) + db[:, right] * frac
        return np.power(10.0, db / 10.0, dtype=np.float32)

    def _synthesise(self, mel_db: np.ndarray, length: int) -> np.ndarray:
        """One block of `length` samples from the mel, by fast Griffin-Lim. Silence is zeros."""
        c = self.config
        frames = 1 + length // c.hop  # frame j is centred on block sample j·hop, 0 .. length
        mel_power = self._mel_power(mel_db, frames)
        if 10.0 * np.log10(max(float(mel_power.max()), 1e-30)) < c.silence_db:
            return np.zeros(length, np.float32)
        magnitude = torch.sqrt(self.inverse(torch.from_numpy(mel_power)))  # (bins, frames)
        if c.phase == "continue":
            angles = self._continued_phase(frames)
            context = self._context(length) if c.anchor else None
        else:
            angles = np.exp(2j * np.pi * self._rng.random(magnitude.shape)).astype(np.complex64)
            context = None
        return self._griffin_lim(magnitude, torch.from_numpy(angles), length, context).numpy()

    def _continued_phase(self, frames: int) -> np.ndarray:
        """Start phases (bins, frames) that continue the audio already made.

        The known audio runs from `history_len` samples before the block's start to the end of
        the pending tail. Its last full STFT frame gives each bin's phase, and the same frame one
        sample earlier gives the bin's instantaneous frequency (the phase change over one sample
        is below π for every frequency up to Nyquist, so it is unambiguous). Frame j of the new
        block (centred on sample j·hop, window starting at j·hop - n_fft/2) then starts from
        phase + ω · (its start - the known frame's start)."""
        c = self.config
        known = np.concatenate([self._history, self._tentative_tail()]).astype(np.float64)
        end = len(known)  # block sample 0 sits at index history_len
        start = end - c.n_fft  # the last full frame
        last_two = np.stack([known[start - 1:end - 1], known[start:end]])  # one sample apart
        spectra = np.fft.rfft(last_two * self._np_window, axis=-1)
        omega = np.angle(spectra[1] * np.conj(spectra[0]))  # radians per sample, (bins,)
        level = np.abs(spectra[1])
        weak = level <= WEAK_BIN_SHARE * level.max() + 1e-12
        # Nothing to continue in weak bins: a random phase, advancing at the bin's own frequency.
        omega[weak] = 2.0 * np.pi * np.nonzero(weak)[0] / c.n_fft
        phase = np.angle(spectra[1])
        phase[weak] = 2.0 * np.pi * self._rng.random(int(weak.sum()))
        frame_starts = np.arange(frames) * c.hop - c.n_fft // 2 + self._history_len  # in `known`
        advance = omega[:, None] * (frame_starts - start)[None, :]
        return np.exp(1j * (phase[:, None] + advance)).astype(np.complex64)

    def _context(self, length: int):
        """What is already fixed around the new block: the played samples just before it (the
        first frame's left half) and the pending tail with its summed window, which the new
        block will be cross-faded into."""
        half = self.config.n_fft // 2
        overlap = min(self._pending, length)
        before = torch.from_numpy(self._history[-half:].copy())
        tail = torch.from_numpy(self._acc[:overlap].copy())  # Σ window · earlier blocks
        tail_weight = torch.from_numpy(self._wsum[:overlap].copy())
        new_weight = torch.from_numpy(_ola_window(length)[:overlap].copy())
        return before, tail, tail_weight, new_weight

    def _griffin_lim(self, magnitude: torch.Tensor, angles: torch.Tensor, length: int,
                     context=None) -> torch.Tensor:
        """Fast Griffin-Lim (Perraudin et al. 2013, as librosa.griffinlim): `iterations` rounds
        of inverse STFT -> STFT with momentum, then a last inverse. (bins, frames) -> (length,).

        The signal iterated on spans the frames' full windows, n_fft/2 before the block to
        n_fft/2 after it, so the edge frames see signal instead of zero padding (with zero
        padding, as librosa's center=True, Griffin-Lim piles energy onto a short block's edges:
        a steady tone's 2,048-sample block measured 0.11 to 0.47 in 128-sample RMS). With
        `context` ("continue"), before each STFT the part of that signal that is already fixed
        is made what the listener will hear: the played samples before the block, and in the
        overlap the cross-fade with the pending tail. Phases then settle on what joins the
        audio already made."""
        c = self.config
        frames = magnitude.shape[1]
        flat_index, inverse_envelope = self._frame_layout(frames)  # (frames · n_fft,), (span,)
        window = self._stft_window
        span = inverse_envelope.shape[0]

        def inverse(spectrum: torch.Tensor) -> torch.Tensor:
            pieces = torch.fft.irfft(spectrum.T, n=c.n_fft) * window  # (frames, n_fft)
            signal = torch.zeros(span).index_add_(0, flat_index, pieces.reshape(-1))
            return signal * inverse_envelope

        half = c.n_fft // 2
        if context is not None:
            before, tail, tail_weight, new_weight = context
            overlap = tail.shape[0]
            fade_sum = torch.clamp(tail_weight + new_weight, min=WINDOW_SUM_FLOOR)

        accelerate = c.momentum / (1.0 + c.momentum)
        previous = torch.zeros_like(angles)
        for _ in range(c.iterations):
            signal = inverse(magnitude * angles)
            if context is not None:
                signal[:half] = before
                heard = (tail + signal[half:half + overlap] * new_weight) / fade_sum
                signal[half:half + overlap] = heard
            rebuilt = torch.fft.rfft(signal.unfold(0, c.n_fft, c.hop) * window).T  # (bins, frames)
            angles = torch.sgn(rebuilt - accelerate * previous)  # z / |z|
            previous = rebuilt
        return inverse(magnitude * angles)[half:half + length]

    def _frame_layout(self, frames: int):
        """Sample indices of the frames in the iterated signal, flat, and 1 / the summed squared
        windows that normalise the overlap-add (floored where only a window's tip reaches)."""
        if frames not in self._layouts:
            c = self.config
            index = torch.arange(frames)[:, None] * c.hop + torch.arange(c.n_fft)[None, :]
            span = (frames - 1) * c.hop + c.n_fft
            envelope = torch.zeros(span).index_add_(
                0, index.reshape(-1), (self._stft_window ** 2).repeat(frames))
            self._layouts[frames] = (index.reshape(-1),
                                     1.0 / torch.clamp(envelope, min=1e-3 * float(envelope.max())))
        return self._layouts[frames]

    # -- output buffer ---------------------------------------------------------------------
    def _tentative_tail(self) -> np.ndarray:
        """What the pending samples sound like so far (before the next block joins them)."""
        p = self._pending
        return self._acc[:p] / np.maximum(self._wsum[:p], 1e-12)

    def _overlap_add(self, block: np.ndarray, n: int) -> np.ndarray:
        length = len(block)
        span = max(length, self._pending)
        if len(self._acc) < span:
            self._acc = np.concatenate([self._acc, np.zeros(span - len(self._acc), np.float32)])
            self._wsum = np.concatenate([self._wsum, np.zeros(span - len(self._wsum), np.float32)])
        if len(self.joins) < 10_000:
            self.joins.append((self.position, min(self._pending, length)))
        window = _ola_window(length)
        self._acc[:length] += block * window
        self._wsum[:length] += window
        out = self._acc[:n] / np.maximum(self._wsum[:n], WINDOW_SUM_FLOOR)
        if not np.isfinite(out).all():  # cannot happen with clipped dB; never let it out
            self._acc[:] = 0.0
            out = np.zeros(n, np.float32)
        # Shift the pending part to the front (a few thousand samples: cheaper than a ring index).
        self._acc[:span - n] = self._acc[n:span]
        self._acc[span - n:] = 0.0
        self._wsum[:span - n] = self._wsum[n:span]
        self._wsum[span - n:] = 0.0
        self._pending = span - n
        keep = self._history_len
        self._history = np.concatenate([self._history, out])[-keep:]
        self.position += n
        return out

    def _limit(self, out: np.ndarray) -> np.ndarray:
        """Gain, then a peak limiter, then the soft clip as the last guard.

        The whole call's samples are known before any is played, so the limiter looks ahead
        within the call: its gain is at most what each later sample needs (ceiling / |x|) plus
        the distance to it times the attack slope (full scale in `attack_s`), so it has already
        come down when a peak arrives. It never falls faster than that slope from where the
        previous call left it (a peak in a call's first samples is left to the soft clip), and
        recovers towards 1 over `release_s`."""
        c = self.config
        out = out * np.float32(c.gain)
        n = len(out)
        slope = 1.0 / (c.attack_s * self.out_rate)
        steps = np.arange(n, dtype=np.float64)
        need = np.minimum(1.0, c.ceiling / np.maximum(np.abs(out), 1e-9))
        ahead = np.minimum.accumulate((need + steps * slope)[::-1])[::-1] - steps * slope
        before = self._limiter_gain
        release = 1.0 - (1.0 - before) * np.exp(-(steps + 1.0) / (c.release_s * self.out_rate))
        gain = np.maximum(np.minimum(ahead, release), before - (steps + 1.0) * slope)
        self._limiter_gain = float(gain[-1])
        return _soft_clip((out * gain).astype(np.float32), c.ceiling)

