"""`vjbridge render` with every family, through the command a user types: an mp4 of the music's
length with sound; latent families' walks move the picture; the cross-modal VAE muxes the sound
it generates (48 kHz) and reads a video for its camera mode."""
from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch

from bridge.cli import main
from bridge.generators.base import save_bundle
from tests.helpers.streams import AMEN, make_test_video


def tiny_bundles(root):
    from bridge.generators.cvae import CVAE, CVAEConfig
    from bridge.generators.realnvp import RealNVP, RealNVPConfig
    from bridge.generators.vae_associator import VAEAssociator, VAEAssociatorConfig

    torch.manual_seed(0)
    flow = RealNVP(RealNVPConfig(size=16, n_scales=2, hidden=4))
    flow.initialize(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8))
    models = {
        "flow": flow,
        "cvae": CVAE(CVAEConfig(size=16, latent_dim=4, widths=(4, 8))),
        "mirror": VAEAssociator(VAEAssociatorConfig(
            image_size=16, image_widths=(4, 8), image_bottleneck=2, image_latent=8, sound_latent=8,
            sound_hidden=(16,), associator_hidden=8, associator_latent=4)),
    }
    for name, model in models.items():
        with torch.no_grad():  # untrained decoders are nearly constant: give them some contrast
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        save_bundle(model.eval(), root / name)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tiny_bundles(root)
    return root


def read_mp4(path):
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24").astype(np.float32) for f in c.decode(c.streams.video[0])]
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        rate = stream.rate
        sound = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(stream)])
    return frames, rate, sound


@pytest.mark.parametrize("name,walk", [("flow", "explore"), ("flow", "magellan"), ("flow", "weighted"),
                                       ("cvae", "linger")])
def test_latent_families_render_music_length_with_a_moving_picture(models, tmp_path, capsys, name, walk):
    out = tmp_path / f"{name}-{walk}.mp4"
    assert main(["render", str(AMEN), "--model", str(models / name), "--walk", walk, "--out", str(out),
                 "--runtime", "reference"]) == 0
    summary = json.loads(capsys.readouterr().out)
    frames, rate, sound = read_mp4(out)
    assert len(frames) == summary["frames"] >= 50  # 1.75 s of amen at 30 fps
    assert rate == 44_100 and np.sqrt(np.mean(sound ** 2)) > 0.01  # the music, muxed
    change = [np.abs(a - b).mean() for a, b in zip(frames, frames[1:])]
    assert max(change) > 1.0  # the walk moved the picture


def test_vae_associator_renders_its_generated_sound(models, tmp_path, capsys):
    out = tmp_path / "mirror.mp4"
    assert main(["render", str(AMEN), "--model", str(models / "mirror"), "--mode", "sound",
                 "--out", str(out), "--runtime", "reference"]) == 0
    frames, rate, sound = read_mp4(out)
    assert rate == 48_000  # the voice's rate, not the music's
    assert abs(len(sound) / rate - len(frames) / 30) < 0.1  # sound as long as the pictures
    assert np.isfinite(sound).all() and np.sqrt(np.mean(sound ** 2)) > 1e-3
    out_input = tmp_path / "mirror-input.mp4"
    assert main(["render", str(AMEN), "--model", str(models / "mirror"), "--mux", "input",
                 "--out", str(out_input), "--runtime", "reference"]) == 0
    assert read_mp4(out_input)[1] == 44_100


def test_vae_associator_camera_mode_reads_a_video_and_says_when_it_is_missing(models, tmp_path, capsys):
    video = make_test_video(tmp_path / "camera.mp4", seconds=2.0)
    out = tmp_path / "camera-out.mp4"
    assert main(["render", str(AMEN), "--model", str(models / "mirror"), "--mode", "camera",
                 "--video", str(video), "--out", str(out), "--runtime", "reference"]) == 0
    frames, rate, _ = read_mp4(out)
    assert rate == 48_000 and len(frames) >= 50
    capsys.readouterr()
    assert main(["render", str(AMEN), "--model", str(models / "mirror"), "--mode", "camera",
                 "--out", str(tmp_path / "x.mp4")]) == 2
    assert "--video" in capsys.readouterr().err
    assert main(["render", str(AMEN), "--model", str(models / "mirror"), "--mode", "mirror",
                 "--out", str(tmp_path / "y.mp4")]) == 2
    assert "mode" in capsys.readouterr().err
