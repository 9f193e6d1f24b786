"""`vjbridge export` for every family: an fp16 bundle and an ONNX file of the live entry point,
each numerically checked against the fp32 PyTorch model (onnxruntime runs the ONNX file)."""
from __future__ import annotations

import json

import pytest
import torch

from bridge.cli import main
from bridge.generators.base import load_model, save_bundle
from bridge.runtime import example_inputs
from bridge.train.export import export_fp16, export_onnx


def _pix2pix():
    from bridge.generators.pix2pix import Pix2Pix, Pix2PixConfig
    return Pix2Pix(Pix2PixConfig(size=32, ngf=4, input="bands"))


def _vae_associator():
    from bridge.generators.vae_associator import VAEAssociator, VAEAssociatorConfig
    model = VAEAssociator(VAEAssociatorConfig(image_size=16, image_widths=(4, 8), image_bottleneck=2,
                                              image_latent=8, sound_latent=8, sound_hidden=(16,),
                                              associator_hidden=8, associator_latent=4))
    return model


def _realnvp():
    from bridge.generators.realnvp import RealNVP, RealNVPConfig
    model = RealNVP(RealNVPConfig(size=8, n_scales=2, hidden=4))
    model.initialize(torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8))  # ActNorm's data init
    return model


def _cvae():
    from bridge.generators.cvae import CVAE, CVAEConfig
    return CVAE(CVAEConfig(size=16, latent_dim=4, widths=(4, 8)))


FAMILIES = {"pix2pix": _pix2pix, "vae_associator": _vae_associator, "realnvp": _realnvp, "cvae": _cvae}


@pytest.fixture(params=sorted(FAMILIES))
def bundle(request, tmp_path):
    torch.manual_seed(0)
    model = FAMILIES[request.param]().eval()
    with torch.no_grad():  # non-trivial weights: zero-initialised layers would hide differences
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return save_bundle(model, tmp_path / request.param)


def test_onnx_matches_the_fp32_model(bundle, tmp_path):
    path, parity = export_onnx(bundle, tmp_path / "model.onnx")
    assert path.is_file() and path.stat().st_size > 1000
    assert parity.max_abs < 1e-3, parity.summary()
    if parity.sound_max_abs_db is not None:
        assert parity.sound_max_abs_db < 1e-2


def test_fp16_bundle_is_smaller_loads_and_stays_close(bundle, tmp_path):
    out, parity = export_fp16(bundle, tmp_path / "half")
    assert (out / "weights.safetensors").stat().st_size < (bundle / "weights.safetensors").stat().st_size
    half = load_model(out)
    assert half.bundle_config["weights"]["dtype"] == "float16"
    assert parity.psnr_db > 35.0 or parity.max_abs == 0.0, parity.summary()
    cond, latent = example_inputs(half)
    with torch.no_grad():
        picture = half.generate(cond, latent)
    assert torch.isfinite(picture).all()


def test_cli_export_reports_parity_as_json(tmp_path, capsys):
    save_bundle(_cvae().eval(), tmp_path / "small")
    assert main(["export", str(tmp_path / "small"), "--onnx", "--out", str(tmp_path / "small.onnx")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["onnx"]["parity"]["max_abs"] < 1e-3
    assert main(["export", str(tmp_path / "small")]) == 2
    assert "--fp16, --onnx" in capsys.readouterr().err
