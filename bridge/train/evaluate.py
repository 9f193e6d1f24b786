"""Does a model's picture move with the music? Pearson r between the frame-to-frame change of the
frames it makes from held-out audio and the audio's onset strength, frame by frame.

The audio goes through the live path (StreamingAnalyzer on a fixed tick), the model runs in eval
mode exactly as the engine runs it. For comparison, the same number for the synthetic videos the
default model learns from (`teacher`).

    python -m bridge.train.evaluate --model models/pix2pix-pulse --seconds 20 LOOP.flac ...
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from bridge.train.dataset import analysis_sample_rate, make_analyzer, stream_features


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


def onset_correlation(model, audio_path, seconds: float | None = 20.0, fps: float = 30.0,
                      skip_seconds: float = 1.0, teacher: bool = True) -> dict:
    """r(mean |frame_t - frame_t-1|, onset_strength_t) for `model` (a Generator) on one audio
    file looped to `seconds`; the first `skip_seconds` (analyzer warm-up) are left out."""
    from bridge.generators.base import Snapshot
    from bridge.train.synth import PulseRenderer, load_pictures

    analyzer, config, _ = make_analyzer(model.config.analysis)
    sample_rate = analysis_sample_rate(config)
    audio = _looped(audio_path, sample_rate, seconds)
    renderer = PulseRenderer(load_pictures("skimage", model.output_size), fps) if teacher else None
    strengths, model_change, teacher_change = [], [], []
    previous = previous_teacher = None
    with torch.inference_mode():
        for _, t, features in stream_features(analyzer, audio, sample_rate, fps):
            frame = model.generate(model.condition(Snapshot(audio=features, audio_time=t)))
            frame = ((frame[0].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
            if previous is not None:
                model_change.append(float(np.abs(frame - previous).mean()))
                strengths.append(float(features.onset_strength))
            previous = frame
            if renderer is not None:
                picture = renderer.render(features, t).astype(np.float32)
                if previous_teacher is not None:
                    teacher_change.append(float(np.abs(picture - previous_teacher).mean()))
                previous_teacher = picture
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
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model)
        print(f"{'audio':<28} {'frames':>6} {'r':>7} {'teacher r':>9} {'mean change':>11}")
        for path in args.audio:
            res = onset_correlation(model, path, seconds=args.seconds, fps=args.fps)
            print(f"{str(path).rsplit('/', 1)[-1]:<28} {res['frames']:>6} {res['r']:>7.3f} "
                  f"{res['teacher_r']:>9.3f} {res['mean_change']:>11.2f}")
    except BridgeError as e:
        print(f"vjbridge: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
