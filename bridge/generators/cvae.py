"""Convolutional VAE over frames (seed 002, "Music viz with autoencoders"): pictures are decoded
from a small latent, and a music-timed walk (bridge.morph.walks.LingerWalk) picks random points
where the training pictures live, lingers there with AR(1) jitter and moves in straight lines.

Shapes at the default size 64, widths (32, 64, 128, 256), latent 32:
    encode: x (N, 3, 64, 64) -> conv s2 -> (32, 32, 32) -> (64, 16, 16) -> (128, 8, 8)
            -> (256, 4, 4) -> flatten 4096 -> mu, logvar (N, 32)
    decode: z (N, 32) -> linear 4096 -> (256, 4, 4) -> [upsample x2, conv 3x3] -> (128, 8, 8)
            -> (64, 16, 16) -> (32, 32, 32) -> (32, 64, 64) -> conv 3x3 -> tanh (N, 3, 64, 64)
Nearest upsampling then a 3x3 convolution, not a transposed convolution: transposed 4x4 stride-2
kernels leave a checkerboard that flickers while the latent moves (Odena et al. 2016).

`latent_stats` (2, D) holds the mean and standard deviation of the training pictures' latents
(the trainer sets it); walks draw their targets from there, since a weakly regularised VAE's
pictures live in a small part of N(0, I). `directions` (K, D) and `direction_stds` (K,) are the
principal directions of those latents (bridge.morph.directions): the live knobs' axes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from bridge.errors import ConfigError
from bridge.generators.base import WalkedLatentGenerator, register

SIZES = (32, 64, 128)
TEST_SIZES = (16,)  # tiny models for tests only
DEFAULT_WIDTHS = (32, 64, 128, 256)
NEGATIVE_SLOPE = 0.2  # LeakyReLU, as in DCGAN encoders
STAND_IN_ANCHORS = 8  # anchor jumps land on this many seeded points where the pictures live


@dataclass
class CVAEConfig:
    size: int = 64  # 32, 64 or 128 (16 for tests)
    latent_dim: int = 32
    widths: tuple[int, ...] = DEFAULT_WIDTHS  # channels after each stride-2 step, outside in
    analysis: dict = field(default_factory=dict)  # AnalysisConfig overrides for the walk's audio
    n_directions: int = 0  # rows of the `directions` buffer (bridge.morph.directions)

    def __post_init__(self):
        if self.size not in SIZES + TEST_SIZES:
            raise ValueError(f"size must be one of {', '.join(map(str, SIZES))}, got {self.size}")
        if not isinstance(self.latent_dim, int) or self.latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {self.latent_dim!r}")
        try:
            widths = tuple(int(w) for w in self.widths)
        except (TypeError, ValueError):
            raise ValueError(f"widths must be a list of channel counts, got {self.widths!r}") from None
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be a non-empty list of positive counts, got {self.widths!r}")
        if self.size >> len(widths) < 2:
            raise ValueError(f"{len(widths)} widths halve a {self.size} px picture below 2 px; "
                             f"use at most {self.size.bit_length() - 2}")
        self.widths = widths
        if not isinstance(self.analysis, dict):
            raise ValueError(f"analysis must be a dict of AnalysisConfig overrides, got {self.analysis!r}")
        if not isinstance(self.n_directions, int) or self.n_directions < 0:
            raise ValueError(f"n_directions must be an integer >= 0, got {self.n_directions!r}")

    @property
    def bottom(self) -> int:
        """Side of the smallest feature map."""
        return self.size >> len(self.widths)


def _down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out),
                         nn.LeakyReLU(NEGATIVE_SLOPE))


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                         nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out),
                         nn.LeakyReLU(NEGATIVE_SLOPE))


@register
class CVAE(WalkedLatentGenerator):
    family = "cvae"
    Config = CVAEConfig
    navigator_modes = ("linger",)

    def __init__(self, config: CVAEConfig):
        super().__init__(config)
        w, d, s = config.widths, config.latent_dim, config.bottom
        flat = w[-1] * s * s
        self.encoder = nn.Sequential(*[_down(c_in, c_out) for c_in, c_out in zip((3, *w[:-1]), w)],
                                     nn.Flatten())
        self.to_mu = nn.Linear(flat, d)
        self.to_logvar = nn.Linear(flat, d)
        self.from_latent = nn.Sequential(nn.Linear(d, flat), nn.LeakyReLU(NEGATIVE_SLOPE))
        # Up path mirrors the widths; the last step stays at w[0] channels at full size so the
        # colours come from a 3x3 mix of features, not straight from nearest-upsampled blocks.
        ups = list(zip(w[::-1], (*w[-2::-1], w[0])))
        self.decoder = nn.Sequential(*[_up(c_in, c_out) for c_in, c_out in ups],
                                     nn.Conv2d(w[0], 3, 3, 1, 1), nn.Tanh())
        # Row 0 mean, row 1 std of the training latents; N(0, I) until a trainer measures them.
        self.register_buffer("latent_stats", torch.stack([torch.zeros(d), torch.ones(d)]))
        # Principal directions of the training pictures' latents, for the live knobs.
        self.register_directions(config.n_directions, d)

    # -- the VAE ---------------------------------------------------------------------------
    def encode_distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, 3, S, S) in [-1, 1] -> mu, logvar (N, D)."""
        h = self.encoder(x)
        return self.to_mu(h), self.to_logvar(h)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The mean latent (N, D) of pictures (N, 3, S, S) in [-1, 1]."""
        return self.encode_distribution(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, D) -> pictures (N, 3, S, S) in [-1, 1]."""
        s = self.config.bottom
        h = self.from_latent(z).view(z.shape[0], self.config.widths[-1], s, s)
        return self.decoder(h)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: (reconstruction, mu, logvar)."""
        mu, logvar = self.encode_distribution(x)
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar

    # -- live ------------------------------------------------------------------------------
    def generate(self, cond: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        if latent is None:  # no walk: the middle of the training pictures
            latent = self.latent_stats[0:1]
        return self.decode(latent.to(self.latent_stats.device, self.latent_stats.dtype))

    def anchor_latents(self, seed: int = 0) -> torch.Tensor:
        """(8, D) seeded stand-in anchors where the training pictures live (N(mean, std^2) of
        their latents, as the linger walk draws its targets): what anchor jumps land on."""
        stats = self.latent_stats.detach().float().cpu()
        gen = torch.Generator().manual_seed(int(seed))
        return stats[0] + stats[1] * torch.randn(STAND_IN_ANCHORS, self.latent_dim, generator=gen)

    def navigator(self, mode: str | None = None, seed: int = 0, **params):
        from bridge.morph.walks import LingerWalk

        mode = mode or self.navigator_modes[0]
        if mode not in self.navigator_modes:
            raise ConfigError(f"model family 'cvae' has no walk '{mode}'; "
                              f"choose one of {', '.join(self.navigator_modes)}")
        stats = self.latent_stats.detach().float().cpu()
        return LingerWalk(self.latent_dim, seed=seed, center=stats[0], scale=stats[1], **params)
