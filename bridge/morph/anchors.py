"""Walks between anchors: the latents of the user's own pictures (seed 004, "Real-EDM").

Three navigators, each a `Navigator` (bridge/morph/latent.py) driven by AudioFeatures every
engine tick, each moving between anchor latents (K, D) with slerp:

  weighted  The spectrum split into K sections (one per anchor) -> softmax -> weighted average
            of the anchors. The seed found it "too consistent or too random"; here
            - sections are mel-spaced runs of `features.mel_db` (the newest frames), in dB above
              their own running baseline, so a bass-heavy mix does not pin the lowest anchor
              forever: whatever section just got louder than usual wins;
            - the weights follow the softmax with a half-life divided by level * (1 + surge *
              punch): slow between hits, a jump on a hit, frozen in silence;
            - the averaged latent is rescaled to the anchors' mean norm (an average of Gaussian
              latents is shorter than any of them and decodes to a grey blur).
  magellan  Around the anchors in a circle (0 -> 1 -> ... -> K-1 -> 0), slerp between
            neighbours, speed = level * (1 + surge * punch) / seconds_per_anchor: cruising with
            the loudness, a lurch forward on each hit. `idle_drift` of the full speed is kept in
            silence; its default 0 means a silent room shows a still picture.
  explore   Rest on a base anchor; each hit (and, by `level_share`, loudness) morphs the picture
            toward a random other anchor by amount * envelope, the envelope rising with `attack_s`
            and falling with `release_s` half-lives ("an image that gets distorted each time the
            kick hits"). An onset (at most one per `min_gap_s`) picks a new random target; every
            `base_every_bars` bars of music, or on an onset `strong_onset` times stronger than
            usual, the base glides to the current target.

"punch" (OnsetPunch) is the newest onset strength above its running mean, 0..1, read in the tick
it happens: pictures that move on it change on the frame of the attack, which is what a viewer
(and the onset-correlation acceptance measure) sees as "following the music".

Every navigator's settings are declared once in its PARAMS (default, range, meaning), checked
when it is built (ConfigError names the bad one), and `reset()` returns to the seeded start.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from bridge.errors import ConfigError
from bridge.morph.latent import Navigator, audio_level, ease_in_out, slerp

RECENT_MEL_FRAMES = 3  # newest mel frames the weighted walk reads: ~35 ms, one 30 fps tick
SILENT_LEVEL = 0.02  # below this level, beats are not counted (the tempo keeps running in silence)
FALLBACK_BPM = 120.0  # bars are counted at this tempo until the analyzer has found one
MAX_DT_S = 1.0  # a stalled engine must not fling the latent across the anchors when it resumes
STRONG_ONSET_MIN_BARS = 2  # a looped accent would otherwise move explore's base every bar
# Punch (see OnsetPunch): flux in dB that counts as a full hit at the least (steady noise wobbles
# by about +-1 dB), and the half-lives of the running mean and running peak it is measured against.
PUNCH_FLOOR_DB = 6.0
HIT_PUNCH = 0.5  # a punch this hard counts as an onset (explore picks a new target on it)
PUNCH_BASELINE_HALFLIFE_S = 0.5
PUNCH_PEAK_HALFLIFE_S = 3.0


@dataclass(frozen=True)
class Param:
    default: float
    low: float
    high: float
    doc: str
    integer: bool = False


def _resolve(mode: str, declared: dict[str, Param], given: dict) -> dict[str, float]:
    """Declared defaults overridden by `given`, each checked against its range."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ConfigError(f"{mode} navigator has no parameter(s) {', '.join(unknown)}; "
                          f"it takes {', '.join(declared)}")
    values = {}
    for name, param in declared.items():
        raw = given.get(name, param.default)
        try:
            if isinstance(raw, bool):
                raise TypeError
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{mode} navigator: {name} must be a number, got {raw!r}") from None
        if not math.isfinite(value) or not param.low <= value <= param.high:
            raise ConfigError(f"{mode} navigator: {name} must be in [{param.low:g}, {param.high:g}] "
                              f"({param.doc}), got {raw!r}")
        if param.integer:
            if value != int(value):
                raise ConfigError(f"{mode} navigator: {name} must be a whole number, got {raw!r}")
            value = int(value)
        values[name] = value
    return values


def _tick(dt: float) -> float:
    return min(max(float(dt), 0.0), MAX_DT_S)


def _keep(dt: float, halflife_s: float) -> float:
    """Share of the old value that exponential smoothing keeps after dt seconds."""
    return 0.0 if halflife_s <= 0 else 0.5 ** (dt / halflife_s)


class OnsetPunch:
    """How hard this tick hits, 0..1: the newest onset strength above its running mean, as a share
    of its running peak above that mean (the analyzer's onset picture uses the same measure).

    Why not `features.onset` or `kick`: both are confirmed a tick after the attack (the peak
    picker waits for the maximum; the kick for its rise), so a picture that moves on them moves
    one frame late. Read here, the change lands on the frame of the attack. Zero when quiet."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.baseline = 0.0
        self.peak = 0.0

    def __call__(self, features, level: float, dt: float) -> float:
        if features is None or dt <= 0.0:
            return 0.0
        strength = float(features.onset_strength)
        self.baseline = strength + (self.baseline - strength) * _keep(dt, PUNCH_BASELINE_HALFLIFE_S)
        self.peak = max(strength, self.peak * _keep(dt, PUNCH_PEAK_HALFLIFE_S))
        span = max(self.peak - self.baseline, PUNCH_FLOOR_DB)
        punch = min(1.0, max(0.0, strength - self.baseline) / span)
        return punch if level >= SILENT_LEVEL else 0.0


class AnchorNavigator(Navigator):
    """Common part: the anchors (K >= 2, finite), the declared parameters, the seeded reset."""

    PARAMS: ClassVar[dict[str, Param]] = {}

    def __init__(self, anchors: torch.Tensor, seed: int = 0, **params):
        anchors = torch.as_tensor(anchors).detach().to("cpu", torch.float32)
        if anchors.dim() != 2 or anchors.shape[0] < 2:
            raise ConfigError(f"{self.mode} navigator needs at least 2 anchor latents (K, D), got "
                              f"shape {tuple(anchors.shape)}")
        if not torch.isfinite(anchors).all():
            raise ConfigError(f"{self.mode} navigator: the anchor latents contain NaN or inf")
        super().__init__(anchors.shape[1], seed)
        self.anchors = anchors.contiguous()
        self.params = _resolve(self.mode, self.PARAMS, params)
        for name, value in self.params.items():
            setattr(self, name, value)
        self.punch = OnsetPunch()
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.punch.reset()

    @property
    def n_anchors(self) -> int:
        return int(self.anchors.shape[0])

    def _other(self, *excluded: int) -> int:
        """A random anchor index not in `excluded` (when any is left)."""
        choices = [k for k in range(self.n_anchors) if k not in excluded] or list(range(self.n_anchors))
        return int(choices[self.rng.integers(len(choices))])


# --- weighted ---------------------------------------------------------------------------------------

def mel_sections_db(mel_db: np.ndarray, sections: int, frames: int = RECENT_MEL_FRAMES) -> np.ndarray:
    """(n_mels, mel_frames) dB -> (sections,) dB: the mean power of each of `sections` runs of
    neighbouring mel bands over the newest `frames` frames. Sections outnumbering the bands
    reuse bands (section k reads band floor(k * n_mels / sections) at least)."""
    power = np.power(10.0, np.asarray(mel_db, dtype=np.float64)[:, -frames:] / 10.0).mean(axis=1)
    n = len(power)
    starts = (np.arange(sections) * n) // sections
    ends = np.maximum(((np.arange(sections) + 1) * n) // sections, starts + 1)
    cumulative = np.concatenate(([0.0], np.cumsum(power)))
    mean = (cumulative[ends] - cumulative[starts]) / (ends - starts)
    return 10.0 * np.log10(np.maximum(mean, 1e-10))


class WeightedNavigator(AnchorNavigator):
    mode = "weighted"
    PARAMS = {
        "temperature": Param(3.0, 0.05, 100.0, "softmax temperature in dB: low picks one anchor "
                                               "at a time, high blends them evenly"),
        "halflife_s": Param(0.3, 0.0, 10.0, "half-life of the weights at full level (slower "
                                             "when quieter, frozen in silence)"),
        "baseline_halflife_s": Param(4.0, 0.1, 600.0, "how fast each section's usual loudness "
                                                      "follows the music"),
        "surge": Param(8.0, 0.0, 100.0, "extra speed of the weights on a hit: x(1 + surge * punch)"),
    }

    def reset(self) -> None:
        super().reset()
        self.weights = np.zeros(self.n_anchors)
        self.weights[self.rng.integers(self.n_anchors)] = 1.0  # start on one of the pictures
        self.baseline: np.ndarray | None = None
        self.mean_norm = float(self.anchors.norm(dim=1).mean())

    def step(self, features, dt: float) -> torch.Tensor:
        level, _, _ = audio_level(features)
        dt = _tick(dt)
        punch = self.punch(features, level, dt)
        if level > 0.0 and dt > 0.0:
            sections = mel_sections_db(features.mel_db, self.n_anchors)
            if self.baseline is None:
                self.baseline = sections.copy()
            above = sections - self.baseline
            self.baseline = sections + (self.baseline - sections) * _keep(dt, self.baseline_halflife_s)
            logits = above / self.temperature
            target = np.exp(logits - logits.max())
            target /= target.sum()
            keep = _keep(dt * min(level, 1.0) * (1.0 + self.surge * punch), self.halflife_s)
            self.weights = target + (self.weights - target) * keep
        mixed = torch.from_numpy(self.weights.astype(np.float32)) @ self.anchors  # (D,)
        mixed = mixed * (self.mean_norm / float(mixed.norm().clamp_min(1e-6)))
        return mixed.unsqueeze(0)


# --- magellan ---------------------------------------------------------------------------------------

class MagellanNavigator(AnchorNavigator):
    mode = "magellan"
    PARAMS = {
        "seconds_per_anchor": Param(4.0, 0.05, 3600.0, "seconds from one anchor to the next at "
                                                       "full level"),
        "idle_drift": Param(0.0, 0.0, 1.0, "share of the full speed kept in silence (0: still)"),
        "surge": Param(3.0, 0.0, 100.0, "extra speed on a hit: x(1 + surge * punch)"),
    }

    def reset(self) -> None:
        super().reset()
        self.position = float(self.rng.integers(self.n_anchors))  # in anchors, 0 <= position < K

    def step(self, features, dt: float) -> torch.Tensor:
        level, _, _ = audio_level(features)
        dt = _tick(dt)
        punch = self.punch(features, level, dt)
        drive = (self.idle_drift + (1.0 - self.idle_drift) * min(level, 1.0)) * (1.0 + self.surge * punch)
        self.position = (self.position + dt * drive / self.seconds_per_anchor) % self.n_anchors
        i = int(self.position) % self.n_anchors
        return slerp(self.anchors[i:i + 1], self.anchors[(i + 1) % self.n_anchors][None],
                     self.position - int(self.position))


# --- explore ----------------------------------------------------------------------------------------

class ExploreNavigator(AnchorNavigator):
    mode = "explore"
    PARAMS = {
        "amount": Param(0.6, 0.0, 1.0, "how far a full hit morphs toward the target (slerp share)"),
        "attack_s": Param(0.01, 0.0, 2.0, "half-life of the morph's rise"),
        "release_s": Param(0.15, 0.0, 10.0, "half-life of the morph's fall back to the base"),
        "level_share": Param(0.25, 0.0, 1.0, "how much plain loudness (besides kicks) morphs"),
        "min_gap_s": Param(0.2, 0.0, 60.0, "at least this long between two new targets"),
        "base_every_bars": Param(8, 0, 1024, "move the base every this many bars of music "
                                             "(0: never by time)", integer=True),
        "strong_onset": Param(4.0, 0.0, 100.0, "an onset this many times stronger than the "
                                               "running mean moves the base, at most once in 2 "
                                               "bars (0: never)"),
        "glide_s": Param(1.0, 0.0, 60.0, "seconds the base takes to glide to its new anchor"),
    }

    def reset(self) -> None:
        super().reset()
        self.base = int(self.rng.integers(self.n_anchors))
        self.target = self._other(self.base)
        self.glide_from = self.anchors[self.base].clone()
        self.glide = 1.0  # progress of the base's glide, 1 = arrived
        self.envelope = 0.0
        self.since_target = math.inf
        self.beats = 0.0  # beats of music heard since the base last moved
        self.last_phase: float | None = None
        self.mean_onset = 0.0  # running mean strength of onsets, to tell a strong one
        self.last_strength = 0.0

    def _base_latent(self) -> torch.Tensor:
        if self.glide >= 1.0:
            return self.anchors[self.base]
        return slerp(self.glide_from, self.anchors[self.base], ease_in_out(self.glide))

    def _move_base(self) -> None:
        self.glide_from = self._base_latent().clone()
        self.glide = 0.0 if self.glide_s > 0 else 1.0
        self.base = self.target
        self.target = self._other(self.base)
        self.beats = 0.0

    def _count_beats(self, features, level: float, dt: float) -> None:
        """Beats heard, from the analyzer's beat phase when it has a tempo, else at 120 bpm;
        only while there is sound: the tempo (and phase) keep running through a silence."""
        phase = float(getattr(features, "beat_phase", 0.0)) if features is not None else 0.0
        tempo = float(getattr(features, "tempo_bpm", 0.0)) if features is not None else 0.0
        if level >= SILENT_LEVEL:
            if tempo > 0 and self.last_phase is not None:
                self.beats += (phase - self.last_phase) % 1.0
            elif tempo <= 0:
                self.beats += dt * FALLBACK_BPM / 60.0
        self.last_phase = phase if tempo > 0 else None

    def step(self, features, dt: float) -> torch.Tensor:
        level, kick, onset = audio_level(features)
        dt = _tick(dt)
        punch = self.punch(features, level, dt)
        hit = onset or punch >= HIT_PUNCH
        newest = float(features.onset_strength) if features is not None else 0.0
        # The analyzer flags an onset a tick after its peak: the peak is this tick's or the last's.
        strength, self.last_strength = max(newest, self.last_strength), newest
        self.since_target += dt
        if dt > 0.0:
            self._count_beats(features, level, dt)
            bars_done = self.base_every_bars and self.beats >= 4 * self.base_every_bars
            strong = (onset and self.strong_onset > 0 and self.mean_onset > 0
                      and strength > self.strong_onset * self.mean_onset
                      and self.beats >= 4 * STRONG_ONSET_MIN_BARS)
            if bars_done or strong:
                self._move_base()
            elif hit and self.since_target >= self.min_gap_s:
                self.target = self._other(self.base, self.target)
                self.since_target = 0.0
            if onset:
                self.mean_onset = strength if self.mean_onset == 0 else 0.9 * self.mean_onset + 0.1 * strength
            drive = max(punch, kick, self.level_share * level)
            halflife = self.attack_s if drive > self.envelope else self.release_s
            self.envelope = drive + (self.envelope - drive) * _keep(dt, halflife)
            if self.glide < 1.0:
                self.glide = min(1.0, self.glide + dt / self.glide_s)
        base = self._base_latent()[None]
        return slerp(base, self.anchors[self.target][None], self.amount * self.envelope)


NAVIGATORS: dict[str, type[AnchorNavigator]] = {
    "weighted": WeightedNavigator, "magellan": MagellanNavigator, "explore": ExploreNavigator,
}


def make_navigator(mode: str, anchors: torch.Tensor, seed: int = 0, **params) -> AnchorNavigator:
    """The named walk over `anchors` (K, D); ConfigError for an unknown mode or parameter."""
    if mode not in NAVIGATORS:
        raise ConfigError(f"unknown navigator {mode!r}; choose one of {', '.join(NAVIGATORS)}")
    return NAVIGATORS[mode](anchors, seed=seed, **params)
