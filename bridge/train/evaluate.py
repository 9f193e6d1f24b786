"""Does a model's picture move with the music? Pearson r between the frame-to-frame change of the
frames it makes from held-out audio and the audio's onset strength, frame by frame.

The audio is rendered by `bridge.render` (the live analysis on a fixed tick, the model's walk or
mode, eval mode), so the number is about the frames of the mp4 a user gets. For comparison, the same number for the synthetic videos the
default model learns from (`teacher`).

    python -m bridge.train.evaluate --model models/pix2pix-pulse --seconds 20 LOOP.flac ...
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from bridge.train.dataset import analysis_sample_rate, make_analyzer


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denominator = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denominator) if denominator > 0 else 0.0


def _looped(path, sample_rate: int, seconds: float | None) -> np.ndarray:
    from bridge.sources.audio import decode_audio

    audio = np.asarray(decode_audio(str(path), sample_rate=sample_rate), dtype=np.float32)
    if seconds:
        n = int(round(seconds * sample_rate))
        audio = np.tile(audio, -(-n // len(audio)))[:n]
    return audio


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    import wave

    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())


def onset_correlation(model, audio_path, seconds: float | None = 20.0, fps: float = 30.0,
                      skip_seconds: float = 1.0, teacher: bool = True, walk: str | None = None,
                      walk_params: dict | None = None, seed: int = 0, out: str | Path | None = None) -> dict:
    """r(mean |frame_t - frame_t-1|, onset_strength_t) for `model` (a Generator, its live mode
    already set) on one audio file looped to `seconds`, through `bridge.render` itself: the frames
    measured are the frames of the mp4 it writes (to `out`, or a temporary file). The first
    `skip_seconds` (analyzer warm-up) are left out."""
    import tempfile

    from bridge.render import render
    from bridge.train.synth import PulseRenderer, load_pictures

    _, config, _ = make_analyzer(model.config.analysis if hasattr(model.config, "analysis") else {})
    sample_rate = analysis_sample_rate(config)
    audio = _looped(audio_path, sample_rate, seconds)
    renderer = PulseRenderer(load_pictures("skimage", 64), fps) if teacher else None
    strengths, model_change, teacher_change = [], [], []
    last = {"frame": None, "teacher": None}

    def measure(i, frame, snapshot):
        picture = frame[..., :3].astype(np.float32)
        if last["frame"] is not None:
            model_change.append(float(np.abs(picture - last["frame"]).mean()))
            strengths.append(float(snapshot.audio.onset_strength))
        last["frame"] = picture
        if renderer is not None:
            drawn = renderer.render(snapshot.audio, snapshot.audio_time).astype(np.float32)
            if last["teacher"] is not None:
                teacher_change.append(float(np.abs(drawn - last["teacher"]).mean()))
            last["teacher"] = drawn

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "audio.wav"
        _write_wav(wav, audio, sample_rate)
        target = Path(out) if out else Path(tmp) / "render.mp4"
        with torch.inference_mode():
            render(model, wav, target, fps=fps, progress=False, on_frame=measure, walk=walk,
                   walk_params=walk_params, seed=seed)
    skip = int(skip_seconds * fps)
    strength = np.asarray(strengths[skip:])
    result = {"audio": str(audio_path), "frames": len(strength),
              "r": _pearson(np.asarray(model_change[skip:]), strength),
              "mean_change": float(np.mean(model_change[skip:]))}
    if renderer is not None:
        result["teacher_r"] = _pearson(np.asarray(teacher_change[skip:]), strength)
    return result


def main(argv: list[str] | None = None) -> int:
    from bridge.errors import BridgeError
    from bridge.generators.base import load_model

    parser = argparse.ArgumentParser(prog="python -m bridge.train.evaluate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("audio", nargs="+", help="held-out audio files")
    parser.add_argument("--model", default="pix2pix-pulse", help="bundle name or folder")
    parser.add_argument("--seconds", type=float, default=20.0, help="loop each file to this long")
    parser.add_argument("--fps", type=float, default=30.0, help="tick rate (default: %(default)s)")
    parser.add_argument("--mode", help="live mode (vae_associator: sound)")
    parser.add_argument("--walk", help="latent walk (realnvp: weighted, magellan, explore; cvae: linger)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        from bridge.live import prepare_model
        model = load_model(args.model)
        prepare_model(model, args.mode, None, has_audio=True, has_image=False, image_option="--video FILE")
        print(f"{'audio':<28} {'frames':>6} {'r':>7} {'teacher r':>9} {'mean change':>11}")
        for path in args.audio:
            res = onset_correlation(model, path, seconds=args.seconds, fps=args.fps, walk=args.walk,
                                    seed=args.seed)
            print(f"{str(path).rsplit('/', 1)[-1]:<28} {res['frames']:>6} {res['r']:>7.3f} "
                  f"{res['teacher_r']:>9.3f} {res['mean_change']:>11.2f}")
    except BridgeError as e:
        print(f"vjbridge: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
