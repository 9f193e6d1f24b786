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

# float32 like the pictures: a float64 colour would promote every full-size product to float64
LOW_RGB = np.array([1.00, 0.35, 0.15], dtype=np.float32)  # warm for bass
MID_RGB = np.array([0.30, 1.00, 0.45], dtype=np.float32)
HIGH_RGB = np.array([0.35, 0.60, 1.00], dtype=np.float32)  # cold for treble
KICK_RGB = np.array([1.00, 0.95, 0.80], dtype=np.float32)


@functools.lru_cache(maxsize=1)
def _colour_table() -> np.ndarray:
    """256-entry RGB lookup of the map, float32."""
    at = np.linspace(0, 1, len(_MAP_ANCHORS))
    x = np.linspace(0, 1, 256)
    table = np.stack([np.interp(x, at, _MAP_ANCHORS[:, c]) for c in range(3)], axis=-1)
    return table.astype(np.float32)


@functools.lru_cache(maxsize=1)
def _colour_table_u8() -> np.ndarray:
    table = to_uint8(_colour_table())
    table.setflags(write=False)
    return table


def colour_map(values: np.ndarray) -> np.ndarray:
    """(H, W) values in 0..1 -> (H, W, 3) float32 RGB in 0..1."""
    return np.take(_colour_table(), to_uint8(values), axis=0)  # take: 4x a fancy index's speed


def colour_map_u8(values: np.ndarray) -> np.ndarray:
    """`to_uint8(colour_map(values))`, looked up in a uint8 table: one gather, no float picture."""
    return np.take(_colour_table_u8(), to_uint8(values), axis=0)


@functools.lru_cache(maxsize=32)
def _resample_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation at pixel centres (edges clamp): for each output, the input below
    and above it and the weight of the one above."""
    position = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    below = np.floor(position).astype(np.intp)
    above = np.minimum(below + 1, n_in - 1)
    frac = (position - below).astype(np.float32)
    for array in (below, above, frac):
        array.setflags(write=False)
    return below, above, frac


def _resize_axis(image: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    below, above, frac = _resample_taps(image.shape[axis], n_out)
    low = np.take(image, below, axis=axis)
    high = np.take(image, above, axis=axis)
    high -= low
    high *= frac[:, None] if axis == 0 else frac[None, :]
    high += low
    return high


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Linear resize of an (H, W) image (no imaging dependency): two taps per output along each
    axis, gathered, the short side first."""
    image = np.asarray(image, dtype=np.float32)
    if height * image.shape[1] <= width * image.shape[0]:
        return _resize_axis(_resize_axis(image, height, 0), width, 1)
    return _resize_axis(_resize_axis(image, width, 1), height, 0)


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


def trace_intensity(y_low: np.ndarray, y_high: np.ndarray, size: int, width: float,
                    rows: np.ndarray | None = None) -> np.ndarray:
    """(size, size) 0..1 glow of a trace covering rows y_low..y_high in each column (`rows`:
    only those rows, (R, 1) float32, for an (R, size) strip).

    Distance outside the covered span falls off as a Gaussian of `width` pixels, so lines read
    as smooth light rather than aliased steps.
    """
    if rows is None:
        rows = np.arange(size, dtype=np.float32)[:, None]
    distance = np.subtract(y_low[None, :], rows, dtype=np.float32)
    np.maximum(distance, rows - y_high[None, :], out=distance)
    np.maximum(distance, 0.0, out=distance)
    return gaussian_falloff(distance, width)


def gaussian_falloff(distance: np.ndarray, width: float) -> np.ndarray:
    """exp(-(distance / width)^2), computed in place in `distance` (a float32 scratch array)."""
    distance *= np.float32(1.0 / width)
    np.square(distance, out=distance)
    np.negative(distance, out=distance)
    return np.exp(distance, out=distance)


def connect_columns(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column span reaching the previous column's value, so steep traces have no gaps."""
    previous = np.concatenate((y[:1], y[:-1]))
    return np.minimum(y, previous), np.maximum(y, previous)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """0..1 floats -> uint8 levels, rounded, contiguous (one float32 scratch array)."""
    scaled = np.multiply(rgb, 255.0, dtype=np.float32)
    scaled += 0.5
    np.clip(scaled, 0, 255, out=scaled)
    return np.ascontiguousarray(scaled.astype(np.uint8))
