"""Synthetic "music videos": real audio, real pictures, visuals that follow the music.

No one here owns music videos, so the project's default model learns from videos this module
renders from CC0 loops and BSD pictures; any machine remakes them byte for byte from the command
line stored next to each video (OUT.synth.json), which `dataset build` copies into its manifest.

Each frame is drawn from the live analyzer's features at that frame's tick (the same ticks
`build_dataset` pairs it with), so everything on screen is a function of the sound:
  cut       on a strong onset or a kick, to another picture: from the warm pictures when the low
            band leads, the middle ones when the mid band does, the cold ones for the high band;
  zoom      follows the low band (a punch on kicks);
  colour    hue turns with high minus mid, saturation follows the high band;
  light     brightness follows the level, a bloom on kicks, a white lift on onsets.
Nothing moves on its own: in steady sound the picture stays still.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np

from bridge.errors import ConfigError, SourceError
from bridge.train.dataset import (SYNTH_SIDECAR_SUFFIX, analysis_sample_rate, fit_square,
                                  make_analyzer, tick_bounds)
from bridge.train.images import IMAGE_SUFFIXES, SKIMAGE_PICTURES


CUT_MIN_GAP_S = 0.3  # no faster cutting than this
CUT_ONSET = 0.5  # onset strength over its running peak that cuts
CUT_KICK_RISE = 0.3  # kick value jump (one tick) that cuts
ONSET_PEAK_HALFLIFE_S = 3.0  # the onset normaliser's memory, as the analyzer's gain
ONSET_PEAK_FLOOR = 1.0  # dB of mean flux: below this an onset is jitter


def _as_rgb(picture: np.ndarray) -> np.ndarray:
    x = np.asarray(picture)
    if x.dtype == bool:
        x = x.astype(np.uint8) * 255
    elif x.dtype != np.uint8:
        x = np.clip(x.astype(np.float64) / max(float(x.max()), 1e-9) * 255.0, 0, 255).astype(np.uint8)
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=2)
    return np.ascontiguousarray(x[..., :3])


def load_pictures(images, size: int) -> list[np.ndarray]:
    """`images`: "skimage", a folder of pictures, or a list of arrays / files. Returns
    (size, size, 3) uint8 pictures (scaled and centre-cropped)."""
    import cv2

    pictures = []
    if isinstance(images, (str, Path)) and str(images) == "skimage":
        import skimage.data

        for name in SKIMAGE_PICTURES:
            picture = getattr(skimage.data, name)()
            picture = picture[0] if isinstance(picture, tuple) else picture  # stereo pairs
            pictures.append(_as_rgb(picture))
    else:
        if isinstance(images, (str, Path)):
            folder = Path(images)
            if not folder.is_dir():
                raise SourceError(f"images: {folder} is not a folder (or use 'skimage')")
            images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for item in images:
            if isinstance(item, np.ndarray):
                pictures.append(_as_rgb(item))
                continue
            bgr = cv2.imread(str(item), cv2.IMREAD_COLOR)
            if bgr is None:
                raise SourceError(f"cannot read picture {item}")
            pictures.append(np.ascontiguousarray(bgr[..., ::-1]))
    if len(pictures) < 2:
        raise SourceError(f"need at least 2 pictures to cut between, got {len(pictures)}")
    return [fit_square(p, size) for p in pictures]


def band_groups(pictures: list[np.ndarray]) -> list[list[int]]:
    """Three groups of picture indices, warm to cold (by mean red minus blue): the low band
    cuts to warm pictures, the mid band to the middle ones, the high band to cold ones."""
    warmth = [float(p[..., 0].mean()) - float(p[..., 2].mean()) for p in pictures]
    order = sorted(range(len(pictures)), key=lambda i: -warmth[i])
    groups = [list(g) for g in np.array_split(order, 3)]
    return [g if g else order for g in groups]


class PulseRenderer:
    """Draws one frame per tick from the analyzer's features (see the module docstring)."""

    def __init__(self, pictures: list[np.ndarray], fps: float, seed: int = 0):
        self.pictures = [p.astype(np.float32) / 255.0 for p in pictures]
        self.size = pictures[0].shape[0]
        self.groups = band_groups(pictures)
        self.rng = np.random.default_rng(seed)
        for group in self.groups:
            self.rng.shuffle(group)
        self.next_in_group = [0, 0, 0]
        self.current = self.groups[0][0]
        self.fps = fps
        self.onset_peak = ONSET_PEAK_FLOOR
        self.onset_decay = 0.5 ** (1.0 / (ONSET_PEAK_HALFLIFE_S * fps))
        self.previous_kick = 0.0
        self.last_cut = -1e9
        self.cuts = 0

    def _cut(self, bands) -> None:
        g = int(np.argmax(bands))
        group = self.groups[g]
        for _ in range(len(group)):
            candidate = group[self.next_in_group[g] % len(group)]
            self.next_in_group[g] += 1
            if candidate != self.current:
                break
        else:  # the group holds only the current picture: take any other one
            candidate = (self.current + 1) % len(self.pictures)
        self.current = candidate
        self.cuts += 1

    def render(self, features, t: float) -> np.ndarray:
        import cv2

        low, mid, high = (float(b) for b in features.bands)
        kick, level = float(features.kick), float(features.level)
        strength = max(float(features.onset_strength), 0.0)
        self.onset_peak = max(strength, self.onset_peak * self.onset_decay, ONSET_PEAK_FLOOR)
        onset = strength / self.onset_peak
        kicked = kick - self.previous_kick >= CUT_KICK_RISE
        self.previous_kick = kick
        if (kicked or (features.onset and onset >= CUT_ONSET)) and t - self.last_cut >= CUT_MIN_GAP_S:
            self._cut((low, mid, high))
            self.last_cut = t

        size = self.size
        zoom = 1.0 + 0.3 * low + 0.15 * kick
        matrix = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), 0.0, zoom)
        frame = cv2.warpAffine(self.pictures[self.current], matrix, (size, size),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)  # float: H in degrees, S and V in 0..1
        hsv[..., 0] = (hsv[..., 0] + 150.0 * (high - mid)) % 360.0
        hsv[..., 1] = np.clip(hsv[..., 1] * (0.4 + 1.2 * high), 0.0, 1.0)
        hsv[..., 2] *= 0.3 + 0.8 * level
        frame = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if kick > 0.02:
            glow = cv2.GaussianBlur(frame, (0, 0), sigmaX=size / 20.0)
            frame = frame + 1.1 * kick * glow
        frame = frame + 0.35 * onset * (1.0 - frame)
        return (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _loop_audio(audio_paths: list, sample_rate: int, seconds: float | None) -> np.ndarray:
    from bridge.sources.audio import decode_audio

    parts = [np.asarray(decode_audio(str(p), sample_rate=sample_rate), dtype=np.float32)
             for p in audio_paths]
    audio = np.concatenate(parts)
    if seconds is not None:
        n = int(round(seconds * sample_rate))
        audio = np.tile(audio, -(-n // len(audio)))[:n]
    return audio


def synth_command(audio_paths, images, out_mp4, size, fps, seconds, seed) -> str | None:
    if not isinstance(images, (str, Path)):
        return None  # pictures handed over as arrays cannot be named on a command line
    q = shlex.quote
    parts = ["vjbridge", "dataset", "synth", "--audio", *[q(str(a)) for a in audio_paths],
             "--images", q(str(images)), "--out", q(str(out_mp4)), "--size", str(size),
             "--fps", f"{fps:g}", "--seed", str(seed)]
    if seconds is not None:
        parts += ["--seconds", f"{seconds:g}"]
    return " ".join(parts)


def make_synth_video(audio_paths, images="skimage", out_mp4="synth.mp4", size: int = 256,
                     fps: float = 30.0, seconds: float | None = None, seed: int = 0,
                     progress: bool = True) -> dict:
    """Render an audio-reactive video of `audio_paths` (played in turn, looped to `seconds`) with
    `images` ("skimage", a folder, or a list of arrays/files); the audio is muxed in. Writes
    OUT.synth.json beside it (how it was made) and returns a summary dict."""
    from tqdm import tqdm

    from bridge.sinks.file import Mp4Writer

    if isinstance(audio_paths, (str, Path)):
        audio_paths = [audio_paths]
    if not audio_paths:
        raise ConfigError("no audio files given")
    if size < 16 or fps <= 0 or (seconds is not None and seconds <= 0):
        raise ConfigError("size must be at least 16, fps and seconds positive")
    out_mp4 = Path(out_mp4)
    analyzer, config, _ = make_analyzer({})
    sample_rate = analysis_sample_rate(config)
    audio = _loop_audio(list(audio_paths), sample_rate, seconds)
    renderer = PulseRenderer(load_pictures(images, size), fps, seed)
    bounds = tick_bounds(len(audio), sample_rate, fps)
    if len(bounds) < 2:
        raise SourceError("the audio is shorter than one frame")

    writer = Mp4Writer(out_mp4, size, size, fps, audio_rate=sample_rate)
    try:
        # Frame i shows the features after tick i (audio up to i / fps): `build_dataset` pairs
        # the frame at time t with the tick nearest t, so picture and pair line up exactly.
        for i in tqdm(range(len(bounds)), desc=out_mp4.name, unit="frame", disable=not progress):
            if i:
                chunk = audio[bounds[i - 1]:bounds[i]]
                analyzer.feed(chunk)
                writer.write_audio(chunk)
            t = bounds[i] / sample_rate
            writer.write_video(renderer.render(analyzer.snapshot(t), t))
    finally:
        writer.close()
    info = {
        "audio": [str(a) for a in audio_paths],
        "images": str(images) if isinstance(images, (str, Path)) else f"{len(renderer.pictures)} arrays",
        "size": size, "fps": fps, "seconds": round(float(bounds[-1]) / sample_rate, 3), "seed": seed,
        "frames": len(bounds), "cuts": renderer.cuts,
        "command": synth_command(audio_paths, images, out_mp4, size, fps, seconds, seed),
    }
    out_mp4.with_name(out_mp4.stem + SYNTH_SIDECAR_SUFFIX).write_text(json.dumps(info, indent=1) + "\n")
    return info
