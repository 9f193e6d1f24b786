"""Moving between latents: interpolation that keeps a Gaussian latent's norm, and the Navigator
seam that every audio-driven walk implements.

A Navigator owns a latent and moves it each engine tick from the newest audio features:
    step(features, dt) -> (1, D) float32 tensor
`features` is a bridge.analysis.AudioFeatures (or None before any audio); `dt` is the seconds
since the previous step. Navigators keep their own state; `reset()` returns to the start.
Randomness comes from a seeded numpy Generator, so an offline render is repeatable.
"""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch


def slerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from a (t=0) to b (t=1) along the last dimension.

    Straight lines between Gaussian latents pass through the low-norm middle where a model has
    seen nothing (White 2016, "Sampling generative networks"); slerp keeps the norm. Nearly
    parallel vectors fall back to a straight line, which is then the same to float precision."""
    a32, b32 = a.float(), b.float()
    na = a32.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    nb = b32.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cos = ((a32 / na) * (b32 / nb)).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    t = torch.as_tensor(t, dtype=a32.dtype)
    sin_omega = torch.sin(omega)
    straight = sin_omega.abs() < 1e-6
    safe = torch.where(straight, torch.ones_like(sin_omega), sin_omega)
    wa = torch.where(straight, 1.0 - t, torch.sin((1.0 - t) * omega) / safe)
    wb = torch.where(straight, t, torch.sin(t * omega) / safe)
    return (wa * a32 + wb * b32).to(a.dtype)


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    return a + (b - a) * t


def ease_in_out(t: float) -> float:
    """Cosine ease: 0 -> 1 with zero speed at both ends, so moves start and land softly."""
    t = min(max(t, 0.0), 1.0)
    return 0.5 - 0.5 * math.cos(math.pi * t)


def approach(current: float, target: float, dt: float, halflife_s: float) -> float:
    """Exponential smoothing with a half-life in seconds, independent of the tick rate."""
    if halflife_s <= 0:
        return target
    return target + (current - target) * 0.5 ** (dt / halflife_s)


class Navigator:
    """Base class for audio-driven latent walks (see the module docstring)."""

    mode: ClassVar[str] = ""

    def __init__(self, latent_dim: int, seed: int = 0):
        self.latent_dim = int(latent_dim)
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)

    def reset(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def step(self, features, dt: float) -> torch.Tensor:
        raise NotImplementedError

    def random_latent(self, scale: float = 1.0) -> torch.Tensor:
        return torch.from_numpy(self.rng.standard_normal((1, self.latent_dim)).astype(np.float32) * scale)


def audio_level(features) -> tuple[float, float, bool]:
    """(rms-like loudness 0..1, kick 0..1, onset) from features, silence when there are none."""
    if features is None:
        return 0.0, 0.0, False
    return float(features.level), float(features.kick), bool(features.onset)
