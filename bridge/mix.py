"""Several models played at once and mixed into one picture (seed 001 played four pix2pix models
live): `vjbridge run --model a --model b [--model c --model d]`.

`MixPipeline` stands where the engine expects one FramePipeline. Every model hears the same audio,
analysed once (one StreamingAnalyzer, shared); each keeps its own walk, voice and smoothing. Each
tick, each model makes its picture (`FramePipeline.picture`), the pictures are blended by their
weights (`mix_1`..`mix_4`, live parameters, and `mix_mode`), and the first model's pipeline
finishes the frame (output size, RGBA).

Blend modes, on light in [0, 1] (a picture p in [-1, 1] is (p + 1) / 2):
  mix      weighted average: weights 1/0 give one model alone, 0.5/0.5 a crossfade
  add      sum of weighted light, clipped
  screen   1 - prod(1 - w * light): adds light without clipping as hard
  lighten  the brightest weighted light per pixel

Running N networks each tick: in sequence, each through its own Runner (the optimized runtime:
folded, compiled, on CUDA bf16 and CUDA graphs). With degradation on, every model has its levels
and the mix steps down as one (`levels`, `level`): the whole tick misses the frame, so every
model's share of it shrinks, and the pictures blended stay alike in sharpness. Batching same-shaped
pix2pix models into one call (`BatchedPix2Pix`, torch.func.vmap over stacked weights, equal to the
sequential outputs) measured slower on both devices, so it is only used when asked (`batched=True`):
CPU, 4 lite 256² U-Nets, 1 thread: 347 ms vmap, 346 ms grouped convolutions, 250 ms in sequence;
H100, 4 full 512²: 8.0 ms vmap fp32 against 2.3 ms for the four optimized runners in sequence
(4 x 256²: 4.8 against 1.5 ms). One compiled grouped-convolution U-Net in bf16 came to 1.1 ms at
256² and 2.4 ms at 512²: not worth a second path (benchmarks/README.md, "Several models at once").
"""
from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F

from bridge.errors import ConfigError
from bridge.generators.base import Snapshot

log = logging.getLogger(__name__)

MAX_MODELS = 4
MODES = ("mix", "add", "screen", "lighten")


def blend(pictures: list[torch.Tensor], weights: list[float], mode: str = "mix") -> torch.Tensor:
    """Pictures (1, 3, H, W) in [-1, 1], same size -> one, by `mode` (see the module docstring)."""
    if mode not in MODES:
        raise ConfigError(f"mix mode must be one of {', '.join(MODES)}, got {mode!r}")
    if len(pictures) != len(weights):
        raise ValueError(f"{len(pictures)} pictures, {len(weights)} weights")
    w = [max(0.0, float(x)) for x in weights]
    if mode == "mix":
        total = sum(w)
        if total <= 0.0:
            return torch.full_like(pictures[0], -1.0)  # every fader down: black
        out = sum(p * (x / total) for p, x in zip(pictures, w) if x > 0.0)
        return out.clamp(-1.0, 1.0)
    light = [(p + 1.0) * 0.5 * x for p, x in zip(pictures, w)]
    if mode == "add":
        out = torch.stack(light).sum(0).clamp(0.0, 1.0)
    elif mode == "screen":
        out = 1.0 - torch.stack([1.0 - li.clamp(0.0, 1.0) for li in light]).prod(0)
    else:  # lighten
        out = torch.stack(light).amax(0).clamp(0.0, 1.0)
    return out * 2.0 - 1.0


class BatchedPix2Pix(torch.nn.Module):
    """N pix2pix models of the same shapes as one call: their weights stacked, the network run
    under torch.func.vmap. `forward(cond)` -> (N, 3, H, W), model i's picture in row i."""

    def __init__(self, models: list):
        super().__init__()
        from torch.func import stack_module_state
        shapes = {tuple((k, tuple(v.shape)) for k, v in m.state_dict().items()) for m in models}
        if len(shapes) != 1:
            raise ConfigError("batched models must have the same architecture (size, ngf, input)")
        self.params, self.buffers = stack_module_state([m.eval() for m in models])
        self.base = copy.deepcopy(models[0]).to("meta")

        def one(params, buffers, cond):
            return torch.func.functional_call(self.base, (params, buffers), (cond,))
        self._batched = torch.vmap(one, in_dims=(0, 0, None))

    def to(self, device):  # stacked tensors are plain attributes, not registered parameters
        self.params = {k: v.to(device) for k, v in self.params.items()}
        self.buffers = {k: v.to(device) for k, v in self.buffers.items()}
        return self

    @torch.inference_mode()
    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self._batched(self.params, self.buffers, cond)[:, 0]


class MixPipeline:
    """N FramePipelines (bridge.engine) played together; looks like one to the Engine.

    `params`: the shared ParamStore (weights `mix_1`.. and `mix_mode` are read from it each
    frame); without one, `weights` and `mode` set here are used."""

    def __init__(self, pipelines: list, weights: list[float] | None = None, mode: str = "mix",
                 params=None, batched: bool | None = None):
        if not 2 <= len(pipelines) <= MAX_MODELS:
            raise ConfigError(f"a mix plays 2 to {MAX_MODELS} models, got {len(pipelines)}")
        if mode not in MODES:
            raise ConfigError(f"mix mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.pipelines = list(pipelines)
        self.weights = list(weights) if weights is not None else [1.0] * len(pipelines)
        if len(self.weights) != len(self.pipelines):
            raise ConfigError(f"{len(self.pipelines)} models but {len(self.weights)} mix weights")
        self.mode = mode
        self.params = params
        first = self.pipelines[0]
        configs = {repr(p.analysis_config) for p in self.pipelines}
        if len(configs) > 1:  # one analysis for all: the first model's settings rule
            log.warning("the mixed models analyse audio differently; all use %s's settings",
                        getattr(first.model, "family", "the first model"))
        for p in self.pipelines[1:]:
            p.analyzer, p.analysis_config = first.analyzer, first.analysis_config
        self._batch = self._batchable(batched)
        self._level = 0

    @classmethod
    def from_models(cls, models: list, weights: list[float] | None = None, mode: str = "mix",
                    params=None, batched: bool | None = None, **pipeline_options) -> "MixPipeline":
        """A mix of `models`, each a Generator or a (Generator, Runner or None) pair (None: the
        reference runtime). Each gets a FramePipeline with `pipeline_options` (smoothing, walk,
        seed, upscaler, ...); only the first follows `params` (its knobs, walk control, smoothing
        and brightness, applied to the blend), as the live session builds it."""
        from bridge.engine import FramePipeline
        pipelines = []
        for i, entry in enumerate(models):
            model, runner = entry if isinstance(entry, (tuple, list)) else (entry, None)
            pipelines.append(FramePipeline(model, runner=runner, params=params if i == 0 else None,
                                           **pipeline_options))
        return cls(pipelines, weights=weights, mode=mode, params=params, batched=batched)

    def _batchable(self, batched: bool | None):
        """A BatchedPix2Pix when asked for and every model is a same-shaped pix2pix that sees the
        same conditioning picture (one input representation, no idle camera swap): one call then
        stands for all. Off by default: slower than the runners in sequence (module docstring)."""
        models = [p.model for p in self.pipelines]
        same = (all(m.family == "pix2pix" for m in models)
                and len({(m.config.input, repr(m.config.analysis)) for m in models}) == 1
                and all(p.idle is None for p in self.pipelines)
                and all(p.control is None or not p.control.has_walk for p in self.pipelines))
        device = self.pipelines[0].runner.device
        if not (batched and same):
            return None
        try:
            return BatchedPix2Pix(models).to(device)
        except ConfigError as e:
            log.info("models not batched: %s", e)
            return None

    # --- what the engine and the live session read from a pipeline --------------------------------
    def __getattr__(self, name):
        # model, runner, control, voice, sound_rate, sample_rate, analyzer, level_runners,
        # degrade_note, upscaler, ...: the first model's (it leads: its sound, its walk's status)
        if name == "pipelines":
            raise AttributeError(name)
        return getattr(self.pipelines[0], name)

    @property
    def levels(self) -> list:
        """The degradation levels the mix steps through: every model drops to the same share of
        its size together (a pix2pix at 3/4 beside another at 3/4), so the levels of the model
        that has most of them, the lead's where it has as many (a latent family has the full one
        only, and stays at it)."""
        return max((p.levels for p in self.pipelines), key=len)

    @property
    def runner_versions(self) -> list[int]:
        """Per level of the mix: its models' runner versions there (a model with fewer levels
        plays its last one at the levels below it)."""
        return [sum(p.runner_versions[min(i, len(p.levels) - 1)] for p in self.pipelines)
                for i in range(len(self.levels))]

    def costs_changed(self) -> None:
        for p in self.pipelines:
            p.costs_changed()

    def cut_trials(self, why: str) -> None:
        """Each model's (FramePipeline.cut_trials): the mix stepped down as one."""
        for p in self.pipelines:
            p.cut_trials(why)

    @property
    def level(self) -> int:
        return self._level

    @level.setter
    def level(self, value: int) -> None:
        self._level = value
        for p in self.pipelines:
            p.level = min(value, len(p.levels) - 1)

    @property
    def last_sound(self):
        return self.pipelines[0].last_sound

    def feed_audio(self, samples) -> None:
        self.pipelines[0].feed_audio(samples)  # the one shared analyzer

    def snapshot(self, audio_time, image=None, image_time=None) -> Snapshot:
        return self.pipelines[0].snapshot(audio_time, image, image_time)

    def warmup(self, runs: int = 3) -> None:
        for p in self.pipelines:
            p.warmup(runs)
        self.warm_batch(runs)

    def warm_batch(self, runs: int = 3) -> None:
        """Warm the batched call (the pipelines warmed already, each on its own)."""
        if self._batch is not None:
            snapshot = self.snapshot(None)
            cond = self.pipelines[0].model.condition(snapshot).to(self.pipelines[0].runner.device)
            for _ in range(runs):
                self._batch(cond)

    def close(self) -> None:
        for p in self.pipelines:
            p.close()

    def current_weights(self, dt: float = 0.0) -> tuple[list[float], str]:
        if self.params is None:
            return self.weights, self.mode
        weights = [self.params.smoothed(f"mix_{i + 1}", dt) for i in range(len(self.pipelines))]
        return weights, self.params.get("mix_mode")

    # --- a frame ----------------------------------------------------------------------------------
    def pictures(self, snapshot: Snapshot, dt: float) -> list[torch.Tensor]:
        """Each model's picture, before smoothing and brightness (applied once, to the blend)."""
        if self._batch is not None:
            first = self.pipelines[0]
            cond = first.model.condition(snapshot).to(first.runner.device)
            return [picture[None] for picture in self._batch(cond)]
        return [p.picture(snapshot, dt, post=False) for p in self.pipelines]

    def make_frame(self, snapshot: Snapshot, dt: float = 0.0, pending: bool = False):
        pictures = self.pictures(snapshot, dt)
        size = pictures[0].shape[-2:]
        pictures = [p if p.shape[-2:] == size else
                    F.interpolate(p, size=tuple(size), mode="bicubic", align_corners=False)
                    for p in pictures]
        weights, mode = self.current_weights(dt)
        first = self.pipelines[0]
        return first.finish(first.post(blend(pictures, weights, mode), dt), pending)
