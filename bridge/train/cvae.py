"""Train a conv-VAE bundle (bridge/generators/cvae.py) on a folder of pictures.

Loss per batch, pictures in [-1, 1]:
    recon = mean squared error per pixel
    kld   = KL(q(z|x) || N(0, I)), summed over the latent, averaged over the batch
    loss  = recon + kld_weight * kld
Adam, random horizontal flips. At the end the training pictures are encoded once (eval mode, no
flips) and the mean and std of their latents stored in the model's `latent_stats`: the live walk
draws its targets from there. Runs unchanged under torchrun (bridge.train.distributed).

Files in `out` (written by rank 0 only):
  samples/epoch_0001.png  rows: input | reconstruction | random samples | a walk (every 0.5 s)
  loss.png                loss curves
  config.json, weights.safetensors, card.md   the bundle
"""
from __future__ import annotations

import dataclasses
import shlex
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bridge.errors import ConfigError
from bridge.generators.base import save_bundle
from bridge.generators.cvae import DEFAULT_WIDTHS, CVAE, CVAEConfig
from bridge.morph.directions import DEFAULT_K, directions_card_text, directions_summary, with_directions
from bridge.train import distributed
from bridge.train.report import loss_figure, machine
from bridge.train.dataset import write_png
from bridge.train.images import ImageSet, load_image_folder, to_uint8

SAMPLES_DIR = "samples"
LOSS_PLOT = "loss.png"
SAMPLE_COLUMNS = 8
WALK_FPS = 30  # the sample grid's walk runs at this tick, keeping one frame per WALK_EVERY_S
WALK_EVERY_S = 0.5
STEP_LOG_EVERY = 5
STATS_BATCH = 256
STD_FLOOR = 1e-4  # a latent dimension the data never uses still gets a usable scale


def kld_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over the latent, averaged over the batch."""
    return (-0.5 * (1.0 + logvar - mu.square() - logvar.exp())).sum(dim=1).mean()


@torch.no_grad()
def latent_statistics(model: CVAE, images: ImageSet, device) -> torch.Tensor:
    """(2, D): mean and std of the training pictures' mean latents, in eval mode."""
    was_training = model.training
    model.eval()
    mus = [model.encode(images.batch(range(i, min(i + STATS_BATCH, len(images)))).to(device)).float().cpu()
           for i in range(0, len(images), STATS_BATCH)]
    model.train(was_training)
    mu = torch.cat(mus)
    std = mu.std(dim=0, unbiased=False) if len(mu) > 1 else torch.ones(mu.shape[1])
    return torch.stack([mu.mean(dim=0), std.clamp_min(STD_FLOOR)])


@torch.no_grad()
def sample_grid(model: CVAE, images: ImageSet, indices: list[int], stats: torch.Tensor,
                device, seed: int) -> np.ndarray:
    """Rows: input | reconstruction | random samples from the data's latent spread | the live walk
    (a loud passage, one frame every WALK_EVERY_S); (4 S, C S, 3) uint8."""
    from bridge.analysis import AudioFeatures

    was_training, saved = model.training, model.latent_stats.clone()
    model.eval()
    model.latent_stats.copy_(stats)
    x = images.batch(indices).to(device)
    gen = torch.Generator().manual_seed(seed)
    z = stats[0] + stats[1] * torch.randn(len(indices), stats.shape[1], generator=gen)
    walk = model.navigator(seed=seed, linger_s=1.0)
    loud = dataclasses.replace(AudioFeatures.silent(), level=0.8)
    every = int(WALK_EVERY_S * WALK_FPS)
    path = [walk.step(loud, 1.0 / WALK_FPS) for _ in range(every * len(indices))][every - 1::every]
    rows = [x, model.decode(model.encode(x)), model.decode(z.to(device)),
            model.decode(torch.cat(path).to(device))]
    model.latent_stats.copy_(saved)
    model.train(was_training)
    return np.concatenate([np.concatenate(list(to_uint8(r.float().cpu()).permute(0, 2, 3, 1).numpy()), axis=1)
                           for r in rows], axis=0)


def plot_losses(history: list[dict], steps: list[list], path: Path) -> None:
    with loss_figure(path, panels=2) as (ax_recon, ax_kld):
        if steps:
            s = np.asarray(steps, dtype=float)  # step, epoch, recon, kld
            ax_recon.plot(s[:, 0], s[:, 2], color="tab:blue", alpha=0.25, lw=0.8)
            ax_kld.plot(s[:, 0], s[:, 3], color="tab:red", alpha=0.25, lw=0.8)
        if history:
            x = [h["step"] for h in history]
            ax_recon.plot(x, [h["recon"] for h in history], "o-", color="tab:blue", label="reconstruction")
            ax_kld.plot(x, [h["kld"] for h in history], "o-", color="tab:red", label="KL")
        ax_recon.set_title("reconstruction (MSE per pixel, [-1, 1])")
        ax_recon.set_yscale("log")
        ax_kld.set_title("KL divergence (nats per picture)")


def make_card(out: Path, config: CVAEConfig, summary: dict) -> str:
    data, recipe, final = summary["data"], summary["recipe"], summary["final_losses"]
    machine = summary["machine"]
    commands = "\n".join(summary["commands"])
    return f"""# {out.name}

A **conv-VAE** (seed 002, "Music viz with autoencoders"): {config.size}x{config.size} pictures
decoded from a {config.latent_dim}-dimensional latent; encoder widths {list(config.widths)}, the
decoder mirrors them; {summary['parameters']:,} parameters.

Live, the `linger` walk (bridge/morph/walks.py) draws random points where the training
pictures' latents live (their mean and std are stored in `latent_stats`), lingers there with
AR(1) jitter and moves in straight lines; onsets jolt the picture and end lingers, loudness
speeds the moves, silence calms it.

## Input it needs
Live audio: it times the walk; the picture itself comes from the latent alone.

## Training
- data: {data['pictures']} pictures from `{data['folder']}`, {data['size']}x{data['size']}
- {summary['epochs']} epochs, {summary['steps']} steps of batch {recipe['batch_size']}; Adam lr
  {recipe['lr']:g}; loss = MSE per pixel + {recipe['kld_weight']:g} x KL; random flips: {recipe['flip']};
  seed {recipe['seed']}
- {summary['seconds'] / 60:.1f} minutes on {machine['cpu']} ({machine['torch_threads']} torch threads x
  {summary['world']} process(es), device {recipe['device']})
- final epoch: reconstruction MSE {final['recon']:.4f}, KL {final['kld']:.2f} nats per picture
- latents of the training pictures: mean norm {summary['latent_stats']['mean_norm']:.2f}, mean std
  {summary['latent_stats']['mean_std']:.3f}
- {directions_card_text(summary.get('directions'))}
- weights stored as {summary['weights_dtype']}; loss curves in loss.png; sample grids in samples/
  when trained here (rows: input, reconstruction, random samples, the walk every {WALK_EVERY_S:g} s)

## Rebuild
From the repository root:
```
{commands}
```
"""


def _train_options(size, latent_dim, widths, epochs, batch_size, lr, kld_weight, seed, flip,
                   limit, save_dtype, directions: int = DEFAULT_K) -> list[str]:
    """The `train cvae` options that reproduce these settings."""
    args = ["--size", str(size), "--latent-dim", str(latent_dim), "--epochs", str(epochs),
            "--batch-size", str(batch_size), "--lr", f"{lr:g}", "--kld-weight", f"{kld_weight:g}"]
    if tuple(widths) != DEFAULT_WIDTHS:
        args += ["--widths", ",".join(map(str, widths))]
    if seed != 0:
        args += ["--seed", str(seed)]
    if not flip:
        args.append("--no-flip")
    if limit:
        args += ["--limit", str(limit)]
    if save_dtype != torch.float16:
        args.append("--fp32-weights")
    if directions != DEFAULT_K:
        args += ["--directions", str(directions)]
    return args


def train_cvae(images: str | Path, out: str | Path, size: int = 64, latent_dim: int = 32,
               widths: tuple[int, ...] | list[int] = DEFAULT_WIDTHS, epochs: int = 60,
               batch_size: int = 64, lr: float = 1e-3, kld_weight: float = 1e-4, seed: int = 0,
               device: str = "cpu", progress: bool = True, threads: int | None = None,
               flip: bool = True, limit: int | None = None,
               save_dtype: torch.dtype = torch.float16,
               prepare_commands: list[str] | None = None, directions: int = DEFAULT_K) -> Path:
    """Train a conv-VAE on the pictures in the folder `images` and write its bundle into `out`;
    returns `out`.

    `widths`: encoder channels per stride-2 step (the decoder mirrors them); `kld_weight`: weight
    of the KL term against the per-pixel MSE; `limit`: use only the first N pictures (sorted by
    name); `threads`: torch CPU threads (None: torch's default); `prepare_commands`: the commands
    that made the image folder, written into card.md before the training command; `directions`:
    principal directions of the training pictures' latents stored for the live knobs (0: none)."""
    from tqdm import tqdm

    if epochs < 1 or batch_size < 1 or lr <= 0 or kld_weight < 0:
        raise ConfigError("epochs and batch_size must be at least 1, lr positive, kld_weight >= 0")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    if directions < 0:
        raise ConfigError(f"directions must be >= 0, got {directions}")
    try:
        config = CVAEConfig(size=size, latent_dim=latent_dim, widths=tuple(widths))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot train a cvae: {e}") from None
    if threads:
        torch.set_num_threads(int(threads))
    images, out = Path(images), Path(out)
    ctx = distributed.setup(device)
    data = ImageSet(load_image_folder(images, size, limit=limit,
                                      warn=tqdm.write if ctx.is_main else (lambda message: None)))
    n = len(data)
    if ctx.world > n:
        raise ConfigError(f"{n} pictures cannot be shared by {ctx.world} processes")

    torch.manual_seed(seed)
    model = CVAE(config).to(ctx.device)
    net = ctx.wrap(model)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    if ctx.is_main:
        (out / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
    sample_idx = sorted({round(i * (n - 1) / max(1, SAMPLE_COLUMNS - 1))
                         for i in range(min(SAMPLE_COLUMNS, n))})
    history, step_log, step, seconds = [], [], 0, 0.0
    net.train()
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        # Every rank draws the same order (its shard differs); flips and sampling noise per rank.
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
        mine = ctx.shard(order)
        torch.manual_seed(seed * 100_003 + epoch * 1_009 + ctx.rank)
        flips = torch.Generator().manual_seed(seed * 100_003 + epoch * 1_009 + ctx.rank) if flip else None
        sums = np.zeros(3)  # recon, kld, batches
        bar = tqdm(range(0, len(mine), batch_size), desc=f"epoch {epoch}/{epochs}", unit="batch",
                   disable=not (progress and ctx.is_main), leave=False)
        for start in bar:
            x = data.batch(mine[start:start + batch_size], flip=flips).to(ctx.device)
            recon_x, mu, logvar = net(x)
            recon = F.mse_loss(recon_x, x)
            kld = kld_loss(mu, logvar)
            loss = recon + kld_weight * kld
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            r, k = recon.item(), kld.item()
            sums += (r, k, 1)
            step += 1
            if step % STEP_LOG_EVERY == 0:
                step_log.append([step, epoch, round(r, 5), round(k, 3)])
            bar.set_postfix(loss=f"{r + kld_weight * k:.4f}", recon=f"{r:.4f}", kld=f"{k:.1f}")
        bar.close()
        recon_mean = ctx.mean(sums[0] / max(sums[2], 1))
        kld_mean = ctx.mean(sums[1] / max(sums[2], 1))
        took = time.perf_counter() - started
        seconds += took
        history.append({"epoch": epoch, "step": step, "loss": round(recon_mean + kld_weight * kld_mean, 5),
                        "recon": round(recon_mean, 5), "kld": round(kld_mean, 3),
                        "seconds": round(took, 2)})
        if ctx.is_main:
            spread_idx = np.linspace(0, n - 1, min(n, STATS_BATCH)).round().astype(int).tolist()
            stats = latent_statistics(model, ImageSet(data.images[spread_idx]), ctx.device)
            write_png(out / SAMPLES_DIR / f"epoch_{epoch:04d}.png",
                      sample_grid(model, data, sample_idx, stats.cpu(), ctx.device, seed + epoch))
            plot_losses(history, step_log, out / LOSS_PLOT)
            if progress:
                tqdm.write(f"epoch {epoch}/{epochs}: loss {history[-1]['loss']:.4f}  recon "
                           f"{recon_mean:.4f}  kld {kld_mean:.1f}  ({took:.0f} s)")

    if ctx.is_main:
        model.latent_stats.copy_(latent_statistics(model, data, ctx.device))
        write_png(out / SAMPLES_DIR / "final.png",
                  sample_grid(model, data, sample_idx, model.latent_stats.cpu(), ctx.device, seed))
        stats = model.latent_stats.cpu()
        model.eval()
        if directions and n >= 2:  # PCA needs two pictures at least
            model = with_directions(model, data.images, k=directions).eval()
        q = shlex.quote
        command_args = _train_options(size, latent_dim, config.widths, epochs, batch_size, lr,
                                      kld_weight, seed, flip, limit, save_dtype, directions)
        summary = {
            "data": {"folder": str(images), "pictures": n, "size": size},
            "recipe": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": "adam",
                       "kld_weight": kld_weight, "flip": flip, "seed": seed, "limit": limit,
                       "device": str(ctx.device)},
            "epochs": epochs,
            "steps": step,
            "world": ctx.world,
            "parameters": sum(p.numel() for p in model.parameters()),
            "final_losses": {k: history[-1][k] for k in ("loss", "recon", "kld")},
            "history": history,
            "latent_stats": {"mean_norm": round(float(stats[0].norm()), 4),
                             "mean_std": round(float(stats[1].mean()), 4)},
            "directions": directions_summary(model),
            "seconds": round(seconds, 1),
            "machine": machine(),
            "weights_dtype": str(save_dtype).replace("torch.", ""),
            "commands": [*(prepare_commands or []),
                         " ".join(["vjbridge", "train", "cvae", "--images", q(str(images)),
                                   "--out", q(str(out)), *command_args])],
        }
        model.eval()
        save_bundle(model, out, training=summary, card=make_card(out, config, summary),
                    weights_dtype=save_dtype)
    ctx.close()
    return out
