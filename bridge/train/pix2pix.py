"""Train a pix2pix bundle on a dataset from `build_dataset` (A = audio image, B = video frame).

The recipe is Isola et al.'s: a conditional GAN whose generator is the U-Net of
bridge/generators/pix2pix.py and whose discriminator is the 70x70 PatchGAN; loss
    D: 0.5 * (BCE(D(a, b), 1) + BCE(D(a, G(a)), 0))
    G: BCE(D(a, G(a)), 1) + lambda_l1 * |G(a) - b|_1
with BCE on logits, Adam(lr 2e-4, betas (0.5, 0.999)), and the paper's random jitter (scale up
by 286/256, crop back at a random place, the same place in A and B). Mirroring is only used for
camera-image inputs: an audio picture read backwards is not a picture the live bridge ever shows.

Under torchrun every process trains on its share of each epoch (DistributedDataParallel, see
bridge/train/distributed.py); the discriminator's two calls live in one module so DDP sees one
forward per step. Only rank 0 writes files.

Files in `out`:
  checkpoint/state.safetensors  G, D and both optimisers' state tensors (resumable)
  checkpoint/state.json         epoch, step, loss history, optimiser settings, seconds so far
  samples/epoch_0001.png        rows: condition | generated (eval mode, as live) | target
  loss.png                      loss curves
  config.json, weights.safetensors, card.md   the bundle (written at the end)
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bridge.errors import ConfigError, SourceError
from bridge.generators.base import save_bundle
from bridge.generators.pix2pix import IMAGE_INPUT, PatchDiscriminator, Pix2Pix, Pix2PixConfig
from bridge.train import distributed
from bridge.train.report import loss_figure, machine
from bridge.train.dataset import dataset_commands, read_manifest, write_png

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_TENSORS = "state.safetensors"
CHECKPOINT_STATE = "state.json"
SAMPLES_DIR = "samples"
LOSS_PLOT = "loss.png"
JITTER_SCALE = 286 / 256  # pix2pix's load_size / crop_size
SAMPLE_COLUMNS = 6
STEP_LOG_EVERY = 10  # steps between entries of the per-step loss log


# --- data ----------------------------------------------------------------------------------------

class PairImages:
    """The dataset's A/B pairs as (N, 3, S, S) uint8 tensors, read once. 2,000 pairs at 256 take
    0.8 GB; larger sets are read from disk per batch instead."""

    MAX_CACHE_BYTES = 1 << 30

    def __init__(self, data: Path, manifest: dict):
        self.data = data
        self.items = manifest["items"]
        self.size = int(manifest["size"])
        for item in (self.items[0], self.items[-1]):
            for key in ("a", "b"):
                if not (data / item[key]).is_file():
                    raise SourceError(f"{data}: {item[key]} is missing (rebuild the dataset)")
        self._cache = None
        if len(self.items) * 2 * 3 * self.size ** 2 <= self.MAX_CACHE_BYTES:
            self._cache = [self._read_pair(i) for i in range(len(self.items))]

    def __len__(self) -> int:
        return len(self.items)

    def _read(self, name: str) -> torch.Tensor:
        import cv2

        bgr = cv2.imread(str(self.data / name), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SourceError(f"{self.data / name}: not a readable image")
        if bgr.shape[:2] != (self.size, self.size):
            bgr = cv2.resize(bgr, (self.size, self.size), interpolation=cv2.INTER_AREA)
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        return torch.from_numpy(rgb).permute(2, 0, 1)

    def _read_pair(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._read(self.items[i]["a"]), self._read(self.items[i]["b"])

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Float tensors in [-1, 1], (B, 3, S, S) each, as Pix2Pix.condition makes them."""
        pairs = [self._cache[i] if self._cache else self._read_pair(i) for i in indices]
        a = torch.stack([p[0] for p in pairs]).float().div_(127.5).sub_(1.0)
        b = torch.stack([p[1] for p in pairs]).float().div_(127.5).sub_(1.0)
        return a, b


def jitter(a: torch.Tensor, b: torch.Tensor, gen: torch.Generator,
           mirror: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """pix2pix's augmentation: upscale by 286/256, crop back at a random place (the same in A and
    B), and mirror both at random when `mirror`."""
    size = a.shape[-1]
    big = int(round(size * JITTER_SCALE))
    both = F.interpolate(torch.cat([a, b], 1), size=(big, big), mode="bilinear", align_corners=False)
    out = torch.empty(a.shape[0], 6, size, size)
    for i in range(a.shape[0]):
        y, x = torch.randint(0, big - size + 1, (2,), generator=gen).tolist()
        crop = both[i, :, y:y + size, x:x + size]
        if mirror and torch.rand((), generator=gen) < 0.5:
            crop = crop.flip(-1)
        out[i] = crop
    return out[:, :3].contiguous(), out[:, 3:].contiguous()


# --- checkpoints ---------------------------------------------------------------------------------

def _optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict, dict]:
    """Split an optimiser's state_dict into tensors (for safetensors) and JSON-able rest."""
    sd = opt.state_dict()
    tensors, extra = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                extra[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": extra}


def _optimizer_state(tensors: dict, prefix: str, saved: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            pid, key = name[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(pid), {})[key] = value
    for name, value in saved.get("scalars", {}).items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": saved["param_groups"]}


def save_checkpoint(folder: Path, G, D, opt_g, opt_d, state: dict) -> None:
    """Tensors then JSON, each written aside and renamed, so a crash leaves the previous epoch."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"G.{k}": v.detach().cpu().contiguous() for k, v in G.state_dict().items()}
    tensors.update({f"D.{k}": v.detach().cpu().contiguous() for k, v in D.state_dict().items()})
    t_g, extra_g = _optimizer_tensors(opt_g, "optG")
    t_d, extra_d = _optimizer_tensors(opt_d, "optD")
    tensors.update(t_g)
    tensors.update(t_d)
    state = dict(state, optimizer_g=extra_g, optimizer_d=extra_d)
    tmp = folder / (CHECKPOINT_TENSORS + ".tmp")
    save_file(tensors, str(tmp), metadata={"epoch": str(state["epoch"])})
    os.replace(tmp, folder / CHECKPOINT_TENSORS)
    tmp = folder / (CHECKPOINT_STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    os.replace(tmp, folder / CHECKPOINT_STATE)


def load_checkpoint(folder: Path, G, D, opt_g, opt_d) -> dict:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        state = json.loads((folder / CHECKPOINT_STATE).read_text())
        with safe_open(str(folder / CHECKPOINT_TENSORS), "pt") as f:
            tensor_epoch = (f.metadata() or {}).get("epoch")
        tensors = load_file(str(folder / CHECKPOINT_TENSORS))
    except (OSError, json.JSONDecodeError, SafetensorError, ValueError) as e:
        raise SourceError(f"checkpoint in {folder} is not readable ({e}); use --no-resume") from None
    if tensor_epoch != str(state.get("epoch")):
        raise SourceError(f"checkpoint in {folder} is half written (weights from epoch "
                          f"{tensor_epoch}, counters from {state.get('epoch')}); use --no-resume")
    G.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("G.")})
    D.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("D.")})
    opt_g.load_state_dict(_optimizer_state(tensors, "optG", state["optimizer_g"]))
    opt_d.load_state_dict(_optimizer_state(tensors, "optD", state["optimizer_d"]))
    return state


# --- pictures --------------------------------------------------------------------------------------

def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def sample_grid(G, images: PairImages, indices: list[int], device) -> np.ndarray:
    """Rows condition | generated | target, one column per sample; generated in eval mode (as
    the live bridge runs it)."""
    was_training = G.training
    G.eval()
    with torch.no_grad():
        a, b = images.batch(indices)
        fake = G(a.to(device))
    G.train(was_training)
    rows = [np.concatenate(list(_to_uint8(x)), axis=1) for x in (a, fake, b)]
    return np.concatenate(rows, axis=0)


def plot_losses(history: list[dict], steps: list[list], path: Path) -> None:
    with loss_figure(path, panels=2) as (ax_gan, ax_l1):
        if steps:
            s = np.asarray(steps, dtype=float)  # step, epoch, g_gan, g_l1, d
            ax_gan.plot(s[:, 0], s[:, 2], color="tab:blue", alpha=0.25, lw=0.8)
            ax_gan.plot(s[:, 0], s[:, 4], color="tab:red", alpha=0.25, lw=0.8)
            ax_l1.plot(s[:, 0], s[:, 3], color="tab:green", alpha=0.25, lw=0.8)
        if history:
            x = [h["step"] for h in history]
            ax_gan.plot(x, [h["g_gan"] for h in history], "o-", color="tab:blue", label="G adversarial")
            ax_gan.plot(x, [h["d"] for h in history], "o-", color="tab:red", label="D")
            ax_l1.plot(x, [h["g_l1"] for h in history], "o-", color="tab:green", label="G L1 (x1)")
        ax_gan.set_title("GAN losses (BCE)")
        ax_l1.set_title("L1 |G(a) - b| (pixels in [-1, 1])")


# --- the card ---------------------------------------------------------------------------------------

def rebuild_commands(data: Path, manifest: dict, out: Path, train_args: list[str]) -> list[str]:
    """The commands that remake this bundle: synth (when the videos were synthetic), build, train."""
    q = shlex.quote
    return [*dataset_commands(data, manifest),
            " ".join(["vjbridge", "train", "pix2pix", "--data", q(str(data)), "--out", q(str(out)),
                      *train_args])]


def make_card(out: Path, config: Pix2PixConfig, manifest: dict, summary: dict) -> str:
    losses = summary["final_losses"]
    sources = ", ".join(Path(s["path"]).name for s in manifest.get("sources", []))
    commands = "\n".join(summary["commands"])
    return f"""# {out.name}

A **pix2pix** model (U-Net generator, ngf {config.ngf}, {config.size}x{config.size}) that turns
an audio picture into a frame: trained as a conditional GAN (PatchGAN discriminator, L1 weight
{summary['recipe']['lambda_l1']:g}) on {manifest['pairs']} pairs of (audio picture, video frame)
from {len(manifest.get('sources', []))} video(s): {sources}.

## Input it needs
Live audio, drawn as the `{config.input}` representation at {config.size}x{config.size} by
`bridge.analysis` with the analysis settings stored in config.json (`config.analysis`), on a
{manifest.get('tick_fps', 30):g} fps tick: the same streaming path the training pictures came from.
Pairing: {manifest.get('pairing', {}).get('mode')} {json.dumps(manifest.get('pairing', {}))}.

## Training
{summary['epochs']} epochs, {summary['steps']} steps, batch {summary['recipe']['batch_size']},
Adam lr {summary['recipe']['lr']:g} betas ({summary['recipe']['beta1']:g}, 0.999),
{summary['seconds'] / 60:.1f} minutes on {summary['machine']['cpu']}
({summary['machine']['torch_threads']} torch threads, device {summary['recipe']['device']}).
Final epoch losses: G adversarial {losses['g_gan']:.3f}, G L1 {losses['g_l1']:.4f}, D {losses['d']:.3f}.
Weights stored as {summary['weights_dtype']}. Loss curves: loss.png; sample grids (condition |
generated | target) in samples/ when trained here.

## Rebuild
From the repository root:
```
{commands}
```
"""


# --- training ----------------------------------------------------------------------------------------

class DiscriminatorLoss(torch.nn.Module):
    """Both halves of D's loss in one forward: DDP needs exactly one forward per backward."""

    def __init__(self, D: PatchDiscriminator):
        super().__init__()
        self.D = D
        self.bce = torch.nn.BCEWithLogitsLoss()

    def forward(self, a, fake, real):
        pred_fake = self.D(a, fake)
        pred_real = self.D(a, real)
        return (self.bce(pred_real, torch.ones_like(pred_real)),
                self.bce(pred_fake, torch.zeros_like(pred_fake)))


def _check_resume(state: dict, model_config: dict, ndf: int, folder: Path) -> None:
    saved = state.get("model_config", {})
    for key in ("size", "ngf", "input", "in_channels", "out_channels", "dropout"):
        if saved.get(key) != model_config.get(key):
            raise ConfigError(f"checkpoint in {folder} was trained with {key}={saved.get(key)!r}, "
                              f"this run asks for {model_config.get(key)!r}: use the same settings, "
                              f"another --out, or --no-resume")
    if state.get("ndf") != ndf:
        raise ConfigError(f"checkpoint in {folder} has ndf={state.get('ndf')}, this run asks for "
                          f"{ndf}: use the same settings or --no-resume")


def train_pix2pix(data: str | Path, out: str | Path, epochs: int = 200, batch_size: int = 1,
                  ngf: int = 64, lr: float = 2e-4, beta1: float = 0.5, lambda_l1: float = 100.0,
                  resume: bool = True, device: str = "cpu", seed: int = 0,
                  save_dtype: torch.dtype = torch.float32, progress: bool = True,
                  ndf: int | None = None, augment: bool = True,
                  threads: int | None = None) -> Path:
    """Train (or go on training) and write the bundle into `out`; returns `out`.

    `ndf` (discriminator width) defaults to `ngf`: at 256 px a 64-wide PatchGAN costs ten times a
    16-wide U-Net, and a discriminator much stronger than its generator only slows both down.
    `threads` sets torch's CPU threads (None: torch's default)."""
    from tqdm import tqdm

    if epochs < 1 or batch_size < 1 or lr <= 0 or lambda_l1 < 0:
        raise ConfigError("epochs and batch_size must be at least 1, lr positive, lambda_l1 >= 0")
    data, out = Path(data), Path(out)
    manifest = read_manifest(data)
    if threads:
        torch.set_num_threads(int(threads))
    ctx = distributed.setup(device)
    dev = ctx.device
    ndf = int(ndf or ngf)
    try:
        config = Pix2PixConfig(size=int(manifest["size"]), ngf=ngf, input=manifest["representation"],
                               analysis=dict(manifest.get("analysis", {})))
    except ValueError as e:
        raise ConfigError(f"cannot train on {data}: {e}") from None
    model_config = dataclasses.asdict(config)
    images = PairImages(data, manifest)

    torch.manual_seed(seed)
    model = Pix2Pix(config).to(dev)
    G = model.net
    D = PatchDiscriminator(in_channels=config.in_channels + config.out_channels, ndf=ndf).to(dev)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(beta1, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(beta1, 0.999))

    G_run = ctx.wrap(G)  # the same modules, wrapped for DDP when under torchrun
    D_loss = ctx.wrap(DiscriminatorLoss(D))

    folder = out / CHECKPOINT_DIR
    state = {"epoch": 0, "step": 0, "seconds": 0.0, "history": [], "steps": []}
    if resume and (folder / CHECKPOINT_STATE).is_file():
        try:
            saved = json.loads((folder / CHECKPOINT_STATE).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SourceError(f"checkpoint in {folder} is not readable ({e}); use --no-resume") from None
        _check_resume(saved, model_config, ndf, folder)
        state = load_checkpoint(folder, G, D, opt_g, opt_d)
        for opt in (opt_g, opt_d):  # this run's settings win, so lr can be lowered on resume
            for group in opt.param_groups:
                group["lr"], group["betas"] = lr, (beta1, 0.999)
        if progress and ctx.is_main:
            tqdm.write(f"resuming from {folder}: epoch {state['epoch']}, step {state['step']}")
    if ctx.is_main:
        (out / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)

    n = len(images)
    sample_idx = sorted({round(i * (n - 1) / max(1, SAMPLE_COLUMNS - 1))
                         for i in range(min(SAMPLE_COLUMNS, n))})
    mirror = config.input == IMAGE_INPUT
    bce = torch.nn.BCEWithLogitsLoss()
    shard_len = len(ctx.shard(list(range(n))))
    steps_per_epoch = (shard_len + batch_size - 1) // batch_size
    G.train()
    D.train()
    for epoch in range(state["epoch"] + 1, epochs + 1):
        started = time.perf_counter()
        # Seeded per epoch, so a resumed run shuffles, jitters and drops out as an unbroken one.
        torch.manual_seed(seed * 100_003 + epoch)
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = ctx.shard(torch.randperm(n, generator=gen).tolist())
        sums = np.zeros(5)  # g_gan, g_l1, d_real, d_fake, count
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{epochs}", unit="step",
                   disable=not (progress and ctx.is_main), leave=False)
        for i in bar:
            a, b = images.batch(order[i * batch_size:(i + 1) * batch_size])
            if augment:
                a, b = jitter(a, b, gen, mirror)
            a, b = a.to(dev), b.to(dev)
            fake = G_run(a)

            D.requires_grad_(True)
            opt_d.zero_grad(set_to_none=True)
            loss_d_real, loss_d_fake = D_loss(a, fake.detach(), b)
            (0.5 * (loss_d_fake + loss_d_real)).backward()
            opt_d.step()

            # G's step reads the plain D: its weights are frozen here, so DDP has nothing to sync.
            D.requires_grad_(False)
            opt_g.zero_grad(set_to_none=True)
            pred = D(a, fake)
            loss_g_gan = bce(pred, torch.ones_like(pred))
            loss_g_l1 = F.l1_loss(fake, b)
            (loss_g_gan + lambda_l1 * loss_g_l1).backward()
            opt_g.step()

            values = [loss_g_gan.item(), loss_g_l1.item(), loss_d_real.item(), loss_d_fake.item()]
            sums += [*values, 1]
            state["step"] += 1
            if state["step"] % STEP_LOG_EVERY == 0:
                state["steps"].append([state["step"], epoch, round(values[0], 4),
                                       round(values[1], 5), round(0.5 * (values[2] + values[3]), 4)])
            bar.set_postfix(G=f"{values[0]:.2f}", L1=f"{values[1]:.3f}",
                            D=f"{0.5 * (values[2] + values[3]):.2f}")
        bar.close()
        g_gan, g_l1, d_real, d_fake = (ctx.mean(v) for v in sums[:4] / max(sums[4], 1))
        seconds = time.perf_counter() - started
        state["seconds"] += seconds
        state["epoch"] = epoch
        state["history"].append({"epoch": epoch, "step": state["step"], "g_gan": round(g_gan, 4),
                                 "g_l1": round(g_l1, 5), "d_real": round(d_real, 4),
                                 "d_fake": round(d_fake, 4), "d": round(0.5 * (d_real + d_fake), 4),
                                 "seconds": round(seconds, 2)})
        state.update(model_config=model_config, ndf=ndf, data=str(data), seed=seed)
        if ctx.is_main:
            write_png(out / SAMPLES_DIR / f"epoch_{epoch:04d}.png", sample_grid(G, images, sample_idx, dev))
            plot_losses(state["history"], state["steps"], out / LOSS_PLOT)
            save_checkpoint(folder, G, D, opt_g, opt_d, state)
        ctx.barrier()
        if progress and ctx.is_main:
            tqdm.write(f"epoch {epoch}/{epochs}: G {g_gan:.3f}  L1 {g_l1:.4f}  "
                       f"D {0.5 * (d_real + d_fake):.3f}  ({seconds:.0f} s)")

    if not state["history"]:
        ctx.close()
        raise SourceError(f"{folder}: the checkpoint has no finished epoch; use --no-resume")
    if not ctx.is_main:
        ctx.close()
        return out
    if not (out / LOSS_PLOT).is_file():
        plot_losses(state["history"], state["steps"], out / LOSS_PLOT)
    final = state["history"][-1]
    command_args = _train_options(epochs, batch_size, ngf, lr, beta1, lambda_l1, seed, save_dtype,
                                  ndf, augment)
    summary = {
        "dataset": {"path": str(data), "pairs": n, "representation": manifest["representation"],
                    "size": manifest["size"], "pairing": manifest.get("pairing", {}),
                    "tick_fps": manifest.get("tick_fps"),
                    "sources": [Path(s["path"]).name for s in manifest.get("sources", [])]},
        "recipe": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "beta1": beta1,
                   "lambda_l1": lambda_l1, "ndf": ndf, "augment": augment, "seed": seed,
                   "device": str(dev), "processes": ctx.world},
        "epochs": state["epoch"],
        "steps": state["step"],
        "final_losses": {k: final[k] for k in ("g_gan", "g_l1", "d_real", "d_fake", "d")},
        "seconds": round(state["seconds"], 1),
        "machine": machine(),
        "weights_dtype": str(save_dtype).replace("torch.", ""),
        "commands": rebuild_commands(data, manifest, out, command_args),
    }
    model.eval()
    save_bundle(model, out, training=summary, card=make_card(out, config, manifest, summary),
                weights_dtype=save_dtype)
    ctx.close()
    return out


def _train_options(epochs, batch_size, ngf, lr, beta1, lambda_l1, seed, save_dtype, ndf,
                   augment) -> list[str]:
    """The `train pix2pix` options that reproduce these settings."""
    args = ["--epochs", str(epochs), "--batch-size", str(batch_size), "--ngf", str(ngf),
            "--lr", f"{lr:g}"]
    if ndf != ngf:
        args += ["--ndf", str(ndf)]
    if beta1 != 0.5:
        args += ["--beta1", f"{beta1:g}"]
    if lambda_l1 != 100.0:
        args += ["--lambda-l1", f"{lambda_l1:g}"]
    if seed != 0:
        args += ["--seed", str(seed)]
    if not augment:
        args.append("--no-augment")
    if save_dtype == torch.float16:
        args.append("--fp16-weights")
    return args
