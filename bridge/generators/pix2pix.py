"""pix2pix (Isola et al. 2017): a U-Net generator from an audio image or a camera frame to a picture,
and the PatchGAN discriminator used to train it.

U-Net at size S has log2(S) down-samplings (256 -> 8, 512 -> 9), each halving the picture down to
1x1; the up path mirrors it with skip connections. Channels: ngf, 2ngf, 4ngf, then 8ngf.
    x (B, in, S, S) -> d0 (B, ngf, S/2) -> d1 (2ngf, S/4) -> d2 (4ngf, S/8) -> d3..d_{n-1} (8ngf)
    up: u_{n-1}(d_{n-1}) ++ d_{n-2} -> ... -> u_0(.. ++ d0) -> tanh (B, out, S, S)
Inference runs in eval mode: BatchNorm uses its running statistics and dropout is off, so each
BatchNorm is an affine map that `fold_batchnorm` merges exactly into the convolution before it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from bridge.generators.base import Generator, Snapshot, frames_to_input, register, square_to_frames

IMAGE_INPUT = "image"  # a camera or video frame instead of an audio representation


@dataclass
class Pix2PixConfig:
    size: int = 256  # 256 (8 down-samplings) or 512 (9)
    ngf: int = 64  # generator width: lite 32, full 64
    in_channels: int = 3
    out_channels: int = 3
    dropout: bool = True  # only active while training
    input: str = "spectrogram"  # an analysis representation name, or "image"
    analysis: dict = field(default_factory=dict)  # AnalysisConfig overrides for the input

    def __post_init__(self):
        downs = math.log2(self.size)
        if self.size < 16 or downs != int(downs):
            raise ValueError(f"size must be a power of two >= 16, got {self.size}")
        if self.ngf < 1:
            raise ValueError(f"ngf must be positive, got {self.ngf}")

    @property
    def num_downs(self) -> int:
        return int(math.log2(self.size))


def _width(ngf: int, depth: int) -> int:
    return ngf * min(2 ** depth, 8)


def _down(c_in: int, c_out: int, outermost: bool, innermost: bool) -> nn.Sequential:
    if outermost:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 4, 2, 1))
    layers = [nn.LeakyReLU(0.2), nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False)]
    if not innermost:  # the 1x1 bottleneck has no norm: batch statistics of one pixel are noise
        layers.append(nn.BatchNorm2d(c_out))
    return nn.Sequential(*layers)


def _up(c_in: int, c_out: int, outermost: bool, dropout: bool) -> nn.Sequential:
    if outermost:
        return nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.Tanh())
    layers = [nn.ReLU(), nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out)]
    if dropout:
        layers.append(nn.Dropout(0.5))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    def __init__(self, cfg: Pix2PixConfig):
        super().__init__()
        n = cfg.num_downs
        widths = [_width(cfg.ngf, d) for d in range(n)]
        self.downs = nn.ModuleList(
            _down(cfg.in_channels if d == 0 else widths[d - 1], widths[d],
                  outermost=d == 0, innermost=d == n - 1)
            for d in range(n))
        # ups[0] is the innermost; it reads the bottleneck alone, the others read (up ++ skip).
        ups = [_up(widths[n - 1], widths[n - 2], outermost=False, dropout=False)]
        for d in range(n - 2, -1, -1):
            c_in = widths[d] * 2
            if d == 0:
                ups.append(_up(c_in, cfg.out_channels, outermost=True, dropout=False))
            else:
                # junyanz's pix2pix puts dropout in the 8ngf-wide blocks nearest the bottleneck
                ups.append(_up(c_in, widths[d - 1], outermost=False,
                               dropout=cfg.dropout and d >= 4 and d < n - 1))
        self.ups = nn.ModuleList(ups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
        x = self.ups[0](skips.pop())
        for up in self.ups[1:]:
            x = up(torch.cat([x, skips.pop()], dim=1))
        return x


class PatchDiscriminator(nn.Module):
    """70x70 PatchGAN: says real/fake for each overlapping patch of (condition ++ picture)."""

    def __init__(self, in_channels: int = 6, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = ndf
        for i in range(1, n_layers + 1):
            c_next = ndf * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(c, c_next, 4, stride, 1, bias=False), nn.BatchNorm2d(c_next),
                       nn.LeakyReLU(0.2)]
            c = c_next
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, condition: torch.Tensor, picture: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([condition, picture], dim=1))


def fit_image(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3+) uint8 RGB -> (size, size, 3) uint8: the whole frame scaled to the square."""
    if image.shape[0] != size or image.shape[1] != size:
        import cv2
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return image[..., :3]


def image_to_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, size, size) float in [-1, 1]."""
    return frames_to_input(square_to_frames(fit_image(image, size)))


@register
class Pix2Pix(Generator):
    family = "pix2pix"
    Config = Pix2PixConfig

    def __init__(self, config: Pix2PixConfig):
        super().__init__(config)
        self.net = UNet(config)

    @property
    def inputs(self) -> frozenset[str]:
        return frozenset({"image"} if self.config.input == IMAGE_INPUT else {"audio"})

    @property
    def output_size(self) -> int:
        return self.config.size

    def condition(self, snapshot: Snapshot) -> torch.Tensor:
        if self.config.input == IMAGE_INPUT:
            if snapshot.image is None:
                return torch.zeros(1, 3, self.config.size, self.config.size)
            return image_to_tensor(snapshot.image, self.config.size)
        if snapshot.audio is None:
            return torch.zeros(1, 3, self.config.size, self.config.size)
        return image_to_tensor(snapshot.audio.representation(self.config.input, self.config.size),
                               self.config.size)

    def condition_drawer(self) -> nn.Module:
        from bridge.analysis.device_pictures import FrameDrawer, audio_drawer
        if self.config.input == IMAGE_INPUT:  # the frame fitted on the host, scaled there
            return FrameDrawer()
        return audio_drawer(self.config.input, self.config.size)

    def condition_params(self, snapshot: Snapshot):
        from bridge.analysis.device_pictures import audio_params, frame_params
        size = self.config.size
        if self.config.input == IMAGE_INPUT:
            return frame_params(None if snapshot.image is None else fit_image(snapshot.image, size), size)
        if snapshot.audio is None:
            return None
        params = audio_params(snapshot.audio, self.config.input, size)
        return params[0] if len(params) == 1 else params

    def generate(self, cond: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(cond)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.net(cond)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Merge each eval-mode BatchNorm into the (transposed) convolution just before it, in place.

    In eval mode BN is y = s * x + t with s = gamma / sqrt(var + eps), t = beta - mean * s, one
    (s, t) per output channel; scaling the conv's output channels by s and setting its bias to
    t (+ s * old bias) gives the same numbers with one less pass over memory. Dropout is removed
    too (it is the identity in eval mode)."""
    for seq in module.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(1, len(seq)):
            conv, bn = seq[i - 1], seq[i]
            if not isinstance(bn, nn.BatchNorm2d) or not isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)):
                continue
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                shift = bn.bias - bn.running_mean * scale
                w = conv.weight
                # Conv2d weights are (out, in, k, k); ConvTranspose2d weights are (in, out, k, k).
                shape = (-1, 1, 1, 1) if isinstance(conv, nn.Conv2d) else (1, -1, 1, 1)
                w.mul_(scale.reshape(shape))
                old_bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
                conv.bias = nn.Parameter(shift + old_bias * scale)
            seq[i] = nn.Identity()
        for i, layer in enumerate(seq):
            if isinstance(layer, nn.Dropout):
                seq[i] = nn.Identity()
    return module
