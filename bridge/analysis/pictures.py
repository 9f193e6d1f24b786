"""The six audio pictures (REPRESENTATIONS), drawn from an AudioFeatures on request.

All are deterministic functions of the snapshot: uint8 RGB (size, size, 3). Frequency runs
upwards, time runs to the right with the newest at the right edge.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from bridge.analysis.drawing import (
    HIGH_RGB, KICK_RGB, LOW_RGB, MID_RGB, colour_map, colour_map_u8, column_extremes, column_max,
    connect_columns, gaussian_falloff, resize, to_uint8, trace_intensity,
)

if TYPE_CHECKING:
    from bridge.analysis.features import AudioFeatures, RenderData

DB_RANGE = 80.0  # dB shown below the ceiling when a snapshot carries no render data
BANDS_BACKGROUND_RGB = np.array([0.03, 0.02, 0.06], dtype=np.float32)  # the bands picture's floor


def _db_to_unit(db: np.ndarray, ceiling_db: float, range_db: float = DB_RANGE) -> np.ndarray:
    return np.clip((db - (ceiling_db - range_db)) / range_db, 0.0, 1.0)


def mel_source(features: AudioFeatures) -> tuple[np.ndarray, float]:
    """What the mel picture is drawn from: the (mels, frames) dB array and its ceiling."""
    render = features._render
    ceiling = render.mel_ceiling_db if render else float(features.mel_db.max())
    return np.asarray(features.mel_db, dtype=np.float32), ceiling


def draw_mel(features: AudioFeatures, size: int) -> np.ndarray:
    db, ceiling = mel_source(features)
    unit = _db_to_unit(db[::-1], ceiling)
    return colour_map_u8(resize(unit, size, size))


def draw_spectrogram(render: RenderData, size: int) -> np.ndarray:
    unit = _db_to_unit(render.spectrogram_db.T[::-1], render.spectrogram_ceiling_db)
    return colour_map_u8(resize(unit, size, size))


def waveform_rows(render: RenderData, size: int) -> np.ndarray:
    """(size,) float32 0..1: the waveform background's brightness row by row, the newest spectrum
    on a log-frequency axis (row 0, the top, the highest frequency; bass at the bottom)."""
    spectrum_db = render.spectrogram_db[-4:].mean(axis=0)
    bins = len(spectrum_db)
    rows = np.geomspace(1.0, bins - 1.0, size)[::-1]
    row_db = np.interp(rows, np.arange(bins), spectrum_db)
    return _db_to_unit(row_db, render.spectrogram_ceiling_db).astype(np.float32)


def draw_waveform(render: RenderData, size: int) -> np.ndarray:
    # Background: the spectrum rows dimmed so the line stays the brightest thing.
    background = colour_map(waveform_rows(render, size)[:, None]) * np.float32(0.55)  # (size, 1, 3)

    low, high = column_extremes(np.tanh(render.samples * render.waveform_gain), size)
    centre, half = (size - 1) / 2.0, size * 0.45
    # Screen y grows downwards: a positive sample is drawn above the centre.
    y_top, y_bottom = centre - high * half, centre - low * half
    span_low, _ = connect_columns(y_top)
    _, span_high = connect_columns(y_bottom)
    glow = trace_intensity(span_low, span_high, size, width=max(1.0, size / 160.0))
    line_rgb = np.array([0.85, 1.0, 1.0], dtype=np.float32)
    # background * (1 - glow) + line * glow, row by row as [glow, 1] @ [line - bg; bg]: one
    # batched product writes the (size, size, 3) picture (numpy broadcasts over 3 slowly)
    weights = np.empty((size, size, 2), dtype=np.float32)
    weights[..., 0] = glow
    weights[..., 1] = 1.0
    colours = np.concatenate((line_rgb - background, background), axis=1)  # (size, 2, 3)
    return to_uint8(np.matmul(weights, colours))


def _band_colour(history: np.ndarray) -> np.ndarray:
    """(N, 3) colour per frame: the band mix (low warm, mid green, high cold), full saturation."""
    weights = history[:, 1:4] + np.float32(1e-6)
    weights = weights / weights.sum(axis=1, keepdims=True)
    return weights @ np.stack([LOW_RGB, MID_RGB, HIGH_RGB])


def draw_history(render: RenderData, size: int) -> np.ndarray:
    columns = column_max(render.history, size)  # (size, 6): the loudest frame in each column
    level, kick, onset = columns[:, 0], columns[:, 4], columns[:, 5]
    centre = (size - 1) / 2.0
    half_height = 1.0 + level * (size * 0.46)
    rows = np.arange(size, dtype=np.float32)[:, None]
    distance = np.abs(rows - centre) / half_height[None, :]  # 0 at centre, 1 at the envelope edge
    inside = np.clip((1.0 - distance) * 3.0, 0.0, 1.0)  # soft edge, a few pixels wide
    shade = inside * (0.45 + 0.55 * (1.0 - distance).clip(0, 1))  # brighter towards the centre
    picture = np.einsum("rc,ck->rck", shade, _band_colour(columns))
    # Kicks light the bottom strip, onsets tick the top strip: rhythm visible at a glance.
    strip = max(2, size // 32)
    picture[-strip:] += kick[None, :, None] * (KICK_RGB * np.float32(0.8))
    picture[:strip] += onset[None, :, None] * np.array([0.72, 0.72, 0.8], dtype=np.float32)
    return to_uint8(picture)


@functools.lru_cache(maxsize=4)
def _polar_grid(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance from the centre (0 centre, 1 at the edge midpoints), the 24-spoke mask and the
    bass disk's fall-off (1 - r / 2), for every pixel; the same every frame, so made once per size."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    radius = np.sqrt(axis[None, :] ** 2 + axis[:, None] ** 2)
    angle = np.arctan2(axis[:, None], axis[None, :])
    spokes = np.clip(np.cos(angle * 24.0) * 4.0 - 2.0, 0, 1)
    falloff = 1.0 - 0.5 * radius
    for grid in (radius, spokes, falloff):
        grid.flags.writeable = False
    return radius, spokes, falloff


def _ring(radius: np.ndarray, at: float, width: float) -> np.ndarray:
    """exp(-((r - at) / width)^2), float32, in one scratch array."""
    return gaussian_falloff(np.subtract(radius, np.float32(at), dtype=np.float32), width)


def _ramp(edge: float, radius: np.ndarray, slope: float) -> np.ndarray:
    """clip((edge - r) * slope, 0, 1), float32, in one scratch array."""
    ramp = np.subtract(np.float32(edge), radius, dtype=np.float32)
    ramp *= np.float32(slope)
    return np.clip(ramp, 0, 1, out=ramp)


def draw_bands(features: AudioFeatures, size: int) -> np.ndarray:
    """Rings that follow the bands, a flash on kicks and a burst on onsets.

    Built so the picture changes a lot exactly when the sound does (onsets, kicks) and stays
    still in steady sound: nothing here moves on its own (no rotation, no time).
    """
    low, mid, high = features.bands
    onset = features._render.onset_norm if features._render else 0.0
    kick = features.kick
    radius, spokes, falloff = _polar_grid(size)
    # Each layer is a brightness field times one colour: (size, size, 4) fields @ (4, 3) colours.
    fields = np.empty((size, size, 4), dtype=np.float32)
    colours = np.stack([LOW_RGB, MID_RGB, HIGH_RGB, np.ones(3, dtype=np.float32)])
    # Bass: a disk whose radius and brightness follow the low band, dimmer towards its edge.
    low_disk = _ramp(0.12 + 0.8 * low, radius, 12.0)
    low_disk *= np.float32(0.35 + 0.65 * low)
    fields[..., 0] = low_disk * falloff
    # Mids: a ring whose radius, width and brightness follow the mid band.
    fields[..., 1] = _ring(radius, 0.2 + 0.85 * mid, 0.03 + 0.08 * mid) * np.float32(0.2 + 0.8 * mid)
    # Treble: 24 spokes whose length and brightness follow the high band.
    reach = _ramp(0.15 + 1.1 * high, radius, 6.0)
    reach *= spokes
    reach *= np.float32(high)
    fields[..., 2] = reach
    # Onset burst: a white core and shock ring whose size and brightness follow onset strength.
    burst = _ramp(0.1 + 0.6 * onset, radius, 8.0)
    burst += _ring(radius, 0.2 + 0.9 * onset, 0.05 + 0.15 * onset)
    burst *= np.float32(onset)
    fields[..., 3] = burst
    picture = fields @ colours
    # The whole frame flashes on a kick; squared so the flash fades twice as fast as `kick`
    # and the picture settles between hits.
    picture += BANDS_BACKGROUND_RGB + np.float32(kick * kick * 0.35) * KICK_RGB
    return to_uint8(picture)


def draw_bands_history(render: RenderData, size: int) -> np.ndarray:
    """Four lanes, top to bottom: high, mid, low, kick; each a filled trace scrolling left."""
    recent = render.history[-render.bands_history_frames:]
    columns = column_max(recent, size)
    lanes = [(columns[:, 3], HIGH_RGB), (columns[:, 2], MID_RGB),
             (columns[:, 1], LOW_RGB), (columns[:, 4], KICK_RGB)]
    lane_height = size / len(lanes)
    picture = np.empty((size, size, 3), dtype=np.float32)
    picture[:] = np.array([0.02, 0.02, 0.04], dtype=np.float32)
    for lane, (values, rgb) in enumerate(lanes):
        bottom = (lane + 1) * lane_height - 1.0
        # the lane's rows, bottom - lane_height < row <= bottom: nothing of it falls outside
        first, last = max(0, int(np.floor(bottom - lane_height)) + 1), min(size - 1, int(np.floor(bottom)))
        rows = np.arange(first, last + 1, dtype=np.float32)[:, None]
        y = bottom - values * (lane_height * 0.9)
        span_low, span_high = connect_columns(y)
        line = trace_intensity(span_low, span_high, size, width=max(1.0, size / 200.0), rows=rows)
        line *= 0.25 + 0.75 * values[None, :]  # a silent lane is a dim baseline, not a bright rule
        np.maximum(line, (rows >= y[None, :]) * np.float32(0.35), out=line)  # the filled area below
        picture[first:last + 1] += line[..., None] * rgb
    return to_uint8(picture)


def _fallback_render(features: AudioFeatures) -> RenderData:
    """Render data for snapshots built by hand (tests, warm-up): flat history, silent samples."""
    from bridge.analysis.features import RenderData

    row = np.array([[features.level, *features.bands, features.kick, 0.0]], dtype=np.float32)
    mel_db = np.asarray(features.mel_db, dtype=np.float32)
    return RenderData(
        samples=np.zeros(2, dtype=np.float32),
        spectrogram_db=np.repeat(mel_db.T, 4, axis=1),
        spectrogram_ceiling_db=float(mel_db.max()), mel_ceiling_db=float(mel_db.max()),
        history=np.repeat(row, 8, axis=0), bands_history_frames=8, waveform_gain=1.0, onset_norm=0.0,
    )


def render_data(features: AudioFeatures) -> RenderData:
    """The snapshot's render data, or the flat stand-in for snapshots built by hand."""
    return features._render if features._render is not None else _fallback_render(features)


def draw(name: str, features: AudioFeatures, size: int) -> np.ndarray:
    if name == "mel":
        return draw_mel(features, size)
    if name == "bands":
        return draw_bands(features, size)
    render = render_data(features)
    if name == "spectrogram":
        return draw_spectrogram(render, size)
    if name == "waveform":
        return draw_waveform(render, size)
    if name == "history":
        return draw_history(render, size)
    if name == "bands_history":
        return draw_bands_history(render, size)
    raise ValueError(f"no drawer for {name!r}")
