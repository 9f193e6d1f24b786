"""Small raster helpers for the pictures: colour map, linear resize, glowing strokes.

Everything works on float images in 0..1 (H, W) or (H, W, 3) and is vectorised over pixels.
"""
from __future__ import annotations

import functools

import numpy as np

# A dark-to-hot map (black, violet, magenta, orange, pale yellow): silence is black, loud is
# bright, and neighbouring levels stay distinguishable for the network and for the eye.
_MAP_ANCHORS = np.array([
    [0.00, 0.00, 0.00],
    [0.16, 0.05, 0.35],
    [0.55, 0.10, 0.50],
    [0.90, 0.30, 0.30],
    [1.00, 0.65, 0.15],
    [1.00, 0.95, 0.70],
])

LOW_RGB = np.array([1.00, 0.35, 0.15])  # warm for bass
MID_RGB = np.array([0.30, 1.00, 0.45])
HIGH_RGB = np.array([0.35, 0.60, 1.00])  # cold for treble
KICK_RGB = np.array([1.00, 0.95, 0.80])


@functools.lru_cache(maxsize=1)
def _colour_table() -> np.ndarray:
    """256-entry RGB lookup of the map, float32."""
    at = np.linspace(0, 1, len(_MAP_ANCHORS))
    x = np.linspace(0, 1, 256)
    table = np.stack([np.interp(x, at, _MAP_ANCHORS[:, c]) for c in range(3)], axis=-1)
    return table.astype(np.float32)


def colour_map(values: np.ndarray) -> np.ndarray:
    """(H, W) values in 0..1 -> (H, W, 3) float32 RGB in 0..1."""
    index = np.clip(np.asarray(values) * 255.0 + 0.5, 0, 255).astype(np.intp)
    return _colour_table()[index]


@functools.lru_cache(maxsize=32)
def _resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of linear interpolation at pixel centres (edges clamp)."""
    position = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    below = np.floor(position).astype(int)
    above = np.minimum(below + 1, n_in - 1)
    frac = position - below
    matrix = np.zeros((n_out, n_in), dtype=np.float32)
    rows = np.arange(n_out)
    np.add.at(matrix, (rows, below), 1 - frac)
    np.add.at(matrix, (rows, above), frac)
    matrix.setflags(write=False)
    return matrix


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Linear resize of an (H, W) image as two small matrix products (no imaging dependency)."""
    image = np.asarray(image, dtype=np.float32)
    return _resample_matrix(image.shape[0], height) @ image @ _resample_matrix(image.shape[1], width).T


def column_extremes(values: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of `values` within each of `columns` equal spans (repeats when stretching)."""
    values = np.asarray(values, dtype=np.float32)
    starts = (np.arange(columns) * len(values)) // columns
    if len(values) >= columns:  # every span non-empty and in order: reduceat is exact
        return np.minimum.reduceat(values, starts), np.maximum.reduceat(values, starts)
    picked = values[np.minimum(starts, len(values) - 1)]
    return picked, picked


def column_max(values: np.ndarray, columns: int) -> np.ndarray:
    """Max over each column's span along axis 0 of (N,) or (N, K) values -> (columns, ...)."""
    values = np.asarray(values, dtype=np.float32)
    starts = (np.arange(columns) * len(values)) // columns
    if len(values) >= columns:
        return np.maximum.reduceat(values, starts, axis=0)
    return values[np.minimum(starts, len(values) - 1)]


def trace_intensity(y_low: np.ndarray, y_high: np.ndarray, size: int, width: float) -> np.ndarray:
    """(size, size) 0..1 glow of a trace covering rows y_low..y_high in each column.

    Distance outside the covered span falls off as a Gaussian of `width` pixels, so lines read
    as smooth light rather than aliased steps.
    """
    rows = np.arange(size, dtype=np.float32)[:, None]
    distance = np.maximum(np.maximum(y_low[None, :] - rows, rows - y_high[None, :]), 0.0)
    return np.exp(-np.square(distance / width))


def connect_columns(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column span reaching the previous column's value, so steep traces have no gaps."""
    previous = np.concatenate((y[:1], y[:-1]))
    return np.minimum(y, previous), np.maximum(y, previous)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8))
