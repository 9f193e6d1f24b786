"""Audio pictures drawn by torch on the runner's device, inside the compiled (and on CUDA, graph
captured) call: the host sends a handful of numbers per frame instead of a picture.

`BandsDrawer` is `draw_bands` (bridge.analysis.pictures) in torch: the same rings, spokes, burst
and kick flash from the same five numbers, quantised to the same uint8 levels and scaled to
[-1, 1] like `image_to_tensor`, so a model sees exactly the kind of picture it was trained on
(held to the numpy drawer within one level by tests/test_device_pictures.py).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bridge.analysis.drawing import HIGH_RGB, KICK_RGB, LOW_RGB, MID_RGB
from bridge.analysis.pictures import _polar_grid

BANDS_PARAMS = ("low", "mid", "high", "onset", "kick")  # the columns of `bands_params`
_BACKGROUND_RGB = (0.03, 0.02, 0.06)


def bands_params(features) -> torch.Tensor:
    """(1, 5) float32: what `draw_bands` reads from an AudioFeatures, in BANDS_PARAMS order."""
    low, mid, high = features.bands
    onset = features._render.onset_norm if features._render else 0.0
    return torch.tensor([[low, mid, high, onset, features.kick]], dtype=torch.float32)


class BandsDrawer(nn.Module):
    """(N, 5) bands parameters -> (N, 3, size, size) float32 in [-1, 1] on uint8 levels."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = int(size)
        radius, spokes, falloff = _polar_grid(self.size)
        self.register_buffer("radius", torch.from_numpy(radius.copy()), persistent=False)
        self.register_buffer("spokes", torch.from_numpy(spokes.copy()), persistent=False)
        self.register_buffer("falloff", torch.from_numpy(falloff.copy()), persistent=False)
        colours = np.stack([LOW_RGB, MID_RGB, HIGH_RGB, np.ones(3, dtype=np.float32)])  # (4, 3)
        self.register_buffer("colours", torch.from_numpy(colours), persistent=False)
        self.register_buffer("kick_rgb", torch.from_numpy(KICK_RGB.copy()), persistent=False)
        self.register_buffer("background", torch.tensor(_BACKGROUND_RGB, dtype=torch.float32),
                             persistent=False)

    def _ramp(self, edge: torch.Tensor, slope: float) -> torch.Tensor:
        return ((edge - self.radius) * slope).clamp(0.0, 1.0)

    def _ring(self, at: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
        return torch.exp(-torch.square((self.radius - at) * (1.0 / width)))

    def forward(self, params: torch.Tensor) -> torch.Tensor:
        # Full precision whatever the network runs in: a picture's levels must not move with it.
        with torch.autocast(params.device.type, enabled=False):
            p = params.float()[:, :, None, None]  # (N, 5, 1, 1): broadcasts over the pixels
            low, mid, high, onset, kick = p.unbind(1)  # each (N, 1, 1)
            fields = torch.stack([
                self._ramp(0.12 + 0.8 * low, 12.0) * (0.35 + 0.65 * low) * self.falloff,
                self._ring(0.2 + 0.85 * mid, 0.03 + 0.08 * mid) * (0.2 + 0.8 * mid),
                self._ramp(0.15 + 1.1 * high, 6.0) * self.spokes * high,
                (self._ramp(0.1 + 0.6 * onset, 8.0) + self._ring(0.2 + 0.9 * onset, 0.05 + 0.15 * onset))
                * onset,
            ], dim=1)  # (N, 4, H, W)
            picture = torch.einsum("nfhw,fc->nchw", fields, self.colours)
            flash = self.background + (kick * kick * 0.35).reshape(-1, 1) * self.kick_rgb  # (N, 3)
            picture = picture + flash[:, :, None, None]
            levels = torch.floor((picture * 255.0 + 0.5).clamp(0.0, 255.0))  # to_uint8's levels
            return levels * (1.0 / 127.5) - 1.0
