"""Upscaling the model's picture to the output's size (1080p, 4K) as the last step of a frame.

The models make square pictures of 32-512 px; a projector wants 1920x1080 or 3840x2160. `fit`
says how a square goes into a wide frame: `cover` fills it and crops top and bottom (centred),
`contain` shows all of it between black bars, `stretch` distorts it to fill.

Where it runs: on CUDA the float picture is resized there (bilinear or bicubic; lanczos, which
torch lacks, falls back to bicubic there) and only the final uint8 RGBA crosses the bus (see
runtime.PendingFrame). On the CPU the picture is turned into uint8 RGBA at the model's size first
and resized with OpenCV (cv2.resize: SIMD, uint8, all cores), which costs a fraction of torch's
float bicubic at 4K on a CPU.

    up = Upscaler(1920, 1080, mode="lanczos", fit="cover")
    frame = up.rgba(picture)          # (1080, 1920, 4) uint8, or a PendingFrame on CUDA
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from bridge.errors import ConfigError
from bridge.runtime import to_rgba, to_rgba_async

MODES = ("bilinear", "bicubic", "lanczos")
FITS = ("cover", "contain", "stretch")
CV2_MODES = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4}
MAX_SIDE = 8192


def parse_size(text: str) -> tuple[int, int]:
    """'1920x1080' -> (1920, 1080); ConfigError naming the value otherwise."""
    try:
        w, h = (int(part) for part in str(text).lower().replace("×", "x").split("x"))
    except ValueError:
        raise ConfigError(f"output size must look like 1920x1080, got {text!r}") from None
    if not (16 <= w <= MAX_SIDE and 16 <= h <= MAX_SIDE):
        raise ConfigError(f"output size must be 16..{MAX_SIDE} pixels a side, got {w}x{h}")
    return w, h


class Upscaler:
    """A (1, 3, h, w) picture in [-1, 1] -> an RGBA uint8 frame of `width` x `height`."""

    def __init__(self, width: int, height: int, mode: str = "bicubic", fit: str = "cover"):
        if mode not in MODES:
            raise ConfigError(f"upscale mode must be one of {', '.join(MODES)}, got {mode!r}")
        if fit not in FITS:
            raise ConfigError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
        self.width, self.height = parse_size(f"{width}x{height}")
        self.mode, self.fit = mode, fit

    def __repr__(self) -> str:
        return f"Upscaler({self.width}x{self.height}, {self.mode}, {self.fit})"

    def plan(self, w: int, h: int) -> tuple[int, int, int, int]:
        """(scaled width, scaled height, x offset, y offset) of the resized picture in the frame:
        offsets are >= 0 for bars (contain) and <= 0 for a crop (cover)."""
        if self.fit == "stretch":
            return self.width, self.height, 0, 0
        pick = max if self.fit == "cover" else min
        scale = pick(self.width / w, self.height / h)
        sw = self.width if self.width / w == scale else max(1, math.ceil(w * scale - 1e-9))
        sh = self.height if self.height / h == scale else max(1, math.ceil(h * scale - 1e-9))
        if self.fit == "contain":
            sw, sh = min(sw, self.width), min(sh, self.height)
        return sw, sh, (self.width - sw) // 2, (self.height - sh) // 2

    def rgba(self, picture: torch.Tensor, pending: bool = False):
        """The frame; with `pending` on CUDA a PendingFrame still copying to the host."""
        h, w = picture.shape[-2:]
        sw, sh, x, y = self.plan(w, h)
        if picture.device.type == "cuda":
            return self._on_device(picture, sw, sh, x, y, pending)
        return self._on_cpu(to_rgba(picture), sw, sh, x, y)

    def _on_cpu(self, rgba: np.ndarray, sw: int, sh: int, x: int, y: int) -> np.ndarray:
        scaled = cv2.resize(rgba, (sw, sh), interpolation=CV2_MODES[self.mode])
        return self._place(scaled, x, y)

    def _place(self, scaled: np.ndarray, x: int, y: int) -> np.ndarray:
        """Crop (negative offsets) or letterbox (positive) into the output frame."""
        if scaled.shape[:2] == (self.height, self.width):
            return np.ascontiguousarray(scaled)
        if x <= 0 and y <= 0:
            return np.ascontiguousarray(scaled[-y:-y + self.height, -x:-x + self.width])
        frame = np.zeros((self.height, self.width, 4), dtype=np.uint8)
        frame[..., 3] = 255  # black bars, opaque
        frame[y:y + scaled.shape[0], x:x + scaled.shape[1]] = scaled
        return frame

    def _on_device(self, picture: torch.Tensor, sw: int, sh: int, x: int, y: int, pending: bool):
        mode = "bilinear" if self.mode == "bilinear" else "bicubic"  # torch has no lanczos
        scaled = F.interpolate(picture.float(), size=(sh, sw), mode=mode, align_corners=False)
        if x <= 0 and y <= 0:
            out = scaled[..., -y:-y + self.height, -x:-x + self.width]
        else:
            out = torch.full((1, 3, self.height, self.width), -1.0, device=picture.device)
            out[..., y:y + sh, x:x + sw] = scaled
        return to_rgba_async(out) if pending else to_rgba(out)
