"""Audio pictures drawn by torch inside the runner's call (bridge.analysis.device_pictures): the
same pictures as the numpy drawers, level for level, from real drums; the optimized runtime takes
what they are drawn from instead of the picture and makes the same frames; everything else still
gets pictures."""
import numpy as np
import pytest
import torch

from bridge.analysis.device_pictures import (BANDS_PARAMS, BandsDrawer, ColourMapDrawer, bands_params,
                                             colour_map_params)
from bridge.analysis.pictures import draw_bands
from bridge.analysis.streaming import StreamingAnalyzer
from bridge.engine import FramePipeline
from bridge.generators.base import Snapshot
from bridge.generators.pix2pix import Pix2Pix, Pix2PixConfig, image_to_tensor
from bridge.runtime import Runner
from bridge.sources.decode import decode_audio

AMEN = "/usr/share/sonic-pi/samples/loop_amen.flac"


@pytest.fixture(scope="module")
def drum_features():
    """Snapshots every 1,470 samples (30 fps) through the amen break: kicks, onsets, quiet."""
    audio = decode_audio(AMEN)
    analyzer = StreamingAnalyzer()
    features = []
    for start in range(0, len(audio) - 1470, 1470):
        analyzer.feed(audio[start:start + 1470])
        features.append(analyzer.snapshot(start / 44100))
    return features


@pytest.mark.parametrize("size", [64, 256])
def test_drawn_in_torch_matches_the_numpy_bands_picture(drum_features, size):
    drawer = BandsDrawer(size)
    params = torch.cat([bands_params(f) for f in drum_features])
    assert params.shape == (len(drum_features), len(BANDS_PARAMS))
    assert params[:, BANDS_PARAMS.index("kick")].max() > 0.5  # the drums do hit
    assert params[:, BANDS_PARAMS.index("onset")].max() > 0.5
    got = drawer(params)  # all snapshots in one batch
    assert got.shape == (len(drum_features), 3, size, size) and got.dtype == torch.float32
    reference = torch.cat([image_to_tensor(draw_bands(f, size), size) for f in drum_features])
    levels = ((got - reference).abs() * 127.5).round()
    assert levels.max() <= 1, f"off by up to {levels.max():g} levels"
    assert (levels > 0).float().mean() < 0.005
    # the pictures really differ from snapshot to snapshot (not a constant both sides agree on)
    assert (reference[1:] - reference[:-1]).abs().amax(dim=(1, 2, 3)).max() > 0.5


@pytest.mark.parametrize("size", [64, 256])
@pytest.mark.parametrize("name", ["mel", "spectrogram"])
def test_colour_mapped_pictures_drawn_in_torch_match_numpy(drum_features, name, size):
    drawer = ColourMapDrawer(size, transpose=name == "spectrogram")
    params = [colour_map_params(f, name) for f in drum_features]
    got = drawer(torch.cat([p[0] for p in params]), torch.cat([p[1] for p in params]))
    reference = torch.cat([image_to_tensor(f.representation(name, size), size) for f in drum_features])
    assert got.shape == reference.shape == (len(drum_features), 3, size, size)
    levels = ((got - reference).abs() * 127.5).round()
    # a value on a level's edge may round to the neighbouring colour entry: two levels, rarely
    assert levels.max() <= 2, f"off by up to {levels.max():g} levels"
    assert (levels > 0).float().mean() < 0.001
    assert (reference[1:] - reference[:-1]).abs().amax(dim=(1, 2, 3)).max() > 0.5


def test_drawing_keeps_full_precision_under_autocast(drum_features):
    drawer = BandsDrawer(64)
    params = bands_params(drum_features[20])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = drawer(params)
    assert got.dtype == torch.float32
    assert torch.equal(got, drawer(params))


def bands_model(size=32, input="bands"):
    torch.manual_seed(0)
    return Pix2Pix(Pix2PixConfig(size=size, ngf=4, input=input)).eval()


def test_the_optimized_runner_draws_from_five_numbers_and_makes_the_same_picture(drum_features):
    model = bands_model()
    runner = Runner(model, runtime="optimized", compile=False)
    assert runner.draws_condition and runner.info.draws_condition
    snapshot = Snapshot(audio=drum_features[12])
    from_numbers = runner(model.condition_params(snapshot))
    from_picture = runner(model.condition(snapshot))  # a picture still passes straight through
    assert from_numbers.shape == from_picture.shape == (1, 3, 32, 32)
    # same network, same picture up to a level in a few pixels: the outputs agree closely
    assert (from_numbers - from_picture).abs().max() < 0.05
    reference = Runner(model, runtime="reference")
    assert not reference.draws_condition
    assert (reference(model.condition(snapshot)) - from_numbers).abs().max() < 0.1


def test_the_pipeline_sends_numbers_only_where_the_runner_draws(drum_features):
    model = bands_model(size=64)
    snapshot = Snapshot(audio=drum_features[30])
    optimized = FramePipeline(model, runner=Runner(model, runtime="optimized", compile=False),
                              degrade=(1.0, 0.5))
    assert optimized.condition(snapshot, optimized.runner).shape == (1, 5)
    lower = optimized.level_runners[1]  # a degraded level's scaled model draws on the host
    assert not getattr(lower, "draws_condition", False)
    assert optimized.condition(snapshot, lower).shape == (1, 3, 64, 64)
    optimized.warmup(runs=1)
    reference = FramePipeline(model, runner=Runner(model, runtime="reference"))
    a, b = optimized.make_frame(snapshot), reference.make_frame(snapshot)
    assert a.shape == b.shape == (64, 64, 4)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 16
    optimized.level = 1
    assert optimized.make_frame(snapshot).shape == (64, 64, 4)


def test_a_compiled_runner_draws_the_spectrogram_from_its_array(drum_features):
    model = bands_model(input="spectrogram")
    runner = Runner(model, runtime="optimized")  # compiled, as live
    snapshot = Snapshot(audio=drum_features[25])
    params = model.condition_params(snapshot)
    assert isinstance(params, tuple) and params[1].shape == (1, 130, 513)  # (frames, bins)
    runner.warmup(params, runs=1)
    assert runner.info.compiled and runner.draws_condition
    got = runner(params)
    reference = Runner(model, runtime="reference")(model.condition(snapshot))
    assert got.shape == (1, 3, 32, 32)
    assert (got - reference).abs().max() < 0.1


@pytest.mark.parametrize("input", ["history", "waveform", "bands_history", "image"])
def test_other_pictures_have_no_drawer(input):
    model = bands_model(input=input)
    assert model.condition_drawer() is None
    assert not Runner(model, runtime="optimized", compile=False).draws_condition


def test_bench_times_whole_ticks_drawn_on_the_host_and_in_the_call():
    from bridge.bench import format_table, measure_tick

    rows = measure_tick("cpu", sizes=(64,), ngf=4, iterations=3, warmup=1)
    ways = ["reference", "optimized, picture from the host", "optimized, drawn in the call"]
    assert [(r["model"], r["runtime"]) for r in rows] == \
        [(f"pix2pix-{p}-ngf4", way) for p in ("bands", "spectrogram") for way in ways]
    assert all(0 < r["ms_p50"] <= r["ms_p95"] and r["size"] == 64 for r in rows)
    assert [r["draws_condition"] for r in rows] == [False, False, True] * 2
    assert rows[0]["speedup_vs_reference"] == 1.0
    table = format_table({"machine": {}, "results": [], "tick": rows})
    assert "tick pix2pix-spectrogram-ngf4 64² optimized, drawn in the call" in table
