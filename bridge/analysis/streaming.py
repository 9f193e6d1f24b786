"""StreamingAnalyzer: feeds on hops of live audio, keeps small state, hands out snapshots.

Framing is librosa's with center=False: frame t covers samples [t·hop, t·hop + n_fft), so the
first frame appears once n_fft samples have arrived and then one per hop. Everything that is
per frame is computed for all new frames at once (one batched FFT and matrix product); only the
few scalar recurrences (peak followers, onset picking, kick) loop over frames, never samples.
"""
from __future__ import annotations

import numpy as np

from bridge.analysis.config import AnalysisConfig
from bridge.analysis.features import AudioFeatures, RenderData
from bridge.analysis.onsets import OnsetPicker
from bridge.analysis.ring import FrameRing
from bridge.analysis.spectral import (
    band_bins, fft_section_softmax, frame_signal, hann_window, mel_filterbank, power_to_db,
)
from bridge.analysis.tempo import beat_phase, estimate_tempo

SILENCE_DB = -100.0  # power_to_db's floor (amin = 1e-10)
# Flux (dB) that counts as a full onset in the pictures at the least. Steady noise fluctuates by
# about ±1 dB around its baseline and a tone's empty bands by up to ~1.5 dB: that must stay dark.
ONSET_PICTURE_FLOOR_DB = 6.0
HISTORY_COLUMNS = 6  # level, low, mid, high, kick, onset — see RenderData.history


class StreamingAnalyzer:
    def __init__(self, config: AnalysisConfig = AnalysisConfig()):
        self.config = c = config
        self._window = hann_window(c.n_fft)
        self._mel_basis_t = np.ascontiguousarray(mel_filterbank(c.sample_rate, c.n_fft, c.n_mels).T)
        low_hz, high_hz = c.band_edges_hz
        nyquist = c.sample_rate / 2.0
        self._band_slices = [band_bins(c.sample_rate, c.n_fft, f0, f1) for f0, f1 in
                             ((1.0, low_hz), (low_hz, high_hz), (high_hz, nyquist + 1.0))]
        self._kick_slice = band_bins(c.sample_rate, c.n_fft, *c.kick_hz)
        # Parseval: 2·Σ|X|² / (n_fft·Σw²) is the mean square of the band-limited signal, so band
        # levels share the RMS's unit and its gain floor.
        self._band_power_to_ms = 2.0 / (c.n_fft * float(np.sum(self._window.astype(np.float64) ** 2)))
        self._slow = c.halflife_decay(c.gain_halflife_s)
        self._baseline_keep = c.halflife_decay(c.onset_baseline_halflife_s)
        self._release = c.halflife_decay(c.release_halflife_s)
        self._ceiling_fall_db = 6.02 / (c.gain_halflife_s * c.frame_rate_hz)  # same pace as gain
        # Lowest picture ceilings: white noise at the gain floor's RMS (mean power per bin is
        # σ²·Σw²; +10 dB because a frame's loudest bin sits well above the mean), and high
        # enough that digital silence (-100 dB) falls 10 dB below the picture's range.
        noise_bin_db = 10 * np.log10(c.gain_floor**2 * np.sum(self._window.astype(np.float64) ** 2))
        silence_floor = SILENCE_DB + c.image_db_range + 10.0
        self._spec_ceiling_floor = float(max(noise_bin_db + 10.0, silence_floor))
        mel_gain_db = 10 * np.log10(self._mel_basis_t.sum(axis=0).max())
        self._mel_ceiling_floor = float(max(noise_bin_db + 10.0 + mel_gain_db, silence_floor))
        self._tempo_every = c.seconds_to_frames(c.tempo_update_s)
        self._tempo_min_frames = c.seconds_to_frames(c.tempo_min_audio_s)
        self._kick_gap = c.seconds_to_frames(c.kick_min_gap_s)
        self._onsets = OnsetPicker(
            pre_max=int(c.onset_pre_max_s * c.frame_rate_hz), pre_avg=int(c.onset_pre_avg_s * c.frame_rate_hz),
            delta=c.onset_delta, min_gap=int(c.onset_min_gap_s * c.frame_rate_hz),
            scale_decay=self._slow, scale_floor=1.0,  # ~1 dB mean flux: below that is jitter
        )
        n_bins = c.n_fft // 2 + 1
        self._mel_ring = FrameRing(c.mel_frames, c.n_mels, fill=SILENCE_DB)
        self._spec_ring = FrameRing(c.seconds_to_frames(c.spectrogram_seconds), n_bins, fill=SILENCE_DB)
        self._history = FrameRing(
            c.seconds_to_frames(max(c.history_seconds, c.bands_history_seconds)), HISTORY_COLUMNS)
        self._onset_ring = FrameRing(c.seconds_to_frames(c.tempo_window_s), 1)
        self.reset()

    def reset(self) -> None:
        """Forget all audio and adaptive state, as if just constructed."""
        c = self.config
        self._unprocessed = np.zeros(0, dtype=np.float32)  # starts at the next frame's first sample
        self._samples = np.zeros(c.waveform_samples, dtype=np.float32)  # ends at the newest frame's end
        self._frames = 0
        self._prev_mel_db: np.ndarray | None = None
        self._power = np.zeros(c.n_fft // 2 + 1, dtype=np.float32)
        for ring in (self._mel_ring, self._spec_ring, self._history, self._onset_ring):
            ring.clear()
        self._onsets.reset()
        self._rms = 0.0
        self._onset_strength = 0.0
        self._onset_pending = False
        self._level_peak = self._kick_peak = self.config.gain_floor
        self._band_peaks = [self.config.gain_floor] * 3
        self._onset_baseline = 0.0
        self._onset_norm = 0.0
        self._level = self._kick = 0.0
        self._bands = [0.0, 0.0, 0.0]
        self._recent_kick_db = [SILENCE_DB] * 3
        self._frames_since_kick = 1 << 30
        self._mel_ceiling, self._spec_ceiling = self._mel_ceiling_floor, self._spec_ceiling_floor
        self._tempo_bpm = 0.0
        self._beat_phase = 0.0

    # -- feeding ---------------------------------------------------------------------------
    def feed(self, samples: np.ndarray) -> None:
        """Mono float32 samples at config.sample_rate, any length (0..many seconds); processes
        every complete hop, keeps the remainder."""
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1:
            if x.ndim == 2 and 1 in x.shape:
                x = x.reshape(-1)
            else:
                raise ValueError(f"feed() takes mono samples (1-D), got shape {x.shape}")
        if x.size == 0:
            return
        if not np.isfinite(x).all():  # one NaN from a glitching device would poison every follower
            x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
        c = self.config
        data = np.concatenate((self._unprocessed, x))
        frames = frame_signal(data, c.n_fft, c.hop)
        n = len(frames)
        if n == 0:
            self._unprocessed = data
            return
        # Samples newly covered by the frames, for the waveform picture.
        already_covered = c.n_fft - c.hop if self._frames else 0
        fresh = data[already_covered:(n - 1) * c.hop + c.n_fft]
        self._samples = np.concatenate((self._samples, fresh[-c.waveform_samples:]))[-c.waveform_samples:]
        self._unprocessed = data[n * c.hop:].copy()
        self._process(frames)

    def _process(self, frames: np.ndarray) -> None:
        spectrum = np.fft.rfft(frames * self._window, axis=-1)
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)  # (n, bins)
        mel_db = power_to_db(power @ self._mel_basis_t, top_db=None).astype(np.float32)  # (n, n_mels)
        previous = mel_db[:1] if self._prev_mel_db is None else self._prev_mel_db[None, :]
        # librosa pads the first frame's flux with 0; diffing the first frame with itself does that.
        onset = np.maximum(np.diff(np.concatenate((previous, mel_db)), axis=0), 0).mean(axis=1)
        rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
        band_rms = np.sqrt(self._band_power_to_ms * np.stack(
            [power[:, s].sum(axis=1, dtype=np.float64) for s in self._band_slices], axis=1))
        kick_rms = np.sqrt(self._band_power_to_ms * power[:, self._kick_slice].sum(axis=1, dtype=np.float64))
        kick_db = 20 * np.log10(np.maximum(kick_rms, 1e-10))
        spec_db = power_to_db(power, top_db=None).astype(np.float32)

        history = self._follow(rms.tolist(), band_rms.tolist(), kick_rms.tolist(), kick_db.tolist(),
                               onset.tolist(), mel_db.max(axis=1).tolist(), spec_db.max(axis=1).tolist())

        self._prev_mel_db = mel_db[-1]
        self._power = power[-1]
        self._rms = float(rms[-1])
        self._onset_strength = float(onset[-1])
        self._mel_ring.push(mel_db)
        self._spec_ring.push(spec_db)
        self._history.push(history)

    def _follow(self, rms, band_rms, kick_rms, kick_db, onset, mel_max_db, spec_max_db) -> np.ndarray:
        """The per-frame recurrences, on Python floats (faster than numpy scalars)."""
        c = self.config
        slow, release, floor = self._slow, self._release, c.gain_floor
        history = np.empty((len(rms), HISTORY_COLUMNS), dtype=np.float32)
        for i in range(len(rms)):
            self._level_peak = max(rms[i], self._level_peak * slow, floor)
            self._level = max(rms[i] / self._level_peak, self._level * release)
            # A band is never boosted past band_floor_share of the overall level: an almost empty
            # band (treble of a bass tone) would otherwise flicker at full scale on leakage.
            band_floor = max(floor, c.band_floor_share * self._level_peak)
            for b in range(3):
                self._band_peaks[b] = max(band_rms[i][b], self._band_peaks[b] * slow, band_floor)
                self._bands[b] = max(band_rms[i][b] / self._band_peaks[b], self._bands[b] * release)
            self._kick = self._kick_step(kick_rms[i], kick_db[i])
            if self._onsets.push(onset[i]):
                self._onset_pending = True
            self._mel_ceiling = max(mel_max_db[i], self._mel_ceiling - self._ceiling_fall_db, self._mel_ceiling_floor)
            self._spec_ceiling = max(spec_max_db[i], self._spec_ceiling - self._ceiling_fall_db,
                                     self._spec_ceiling_floor)
            self._onset_ring.push(onset[i])
            self._frames += 1
            self._beat_step()
            self._onset_norm = self._normalise_onset(onset[i])
            history[i] = (self._level, *self._bands, self._kick, self._onset_norm)
        return history

    def _normalise_onset(self, strength: float) -> float:
        """Onset strength above its recent baseline, 0..1 of the running maximum (for pictures)."""
        keep = self._baseline_keep
        self._onset_baseline = keep * self._onset_baseline + (1.0 - keep) * strength
        span = max(self._onsets.scale - self._onset_baseline, ONSET_PICTURE_FLOOR_DB)
        return min(1.0, max(0.0, strength - self._onset_baseline) / span)

    def _kick_step(self, amplitude: float, level_db: float) -> float:
        """Jump to the kick's relative loudness on a fast rise of the kick band, else decay."""
        c = self.config
        self._kick_peak = max(amplitude, self._kick_peak * self._slow, c.gain_floor)
        rise_db = level_db - min(self._recent_kick_db)
        self._recent_kick_db = self._recent_kick_db[1:] + [level_db]
        self._frames_since_kick += 1
        kick = self._kick * self._release
        relative = amplitude / self._kick_peak
        # A kick carries a good part of the whole signal's loudness; hats and leakage do not.
        share = amplitude / self._level_peak
        if (rise_db >= c.kick_rise_db and relative >= c.kick_min_ratio and share >= c.kick_min_share
                and self._frames_since_kick > self._kick_gap):
            self._frames_since_kick = 0
            kick = max(kick, relative)
        return kick

    def _beat_step(self) -> None:
        """Advance the beat phase one hop; every tempo_update_s re-estimate tempo and phase."""
        c = self.config
        if self._tempo_bpm > 0:
            self._beat_phase = (self._beat_phase + self._tempo_bpm / 60.0 / c.frame_rate_hz) % 1.0
        if self._frames < self._tempo_min_frames or self._frames % self._tempo_every:
            return
        envelope = self._onset_ring.latest(min(self._frames, self._onset_ring.capacity))[:, 0]
        bpm = estimate_tempo(envelope, c.frame_rate_hz, c.tempo_range_bpm, c.tempo_prior_bpm,
                             c.tempo_prior_octaves, previous_bpm=self._tempo_bpm)
        if bpm <= 0:  # no pulse now (a break, a pad): keep the last tempo running, as DJ gear does
            return
        measured = beat_phase(envelope, 60.0 * c.frame_rate_hz / bpm)
        if self._tempo_bpm <= 0:
            self._beat_phase = measured
        else:  # pull halfway towards the measurement: corrects drift without visible jumps
            error = (measured - self._beat_phase + 0.5) % 1.0 - 0.5
            self._beat_phase = (self._beat_phase + 0.5 * error) % 1.0
        self._tempo_bpm = bpm

    # -- reading ---------------------------------------------------------------------------
    @property
    def tempo_bpm(self) -> float:
        """The current tempo estimate (0.0 until enough audio)."""
        return self._tempo_bpm

    def snapshot(self, capture_time: float = 0.0) -> AudioFeatures:
        """The newest features plus copies of what the pictures need (no drawing here)."""
        c = self.config
        onset, self._onset_pending = self._onset_pending, False
        history = self._history.latest(c.seconds_to_frames(c.history_seconds))
        render = RenderData(
            samples=self._samples.copy(),
            spectrogram_db=self._spec_ring.latest(),
            spectrogram_ceiling_db=self._spec_ceiling,
            mel_ceiling_db=self._mel_ceiling,
            history=history,
            bands_history_frames=min(len(history), c.seconds_to_frames(c.bands_history_seconds)),
            # Drums peak at 3-5x their RMS: 1/(2.5·peak RMS) with a soft clip keeps the line in frame.
            waveform_gain=1.0 / (2.5 * self._level_peak),
            onset_norm=self._onset_norm,
        )
        return AudioFeatures(
            capture_time=capture_time,
            rms=self._rms,
            level=self._level,
            bands=(self._bands[0], self._bands[1], self._bands[2]),
            kick=self._kick,
            onset_strength=self._onset_strength,
            onset=onset,
            tempo_bpm=self._tempo_bpm,
            beat_phase=self._beat_phase,
            fft_softmax=fft_section_softmax(self._power, c.fft_sections, c.softmax_temperature),
            mel_db=self._mel_ring.latest().T.copy(),
            _render=render,
        )
