"""Train a vae_associator bundle on mel pairs (`build_dataset(..., representation="mel-pairs")`),
in seed 000's two phases:

  1. intra-modal: the image VAE on the frames and the sound VAE on the mels, each with
         loss = MSE(reconstruction, input) + kld_weight * KL(q(z|x) || N(0, I))
     (MSE averaged over pixels / mel bins, KL summed over latent dims and averaged over the
     batch), RMSProp lr 1e-4, KLD weight 1e-4;
  2. cross-modal: with both VAEs frozen, the associators image->sound and sound->image on their
     posterior means (what they get live), one modality's mean in, the other's as the target:
         loss = MSE(associator(mu_src), mu_dst) + kld_weight * KL(associator posterior)
     RMSProp lr 1e-3, KLD weight 1e-3. (Feeding posterior samples instead was worse on held-out
     pairs: with 800 pairs the image posterior's sigma, ~0.8, is as large as its means' spread.)
Each network stops early on its own when its held-out loss has not improved for `patience`
epochs (8) and keeps its best epoch's weights. The seed ran "1,000 iterations" with that patience;
its numbers are the defaults here, and every one is an option for a CPU budget.

Files in `out`:
  samples/vae_0001.png, samples/assoc_0001.png   rows: picture | camera recon | sound->picture |
                                                 mel | mel recon | image->sound mel (per epoch)
  loss.png                                       both phases' train and held-out losses
  config.json, weights.safetensors, card.md      the bundle (fp16 weights), with idle pictures
Runs unchanged under torchrun (bridge.train.distributed): ranks share each epoch's batches, agree
on early stopping with ctx.any, and only rank 0 writes.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bridge.errors import ConfigError, SourceError
from bridge.generators.base import save_bundle
from bridge.generators.vae_associator import VAEAssociator, VAEAssociatorConfig, kl_divergence
from bridge.morph.directions import DEFAULT_K, directions_card_text, directions_summary, with_directions
from bridge.train import distributed
from bridge.train.report import loss_figure, machine
from bridge.train.dataset import dataset_commands, read_manifest, read_mels, write_png
from bridge.train.images import read_rgb, square, to_unit

# Seed 000's recipe.
SEED_EPOCHS = 1000  # "1,000 iterations" per phase, cut short by early stopping
PATIENCE = 8
VAE_LR = 1e-4
VAE_KLD_WEIGHT = 1e-4
ASSOCIATOR_LR = 1e-3
ASSOCIATOR_KLD_WEIGHT = 1e-3
RMSPROP_ALPHA = 0.9  # Keras' RMSprop rho (the seed trained in TensorFlow); torch's default is 0.99
# Ours.
DEFAULT_BATCH = 32
VAL_FRACTION = 0.1  # held out for early stopping
N_IDLE = 16  # training pictures stored in the bundle for idle mode
SAMPLE_COLUMNS = 6
SAMPLES_DIR = "samples"
LOSS_PLOT = "loss.png"
LOSS_PLOT_EVERY_S = 30.0  # matplotlib takes ~0.5 s a plot: redraw at most this often, and per phase
TRAIN_COMMAND = "vjbridge train vae_associator"


# --- data ------------------------------------------------------------------------------------------

class MelPairs:
    """Frames (N, 3, S, S) uint8 and mels (N, 1, n_mels, frames) in [-1, 1], all in memory
    (1,000 pairs at 112 px take 38 MB)."""

    def __init__(self, data: Path, manifest: dict, image_size: int, model: VAEAssociator,
                 warn=None):
        items = manifest["items"]
        mels_db = read_mels(data, manifest)
        if (mels_db.shape[1], mels_db.shape[2]) != (model.config.n_mels, model.config.mel_frames):
            raise SourceError(f"{data}: mels are {mels_db.shape[1:]}, the model reads "
                              f"({model.config.n_mels}, {model.config.mel_frames})")
        rows = torch.from_numpy(mels_db[[item["mel"] for item in items]])
        self.mels = model.mel_to_unit(rows)[:, None].contiguous()  # (N, 1, n_mels, frames)
        self.images = torch.empty((len(items), 3, image_size, image_size), dtype=torch.uint8)
        resized = 0
        for i, item in enumerate(items):
            path = data / item["b"]
            if not path.is_file():
                raise SourceError(f"{data}: {item['b']} is missing (rebuild the dataset)")
            rgb, _ = read_rgb(path)
            if rgb.shape[:2] != (image_size, image_size):
                resized += 1
            self.images[i] = torch.from_numpy(np.array(square(rgb, image_size))).permute(2, 0, 1)
        if resized:
            message = (f"warning: {data}: {resized} of {len(items)} pictures resized to "
                       f"{image_size}x{image_size} (the dataset was built at {manifest['size']})")
            (warn or (lambda m: print(m, file=sys.stderr)))(message)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices, flip: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(pictures (B, 3, S, S) in [-1, 1], mels (B, 1, n_mels, frames)); random mirroring of
        the pictures with `flip` (a camera mirror sees both sides)."""
        x = to_unit(self.images[list(indices)])
        if flip is not None:
            mask = torch.rand(len(x), generator=flip) < 0.5
            x[mask] = x[mask].flip(-1)
        return x, self.mels[list(indices)]


def split(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, held-out) indices; at least one of each."""
    if n < 2:
        raise SourceError(f"need at least 2 pairs to hold one out for early stopping, got {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return sorted(order[n_val:]), sorted(order[:n_val])


def chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# --- early stopping ------------------------------------------------------------------------------

class Stopper:
    """Best held-out loss of one network, its weights at that epoch, and epochs since."""

    def __init__(self, name: str, net: torch.nn.Module, patience: int):
        self.name, self.net, self.patience = name, net, patience
        self.best, self.best_epoch, self.bad = float("inf"), 0, 0
        self.best_state = None
        self.stopped = False

    def update(self, val: float, epoch: int, ctx) -> None:
        if val < self.best:
            self.best, self.best_epoch, self.bad = val, epoch, 0
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in
                                             self.net.state_dict().items()})
        else:
            self.bad += 1
        # Every rank must stop together, or DDP waits forever for the missing gradients.
        self.stopped = ctx.any(self.bad >= self.patience)

    def restore(self) -> None:
        if self.best_state is not None:
            self.net.load_state_dict(self.best_state)


# --- pictures -------------------------------------------------------------------------------------

def mel_picture(mel: torch.Tensor, size: int) -> np.ndarray:
    """(1, n_mels, frames) in [-1, 1] -> (size, size, 3) uint8, low bands at the bottom (magma)."""
    import cv2

    grey = ((mel[0].detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
    grey = cv2.resize(np.ascontiguousarray(grey[::-1]), (size, size), interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_MAGMA), cv2.COLOR_BGR2RGB)


def _pictures(x: torch.Tensor) -> list[np.ndarray]:
    u8 = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return list(u8.permute(0, 2, 3, 1).cpu().numpy())


def sample_grid(model: VAEAssociator, data: MelPairs, indices: list[int], device) -> np.ndarray:
    """Rows: picture | camera recon | sound->picture | mel | mel recon | image->sound mel; one
    column per sample, all with posterior means (as live)."""
    s = model.config.image_size
    modes = {m: m.training for m in model.modules()}  # frozen and stopped nets stay as they are
    model.eval()
    with torch.no_grad():
        image, mel = (t.to(device) for t in data.batch(indices))
        z_image, _ = model.image_vae.encode(image)
        z_sound, _ = model.sound_vae.encode(mel)
        rows = [_pictures(image), _pictures(model.image_vae.decode(z_image)),
                _pictures(model.image_vae.decode(model.sound_to_image.map(z_sound)))]
        for mels in (mel, model.sound_vae.decode(z_sound),
                     model.sound_vae.decode(model.image_to_sound.map(z_image))):
            rows.append([mel_picture(m, s) for m in mels])
    for m, training in modes.items():
        m.train(training)
    return np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)


def plot_losses(history: dict, path: Path) -> None:
    with loss_figure(path, panels=2, x_label="epoch") as axes:
        for ax, phase, title in ((axes[0], "vae", "phase 1: VAEs (MSE + KLD)"),
                                 (axes[1], "associator", "phase 2: associators (latent MSE + KLD)")):
            for name, color in zip(sorted({k for h in history[phase] for k in h["train"]}),
                                   ("tab:blue", "tab:orange")):
                rows = [h for h in history[phase] if name in h["train"]]
                x = [h["epoch"] for h in rows]
                ax.plot(x, [h["train"][name] for h in rows], "-", color=color, label=f"{name} train")
                ax.plot(x, [h["val"][name] for h in rows], "--", color=color, label=f"{name} held out")
            ax.set_title(title)
            ax.set_yscale("log")


# --- the two phases -------------------------------------------------------------------------------

def _vae_loss(net, x: torch.Tensor, kld_weight: float) -> torch.Tensor:
    recon, mu, logvar = net(x)
    return F.mse_loss(recon, x) + kld_weight * kl_divergence(mu, logvar)


def _associator_loss(net, z_src: torch.Tensor, z_dst: torch.Tensor,
                     kld_weight: float) -> torch.Tensor:
    pred, mu, logvar = net(z_src)
    return F.mse_loss(pred, z_dst) + kld_weight * kl_divergence(mu, logvar)


def _run_phase(phase: str, nets: dict, losses: dict, inputs, train_idx: list[int],
               val_idx: list[int], epochs: int, batch_size: int, lr: float, patience: int,
               seed: int, ctx, progress: bool, on_epoch) -> tuple[list[dict], dict]:
    """Train `nets` (name -> module) side by side, each stopping on its own. `inputs(indices,
    gen, training)` gives one batch per net; `losses[name](net, batch)` its loss. Returns the
    per-epoch history and each net's best epoch; the nets keep their best weights."""
    from tqdm import tqdm

    wrapped = {name: ctx.wrap(net) for name, net in nets.items()}
    optimizers = {name: torch.optim.RMSprop(net.parameters(), lr=lr, alpha=RMSPROP_ALPHA)
                  for name, net in wrapped.items()}
    stoppers = {name: Stopper(name, net, patience) for name, net in nets.items()}
    history = []
    for epoch in range(1, epochs + 1):
        active = [name for name in nets if not stoppers[name].stopped]
        if not active:
            break
        started = time.perf_counter()
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        torch.manual_seed(seed * 100_003 + epoch)  # the VAEs' sampling noise
        order = [train_idx[i] for i in torch.randperm(len(train_idx), generator=gen).tolist()]
        batches = chunks(ctx.shard(order), batch_size)
        sums = {name: 0.0 for name in active}
        for name in active:
            wrapped[name].train()
        bar = tqdm(batches, desc=f"{phase} epoch {epoch}", unit="batch", disable=not progress,
                   leave=False)
        for indices in bar:
            batch = inputs(indices, gen, True)
            for name in active:
                loss = losses[name](wrapped[name], batch[name])
                optimizers[name].zero_grad(set_to_none=True)
                loss.backward()
                optimizers[name].step()
                sums[name] += loss.item()
            bar.set_postfix({name: f"{sums[name] / (bar.n + 1):.4f}" for name in active})
        bar.close()
        train = {name: round(ctx.mean(sums[name] / max(len(batches), 1)), 6) for name in active}
        val = {}
        with torch.no_grad():  # every rank scores the whole held-out set: one decision for all
            for name in active:
                nets[name].eval()
                total = 0.0
                for indices in chunks(val_idx, batch_size):
                    total += losses[name](nets[name], inputs(indices, None, False)[name]).item() \
                        * len(indices)
                val[name] = round(total / len(val_idx), 6)
                stoppers[name].update(val[name], epoch, ctx)
        seconds = time.perf_counter() - started
        history.append({"epoch": epoch, "train": train, "val": val, "seconds": round(seconds, 2)})
        on_epoch(epoch, history)
        if progress:
            text = "  ".join(f"{n} {train[n]:.4f}/{val[n]:.4f}" for n in active)
            tqdm.write(f"{phase} epoch {epoch}: train/held-out {text}  ({seconds:.1f} s)")
    for stopper in stoppers.values():
        stopper.restore()
        nets[stopper.name].eval()
    return history, {name: {"best_epoch": s.best_epoch, "best_val": round(s.best, 6)}
                     for name, s in stoppers.items()}


def train_vae_associator(data: str | Path, out: str | Path, epochs: int = SEED_EPOCHS,
                         batch_size: int = DEFAULT_BATCH, seed: int = 0, device: str = "cpu",
                         progress: bool = True, threads: int | None = None,
                         patience: int = PATIENCE, associator_epochs: int | None = None,
                         vae_lr: float = VAE_LR, vae_kld_weight: float = VAE_KLD_WEIGHT,
                         associator_lr: float = ASSOCIATOR_LR,
                         associator_kld_weight: float = ASSOCIATOR_KLD_WEIGHT,
                         val_fraction: float = VAL_FRACTION, flip: bool = True,
                         n_idle: int = N_IDLE, model: dict | None = None,
                         save_dtype: torch.dtype = torch.float16, warn=None,
                         directions: int = DEFAULT_K) -> Path:
    """Train both phases and write the bundle into `out`; returns `out`.

    `epochs` caps phase 1 (and phase 2 unless `associator_epochs` is given); early stopping
    usually ends each sooner. `model`: VAEAssociatorConfig overrides (image_size, image_widths,
    image_latent, ...); n_mels, mel_frames and analysis come from the dataset. `threads` sets
    torch's CPU threads. `warn` receives warnings (default: printed to stderr). `directions`:
    principal directions of the training frames' image latents stored for the live knobs (0: none)."""
    if epochs < 1 or batch_size < 1 or patience < 1:
        raise ConfigError("epochs, batch_size and patience must be at least 1")
    if min(vae_lr, associator_lr) <= 0 or min(vae_kld_weight, associator_kld_weight) < 0:
        raise ConfigError("learning rates must be positive and KLD weights >= 0")
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be within (0, 1), got {val_fraction}")
    if associator_epochs is not None and associator_epochs < 1:
        raise ConfigError("associator_epochs must be at least 1")
    if directions < 0:
        raise ConfigError(f"directions must be >= 0, got {directions}")
    assoc_epochs = associator_epochs or epochs
    data, out = Path(data), Path(out)
    manifest = read_manifest(data, mel_pairs=True)
    if threads:
        torch.set_num_threads(int(threads))
    ctx = distributed.setup(device)
    dev = ctx.device

    shape = manifest["mels"]["shape"]
    overrides = dict(model or {})
    for fixed in ("n_mels", "mel_frames", "analysis", "n_idle"):
        if fixed in overrides:
            raise ConfigError(f"model setting '{fixed}' comes from the dataset or n_idle, not --model")
    fields = {f.name for f in dataclasses.fields(VAEAssociatorConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown vae_associator settings: {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(fields))}")
    try:
        config = VAEAssociatorConfig(**overrides, n_mels=int(shape[1]), mel_frames=int(shape[2]),
                                     analysis=dict(manifest.get("analysis", {})),
                                     n_idle=min(int(n_idle), len(manifest["items"])))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot train on {data}: {e}") from None

    torch.manual_seed(seed)
    net = VAEAssociator(config).to(dev)
    pairs = MelPairs(data, manifest, config.image_size, net, warn=warn if ctx.is_main else print_nothing)
    train_idx, val_idx = split(len(pairs), val_fraction, seed)
    n = len(pairs)
    sample_idx = sorted({val_idx[0], *[train_idx[round(i * (len(train_idx) - 1) /
                                                       max(1, SAMPLE_COLUMNS - 2))]
                                       for i in range(min(SAMPLE_COLUMNS - 1, len(train_idx)))]})
    if ctx.is_main:
        (out / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
    history = {"vae": [], "associator": []}

    last_plot = [time.perf_counter()]

    def on_epoch(prefix: str, key: str):
        def write(epoch: int, rows: list[dict]) -> None:
            history[key] = rows
            if ctx.is_main:
                write_png(out / SAMPLES_DIR / f"{prefix}_{epoch:04d}.png",
                          sample_grid(net, pairs, sample_idx, dev))
                if time.perf_counter() - last_plot[0] >= LOSS_PLOT_EVERY_S:
                    plot_losses(history, out / LOSS_PLOT)
                    last_plot[0] = time.perf_counter()
        return write

    # Phase 1: each VAE on its own modality.
    def vae_inputs(indices, gen, training):
        image, mel = pairs.batch(indices, gen if (training and flip) else None)
        return {"image_vae": image.to(dev), "sound_vae": mel.to(dev)}

    vae_loss = lambda net_, x: _vae_loss(net_, x, vae_kld_weight)  # noqa: E731
    started = time.perf_counter()
    history["vae"], vae_best = _run_phase(
        "vae", {"image_vae": net.image_vae, "sound_vae": net.sound_vae},
        {"image_vae": vae_loss, "sound_vae": vae_loss}, vae_inputs, train_idx, val_idx, epochs,
        batch_size, vae_lr, patience, seed, ctx, progress, on_epoch("vae", "vae"))
    vae_seconds = time.perf_counter() - started
    if ctx.is_main:
        plot_losses(history, out / LOSS_PLOT)

    # Phase 2: the associators on the frozen VAEs' means (computed once: the VAEs are fixed).
    net.image_vae.requires_grad_(False)
    net.sound_vae.requires_grad_(False)
    with torch.no_grad():
        means = [(net.image_vae.encode(image.to(dev))[0], net.sound_vae.encode(mel.to(dev))[0])
                 for image, mel in (pairs.batch(ix) for ix in chunks(list(range(n)), 64))]
        mu_image = torch.cat([m[0] for m in means])  # (N, image_latent)
        mu_sound = torch.cat([m[1] for m in means])  # (N, sound_latent)

    def associator_inputs(indices, gen, training):
        idx = torch.tensor(indices, device=dev)
        return {"image_to_sound": (mu_image[idx], mu_sound[idx]),
                "sound_to_image": (mu_sound[idx], mu_image[idx])}

    assoc_loss = lambda net_, b: _associator_loss(net_, b[0], b[1], associator_kld_weight)  # noqa: E731
    started = time.perf_counter()
    history["associator"], assoc_best = _run_phase(
        "assoc", {"image_to_sound": net.image_to_sound, "sound_to_image": net.sound_to_image},
        {"image_to_sound": assoc_loss, "sound_to_image": assoc_loss}, associator_inputs,
        train_idx, val_idx, assoc_epochs, batch_size, associator_lr, patience, seed, ctx,
        progress, on_epoch("assoc", "associator"))
    assoc_seconds = time.perf_counter() - started

    # Idle pictures: evenly spread over the dataset.
    picks = [round(i * (n - 1) / max(1, config.n_idle - 1)) for i in range(config.n_idle)]
    if picks:
        net.idle_pictures.copy_(pairs.images[picks].to(dev))
    net.requires_grad_(True)
    net.eval()
    if ctx.is_main:
        if directions:  # the image latents of the frames (split() leaves at least 2)
            net = with_directions(net, pairs.images, k=directions).eval()
        plot_losses(history, out / LOSS_PLOT)
        summary = _summary(data, manifest, out, config, history, vae_best, assoc_best,
                           dict(epochs=epochs, associator_epochs=assoc_epochs, batch_size=batch_size,
                                seed=seed, patience=patience, vae_lr=vae_lr,
                                vae_kld_weight=vae_kld_weight, associator_lr=associator_lr,
                                associator_kld_weight=associator_kld_weight,
                                val_fraction=val_fraction, flip=flip, optimizer="RMSprop",
                                rmsprop_alpha=RMSPROP_ALPHA, device=str(dev), world=ctx.world,
                                directions=directions),
                           overrides, n_idle, save_dtype, len(train_idx), len(val_idx),
                           vae_seconds, assoc_seconds)
        summary["directions"] = directions_summary(net)
        save_bundle(net, out, training=summary, card=make_card(out, config, manifest, summary),
                    weights_dtype=save_dtype)
    ctx.close()
    return out


def print_nothing(message: str) -> None:
    """Other ranks read the same data: one warning (from rank 0) is enough."""


# --- the summary and the card ---------------------------------------------------------------------

def _train_options(recipe: dict, overrides: dict, n_idle: int, save_dtype) -> list[str]:
    """The `train vae-associator` options that reproduce these settings (defaults left out)."""
    args = ["--epochs", str(recipe["epochs"]), "--batch-size", str(recipe["batch_size"])]
    if recipe["associator_epochs"] != recipe["epochs"]:
        args += ["--associator-epochs", str(recipe["associator_epochs"])]
    for key, default in (("vae_lr", VAE_LR), ("vae_kld_weight", VAE_KLD_WEIGHT),
                         ("associator_lr", ASSOCIATOR_LR),
                         ("associator_kld_weight", ASSOCIATOR_KLD_WEIGHT),
                         ("patience", PATIENCE), ("val_fraction", VAL_FRACTION), ("seed", 0)):
        if recipe[key] != default:
            args += ["--" + key.replace("_", "-"), f"{recipe[key]:g}"]
    if not recipe["flip"]:
        args.append("--no-flip")
    if n_idle != N_IDLE:
        args += ["--n-idle", str(n_idle)]
    for key, value in sorted(overrides.items()):
        args += ["--set", shlex.quote(f"{key}={json.dumps(value)}")]
    if save_dtype != torch.float16:
        args.append("--fp32-weights")
    if recipe.get("directions", DEFAULT_K) != DEFAULT_K:
        args += ["--directions", str(recipe["directions"])]
    return args


def _summary(data, manifest, out, config, history, vae_best, assoc_best, recipe, overrides,
             n_idle, save_dtype, n_train, n_val, vae_seconds, assoc_seconds) -> dict:
    
    train_command = " ".join([TRAIN_COMMAND, "--data", shlex.quote(str(data)), "--out",
                              shlex.quote(str(out)),
                              *_train_options(recipe, overrides, n_idle, save_dtype)])
    return {
        "dataset": {"path": str(data), "pairs": len(manifest["items"]), "train": n_train,
                    "held_out": n_val, "representation": manifest["representation"],
                    "size": manifest["size"], "pairing": manifest.get("pairing", {}),
                    "tick_fps": manifest.get("tick_fps"),
                    "sources": [Path(s["path"]).name for s in manifest.get("sources", [])]},
        "recipe": recipe,
        "phases": {
            "vae": {"epochs": len(history["vae"]), "best": vae_best,
                    "seconds": round(vae_seconds, 1)},
            "associator": {"epochs": len(history["associator"]), "best": assoc_best,
                           "seconds": round(assoc_seconds, 1)},
        },
        "history": history,
        "seconds": round(vae_seconds + assoc_seconds, 1),
        "machine": machine(),
        "weights_dtype": str(save_dtype).replace("torch.", ""),
        "idle_images": config.n_idle,
        "directions": None,  # filled in by the caller from the model it saves
        "commands": [*dataset_commands(data, manifest), train_command],
    }


def make_card(out: Path, config: VAEAssociatorConfig, manifest: dict, summary: dict) -> str:
    recipe, phases = summary["recipe"], summary["phases"]
    best_v, best_a = phases["vae"]["best"], phases["associator"]["best"]
    sources = ", ".join(Path(s["path"]).name for s in manifest.get("sources", []))
    commands = "\n".join(summary["commands"])
    return f"""# {out.name}

A **vae_associator** model (cross-modal VAEs with associators, Jo et al. 2019, as in "YouTube
Mirror"): an image VAE ({config.image_size}x{config.image_size}, widths
{list(config.image_widths)}, latent {config.image_latent}), a sound VAE (log-mel
{config.n_mels}x{config.mel_frames}, about 100 ms, latent {config.sound_latent}) and two
associators (image->sound, sound->image). Trained on {summary['dataset']['pairs']} pairs
(frame at each {manifest.get('pairing', {}).get('segment', 1):g} s segment's strongest onset + the
mel before it) from {len(manifest.get('sources', []))} video(s): {sources}.

## Live
Modes: `camera` (the mirror: camera -> picture, and its sound), `sound` (music -> picture; the
sound is the VAE's echo of it), `both` (camera picture mixed with the music's, mix
{config.mix:g}). Mels come from `bridge.analysis` with the settings in config.json
(`config.analysis`). {config.n_idle} training pictures are stored for idle mode.
{directions_card_text(summary.get('directions'))}

## Training
Phase 1 (VAEs): RMSprop lr {recipe['vae_lr']:g}, KLD weight {recipe['vae_kld_weight']:g},
{phases['vae']['epochs']} epochs ({phases['vae']['seconds'] / 60:.1f} min); best held-out loss
image {best_v['image_vae']['best_val']:.4f} (epoch {best_v['image_vae']['best_epoch']}), sound
{best_v['sound_vae']['best_val']:.4f} (epoch {best_v['sound_vae']['best_epoch']}).
Phase 2 (associators): RMSprop lr {recipe['associator_lr']:g}, KLD weight
{recipe['associator_kld_weight']:g}, {phases['associator']['epochs']} epochs
({phases['associator']['seconds'] / 60:.1f} min); best held-out loss image->sound
{best_a['image_to_sound']['best_val']:.4f}, sound->image {best_a['sound_to_image']['best_val']:.4f}.
Early stopping patience {recipe['patience']} on {summary['dataset']['held_out']} held-out pairs,
batch {recipe['batch_size']}, on {summary['machine']['cpu']} ({summary['machine']['torch_threads']}
torch threads, device {recipe['device']}). Weights stored as {summary['weights_dtype']}. Loss
curves: loss.png; sample grids in samples/ when trained here.

## Rebuild
From the repository root:
```
{commands}
```
"""
