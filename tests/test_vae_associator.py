"""The vae_associator family (seed 000): live modes on tiny models, mel-pair datasets from a real
rendered video, and the two-phase trainer writing a bundle that loads and plays."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bridge.errors import ConfigError, InputMismatch, SourceError
from bridge.generators.base import Snapshot, families, load_model, save_bundle
from bridge.generators.vae_associator import (MEL_DB_CEILING, MEL_DB_FLOOR, VAEAssociator,
                                              VAEAssociatorConfig)

DEMO = Path(__file__).resolve().parents[1] / "bridge" / "data" / "demo.ogg"
TINY = dict(image_size=16, image_widths=(4, 8), image_bottleneck=2, image_latent=8,
            sound_latent=8, sound_hidden=(16,), associator_hidden=8, associator_latent=4)


def tiny(**overrides) -> VAEAssociator:
    torch.manual_seed(0)
    model = VAEAssociator(VAEAssociatorConfig(**{**TINY, **overrides}))
    model.train()
    with torch.no_grad():  # BatchNorm statistics that are not the identity, as after training
        for _ in range(3):
            model.image_vae(torch.rand(4, 3, 16, 16) * 2 - 1)
    return model.eval()


@pytest.fixture(scope="module")
def features():
    """Real analyser features of the demo's first second, and of a quiet later moment."""
    from bridge.analysis import AnalysisConfig, StreamingAnalyzer
    from bridge.sources.audio import decode_audio

    samples = np.asarray(decode_audio(DEMO, sample_rate=44_100), dtype=np.float32)
    analyzer = StreamingAnalyzer(AnalysisConfig())
    analyzer.feed(samples[:44_100])
    first = analyzer.snapshot(1.0)
    analyzer.feed(samples[44_100:2 * 44_100] * 0.01)
    return first, analyzer.snapshot(2.0)


def camera_frame(seed: int, shape=(48, 64)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


# --- the model --------------------------------------------------------------------------------------

def test_family_is_registered_and_config_validates():
    assert families()["vae_associator"] is VAEAssociator
    config = VAEAssociatorConfig()
    assert (config.image_size, config.image_latent, config.sound_latent, config.n_mels,
            config.mel_frames, config.mix) == (112, 128, 128, 128, 9, 0.5)
    with pytest.raises(ValueError, match="multiple of 16"):
        VAEAssociatorConfig(image_size=120)
    with pytest.raises(ValueError, match="mix"):
        VAEAssociatorConfig(mix=1.5)
    with pytest.raises(ValueError, match="analysis makes"):
        VAEAssociatorConfig(analysis={"n_mels": 64})
    assert VAEAssociatorConfig(analysis={"n_mels": 64}, n_mels=64).n_mels == 64


def test_modes_choose_inputs_and_bad_modes_are_config_errors():
    model = tiny()
    assert model.modes == ("camera", "sound", "both") and model.makes_sound
    assert model.mode == "sound" and model.inputs == {"audio"} and model.latent_dim is None
    model.set_mode("camera")
    assert model.inputs == {"image"}
    model.set_mode("both", mix=0.25)
    assert model.inputs == {"image", "audio"} and model.mix == 0.25
    model.set_mode("camera")
    assert model.mix == 0.25  # kept when not given
    with pytest.raises(ConfigError, match="mode must be one of camera, sound, both"):
        model.set_mode("dream")
    with pytest.raises(ConfigError, match="mix"):
        model.set_mode("both", mix=2.0)
    with pytest.raises(InputMismatch, match="needs an image"):
        model.check_inputs(has_audio=True, has_image=False)


def test_condition_handles_missing_inputs_and_crops_the_camera(features):
    model = tiny()
    image, mel = model.condition(Snapshot())
    assert image.shape == (1, 3, 16, 16) and torch.count_nonzero(image) == 0
    assert mel.shape == (1, 1, 128, 9) and torch.all(mel == -1.0)  # silence
    frame = camera_frame(1)
    image, mel = model.condition(Snapshot(audio=features[0], image=frame))
    assert image.shape == (1, 3, 16, 16) and -1 <= image.min() and image.max() <= 1
    # the centre square is what the model sees: the frame's side columns do not matter
    other = frame.copy()
    other[:, :8] = 0
    assert torch.equal(model.condition(Snapshot(image=other))[0], image)
    expected = model.mel_to_unit(torch.from_numpy(features[0].mel_db))
    assert torch.equal(mel[0, 0], expected) and mel.min() >= -1 and mel.max() <= 1
    assert mel.max() > -0.9  # real sound, not the silence floor

    from bridge.analysis import AnalysisConfig, StreamingAnalyzer
    other_analysis = StreamingAnalyzer(AnalysisConfig(n_mels=64)).snapshot(0.0)
    with pytest.raises(InputMismatch, match=r"reads \(128, 9\) mels"):
        model.condition(Snapshot(audio=other_analysis))


def test_each_mode_makes_a_picture_and_a_finite_mel_in_db(features):
    model = tiny()
    cond = model.condition(Snapshot(audio=features[0], image=camera_frame(2)))
    with torch.inference_mode():
        for mode in model.modes:
            model.set_mode(mode)
            picture = model.generate(cond)
            picture2, mel_db = model.generate_with_sound(cond)
            assert picture.shape == (1, 3, 16, 16) and torch.equal(picture, picture2)
            assert picture.min() >= -1 and picture.max() <= 1
            assert mel_db.shape == (1, 128, 9) and torch.isfinite(mel_db).all()
            assert MEL_DB_FLOOR <= mel_db.min() and mel_db.max() <= MEL_DB_CEILING


def test_modes_route_the_inputs_through_the_right_networks(features):
    model = tiny()
    loud = model.condition(Snapshot(audio=features[0], image=camera_frame(3)))
    quiet = model.condition(Snapshot(audio=features[1], image=camera_frame(3)))
    other_face = model.condition(Snapshot(audio=features[0], image=camera_frame(4)))
    with torch.inference_mode():
        model.set_mode("camera")
        cam_picture, cam_sound = model.generate_with_sound(loud)
        assert torch.equal(model.generate(quiet), cam_picture)  # the music does not matter
        assert not torch.equal(model.generate(other_face), cam_picture)
        assert torch.allclose(cam_picture, model.decode_image(model.encode_image(loud[0])))
        z_sound = model.image_to_sound.map(model.encode_image(loud[0]))
        assert torch.allclose(cam_sound, model.decode_sound(z_sound))

        model.set_mode("sound")
        snd_picture, echo = model.generate_with_sound(loud)
        assert torch.equal(model.generate(other_face), snd_picture)  # the camera does not matter
        assert not torch.equal(model.generate(quiet), snd_picture)
        mel_db = torch.from_numpy(features[0].mel_db)[None]
        assert torch.allclose(echo, model.decode_sound(model.encode_sound(mel_db)), atol=1e-4)

        model.set_mode("both", mix=0.0)
        only_camera, both_sound = model.generate_with_sound(loud)
        assert torch.allclose(only_camera, cam_picture, atol=1e-6)
        assert torch.equal(both_sound, cam_sound)  # the sound comes from the camera
        model.set_mode("both", mix=1.0)
        assert torch.allclose(model.generate(loud), snd_picture, atol=1e-6)
        model.set_mode("both", mix=0.5)
        half = model.generate(loud)
        assert not torch.allclose(half, cam_picture) and not torch.allclose(half, snd_picture)


def test_mel_scaling_round_trips_and_clamps():
    model = tiny()
    db = torch.tensor([MEL_DB_FLOOR, -35.0, MEL_DB_CEILING, 80.0, -200.0])
    unit = model.mel_to_unit(db)
    assert torch.allclose(unit, torch.tensor([-1.0, 0.0, 1.0, 1.0, -1.0]))
    assert torch.allclose(model.unit_to_mel(unit[:3]), db[:3])


def test_a_wrong_size_picture_is_resized_with_a_warning():
    model = tiny()
    pictures = torch.rand(2, 3, 40, 40) * 2 - 1
    with pytest.warns(UserWarning, match="40x40 resized to 16x16"):
        z = model.encode_image(pictures)
    assert z.shape == (2, 8)
    with pytest.raises(InputMismatch, match="encode_image"):
        model.encode_image(torch.rand(3, 16, 16))


def test_folded_optimized_runner_matches_the_model(features, monkeypatch):
    from bridge import runtime
    from bridge.runtime import Runner

    model = tiny()
    model.set_mode("both")
    cond = model.condition(Snapshot(audio=features[0], image=camera_frame(5)))
    with torch.inference_mode():
        picture, mel_db = model.generate_with_sound(cond)
    # fp32 (as on CPUs without native bf16): folding the BatchNorms changes nothing
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    runner = Runner(copy.deepcopy(model), runtime="optimized", compile=False)
    fast_picture, fast_mel = runner(cond)
    assert runner.info.autocast is None
    assert (fast_picture - picture).abs().max() < 1e-4 and (fast_mel - mel_db).abs().max() < 1e-3
    # bf16 autocast (as on CPUs with native bf16): close, to bf16's 8 bits
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    runner = Runner(copy.deepcopy(model), runtime="optimized", compile=False)
    fast_picture, fast_mel = runner(cond)
    assert runner.info.autocast == "bfloat16"
    assert (fast_picture - picture).abs().max() < 0.02 and (fast_mel - mel_db).abs().max() < 1.0


def test_bundle_keeps_idle_pictures_and_tuple_settings(tmp_path):
    model = tiny(n_idle=3)
    assert model.idle_images().shape == (3, 3, 16, 16) and model.idle_images().dtype == torch.uint8
    model.idle_pictures.copy_(torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8))
    save_bundle(model, tmp_path / "b", weights_dtype=torch.float16)
    loaded = load_model(tmp_path / "b")
    assert loaded.config == model.config  # lists from JSON back to tuples
    assert torch.equal(loaded.idle_images(), model.idle_pictures)
    assert tiny().idle_images() is None


# --- dataset and training ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("vae_associator")


@pytest.fixture(scope="module")
def video(work) -> Path:
    """6 s of the demo's music (loop_safari over a drone) as an audio-reactive synthetic video."""
    from bridge.train.synth import make_synth_video

    path = work / "clip.mp4"
    make_synth_video([DEMO], "skimage", path, size=48, seconds=6.0, progress=False)
    return path


@pytest.fixture(scope="module")
def dataset(work, video) -> Path:
    from bridge.train.dataset import build_mel_pairs

    out = work / "mels"
    build_mel_pairs([video], out, size=32, progress=False)
    return out


def test_mel_pairs_hold_the_live_mel_at_each_segments_strongest_onset(dataset, video):
    from bridge.analysis import AnalysisConfig, StreamingAnalyzer
    from bridge.sources.audio import decode_audio
    from bridge.train.dataset import read_manifest, read_mels, tick_bounds

    manifest = read_manifest(dataset, mel_pairs=True)
    mels = read_mels(dataset, manifest)
    n = manifest["pairs"]
    assert manifest["representation"] == "mel-pairs" and manifest["pairing"]["mode"] == "onset"
    assert n >= 6 and mels.shape == (n, 128, 9) and mels.dtype == np.float32
    assert manifest["mels"]["shape"] == [n, 128, 9] and manifest["mels"]["unit"] == "dB"
    assert sorted(p.name for p in dataset.iterdir()) == ["B", "dataset.json", "mels.safetensors"]
    for window, item in enumerate(manifest["items"]):
        assert window <= item["time"] < window + 1 and item["mel"] == item["index"] == window
        assert abs(item["time"] - item["frame_time"]) <= 1 / 30 + 1e-6
        assert (dataset / item["b"]).is_file()

    # Each mel is the analyser's mel_db after feeding the video's sound tick by tick up to it,
    # and the strongest onset of its second: no other tick in the window has a stronger one.
    config = AnalysisConfig()
    samples = decode_audio(video, sample_rate=config.sample_rate)
    bounds = tick_bounds(len(samples), config.sample_rate, 30.0)
    analyzer = StreamingAnalyzer(config)
    strongest: dict[int, float] = {}
    by_tick = {round(item["time"] * 30): item for item in manifest["items"]}
    for k in range(1, len(bounds)):
        analyzer.feed(samples[bounds[k - 1]:bounds[k]])
        features = analyzer.snapshot(bounds[k] / config.sample_rate)
        window = int((bounds[k] / config.sample_rate) // 1.0)
        strongest[window] = max(strongest.get(window, 0.0), features.onset_strength)
        if k in by_tick:
            assert np.array_equal(features.mel_db, mels[by_tick[k]["mel"]])
    for window, item in enumerate(manifest["items"][:-1]):
        assert item["onset_strength"] == pytest.approx(strongest[window], abs=1e-5)


def test_each_trainer_refuses_the_other_kind_of_dataset(dataset, work):
    from bridge.train.dataset import read_manifest
    from bridge.train.pix2pix import train_pix2pix
    from bridge.train.vae_associator import train_vae_associator

    with pytest.raises(SourceError, match="holds mel-pairs"):
        train_pix2pix(dataset, work / "nope", epochs=1, ngf=4, progress=False)
    manifest = json.loads((dataset / "dataset.json").read_text())
    pictures = work / "pictures"
    pictures.mkdir()
    (pictures / "dataset.json").write_text(json.dumps({**manifest, "representation": "bands"}))
    with pytest.raises(SourceError, match="needs mel pairs"):
        train_vae_associator(pictures, work / "nope", epochs=1, progress=False)
    with pytest.raises(ConfigError, match="unknown vae_associator settings: latent"):
        train_vae_associator(dataset, work / "nope", epochs=1, progress=False,
                             model={"latent": 3})
    assert read_manifest(dataset, mel_pairs=True)["pairs"] == manifest["pairs"]


def _val_loss(net, pairs, indices) -> float:
    from bridge.train.vae_associator import _vae_loss

    image, _ = pairs.batch(indices)
    with torch.no_grad():
        return _vae_loss(net.image_vae.eval(), image, 1e-4).item()


def test_two_phase_training_lowers_both_losses_and_writes_a_bundle_that_plays(dataset, work,
                                                                              features):
    from bridge.train.vae_associator import MelPairs, split, train_vae_associator

    out = work / "bundle"
    warnings = []
    train_vae_associator(dataset, out, epochs=6, batch_size=2, vae_lr=1e-3, associator_lr=3e-3,
                         progress=False, patience=8, n_idle=4, model=dict(TINY, image_size=16),
                         save_dtype=torch.float32, warn=warnings.append)
    # the 32 px dataset is resized for the 16 px model, once, with a warning that says so
    assert len(warnings) == 1 and "resized to 16x16" in warnings[0], warnings
    for name in ("samples/vae_0001.png", "samples/assoc_0006.png", "loss.png", "config.json",
                 "weights.safetensors", "card.md"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    history = config["training"]["history"]
    assert len(history["vae"]) == 6 and len(history["associator"]) == 6
    for name in ("image_vae", "sound_vae"):  # phase 1 learns to reconstruct its training set
        losses = [h["train"][name] for h in history["vae"]]
        assert losses[-1] < 0.9 * losses[0], (name, losses)
    for name in ("image_to_sound", "sound_to_image"):  # phase 2 generalises to held-out pairs
        train = [h["train"][name] for h in history["associator"]]
        held_out = [h["val"][name] for h in history["associator"]]
        assert train[-1] < train[0] and held_out[-1] < 0.85 * held_out[0], (name, train, held_out)
    card = (out / "card.md").read_text()
    assert "vjbridge dataset synth" in card and "--representation mel-pairs" in card
    assert "vjbridge train vae_associator" in card
    import shlex

    from bridge.cli import build_parser
    line = next(x for x in card.splitlines() if x.startswith("vjbridge train vae_associator"))
    parsed = build_parser().parse_args(shlex.split(line)[1:])  # the card's command is a real one
    assert parsed.n_idle == 4 and parsed.fp32_weights

    model = load_model(out)
    assert model.config.image_size == 16 and model.config.n_idle == 4
    idle = model.idle_images()
    assert idle.shape == (4, 3, 16, 16) and idle.dtype == torch.uint8 and idle.float().std() > 10
    # the image VAE kept its best held-out epoch's weights (early stopping restores them)
    manifest = json.loads((dataset / "dataset.json").read_text())
    pairs = MelPairs(dataset, manifest, 16, model, warn=lambda m: None)
    _, val_idx = split(len(pairs), 0.1, 0)
    best = config["training"]["phases"]["vae"]["best"]["image_vae"]["best_val"]
    assert _val_loss(model, pairs, val_idx) == pytest.approx(best, rel=1e-4)
    with torch.inference_mode():
        model.set_mode("camera")
        picture, mel_db = model.generate_with_sound(model.condition(
            Snapshot(audio=features[0], image=camera_frame(6))))
    assert picture.shape == (1, 3, 16, 16) and torch.isfinite(mel_db).all()


def test_early_stopping_ends_a_phase_before_its_epoch_cap(dataset, work):
    from bridge.train.vae_associator import train_vae_associator

    out = work / "stopped"
    train_vae_associator(dataset, out, epochs=40, batch_size=4, vae_lr=3e-2, associator_lr=3e-2,
                         patience=1, progress=False, n_idle=0, model=dict(TINY),
                         warn=lambda m: None)
    training = json.loads((out / "config.json").read_text())["training"]
    assert training["weights_dtype"] == "float16"
    for phase in ("vae", "associator"):
        assert len(training["history"][phase]) < 40, phase
    assert load_model(out).idle_images() is None
