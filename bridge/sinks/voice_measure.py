"""Measuring `MelVoice` (bridge.sinks.voice) on real recordings: `measure_voice` (speed and how
the joins between blocks sound, for `vjbridge bench`), `join_metric`, `mel_windows` (the mels an
engine tick sees) and `default_sound_file`."""
from __future__ import annotations

import glob
import os
import time
from dataclasses import asdict

import numpy as np
import torch

from bridge.analysis import AnalysisConfig
from bridge.analysis.spectral import mel_filterbank, power_to_db, stft_power_frames
from bridge.sinks.voice import MelVoice
from bridge.sources.decode import decode_audio


def join_metric(audio: np.ndarray, joins: list[tuple[int, int]], width: int = 256) -> dict:
    """How much the cross-fades between blocks stand out, in dB, from audio the voice made and
    its `joins` (start, overlap) list.

    For each join, a `width`-sample window centred in the cross-fade is compared with windows
    centred between that join and the neighbouring ones (where one block plays alone), on
    (a) the signal's energy and (b) the energy of its second difference (a high-pass that
    clicks and phase jumps light up). Returns the mean |dB difference| for each (0 = the joins
    are indistinguishable; a dip from phase cancellation and a click both count), and the mean
    signed difference (negative: the joins dip)."""
    audio = np.asarray(audio, dtype=np.float64)
    curvature = np.zeros_like(audio)
    curvature[1:-1] = np.diff(audio, 2)
    half = width // 2
    rows = []
    for (start, overlap), (next_start, _) in zip(joins[1:-1], joins[2:]):
        if overlap < width // 2:
            continue
        centre_join = start + overlap // 2
        centre_alone = (start + overlap + next_start) // 2  # between this fade and the next
        if centre_join - half < 0 or centre_alone + half > len(audio):
            continue
        windows = [slice(centre_join - half, centre_join + half),
                   slice(centre_alone - half, centre_alone + half)]
        rows.append([[float(np.mean(x[w] ** 2)) + 1e-20 for w in windows] for x in (audio, curvature)])
    if not rows:
        return {"joins": 0}
    energy = np.asarray(rows)  # (joins, 2 signals, 2 windows)
    db = 10.0 * np.log10(energy[:, :, 0] / energy[:, :, 1])  # (joins, 2)
    loud = energy[:, 0, 1] > 1e-8 * energy[:, 0, 1].max()  # leave out joins in silence
    db = db[loud]
    return {
        "joins": int(len(db)),
        "level_abs_db": round(float(np.mean(np.abs(db[:, 0]))), 3),
        "level_dip_db": round(float(np.mean(db[:, 0])), 3),
        "highpass_abs_db": round(float(np.mean(np.abs(db[:, 1]))), 3),
        "highpass_dip_db": round(float(np.mean(db[:, 1])), 3),
    }


def default_sound_file() -> str:
    """A real recording to measure on: a sonic-pi sample if installed, else the demo song."""
    for name in ("loop_amen_full.flac", "ambi_choir.flac"):
        path = os.path.join("/usr/share/sonic-pi/samples", name)
        if os.path.exists(path):
            return path
    found = sorted(glob.glob("/usr/share/sonic-pi/samples/*.flac"))
    if found:
        return found[0]
    return os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "demo.ogg")


def mel_windows(samples: np.ndarray, analysis: AnalysisConfig, fps: float,
                seconds: float) -> list[np.ndarray]:
    """The (n_mels, mel_frames) dB mel an engine tick sees at `fps` (the newest frames, as
    bridge.analysis.StreamingAnalyzer makes them), for each tick over `seconds` of `samples`
    (looped if shorter)."""
    a = analysis
    needed = int((seconds + 1.0) * a.sample_rate) + a.n_fft
    if len(samples) < needed:
        samples = np.tile(samples, needed // max(len(samples), 1) + 1)
    power = stft_power_frames(samples[:needed], a.n_fft, a.hop)  # (frames, bins)
    mel_db = power_to_db(power @ mel_filterbank(a.sample_rate, a.n_fft, a.n_mels).T, top_db=None)
    mel_db = mel_db.T.astype(np.float32)  # (n_mels, frames)
    ticks = int(seconds * fps)
    out = []
    for t in range(1, ticks + 1):
        heard = int(t / fps * a.sample_rate)  # samples the analysis has had by tick t
        complete = (heard - a.n_fft) // a.hop + 1  # frames it has made of them
        newest = min(mel_db.shape[1], max(a.mel_frames, complete))
        out.append(mel_db[:, newest - a.mel_frames:newest])
    return out


def measure_voice(seconds: float = 10.0, fps: float = 30.0, path: str | None = None,
                  analysis: AnalysisConfig | None = None, **options) -> dict:
    """Time `MelVoice` on a real recording's mels, ticked at `fps` as the engine would, and
    measure its joins. `options` are VoiceConfig fields (phase="random", inverse="pinv", ...).

    Returns rtf_median (median per call of wall time spent / audio seconds made), rtf_overall
    (all wall time / all audio), rtf_cpu (this thread's CPU time / all audio), ms_per_call_median
    / _p95, the join metric (see `join_metric`) of the voice and, as a floor, of the recording
    itself at the same places, the settings and the torch thread count. For `vjbridge bench`.

    Measured (10 s at 30 fps, 1,600 samples per call, the defaults, on a 2-core VM shared with
    other jobs, load 4-7): 1.6-1.7 ms per call (median; p95 ~5.8 ms when other jobs preempt),
    rtf_median 0.05, rtf_cpu 0.05, rtf_overall 0.06-0.10; "random" 1.3 ms (rtf_cpu 0.04);
    inverse "nnls" 8 ms (rtf_cpu 0.12). Joins, as level_dip_db / highpass_dip_db: "random"
    -1.9 to -4.0 / -2.4 to -2.9 dB, "continue" -0.7 to +0.4 / -0.4 to -2.0 dB, the recordings
    themselves at the same places -0.1 to +0.3 / -0.3 to +0.1 dB (loop_amen_full, ambi_choir,
    guit_em9, demo.ogg)."""
    analysis = analysis or AnalysisConfig()
    path = path or default_sound_file()
    samples = decode_audio(path, analysis.sample_rate)
    windows = mel_windows(samples, analysis, fps, seconds)
    voice = MelVoice.for_analysis(analysis, **options)
    due, outputs, call_s, cpu_s, sizes = 0.0, [], [], [], []
    for mel_db in windows:
        due += voice.out_rate / fps
        n = int(due)
        due -= n
        started, started_cpu = time.perf_counter(), time.thread_time()
        outputs.append(voice.render(mel_db, n))
        call_s.append(time.perf_counter() - started)
        cpu_s.append(time.thread_time() - started_cpu)
        sizes.append(n)
    call_s_arr, sizes_arr = np.asarray(call_s), np.asarray(sizes)
    audio_s = sizes_arr.sum() / voice.out_rate
    rtf = call_s_arr / (sizes_arr / voice.out_rate)
    audio = np.concatenate(outputs)
    # The same windows on the recording itself (at out_rate, from the start, as the voice's
    # output is): how much two windows that far apart differ in music with no joins at all.
    original = decode_audio(path, voice.out_rate)
    original = np.tile(original, len(audio) // max(len(original), 1) + 1)[:len(audio)]
    return {
        "file": path,
        "seconds": round(len(audio) / voice.out_rate, 3),
        "calls": len(call_s),
        "rtf_median": round(float(np.median(rtf)), 4),
        "rtf_overall": round(float(call_s_arr.sum() / audio_s), 4),
        # CPU time of this thread: what the voice costs when other processes share the cores.
        "rtf_cpu": round(float(np.sum(cpu_s) / audio_s), 4),
        "ms_per_call_median": round(float(np.median(call_s_arr)) * 1000.0, 3),
        "ms_per_call_p95": round(float(np.percentile(call_s_arr, 95)) * 1000.0, 3),
        "join": join_metric(audio, voice.joins),
        "join_in_original": join_metric(original, voice.joins),
        "peak": round(float(np.abs(audio).max()), 4),
        "rms": round(float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))), 5),
        "config": asdict(voice.config),
        "torch_threads": torch.get_num_threads(),
    }
