"""The Generator interface, the family registry, and model bundles.

A family subclasses `Generator` and writes:
  - `family`: the name stored in a bundle's config.json ("pix2pix", ...);
  - `Config`: a dataclass holding every constructor argument, JSON-serialisable;
  - `__init__(self, config)`: build the network from the config alone;
  - `inputs`: which signals it needs, a subset of {"audio", "image"};
  - `latent_dim`: size of its latent, or None;
  - `condition(snapshot) -> Tensor`: turn the newest audio/image snapshot into its input;
  - `generate(cond, latent=None) -> Tensor`: a (1, 3, H, W) picture in [-1, 1].
Latent families (`latent_dim` set) also write:
  - `encode(x) -> (N, D)` from pictures (N, 3, H, W) in [-1, 1], and `decode(z) -> pictures`;
  - `navigator(mode, seed, **params)`: the audio-driven walk (bridge.morph) whose latent the
    engine passes to `generate` each tick; `navigator_modes` names the walks it accepts.
Latent families may carry principal directions of their latent (bridge.morph.directions; the
live direction knobs move along them): their Config has `n_directions`, `__init__` calls
`register_directions(config.n_directions, self.direction_dim)`, and `direction_latents(pictures)`
gives the latents PCA is measured on (default: `encode`). A family whose latent is computed inside
the model (vae_associator) sets `takes_latent_offset = True`: its `generate(cond, latent)` adds
`latent` to that inner latent. `anchor_latents(seed)` gives the (K, D) latents the knob walk and
anchor jumps land on (None: no anchors).
Families that make sound set `makes_sound = True` and write
  `generate_with_sound(cond, latent=None) -> (picture, mel_db)`, mel_db (1, n_mels, frames) in dB,
which the engine turns into audio (bridge.sinks.voice). `idle_images()` may return training
pictures (N, 3, H, W) uint8 for idle mode. Register the class with `@register`.

A bundle is a folder: config.json (family, config, input representation, training summary,
bundle version, sha256 of the weights), weights.safetensors, card.md. Nothing is unpickled:
weights come from safetensors, the config from JSON, and the class from this registry.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from bridge.errors import ConfigError, InputMismatch, ModelLoadError

BUNDLE_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "card.md"
# The repository's bundled models; users add theirs in USER_MODELS_DIR (or $VJBRIDGE_MODELS).
PACKAGE_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


def user_models_dir() -> Path:
    env = os.environ.get("VJBRIDGE_MODELS")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".vjbridge" / "models"


@dataclass
class Snapshot:
    """What the engine hands a generator each tick: the newest audio features and image."""

    audio: Any = None  # bridge.analysis.AudioFeatures or None
    image: np.ndarray | None = None  # (H, W, 3) uint8 RGB
    audio_time: float | None = None  # capture time of the newest audio sample
    image_time: float | None = None

    @property
    def capture_time(self) -> float | None:
        """The older of the capture times in use: a frame is as late as its oldest input."""
        times = [t for t in (self.audio_time, self.image_time) if t is not None]
        return min(times) if times else None


class Generator(nn.Module):
    family: ClassVar[str] = ""
    Config: ClassVar[type] = object
    makes_sound: ClassVar[bool] = False
    navigator_modes: ClassVar[tuple[str, ...]] = ()
    modes: ClassVar[tuple[str, ...]] = ()  # live modes a family offers (vae_associator: camera, ...)
    # bf16/fp16 autocast in the optimized runtime, where the device runs it natively: True;
    # "checked": only if the model's own pictures (`precision_probe`) stay within
    # bridge.runtime.CHECKED_MIN_PSNR_DB of fp32 at worst, else fp32 (a flow's inverse can
    # amplify rounding); False: never.
    low_precision: ClassVar[bool | str] = True
    # True when `generate`'s latent is an offset added to a latent the model computes itself.
    takes_latent_offset: ClassVar[bool] = False

    def __init__(self, config):
        super().__init__()
        self.config = config

    @property
    def inputs(self) -> frozenset[str]:
        raise NotImplementedError

    def precision_probe(self) -> tuple:
        """(cond, latent), a batch of what it plays live, on which a "checked" family's low
        precision is measured against fp32."""
        raise NotImplementedError

    @property
    def latent_dim(self) -> int | None:
        return None

    @property
    def output_size(self) -> int:
        raise NotImplementedError

    def condition(self, snapshot: Snapshot) -> torch.Tensor:
        raise NotImplementedError

    def condition_drawer(self) -> torch.nn.Module | None:
        """A module that draws this model's condition from `condition_params` on the runner's
        device (inside its compiled call), or None when the condition is only made on the host."""
        return None

    def condition_params(self, snapshot: Snapshot):
        """What `condition_drawer()` draws the condition from: a tensor, or a tuple of tensors
        (its forward's arguments); None where this snapshot's condition is made on the host."""
        raise NotImplementedError(f"model family '{self.family}' draws no condition on the device")

    def generate(self, cond: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def set_mode(self, mode: str, **options) -> None:
        """Choose a live mode (see `modes`). Families without modes refuse any."""
        raise ConfigError(f"model family '{self.family}' has no modes (asked for {mode!r})")

    def generate_with_sound(self, cond, latent: torch.Tensor | None = None):
        raise NotImplementedError(f"model family '{self.family}' makes no sound")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"model family '{self.family}' has no latent to encode into")

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"model family '{self.family}' has no latent to decode")

    def navigator(self, mode: str | None = None, seed: int = 0, **params):
        """The walk that moves this model's latent from the music, or None (no latent)."""
        return None

    # -- principal directions and anchors (bridge.morph) ---------------------------------------
    @property
    def direction_dim(self) -> int | None:
        """Size of the latent the direction knobs move (None: the family has none)."""
        return self.latent_dim

    def direction_latents(self, pictures: torch.Tensor) -> torch.Tensor:
        """Pictures (N, 3, S, S) in [-1, 1] -> the latents (N, direction_dim) PCA is measured on."""
        return self.encode(pictures)

    def register_directions(self, count: int, dim: int) -> None:
        """`directions` (count, dim): unit principal directions of the training latents, largest
        variance first; `direction_stds` (count,): the latents' standard deviation along each.
        With count 0 the buffers stay out of the weights file, so bundles made before directions
        existed load unchanged."""
        saved = count > 0
        self.register_buffer("directions", torch.zeros(count, dim), persistent=saved)
        self.register_buffer("direction_stds", torch.zeros(count), persistent=saved)

    def principal_directions(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(directions (K, D), stds (K,)) as float32 on the CPU, or None when there are none."""
        directions = getattr(self, "directions", None)
        if directions is None or len(directions) == 0:
            return None
        return directions.detach().float().cpu(), self.direction_stds.detach().float().cpu()

    def anchor_latents(self, seed: int = 0) -> torch.Tensor | None:
        """(K, D) float32 latents that anchor jumps and the knob walk land on, or None."""
        return None

    def idle_images(self) -> torch.Tensor | None:
        """Training pictures (N, 3, H, W) uint8 that idle mode shows when nobody is there."""
        return None

    def sound_analysis(self):
        """The AnalysisConfig its mel spectrograms use (sound models only)."""
        from bridge.analysis import AnalysisConfig
        return AnalysisConfig(**(getattr(self.config, "analysis", {}) or {}))

    def check_inputs(self, has_audio: bool, has_image: bool,
                     image_option: str = "--camera SRC (a camera index/name, a video file or URL)") -> None:
        """Refuse to start when a needed input is missing, naming the option that gives it."""
        if "image" in self.inputs and not has_image:
            raise InputMismatch(f"model family '{self.family}' needs an image input: start with "
                                f"{image_option}")
        if "audio" in self.inputs and not has_audio:
            raise InputMismatch(f"model family '{self.family}' needs audio: start with --audio-in SRC")

    def warmup(self, snapshot: Snapshot, runs: int = 2) -> None:
        walk = self.navigator()
        with torch.inference_mode():
            for _ in range(runs):
                latent = walk.step(snapshot.audio, 0.0) if walk is not None else None
                self.generate(self.condition(snapshot), latent)


class WalkedLatentGenerator(Generator):
    """A latent family whose picture is `decode(latent)` and whose latent only the music's walk
    moves (realnvp, cvae): it reads audio, through its navigator, and no conditioning tensor.
    Its config has `latent_dim` and `size`."""

    @property
    def inputs(self) -> frozenset[str]:
        return frozenset({"audio"})

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def output_size(self) -> int:
        return self.config.size

    def condition(self, snapshot: Snapshot) -> torch.Tensor:
        return torch.zeros(1, 0)  # the audio reaches the picture through the walk's latent only


_REGISTRY: dict[str, type[Generator]] = {}


def square_to_frames(square: np.ndarray) -> torch.Tensor:
    """An (S, S, 3+) uint8 RGB picture -> a (1, S, S, 3) uint8 tensor of its colours, contiguous."""
    return torch.from_numpy(np.ascontiguousarray(square[..., :3]))[None]


def frames_to_input(frames: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB frames -> (N, 3, H, W) float in [-1, 1], the networks' input scale
    (on the host, and on the device inside a runner's call: one definition, the same values)."""
    return frames.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def register(cls: type[Generator]) -> type[Generator]:
    if not cls.family:
        raise TypeError(f"{cls.__name__} has no family name")
    _REGISTRY[cls.family] = cls
    return cls


def families() -> dict[str, type[Generator]]:
    _import_families()
    return dict(_REGISTRY)


def _import_families() -> None:
    # Explicit imports: each family registers itself when its module loads.
    from bridge.generators import cvae, pix2pix, realnvp, vae_associator  # noqa: F401


# --- bundles -----------------------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_bundle(model: Generator, path: str | Path, training: dict | None = None,
                card: str = "", weights_dtype: torch.dtype = torch.float32) -> Path:
    """Write a bundle folder. `weights_dtype=torch.float16` halves the size on disk; the model is
    rebuilt in fp32 on load."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", weights_dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in model.state_dict().items()}
    save_file(tensors, str(path / WEIGHTS_FILE))
    config = {
        "bundle_version": BUNDLE_VERSION,
        "family": model.family,
        "config": dataclasses.asdict(model.config),
        "weights": {"file": WEIGHTS_FILE, "sha256": sha256_file(path / WEIGHTS_FILE),
                    "dtype": str(weights_dtype).replace("torch.", "")},
        "training": training or {},
    }
    (path / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    (path / CARD_FILE).write_text(card or f"# {path.name}\n\nA `{model.family}` model bundle.\n")
    return path


def find_bundle(name_or_path: str | Path) -> Path:
    """A bundle folder by path, or by name in models/ and the user models directory."""
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p
    for root in (user_models_dir(), PACKAGE_MODELS_DIR):
        candidate = root / str(name_or_path)
        if candidate.is_dir():
            return candidate
    known = ", ".join(b.name for b in list_bundles()) or "none"
    raise ModelLoadError(f"model '{name_or_path}' not found (looked in {user_models_dir()} and "
                         f"{PACKAGE_MODELS_DIR}); available: {known}")


def list_bundles() -> list[Path]:
    found = []
    for root in (PACKAGE_MODELS_DIR, user_models_dir()):
        if root.is_dir():
            found += sorted(d for d in root.iterdir() if (d / CONFIG_FILE).is_file())
    return found


def read_bundle_config(path: Path) -> dict:
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: no {CONFIG_FILE}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{path / CONFIG_FILE}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or "family" not in config or "config" not in config:
        raise ModelLoadError(f"{path / CONFIG_FILE}: missing 'family' or 'config'")
    if config.get("bundle_version", 0) > BUNDLE_VERSION:
        raise ModelLoadError(f"{path}: bundle version {config['bundle_version']} is newer than this "
                             f"vjbridge understands ({BUNDLE_VERSION}); upgrade vjbridge")
    return config


def build_from_config(config: dict) -> Generator:
    registry = families()
    family = config["family"]
    if family not in registry:
        raise ModelLoadError(f"unknown model family '{family}'; known: {', '.join(sorted(registry))}")
    cls = registry[family]
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    args = config["config"]
    unknown = set(args) - fields
    if unknown:
        raise ModelLoadError(f"{family} config has unknown arguments: {', '.join(sorted(unknown))}")
    try:
        return cls(cls.Config(**args))
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{family} config is invalid: {e}") from None


def load_model(name_or_path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """Rebuild a model from its bundle: config.json names the family and every constructor
    argument; weights come from safetensors after their sha256 is checked. Returns it in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = find_bundle(name_or_path)
    config = read_bundle_config(path)
    weights_info = config.get("weights", {})
    weights = path / weights_info.get("file", WEIGHTS_FILE)
    if weights.name != WEIGHTS_FILE or not weights.is_file():
        raise ModelLoadError(f"{path}: no {WEIGHTS_FILE} (weights must be safetensors)")
    expected = weights_info.get("sha256")
    if not expected:
        raise ModelLoadError(f"{path / CONFIG_FILE}: no sha256 for the weights")
    actual = sha256_file(weights)
    if actual != expected:
        raise ModelLoadError(f"{weights}: sha256 mismatch (file {actual[:12]}…, config {expected[:12]}…); "
                             f"the weights were changed or damaged")
    model = build_from_config(config)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"{weights}: not a readable safetensors file ({e})") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise ModelLoadError(f"{weights}: tensors do not match the {model.family} config "
                             f"(missing {missing[:3]}, unexpected {extra[:3]})")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise ModelLoadError(f"{weights}: '{key}' has shape {tuple(tensor.shape)}, the config "
                                 f"needs {tuple(own[key].shape)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    model.bundle_path = path
    model.bundle_config = config
    return model.to(device).eval()
