"""RealNVP (Dinh, Sohl-Dickstein & Bengio 2017, "Density estimation using Real NVP"): an exactly
invertible flow between pictures and Gaussian latents, navigated live between the latents of the
user's own pictures (seed 004).

Preprocessing (paper, section 4.1), x01 in [0, 1] per channel:
    p = a + (1 - 2a) * x01,  y = logit(p),  a = LOGIT_ALPHA = 0.05
    log|dy/dx01| = sum(log(1 - 2a) - log p - log(1 - p))          (counted in the NLL and bpd)
Training feeds dequantised pixels x01 = (k + u) / 256, k in 0..255, u ~ U[0, 1).

The flow, on y (N, C, S, S), one level per scale; scale i works on (C_i, S_i, S_i):
    scale i < last:  3 checkerboard couplings (mask parity 0, 1, 0)   (C_i, S_i, S_i)
                     squeeze (space-to-depth)                         (4C_i, S_i/2, S_i/2)
                     3 channel-wise couplings (kept half 0, 1, 0)     (4C_i, S_i/2, S_i/2)
                     factor out the second half of the channels       z_i: (2C_i, S_i/2, S_i/2)
                     and go on with the first half                    C_{i+1} = 2C_i, S_{i+1} = S_i/2
    last scale:      4 checkerboard couplings (parity 0, 1, 0, 1)     z_last: (C_last, S_last, S_last)
Each coupling is followed by an ActNorm. The flat latent (the documented order that encode,
decode and the anchors use) is [z_0, z_1, ..., z_last], each flattened in (C, H, W) order, so
latent_dim = C * S * S. Every part is modelled as N(0, I).

A coupling changes the free part x_f given the kept part x_k:
    y_f = x_f * exp(s(x_k)) + t(x_k),   s = scale * tanh(raw_s),   log|det| = sum(s)
with s and t from one small ResNet (`STNet`) whose last conv starts at zero: the flow starts as
the identity and training only moves it away as far as the likelihood asks. tanh with a learned
per-channel scale keeps exp(s) bounded, so the inverse stays exact in fp32.

Why ActNorm (Kingma & Dhariwal 2018) rather than the paper's batch norm: batch norm computes with
batch statistics in training and running ones in eval, so the trained density and the live
inverse would be two different functions; ActNorm is one per-channel affine map, initialised from
the first training batch (`initialize`), the same in train and eval. Nothing in the forward or
inverse pass reads a value back to the host (no isnan checks, no .item()): a GPU never waits.

Buffers saved with the weights: `anchors` (n_anchors, D), the latents of the user's pictures
(`with_anchors`), and `directions` (K, D) / `direction_stds` (K,), the principal directions of the
training pictures' latents (bridge.morph.directions), along which the live knobs move.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bridge.errors import ConfigError
from bridge.generators.base import WalkedLatentGenerator, register

LOGIT_ALPHA = 0.05  # the paper's a: logit(a + (1 - 2a) x) keeps the logit away from +-inf
SAMPLE_TEMPERATURE = 0.7  # z ~ N(0, 0.7^2): the flow literature's habit for nicer samples
STAND_IN_ANCHORS = 8  # bundles without anchors navigate between this many random latents
STAND_IN_STD = 0.7
PROBE_ANCHORS = 32  # anchors the precision check decodes at most (a full-64 flow: ~0.15 s each)
ACTNORM_EPS = 1e-6

# Named presets. lite: fast decode on 2 CPU cores (the live target); full: the paper's CIFAR-10
# network (8 residual blocks of 64 features, 2 scales). 64-pixel presets add a scale.
PRESETS: dict[str, dict] = {
    "lite-32": {"size": 32, "n_scales": 2, "hidden": 32, "resblocks": 1},
    "full-32": {"size": 32, "n_scales": 2, "hidden": 64, "resblocks": 8},
    "lite-64": {"size": 64, "n_scales": 3, "hidden": 32, "resblocks": 1},
    "full-64": {"size": 64, "n_scales": 3, "hidden": 64, "resblocks": 4},
}


@dataclass
class RealNVPConfig:
    size: int = 32  # pictures are size x size; 32 or 64 for the presets, any that n_scales divides
    channels: int = 3
    n_scales: int = 2  # levels; all but the last end with a squeeze and factor out half
    hidden: int = 32  # feature maps of each coupling's s/t network
    resblocks: int = 1  # residual blocks in each s/t network
    n_anchors: int = 0  # rows of the `anchors` buffer (latents of the user's pictures)
    anchor_names: list[str] = field(default_factory=list)  # one per anchor (file stems)
    analysis: dict = field(default_factory=dict)  # AnalysisConfig overrides for the live audio
    n_directions: int = 0  # rows of the `directions` buffer (bridge.morph.directions)

    def __post_init__(self):
        if self.channels < 1:
            raise ValueError(f"channels must be positive, got {self.channels}")
        if self.n_scales < 1:
            raise ValueError(f"n_scales must be at least 1, got {self.n_scales}")
        final = self.size / 2 ** (self.n_scales - 1)
        if self.size < 2 or final != int(final) or final < 2:
            raise ValueError(f"size {self.size} cannot be halved {self.n_scales - 1} times down to "
                             f"at least 2 (n_scales {self.n_scales})")
        if self.hidden < 1 or self.resblocks < 0:
            raise ValueError(f"hidden must be positive and resblocks >= 0, got {self.hidden}, "
                             f"{self.resblocks}")
        if self.n_anchors < 0:
            raise ValueError(f"n_anchors must be >= 0, got {self.n_anchors}")
        if len(self.anchor_names) != self.n_anchors:
            raise ValueError(f"{len(self.anchor_names)} anchor_names for {self.n_anchors} anchors")
        if self.n_directions < 0:
            raise ValueError(f"n_directions must be >= 0, got {self.n_directions}")

    @property
    def latent_dim(self) -> int:
        return self.channels * self.size * self.size


def preset_config(name: str, **overrides) -> RealNVPConfig:
    """The named preset, with any RealNVPConfig fields replaced (ConfigError when unknown)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown RealNVP preset {name!r}; choose one of {', '.join(PRESETS)}")
    fields = set(RealNVPConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown RealNVP setting(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(fields))}")
    try:
        return RealNVPConfig(**{**PRESETS[name], **overrides})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"RealNVP preset {name} with {overrides}: {e}") from None


# --- building blocks: each maps x -> (y, log|det| per sample) and has an exact inverse -----------

class ActNorm(nn.Module):
    """y = (x + bias) * exp(log_scale) per channel; log|det| = H * W * sum(log_scale)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        # A plain attribute, not a buffer: `RealNVP.initialize` sets it for one pass; checking
        # it is a Python branch, never a device read.
        self.init_pending = False

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.init_pending:
            with torch.no_grad():  # zero mean, unit variance per channel on this batch
                mean = x.mean(dim=(0, 2, 3), keepdim=True)
                std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
                self.bias.copy_(-mean)
                self.log_scale.copy_(-torch.log(std + ACTNORM_EPS))
            self.init_pending = False
        y = (x + self.bias) * torch.exp(self.log_scale)
        return y, self.log_scale.sum() * (x.shape[2] * x.shape[3])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.log_scale) - self.bias


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.conv2(torch.relu(self.conv1(torch.relu(h))))


class STNet(nn.Module):
    """(N, c_in, H, W) -> raw s and t, (N, c_out, H, W) each. Starts at zero (identity coupling)."""

    def __init__(self, c_in: int, c_out: int, hidden: int, resblocks: int):
        super().__init__()
        self.inp = nn.Conv2d(c_in, hidden, 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlock(hidden) for _ in range(resblocks)])
        self.out = nn.Conv2d(hidden, 2 * c_out, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.out(torch.relu(self.blocks(self.inp(x))))
        return h.chunk(2, dim=1)


class CheckerboardCoupling(nn.Module):
    """Pixels where (i + j) % 2 == parity are kept and condition the others. The mask goes into
    the s/t net as an extra channel: a convolution cannot otherwise tell a kept pixel from a
    free one (both look like numbers next to zeros)."""

    def __init__(self, channels: int, size: int, parity: int, hidden: int, resblocks: int):
        super().__init__()
        i = torch.arange(size).view(-1, 1)
        j = torch.arange(size).view(1, -1)
        kept = ((i + j) % 2 == parity).float().view(1, 1, size, size)
        self.register_buffer("kept", kept, persistent=False)  # (1, 1, S, S)
        self.net = STNet(channels + 1, channels, hidden, resblocks)
        self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))

    def _st(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept = self.kept
        given = torch.cat([x * kept, kept.expand(x.shape[0], 1, -1, -1)], dim=1)
        raw_s, t = self.net(given)
        free = 1.0 - kept
        return self.scale * torch.tanh(raw_s) * free, t * free  # zero on kept pixels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self._st(x)
        return x * torch.exp(s) + t, s.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        s, t = self._st(y)  # kept pixels are unchanged, so the same s, t come back
        return (y - t) * torch.exp(-s)


class ChannelCoupling(nn.Module):
    """One half of the channels is kept (the first when `second_kept` is False) and conditions
    the other half."""

    def __init__(self, channels: int, second_kept: bool, hidden: int, resblocks: int):
        super().__init__()
        self.half = channels // 2
        self.second_kept = second_kept
        kept_channels = channels - self.half if second_kept else self.half
        self.net = STNet(kept_channels, channels - kept_channels, hidden, resblocks)
        self.scale = nn.Parameter(torch.ones(1, channels - kept_channels, 1, 1))

    def _split(self, x):
        a, b = x[:, :self.half], x[:, self.half:]
        return (b, a) if self.second_kept else (a, b)  # (kept, free)

    def _join(self, kept, free):
        return torch.cat([free, kept] if self.second_kept else [kept, free], dim=1)

    def _st(self, kept):
        raw_s, t = self.net(kept)
        return self.scale * torch.tanh(raw_s), t

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept, free = self._split(x)
        s, t = self._st(kept)
        return self._join(kept, free * torch.exp(s) + t), s.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        kept, free = self._split(y)
        s, t = self._st(kept)
        return self._join(kept, (free - t) * torch.exp(-s))


class Squeeze(nn.Module):
    """(N, C, H, W) -> (N, 4C, H/2, W/2): channel c*4 + 2*dy + dx holds pixel (2i + dy, 2j + dx)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        y = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return y.reshape(n, 4 * c, h // 2, w // 2), x.new_zeros(())

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        n, c4, h, w = y.shape
        x = y.view(n, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(n, c4 // 4, 2 * h, 2 * w)


def _scale_steps(channels: int, size: int, last: bool, hidden: int, resblocks: int) -> nn.ModuleList:
    steps: list[nn.Module] = []
    for k in range(4 if last else 3):
        steps += [CheckerboardCoupling(channels, size, k % 2, hidden, resblocks), ActNorm(channels)]
    if not last:
        steps.append(Squeeze())
        for k in range(3):
            steps += [ChannelCoupling(4 * channels, k % 2 == 1, hidden, resblocks),
                      ActNorm(4 * channels)]
    return nn.ModuleList(steps)


class MultiScaleFlow(nn.Module):
    """The flow on logit-space pictures: y (N, C, S, S) <-> z (N, C*S*S) in the documented order."""

    def __init__(self, cfg: RealNVPConfig):
        super().__init__()
        self.scales = nn.ModuleList()
        c, s = cfg.channels, cfg.size
        shapes = []  # shape of each factored-out part, then the last scale's output
        for i in range(cfg.n_scales):
            last = i == cfg.n_scales - 1
            self.scales.append(_scale_steps(c, s, last, cfg.hidden, cfg.resblocks))
            if not last:
                shapes.append((2 * c, s // 2, s // 2))
                c, s = 2 * c, s // 2
        shapes.append((c, s, s))
        self.part_shapes = shapes
        self.part_sizes = [a * b * d for a, b, d in shapes]

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = y.new_zeros(y.shape[0])
        parts = []
        h = y
        for i, steps in enumerate(self.scales):
            for step in steps:
                h, ld = step(h)
                logdet = logdet + ld
            if i < len(self.scales) - 1:
                h, factored = h.chunk(2, dim=1)
                parts.append(factored.flatten(1))
        parts.append(h.flatten(1))
        return torch.cat(parts, dim=1), logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        parts = z.split(self.part_sizes, dim=1)
        h = parts[-1].reshape(-1, *self.part_shapes[-1])
        for i in range(len(self.scales) - 1, -1, -1):
            if i < len(self.scales) - 1:
                h = torch.cat([h, parts[i].reshape(-1, *self.part_shapes[i])], dim=1)
            for step in reversed(self.scales[i]):
                h = step.inverse(h)
        return h


# --- the family --------------------------------------------------------------------------------------

def gaussian_log_density(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension: (N, D) -> (N,)."""
    return -0.5 * (z * z).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


@register
class RealNVP(WalkedLatentGenerator):
    family = "realnvp"
    # Anchors decode to the very pictures they came from: bf16/fp16 autocast only where it keeps
    # them (and the walks' pictures between them) within bridge.runtime.CHECKED_MIN_PSNR_DB.
    low_precision = "checked"
    Config = RealNVPConfig
    navigator_modes = ("weighted", "magellan", "explore")

    def __init__(self, config: RealNVPConfig):
        super().__init__(config)
        self.flow = MultiScaleFlow(config)
        # Latents of the user's pictures, (n_anchors, D): saved with the weights.
        self.register_buffer("anchors", torch.zeros(config.n_anchors, config.latent_dim))
        # Principal directions of the training pictures' latents, for the live knobs.
        self.register_directions(config.n_directions, config.latent_dim)

    # -- the exact flow ---------------------------------------------------------------------------
    def forward_flow(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels in [0, 1] (N, C, S, S) -> (z (N, D), log|det dz/dx01| (N,)), logit included."""
        p = LOGIT_ALPHA + (1 - 2 * LOGIT_ALPHA) * x01
        log_p, log_1mp = torch.log(p), torch.log1p(-p)
        logit_logdet = (math.log(1 - 2 * LOGIT_ALPHA) - log_p - log_1mp).flatten(1).sum(1)
        z, logdet = self.flow(log_p - log_1mp)
        return z, logdet + logit_logdet

    def inverse_flow(self, z: torch.Tensor) -> torch.Tensor:
        """(N, D) -> pixels (N, C, S, S), in [0, 1] for latents of pictures (a little outside,
        at most by a / (1 - 2a), for arbitrary latents)."""
        p = torch.sigmoid(self.flow.inverse(z))
        return (p - LOGIT_ALPHA) / (1 - 2 * LOGIT_ALPHA)

    # -- pictures <-> latents ----------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Pictures (N, C, S, S) in [-1, 1] -> latents (N, D). A uint8 value k (k / 127.5 - 1)
        lands on (k + 0.5) / 256, the middle of the cell that dequantisation trained on."""
        x01 = ((x + 1.0) * 127.5 + 0.5) / 256.0
        return self.forward_flow(x01)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, D) -> pictures (N, C, S, S) in [-1, 1]; the exact inverse of `encode`."""
        x01 = self.inverse_flow(z)
        return ((x01 * 256.0 - 0.5) / 127.5 - 1.0).clamp(-1.0, 1.0)

    def sample(self, n: int, temperature: float = SAMPLE_TEMPERATURE,
               generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.latent_dim, generator=generator) * temperature
        return self.decode(z.to(self.anchors.device))

    # -- likelihood ---------------------------------------------------------------------------------
    def nll_bits_per_dim(self, x_uint8: torch.Tensor,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """Negative log-likelihood of uint8 pictures (N, C, S, S) in bits per dimension, (N,),
        with uniform dequantisation noise (a bound on the discrete NLL, the paper's number):
            bpd = (-log p(x01) + D log 256) / (D log 2),  x01 = (k + u) / 256."""
        x = x_uint8.float()
        if generator is None:
            noise = torch.rand_like(x)
        else:
            noise = torch.rand(x.shape, generator=generator).to(x.device)
        z, logdet = self.forward_flow((x + noise) / 256.0)
        dims = x[0].numel()
        nll = -(gaussian_log_density(z) + logdet) + dims * math.log(256.0)
        return nll / (dims * math.log(2.0))

    def forward(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """The training loss, bits per dimension per picture (N,): DistributedDataParallel wraps
        and calls `forward`, so the loss is what it must be."""
        return self.nll_bits_per_dim(x_uint8)

    @torch.no_grad()
    def initialize(self, x_uint8: torch.Tensor) -> None:
        """Data-dependent ActNorm initialisation from one batch (call once, before training)."""
        for module in self.modules():
            if isinstance(module, ActNorm):
                module.init_pending = True
        self.nll_bits_per_dim(x_uint8)

    # -- live ------------------------------------------------------------------------------------------
    def generate(self, cond: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        if latent is None:  # the mode of the prior: the flow's "most typical" picture
            latent = torch.zeros(1, self.latent_dim, device=self.anchors.device)
        return self.decode(latent.to(self.anchors.dtype))

    def precision_probe(self) -> tuple:
        """The anchors (up to PROBE_ANCHORS of them, spread over the list: the check runs on the
        loader thread as a model is switched to), the points halfway between neighbours (where the
        walks spend their time) and a few prior samples at the sampling temperature."""
        anchors = self.anchor_latents()
        if len(anchors) > PROBE_ANCHORS:
            anchors = anchors[torch.linspace(0, len(anchors) - 1, PROBE_ANCHORS).round().long()]
        halfway = ((anchors + anchors.roll(1, 0)) / 2)[:4]
        samples = torch.randn(4, self.latent_dim, generator=torch.Generator().manual_seed(0)) * SAMPLE_TEMPERATURE
        return None, torch.cat([anchors, halfway, samples])

    def anchor_latents(self, seed: int = 0) -> torch.Tensor:
        """(K, D) float32 on the CPU: the stored anchors, or seeded N(0, 0.7^2) stand-ins."""
        if self.config.n_anchors:
            return self.anchors.detach().float().cpu()
        rng = np.random.default_rng(seed)
        draws = rng.standard_normal((STAND_IN_ANCHORS, self.latent_dim)) * STAND_IN_STD
        return torch.from_numpy(draws.astype(np.float32))

    def navigator(self, mode: str | None = None, seed: int = 0, **params):
        from bridge.morph.anchors import make_navigator

        return make_navigator(mode or "explore", self.anchor_latents(seed), seed=seed, **params)


def with_anchors(model: RealNVP, folder: str | Path, size: int | None = None) -> RealNVP:
    """A new model, equal to `model`, whose `anchors` are the latents of the pictures in `folder`
    (one per picture, in file-name order; names are the file stems). Pictures of another size are
    centre-cropped and scaled to the model's size with a warning. `size`, when given, must be the
    model's: a flow only inverts pictures of the size it was built for."""
    from bridge.train.images import list_images, load_image_folder, to_unit

    if size is not None and int(size) != model.output_size:
        raise ConfigError(f"anchor size {size} does not match the model's {model.output_size}x"
                          f"{model.output_size} pictures")
    paths = list_images(folder)
    if len(paths) < 2:
        raise ConfigError(f"anchor folder {folder} has {len(paths)} picture; navigation moves "
                          f"between pictures and needs at least 2")
    pictures = load_image_folder(folder, model.output_size)
    device = model.anchors.device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        latents = torch.cat([model.encode(to_unit(chunk).to(device)) for chunk in pictures.split(64)])
    model.train(was_training)
    config = replace(model.config, n_anchors=len(paths), anchor_names=[p.stem for p in paths],
                     analysis=dict(model.config.analysis))
    new = RealNVP(config).to(device)
    state = {k: v for k, v in model.state_dict().items() if k != "anchors"}
    state["anchors"] = latents.to(new.anchors.dtype)
    new.load_state_dict(state)
    return new.train(was_training)
