"""Paired training data from videos: (audio image at time t, video frame at time t).

The audio image comes from the same streaming path the live bridge uses: the video's sound is fed
to a `StreamingAnalyzer` in ticks of sample_rate / tick_fps samples and a snapshot is taken every
tick, so adaptive state (normalisation, histories, onset thresholds) is what it would be live; the
image for a frame at t is the representation at the tick nearest t.

Pairing (which frames become pairs):
  every-nth  every Nth frame in [start, end) (seed 003: every 45th frame at 30 fps, 30 s..90 s);
  onset      in each `segment`-second window of [start, end), the frame at the strongest onset
             (seed 000).
Output: out/A/000000.png (audio image), out/B/000000.png (frame, scaled and centre-cropped to
size x size), out/dataset.json (the manifest: settings, sources, one entry per pair).

Mel pairs (representation "mel-pairs", seed 000's cross-modal VAE): the audio half is the
analyser's newest log-mel at the tick, `AudioFeatures.mel_db` (n_mels, mel_frames) in dB (ref 1.0;
9 hops of 512 at 44.1 kHz, the ~100 ms before the frame), kept as row `item["mel"]` of ONE
out/mels.safetensors tensor "mel_db" (N, n_mels, mel_frames) float32 instead of A pictures. Use
pairing "onset" (the frame at each segment's strongest onset, as the seed) and size 112.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from bridge.errors import ConfigError, SourceError

MANIFEST_FILE = "dataset.json"
MANIFEST_VERSION = 1
PAIRINGS = ("every-nth", "onset")
MEL_PAIRS = "mel-pairs"  # a dataset representation: frame + log-mel, not an analysis picture
MELS_FILE = "mels.safetensors"
MELS_TENSOR = "mel_db"
MEL_PAIRS_SIZE = 112  # seed 000's frame size
# Seed 003's numbers.
DEFAULT_EVERY = 45
DEFAULT_START = 30.0  # seconds
DEFAULT_END = 90.0  # seconds
DEFAULT_SEGMENT = 1.0  # seconds, onset pairing window
DEFAULT_TICK_FPS = 30.0  # the live engine's default rate
SYNTH_SIDECAR_SUFFIX = ".synth.json"  # written by synth.py next to a synthetic video


@dataclass
class VideoInfo:
    path: Path
    duration: float  # seconds
    fps: float
    width: int
    height: int


def _av_reason(error: Exception) -> str:
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return " ".join(str(reason).split())  # one line


def probe_video(path: str | Path) -> VideoInfo:
    """Open a video and check it has a picture and a sound track; one-line SourceError if not."""
    import av

    path = Path(path)
    if not path.is_file():
        raise SourceError(f"cannot read video {path}: no such file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise SourceError(f"cannot read video {path}: it has no video stream")
            if not container.streams.audio:
                raise SourceError(f"video {path} has no audio track: dataset pairs need the "
                                  f"video's own sound")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0) or DEFAULT_TICK_FPS
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            else:
                duration = (stream.frames or 0) / fps
            width, height = stream.codec_context.width, stream.codec_context.height
    except av.FFmpegError as e:
        raise SourceError(f"cannot read video {path}: {_av_reason(e)}") from None
    if duration <= 0 or width <= 0 or height <= 0:
        raise SourceError(f"cannot read video {path}: no frames (duration {duration:.2f} s)")
    return VideoInfo(path, duration, fps, width, height)


def iter_frames(path: Path, start: float = 0.0) -> Iterator[tuple[float, object]]:
    """(time in seconds, av.VideoFrame) for each decoded frame at or after `start`."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            fps = float(stream.average_rate or 0) or DEFAULT_TICK_FPS
            if start > 2.0 and stream.time_base:
                # Seek to the keyframe before start instead of decoding everything up to it.
                container.seek(int((start - 1.0) / stream.time_base), stream=stream)
            for i, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else i / fps
                if t >= start - 1e-6:
                    yield t, frame
    except av.FFmpegError as e:
        raise SourceError(f"cannot decode video {path}: {_av_reason(e)}") from None


def fit_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Scale so the short side is `size`, then crop the centre: (size, size, 3) uint8."""
    import cv2

    h, w = rgb.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(rgb, (nw, nh), interpolation=interp)
    y, x = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(resized[y:y + size, x:x + size, :3])


def write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise SourceError(f"cannot write {path}")


# --- the live path: fixed ticks through the streaming analyzer ------------------------------------

def make_analyzer(analysis: dict | None):
    """A StreamingAnalyzer from AnalysisConfig overrides, and the resolved config as a dict."""
    from bridge.analysis import AnalysisConfig, StreamingAnalyzer

    try:
        config = AnalysisConfig(**(analysis or {}))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid analysis settings {analysis}: {e}") from None
    resolved = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(analysis or {})
    return StreamingAnalyzer(config), config, resolved


def analysis_sample_rate(config) -> int:
    return int(getattr(config, "sample_rate", 44100))


def tick_bounds(n_samples: int, sample_rate: int, tick_fps: float) -> np.ndarray:
    """Sample index at the end of each tick: tick k (k >= 1) has fed samples [0, bounds[k])."""
    n_ticks = int(math.floor(n_samples * tick_fps / sample_rate + 1e-9))
    return np.round(np.arange(n_ticks + 1) * sample_rate / tick_fps).astype(np.int64)


def stream_features(analyzer, samples: np.ndarray, sample_rate: int,
                    tick_fps: float) -> Iterator[tuple[int, float, object]]:
    """Feed `samples` tick by tick, as the live engine does, and yield (tick, time, features)
    after each tick; time is the end of the audio fed so far, in seconds."""
    bounds = tick_bounds(len(samples), sample_rate, tick_fps)
    for k in range(1, len(bounds)):
        analyzer.feed(samples[bounds[k - 1]:bounds[k]])
        t = bounds[k] / sample_rate
        yield k, t, analyzer.snapshot(t)


def nearest_tick(t: float, tick_fps: float, n_ticks: int) -> int:
    return int(min(max(round(t * tick_fps), 1), n_ticks))


# --- building ----------------------------------------------------------------------------------------

def _check_args(representation: str, size: int, pairing: str, every: int, start: float,
                end: float, segment: float, tick_fps: float) -> None:
    from bridge.analysis import REPRESENTATIONS

    if representation not in REPRESENTATIONS and representation != MEL_PAIRS:
        raise ConfigError(f"unknown representation '{representation}'; known: "
                          f"{', '.join(REPRESENTATIONS)}, {MEL_PAIRS}")
    if size < 16:
        raise ConfigError(f"size must be at least 16, got {size}")
    if pairing not in PAIRINGS:
        raise ConfigError(f"unknown pairing '{pairing}'; use one of {', '.join(PAIRINGS)}")
    if every < 1:
        raise ConfigError(f"every must be at least 1, got {every}")
    if start < 0 or end <= start:
        raise ConfigError(f"need 0 <= start < end, got start {start} end {end}")
    if segment <= 0:
        raise ConfigError(f"segment must be positive, got {segment}")
    if tick_fps <= 0:
        raise ConfigError(f"tick_fps must be positive, got {tick_fps}")


def _prepare_out(out: Path, subdirs: tuple[str, ...]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # written again only when the build succeeds
    (out / MELS_FILE).unlink(missing_ok=True)
    for sub in ("A", "B"):
        d = out / sub
        if sub in subdirs:
            d.mkdir(parents=True, exist_ok=True)
        if d.is_dir():
            for old in d.glob("*.png"):  # a rebuild must not leave stale pairs behind
                old.unlink()


class _PictureSide:
    """The audio half of a pair as an analysis picture: A/000000.png."""

    subdirs = ("A", "B")

    def __init__(self, representation: str, size: int):
        self.representation, self.size = representation, size

    def take(self, features) -> np.ndarray:
        return np.array(features.representation(self.representation, self.size))[..., :3]

    def store(self, out: Path, index: int, value: np.ndarray) -> dict:
        write_png(out / "A" / _pair_name(index), value)
        return {"a": f"A/{_pair_name(index)}"}

    def finish(self, out: Path, n_items: int) -> dict:
        return {}


class _MelSide:
    """The audio half of a pair as the analyser's newest log-mel: row `index` of mels.safetensors."""

    subdirs = ("B",)

    def __init__(self):
        self.rows: dict[int, np.ndarray] = {}

    def take(self, features) -> np.ndarray:
        return np.array(features.mel_db, dtype=np.float32)  # (n_mels, mel_frames) dB, a copy

    def store(self, out: Path, index: int, value: np.ndarray) -> dict:
        self.rows[index] = value
        return {"mel": index}

    def finish(self, out: Path, n_items: int) -> dict:
        from safetensors.numpy import save_file

        if sorted(self.rows) != list(range(n_items)):
            raise SourceError(f"{out}: {len(self.rows)} mels for {n_items} pairs (a build bug)")
        mels = np.ascontiguousarray(np.stack([self.rows[i] for i in range(n_items)]))
        save_file({MELS_TENSOR: mels}, str(out / MELS_FILE))
        return {"mels": {"file": MELS_FILE, "tensor": MELS_TENSOR, "shape": list(mels.shape),
                         "unit": "dB", "ref": 1.0, "dtype": "float32"}}


def _load_audio(info: VideoInfo, sample_rate: int) -> np.ndarray:
    from bridge.sources.audio import decode_audio

    samples = np.asarray(decode_audio(info.path, sample_rate=sample_rate), dtype=np.float32)
    if samples.ndim != 1 or samples.size < sample_rate // 10:
        raise SourceError(f"video {info.path}: its audio track is empty")
    return samples


def _synth_recipe(path: Path) -> dict | None:
    sidecar = path.with_name(path.stem + SYNTH_SIDECAR_SUFFIX)
    if sidecar.is_file():
        try:
            return json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError):
            return None
    return None


def build_dataset(videos: list[str | Path], out: str | Path, representation: str = "spectrogram",
                  size: int = 256, pairing: str = "every-nth", every: int = DEFAULT_EVERY,
                  start: float = DEFAULT_START, end: float = DEFAULT_END,
                  segment: float = DEFAULT_SEGMENT, analysis: dict | None = None,
                  tick_fps: float = DEFAULT_TICK_FPS, progress: bool = True) -> dict:
    """Write A/B pairs (or, for representation "mel-pairs", B frames and mels.safetensors) and
    dataset.json into `out`; returns the manifest."""
    from tqdm import tqdm

    _check_args(representation, size, pairing, every, start, end, segment, tick_fps)
    if not videos:
        raise ConfigError("no videos given")
    infos = [probe_video(v) for v in videos]  # fail on a bad file before writing anything
    _, config, resolved = make_analyzer(analysis)
    sample_rate = analysis_sample_rate(config)
    side = _MelSide() if representation == MEL_PAIRS else _PictureSide(representation, size)
    out = Path(out)
    _prepare_out(out, side.subdirs)

    items: list[dict] = []
    sources: list[dict] = []
    for source_index, info in enumerate(infos):
        samples = _load_audio(info, sample_rate)
        usable = min(info.duration, len(samples) / sample_rate)
        lo, hi = min(start, usable), min(end, usable)  # clamp the range to the video's length
        entry = {"path": str(videos[source_index]), "duration": round(info.duration, 3),
                 "fps": round(info.fps, 3), "width": info.width, "height": info.height,
                 "start": round(float(lo), 3), "end": round(float(hi), 3), "pairs": 0}
        recipe = _synth_recipe(info.path)
        if recipe:
            entry["synth"] = recipe
        if hi - lo < 1.0 / max(info.fps, tick_fps):
            print(f"warning: {info.path}: nothing in {start:g}..{end:g} s (it lasts "
                  f"{usable:.1f} s); skipped", file=sys.stderr)
            sources.append(entry)
            continue
        analyzer, _, _ = make_analyzer(analysis)  # fresh state per video, as a live start
        name = info.path.name
        if pairing == "every-nth":
            new = _pairs_every_nth(info, samples, analyzer, sample_rate, side, size,
                                   every, lo, hi, tick_fps, out, len(items), name, progress)
        else:
            new = _pairs_onset(info, samples, analyzer, sample_rate, side, size,
                               segment, lo, hi, tick_fps, out, len(items), name, progress)
        for item in new:
            item["source"] = source_index
        items += new
        entry["pairs"] = len(new)
        sources.append(entry)
        if progress:
            tqdm.write(f"{name}: {len(new)} pairs from {lo:.1f}..{hi:.1f} s")

    if not items:
        raise SourceError(f"no pairs: every video is shorter than the start time ({start:g} s); "
                          f"lower --start")
    extra = side.finish(out, len(items))
    manifest = {
        "version": MANIFEST_VERSION,
        "representation": representation,
        "size": size,
        # Overrides only: the bundle stores these, and AnalysisConfig(**overrides) rebuilds the same
        # (hashable, comparable) config live; the resolved values are kept for the record.
        "analysis": dict(analysis or {}),
        "analysis_resolved": resolved,
        "sample_rate": sample_rate,
        "tick_fps": tick_fps,
        "pairing": {"mode": pairing, "every": every, "start": start, "end": end,
                    "segment": segment},
        "sources": sources,
        "pairs": len(items),
        **extra,
        "items": items,
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _pair_name(index: int) -> str:
    return f"{index:06d}.png"


def _pairs_every_nth(info, samples, analyzer, sample_rate, side, size, every, lo, hi,
                     tick_fps, out, first_index, name, progress) -> list[dict]:
    from tqdm import tqdm

    # 1. frames: every Nth frame from the first one in range
    items = []
    n_in_range = 0
    with tqdm(total=int((hi - lo) * info.fps), desc=f"{name} frames", unit="frame",
              disable=not progress, leave=False) as bar:
        for t, frame in iter_frames(info.path, lo):
            if t >= hi:
                break
            if n_in_range % every == 0:
                index = first_index + len(items)
                write_png(out / "B" / _pair_name(index),
                          fit_square(frame.to_ndarray(format="rgb24"), size))
                items.append({"index": index, "frame_time": round(float(t), 4)})
            n_in_range += 1
            bar.update()
    # 2. audio: every tick through the analyzer; the image at the tick nearest each frame
    bounds = tick_bounds(len(samples), sample_rate, tick_fps)
    n_ticks = len(bounds) - 1
    wanted: dict[int, list[dict]] = {}
    for item in items:
        wanted.setdefault(nearest_tick(item["frame_time"], tick_fps, n_ticks), []).append(item)
    last = max(wanted) if wanted else 0
    with tqdm(total=last, desc=f"{name} audio", unit="tick", disable=not progress,
              leave=False) as bar:
        for k, t, features in stream_features(analyzer, samples, sample_rate, tick_fps):
            if k in wanted:
                value = side.take(features)
                for item in wanted[k]:
                    item["audio"] = side.store(out, item["index"], value)
                    item["time"] = round(float(t), 4)
            bar.update()
            if k >= last:
                break
    return [{**i.pop("audio"), "b": f"B/{_pair_name(i['index'])}", **i} for i in items]


def _pairs_onset(info, samples, analyzer, sample_rate, side, size, segment, lo, hi,
                 tick_fps, out, first_index, name, progress) -> list[dict]:
    from tqdm import tqdm

    # 1. audio: per window, the tick with the strongest onset strength (its picture or mel kept)
    best: dict[int, dict] = {}
    last_tick = int(math.floor(hi * tick_fps + 1e-9))
    with tqdm(total=last_tick, desc=f"{name} audio", unit="tick", disable=not progress,
              leave=False) as bar:
        for k, t, features in stream_features(analyzer, samples, sample_rate, tick_fps):
            bar.update()
            if t >= hi - 1e-9:
                break
            if t < lo:
                continue
            window = int((t - lo) // segment)
            strength = float(features.onset_strength)
            if window not in best or strength > best[window]["onset_strength"]:
                best[window] = {"time": round(float(t), 4), "onset_strength": round(strength, 5),
                                "value": side.take(features)}
    chosen = [best[w] for w in sorted(best)]
    # 2. frames: the frame nearest each chosen time
    items = []
    targets = iter(chosen)
    target = next(targets, None)
    previous = None  # (time, frame)
    with tqdm(total=len(chosen), desc=f"{name} frames", unit="pair", disable=not progress,
              leave=False) as bar:
        frames = iter_frames(info.path, max(0.0, lo - 1.0))
        for t, frame in frames:
            while target is not None and t >= target["time"]:
                use = previous if previous and target["time"] - previous[0] < t - target["time"] \
                    else (t, frame)
                items.append(_write_onset_pair(out, first_index + len(items), target, use, size,
                                               side))
                bar.update()
                target = next(targets, None)
            if target is None:
                break
            previous = (t, frame)
        frames.close()
        while target is not None and previous is not None:  # past the last frame
            items.append(_write_onset_pair(out, first_index + len(items), target, previous, size,
                                           side))
            target = next(targets, None)
    return items


def _write_onset_pair(out: Path, index: int, target: dict, frame: tuple, size: int, side) -> dict:
    frame_time, av_frame = frame
    audio = side.store(out, index, target["value"])
    write_png(out / "B" / _pair_name(index), fit_square(av_frame.to_ndarray(format="rgb24"), size))
    return {**audio, "b": f"B/{_pair_name(index)}", "index": index,
            "time": target["time"], "frame_time": round(float(frame_time), 4),
            "onset_strength": target["onset_strength"]}


def read_manifest(data: str | Path, mel_pairs: bool = False) -> dict:
    """dataset.json of a built dataset, checked enough to train on; one-line errors. `mel_pairs`:
    the caller wants frame + mel pairs (vae_associator); picture trainers leave it False, and each
    refuses the other kind by name."""
    data = Path(data)
    path = data / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise SourceError(f"{data} is not a dataset: no {MANIFEST_FILE} (build one with "
                          f"`vjbridge dataset build`)") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SourceError(f"{path}: not readable JSON ({e})") from None
    for key in ("representation", "size", "items"):
        if key not in manifest:
            raise SourceError(f"{path}: missing '{key}'")
    if not manifest["items"]:
        raise SourceError(f"{path}: the dataset has no pairs")
    is_mel = manifest["representation"] == MEL_PAIRS
    if mel_pairs and not is_mel:
        raise SourceError(f"{data} holds {manifest['representation']} pictures, this trainer needs "
                          f"mel pairs: build with `--representation {MEL_PAIRS} --pairing onset`")
    if is_mel and not mel_pairs:
        raise SourceError(f"{data} holds {MEL_PAIRS} (for vae_associator), this trainer needs audio "
                          f"pictures: build with --representation spectrogram (or another picture)")
    if is_mel and "mels" not in manifest:
        raise SourceError(f"{path}: missing 'mels'")
    return manifest


def read_mels(data: str | Path, manifest: dict) -> np.ndarray:
    """The (N, n_mels, mel_frames) float32 dB mels of a mel-pairs dataset, checked against it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    data = Path(data)
    info = manifest["mels"]
    path = data / info.get("file", MELS_FILE)
    try:
        mels = load_file(str(path))[info.get("tensor", MELS_TENSOR)]
    except FileNotFoundError:
        raise SourceError(f"{path} is missing (rebuild the dataset)") from None
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise SourceError(f"{path}: not a readable mels file ({' '.join(str(e).split())})") from None
    if mels.ndim != 3 or list(mels.shape) != list(info.get("shape", mels.shape)):
        raise SourceError(f"{path}: mels of shape {tuple(mels.shape)}, the manifest says "
                          f"{info.get('shape')}")
    rows = [item.get("mel") for item in manifest["items"]]
    if any(not isinstance(r, int) or not 0 <= r < len(mels) for r in rows):
        raise SourceError(f"{path}: the manifest's items point past its {len(mels)} mels")
    if not np.isfinite(mels).all():
        raise SourceError(f"{path}: mels hold NaN or infinity")
    return mels.astype(np.float32, copy=False)


def build_mel_pairs(videos: list[str | Path], out: str | Path, size: int = MEL_PAIRS_SIZE,
                    segment: float = DEFAULT_SEGMENT, start: float = 0.0,
                    end: float | None = None, analysis: dict | None = None,
                    tick_fps: float = DEFAULT_TICK_FPS, progress: bool = True) -> dict:
    """Seed 000's pairs: per `segment` seconds, the frame at the strongest onset (size x size
    PNG in B/) and the log-mel at that tick (mels.safetensors). Same as build_dataset with
    representation "mel-pairs" and pairing "onset"; `end` None: to the end of the longest video.
    Returns the manifest."""
    if end is None:
        end = float(math.ceil(max((probe_video(v).duration for v in videos), default=start + 1.0)))
    return build_dataset(videos, out, representation=MEL_PAIRS, size=size, pairing="onset",
                         start=start, end=end, segment=segment, analysis=analysis,
                         tick_fps=tick_fps, progress=progress)


def dataset_commands(data: str | Path, manifest: dict) -> list[str]:
    """The commands that remake a dataset: `dataset synth` for synthetic videos, then `dataset
    build`. Trainers append their own `train` command for a model card."""
    import shlex

    q = shlex.quote
    commands = [s["synth"]["command"] for s in manifest.get("sources", [])
                if s.get("synth") and s["synth"].get("command")]
    pairing = manifest.get("pairing", {})
    mode = pairing.get("mode", "every-nth")
    build = ["vjbridge", "dataset", "build", *[q(s["path"]) for s in manifest.get("sources", [])],
             "--out", q(str(data)), "--representation", manifest["representation"],
             "--size", str(manifest["size"]), "--pairing", mode]
    if mode == "every-nth":
        build += ["--every", str(pairing.get("every"))]
    else:
        build += ["--segment", f"{pairing.get('segment'):g}"]
    build += ["--start", f"{pairing.get('start'):g}", "--end", f"{pairing.get('end'):g}",
              "--tick-fps", f"{manifest.get('tick_fps', DEFAULT_TICK_FPS):g}"]
    for key, value in sorted(manifest.get("analysis", {}).items()):
        build += ["--analysis", q(f"{key}={json.dumps(value)}")]
    commands.append(" ".join(build))
    return commands
