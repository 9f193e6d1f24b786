"""Train a RealNVP bundle on a folder of pictures, and give it anchors (the user's pictures, inverted).

The recipe is Dinh et al.'s: maximum likelihood of dequantised pixels in logit space, Adam
(lr 1e-3), a small L2 weight decay (5e-5), the loss reported in bits per dimension. Added: a
short linear learning-rate warm-up and gradient-norm clipping (a flow's first steps with a fresh
ActNorm are its most fragile), data-dependent ActNorm initialisation on the first batch, and
augmentation by random crops (pictures loaded at crop_scale x size, a size x size window taken at
a random place) and random horizontal flips, so a folder of a few hundred pictures lasts longer.

Runs unchanged under torchrun (bridge.train.distributed): every rank shuffles with the same seed
and takes its shard; gradients are averaged by DistributedDataParallel; only rank 0 writes.

Files in `out`:
  samples/epoch_0001.png   rows: samples at temperature 0.7 | pictures | their reconstructions |
                           a slerp walk between two pictures (what the live navigators do)
  loss.png                 bits per dimension, per step and per epoch
  config.json, weights.safetensors, card.md   the bundle (written at the end)
"""
from __future__ import annotations

import math
import shlex
import time
from pathlib import Path

import numpy as np
import torch

from bridge.errors import ConfigError
from bridge.generators.base import load_model, save_bundle
from bridge.generators.realnvp import (
    PRESETS, SAMPLE_TEMPERATURE, RealNVP, RealNVPConfig, preset_config, with_anchors,
)
from bridge.morph.directions import DEFAULT_K, directions_card_text, directions_summary, with_directions
from bridge.morph.latent import slerp
from bridge.train import distributed
from bridge.train.report import loss_figure, machine
from bridge.train.images import list_images, load_image_folder, to_uint8, to_unit

SAMPLES_DIR = "samples"
LOSS_PLOT = "loss.png"
SAMPLE_COLUMNS = 8
STEP_LOG_EVERY = 10  # steps between reads of the loss (each read waits for a GPU)
LOSS_PLOT_EVERY_S = 30.0  # matplotlib costs about a second a plot: not after every short epoch
INIT_BATCH = 256  # pictures ActNorm's first statistics come from
WARMUP_STEPS = 200


# --- data ----------------------------------------------------------------------------------------

def random_crops(pictures: torch.Tensor, size: int, gen: torch.Generator, flip: bool = True) -> torch.Tensor:
    """(B, 3, L, L) uint8 -> (B, 3, size, size) uint8: one window at a random place per
    picture, mirrored left-right with probability 1/2 when `flip`."""
    n, _, side, _ = pictures.shape
    offsets = torch.randint(0, side - size + 1, (n, 2), generator=gen).tolist()
    mirror = (torch.rand(n, generator=gen) < 0.5).tolist() if flip else [False] * n
    out = torch.empty((n, 3, size, size), dtype=torch.uint8)
    for i, ((y, x), m) in enumerate(zip(offsets, mirror)):
        crop = pictures[i, :, y:y + size, x:x + size]
        out[i] = crop.flip(-1) if m else crop
    return out


def centre_crops(pictures: torch.Tensor, size: int) -> torch.Tensor:
    start = (pictures.shape[-1] - size) // 2
    return pictures[:, :, start:start + size, start:start + size]


# --- pictures --------------------------------------------------------------------------------------

def sample_grid(model: RealNVP, pictures: torch.Tensor, z: torch.Tensor) -> np.ndarray:
    """(H, W, 3) uint8: rows samples | pictures | reconstructions | slerp from picture 0 to 1.
    `pictures` (columns, 3, S, S) uint8, `z` (columns, D) latents of the samples."""
    was_training = model.training
    model.eval()
    device = model.anchors.device
    with torch.no_grad():
        samples = model.decode(z.to(device))
        x = to_unit(pictures).to(device)
        latents = model.encode(x)
        again = model.decode(latents)
        steps = torch.linspace(0, 1, len(pictures), device=device).view(-1, 1)
        walk = model.decode(slerp(latents[:1].expand(len(pictures), -1),
                                  latents[1:2].expand(len(pictures), -1), steps))
    model.train(was_training)
    rows = [to_uint8(r.cpu()).permute(0, 2, 3, 1).numpy() for r in (samples, x, again, walk)]
    grid = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    zoom = max(1, 64 // pictures.shape[-1])  # 32 px cells are too small to judge
    return np.ascontiguousarray(grid.repeat(zoom, axis=0).repeat(zoom, axis=1))


def plot_losses(history: list[dict], steps: list[list], path: Path) -> None:
    with loss_figure(path) as (ax,):
        if steps:
            s = np.asarray(steps, dtype=float)  # step, epoch, bpd
            ax.plot(s[:, 0], s[:, 2], color="tab:blue", alpha=0.3, lw=0.8, label="steps")
        if history:
            ax.plot([h["step"] for h in history], [h["bpd"] for h in history], "o-", color="tab:blue",
                    label="epoch mean")
        ax.set_title("negative log-likelihood (bits per dimension)")


# --- the card ---------------------------------------------------------------------------------------

def train_command(images: Path, out: Path, preset: str, overrides: dict, epochs: int,
                  batch_size: int, lr: float, seed: int, crop_scale: float,
                  anchors: Path | None, directions: int = DEFAULT_K) -> str:
    q = shlex.quote
    args = ["vjbridge", "train", "realnvp", "--images", q(str(images)), "--out", q(str(out)),
            "--preset", preset, "--epochs", str(epochs), "--batch-size", str(batch_size),
            "--lr", f"{lr:g}"]
    for key, value in sorted(overrides.items()):
        args += ["--set", q(f"{key}={value}")]
    if seed:
        args += ["--seed", str(seed)]
    if crop_scale != 1.25:
        args += ["--crop-scale", f"{crop_scale:g}"]
    if anchors is not None:
        args += ["--anchors", q(str(anchors))]
    if directions != DEFAULT_K:
        args += ["--directions", str(directions)]
    return " ".join(args)


def make_card(out: Path, config: RealNVPConfig, summary: dict) -> str:
    recipe, data = summary["recipe"], summary["dataset"]
    anchors = summary.get("anchors") or {}
    if anchors:
        anchor_text = (f"{len(anchors['names'])} anchors, inverted from {anchors['folder']}: "
                       f"{', '.join(anchors['names'][:12])}{' ...' if len(anchors['names']) > 12 else ''}.")
    else:
        anchor_text = ("none stored: the navigators walk between 8 seeded random latents "
                       "(N(0, 0.7^2)) until anchors are added (`add_anchors`).")
    commands = "\n".join(summary["commands"])
    overrides = f" with {summary['overrides']}" if summary.get("overrides") else ""
    return f"""# {out.name}

A **RealNVP** flow (Dinh et al. 2017; preset `{summary['preset']}`{overrides}: {config.size}x{config.size},
{config.n_scales} scales, s/t networks of {config.hidden} features and {config.resblocks} residual
block(s), {summary['parameters']:,} parameters) trained on {data['images']} pictures from
`{data['path']}`. Live, it decodes a latent that a navigator (weighted, magellan, explore) moves
between anchors from the music.

Anchors: {anchor_text}

{directions_card_text(summary.get('directions'))}

## Training
{summary['epochs']} epochs, {summary['steps']} steps, batch {recipe['batch_size']} per process x
{recipe['world']} process(es), Adam lr {recipe['lr']:g} (linear warm-up over {recipe['warmup_steps']}
steps), weight decay {recipe['weight_decay']:g}, gradient norm clipped at {recipe['max_grad_norm']:g};
random {config.size}x{config.size} crops of the pictures scaled to {data['load_size']}x{data['load_size']}
and random flips; {summary['seconds'] / 60:.1f} minutes on {summary['machine']['cpu']}
({summary['machine']['torch_threads']} torch threads, device {recipe['device']}).
Final epoch: {summary['final_bpd']:.3f} bits per dimension (dequantised training pictures).
Loss curve: loss.png; samples (temperature {SAMPLE_TEMPERATURE}), reconstructions and a slerp walk
per epoch in samples/ when trained here.

Weights are stored in fp32: the live picture is the exact inverse of the flow, through
{6 * (config.n_scales - 1) + 4} affine couplings and as many ActNorms, each dividing by exp(s);
fp16 weights would shift every layer a little, the errors would compound, and the anchors would
no longer decode to the user's pictures. Live, on a device with native bf16 (AMX, AVX512-BF16, a GPU),
the optimized runtime computes in bf16 only if the anchors, the points halfway between them and
prior samples keep 45 dB against fp32 at worst (checked as it loads; its note says which).

## Rebuild
From the repository root:
```
{commands}
```
"""


# --- training ----------------------------------------------------------------------------------------

def _check_anchor_folder(anchors: Path) -> None:
    """Fail before training, not after it, when the anchor folder cannot be used."""
    found = list_images(anchors)
    if len(found) < 2:
        raise ConfigError(f"anchor folder {anchors} has {len(found)} picture; navigation moves "
                          f"between pictures and needs at least 2")


def train_realnvp(images: str | Path, out: str | Path, preset: str = "lite-32", epochs: int = 40,
                  batch_size: int = 64, lr: float = 1e-3, seed: int = 0, device: str = "cpu",
                  anchors: str | Path | None = None, progress: bool = True,
                  threads: int | None = None, overrides: dict | None = None,
                  crop_scale: float = 1.25, weight_decay: float = 5e-5,
                  max_grad_norm: float = 100.0, limit: int | None = None,
                  max_minutes: float | None = None, directions: int = DEFAULT_K) -> Path:
    """Train a RealNVP on the pictures in `images` and write the bundle into `out`; returns `out`.

    `preset` names the network (PRESETS); `overrides` replaces RealNVPConfig fields (e.g.
    {"hidden": 8}). `anchors`: a folder of pictures inverted into the bundle's anchors at the end.
    `crop_scale`: pictures are loaded at round(size * crop_scale) and cropped back at random
    places (1.0: whole pictures). `batch_size` is per process under torchrun. `threads` sets
    torch's CPU threads (None: torch's default). `limit` reads only the first pictures.
    `max_minutes`: stop after the epoch that crosses this much training time (the card's rebuild
    command then names the epochs done). `directions`: principal directions of the training
    pictures' latents stored for the live knobs (bridge.morph.directions; 0: none)."""
    from tqdm import tqdm

    if epochs < 1 or batch_size < 1 or not lr > 0 or weight_decay < 0 or not max_grad_norm > 0:
        raise ConfigError("epochs and batch_size must be at least 1, lr and max_grad_norm "
                          "positive, weight_decay >= 0")
    if max_minutes is not None and not max_minutes > 0:
        raise ConfigError(f"max_minutes must be positive, got {max_minutes}")
    if not 1.0 <= crop_scale <= 4.0:
        raise ConfigError(f"crop_scale must be in [1, 4], got {crop_scale}")
    if directions < 0:
        raise ConfigError(f"directions must be >= 0, got {directions}")
    images, out = Path(images), Path(out)
    overrides = dict(overrides or {})
    config = preset_config(preset, **overrides)
    anchors = Path(anchors) if anchors is not None else None
    if anchors is not None:
        _check_anchor_folder(anchors)
    if threads:
        torch.set_num_threads(int(threads))
    ctx = distributed.setup(device)
    dev = ctx.device

    size = config.size
    load_size = max(size, int(round(size * crop_scale)))
    pictures = load_image_folder(images, load_size, limit=limit)  # (N, 3, L, L) uint8
    n = len(pictures)
    if n < ctx.world:
        raise ConfigError(f"{images}: {n} pictures for {ctx.world} processes")

    torch.manual_seed(seed)
    model = RealNVP(config).to(dev)
    gen = torch.Generator().manual_seed(seed)
    first = torch.randperm(n, generator=gen)[:INIT_BATCH]
    model.initialize(random_crops(pictures[first], size, gen).to(dev))
    net = ctx.wrap(model)  # DDP broadcasts rank 0's initialised weights to every rank
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, len(ctx.shard(list(range(n)))) // batch_size)
    # Warm-up does not depend on `epochs`, so a run cut short by max_minutes is rebuilt exactly
    # by asking for the epochs it did.
    warmup = min(WARMUP_STEPS, 2 * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))

    columns = min(SAMPLE_COLUMNS, n)
    shown = centre_crops(pictures[torch.linspace(0, n - 1, columns).round().long()], size)
    sample_z = torch.randn(columns, config.latent_dim, generator=gen) * SAMPLE_TEMPERATURE
    if ctx.is_main:
        (out / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)

    history, step_log, step, seconds = [], [], 0, 0.0
    plotted = -math.inf
    net.train()
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)  # same order on every rank
        order = ctx.shard(torch.randperm(n, generator=gen).tolist())
        local_gen = torch.Generator().manual_seed(seed * 100_003 + epoch * 1_009 + ctx.rank)
        total = torch.zeros((), device=dev)
        since_log, unlogged = torch.zeros((), device=dev), 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{epochs}", unit="step",
                   disable=not (progress and ctx.is_main), leave=False)
        for i in bar:
            batch = order[i * batch_size:(i + 1) * batch_size]
            x = random_crops(pictures[batch], size, local_gen).to(dev)
            loss = net(x).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            opt.step()
            schedule.step()
            step += 1
            total += loss.detach()
            since_log += loss.detach()
            unlogged += 1
            if unlogged == STEP_LOG_EVERY or i == steps_per_epoch - 1:
                value = float(since_log) / unlogged
                since_log.zero_()
                unlogged = 0
                if not math.isfinite(value):  # DDP averages the NaN gradients: every rank stops here
                    raise ConfigError(f"training diverged at epoch {epoch}, step {step} (bits per "
                                      f"dimension {value}); try a lower lr than {lr:g}")
                step_log.append([step, epoch, round(value, 4)])
                bar.set_postfix(bpd=f"{value:.3f}")
        bar.close()
        bpd = ctx.mean(float(total) / steps_per_epoch)
        elapsed = time.perf_counter() - started
        seconds += elapsed
        history.append({"epoch": epoch, "step": step, "bpd": round(bpd, 4),
                        "seconds": round(elapsed, 2)})
        if ctx.is_main:
            from bridge.train.dataset import write_png

            write_png(out / SAMPLES_DIR / f"epoch_{epoch:04d}.png", sample_grid(model, shown, sample_z))
            if time.perf_counter() - plotted >= LOSS_PLOT_EVERY_S:
                plot_losses(history, step_log, out / LOSS_PLOT)
                plotted = time.perf_counter()
            if progress:
                tqdm.write(f"epoch {epoch}/{epochs}: {bpd:.3f} bits/dim ({elapsed:.0f} s)")
        if max_minutes is not None and ctx.any(seconds >= 60.0 * max_minutes):
            break

    if ctx.is_main:
        plot_losses(history, step_log, out / LOSS_PLOT)
        model.eval()
        if anchors is not None:
            model = with_anchors(model, anchors)
        if directions and n >= 2:  # the latents of the pictures it learned (centre crops)
            model = with_directions(model, centre_crops(pictures, size), k=directions).eval()

        summary = {
            "preset": preset, "overrides": overrides,
            "dataset": {"path": str(images), "images": n, "load_size": load_size,
                        "crop_scale": crop_scale},
            "recipe": {"epochs": epochs, "batch_size": batch_size, "lr": lr,
                       "weight_decay": weight_decay, "max_grad_norm": max_grad_norm,
                       "warmup_steps": warmup, "seed": seed, "device": str(dev), "world": ctx.world},
            "parameters": sum(p.numel() for p in model.parameters()),
            "epochs": len(history), "steps": step, "final_bpd": history[-1]["bpd"], "history": history,
            "seconds": round(seconds, 1), "machine": machine(), "weights_dtype": "float32",
            "anchors": ({"folder": str(anchors), "names": list(model.config.anchor_names)}
                        if anchors is not None else None),
            "directions": directions_summary(model),
            "commands": [train_command(images, out, preset, overrides, len(history), batch_size, lr,
                                       seed, crop_scale, anchors, directions)],
        }
        save_bundle(model, out, training=summary, card=make_card(out, model.config, summary),
                    weights_dtype=torch.float32)
    ctx.close()
    return out


def add_anchors(bundle: str | Path, folder: str | Path, out: str | Path | None = None) -> Path:
    """Invert the pictures in `folder` into the anchors of a RealNVP bundle and write the result
    to `out` (default: the bundle itself, replaced). Returns the bundle folder written."""
    model = load_model(bundle)
    if not isinstance(model, RealNVP):
        raise ConfigError(f"{bundle} is a {model.family} bundle; anchors belong to realnvp bundles")
    folder = Path(folder)
    _check_anchor_folder(folder)
    source = model.bundle_path
    path = Path(out) if out is not None else source
    training = dict(model.bundle_config.get("training", {}))
    model = with_anchors(model, folder).eval()
    training["anchors"] = {"folder": str(folder), "names": list(model.config.anchor_names)}
    training["commands"] = [*training.get("commands", []),
                            " ".join(["vjbridge", "anchors", shlex.quote(str(path)), "--images",
                                      shlex.quote(str(folder))])]
    if {"preset", "dataset", "recipe", "machine", "parameters"} <= set(training):
        card = make_card(path, model.config, training)
    else:  # a bundle trained elsewhere: keep its card and note the anchors
        card_file = source / "card.md"
        card = card_file.read_text() if card_file.is_file() else f"# {path.name}\n"
        card += f"\nAnchors: {model.config.n_anchors} pictures from {folder}.\n"
    return save_bundle(model, path, training=training, card=card, weights_dtype=torch.float32)


__all__ = ["PRESETS", "add_anchors", "train_realnvp"]
