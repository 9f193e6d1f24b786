"""bridge.train on real files: a few-second ffmpeg video with a real sonic-pi loop as its sound,
pairs through the live analyzer, tiny pix2pix runs (size 32, ngf 4), a synthetic music video."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from bridge.errors import BridgeError, SourceError

SAMPLES = Path("/usr/share/sonic-pi/samples")
LOOP = SAMPLES / "loop_amen.flac"
SECONDS = 4

pytestmark = pytest.mark.skipif(not LOOP.is_file() or shutil.which("ffmpeg") is None,
                                reason="needs ffmpeg and Debian's sonic-pi-samples")


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=60)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train")


@pytest.fixture(scope="module")
def video(work) -> Path:
    """4 s of testsrc (96x64, 30 fps) with the amen break looped under it."""
    path = work / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size=96x64:rate=30:duration={SECONDS}",
           "-stream_loop", "-1", "-i", str(LOOP), "-t", str(SECONDS),
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path))
    return path


@pytest.fixture(scope="module")
def dataset(work, video) -> Path:
    from bridge.train.dataset import build_dataset

    out = work / "ds32"
    build_dataset([video], out, representation="bands", size=32, every=15, start=0.0,
                  progress=False)
    return out


def _png(path: Path) -> np.ndarray:
    import cv2
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]


# --- dataset ---------------------------------------------------------------------------------------

def test_every_nth_pairs_frames_in_range_with_the_live_picture(work, video):
    from bridge.analysis import AnalysisConfig, StreamingAnalyzer
    from bridge.sources.audio import decode_audio
    from bridge.train.dataset import build_dataset, tick_bounds

    out = work / "every"
    manifest = build_dataset([video], out, representation="spectrogram", size=32, every=15,
                             start=1.0, end=90.0, progress=False)
    # frames 30..119 in [1 s, 4 s): every 15th from the first is 30, 45, ..., 105
    assert manifest["pairs"] == 6
    assert [round(i["frame_time"] * 30) for i in manifest["items"]] == [30, 45, 60, 75, 90, 105]
    assert manifest["sources"][0]["end"] <= SECONDS + 0.1  # the 90 s end clamped to the video
    saved = json.loads((out / "dataset.json").read_text())
    assert saved["representation"] == "spectrogram" and saved["size"] == 32
    assert saved["pairing"]["mode"] == "every-nth" and saved["pairing"]["every"] == 15
    assert len(list((out / "A").glob("*.png"))) == len(list((out / "B").glob("*.png"))) == 6
    for item in saved["items"]:
        assert abs(item["time"] - item["frame_time"]) <= 1 / 30 + 1e-6
        assert _png(out / item["a"]).shape == _png(out / item["b"]).shape == (32, 32, 3)

    # A is what the live path draws at that tick: the analyzer fed in 1/30 s ticks from the start.
    item = saved["items"][2]
    config = AnalysisConfig()
    samples = decode_audio(video, sample_rate=config.sample_rate)
    bounds = tick_bounds(len(samples), config.sample_rate, 30.0)
    analyzer = StreamingAnalyzer(config)
    tick = round(item["time"] * 30)
    for k in range(1, tick + 1):
        analyzer.feed(samples[bounds[k - 1]:bounds[k]])
        features = analyzer.snapshot(bounds[k] / config.sample_rate)
    assert np.array_equal(features.representation("spectrogram", 32), _png(out / item["a"]))


def test_onset_pairing_takes_one_frame_per_segment_at_the_strongest_onset(work, video):
    from bridge.train.dataset import build_dataset

    out = work / "onset"
    manifest = build_dataset([video], out, representation="bands", size=32, pairing="onset",
                             segment=1.0, start=0.0, end=90.0, progress=False)
    assert manifest["pairs"] == SECONDS
    for window, item in enumerate(manifest["items"]):
        assert window <= item["time"] < window + 1
        assert abs(item["time"] - item["frame_time"]) <= 1 / 30 + 1e-6
        assert item["onset_strength"] > 0  # the amen break hits in every second
        assert _png(out / item["b"]).shape == (32, 32, 3)
    assert len(list((out / "A").glob("*.png"))) == SECONDS


def test_corrupt_video_is_a_one_line_error_naming_the_file(work, capsys):
    from bridge.train.commands import register
    from bridge.train.dataset import build_dataset

    bad = work / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(SourceError) as caught:
        build_dataset([bad], work / "bad_ds", progress=False)
    message = str(caught.value)
    assert "\n" not in message and str(bad) in message and "cannot read video" in message

    parser = argparse.ArgumentParser(prog="vjbridge")
    register(parser.add_subparsers())
    args = parser.parse_args(["dataset", "build", str(bad), "--out", str(work / "bad_ds"), "--quiet"])
    assert args.func(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("vjbridge: cannot read video") and "\n" not in err


def test_video_without_audio_is_a_clear_error(work):
    from bridge.train.dataset import build_dataset

    mute = work / "mute.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=30:duration=1", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(mute))
    with pytest.raises(SourceError, match="has no audio track"):
        build_dataset([mute], work / "mute_ds", progress=False)


# --- training --------------------------------------------------------------------------------------

def test_train_writes_samples_curve_checkpoint_and_a_bundle_that_runs_then_resumes(work, dataset):
    from bridge.analysis import AnalysisConfig, StreamingAnalyzer
    from bridge.generators.base import Snapshot, load_model
    from bridge.sources.audio import decode_audio
    from bridge.train.pix2pix import train_pix2pix

    out = work / "bundle"
    train_pix2pix(dataset, out, epochs=2, ngf=4, progress=False, save_dtype=torch.float16)
    for name in ("samples/epoch_0001.png", "samples/epoch_0002.png", "loss.png",
                 "checkpoint/state.safetensors", "checkpoint/state.json", "config.json",
                 "weights.safetensors", "card.md"):
        assert (out / name).is_file(), name
    grid = _png(out / "samples/epoch_0002.png")
    assert grid.shape[0] == 3 * 32 and grid.shape[1] % 32 == 0  # condition | generated | target
    state = json.loads((out / "checkpoint/state.json").read_text())
    assert state["epoch"] == 2 and len(state["history"]) == 2
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["input"] == "bands" and config["weights"]["dtype"] == "float16"
    assert config["training"]["epochs"] == 2
    assert "vjbridge train pix2pix" in (out / "card.md").read_text()

    model = load_model(out)
    analyzer = StreamingAnalyzer(AnalysisConfig(**model.config.analysis))
    analyzer.feed(decode_audio(LOOP)[:44_100])
    with torch.inference_mode():
        frame = model.generate(model.condition(Snapshot(audio=analyzer.snapshot(1.0))))
    assert frame.shape == (1, 3, 32, 32) and torch.isfinite(frame).all()

    # Resume: one more epoch on top of the checkpoint, the first two left as they were.
    train_pix2pix(dataset, out, epochs=3, ngf=4, progress=False)
    resumed = json.loads((out / "checkpoint/state.json").read_text())
    assert resumed["epoch"] == 3 and resumed["history"][:2] == state["history"]
    assert resumed["step"] == state["step"] * 3 // 2
    assert (out / "samples/epoch_0003.png").is_file()

    with pytest.raises(BridgeError, match="ngf"):  # a checkpoint of another shape is refused
        train_pix2pix(dataset, out, epochs=4, ngf=8, progress=False)
    train_pix2pix(dataset, out, epochs=1, ngf=8, progress=False, resume=False)
    assert json.loads((out / "checkpoint/state.json").read_text())["epoch"] == 1


def test_generator_l1_goes_down_on_a_tiny_fixed_dataset(work, dataset):
    from bridge.train.pix2pix import train_pix2pix

    out = work / "l1"
    train_pix2pix(dataset, out, epochs=10, ngf=4, batch_size=2, lr=1e-3, augment=False,
                  progress=False)
    history = json.loads((out / "checkpoint/state.json").read_text())["history"]
    l1 = [h["g_l1"] for h in history]
    assert l1[-1] < 0.85 * l1[0] and l1[-1] == min(l1), l1


# --- synthetic videos and the command line ----------------------------------------------------------

def test_synth_video_has_sound_and_pictures_that_follow_it(work):
    import av

    from bridge.train.synth import make_synth_video

    out = work / "synth.mp4"
    info = make_synth_video([LOOP], "skimage", out, size=64, seconds=3.0, progress=False)
    assert info["frames"] == 91 and info["cuts"] >= 2
    sidecar = json.loads((work / "synth.synth.json").read_text())
    assert sidecar["command"].startswith("vjbridge dataset synth --audio")
    with av.open(str(out)) as container:
        assert container.streams.audio and container.streams.video
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert frames.shape == (91, 64, 64, 3)
    change = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
    assert change.max() > 4 * np.median(change)  # cuts and flashes, not a slideshow drift


def test_commands_have_help_for_every_option(capsys):
    from bridge.train.commands import register

    parser = argparse.ArgumentParser(prog="vjbridge")
    register(parser.add_subparsers())
    for argv, wanted in ((["dataset", "build"], ["--representation", "--pairing", "--every",
                                                  "--start", "--end", "--size"]),
                         (["dataset", "synth"], ["--audio", "--images", "--seconds"]),
                         (["train", "pix2pix"], ["--epochs", "--batch-size", "--ngf", "--lr",
                                                 "--fp16-weights", "--no-resume"])):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([*argv, "--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        for option in wanted:
            assert option in text, (argv, option)
    args = parser.parse_args(["train"])
    assert args.func(args) == 2  # a group alone prints its help


def test_evaluate_measures_frame_change_against_onset_strength(work, dataset):
    from bridge.generators.base import load_model
    from bridge.train.evaluate import onset_correlation
    from bridge.train.pix2pix import train_pix2pix

    out = work / "evaluated"
    train_pix2pix(dataset, out, epochs=1, ngf=4, progress=False)
    result = onset_correlation(load_model(out), LOOP, seconds=3.0, teacher=False)
    assert result["frames"] == 3 * 30 - 1 - 30  # one second of warm-up left out
    assert -1.0 <= result["r"] <= 1.0 and result["mean_change"] > 0
