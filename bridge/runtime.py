"""How a generator runs: the plain eager fp32 loop the seeds used ("reference"), or ours ("optimized").

Optimized, on the CPU: BatchNorm folded into the convolutions, then torch.compile with Inductor's
freezing (weights become constants, so oneDNN can pre-pack them and fuse bias/activation);
bf16 autocast only where the CPU has native bf16 (AMX / AVX512-BF16), since elsewhere it is
emulated and slower. On CUDA: channels_last, fp16/bf16 autocast and CUDA graphs
(`reduce-overhead`). If compiling fails (no C++ compiler, an unsupported op), it falls back
to the folded eager model and says so once.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from bridge.generators.base import Generator, Snapshot
from bridge.generators.pix2pix import fold_batchnorm

log = logging.getLogger(__name__)

RUNTIMES = ("reference", "optimized")


def cpu_has_native_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


@dataclass
class RunnerInfo:
    runtime: str
    device: str
    compiled: bool = False
    autocast: str | None = None
    note: str = ""


def _to_device(x, device: torch.device, channels_last: bool = False):
    """A tensor, or a tuple of them (families with two inputs), moved to the device."""
    if x is None:
        return None
    if isinstance(x, (tuple, list)):
        return tuple(_to_device(t, device, channels_last) for t in x)
    x = x.to(device, non_blocking=True)
    # One memory layout and one tensor kind always: a compiled model guards on strides and on
    # inference-vs-normal tensors, and a camera frame's permuted view (or a tensor made outside
    # inference mode at warm-up) would otherwise recompile it, for seconds, mid-set.
    layout = torch.channels_last if channels_last and x.dim() == 4 else torch.contiguous_format
    x = x.contiguous(memory_format=layout)
    return x if x.is_inference() else x.clone(memory_format=layout)


def _to_float(out):
    if isinstance(out, tuple):
        return tuple(t.float() for t in out)
    return out.float()


class Runner:
    """Calls a generator's network: `runner(cond, latent=None) -> (1, 3, H, W)` float32 in [-1, 1],
    or `(picture, mel_db)` for families that make sound."""

    def __init__(self, model: Generator, runtime: str = "optimized", device: str = "cpu",
                 compile: bool = True):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.device = torch.device(device)
        self.model = model
        self.info = RunnerInfo(runtime=runtime, device=str(self.device))
        self._entry = "generate_with_sound" if model.makes_sound else "generate"
        if runtime == "reference":
            self.net = model.to(self.device).eval()
            self._fn: Callable = getattr(self.net, self._entry)
            self._autocast = None
            return
        net = fold_batchnorm(copy.deepcopy(model)).to(self.device).eval()
        self._autocast = None
        if self.device.type == "cuda":
            net = net.to(memory_format=torch.channels_last)
            self._autocast = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif cpu_has_native_bf16():
            self._autocast = torch.bfloat16
        if not model.low_precision_ok:
            self._autocast = None
        self.info.autocast = str(self._autocast).replace("torch.", "") if self._autocast else None
        self.net = net
        self._fn = getattr(net, self._entry)
        if compile:
            self._try_compile()

    def _try_compile(self) -> None:
        try:
            import torch._inductor.config as inductor_config
            inductor_config.freezing = True
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._compiled = torch.compile(getattr(self.net, self._entry), mode=mode, dynamic=False)
            self._fn = self._compiled
            self.info.compiled = True
        except Exception as e:  # compile is an optimisation: never a reason not to play
            self._fall_back(e)

    def _fall_back(self, error: Exception) -> None:
        self._fn = getattr(self.net, self._entry)
        self.info.compiled = False
        self.info.note = f"torch.compile unavailable ({type(error).__name__}); running eager"
        log.warning(self.info.note)

    def warmup(self, cond, latent: torch.Tensor | None = None, runs: int = 3) -> None:
        """First calls compile; a failure there still falls back to eager."""
        for _ in range(runs):
            try:
                self(cond, latent)
            except Exception as e:
                if not self.info.compiled:
                    raise
                self._fall_back(e)

    @torch.inference_mode()
    def __call__(self, cond, latent: torch.Tensor | None = None):
        cuda = self.device.type == "cuda"
        cond = _to_device(cond, self.device, channels_last=cuda)  # in inference mode: see there
        latent = _to_device(latent, self.device)
        if self._autocast is not None:
            with torch.autocast(self.device.type, dtype=self._autocast):
                out = self._fn(cond, latent)
            return _to_float(out)
        return self._fn(cond, latent)


def to_rgba(picture: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [-1, 1] -> contiguous (H, W, 4) uint8 RGBA, alpha opaque."""
    rgb = picture[0].detach().add(1.0).mul_(127.5).clamp_(0, 255).to(torch.uint8)
    h, w = rgb.shape[1:]
    out = torch.empty((h, w, 4), dtype=torch.uint8, device=rgb.device)
    out[..., :3] = rgb.permute(1, 2, 0)
    out[..., 3] = 255
    return out.cpu().numpy()


def example_inputs(model: Generator, seed: int = 0) -> tuple:
    """(cond, latent) the model would see live: a busy camera frame or audio snapshot, a latent
    from its own walk. Random, seeded: parity must hold away from silence too."""
    from bridge.analysis import AnalysisConfig, StreamingAnalyzer

    rng = np.random.default_rng(seed)
    config = AnalysisConfig(**(getattr(model.config, "analysis", {}) or {}))
    analyzer = StreamingAnalyzer(config)
    analyzer.feed((rng.standard_normal(config.sample_rate) * 0.3).astype(np.float32))
    image = rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    snapshot = Snapshot(audio=analyzer.snapshot(1.0), image=image, audio_time=1.0, image_time=1.0)
    walk = model.navigator(None, seed=seed)
    latent = walk.step(snapshot.audio, 1 / 30) if walk is not None else None
    return model.condition(snapshot), latent
