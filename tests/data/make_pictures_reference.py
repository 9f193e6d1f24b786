"""Writes pictures_reference.npz: the inputs of two analysis snapshots (quiet; just after a
bass hit, kick and onset up) and every representation drawn from them at 64² and 136², as the
straightforward float drawers of commit 47efb38 drew them. The drawers have been made faster
since; tests/test_pictures_reference.py holds them to these pictures within one level.
Run from the repository root: python tests/data/make_pictures_reference.py"""
from pathlib import Path

import numpy as np

from bridge.analysis import REPRESENTATIONS, AnalysisConfig, AudioFeatures, StreamingAnalyzer
from bridge.analysis.features import RenderData

SIZES = (64, 136)
PATH = Path(__file__).with_name("pictures_reference.npz")


def signal(seconds: float, sr: int, seed: int) -> np.ndarray:
    """Noise, a bass drum twice a second (a falling 120 -> 50 Hz thump with a click), a held tone."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    since = t % 0.5
    thump = np.exp(-since / 0.08) * np.sin(2 * np.pi * (50 * since + 70 * 0.03 * (1 - np.exp(-since / 0.03))))
    click = np.exp(-since / 0.003) * rng.standard_normal(len(t))
    return (0.03 * rng.standard_normal(len(t)) + 0.9 * thump + 0.4 * click
            + 0.1 * np.sin(2 * np.pi * 880 * t)).astype(np.float32)


def inputs(features: AudioFeatures) -> dict:
    """What drawing reads from a snapshot, as arrays (float16 for the big ones: it is the input)."""
    render = features._render
    return {"scalars": np.array([features.level, *features.bands, features.kick,
                                 render.spectrogram_ceiling_db, render.mel_ceiling_db,
                                 render.bands_history_frames, render.waveform_gain, render.onset_norm]),
            "mel_db": np.asarray(features.mel_db, dtype=np.float16),
            "samples": render.samples.astype(np.float16),
            "spectrogram_db": render.spectrogram_db.astype(np.float16),
            "history": render.history.astype(np.float16)}


def rebuild(saved) -> AudioFeatures:
    """An AudioFeatures carrying exactly the saved inputs (all else neutral)."""
    level, low, mid, high, kick, spec_ceiling, mel_ceiling, frames, gain, onset_norm = saved["scalars"]
    render = RenderData(samples=saved["samples"].astype(np.float32),
                        spectrogram_db=saved["spectrogram_db"].astype(np.float32),
                        spectrogram_ceiling_db=float(spec_ceiling), mel_ceiling_db=float(mel_ceiling),
                        history=saved["history"].astype(np.float32), bands_history_frames=int(frames),
                        waveform_gain=float(gain), onset_norm=float(onset_norm))
    silent = AudioFeatures.silent()
    return AudioFeatures(capture_time=0.0, rms=0.0, level=float(level), bands=(float(low), float(mid), float(high)),
                         kick=float(kick), onset_strength=0.0, onset=False, tempo_bpm=0.0, beat_phase=0.0,
                         fft_softmax=silent.fft_softmax, mel_db=saved["mel_db"].astype(np.float32), _render=render)


def main() -> None:
    config = AnalysisConfig()
    analyzer = StreamingAnalyzer(config)
    analyzer.feed(signal(3.0, config.sample_rate, 0) * 0.03)
    snapshots = [analyzer.snapshot(3.0)]  # quiet
    audio, hop = signal(3.0, config.sample_rate, 1), config.hop
    best = None
    for at in range(0, len(audio) - hop, hop):  # the loud snapshot: kick and onset both high
        analyzer.feed(audio[at:at + hop])
        features = analyzer.snapshot(3.0 + at / config.sample_rate)
        score = features.kick * features._render.onset_norm
        if at > 2 * config.sample_rate and (best is None or score > best[0]):
            best = (score, features)
    snapshots.append(best[1])
    out = {}
    for i, features in enumerate(snapshots):
        saved = inputs(features)
        features = rebuild(saved)
        out.update({f"{i}/{key}": value for key, value in saved.items()})
        for name in REPRESENTATIONS:
            for size in SIZES:
                out[f"{i}/{name}/{size}"] = features.representation(name, size)
    np.savez_compressed(PATH, **out)


if __name__ == "__main__":
    main()
