"""Principal directions of a model's latent: the axes the live direction knobs move along.

PCA of the training pictures' latents (realnvp: the flow's inverse; cvae: encoder means;
vae_associator: the image VAE's means), centred on their mean:
    latents Z (N, D),  Z - mean = U S V^T  (thin SVD)
    directions = V[:K]  (K, D), unit rows, largest variance first
    stds       = S[:K] / sqrt(N)  (K,), the latents' standard deviation along each
Each direction's sign is fixed so its largest component is positive: the same pictures give
the same knobs on every machine. The model keeps them as buffers (`directions`,
`direction_stds`, see Generator.register_directions) that travel in its bundle.

    model = with_directions(model, "runs/samples", k=8)     # a new model, same weights
    add_directions("models/realnvp-faces", "runs/samples")  # re-save a bundle with them
"""
from __future__ import annotations

import copy
import dataclasses
import shlex
from pathlib import Path

import torch

from bridge.errors import ConfigError
from bridge.generators.base import CARD_FILE, Generator, load_model, save_bundle

DEFAULT_K = 8
ENCODE_BATCH = 64


def principal_directions(latents: torch.Tensor, k: int = DEFAULT_K) -> tuple[torch.Tensor, torch.Tensor]:
    """(directions (K, D), stds (K,)) of `latents` (N, D), K = min(k, N - 1, D)."""
    if latents.dim() != 2 or len(latents) < 2:
        raise ConfigError(f"principal directions need at least 2 latents (N, D), got shape "
                          f"{tuple(latents.shape)}")
    z = latents.detach().double().cpu()
    if not torch.isfinite(z).all():
        raise ConfigError("principal directions: the latents contain NaN or inf")
    k = min(int(k), len(z) - 1, z.shape[1])
    centred = z - z.mean(dim=0)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)  # vh: (min(N, D), D)
    directions = vh[:k]
    largest = directions.abs().argmax(dim=1)
    signs = torch.sign(directions[torch.arange(k), largest])
    directions = directions * signs[:, None]
    stds = singular[:k] / len(z) ** 0.5
    return directions.float(), stds.float()


def _pictures(model: Generator, pictures) -> torch.Tensor:
    """A folder, uint8 (N, 3, S, S) or float [-1, 1] pictures -> float [-1, 1] at the model's size."""
    from bridge.train.images import load_image_folder, to_unit

    if isinstance(pictures, (str, Path)):
        pictures = load_image_folder(pictures, model.output_size)
    if not torch.is_tensor(pictures) or pictures.dim() != 4 or pictures.shape[1] != 3:
        raise ConfigError(f"directions need pictures (N, 3, S, S) or a folder, got "
                          f"{type(pictures).__name__} {tuple(getattr(pictures, 'shape', ()))}")
    return to_unit(pictures) if pictures.dtype == torch.uint8 else pictures.float()


@torch.no_grad()
def measure_directions(model: Generator, pictures, k: int = DEFAULT_K) -> tuple[torch.Tensor, torch.Tensor]:
    """(directions (K, D), stds (K,)) of the latents of `pictures` (a folder or a tensor) in
    `model`, measured in eval mode."""
    if model.direction_dim is None:
        raise ConfigError(f"model family '{model.family}' has no latent to find directions in")
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    x = _pictures(model, pictures)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        latents = torch.cat([model.direction_latents(chunk.to(device)).float().cpu()
                             for chunk in x.split(ENCODE_BATCH)])
    finally:
        model.train(was_training)
    return principal_directions(latents, k)


def with_directions(model: Generator, pictures, k: int = DEFAULT_K) -> Generator:
    """A new model, equal to `model` (same class, config and weights), whose `directions` are the
    principal directions of the latents of `pictures` (a folder of images, or (N, 3, S, S)
    pictures, uint8 or in [-1, 1]). The old model is left as it was."""
    directions, stds = measure_directions(model, pictures, k)
    config = dataclasses.replace(copy.deepcopy(model.config), n_directions=len(directions))
    device = next(model.parameters()).device
    new = type(model)(config).to(device)
    state = {key: value for key, value in model.state_dict().items()
             if key not in ("directions", "direction_stds")}
    state["directions"] = directions.to(device)
    state["direction_stds"] = stds.to(device)
    new.load_state_dict(state)
    for attribute in ("mode", "mix", "bundle_path", "bundle_config"):  # live settings, bundle origin
        if hasattr(model, attribute):
            setattr(new, attribute, getattr(model, attribute))
    return new.train(model.training)


def add_directions(bundle_path: str | Path, images_dir: str | Path, k: int = DEFAULT_K,
                   out: str | Path | None = None) -> Path:
    """Measure the principal directions of a bundle's latent on the pictures in `images_dir` (its
    training pictures, ideally) and write the bundle again with them, to `out` (default: in
    place). Weights keep their stored precision; the training summary and card say how the
    directions were made. Returns the bundle folder written."""
    model = load_model(bundle_path)
    if model.direction_dim is None:
        raise ConfigError(f"{bundle_path} is a {model.family} bundle: it has no latent to find "
                          f"directions in")
    source = model.bundle_path
    path = Path(out) if out is not None else source
    bundle_config = model.bundle_config
    dtype = getattr(torch, bundle_config.get("weights", {}).get("dtype", "float32"), torch.float32)
    model = with_directions(model, images_dir, k).eval()
    stds = model.direction_stds.tolist()
    command = " ".join(["vjbridge", "directions", shlex.quote(str(path)), "--images",
                        shlex.quote(str(images_dir)), "--k", str(k)])
    training = dict(bundle_config.get("training", {}))
    training["directions"] = {"images": str(images_dir), "k": len(stds),
                              "stds": [round(s, 4) for s in stds]}
    training["commands"] = [c for c in training.get("commands", [])
                            if not c.startswith("vjbridge directions ")] + [command]
    card_file = source / CARD_FILE
    card = card_file.read_text() if card_file.is_file() else f"# {path.name}\n"
    card = card.split("\n## Principal directions\n")[0].rstrip("\n") + "\n"
    card += (f"\n## Principal directions\n{len(stds)} principal directions of the latents of the "
             f"pictures in `{images_dir}` (standard deviations "
             f"{', '.join(f'{s:.3g}' for s in stds)}), the axes of the live `direction_N` knobs; "
             f"measured with `{command}`.\n")
    return save_bundle(model, path, training=training, card=card, weights_dtype=dtype)


def directions_summary(model: Generator) -> dict | None:
    """{"k": K, "stds": [...]} for a training summary, None without directions."""
    basis = model.principal_directions()
    if basis is None:
        return None
    return {"k": len(basis[1]), "stds": [round(float(s), 4) for s in basis[1]]}


def directions_card_text(summary: dict | None) -> str:
    """One paragraph for a model card."""
    if not summary:
        return ("No principal directions stored: the live direction knobs do nothing until "
                "`vjbridge directions` adds them.")
    return (f"{summary['k']} principal directions of the training pictures' latents are stored "
            f"(standard deviations {', '.join(f'{s:.3g}' for s in summary['stds'])}): the axes of "
            f"the live `direction_N` knobs.")
