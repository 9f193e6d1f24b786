"""Live latent control: what a VJ's knobs, pads and beat clock do to a latent family's picture.

`LatentControl` is owned by the FramePipeline when it has a ParamStore. Each frame, `step(features,
dt)` returns the latent the runner gets (or None), after, in this order:
  1. the beat position: the MIDI clock (`store.clock`) while it runs, else the analyzer's
     `tempo_bpm` / `beat_phase`, else unknown;
  2. `walk`: a new walk takes over at once, eased in from where the picture is; a walk this
     model lacks is refused (logged, `on_refusal` told, the store set back): the show goes on;
  3. the running walk's own parameters (`magellan_seconds_per_anchor`, ...) applied to it live,
     without a reset;
  4. the queued triggers: `anchor N`, `next_anchor`, `previous_anchor` queue a jump, `reset`
     returns the walk to its start;
  5. a queued jump fires on the next beat or bar (`quantise`; at once with `off` or without a
     tempo): the walk is re-seated at the anchor and the picture eases there over `jump_beats`;
  6. the walk's latent, or with `walk knob` the slerp from `anchor_a` to `anchor_b` by `morph`;
  7. the direction knobs (`direction_1`..): offsets along the model's principal directions
     (bridge.morph.directions), ±1 = ±KNOB_STDS standard deviations of the training latents,
     gliding with the store's smoothing so a knob never makes the picture jump.
Families whose latent is made inside the model from camera/sound (vae_associator,
`takes_latent_offset`) get only step 7: the latent handed on is the offset. Families without a
latent (pix2pix) get nothing: the store accepts the values, the control says once that they do
nothing, and drains the triggers.

Everything moves by `dt` and the store, never by a wall clock of its own: an offline render with
the same control events gives the same frames.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from bridge.errors import ConfigError, ControlError
from bridge.morph.anchors import NAVIGATORS, ExploreNavigator, MagellanNavigator, WeightedNavigator
from bridge.morph.latent import ease_in_out, slerp
from bridge.morph.walks import LingerParams, LingerWalk
from bridge.params import MORPH_PARAMS

log = logging.getLogger(__name__)

AUTO, KNOB = "auto", "knob"
KNOB_STDS = 2.0  # a direction knob at ±1 moves the latent this many standard deviations
DIRECTION_KNOBS = 8  # direction_1 .. direction_8 in the parameter declaration
FALLBACK_BPM = 120.0  # eases are timed at this tempo while no clock or beat tracker has one
BEATS_PER_BAR = 4  # bars counted from the MIDI clock's start, or from the first beat heard
JUMP_TRIGGERS = ("anchor", "next_anchor", "previous_anchor")
MORPH_TRIGGER_NAMES = JUMP_TRIGGERS + ("reset",)
MORPH_NAMES = frozenset(p.name for p in MORPH_PARAMS)


def walk_param_names(mode: str) -> dict[str, str]:
    """{parameter name in the store: the walk's own setting} for one walk mode."""
    if mode in NAVIGATORS:
        fields = list(NAVIGATORS[mode].PARAMS)
    elif mode == LingerWalk.mode:
        fields = [f.name for f in dataclasses.fields(LingerParams)]
    else:
        return {}
    return {f"{mode}_{field}": field for field in fields}


# --- where the music is -------------------------------------------------------------------------

class BeatPosition:
    """Beats since a start: the MIDI clock's while it runs, else the analyzer's (its beat phase
    counted from the first frame with a tempo, so whole numbers fall on its beats), else None."""

    def __init__(self, clock=None):
        self.clock = clock
        self.audio_beats = 0.0
        self._last_phase: float | None = None

    def update(self, features) -> tuple[str, float, float] | None:
        """(source "clock" or "audio", bpm, beats) for this frame, or None with no tempo."""
        audio = None
        tempo = float(getattr(features, "tempo_bpm", 0.0)) if features is not None else 0.0
        phase = float(getattr(features, "beat_phase", 0.0)) if features is not None else 0.0
        if tempo > 0 and math.isfinite(tempo) and math.isfinite(phase):
            if self._last_phase is None:
                self.audio_beats = math.floor(self.audio_beats) + phase
            else:
                delta = (phase - self._last_phase) % 1.0
                # A tracker nudging its phase back reads as almost a whole beat forward.
                self.audio_beats += delta if delta <= 0.5 else delta - 1.0
            self._last_phase = phase
            audio = ("audio", tempo, self.audio_beats)
        else:
            self._last_phase = None
        position = self.clock.position() if self.clock is not None else None
        if position is not None:
            return ("clock", float(position[0]), float(position[1]))
        return audio


@dataclass
class PendingJump:
    anchor: int
    unit: float | None  # beats to quantise to (1 beat, 4 a bar), None: at once
    source: str | None = None  # the beat source the boundary was counted in
    boundary: float | None = None  # the jump fires once the beat position reaches this

    def aim(self, position) -> None:
        """Count the boundary (the next whole unit) from this position."""
        if self.unit is None or position is None:
            self.source, self.boundary = None, None
            return
        self.source = position[0]
        self.boundary = (math.floor(position[2] / self.unit + 1e-9) + 1) * self.unit

    def due(self, position) -> bool:
        if self.boundary is None or position is None:
            return True  # not quantised, or the tempo is gone: now
        if position[0] != self.source:  # the clock stopped or started: count again in the new one
            self.aim(position)
            return False
        return position[2] >= self.boundary


# --- re-seating a walk at an anchor -----------------------------------------------------------------

def seat(navigator, index: int, latent: torch.Tensor) -> None:
    """Put a running walk at anchor `index` (latent (1, D) or (D,)), so it goes on from there."""
    if isinstance(navigator, MagellanNavigator):
        navigator.position = float(index)
    elif isinstance(navigator, ExploreNavigator):
        navigator.base, navigator.glide, navigator.beats = index, 1.0, 0.0
        navigator.target = navigator._other(index)
    elif isinstance(navigator, WeightedNavigator):
        navigator.weights = np.zeros(navigator.n_anchors)
        navigator.weights[index] = 1.0
    elif isinstance(navigator, LingerWalk):
        scale = np.where(navigator.scale > 0, navigator.scale, 1.0)
        whitened = (latent.detach().double().cpu().numpy().reshape(-1) - navigator.center) / scale
        navigator.target = navigator.start = navigator.anchor = whitened
        navigator.phase, navigator.progress, navigator.lingered = "linger", 0.0, 0.0
        navigator.linger_left = navigator._draw_linger()
        navigator.offset = np.zeros(navigator.latent_dim)
    else:
        raise ConfigError(f"walk '{getattr(navigator, 'mode', navigator)}' cannot jump to an anchor")


def retune(navigator, values: dict) -> None:
    """Give a running walk new settings without resetting it. ConfigError on a bad value."""
    if isinstance(navigator, LingerWalk):
        navigator.params = LingerParams(**{**dataclasses.asdict(navigator.params), **values})
        return
    checked = type(navigator)(navigator.anchors, seed=navigator.seed, **{**navigator.params, **values})
    navigator.params = checked.params
    for name, value in checked.params.items():
        setattr(navigator, name, value)


# --- the control ------------------------------------------------------------------------------------

class LatentControl:
    """The live latent of one model, driven by a ParamStore (see the module docstring)."""

    def __init__(self, model, store, walk: str | None = None, walk_params: dict | None = None,
                 seed: int = 0, on_refusal: Callable[[str], None] | None = None):
        self.model = model
        self.store = store
        self.seed = int(seed)
        self.on_refusal = on_refusal  # told every refusal (an OSC error reply, say)
        self.family = model.family
        self.offset_only = bool(model.takes_latent_offset)
        self.has_walk = model.latent_dim is not None and not self.offset_only
        basis = model.principal_directions() if model.direction_dim is not None else None
        dim = model.direction_dim or 0
        self.directions, self.stds = basis if basis is not None else (torch.zeros(0, dim), torch.zeros(0))
        self.anchors = model.anchor_latents(self.seed) if self.has_walk else None
        self.beat = BeatPosition(getattr(store, "clock", None))
        self.navigator = None
        self.walk = AUTO  # the running walk as the store names it
        self.auto_mode: str | None = None
        self._warned: set[str] = set()
        self._pending: PendingJump | None = None
        self._ease: list | None = None  # [start latent (1, D), progress 0..1, seconds]
        self._last: torch.Tensor | None = None  # the latent before offsets, last frame
        self._current: int | None = None  # the anchor last jumped to
        self._applied: dict = {}
        self._knob_pair: tuple[int, int] | None = None
        if self.has_walk:
            self._start(walk, dict(walk_params or {}))
        elif walk is not None or walk_params:  # as without the control: a walk it has not is moot
            log.warning("model family '%s' has no walk: --walk %s does nothing", self.family, walk)

    def _start(self, walk: str | None, walk_params: dict) -> None:
        knob = walk == KNOB
        first = self.model.navigator(None if knob or walk == AUTO else walk, seed=self.seed, **walk_params)
        self.auto_mode = first.mode
        names = {field: name for name, field in walk_param_names(first.mode).items()}
        for field, value in walk_params.items():  # the command line's settings, seen live
            if names.get(field) in self.store.params:
                note = self.store.set(names[field], value, source="cli")
                if note:
                    log.warning(note)
        self.navigator = self.model.navigator(first.mode, seed=self.seed, **self._walk_values(first.mode))
        self._applied = self._walk_values(first.mode)
        if knob and "walk" in self.store.params:
            self.store.set("walk", KNOB, source="cli")

    # -- reading the store (a store without the morph declaration reads as the defaults) ----------
    def _get(self, name: str, default):
        return self.store.get(name) if name in self.store.params else default

    def _smoothed(self, name: str, dt: float, default: float = 0.0) -> float:
        return self.store.smoothed(name, dt) if name in self.store.params else default

    def _walk_values(self, mode: str) -> dict:
        return {field: self.store.get(name) for name, field in walk_param_names(mode).items()
                if name in self.store.params}

    # -- refusals ---------------------------------------------------------------------------------
    @property
    def anchor_count(self) -> int:
        return len(self.anchors) if self.anchors is not None else 0

    def walks(self) -> tuple[str, ...]:
        """The `walk` values this model takes."""
        if self.has_walk:
            return (AUTO, KNOB, *self.model.navigator_modes)
        return (AUTO,)

    def check(self, name: str, value) -> None:
        """ControlError when this model cannot take `value` for parameter `name` (a walk it
        lacks, an anchor it does not have); for a store to refuse before accepting."""
        if not self.has_walk and not self.offset_only:
            return  # no latent: accepted, and does nothing (said once)
        if name == "walk" and value not in self.walks():
            raise ControlError(f"/vjbridge/param/walk: model family '{self.family}' has no walk "
                               f"{value!r}; it takes {', '.join(self.walks())}")
        if name in ("anchor_a", "anchor_b") and self.has_walk and not 0 <= int(value) < self.anchor_count:
            raise ControlError(f"/vjbridge/param/{name}: this model has {self.anchor_count} anchors "
                               f"(0..{self.anchor_count - 1}), got {value!r}")

    def check_trigger(self, name: str, arg=None) -> None:
        """ControlError when this model cannot obey trigger `name` (see `check`)."""
        if name not in JUMP_TRIGGERS or (not self.has_walk and not self.offset_only):
            return
        if not self.has_walk:
            raise ControlError(f"/vjbridge/trigger/{name}: model family '{self.family}' has no "
                               f"anchors (its latent comes from its camera/sound input)")
        if name == "anchor" and not 0 <= int(arg) < self.anchor_count:
            raise ControlError(f"/vjbridge/trigger/anchor: this model has {self.anchor_count} "
                               f"anchors (0..{self.anchor_count - 1}), got {arg!r}")

    def _refuse(self, message: str) -> None:
        log.warning(message)
        if self.on_refusal is not None:
            try:
                self.on_refusal(message)
            except Exception:  # a broken reporter must not stop the picture
                pass

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    # -- one frame ----------------------------------------------------------------------------------
    def step(self, features, dt: float) -> torch.Tensor | None:
        """The latent for this frame: (1, D) for the runner, or None (see the module docstring)."""
        dt = max(float(dt), 0.0) if math.isfinite(dt) else 0.0
        position = self.beat.update(features)
        triggers = self.store.take_triggers()
        if not self.has_walk:
            for name, arg in triggers:
                self._obey_without_walk(name, arg)
            if not self.offset_only:
                self._say_unused()
                return None
            self._follow_walk(position)  # refuses anything but auto
            return self._offset(dt, zeros=True)
        self._follow_walk(position)
        self._retune()
        for name, arg in triggers:
            self._obey(name, arg, position)
        if self._pending is not None and self._pending.due(position):
            self._fire(position)
        morph = self._smoothed("morph", dt)
        latent = self._knob(morph, position) if self.walk == KNOB else self.navigator.step(features, dt)
        latent = self._eased(latent, dt)
        self._last = latent
        offset = self._offset(dt)
        return latent if offset is None else latent + offset

    def warmup_latent(self, features) -> torch.Tensor | None:
        """A latent of the kind `step` gives, for compiling the runner; moves and reads nothing."""
        if self.has_walk:
            latent = self.navigator.step(features, 0.0)
            self.navigator.reset()
            return latent
        if self.offset_only and len(self.directions):
            return torch.zeros(1, self.directions.shape[1])
        return None

    def reset(self) -> None:
        """Back to the start: the walk reset, no jump pending or easing."""
        if self.navigator is not None:
            self.navigator.reset()
        self._pending = self._ease = None
        self._current = None

    # -- walks --------------------------------------------------------------------------------------
    def _follow_walk(self, position) -> None:
        wanted = self._get("walk", AUTO)
        if wanted == self.walk:
            return
        try:
            self.check("walk", wanted)
            if wanted != KNOB:
                mode = self.auto_mode if wanted == AUTO else wanted
                navigator = self.model.navigator(mode, seed=self.seed, **self._walk_values(mode))
        except (ControlError, ConfigError) as e:
            self._refuse(str(e))
            self.store.set("walk", self.walk, source="morph")  # the store says what runs
            return
        self._start_ease(position)
        self.walk = wanted
        if wanted != KNOB:
            self.navigator = navigator
            self._applied = self._walk_values(mode)

    def _retune(self) -> None:
        if self.walk == KNOB:
            return
        values = self._walk_values(self.navigator.mode)
        if values == self._applied:
            return
        try:
            retune(self.navigator, values)
        except ConfigError as e:
            self._refuse(f"{self.navigator.mode} walk: {e}")
        self._applied = values

    def _knob(self, morph: float, position) -> torch.Tensor:
        pair = (int(self._get("anchor_a", 0)), int(self._get("anchor_b", 1)))
        if self._knob_pair is None:
            self._knob_pair = (0, min(1, self.anchor_count - 1))
        if pair != self._knob_pair:
            if max(pair) >= self.anchor_count:  # refused: the store goes back to what is shown
                for name, value, kept in zip(("anchor_a", "anchor_b"), pair, self._knob_pair):
                    if value >= self.anchor_count:
                        self._refuse(f"/vjbridge/param/{name}: this model has {self.anchor_count} "
                                     f"anchors (0..{self.anchor_count - 1}), got {value}")
                        self.store.set(name, kept, source="morph")
                pair = self._knob_pair
            else:  # a new end eases in: turning anchor_a must not cut the picture
                self._start_ease(position)
                self._knob_pair = pair
        a, b = pair
        return slerp(self.anchors[a:a + 1], self.anchors[b:b + 1], min(max(morph, 0.0), 1.0))

    # -- jumps --------------------------------------------------------------------------------------
    def _obey(self, name: str, arg, position) -> None:
        if name == "reset":
            self.reset()
            return
        if name not in JUMP_TRIGGERS:
            log.debug("trigger %s is not a latent control: ignored here", name)
            return
        try:
            self.check_trigger(name, arg)
        except ControlError as e:
            self._refuse(str(e))
            return
        if name == "anchor":
            target = int(arg)
        else:
            base = self._pending.anchor if self._pending is not None else self._current_anchor()
            target = (base + (1 if name == "next_anchor" else -1)) % self.anchor_count
        quantise = self._get("quantise", "off")
        unit = {"beat": 1.0, "bar": float(BEATS_PER_BAR)}.get(quantise)
        self._pending = PendingJump(target, unit)
        self._pending.aim(position)

    def _obey_without_walk(self, name: str, arg) -> None:
        if name not in MORPH_TRIGGER_NAMES:
            return
        if self.offset_only:
            try:
                self.check_trigger(name, arg)
            except ControlError as e:
                self._refuse(str(e))
            return
        self._warn_once(f"trigger:{name}", f"model family '{self.family}' has no latent: trigger "
                                            f"{name} does nothing")

    def _current_anchor(self) -> int:
        if self._current is not None:
            return self._current
        if self.walk == KNOB and self._knob_pair is not None:
            return self._knob_pair[0 if self._get("morph", 0.0) < 0.5 else 1]
        if self._last is None:
            return 0
        return int((self.anchors - self._last).norm(dim=1).argmin())

    def _fire(self, position) -> None:
        target, self._pending = self._pending.anchor, None
        self._current = target
        if self.walk == KNOB:  # the knob's nearer end goes to the anchor; _knob eases there
            side = "anchor_a" if self._get("morph", 0.0) < 0.5 else "anchor_b"
            if side in self.store.params:
                self.store.set(side, target, source="morph")
            return
        self._start_ease(position)
        seat(self.navigator, target, self.anchors[target])

    def _start_ease(self, position) -> None:
        """Ease from the picture shown now to whatever comes next, over `jump_beats` beats."""
        if self._last is None:
            return
        bpm = position[1] if position is not None and position[1] > 0 else FALLBACK_BPM
        seconds = float(self._get("jump_beats", 1.0)) * 60.0 / bpm
        self._ease = [self._last.clone(), 0.0, seconds] if seconds > 0 else None

    def _eased(self, latent: torch.Tensor, dt: float) -> torch.Tensor:
        if self._ease is None:
            return latent
        start, progress, seconds = self._ease
        progress = min(1.0, progress + dt / seconds)
        if progress >= 1.0:
            self._ease = None
            return latent
        self._ease[1] = progress
        return slerp(start, latent, ease_in_out(progress))

    # -- direction knobs ------------------------------------------------------------------------------
    def _offset(self, dt: float, zeros: bool = False) -> torch.Tensor | None:
        """Sum of knob * KNOB_STDS * std_k * direction_k, (1, D); None (or zeros with `zeros`
        and directions to move along) while every knob rests at 0."""
        knobs = [self._smoothed(f"direction_{i}", dt) for i in range(1, DIRECTION_KNOBS + 1)]
        count = len(self.directions)
        if any(knobs[count:]):
            self._warn_once(f"directions:{count}", (
                f"model family '{self.family}' has no principal directions (a bundle made before "
                f"they existed): direction knobs do nothing; add them with `vjbridge directions "
                f"MODEL --images TRAINING_PICTURES`" if count == 0 else
                f"this model has {count} principal directions: direction_{count + 1} and above do "
                f"nothing"))
        if count == 0:
            return None
        weights = torch.tensor(knobs[:count], dtype=torch.float32) * KNOB_STDS * self.stds
        if not weights.any():
            return torch.zeros(1, self.directions.shape[1]) if zeros else None
        return (weights @ self.directions)[None]

    def _say_unused(self) -> None:
        """A model without a latent: say once which latent controls were moved for nothing."""
        values = self.store.values()
        for name, param in self.store.params.items():
            if name in MORPH_NAMES and values[name] != param.default:
                self._warn_once(f"param:{name}", f"model family '{self.family}' has no latent: "
                                                 f"{name} does nothing")

    def status(self) -> dict:
        """What runs now, for a status line or OSC feedback."""
        mode = None
        if self.has_walk:
            mode = KNOB if self.walk == KNOB else self.navigator.mode
        return {"walk": self.walk, "mode": mode, "anchor": self._current,
                "anchors": self.anchor_count,
                "pending": self._pending.anchor if self._pending is not None else None,
                "pending_beat": self._pending.boundary if self._pending is not None else None,
                "directions": len(self.directions)}
