"""Upscaling to the output's size (issue 6): shapes, fits, quality against a real high-resolution
picture, and the CPU path (OpenCV on uint8) against torch's float bicubic."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bridge.errors import ConfigError
from bridge.runtime import to_rgba
from bridge.upscale import Upscaler, parse_size


def picture_of(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data
    return data.astronaut()  # 512 x 512 RGB, BSD


@pytest.mark.parametrize("fit", ["cover", "contain", "stretch"])
@pytest.mark.parametrize("size", [(1920, 1080), (3840, 2160), (200, 600)])
def test_any_output_size_and_fit(fit, size):
    frame = Upscaler(*size, fit=fit).rgba(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert frame.shape == (size[1], size[0], 4) and frame.dtype == np.uint8 and frame.flags.c_contiguous
    assert (frame[..., 3] == 255).all()


def test_contain_letterboxes_in_black_and_cover_crops_the_centre():
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, :, 0] = np.arange(64)[:, None] * 4  # red grows downwards
    stripes[..., 1] = 200
    picture = picture_of(stripes)
    boxed = Upscaler(1920, 1080, fit="contain").rgba(picture)
    assert (boxed[:, :420, :3] == 0).all() and (boxed[:, -420:, :3] == 0).all()  # bars left and right
    assert boxed[:, 960, 1].min() > 190  # the picture between them, full height
    covered = Upscaler(1920, 1080, fit="cover").rgba(picture)
    assert covered[..., 1].min() > 190  # no bars
    # the top and bottom of the square are cut, evenly: the middle row stays in the middle
    full = Upscaler(1920, 1920, fit="stretch").rgba(picture)
    assert abs(int(covered[540, 960, 0]) - int(full[960, 960, 0])) <= 2
    assert abs(int(covered[0, 960, 0]) - int(full[420, 960, 0])) <= 3


def test_smooth_modes_come_closer_to_the_real_high_resolution_picture_than_nearest(astronaut):
    import cv2
    small = cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA)
    scores = {mode: psnr(Upscaler(512, 512, mode=mode, fit="stretch").rgba(picture_of(small))[..., :3], astronaut)
              for mode in ("bilinear", "bicubic", "lanczos")}
    nearest = psnr(cv2.resize(small, (512, 512), interpolation=cv2.INTER_NEAREST), astronaut)
    print(f"\nPSNR against the 512² original, from 128²: nearest {nearest:.2f} dB, "
          + ", ".join(f"{m} {v:.2f} dB" for m, v in scores.items()))
    assert min(scores.values()) > nearest + 0.3
    assert scores["lanczos"] >= scores["bilinear"] and scores["bicubic"] >= scores["bilinear"]


def test_the_cpu_path_matches_torch_float_bicubic(astronaut):
    picture = picture_of(astronaut[::4, ::4].copy())  # 128²
    ours = Upscaler(512, 512, mode="bicubic", fit="stretch").rgba(picture)
    reference = to_rgba(F.interpolate(picture, size=(512, 512), mode="bicubic", align_corners=False))
    assert psnr(ours[..., :3], reference[..., :3]) > 35.0  # same kernel family, uint8 vs float rounding


def test_bad_sizes_and_names_are_one_line_errors():
    assert parse_size("1920x1080") == (1920, 1080) and parse_size("640×480") == (640, 480)
    for bad in ("1920", "axb", "10x10", "99999x10"):
        with pytest.raises(ConfigError, match="output size"):
            parse_size(bad)
    with pytest.raises(ConfigError, match="upscale mode"):
        Upscaler(100, 100, mode="nearest")
    with pytest.raises(ConfigError, match="fit"):
        Upscaler(100, 100, fit="zoom")


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "lanczos"])
@pytest.mark.parametrize("source, size", [(256, (1920, 1080)), (512, (3840, 2160)), (200, (600, 1000)), (96, (1000, 999))])
def test_cover_on_the_cpu_resizes_only_the_strip_it_shows_and_equals_the_full_resize(mode, source, size):
    import cv2

    from bridge.upscale import CV2_MODES
    picture = torch.rand(1, 3, source, source) * 2 - 1
    up = Upscaler(*size, mode=mode, fit="cover")
    sw, sh, x, y = up.plan(source, source)
    assert x < 0 or y < 0  # a real crop
    full = cv2.resize(to_rgba(picture), (sw, sh), interpolation=CV2_MODES[mode])[-y:-y + size[1], -x:-x + size[0]]
    assert np.abs(up.rgba(picture).astype(int) - full.astype(int)).max() <= 1  # OpenCV's fixed-point rounding


def test_the_device_path_is_torch_bicubic_and_opencv_lanczos_on_the_visible_window(astronaut):
    """`resize` (the CUDA path, run here on the CPU): the same kernels as the CPU path, only the
    window the frame shows, bars black; lanczos is real Lanczos, not bicubic under another name."""
    import cv2
    small = cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA)
    picture = picture_of(small)
    covered = Upscaler(960, 540, mode="bicubic", fit="cover").resize(picture)
    torch_bicubic = F.interpolate(picture, size=(960, 960), mode="bicubic", align_corners=False)[..., 210:750, :]
    assert covered.shape == (1, 3, 540, 960)
    assert (covered - torch_bicubic.clamp(-1, 1)).abs().max() < 1e-4
    lanczos = Upscaler(512, 512, mode="lanczos", fit="stretch").resize(picture)
    opencv = cv2.resize(small.astype(np.float32), (512, 512), interpolation=cv2.INTER_LANCZOS4)
    ours = ((lanczos[0].permute(1, 2, 0) + 1) * 127.5).numpy()
    assert np.abs(ours - opencv.clip(0, 255)).max() < 0.05
    bicubic = Upscaler(512, 512, mode="bicubic", fit="stretch").resize(picture)
    assert (lanczos - bicubic).abs().max() > 0.01
    boxed = Upscaler(960, 540, mode="lanczos", fit="contain").resize(picture)
    assert (boxed[..., :, :210] == -1).all() and (boxed[..., :, 750:] == -1).all()
    assert (boxed[..., :, 210:750] > -1).any(dim=-1).all()  # every row of the picture has light
