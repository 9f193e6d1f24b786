"""Conditioning pictures drawn by torch on the runner's device, inside the compiled (and on CUDA,
graph captured) call: the host sends what a picture is drawn from instead of the float picture.

`BandsDrawer` is `draw_bands` (bridge.analysis.pictures) in torch: the same rings, spokes, burst
and kick flash from the same five numbers. `ColourMapDrawer` is `draw_mel` / `draw_spectrogram`:
the dB array and its ceiling in, the same scaling, linear resize and colour map. Both quantise to
the same uint8 levels and scale to [-1, 1] like `image_to_tensor`, so a model sees the kind of
picture it was trained on (held to the numpy drawers by tests/test_device_pictures.py).
`FrameDrawer` takes camera frames as the host fitted them to the model's size, still uint8
(a quarter of the float picture's bytes to copy), and scales them to [-1, 1] there.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bridge.analysis.drawing import HIGH_RGB, KICK_RGB, LOW_RGB, MID_RGB, _colour_table_u8
from bridge.analysis.pictures import BANDS_BACKGROUND_RGB, DB_RANGE, _polar_grid, mel_source, render_data
from bridge.generators.base import frames_to_input, square_to_frames

BANDS_PARAMS = ("low", "mid", "high", "onset", "kick")  # the columns of `bands_params`


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
        self.register_buffer("background", torch.from_numpy(BANDS_BACKGROUND_RGB.copy()), persistent=False)

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
            return _levels_to_input(_to_levels(picture))


def _to_levels(unit: torch.Tensor) -> torch.Tensor:
    """0..1 -> the uint8 levels `to_uint8` gives (rounded, clipped), as floats."""
    return torch.floor((unit * 255.0 + 0.5).clamp(0.0, 255.0))


def _levels_to_input(levels: torch.Tensor) -> torch.Tensor:
    """uint8 levels (as floats) -> the network's [-1, 1], as `image_to_tensor` scales them."""
    return levels * (1.0 / 127.5) - 1.0


def colour_map_params(features, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """What `draw_mel` / `draw_spectrogram` read: ((1, 1) ceiling dB, (1, A, B) dB array as the
    analysis holds it: mel (mels, frames), spectrogram (frames, bins))."""
    if name == "mel":
        db, ceiling = mel_source(features)
    else:
        render = render_data(features)
        db, ceiling = np.asarray(render.spectrogram_db, dtype=np.float32), render.spectrogram_ceiling_db
    return torch.tensor([[ceiling]], dtype=torch.float32), torch.from_numpy(db.copy())[None]


class ColourMapDrawer(nn.Module):
    """((N, 1) ceiling, (N, A, B) dB) -> (N, 3, size, size) in [-1, 1] on uint8 levels: the dB
    range below the ceiling made 0..1, high frequencies at the top (`transpose`: the array is
    (time, frequency), as the spectrogram's), linear resize at pixel centres, the dark-to-hot map."""

    def __init__(self, size: int, transpose: bool, range_db: float = DB_RANGE) -> None:
        super().__init__()
        self.size, self.transpose, self.range_db = int(size), bool(transpose), float(range_db)
        table = torch.from_numpy(_colour_table_u8().astype(np.float32))  # (256, 3) levels
        self.register_buffer("table", table, persistent=False)

    def forward(self, ceiling: torch.Tensor, db: torch.Tensor) -> torch.Tensor:
        with torch.autocast(db.device.type, enabled=False):
            db = db.float()
            if self.transpose:
                db = db.transpose(1, 2)
            db = db.flip(1)  # row 0 = the highest frequency
            floor = ceiling.float().reshape(-1, 1, 1) - self.range_db
            unit = ((db - floor) * (1.0 / self.range_db)).clamp(0.0, 1.0)
            unit = F.interpolate(unit[:, None], size=(self.size, self.size), mode="bilinear",
                                 align_corners=False)[:, 0]
            rgb = self.table[_to_levels(unit).long()]  # (N, size, size, 3)
            return _levels_to_input(rgb.permute(0, 3, 1, 2).contiguous())


GREY_LEVEL = 128  # a missing camera frame: mid-grey (the host's zeros are level 127.5)


def frame_params(square: np.ndarray | None, size: int) -> torch.Tensor:
    """(1, size, size, 3) uint8: a camera frame already fitted to the model's square (RGB), or,
    with none, mid-grey, so the call's inputs keep one shape and type whether a camera is there
    or not (a compiled call would otherwise compile again when the first frame arrives)."""
    if square is None:
        return torch.full((1, size, size, 3), GREY_LEVEL, dtype=torch.uint8)
    return square_to_frames(square)


class FrameDrawer(nn.Module):
    """Camera frames as `frame_params` gives them, (N, H, W, 3) uint8, -> (N, 3, H, W) in
    [-1, 1], scaled as `image_to_tensor` does. Takes the condition's tensors as arguments and
    returns them in the same arrangement (one, or a tuple: the VAE-associator's (frame, mel)):
    only uint8 frames are converted; float tensors (a picture the host made, a mel) pass as
    they are."""

    def forward(self, *tensors: torch.Tensor):
        out = tuple(frames_to_input(t) if t.dtype == torch.uint8 else t for t in tensors)
        return out[0] if len(out) == 1 else out
