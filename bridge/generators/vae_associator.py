"""Cross-modal VAEs with associators (Jo et al. 2019, as used by seed 000 "YouTube Mirror"):
an image VAE and a sound VAE learn their own latent spaces, and two small VAEs over latents (the
associators) map one space into the other, so a camera picture can make a sound and a sound can
make a picture.

    image VAE   picture (B, 3, 112, 112) -> convs 112 -> 56 -> 28 -> 14 -> 7 -> fc -> z_img (B, 128)
                z_img -> fc -> 7 -> 14 -> 28 -> 56 -> 112 -> tanh picture
    sound VAE   mel (B, 1, 128, 9) (dB mapped to [-1, 1]) -> MLP -> z_snd (B, 128) -> MLP -> mel
    associators z_img -> MLP -> (mu, logvar) (B, A) -> MLP -> z_snd     (image -> sound)
                z_snd -> ...                         -> z_img           (sound -> image)

Live modes (`set_mode`):
    camera  frame -> z_img -> picture (the mirror); z_img -> image->sound -> z_snd -> mel
    sound   newest mel -> z_snd -> sound->image -> z_img -> picture; the sound is the sound VAE's
            own reconstruction of the input mel
    both    the camera's z_img mixed with the sound's z_img (`mix`: 0 camera only, 1 sound only)
            -> picture; the sound comes from the camera, as in camera mode
Inference uses the posterior means everywhere (no sampling), so a still input gives a still output.
`generate(cond, latent)`: `latent` (1, image_latent), when given, is an offset added to the image
latent before it is decoded (the live direction knobs, along the principal directions of the
training pictures' image latents stored in `directions`); the sound is left as the input made it.
The mel is the analyser's `AudioFeatures.mel_db`: (n_mels, mel_frames) in dB with ref 1.0, the
newest 9 hops of 512 samples at 44.1 kHz (about 100 ms).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bridge.errors import ConfigError, InputMismatch
from bridge.generators.base import Generator, Snapshot, frames_to_input, register, square_to_frames

# The analyser's log-mel lies between its silence floor (power_to_db's amin 1e-10 -> -100 dB) and
# about +26 dB for full-scale drums; +30 leaves headroom. dB in [floor, ceiling] <-> [-1, 1].
MEL_DB_FLOOR = -100.0
MEL_DB_CEILING = 30.0
MODES = ("camera", "sound", "both")
DEFAULT_MODE = "sound"
LEAK = 0.2  # LeakyReLU slope, as DCGAN-style encoders use


@dataclass
class VAEAssociatorConfig:
    image_size: int = 112  # seed 000
    image_latent: int = 128  # seed 000
    sound_latent: int = 128  # seed 000
    n_mels: int = 128  # seed 000 (must equal the analysis' n_mels)
    mel_frames: int = 9  # seed 000: 9 hops of 512 at 44.1 kHz, about 100 ms
    image_widths: tuple = (32, 64, 128, 256)  # one stride-2 conv each: 112 -> 7 with four
    image_bottleneck: int = 32  # channels at the smallest grid before the fc (keeps the fc small)
    sound_hidden: tuple = (256, 256)  # MLP widths of the sound encoder (decoder: reversed)
    associator_hidden: int = 256
    associator_latent: int = 64  # the associators' own latent (they are VAEs over latents)
    mix: float = 0.5  # "both" mode: share of the sound-made latent in the picture
    mel_db_floor: float = MEL_DB_FLOOR
    mel_db_ceiling: float = MEL_DB_CEILING
    analysis: dict = field(default_factory=dict)  # AnalysisConfig overrides for the live mel
    n_idle: int = 0  # training pictures stored in the bundle for idle mode
    n_directions: int = 0  # rows of the `directions` buffer (bridge.morph.directions)

    def __post_init__(self):
        # JSON turns tuples into lists; store tuples so a reloaded config equals the saved one.
        self.image_widths = tuple(int(w) for w in self.image_widths)
        self.sound_hidden = tuple(int(w) for w in self.sound_hidden)
        if not self.image_widths or min(self.image_widths) < 1:
            raise ValueError(f"image_widths must be positive widths, got {self.image_widths}")
        step = 2 ** len(self.image_widths)
        if self.image_size < step or self.image_size % step:
            raise ValueError(f"image_size {self.image_size} must be a multiple of {step} "
                             f"(one halving per width in image_widths {self.image_widths})")
        if not self.sound_hidden or min(self.sound_hidden) < 1:
            raise ValueError(f"sound_hidden must be positive widths, got {self.sound_hidden}")
        for name in ("image_latent", "sound_latent", "n_mels", "mel_frames", "image_bottleneck",
                     "associator_hidden", "associator_latent"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.mix <= 1.0:
            raise ValueError(f"mix must be within 0..1, got {self.mix}")
        if not self.mel_db_floor < self.mel_db_ceiling:
            raise ValueError(f"mel_db_floor ({self.mel_db_floor}) must be below mel_db_ceiling "
                             f"({self.mel_db_ceiling})")
        if self.n_idle < 0:
            raise ValueError(f"n_idle must be >= 0, got {self.n_idle}")
        if self.n_directions < 0:
            raise ValueError(f"n_directions must be >= 0, got {self.n_directions}")
        from bridge.analysis import AnalysisConfig
        try:
            analysis = AnalysisConfig(**(self.analysis or {}))
        except (TypeError, ValueError) as e:
            raise ValueError(f"invalid analysis settings {self.analysis}: {e}") from None
        if (analysis.n_mels, analysis.mel_frames) != (self.n_mels, self.mel_frames):
            raise ValueError(f"the analysis makes ({analysis.n_mels}, {analysis.mel_frames}) mels, "
                             f"the model reads ({self.n_mels}, {self.mel_frames})")


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)), summed over latent dims, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, sample: bool) -> torch.Tensor:
    if not sample:
        return mu
    return mu + torch.randn_like(mu) * (0.5 * logvar).exp()


# --- the image VAE ----------------------------------------------------------------------------------

def _down(c_in: int, c_out: int, norm: bool) -> nn.Sequential:
    # Conv -> BatchNorm in one Sequential, so the runner's fold_batchnorm merges them for live use.
    layers = [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(c_out))
    return nn.Sequential(*layers, nn.LeakyReLU(LEAK))


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU())


class ImageVAE(nn.Module):
    def __init__(self, cfg: VAEAssociatorConfig):
        super().__init__()
        widths = cfg.image_widths
        self.grid = cfg.image_size // 2 ** len(widths)  # 112 / 16 = 7
        self.bottleneck = cfg.image_bottleneck
        flat = cfg.image_bottleneck * self.grid * self.grid  # 32 * 7 * 7 = 1568
        # (B, 3, 112, 112) -> (B, 32, 56, 56) -> ... -> (B, 256, 7, 7) -> (B, 32, 7, 7)
        downs = [_down(3 if i == 0 else widths[i - 1], w, norm=i > 0) for i, w in enumerate(widths)]
        self.encoder = nn.Sequential(*downs, nn.Conv2d(widths[-1], cfg.image_bottleneck, 1),
                                     nn.LeakyReLU(LEAK), nn.Flatten())
        self.to_stats = nn.Linear(flat, 2 * cfg.image_latent)  # -> mu ++ logvar
        self.from_latent = nn.Linear(cfg.image_latent, flat)
        # (B, 32, 7, 7) -> (B, 256, 7, 7) -> 14 -> 28 -> 56 -> (B, 3, 112, 112)
        ups = [_up(widths[i], widths[i - 1]) for i in range(len(widths) - 1, 0, -1)]
        self.decoder = nn.Sequential(
            nn.ReLU(),
            nn.Sequential(nn.Conv2d(cfg.image_bottleneck, widths[-1], 1, bias=False),
                          nn.BatchNorm2d(widths[-1]), nn.ReLU()),
            *ups, nn.ConvTranspose2d(widths[0], 3, 4, 2, 1), nn.Tanh())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_stats(self.encoder(x)).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(z).view(-1, self.bottleneck, self.grid, self.grid)
        return self.decoder(h)

    def forward(self, x: torch.Tensor):
        """(reconstruction, mu, logvar); samples the latent only while training."""
        mu, logvar = self.encode(x)
        return self.decode(reparameterize(mu, logvar, self.training)), mu, logvar


# --- the sound VAE ----------------------------------------------------------------------------------

def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with LeakyReLU between them (none after the last)."""
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(LEAK))
    return nn.Sequential(*layers)


class SoundVAE(nn.Module):
    """An MLP: 128 x 9 = 1,152 numbers are few, and the time axis is too short for convs to help."""

    def __init__(self, cfg: VAEAssociatorConfig):
        super().__init__()
        self.shape = (1, cfg.n_mels, cfg.mel_frames)
        flat = cfg.n_mels * cfg.mel_frames
        hidden = list(cfg.sound_hidden)
        self.encoder = nn.Sequential(nn.Flatten(), _mlp([flat, *hidden]), nn.LeakyReLU(LEAK))
        self.to_stats = nn.Linear(hidden[-1], 2 * cfg.sound_latent)
        self.decoder = nn.Sequential(_mlp([cfg.sound_latent, *hidden[::-1], flat]), nn.Tanh())

    def encode(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_stats(self.encoder(mel)).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(-1, *self.shape)  # (B, 1, n_mels, frames) in [-1, 1]

    def forward(self, mel: torch.Tensor):
        mu, logvar = self.encode(mel)
        return self.decode(reparameterize(mu, logvar, self.training)), mu, logvar


# --- associators ------------------------------------------------------------------------------------

class Associator(nn.Module):
    """A VAE from one latent space to another: z_src -> (mu, logvar) -> z_dst."""

    def __init__(self, src: int, dst: int, hidden: int, latent: int):
        super().__init__()
        self.encoder = _mlp([src, hidden, 2 * latent])
        self.decoder = _mlp([latent, hidden, dst])

    def forward(self, z_src: torch.Tensor):
        """(z_dst, mu, logvar); samples only while training."""
        mu, logvar = self.encoder(z_src).chunk(2, dim=1)
        return self.decoder(reparameterize(mu, logvar, self.training)), mu, logvar

    def map(self, z_src: torch.Tensor) -> torch.Tensor:
        """The mean mapping used live."""
        mu, _ = self.encoder(z_src).chunk(2, dim=1)
        return self.decoder(mu)


# --- conversions ------------------------------------------------------------------------------------

def centre_square(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3+) uint8 RGB -> (size, size, 3) uint8: the centre square, scaled, as the dataset
    builder crops its training frames (fit_square)."""
    import cv2

    h, w = image.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    square = image[y:y + side, x:x + side, :3]
    if side != size:
        interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        square = cv2.resize(np.ascontiguousarray(square), (size, size), interpolation=interp)
    return square


def frame_to_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, size, size) in [-1, 1]: `centre_square`, scaled."""
    return frames_to_input(square_to_frames(centre_square(image, size)))


@register
class VAEAssociator(Generator):
    family = "vae_associator"
    Config = VAEAssociatorConfig
    makes_sound = True
    modes = MODES
    takes_latent_offset = True  # generate's latent moves the image latent made from camera/sound

    def __init__(self, config: VAEAssociatorConfig):
        super().__init__(config)
        self.image_vae = ImageVAE(config)
        self.sound_vae = SoundVAE(config)
        self.image_to_sound = Associator(config.image_latent, config.sound_latent,
                                         config.associator_hidden, config.associator_latent)
        self.sound_to_image = Associator(config.sound_latent, config.image_latent,
                                         config.associator_hidden, config.associator_latent)
        # Named apart from idle_images(): a buffer and a method cannot share a name on a Module.
        s = config.image_size
        self.register_buffer("idle_pictures", torch.zeros(config.n_idle, 3, s, s, dtype=torch.uint8))
        # Principal directions of the training pictures' image latents, for the live knobs.
        self.register_directions(config.n_directions, config.image_latent)
        self.mode = DEFAULT_MODE
        self.mix = float(config.mix)

    # -- the Generator seam --------------------------------------------------------------------------

    def set_mode(self, mode: str, mix: float | None = None) -> None:
        """camera, sound or both; `mix` (0..1) is the sound's share of the picture in "both"."""
        if mode not in MODES:
            raise ConfigError(f"vae_associator mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mix is not None:
            if not 0.0 <= float(mix) <= 1.0:
                raise ConfigError(f"vae_associator mix must be within 0..1, got {mix}")
            self.mix = float(mix)
        self.mode = mode

    @property
    def inputs(self) -> frozenset[str]:
        return frozenset({"camera": {"image"}, "sound": {"audio"},
                          "both": {"image", "audio"}}[self.mode])

    @property
    def output_size(self) -> int:
        return self.config.image_size

    def condition(self, snapshot: Snapshot) -> tuple[torch.Tensor, torch.Tensor]:
        """(picture (1, 3, S, S) in [-1, 1], mel (1, 1, n_mels, frames) in [-1, 1]); a missing
        image is black-grey zeros, missing audio is silence."""
        s = self.config.image_size
        image = torch.zeros(1, 3, s, s) if snapshot.image is None else frame_to_tensor(snapshot.image, s)
        return image, self._mel_condition(snapshot)

    def condition_drawer(self) -> torch.nn.Module:
        from bridge.analysis.device_pictures import FrameDrawer
        return FrameDrawer()  # the frame scaled to [-1, 1] on the device; the mel passes

    def condition_params(self, snapshot: Snapshot) -> tuple[torch.Tensor, torch.Tensor]:
        """(frame (1, S, S, 3) uint8, the centre square or mid-grey without a camera; mel as in
        `condition`)."""
        from bridge.analysis.device_pictures import frame_params
        s = self.config.image_size
        frame = frame_params(None if snapshot.image is None else centre_square(snapshot.image, s), s)
        return frame, self._mel_condition(snapshot)

    def _mel_condition(self, snapshot: Snapshot) -> torch.Tensor:
        cfg = self.config
        if snapshot.audio is None:
            mel = torch.full((1, 1, cfg.n_mels, cfg.mel_frames), -1.0)
        else:
            mel_db = np.asarray(snapshot.audio.mel_db, dtype=np.float32)
            if mel_db.shape != (cfg.n_mels, cfg.mel_frames):
                raise InputMismatch(f"vae_associator reads ({cfg.n_mels}, {cfg.mel_frames}) mels, "
                                    f"the analysis gives {mel_db.shape}: analyse with the model's "
                                    f"settings (model.sound_analysis())")
            mel = self.mel_to_unit(torch.from_numpy(mel_db))[None, None]
        return mel

    def generate(self, cond, latent: torch.Tensor | None = None) -> torch.Tensor:
        """`latent`: None, or an offset (1, image_latent) added to the image latent."""
        return self._picture(cond, latent)[0]

    def generate_with_sound(self, cond, latent: torch.Tensor | None = None):
        """(picture (1, 3, S, S), mel_db (1, n_mels, frames) in dB)."""
        picture, z_sound = self._picture(cond, latent)
        return picture, self.unit_to_mel(self.sound_vae.decode(z_sound))[:, 0]

    def _picture(self, cond, offset: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The picture of the current mode (its image latent moved by `offset`) and the sound
        latent that goes with it."""
        image, mel = cond
        if self.mode == "sound":
            z_sound, _ = self.sound_vae.encode(mel)
            z_image = self.sound_to_image.map(z_sound)
        else:
            z_camera, _ = self.image_vae.encode(image)
            z_sound = self.image_to_sound.map(z_camera)
            if self.mode == "camera":
                z_image = z_camera
            else:
                # both: a straight mix of two posterior means (means are not N(0, 1) samples, so
                # slerp's norm argument does not apply; a lerp keeps mix=0 and mix=1 exactly the
                # two pictures).
                z_heard = self.sound_to_image.map(self.sound_vae.encode(mel)[0])
                z_image = torch.lerp(z_camera, z_heard, self.mix)
        if offset is not None:
            z_image = z_image + offset.to(z_image.dtype)
        return self.image_vae.decode(z_image), z_sound

    def idle_images(self) -> torch.Tensor | None:
        return self.idle_pictures if len(self.idle_pictures) else None

    @property
    def direction_dim(self) -> int:
        return self.config.image_latent

    def direction_latents(self, pictures: torch.Tensor) -> torch.Tensor:
        return self.encode_image(pictures)

    # -- tools: the two latent spaces, with means -----------------------------------------------------

    def mel_to_unit(self, mel_db: torch.Tensor) -> torch.Tensor:
        lo, hi = self.config.mel_db_floor, self.config.mel_db_ceiling
        return ((mel_db - lo) * (2.0 / (hi - lo)) - 1.0).clamp(-1.0, 1.0)

    def unit_to_mel(self, mel: torch.Tensor) -> torch.Tensor:
        lo, hi = self.config.mel_db_floor, self.config.mel_db_ceiling
        return (mel + 1.0) * (0.5 * (hi - lo)) + lo

    def encode_image(self, pictures: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, image_latent) means; other sizes are resized (warned)."""
        s = self.config.image_size
        if pictures.dim() != 4 or pictures.shape[1] != 3:
            raise InputMismatch(f"encode_image wants (N, 3, H, W) pictures, got {tuple(pictures.shape)}")
        if pictures.shape[-2:] != (s, s):
            warnings.warn(f"vae_associator: pictures of {pictures.shape[-2]}x{pictures.shape[-1]} "
                          f"resized to {s}x{s}", stacklevel=2)
            pictures = F.interpolate(pictures, size=(s, s), mode="bilinear", align_corners=False,
                                     antialias=True)
        return self.image_vae.encode(pictures)[0]

    def decode_image(self, z: torch.Tensor) -> torch.Tensor:
        return self.image_vae.decode(z)

    def encode_sound(self, mel_db: torch.Tensor) -> torch.Tensor:
        """(N, n_mels, frames) in dB -> (N, sound_latent) means."""
        cfg = self.config
        if mel_db.shape[-2:] != (cfg.n_mels, cfg.mel_frames):
            raise InputMismatch(f"encode_sound wants (N, {cfg.n_mels}, {cfg.mel_frames}) mels, "
                                f"got {tuple(mel_db.shape)}")
        return self.sound_vae.encode(self.mel_to_unit(mel_db.reshape(-1, 1, *mel_db.shape[-2:])))[0]

    def decode_sound(self, z: torch.Tensor) -> torch.Tensor:
        """(N, sound_latent) -> (N, n_mels, frames) in dB."""
        return self.unit_to_mel(self.sound_vae.decode(z))[:, 0]

    def forward(self, cond) -> torch.Tensor:
        return self.generate(cond)
