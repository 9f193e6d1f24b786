"""Conditioning drawn by torch inside the runner's call (bridge.analysis.device_pictures): audio
pictures the same as the numpy drawers, level for level, from real drums, and camera frames sent
as uint8 and scaled there exactly as on the host; the optimized runtime takes what they are drawn
from instead of the picture and makes the same frames; everything else still gets pictures."""
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


def test_the_pipeline_sends_numbers_wherever_the_runner_draws(drum_features):
    model = bands_model(size=64)
    snapshot = Snapshot(audio=drum_features[30])
    optimized = FramePipeline(model, runner=Runner(model, runtime="optimized", compile=False),
                              degrade=(1.0, 0.5))
    assert optimized.condition(snapshot, optimized.runner).shape == (1, 5)
    lower = optimized.level_runners[1]  # a degraded level draws the full picture too, then shrinks it
    assert lower.draws_condition
    assert optimized.condition(snapshot, lower).shape == (1, 5)
    optimized.warmup(runs=1)
    reference = FramePipeline(model, runner=Runner(model, runtime="reference"), degrade=(1.0, 0.5))
    a, b = optimized.make_frame(snapshot), reference.make_frame(snapshot)
    assert a.shape == b.shape == (64, 64, 4)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 16
    reference_lower = reference.level_runners[1]
    assert not reference_lower.draws_condition
    assert reference.condition(snapshot, reference_lower).shape == (1, 3, 64, 64)
    full = a
    optimized.level = reference.level = 1
    a, b = optimized.make_frame(snapshot), reference.make_frame(snapshot)
    assert a.shape == (64, 64, 4)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 16
    assert np.abs(a.astype(int) - full.astype(int)).max() > 16  # the half-size network's picture


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


# --- the pictures drawn from arrays: waveform, history, bands_history ----------------------------------

@pytest.mark.parametrize("n, columns", [(2048, 256), (2048, 512), (861, 1024), (100, 7), (5, 64), (2, 256)])
def test_column_spans_reduce_exactly_as_the_numpy_helpers(n, columns):
    """Shrinking (several values a column, spans of unequal length) and stretching (a value
    repeated over columns): the gathered max and min are numpy's reduceat, bit for bit."""
    from bridge.analysis.device_pictures import _column_reduce
    from bridge.analysis.drawing import column_extremes, column_max
    values = np.random.default_rng(n + columns).standard_normal((n, 6)).astype(np.float32)
    assert np.array_equal(_column_reduce(torch.from_numpy(values)[None], columns, "max")[0].numpy(),
                          column_max(values, columns))
    low, high = column_extremes(values[:, 0], columns)
    trace = torch.from_numpy(values[:, 0].copy())[None]
    assert np.array_equal(_column_reduce(trace, columns, "min")[0].numpy(), low)
    assert np.array_equal(_column_reduce(trace, columns, "max")[0].numpy(), high)


@pytest.mark.parametrize("size", [64, 256])
@pytest.mark.parametrize("name", ["waveform", "history", "bands_history"])
def test_pictures_drawn_from_arrays_in_torch_match_numpy(drum_features, name, size):
    from bridge.analysis.device_pictures import audio_drawer, audio_params
    drawer = audio_drawer(name, size)
    params = [audio_params(f, name, size) for f in drum_features]
    got = drawer(*[torch.cat(column) for column in zip(*params)])  # all snapshots in one batch
    reference = torch.cat([image_to_tensor(f.representation(name, size), size) for f in drum_features])
    assert got.shape == reference.shape == (len(drum_features), 3, size, size)
    levels = ((got - reference).abs() * 127.5).round()
    assert levels.max() <= 1, f"off by up to {levels.max():g} levels"
    assert (levels > 0).float().mean() < 1e-5
    assert (reference[1:] - reference[:-1]).abs().amax(dim=(1, 2, 3)).max() > 0.5


@pytest.mark.parametrize("input", ["waveform", "history", "bands_history"])
def test_every_audio_picture_is_drawn_in_the_compiled_call_and_compiles_once(drum_features, input):
    """A live pipeline on the compiled runner: what it uploads is the arrays the picture is drawn
    from (their shapes fixed by the analysis, so warm-up's compile serves every frame), and its
    frames are the host-picture frames."""
    from torch._dynamo.utils import counters
    model = bands_model(input=input)
    pipeline = FramePipeline(model, runner=Runner(model, runtime="optimized"))
    assert pipeline.runner.draws_condition
    pipeline.warmup(runs=1)
    assert pipeline.runner.info.compiled
    compiled = counters["stats"]["unique_graphs"]
    audio = decode_audio(AMEN)
    frames, pictures = [], []
    for start in range(0, 44100, 14700):  # a third of a second between frames
        pipeline.feed_audio(audio[start:start + 14700])
        snapshot = pipeline.snapshot(start / 44100)
        cond = pipeline.condition(snapshot, pipeline.runner)
        tensors = cond if isinstance(cond, tuple) else (cond,)
        assert all(t.dim() < 4 and t.dtype == torch.float32 for t in tensors)  # not a picture
        pictures.append((pipeline.runner(cond), model.condition(snapshot)))
        frames.append(pipeline.make_frame(snapshot, 1 / 30))
    assert counters["stats"]["unique_graphs"] == compiled
    host = Runner(model, runtime="optimized", compile=False)  # given the host's picture
    for drawn, picture in pictures:
        assert (drawn - host(picture)).abs().max() < 0.1
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).max() > 10  # it follows the sound


def test_bench_times_whole_ticks_drawn_on_the_host_and_in_the_call():
    from bridge.bench import format_table, measure_tick

    rows = measure_tick("cpu", sizes=(64,), ngf=4, iterations=3, warmup=1)
    ways = ["reference", "optimized, picture from the host", "optimized, drawn in the call"]
    assert [(r["model"], r["runtime"]) for r in rows] == \
        [(f"pix2pix-{p}-ngf4", way) for p in ("bands", "spectrogram", "image") for way in ways]
    assert all(0 < r["ms_p50"] <= r["ms_p95"] and r["size"] == 64 for r in rows)
    assert [r["draws_condition"] for r in rows] == [False, False, True] * 3
    assert rows[0]["speedup_vs_reference"] == 1.0
    table = format_table({"machine": {}, "results": [], "tick": rows})
    assert "tick pix2pix-spectrogram-ngf4 64² optimized, drawn in the call" in table


# --- camera frames: uint8 to the call, scaled there ---------------------------------------------------

@pytest.fixture(scope="module")
def camera_frames():
    """Real photographs as a camera delivers them (H, W, 3) uint8: one square, two not."""
    from skimage import data
    return [data.astronaut(), data.chelsea(), data.coffee()]


def camera_model(size=32):
    torch.manual_seed(0)
    return Pix2Pix(Pix2PixConfig(size=size, ngf=4, input="image")).eval()


def test_camera_frames_scaled_on_the_device_are_the_host_pictures_exactly(camera_frames):
    from bridge.analysis.device_pictures import FrameDrawer
    from bridge.generators.vae_associator import VAEAssociator, VAEAssociatorConfig
    pix = camera_model(size=64)
    vae = VAEAssociator(VAEAssociatorConfig(image_size=16, image_widths=(4, 8), image_bottleneck=2,
                                            image_latent=8, sound_latent=8, sound_hidden=(16,),
                                            associator_hidden=8, associator_latent=4)).eval()
    assert isinstance(pix.condition_drawer(), FrameDrawer) and isinstance(vae.condition_drawer(), FrameDrawer)
    drawer = FrameDrawer()
    for frame in camera_frames:
        snapshot = Snapshot(image=frame)
        params = pix.condition_params(snapshot)
        assert params.dtype == torch.uint8 and params.shape == (1, 64, 64, 3)  # a quarter of the bytes
        assert torch.equal(drawer(params), pix.condition(snapshot))
        vae_frame, vae_mel = vae.condition_params(snapshot)  # the centre square, not the squashed frame
        host_picture, host_mel = vae.condition(snapshot)
        drawn_picture, drawn_mel = drawer(vae_frame, vae_mel)
        assert vae_frame.dtype == torch.uint8 and torch.equal(drawn_picture, host_picture)
        assert drawn_mel is vae_mel and torch.equal(vae_mel, host_mel)  # the mel passes as it is
    # no camera: mid-grey, half a level from the host's zeros, in the same shape and type
    grey = pix.condition_params(Snapshot())
    assert grey.dtype == torch.uint8 and grey.shape == (1, 64, 64, 3)
    assert (drawer(grey) - pix.condition(Snapshot())).abs().max() <= 0.5 / 127.5 + 1e-7


def test_a_compiled_runner_takes_uint8_frames_and_makes_the_host_pictures_frame(camera_frames):
    model = camera_model()
    runner = Runner(model, runtime="optimized")
    assert runner.draws_condition
    snapshot = Snapshot(image=camera_frames[2])
    runner.warmup(model.condition_params(snapshot), runs=1)
    assert runner.info.compiled
    got = runner(model.condition_params(snapshot))
    assert torch.equal(got, runner(model.condition(snapshot)))  # the same input, drawn or given
    reference = Runner(model, runtime="reference")(model.condition(snapshot))
    assert got.shape == (1, 3, 32, 32) and (got - reference).abs().max() < 0.1
    other = runner(model.condition_params(Snapshot(image=camera_frames[0])))
    assert (other - got).abs().max() > 0.05  # it does look at the frame


def test_a_camera_pipeline_compiles_once_whether_the_camera_is_there_or_not(camera_frames):
    """Warm-up runs without a frame (the camera has not delivered one yet): the first real frame,
    and a camera lost mid-set, must reuse what warm-up compiled, not compile on the live thread."""
    from torch._dynamo.utils import counters
    model = camera_model()
    pipeline = FramePipeline(model, runner=Runner(model, runtime="optimized"))
    pipeline.warmup(runs=1)
    compiled = counters["stats"]["unique_graphs"]
    frames = []
    for image in (camera_frames[0], None, camera_frames[1]):
        snapshot = pipeline.snapshot(0.1, image=image)
        cond = pipeline.condition(snapshot, pipeline.runner)
        assert cond.dtype == torch.uint8 and cond.shape == (1, 32, 32, 3)
        frames.append(pipeline.make_frame(snapshot, 1 / 30))
    assert counters["stats"]["unique_graphs"] == compiled
    assert all(f.shape == (32, 32, 4) and f.dtype == np.uint8 for f in frames)
    assert np.abs(frames[0].astype(int) - frames[2].astype(int)).max() > 10


def test_the_vae_associator_runner_is_given_uint8_frames_and_plays_the_same(camera_frames):
    from bridge.generators.vae_associator import VAEAssociator, VAEAssociatorConfig
    torch.manual_seed(0)
    model = VAEAssociator(VAEAssociatorConfig(image_size=16, image_widths=(4, 8), image_bottleneck=2,
                                              image_latent=8, sound_latent=8, sound_hidden=(16,),
                                              associator_hidden=8, associator_latent=4)).eval()
    runner = Runner(model, runtime="optimized", compile=False)
    assert runner.draws_condition
    snapshot = Snapshot(image=camera_frames[1])
    drawn_picture, drawn_mel = runner(model.condition_params(snapshot))
    host_picture, host_mel = runner(model.condition(snapshot))  # the host's tuple passes too
    assert torch.equal(drawn_picture, host_picture) and torch.equal(drawn_mel, host_mel)
    assert drawn_picture.shape == (1, 3, 16, 16)
