"""LingerWalk: seed 002's walk, timed by the music.

The seed: "choose a random point in the low-dimensional space, linger there for a random amount
of time according to an auto-regressive lag-1 Markov process, then move to another randomly
sampled point" along the straight line between them. Here the latent is
    z = center + scale * (anchor + offset)
in units of the training latents' spread (`center`, `scale`: their mean and std per dimension):
  - anchor: the current target while lingering, a point on the line (or slerp) from the old
    target to the new one while moving, with a cosine ease so moves start and land softly;
  - offset: the AR(1) jitter, z_t - target = rho * (z_{t-1} - target) + sigma * eps, run as the
    exact discretisation of its continuous-time form (an Ornstein-Uhlenbeck process), so `rho`
    is "offset kept after one second" and `sigma` the jitter's steady spread at any tick rate:
        a = rho ** dt,   offset = a * offset + sigma * sqrt(1 - a^2) * eps.
The music:
  - onset strength (normalised here 0..1 against its own running peak) jolts the offset in a
    random direction on the very tick it arrives, and the jolt fades with rho: the picture jumps
    on hits and drifts back between them;
  - a strong onset or kick ends a linger early, but not before `min_linger_s` (rate limit);
  - moves run faster when louder (level) and surge on onsets; the jitter grows with level;
  - in silence the jitter shrinks to `calm` of sigma and the linger clock runs at `calm` pace.
Targets are center + scale * spread * N(0, I): where the training pictures live.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from bridge.errors import ConfigError
from bridge.morph.latent import Navigator, audio_level, ease_in_out

PATHS = ("line", "slerp")
LINGER_SHAPE = 2.0  # gamma shape of linger times: fewer very short lingers than an exponential
PUSH_REFERENCE_S = 1.0 / 30.0  # onset_push is the jolt of one full-onset tick at 30 fps
MAX_DT_S = 1.0  # a stalled engine must not fling the latent across the space when it resumes
# Onset strength (dB of mean mel flux) is normalised as the analyzer's pictures do it: above a
# slowly moving baseline, over a decaying peak, never over a span below ONSET_SPAN_FLOOR_DB (steady
# noise fluctuates by about 1 dB, which must stay calm).
ONSET_BASELINE_HALFLIFE_S = 0.5
ONSET_PEAK_HALFLIFE_S = 3.0
ONSET_SPAN_FLOOR_DB = 6.0


@dataclass
class LingerParams:
    """Every setting of the walk (the `walk_params` a preset or command line may give)."""

    linger_s: float = 4.0  # mean time at a target (gamma distributed), at full level
    move_s: float = 2.0  # duration of a move in quiet music
    rho: float = 0.3  # AR(1): share of the jitter's offset kept after one second, 0 <= rho < 1
    sigma: float = 0.15  # jitter's steady spread at full level, in training-latent stds
    calm: float = 0.3  # share of sigma and of the linger clock left in silence, 0..1
    spread: float = 1.0  # targets are drawn from N(center, (spread * scale)^2)
    loud_speedup: float = 2.0  # moves run (1 + loud_speedup * level) times faster
    onset_surge: float = 4.0  # ... plus onset_surge * onset on the ticks with an onset
    onset_push: float = 0.5  # jolt of a full onset (latent stds per dimension, at 30 fps)
    trigger: float = 0.5  # onset (0..1) or kick (0..1) that ends a linger early
    min_linger_s: float = 1.0  # no early end before this much time at a target
    path: str = "line"  # "line" (the seed's straight moves) or "slerp" (keeps the norm)

    def __post_init__(self):
        for name in ("linger_s", "move_s"):
            if not _number(getattr(self, name)) or getattr(self, name) <= 0:
                raise ConfigError(f"linger walk: {name} must be a positive number of seconds, "
                                  f"got {getattr(self, name)!r}")
        for name in ("sigma", "spread", "loud_speedup", "onset_surge", "onset_push", "min_linger_s"):
            if not _number(getattr(self, name)) or getattr(self, name) < 0:
                raise ConfigError(f"linger walk: {name} must be a number >= 0, got {getattr(self, name)!r}")
        if not _number(self.rho) or not 0 <= self.rho < 1:
            raise ConfigError(f"linger walk: rho must be in [0, 1) (share kept per second), got {self.rho!r}")
        for name in ("calm", "trigger"):
            if not _number(getattr(self, name)) or not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"linger walk: {name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.path not in PATHS:
            raise ConfigError(f"linger walk: path must be one of {', '.join(PATHS)}, got {self.path!r}")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Great-circle interpolation around the origin (here: the training latents' mean), with the
    norm interpolated linearly; nearly parallel ends fall back to a straight line."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na < 1e-9 or nb < 1e-9:
        return a + (b - a) * t
    cos = float(np.clip(a @ b / (na * nb), -1.0, 1.0))
    omega = math.acos(cos)
    if math.sin(omega) < 1e-6:
        return a + (b - a) * t
    direction = (math.sin((1 - t) * omega) * a / na + math.sin(t * omega) * b / nb) / math.sin(omega)
    return direction * (na + (nb - na) * t)


class LingerWalk(Navigator):
    mode = "linger"

    def __init__(self, latent_dim: int, seed: int = 0, center=None, scale=None, **params):
        """`center`, `scale`: (D,) mean and std of the training latents (default 0 and 1);
        `params`: LingerParams fields. Bad values raise ConfigError."""
        super().__init__(latent_dim, seed)
        names = {f.name for f in dataclasses.fields(LingerParams)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise ConfigError(f"linger walk has no parameter {', '.join(map(repr, unknown))}; "
                              f"known: {', '.join(sorted(names))}")
        self.params = LingerParams(**params)
        self.center = self._vector(center, 0.0, "center")
        self.scale = self._vector(scale, 1.0, "scale")
        if (self.scale < 0).any():
            raise ConfigError("linger walk: scale (latent std) must be >= 0")
        self.reset()

    def _vector(self, value, default: float, name: str) -> np.ndarray:
        if value is None:
            return np.full(self.latent_dim, default)
        v = np.asarray(value.detach().cpu() if torch.is_tensor(value) else value, dtype=np.float64)
        if v.shape != (self.latent_dim,) or not np.isfinite(v).all():
            raise ConfigError(f"linger walk: {name} must be {self.latent_dim} finite numbers, "
                              f"got shape {v.shape}")
        return v

    # -- state -----------------------------------------------------------------------------
    def reset(self) -> None:
        super().reset()
        self.phase = "linger"
        self.moves = 0  # moves started since reset (for tests and status)
        self.target = self._draw_target()  # whitened units
        self.start = self.target
        self.progress = 0.0  # of the current move, 0..1
        self.linger_left = self._draw_linger()  # seconds at full level
        self.lingered = 0.0  # seconds at the current target
        self.offset = np.zeros(self.latent_dim)
        self.anchor = self.target
        self._onset_baseline = 0.0
        self._onset_peak = ONSET_SPAN_FLOOR_DB

    def _draw_target(self) -> np.ndarray:
        return self.rng.standard_normal(self.latent_dim) * self.params.spread

    def _draw_linger(self) -> float:
        return float(self.rng.gamma(LINGER_SHAPE, self.params.linger_s / LINGER_SHAPE))

    def _onset_level(self, strength: float, dt: float) -> float:
        """Onset strength (dB flux) -> 0..1 against its running baseline and peak."""
        keep = 0.5 ** (dt / ONSET_BASELINE_HALFLIFE_S)
        above = max(0.0, strength - self._onset_baseline)
        self._onset_baseline = keep * self._onset_baseline + (1.0 - keep) * strength
        self._onset_peak = max(above, self._onset_peak * 0.5 ** (dt / ONSET_PEAK_HALFLIFE_S),
                               ONSET_SPAN_FLOOR_DB)
        return min(1.0, above / self._onset_peak)

    # -- one tick --------------------------------------------------------------------------
    def step(self, features, dt: float) -> torch.Tensor:
        p = self.params
        dt = min(max(float(dt), 0.0), MAX_DT_S)
        level, kick, onset_event = audio_level(features)
        strength = float(features.onset_strength) if features is not None else 0.0
        onset = self._onset_level(strength if math.isfinite(strength) else 0.0, dt)
        liveliness = p.calm + (1.0 - p.calm) * level  # 0 in silence would freeze the walk

        if self.phase == "linger":
            self.linger_left -= dt * liveliness
            self.lingered += dt
            hit = (onset_event and onset >= p.trigger) or kick >= p.trigger
            if self.linger_left <= 0 or (hit and self.lingered >= p.min_linger_s):
                self.phase, self.progress, self.moves = "move", 0.0, self.moves + 1
                self.start, self.target = self.target, self._draw_target()
        else:
            speed = 1.0 + p.loud_speedup * level + p.onset_surge * onset
            self.progress = min(1.0, self.progress + dt * speed / p.move_s)
            if self.progress >= 1.0:
                self.phase, self.lingered = "linger", 0.0
                self.linger_left = self._draw_linger()
        if self.phase == "move":
            t = ease_in_out(self.progress)
            self.anchor = (self.start + (self.target - self.start) * t if p.path == "line"
                           else _slerp(self.start, self.target, t))
        else:
            self.anchor = self.target

        # AR(1) jitter around the anchor, exact for any dt, plus the onset's jolt.
        a = p.rho ** dt if dt > 0 else 1.0
        noise = p.sigma * liveliness * math.sqrt(max(0.0, 1.0 - a * a))
        push = p.onset_push * onset * math.sqrt(dt / PUSH_REFERENCE_S)
        eps = self.rng.standard_normal((2, self.latent_dim))
        self.offset = a * self.offset + noise * eps[0] + push * eps[1]
        z = self.center + self.scale * (self.anchor + self.offset)
        return torch.from_numpy(z.astype(np.float32)).reshape(1, self.latent_dim)
