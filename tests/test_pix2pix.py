"""The pix2pix family: U-Net shapes, eval-mode inference, exact BatchNorm folding."""
import copy

import pytest
import torch

from bridge.generators.pix2pix import PatchDiscriminator, Pix2Pix, Pix2PixConfig, fold_batchnorm


def trained_stats(model, size, steps=3):
    """Give BatchNorm non-trivial running statistics, as training would."""
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(2, 3, size, size))
    return model.eval()


@pytest.mark.parametrize("size, downs", [(256, 8), (512, 9), (32, 5)])
def test_unet_depth_follows_size(size, downs):
    model = Pix2Pix(Pix2PixConfig(size=size, ngf=2))
    assert len(model.net.downs) == downs and len(model.net.ups) == downs


def test_full_unet_256_has_the_published_parameter_count():
    model = Pix2Pix(Pix2PixConfig(size=256, ngf=64))
    # junyanz's unet_256 with ngf 64 has 54.41 M parameters
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 54.41


def test_output_is_rgb_in_range_and_deterministic_in_eval():
    torch.manual_seed(0)
    model = trained_stats(Pix2Pix(Pix2PixConfig(size=64, ngf=4)), 64)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        a, b = model(x), model(x)
    assert a.shape == (1, 3, 64, 64)
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)  # no dropout at inference


def test_dropout_sits_in_the_inner_8ngf_blocks():
    model = Pix2Pix(Pix2PixConfig(size=256, ngf=4))
    with_dropout = [i for i, up in enumerate(model.net.ups)
                    if any(isinstance(m, torch.nn.Dropout) for m in up)]
    assert with_dropout == [1, 2, 3]  # the three blocks just outside the bottleneck


def test_batchnorm_folding_is_exact():
    torch.manual_seed(1)
    model = trained_stats(Pix2Pix(Pix2PixConfig(size=64, ngf=8)), 64)
    folded = fold_batchnorm(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        assert (model(x) - folded(x)).abs().max() < 1e-5


def test_patch_discriminator_scores_patches():
    d = PatchDiscriminator(in_channels=6, ndf=8)
    out = d(torch.zeros(2, 3, 256, 256), torch.zeros(2, 3, 256, 256))
    assert out.shape == (2, 1, 30, 30)  # the 70x70 PatchGAN's grid at 256


@pytest.mark.parametrize("size, ngf", [(100, 8), (8, 8), (64, 0)])
def test_bad_configs_raise(size, ngf):
    with pytest.raises(ValueError):
        Pix2PixConfig(size=size, ngf=ngf)
