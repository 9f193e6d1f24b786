"""Image folders for the latent families (RealNVP anchors and training sets, conv-VAE frames).

    paths = list_images(folder)                 # sorted image files; clear error when none
    batch = load_image_folder(folder, 32)       # (N, 3, 32, 32) uint8, square, RGB
    ImageSet(batch).batch([0, 5], flip=gen)     # float (B, 3, S, S) in [-1, 1]
    export_sample_images(out, "faces")          # scikit-image's BSD pictures as PNG files

Pictures of another size are centre-cropped and scaled, and grey/RGBA/palette ones converted to
RGB, with one warning per folder that says how many; a file that is not a readable image is an
error naming it (a folder of training data with a stray file in it is a mistake to fix, not skip).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from bridge.errors import ConfigError, SourceError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Files a folder may hold besides its pictures (notes, OS litter) without being an error.
IGNORED_NAMES = {".ds_store", "thumbs.db", "desktop.ini", "readme.md", "readme.txt", "credits.md"}
# scikit-image's bundled (BSD) sample pictures that need no download.
SKIMAGE_PICTURES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina",
                    "stereo_motorcycle", "hubble_deep_field", "colorwheel", "camera", "coins",
                    "moon", "brick", "grass", "gravel", "clock")
SAMPLE_KINDS = ("photos", "faces", "all")


def list_images(folder: str | Path) -> list[Path]:
    """Image files in `folder` (not recursive), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"image folder {folder} does not exist")
    paths, strays = [], []
    for p in sorted(folder.iterdir()):
        if p.is_dir() or p.name.startswith(".") or p.name.lower() in IGNORED_NAMES:
            continue
        if p.suffix.lower() in IMAGE_SUFFIXES:
            paths.append(p)
        else:
            strays.append(p)
    if strays:
        raise SourceError(f"{strays[0]} is not an image (expected {', '.join(IMAGE_SUFFIXES)}); "
                          f"move it out of {folder}")
    if not paths:
        raise ConfigError(f"image folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def read_rgb(path: str | Path) -> tuple[np.ndarray, str]:
    """(H, W, 3) uint8 RGB and the mode it was converted from ("" if it was RGB already)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            rgb = im.convert("RGB") if mode != "RGB" else im.copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise SourceError(f"{path} is not a readable image ({' '.join(str(e).split())})") from None
    return np.asarray(rgb, dtype=np.uint8), ("" if mode == "RGB" else mode)


def square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and scale to (size, size, 3) uint8."""
    from PIL import Image

    h, w = rgb.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    crop = rgb[y:y + side, x:x + side]
    if side == size:
        return np.ascontiguousarray(crop)
    resample = Image.Resampling.LANCZOS if side > size else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(crop).resize((size, size), resample), dtype=np.uint8)


def load_image_folder(folder: str | Path, size: int, limit: int | None = None,
                      warn=None) -> torch.Tensor:
    """Every image of `folder` as (N, 3, size, size) uint8, with one warning for conversions."""
    if size < 2:
        raise ConfigError(f"image size must be at least 2, got {size}")
    paths = list_images(folder)[:limit]
    resized, converted = 0, {}
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, p in enumerate(paths):
        rgb, mode = read_rgb(p)
        if mode:
            converted[mode] = converted.get(mode, 0) + 1
        if rgb.shape[0] != size or rgb.shape[1] != size:
            resized += 1
        out[i] = torch.from_numpy(np.array(square(rgb, size))).permute(2, 0, 1)
    notes = []
    if resized:
        notes.append(f"{resized} resized to {size}x{size}")
    if converted:
        notes.append("converted to RGB: " + ", ".join(f"{n} {m}" for m, n in sorted(converted.items())))
    if notes:
        message = f"warning: {folder}: " + "; ".join(notes)
        (warn or (lambda m: print(m, file=sys.stderr)))(message)
    return out


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float in [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(pictures: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 (N, 3, H, W)."""
    return pictures.detach().add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8)


class ImageSet:
    """A uint8 image tensor served in float batches, with optional horizontal flips."""

    def __init__(self, images: torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
            raise ValueError(f"want (N, 3, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
        if len(images) == 0:
            raise ConfigError("no images to train on")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def batch(self, indices, flip: torch.Generator | None = None) -> torch.Tensor:
        x = to_unit(self.images[list(indices)])
        if flip is not None:
            mask = torch.rand(len(x), generator=flip) < 0.5
            x[mask] = x[mask].flip(-1)
        return x


def export_sample_images(out: str | Path, kind: str = "all", size: int | None = None) -> list[Path]:
    """Write scikit-image's bundled pictures as PNG: `photos` (the sample photographs), `faces`
    (the 200 LFW faces of `skimage.data.lfw_subset`, grey, 25x25), or `all`. `size` squares them."""
    from PIL import Image
    from skimage import data as skdata

    if kind not in SAMPLE_KINDS:
        raise ConfigError(f"sample kind must be one of {', '.join(SAMPLE_KINDS)}, got {kind!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def save(name: str, array: np.ndarray) -> None:
        array = np.asarray(array)
        if array.dtype != np.uint8:
            array = (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        array = array[..., :3]
        if size:
            array = square(array, size)
        path = out / f"{name}.png"
        Image.fromarray(np.ascontiguousarray(array)).save(path)
        written.append(path)

    if kind in ("photos", "all"):
        for name in SKIMAGE_PICTURES:
            picture = getattr(skdata, name)()
            if isinstance(picture, tuple):  # stereo pairs come as (left, right, disparity)
                picture = picture[0]
            save(name, picture)
    if kind in ("faces", "all"):
        for i, face in enumerate(skdata.lfw_subset()):
            save(f"lfw_{i:03d}", face)
    return written
