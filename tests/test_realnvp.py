"""The RealNVP family (exact inverse, exact log-determinant, likelihood in bits per dimension),
its trainer and anchors on real PNG folders, and the three anchor navigators driven by real
AudioFeatures from the streaming analyzer (synthetic kicks and hats, and silence)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from bridge.analysis import AudioFeatures, StreamingAnalyzer
from bridge.errors import ConfigError, SourceError
from bridge.generators.base import Snapshot, families, load_model, save_bundle
from bridge.generators.realnvp import (
    LOGIT_ALPHA, PRESETS, STAND_IN_ANCHORS, RealNVP, RealNVPConfig, preset_config, with_anchors,
)
from bridge.morph.anchors import NAVIGATORS, make_navigator
from bridge.train.dataset import stream_features
from bridge.train.images import load_image_folder, to_uint8, to_unit
from bridge.train.realnvp import add_anchors, train_realnvp

SR = 44_100
FPS = 30.0
TINY = {"hidden": 8, "resblocks": 1}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: a second OpenMP thread only adds synchronisation (and spins on a busy CI box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(size: int = 8, seed: int = 0, wiggle: float = 0.05) -> RealNVP:
    """A tiny flow after ActNorm initialisation, with every weight pushed off its start (the
    zero-initialised s/t outputs included) so it is far from the identity."""
    torch.manual_seed(seed)
    model = RealNVP(RealNVPConfig(size=size, **TINY))
    model.initialize(torch.randint(0, 256, (16, 3, size, size), dtype=torch.uint8))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * wiggle)
    return model.eval()


def write_pictures(folder, n: int, size: int, seed: int = 0) -> list:
    """Smooth coloured gradients with a little noise: learnable, and each one different."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    paths = []
    for i in range(n):
        a, b, c = rng.uniform(0, 1, 3)
        rgb = np.stack([a * yy + (1 - a) * xx, b * (1 - yy), c * xx * yy + 0.3], -1)
        rgb = np.clip(rgb * 230 + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)
        path = folder / f"pic_{i:02d}.png"
        Image.fromarray(rgb).save(path)
        paths.append(path)
    return paths


# --- the flow ------------------------------------------------------------------------------------

def test_decode_is_the_exact_inverse_of_encode():
    model = tiny_model(size=16)
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    x[0] = to_unit(torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8))[0]
    x[1, :, :4] = -1.0  # the ends of the range, where the logit is steepest
    x[1, :, 4:8] = 1.0
    with torch.no_grad():
        z = model.encode(x)
        back = model.decode(z)
    assert z.shape == (6, 3 * 16 * 16) and z.dtype == torch.float32
    assert (back - x).abs().max() < 1e-4
    assert (z - x.flatten(1)).abs().mean() > 0.5  # not the identity


def test_log_determinant_equals_the_autograd_jacobian():
    model = tiny_model(size=4, wiggle=0.2).double()
    x01 = torch.rand(1, 3, 4, 4, dtype=torch.float64) * 0.9 + 0.05
    with torch.no_grad():
        _, logdet = model.forward_flow(x01)
    jac = torch.autograd.functional.jacobian(
        lambda flat: model.forward_flow(flat.view(1, 3, 4, 4))[0][0], x01.flatten())
    sign, logabsdet = torch.linalg.slogdet(jac)
    assert jac.shape == (48, 48) and sign != 0
    assert abs(float(logdet) - float(logabsdet)) < 1e-6 * max(1.0, abs(float(logabsdet)))
    # every part of the flow contributes: the logit alone would give a different number
    p = LOGIT_ALPHA + (1 - 2 * LOGIT_ALPHA) * x01
    logit_only = (math.log(1 - 2 * LOGIT_ALPHA) - torch.log(p) - torch.log1p(-p)).sum()
    assert abs(float(logdet) - float(logit_only)) > 1.0


def test_bits_per_dim_of_the_untrained_identity_flow():
    """Fresh (zero-initialised couplings, ActNorm at identity): z is the logit of the pixels, so
    bits/dim follows from the change of variables by hand."""
    model = RealNVP(RealNVPConfig(size=8, **TINY))
    x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(5)
    bpd = model.nll_bits_per_dim(x, generator=gen)
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(5))
    p = LOGIT_ALPHA + (1 - 2 * LOGIT_ALPHA) * (x.double() + u.double()) / 256
    y = torch.log(p / (1 - p))
    log_px = (-0.5 * y ** 2 - 0.5 * math.log(2 * math.pi)
              + math.log(1 - 2 * LOGIT_ALPHA) - torch.log(p * (1 - p))).flatten(1).sum(1)
    dims = 3 * 8 * 8
    expected = (-log_px + dims * math.log(256)) / (dims * math.log(2))
    assert bpd.shape == (3,)
    torch.testing.assert_close(bpd.double(), expected, rtol=1e-5, atol=1e-5)


def test_actnorm_normalises_the_first_batch_and_train_equals_eval():
    torch.manual_seed(0)
    model = RealNVP(RealNVPConfig(size=8, **TINY))
    x = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    model.initialize(x)
    first_coupling, first_norm = model.flow.scales[0][0], model.flow.scales[0][1]
    with torch.no_grad():
        p = LOGIT_ALPHA + (1 - 2 * LOGIT_ALPHA) * (x.float() + 0.5) / 256
        h, _ = first_coupling(torch.log(p) - torch.log1p(-p))
        normed, _ = first_norm(h)
    assert normed.mean(dim=(0, 2, 3)).abs().max() < 0.05
    assert (normed.std(dim=(0, 2, 3)) - 1).abs().max() < 0.05
    z = torch.randn(2, model.latent_dim)
    with torch.no_grad():
        assert torch.equal(model.train().decode(z), model.eval().decode(z))


def test_family_is_registered_and_runs_live():
    model = tiny_model(size=8)
    assert families()["realnvp"] is RealNVP
    assert model.inputs == frozenset({"audio"}) and model.output_size == 8
    assert model.latent_dim == 3 * 8 * 8
    assert set(model.navigator_modes) == set(NAVIGATORS)
    cond = model.condition(Snapshot(audio=AudioFeatures.silent()))
    assert cond.shape == (1, 0)
    walk = model.navigator()
    assert walk.mode == "explore" and walk.n_anchors == STAND_IN_ANCHORS  # no anchors: stand-ins
    with torch.inference_mode():
        picture = model.generate(cond, walk.step(AudioFeatures.silent(), 1 / FPS))
    assert picture.shape == (1, 3, 8, 8) and picture.min() >= -1 and picture.max() <= 1


def test_the_precision_probe_is_anchors_halfway_points_and_samples_at_most_40():
    """What the optimized runtime decodes in fp32 and bf16 to choose the flow's precision: the
    anchors (spread over the list when there are many: it runs as a model is switched to),
    four points halfway between neighbours and four prior samples."""
    from bridge.generators.realnvp import PROBE_ANCHORS
    model = tiny_model(size=8)
    cond, latents = model.precision_probe()
    assert cond is None and torch.equal(latents[:STAND_IN_ANCHORS], model.anchor_latents())
    assert len(latents) == STAND_IN_ANCHORS + 8
    assert torch.equal(latents[STAND_IN_ANCHORS], (latents[0] + latents[STAND_IN_ANCHORS - 1]) / 2)
    many = RealNVP(RealNVPConfig(size=8, n_anchors=100, anchor_names=[f"p{i}" for i in range(100)], **TINY))
    with torch.no_grad():
        many.anchors.copy_(torch.arange(100.0)[:, None].expand(100, many.latent_dim))
    _, latents = many.precision_probe()
    assert len(latents) == PROBE_ANCHORS + 8
    assert latents[0, 0] == 0 and latents[PROBE_ANCHORS - 1, 0] == 99  # the first and the last, spread between
    assert torch.equal(latents[:PROBE_ANCHORS, 0], latents[:PROBE_ANCHORS, 0].unique())


def test_a_bundle_without_anchors_round_trips_and_walks_between_stand_ins(tmp_path):
    model = tiny_model(size=8)
    save_bundle(model, tmp_path / "plain")
    loaded = load_model(tmp_path / "plain")
    assert loaded.anchors.shape == (0, 3 * 8 * 8)
    z = torch.randn(2, model.latent_dim)
    with torch.no_grad():
        assert torch.equal(loaded.decode(z), model.decode(z))
    stand_ins = loaded.anchor_latents(seed=4)
    assert stand_ins.shape == (STAND_IN_ANCHORS, 3 * 8 * 8)
    assert torch.equal(stand_ins, loaded.anchor_latents(seed=4))
    assert abs(float(stand_ins.std()) - 0.7) < 0.05


def test_latent_parts_follow_the_documented_order():
    """[z_0 (factored out after scale 0), ..., z_last]: for size 8 and 2 scales, 96 numbers of
    (6, 4, 4) then 96 of the last scale's (6, 4, 4)."""
    model = RealNVP(RealNVPConfig(size=8, n_scales=2, **TINY))
    assert model.flow.part_shapes == [(6, 4, 4), (6, 4, 4)]
    three = RealNVP(RealNVPConfig(size=16, n_scales=3, **TINY))
    assert three.flow.part_shapes == [(6, 8, 8), (12, 4, 4), (12, 4, 4)]
    assert sum(three.flow.part_sizes) == three.latent_dim


def test_config_and_presets_are_checked():
    for name in PRESETS:
        config = preset_config(name)
        assert config.size in (32, 64) and config.channels == 3
    assert preset_config("lite-32", hidden=8).hidden == 8
    with pytest.raises(ConfigError, match="unknown RealNVP preset"):
        preset_config("huge-32")
    with pytest.raises(ConfigError, match="wings"):
        preset_config("lite-32", wings=2)
    with pytest.raises(ValueError, match="cannot be halved"):
        RealNVPConfig(size=12, n_scales=4)
    with pytest.raises(ValueError, match="anchor_names"):
        RealNVPConfig(n_anchors=2, anchor_names=["one"])


# --- anchors and the trainer ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny bundle trained for a few epochs on 16 PNGs, with 3 anchors."""
    root = tmp_path_factory.mktemp("realnvp")
    write_pictures(root / "train", 16, 10, seed=1)  # 10 px: random 8 px crops at crop_scale 1.25
    write_pictures(root / "anchors", 3, 8, seed=2)
    out = train_realnvp(root / "train", root / "bundle", overrides={"size": 8, **TINY}, epochs=6,
                        batch_size=8, lr=3e-3, anchors=root / "anchors", progress=False, threads=1)
    return root, out


def test_training_lowers_bits_per_dim_and_writes_a_bundle(trained):
    root, out = trained
    config = json.loads((out / "config.json").read_text())
    history = [h["bpd"] for h in config["training"]["history"]]
    assert len(history) == 6 and history[-1] < history[0] - 0.2
    assert config["family"] == "realnvp" and config["weights"]["dtype"] == "float32"
    assert config["config"]["n_anchors"] == 3
    assert config["config"]["anchor_names"] == ["pic_00", "pic_01", "pic_02"]
    assert (out / "loss.png").is_file() and len(list((out / "samples").glob("epoch_*.png"))) == 6
    card = (out / "card.md").read_text()
    assert "vjbridge train realnvp" in card and "--anchors" in card and "fp32" in card


def test_loaded_bundle_decodes_its_anchors_to_the_anchor_pictures(trained):
    root, out = trained
    model = load_model(out)
    assert isinstance(model, RealNVP) and model.anchors.shape == (3, 3 * 8 * 8)
    pictures = load_image_folder(root / "anchors", 8)
    with torch.no_grad():
        decoded = to_uint8(model.decode(model.anchors))
    assert (decoded.int() - pictures.int()).abs().max() <= 1
    walk = model.navigator("magellan")
    assert walk.n_anchors == 3 and torch.equal(walk.anchors, model.anchors)


def test_add_anchors_replaces_them_in_a_bundle(trained, tmp_path):
    root, out = trained
    write_pictures(tmp_path / "more", 4, 8, seed=3)
    written = add_anchors(out, tmp_path / "more", out=tmp_path / "copy")
    model = load_model(written)
    assert model.config.n_anchors == 4
    assert "vjbridge anchors" in json.loads((written / "config.json").read_text())["training"]["commands"][-1]
    with torch.no_grad():
        decoded = to_uint8(model.decode(model.anchors))
    assert (decoded.int() - load_image_folder(tmp_path / "more", 8).int()).abs().max() <= 1


def test_anchor_folder_errors_name_the_problem(tmp_path):
    model = tiny_model(size=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="empty.*no images"):
        with_anchors(model, tmp_path / "empty")
    write_pictures(tmp_path / "stray", 2, 8)
    (tmp_path / "stray" / "notes.txt").write_text("not a picture")
    with pytest.raises(SourceError, match="notes.txt is not an image"):
        with_anchors(model, tmp_path / "stray")
    write_pictures(tmp_path / "one", 1, 8)
    with pytest.raises(ConfigError, match="at least 2"):
        with_anchors(model, tmp_path / "one")
    with pytest.raises(ConfigError, match="size 16"):
        with_anchors(model, tmp_path / "stray", size=16)
    # the trainer checks the anchor folder before it spends time training
    write_pictures(tmp_path / "train", 4, 8)
    with pytest.raises(ConfigError, match="empty"):
        train_realnvp(tmp_path / "train", tmp_path / "out", overrides={"size": 8, **TINY},
                      epochs=1, anchors=tmp_path / "empty", progress=False)
    assert not (tmp_path / "out" / "config.json").exists()


def test_with_anchors_returns_a_new_model_and_keeps_the_old(tmp_path):
    model = tiny_model(size=8)
    write_pictures(tmp_path / "a", 3, 12)  # resized to 8x8 with a warning
    anchored = with_anchors(model, tmp_path / "a")
    assert anchored is not model and model.config.n_anchors == 0 and anchored.config.n_anchors == 3
    z = torch.randn(1, model.latent_dim)
    with torch.no_grad():
        assert torch.equal(model.decode(z), anchored.decode(z))


# --- navigators --------------------------------------------------------------------------------------

def drums(seconds: float, bpm: float = 120.0, seed: int = 0) -> np.ndarray:
    """A kick (decaying 55 Hz sine) on every beat and a hat (decaying white noise) between."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * SR), dtype=np.float32)
    t = np.arange(int(0.25 * SR)) / SR
    kick = (0.8 * np.sin(2 * np.pi * 55 * t) * np.exp(-t / 0.08)).astype(np.float32)
    hat = (0.3 * rng.standard_normal(len(t)) * np.exp(-t / 0.02)).astype(np.float32)
    beat = int(round(60 / bpm * SR))
    for start in range(0, len(out) - len(t), beat):
        out[start:start + len(t)] += kick
        half = start + beat // 2
        if half + len(t) <= len(out):
            out[half:half + len(t)] += hat
    return out


def features_of(audio: np.ndarray) -> list[AudioFeatures]:
    return [f for _, _, f in stream_features(StreamingAnalyzer(), audio, SR, FPS)]


@pytest.fixture(scope="module")
def music():
    return features_of(drums(6.0))


@pytest.fixture(scope="module")
def silence():
    return features_of(np.zeros(2 * SR, dtype=np.float32))


ANCHORS = torch.from_numpy(np.random.default_rng(7).standard_normal((5, 192)).astype(np.float32))


def walk(navigator, features) -> np.ndarray:
    return torch.cat([navigator.step(f, 1 / FPS) for f in features]).numpy()


def changes(latents: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.diff(latents, axis=0), axis=1)


@pytest.mark.parametrize("mode", list(NAVIGATORS))
def test_silence_is_still(mode, silence):
    latents = walk(make_navigator(mode, ANCHORS, seed=1), silence)
    assert latents.shape == (len(silence), 192)
    assert changes(latents).max() < 1e-5
    none = make_navigator(mode, ANCHORS, seed=1)
    assert torch.equal(none.step(None, 1 / FPS), none.step(None, 1 / FPS))  # before any audio


@pytest.mark.parametrize("mode", list(NAVIGATORS))
def test_hits_move_the_latent_on_the_frame_they_land(mode, music):
    """Frame-to-frame change follows the onset strength (the acceptance measure, on latents):
    Pearson r >= 0.3 after the first second, and the walk does move."""
    moved = changes(walk(make_navigator(mode, ANCHORS, seed=1), music))[30:]
    strength = np.array([f.onset_strength for f in music])[1:][30:]
    r = np.corrcoef(moved, strength)[0, 1]
    assert moved.max() > 0.01 * float(ANCHORS.norm(dim=1).mean()) and r >= 0.3, (mode, r)


@pytest.mark.parametrize("mode", list(NAVIGATORS))
def test_navigators_are_deterministic_and_reset(mode, music):
    first = make_navigator(mode, ANCHORS, seed=3)
    a = walk(first, music)
    b = walk(make_navigator(mode, ANCHORS, seed=3), music)
    first.reset()
    c = walk(first, music)
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_latents_stay_near_the_anchors_norm(music):
    """slerp between anchors (and the weighted walk's renormalised average) keep the latent's
    length: an average of Gaussian latents would shrink toward a grey picture."""
    norms = ANCHORS.norm(dim=1)
    for mode in NAVIGATORS:
        lengths = np.linalg.norm(walk(make_navigator(mode, ANCHORS, seed=0), music), axis=1)
        assert lengths.min() > 0.9 * float(norms.min()) and lengths.max() < 1.1 * float(norms.max())


def test_magellan_goes_round_the_anchors_in_order(music):
    nav = make_navigator("magellan", ANCHORS, seed=0, seconds_per_anchor=0.5)
    start = nav.position
    visited = []
    for f in music:
        nav.step(f, 1 / FPS)
        visited.append(int(nav.position))
    steps = np.diff([start, *visited]) % len(ANCHORS)
    assert set(steps.astype(int)) <= {0, 1} and steps.sum() >= 2  # forward, one anchor at a time


def test_explore_moves_its_base_every_n_bars_only_with_music(music, silence):
    nav = make_navigator("explore", ANCHORS, seed=0, base_every_bars=1, strong_onset=0)
    bases = {nav.base}
    for f in music:  # 6 s at 120 bpm: 3 bars
        nav.step(f, 1 / FPS)
        bases.add(nav.base)
    assert len(bases) >= 2
    quiet = make_navigator("explore", ANCHORS, seed=0, base_every_bars=1, strong_onset=0)
    base = quiet.base
    for f in silence + silence + silence:  # the analyzer's tempo runs on; bars are not counted
        quiet.step(f, 1 / FPS)
    assert quiet.base == base
    fixed = make_navigator("explore", ANCHORS, seed=0, base_every_bars=0, strong_onset=0)
    base = fixed.base
    walk(fixed, music)
    assert fixed.base == base


@pytest.mark.parametrize("mode, params, message", [
    ("weighted", {"temperature": 0}, "temperature must be in"),
    ("weighted", {"halflife_s": -1}, "halflife_s"),
    ("magellan", {"seconds_per_anchor": float("nan")}, "seconds_per_anchor"),
    ("magellan", {"idle_drift": 2}, "idle_drift"),
    ("magellan", {"speed": 1}, "no parameter.*speed"),
    ("explore", {"amount": "lots"}, "amount must be a number"),
    ("explore", {"amount": True}, "amount must be a number"),
    ("explore", {"base_every_bars": 2.5}, "whole number"),
    ("explore", {"release_s": 1e9}, "release_s"),
])
def test_bad_parameters_are_config_errors(mode, params, message):
    with pytest.raises(ConfigError, match=message):
        make_navigator(mode, ANCHORS, **params)


def test_bad_modes_and_anchors_are_config_errors():
    with pytest.raises(ConfigError, match="unknown navigator 'orbit'"):
        make_navigator("orbit", ANCHORS)
    with pytest.raises(ConfigError, match="at least 2"):
        make_navigator("explore", ANCHORS[:1])
    with pytest.raises(ConfigError, match="NaN"):
        make_navigator("weighted", torch.full((3, 4), float("nan")))
    assert make_navigator("magellan", ANCHORS, seconds_per_anchor="2").seconds_per_anchor == 2.0
