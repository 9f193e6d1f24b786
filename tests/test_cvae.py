"""The conv-VAE family (seed 002): shapes, its trainer on a tiny folder of pictures, and the
music-timed linger walk fed by the real StreamingAnalyzer on synthetic drums and silence."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bridge.analysis import AnalysisConfig, AudioFeatures, StreamingAnalyzer
from bridge.errors import ConfigError, SourceError
from bridge.generators.base import Snapshot, families, load_model
from bridge.generators.cvae import CVAE, CVAEConfig
from bridge.morph.walks import LingerWalk
from bridge.train.dataset import stream_features

SR = AnalysisConfig().sample_rate
TINY = dict(size=16, latent_dim=4, widths=[4, 8])


def tiny_model() -> CVAE:
    torch.manual_seed(0)
    return CVAE(CVAEConfig(**TINY)).eval()


# --- the model ----------------------------------------------------------------------------------

def test_shapes_encode_decode_and_generate():
    model = tiny_model()
    assert families()["cvae"] is CVAE
    assert model.inputs == frozenset({"audio"}) and model.latent_dim == 4 and model.output_size == 16
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        mu = model.encode(x)
        pictures = model.decode(mu)
        recon, mu2, logvar = model.train()(x)
    assert mu.shape == (3, 4) and pictures.shape == (3, 3, 16, 16)
    assert pictures.abs().max() <= 1.0
    assert recon.shape == x.shape and mu2.shape == logvar.shape == (3, 4)
    model.eval()
    cond = model.condition(Snapshot(audio=AudioFeatures.silent()))
    assert cond.shape == (1, 0)
    with torch.no_grad():
        z = torch.randn(1, 4)
        assert torch.equal(model.generate(cond, z), model.decode(z))
        assert model.generate(cond).shape == (1, 3, 16, 16)  # no walk: the latents' mean
    assert model.latent_stats.shape == (2, 4)


@pytest.mark.parametrize("changes", [dict(size=20), dict(size=0), dict(latent_dim=0),
                                     dict(widths=[]), dict(widths=[4, 8, 16, 32]),
                                     dict(widths=[4, -1]), dict(widths="wide"), dict(analysis=3)])
def test_bad_configs_are_refused(changes):
    with pytest.raises(ValueError):
        CVAEConfig(**{**TINY, **changes})


def test_navigator_uses_the_latent_statistics_and_refuses_unknown_walks():
    model = tiny_model()
    model.latent_stats.copy_(torch.tensor([[5.0, 5.0, -5.0, 0.0], [0.01, 0.01, 0.01, 0.01]]))
    walk = model.navigator(seed=3)
    z = torch.cat([walk.step(AudioFeatures.silent(), 1 / 30) for _ in range(30)])
    assert torch.allclose(z.mean(0), torch.tensor([5.0, 5.0, -5.0, 0.0]), atol=0.1)
    with pytest.raises(ConfigError, match="no walk 'orbit'"):
        model.navigator("orbit")
    with pytest.raises(ConfigError, match="no parameter 'speed'"):
        model.navigator(speed=2.0)


# --- the trainer --------------------------------------------------------------------------------

def write_pictures(folder, count: int = 24, size: int = 16):
    """Coloured rectangles on gradients: structure a tiny VAE can learn in a few steps."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, size)
    for i in range(count):
        picture = np.empty((size, size, 3))
        picture[...] = (ramp[:, None, None] * rng.random(3) + ramp[None, :, None] * rng.random(3)) / 2
        y, x = rng.integers(0, size // 2, 2)
        picture[y:y + size // 2, x:x + size // 2] = rng.random(3)
        Image.fromarray((picture * 255).astype(np.uint8)).save(folder / f"p{i:02d}.png")


def test_trainer_lowers_the_loss_and_writes_a_bundle_that_loads(tmp_path):
    from bridge.train.cvae import train_cvae
    from bridge.train.images import ImageSet, load_image_folder

    write_pictures(tmp_path / "pictures")
    out = train_cvae(tmp_path / "pictures", tmp_path / "model", epochs=6, batch_size=8, lr=3e-3,
                     progress=False, threads=1, prepare_commands=["echo made the pictures"], **TINY)
    config = json.loads((out / "config.json").read_text())
    history = config["training"]["history"]
    assert len(history) == 6 and history[-1]["recon"] < 0.7 * history[0]["recon"]
    assert config["weights"]["dtype"] == "float16" and config["config"]["widths"] == [4, 8]
    for name in ("loss.png", "samples/epoch_0001.png", "samples/epoch_0006.png", "weights.safetensors"):
        assert (out / name).is_file(), name
    card = (out / "card.md").read_text()
    assert "echo made the pictures" in card and "vjbridge train cvae --images" in card

    model = load_model(out)
    stats = model.latent_stats
    assert not torch.equal(stats, torch.stack([torch.zeros(4), torch.ones(4)]))
    with torch.no_grad():  # the stored statistics are those of the training pictures' latents
        mu = model.encode(ImageSet(load_image_folder(tmp_path / "pictures", 16)).batch(range(24)))
    assert torch.allclose(stats[0], mu.mean(0), atol=2e-2, rtol=2e-2)
    assert torch.allclose(stats[1], mu.std(0, unbiased=False), atol=2e-2, rtol=2e-2)


def test_trainer_refuses_empty_folders_and_stray_files(tmp_path):
    from bridge.train.cvae import train_cvae

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no images"):
        train_cvae(tmp_path / "empty", tmp_path / "out", progress=False, **TINY)
    write_pictures(tmp_path / "mixed", count=2)
    (tmp_path / "mixed" / "notes.pdf").write_bytes(b"%PDF")
    with pytest.raises(SourceError, match="notes.pdf is not an image"):
        train_cvae(tmp_path / "mixed", tmp_path / "out", progress=False, **TINY)
    with pytest.raises(ConfigError):
        train_cvae(tmp_path / "mixed", tmp_path / "out", epochs=0, progress=False, **TINY)


# --- the walk -----------------------------------------------------------------------------------

def drums(seconds: float, bpm: float = 120.0) -> np.ndarray:
    """A kick (decaying 55 Hz sine plus a noise click) on every beat over a faint noise bed."""
    rng = np.random.default_rng(1)
    audio = 0.003 * rng.standard_normal(int(seconds * SR))
    t = np.arange(int(0.25 * SR)) / SR
    hit = (0.8 * np.sin(2 * np.pi * 55 * t) * np.exp(-t / 0.08)
           + 0.4 * rng.standard_normal(len(t)) * np.exp(-t / 0.01))
    for start in range(0, len(audio) - len(t), int(60 / bpm * SR)):
        audio[start:start + len(t)] += hit
    return audio.astype(np.float32)


def features(audio: np.ndarray, fps: float) -> list[AudioFeatures]:
    return [f for _, _, f in stream_features(StreamingAnalyzer(), audio, SR, fps)]


def walk_path(feats, fps: float, seed: int = 0, dim: int = 8, **params) -> tuple[np.ndarray, LingerWalk]:
    walk = LingerWalk(dim, seed=seed, **params)
    return np.concatenate([walk.step(f, 1.0 / fps).numpy() for f in feats]), walk


def steps(path: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.diff(path, axis=0), axis=1)


@pytest.fixture(scope="module")
def drum_features():
    return {fps: features(drums(20.0), fps) for fps in (30, 60)}


@pytest.fixture(scope="module")
def silent_features():
    return features(np.zeros(20 * SR, dtype=np.float32), 30)


def test_silence_lingers_calmly_and_onsets_move_it(drum_features, silent_features):
    quiet, quiet_walk = walk_path(silent_features, 30)
    loud, loud_walk = walk_path(drum_features[30], 30)
    # Silence: small steps, the jitter at `calm` of sigma, the linger clock slowed down.
    assert np.percentile(steps(quiet), 95) < 0.2 * np.percentile(steps(loud), 95)
    assert np.mean(steps(quiet)) < 0.3 * np.mean(steps(loud))
    assert quiet_walk.moves <= 3
    # Kicks end lingers once min_linger_s has passed: the walk keeps leaving its targets.
    assert loud_walk.moves >= 8
    # The picture moves on the tick of an onset: step size follows onset strength.
    strength = np.array([f.onset_strength for f in drum_features[30]])[1:]
    assert np.corrcoef(steps(loud), strength)[0, 1] > 0.4


def test_same_seed_same_path_and_reset_repeats(drum_features):
    feats = drum_features[30][:200]
    a, walk = walk_path(feats, 30, seed=7)
    b, _ = walk_path(feats, 30, seed=7)
    c, _ = walk_path(feats, 30, seed=8)
    assert np.array_equal(a, b) and not np.allclose(a, c)
    walk.reset()
    again = np.concatenate([walk.step(f, 1 / 30).numpy() for f in feats])
    assert np.array_equal(a, again)


def jitter_offsets(feats, fps: float) -> np.ndarray:
    walk, out = LingerWalk(16, seed=0), []
    for f in feats:
        walk.step(f, 1.0 / fps)
        out.append(walk.offset.copy())
    return np.array(out)


def test_tick_rate_does_not_change_the_walk_much(drum_features, silent_features):
    silence60 = features(np.zeros(20 * SR, dtype=np.float32), 60)
    for feats30, feats60 in ((drum_features[30], drum_features[60]), (silent_features, silence60)):
        # Moves per 20 s, latent travel per half second, and the AR(1) jitter's spread (the
        # same at any tick by its exact discretisation), over four seeds.
        moves, spread, travel = {}, {}, {}
        for fps, feats in ((30, feats30), (60, feats60)):
            runs = [walk_path(feats, fps, seed=s, dim=16) for s in range(4)]
            moves[fps] = sum(w.moves for _, w in runs)
            every = fps // 2  # displacement over half a second, whatever the tick
            travel[fps] = np.mean([np.linalg.norm(p[every:] - p[:-every], axis=1).mean() for p, _ in runs])
            spread[fps] = np.std(jitter_offsets(feats, fps)[fps * 3:])  # after 3 s of warm-up
        assert abs(moves[30] - moves[60]) <= max(3, 0.25 * moves[30]), moves
        assert 0.75 < travel[30] / travel[60] < 1.33, travel
        assert 0.75 < spread[30] / spread[60] < 1.33, spread


@pytest.mark.parametrize("params", [dict(rho=1.0), dict(rho=-0.1), dict(linger_s=0), dict(move_s=-1),
                                    dict(sigma=-0.1), dict(calm=1.5), dict(trigger=2), dict(path="curve"),
                                    dict(spread=float("nan")), dict(onset_push="big"), dict(speed=2)])
def test_bad_walk_parameters_are_refused(params):
    with pytest.raises(ConfigError, match="linger walk"):
        LingerWalk(4, **params)


def test_walk_checks_its_statistics_and_survives_odd_ticks():
    with pytest.raises(ConfigError, match="center must be 4"):
        LingerWalk(4, center=np.zeros(3))
    with pytest.raises(ConfigError, match="scale"):
        LingerWalk(4, scale=-np.ones(4))
    walk = LingerWalk(4, seed=0, path="slerp")
    first = walk.step(None, 0.0)
    assert torch.equal(first, walk.step(None, 0.0))  # dt = 0 (warm-up) does not move it
    for dt in (1 / 30, 5.0, -1.0):  # a stall, a clock that went back
        z = walk.step(AudioFeatures.silent(), dt)
        assert z.shape == (1, 4) and z.dtype == torch.float32 and torch.isfinite(z).all()


def test_the_live_pipeline_runs_the_walk_and_moves_on_hits():
    """FramePipeline (the engine's per-frame path) with the default walk: RGBA frames that change
    more on the drums than in silence."""
    from bridge.engine import FramePipeline

    pipeline = FramePipeline(tiny_model(), walk=None, seed=0)
    assert pipeline.navigator.mode == "linger"
    pipeline.warmup(runs=1)
    audio = np.concatenate([np.zeros(4 * SR, dtype=np.float32), drums(4.0)])
    hop = SR // 30
    frames = []
    for i, start in enumerate(range(0, len(audio) - hop + 1, hop)):
        pipeline.feed_audio(audio[start:start + hop])
        frames.append(pipeline.make_frame(pipeline.snapshot((i + 1) / 30), 1 / 30))
    assert frames[0].shape == (16, 16, 4) and frames[0].dtype == np.uint8
    change = np.abs(np.diff(np.stack(frames).astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
    assert change[120:].mean() > 3 * change[30:119].mean()
