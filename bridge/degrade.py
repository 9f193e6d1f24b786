"""Graceful degradation: when the model cannot keep the frame rate, make its pictures smaller.

A level is an internal resolution: the conditioning image is shrunk before the model and the
picture grown back to the model's size after it, so everything downstream (smoothing, the
sinks) never sees a size change. Only fully convolutional image-to-image families have levels
(pix2pix); a latent family's decoder makes one fixed size, so it has the full level only.

The pix2pix U-Net has log2(size) down-samplings and reaches 1x1 at full size, so the plain
network accepts no smaller input at all (it must be a multiple of 2^depth = the full size).
`unet_any_size` runs the same weights on a smaller picture: before a down-sampling an odd
feature map is padded by one replicated row/column, and after an up-sampling the result is
cropped to its skip connection. Sizes that are multiples of 32 only pad the deepest maps
(3x3 and smaller), where the network looks at the whole picture anyway.

`DegradeController` is a pure function of the generation times it is shown: it steps down one
level when the 90th percentile of the last second's times passes 90 % of the frame period, and
steps back up only after the level above is predicted to fit in 70 % of the period for two
seconds; a step up that fails at once doubles the wait before the next try (no oscillation).
When a level's runner changes (a compiled one takes over), the cost measured on the old one is
forgotten; such a level above is tried rather than predicted.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bridge.errors import ConfigError
from bridge.generators.base import Generator

AUTO_SCALES = (1.0, 0.75, 0.5, 0.25)
SIZE_STEP = 16  # level sizes are multiples of this: padding stays in the deepest, smallest maps
MIN_SIZE = 32


@dataclass(frozen=True)
class DegradeLevel:
    name: str  # "full", "3/4", "1/2", ...
    size: int  # the internal (model input) size in pixels


def parse_degrade(spec: str | None) -> tuple[float, ...] | None:
    """`--degrade` value -> the scales of its levels, or None for off.
    'auto': full, 3/4, 1/2, 1/4; or comma-separated scales in (0, 1], e.g. '1,0.75,0.5'."""
    if spec is None or spec.strip().lower() in ("", "off", "none", "no"):
        return None
    if spec.strip().lower() == "auto":
        return AUTO_SCALES
    try:
        scales = tuple(float(s) for s in spec.split(","))
    except ValueError:
        raise ConfigError(f"--degrade wants 'auto', 'off' or scales like 1,0.75,0.5; got {spec!r}") from None
    if not scales or any(not 0.0 < s <= 1.0 for s in scales):
        raise ConfigError(f"--degrade scales must be in (0, 1], got {spec!r}")
    return tuple(sorted(set(scales) | {1.0}, reverse=True))


def _scale_name(scale: float) -> str:
    if scale == 1.0:
        return "full"
    from fractions import Fraction
    f = Fraction(scale).limit_denominator(16)
    return f"{f.numerator}/{f.denominator}"


def levels_for(model: Generator, scales: tuple[float, ...] | None) -> tuple[list[DegradeLevel], str]:
    """The levels `model` can play at, full first, and a note saying why there are no more."""
    full = DegradeLevel("full", model.output_size)
    if not scales:
        return [full], "degradation off"
    if model.family != "pix2pix":
        return [full], (f"model family '{model.family}' makes one fixed picture size: "
                        "degradation has the full level only")
    levels, sizes = [full], {full.size}
    for scale in scales:
        size = max(MIN_SIZE, int(round(model.output_size * scale / SIZE_STEP)) * SIZE_STEP)
        if size not in sizes and size < full.size:
            sizes.add(size)
            levels.append(DegradeLevel(_scale_name(scale), size))
    levels.sort(key=lambda level: -level.size)
    return levels, f"levels {', '.join(f'{lv.name} ({lv.size}px)' for lv in levels)}"


def unet_any_size(unet, x: torch.Tensor) -> torch.Tensor:
    """pix2pix's UNet.forward for any input size (see the module docstring for how)."""
    skips = []
    for down in unet.downs:
        pad_w, pad_h = x.shape[-1] % 2, x.shape[-2] % 2
        if pad_w or pad_h:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        x = down(x)
        skips.append(x)
    x = unet.ups[0](skips.pop())
    for up in unet.ups[1:]:
        skip = skips.pop()
        x = x[..., :skip.shape[-2], :skip.shape[-1]]
        x = up(torch.cat([x, skip], dim=1))
    return x


class ScaledPix2Pix(Generator):
    """A pix2pix model played at a smaller internal size: (1, 3, S, S) in -> (1, 3, S, S) out,
    with the network run at (size, size) between. A Runner compiles it like any generator, and
    the optimized one draws the full-size condition on the device as for the full model."""

    family = "pix2pix"

    def __init__(self, model: Generator, size: int):
        super().__init__(model.config)
        self.model = model
        self.size = int(size)

    @property
    def inputs(self) -> frozenset[str]:
        return self.model.inputs

    @property
    def output_size(self) -> int:
        return self.model.output_size

    def condition(self, snapshot):
        return self.model.condition(snapshot)

    def condition_drawer(self):
        """The full model's: the full-size picture is drawn on the device, then shrunk in `generate`."""
        return self.model.condition_drawer()

    def condition_params(self, snapshot):
        return self.model.condition_params(snapshot)

    def generate(self, cond: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        full = cond.shape[-1]
        small = F.interpolate(cond, size=(self.size, self.size), mode="area")  # averages: no aliasing
        picture = unet_any_size(self.model.net, small)
        return F.interpolate(picture, size=(full, full), mode="bilinear", align_corners=False)


@dataclass
class DegradeSettings:
    window_s: float = 1.0  # the generation times a decision is made on
    quantile: float = 90.0
    down_fraction: float = 0.9  # slower than this share of the period: step down
    up_fraction: float = 0.7  # the level above, predicted under this share: room to step up
    up_hold_s: float = 2.0  # ... for this long
    probation_s: float = 3.0  # a step up undone within this long was a failed try
    max_backoff: int = 16  # a failed try doubles the next up_hold, up to this many times it

    def __post_init__(self):
        if not 0.0 < self.up_fraction < self.down_fraction <= 1.5:
            raise ValueError("need 0 < up_fraction < down_fraction: the gap is the hysteresis")
        if self.window_s <= 0 or self.up_hold_s < 0 or not 0 < self.quantile <= 100:
            raise ValueError("window_s must be positive, up_hold_s >= 0, quantile in (0, 100]")


class DegradeController:
    """Picks the level from generation times: `observe(seconds, now, period) -> level index`
    (0 = full). Deterministic and clock-free: the engine passes its clock, tests a made-up one."""

    def __init__(self, levels: list[DegradeLevel], settings: DegradeSettings | None = None):
        if not levels:
            raise ValueError("need at least the full level")
        self.levels = list(levels)
        self.settings = settings or DegradeSettings()
        self.level = 0
        self.changes = 0
        self._times: deque = deque()  # (now, seconds) at the current level
        self._since: float | None = None  # when the current level began
        self._headroom_since: float | None = None
        self._went_up_at: float | None = None
        self._backoff = 1
        self._cost: dict[int, float] = {}  # level -> typical (median) seconds, last seen

    @property
    def name(self) -> str:
        return self.levels[self.level].name

    def _pixel_ratio(self, higher: int, lower: int) -> float:
        return (self.levels[higher].size / self.levels[lower].size) ** 2

    def _ratio(self, higher: int, lower: int) -> float:
        """How much slower `higher` is than `lower`: as measured, but never more than the pixel
        ratio (a cost measured while the machine was busier must not keep us down for good).
        Not measured on the runners playing now (see `forget_costs`): 1, a try that measures it,
        as the pixel ratio overstates a tick whose fixed part (drawing the audio picture at full
        size, upscaling, blending a mix) is most of it at a low level: four pix2pix-pulse
        compiled at 1/4 took 16 ms a tick, at 1/2 not the 64 the pixels say, and held 1/4
        for good after their compile."""
        if higher not in self._cost:
            return 1.0
        pixels = self._pixel_ratio(higher, lower)
        if lower in self._cost and self._cost[lower] > 0:
            return min(pixels, self._cost[higher] / self._cost[lower])
        return pixels

    def forget_costs(self, now: float, levels=None) -> None:
        """The runners of `levels` (indices; all by default) changed (compiled ones took over from
        those played while they compiled): what they cost is not known any more. The current
        level among them is judged afresh; one above the current level among them is tried (see
        `_ratio`), and the tries that failed on the old runners up there say nothing (the
        backoff goes). What the other levels cost still holds: their runners are the same (a
        compile made level by level swaps one at a time, and the traced levels above the
        compiled one are as slow as measured)."""
        levels = set(range(len(self.levels)) if levels is None else levels)
        for level in levels:
            self._cost.pop(level, None)
        if self.level in levels:
            self._times.clear()
            self._since = now
            self._went_up_at = None  # the step up to it, if on probation, was a try of the old runner
        if levels & {self.level, self.level - 1}:
            self._headroom_since = None  # the prediction of the level above changed
        if any(level < self.level for level in levels):
            self._backoff = 1  # the tries that failed up there were of the old runners

    def _move(self, level: int, now: float) -> None:
        self.level = level
        self.changes += 1
        self._times.clear()
        self._since = now
        self._headroom_since = None

    def observe(self, seconds: float, now: float, period: float) -> int:
        s = self.settings
        if self._since is None:
            self._since = now
        self._times.append((now, seconds))
        while len(self._times) > 3 and self._times[0][0] < now - s.window_s:
            self._times.popleft()  # the last second, but never under 3 frames (a slow fps)
        if now - self._since < s.window_s or len(self._times) < 3:
            return self.level  # a fresh level (or a fresh start) is judged on a full window
        times = np.fromiter((t for _, t in self._times), float)
        slow = float(np.percentile(times, s.quantile))
        self._cost[self.level] = float(np.median(times))
        if self._went_up_at is not None and now - self._went_up_at > s.probation_s:
            self._went_up_at, self._backoff = None, 1  # the step up held: trust the next one
        if slow > s.down_fraction * period and self.level < len(self.levels) - 1:
            if self._went_up_at is not None:  # the level above was tried and failed: wait longer
                self._backoff = min(self._backoff * 2, s.max_backoff)
                self._went_up_at = None
            self._move(self.level + 1, now)
        elif self.level > 0 and slow * self._ratio(self.level - 1, self.level) < s.up_fraction * period:
            if self._headroom_since is None:
                self._headroom_since = now
            if now - self._headroom_since >= s.up_hold_s * self._backoff:
                self._move(self.level - 1, now)
                self._went_up_at = now
        else:
            self._headroom_since = None
        return self.level

