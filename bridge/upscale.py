"""Upscaling the model's picture to the output's size (1080p, 4K) as the last step of a frame.

The models make square pictures of 32-512 px; a projector wants 1920x1080 or 3840x2160. `fit`
says how a square goes into a wide frame: `cover` fills it and crops top and bottom (centred),
`contain` shows all of it between black bars, `stretch` distorts it to fill.

Where it runs (each the fastest correct path measured for its device, benchmarks/README.md):
- CPU: the picture is turned into uint8 RGBA at the model's size first and resized with OpenCV
  (cv2.resize: SIMD on uint8, 4 channels); for `cover`, only the source rows (or columns) that
  stay in the frame, plus the kernel's reach, are resized, so the cropped part is never computed.
  Float bicubic in torch followed by the RGBA conversion at 4K costs over half a second a frame
  on two cores; this path about 15-25 ms.
- CUDA (any non-CPU device): a separable resampling, `rows @ picture @ columns`, with the two
  weight matrices built once per input size and kept on the device. One code for all modes, so
  `lanczos` is real Lanczos there too (torch has none), and only the visible window is made.
  Then uint8 RGBA on the device and an async copy of that alone to the host (runtime.PendingFrame).
Both paths use OpenCV's kernels: bilinear, bicubic with a = -0.75 (as torch), Lanczos with
a = 4 (cv2.INTER_LANCZOS4), pixel centres aligned (align_corners=False), edges replicated.

    up = Upscaler(1920, 1080, mode="lanczos", fit="cover")
    frame = up.rgba(picture)          # (1080, 1920, 4) uint8, or a PendingFrame on CUDA
    big = up.resize(picture)          # (1, 3, 1080, 1920) float in [-1, 1], on the picture's device
"""
from __future__ import annotations

import logging
import math
from fractions import Fraction

import cv2
import numpy as np
import torch

from bridge.errors import ConfigError
from bridge.runtime import to_rgba, to_rgba_async

MODES = ("bilinear", "bicubic", "lanczos")
FITS = ("cover", "contain", "stretch")
CV2_MODES = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4}
REACH = {"bilinear": 1, "bicubic": 2, "lanczos": 4}  # kernel radius in source pixels
MAX_SIDE = 8192
SLOW_CPU_LANCZOS_PIXELS = 2_500_000  # above ~1080p, OpenCV's Lanczos (8x8 taps, no SIMD) misses 30 fps

log = logging.getLogger(__name__)


def parse_size(text: str) -> tuple[int, int]:
    """'1920x1080' -> (1920, 1080); ConfigError naming the value otherwise."""
    try:
        w, h = (int(part) for part in str(text).lower().replace("×", "x").split("x"))
    except ValueError:
        raise ConfigError(f"output size must look like 1920x1080, got {text!r}") from None
    if not (16 <= w <= MAX_SIDE and 16 <= h <= MAX_SIDE):
        raise ConfigError(f"output size must be 16..{MAX_SIDE} pixels a side, got {w}x{h}")
    return w, h


def _kernel(mode: str, d: torch.Tensor) -> torch.Tensor:
    """The interpolation kernel at distances `d` (source pixels), float64."""
    d = d.abs()
    if mode == "bilinear":
        return (1.0 - d).clamp(min=0.0)
    if mode == "bicubic":  # Keys' cubic with a = -0.75, OpenCV's and torch's choice
        a = -0.75
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))
    a = REACH["lanczos"]
    pd = math.pi * d
    sinc = a * torch.sin(pd) * torch.sin(pd / a) / (pd * pd).clamp(min=1e-12)
    return torch.where(d < 1e-9, torch.ones_like(d), torch.where(d < a, sinc, torch.zeros_like(d)))


def resampling_matrix(mode: str, n_in: int, n_out: int, scale: float, start: int = 0) -> torch.Tensor:
    """(n_out, n_in) float32: row j makes output pixel `start + j` of the input resized by `scale`
    (align_corners=False: out pixel u samples the input at (u + 0.5) / scale - 0.5); taps past the
    edge use the edge pixel; each row sums to 1."""
    reach = REACH[mode]
    at = (torch.arange(n_out, dtype=torch.float64) + start + 0.5) / scale - 0.5  # (n_out,)
    taps = torch.floor(at)[:, None] + torch.arange(1 - reach, reach + 1, dtype=torch.float64)  # (n_out, 2r)
    weights = _kernel(mode, at[:, None] - taps)
    weights = weights / weights.sum(1, keepdim=True)
    matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
    matrix.scatter_add_(1, taps.clamp(0, n_in - 1).long(), weights)
    return matrix.float()


class Upscaler:
    """A (1, 3, h, w) picture in [-1, 1] -> an RGBA uint8 frame of `width` x `height`."""

    def __init__(self, width: int, height: int, mode: str = "bicubic", fit: str = "cover"):
        if mode not in MODES:
            raise ConfigError(f"upscale mode must be one of {', '.join(MODES)}, got {mode!r}")
        if fit not in FITS:
            raise ConfigError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
        self.width, self.height = parse_size(f"{width}x{height}")
        self.mode, self.fit = mode, fit
        self._matrices: dict = {}  # (h, w, device) -> (rows (H', h), columns^T (w, W'))
        self._warned = False

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
        if picture.device.type == "cpu":
            return self._on_cpu(to_rgba(picture))
        frame = self.resize(picture)
        return to_rgba_async(frame) if pending else to_rgba(frame)

    # --- CPU: OpenCV on uint8 ---------------------------------------------------------------------
    def _on_cpu(self, rgba: np.ndarray) -> np.ndarray:
        h, w = rgba.shape[:2]
        sw, sh, x, y = self.plan(w, h)
        interpolation = CV2_MODES[self.mode]
        if self.mode == "lanczos" and self.width * self.height > SLOW_CPU_LANCZOS_PIXELS and not self._warned:
            self._warned = True  # measured: 3840x2160 about 95 ms a frame on 2 cores, bicubic 15 ms
            log.warning("lanczos upscaling to %dx%d on the CPU costs about 100 ms a frame; bicubic is "
                        "6x cheaper and within 0.2 dB on real pictures", self.width, self.height)
        if y < 0 or x < 0:  # cover: resize only the rows (or columns) that stay, when exact
            axis = 0 if y < 0 else 1
            scaled = self._cropped_resize(rgba, (sw, sh), -y if axis == 0 else -x, axis, interpolation)
            if scaled is not None:
                return np.ascontiguousarray(scaled)
        return self._place(cv2.resize(rgba, (sw, sh), interpolation=interpolation), x, y)

    def _cropped_resize(self, rgba: np.ndarray, size: tuple[int, int], first: int, axis: int,
                        interpolation: int) -> np.ndarray | None:
        """The frame's window of `rgba` resized to `size`, starting `first` scaled pixels into it
        along `axis`, from the source strip it needs. The strip's ends are whole steps of the
        scale's denominator, so its own resize has exactly the full resize's scale and sample
        positions; None when the scale's denominator is too fine for that to save work."""
        n_in = rgba.shape[axis]
        n_scaled = size[1 - axis]  # cv2 sizes are (width, height)
        step = Fraction(n_scaled, n_in)  # p / q: q source pixels make p scaled ones
        q, p = step.denominator, step.numerator
        keep = self.height if axis == 0 else self.width
        margin = REACH[self.mode] + 1  # source pixels the kernel reaches past the window
        lo = max(0, (math.floor(first / step) - margin) // q * q)
        hi = min(n_in, -(-(math.ceil((first + keep) / step) + margin) // q) * q)
        if hi - lo > 0.8 * n_in:  # saves too little
            return None
        strip = rgba[lo:hi] if axis == 0 else rgba[:, lo:hi]
        out_len = (hi - lo) // q * p
        out = cv2.resize(strip, (size[0], out_len) if axis == 0 else (out_len, size[1]),
                         interpolation=interpolation)
        offset = first - lo // q * p
        return out[offset:offset + keep] if axis == 0 else out[:, offset:offset + keep]

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

    # --- any device: separable resampling as two matrix products ---------------------------------
    def _matrices_for(self, h: int, w: int, device: torch.device):
        key = (h, w, str(device))
        if key not in self._matrices:
            sw, sh, x, y = self.plan(w, h)
            # the visible window of the scaled picture: all of it, or the crop's part
            rows = resampling_matrix(self.mode, h, min(sh, self.height), sh / h, max(0, -y))
            cols = resampling_matrix(self.mode, w, min(sw, self.width), sw / w, max(0, -x))
            self._matrices[key] = (rows.to(device), cols.t().contiguous().to(device))
        return self._matrices[key]

    @torch.inference_mode()
    def resize(self, picture: torch.Tensor) -> torch.Tensor:
        """(1, 3, h, w) in [-1, 1] -> (1, 3, height, width) on the picture's device, bars black.
        Float; on the CPU the `rgba` path (OpenCV on uint8) is the fast one."""
        h, w = picture.shape[-2:]
        rows, cols = self._matrices_for(h, w, picture.device)
        window = rows @ picture.float() @ cols  # (1, 3, h', w'): the part of the frame with picture
        if window.shape[-2:] == (self.height, self.width):
            return window.clamp_(-1.0, 1.0)
        _, _, x, y = self.plan(w, h)
        frame = torch.full((1, 3, self.height, self.width), -1.0, device=picture.device)
        frame[..., max(0, y):max(0, y) + window.shape[-2], max(0, x):max(0, x) + window.shape[-1]] = window
        return frame.clamp_(-1.0, 1.0)
