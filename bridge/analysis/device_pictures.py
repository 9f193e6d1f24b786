"""Conditioning pictures drawn by torch on the runner's device, inside the compiled (and on CUDA,
graph captured) call: the host sends what a picture is drawn from instead of the float picture.

Every audio picture has one (`audio_drawer`, `audio_params`), each the numpy drawer of
bridge.analysis.pictures in torch: `BandsDrawer` (`draw_bands`: the same rings, spokes, burst and
kick flash from the same five numbers), `ColourMapDrawer` (`draw_mel` / `draw_spectrogram`: the dB
array and its ceiling in, the same scaling, linear resize and colour map), `WaveformDrawer`
(`draw_waveform`: the samples, their gain and the background's row brightness, a vector the
host reads off the newest spectrum), `HistoryDrawer` and
`BandsHistoryDrawer` (`draw_history`, `draw_bands_history`: the rows of feature history). All
quantise to the same uint8 levels and scale to [-1, 1] like `image_to_tensor`, so a model sees the
kind of picture it was trained on (held to the numpy drawers by tests/test_device_pictures.py).
What they are drawn from keeps its shape from frame to frame (the analyzer's rings), so the call
compiles once.
`FrameDrawer` takes camera frames as the host fitted them to the model's size, still uint8
(a quarter of the float picture's bytes to copy), and scales them to [-1, 1] there.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bridge.analysis.drawing import HIGH_RGB, KICK_RGB, LOW_RGB, MID_RGB, _colour_table, _colour_table_u8
from bridge.analysis.pictures import (BANDS_BACKGROUND_RGB, DB_RANGE, _polar_grid, mel_source, render_data,
                                     waveform_rows)
from bridge.generators.base import frames_to_input, square_to_frames

BANDS_PARAMS = ("low", "mid", "high", "onset", "kick")  # the columns of `bands_params`


def bands_params(features) -> torch.Tensor:
    """(1, 5) float32: what `draw_bands` reads from an AudioFeatures, in BANDS_PARAMS order."""
    low, mid, high = features.bands
    onset = features._render.onset_norm if features._render else 0.0
    return torch.tensor([[low, mid, high, onset, features.kick]], dtype=torch.float32)


class BandsDrawer(nn.Module):
    """(N, 5) bands parameters -> (N, 3, size, size) float32 in [-1, 1] on uint8 levels."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = int(size)
        radius, spokes, falloff = _polar_grid(self.size)
        self.register_buffer("radius", torch.from_numpy(radius.copy()), persistent=False)
        self.register_buffer("spokes", torch.from_numpy(spokes.copy()), persistent=False)
        self.register_buffer("falloff", torch.from_numpy(falloff.copy()), persistent=False)
        colours = np.stack([LOW_RGB, MID_RGB, HIGH_RGB, np.ones(3, dtype=np.float32)])  # (4, 3)
        self.register_buffer("colours", torch.from_numpy(colours), persistent=False)
        self.register_buffer("kick_rgb", torch.from_numpy(KICK_RGB.copy()), persistent=False)
        self.register_buffer("background", torch.from_numpy(BANDS_BACKGROUND_RGB.copy()), persistent=False)

    def _ramp(self, edge: torch.Tensor, slope: float) -> torch.Tensor:
        return ((edge - self.radius) * slope).clamp(0.0, 1.0)

    def _ring(self, at: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
        return torch.exp(-torch.square((self.radius - at) * (1.0 / width)))

    def forward(self, params: torch.Tensor) -> torch.Tensor:
        # Full precision whatever the network runs in: a picture's levels must not move with it.
        with torch.autocast(params.device.type, enabled=False):
            p = params.float()[:, :, None, None]  # (N, 5, 1, 1): broadcasts over the pixels
            low, mid, high, onset, kick = p.unbind(1)  # each (N, 1, 1)
            fields = torch.stack([
                self._ramp(0.12 + 0.8 * low, 12.0) * (0.35 + 0.65 * low) * self.falloff,
                self._ring(0.2 + 0.85 * mid, 0.03 + 0.08 * mid) * (0.2 + 0.8 * mid),
                self._ramp(0.15 + 1.1 * high, 6.0) * self.spokes * high,
                (self._ramp(0.1 + 0.6 * onset, 8.0) + self._ring(0.2 + 0.9 * onset, 0.05 + 0.15 * onset))
                * onset,
            ], dim=1)  # (N, 4, H, W)
            picture = torch.einsum("nfhw,fc->nchw", fields, self.colours)
            flash = self.background + (kick * kick * 0.35).reshape(-1, 1) * self.kick_rgb  # (N, 3)
            picture = picture + flash[:, :, None, None]
            return _levels_to_input(_to_levels(picture))


def _to_levels(unit: torch.Tensor) -> torch.Tensor:
    """0..1 -> the uint8 levels `to_uint8` gives (rounded, clipped), as floats."""
    return torch.floor((unit * 255.0 + 0.5).clamp(0.0, 255.0))


def _levels_to_input(levels: torch.Tensor) -> torch.Tensor:
    """uint8 levels (as floats) -> the network's [-1, 1], as `image_to_tensor` scales them."""
    return levels * (1.0 / 127.5) - 1.0


def colour_map_params(features, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """What `draw_mel` / `draw_spectrogram` read: ((1, 1) ceiling dB, (1, A, B) dB array as the
    analysis holds it: mel (mels, frames), spectrogram (frames, bins))."""
    if name == "mel":
        db, ceiling = mel_source(features)
    else:
        render = render_data(features)
        db, ceiling = np.asarray(render.spectrogram_db, dtype=np.float32), render.spectrogram_ceiling_db
    return torch.tensor([[ceiling]], dtype=torch.float32), torch.from_numpy(db.copy())[None]


class ColourMapDrawer(nn.Module):
    """((N, 1) ceiling, (N, A, B) dB) -> (N, 3, size, size) in [-1, 1] on uint8 levels: the dB
    range below the ceiling made 0..1, high frequencies at the top (`transpose`: the array is
    (time, frequency), as the spectrogram's), linear resize at pixel centres, the dark-to-hot map."""

    def __init__(self, size: int, transpose: bool, range_db: float = DB_RANGE) -> None:
        super().__init__()
        self.size, self.transpose, self.range_db = int(size), bool(transpose), float(range_db)
        table = torch.from_numpy(_colour_table_u8().astype(np.float32))  # (256, 3) levels
        self.register_buffer("table", table, persistent=False)

    def forward(self, ceiling: torch.Tensor, db: torch.Tensor) -> torch.Tensor:
        with torch.autocast(db.device.type, enabled=False):
            db = db.float()
            if self.transpose:
                db = db.transpose(1, 2)
            db = db.flip(1)  # row 0 = the highest frequency
            floor = ceiling.float().reshape(-1, 1, 1) - self.range_db
            unit = ((db - floor) * (1.0 / self.range_db)).clamp(0.0, 1.0)
            unit = F.interpolate(unit[:, None], size=(self.size, self.size), mode="bilinear",
                                 align_corners=False)[:, 0]
            rgb = self.table[_to_levels(unit).long()]  # (N, size, size, 3)
            return _levels_to_input(rgb.permute(0, 3, 1, 2).contiguous())


def _column_spans(n: int, columns: int, device=None) -> torch.Tensor:
    """(columns, L) indices into n values: each column's span as `column_extremes` /
    `column_max` cut them (equal spans; when stretching, the one value a column repeats), padded
    by repeating the span's last index, so a min or max over L is the span's exactly. Torch
    integer ops only (a compiled call folds them into constants)."""
    starts = torch.arange(columns, device=device) * n // columns
    ends = torch.cat((starts[1:], torch.tensor([n], device=device)))
    last = torch.maximum(ends, starts + 1).clamp(max=n) - 1
    longest = -(-n // columns)  # spans are n // columns or one more long; one when stretching
    return torch.minimum(starts[:, None] + torch.arange(longest, device=device)[None, :], last[:, None])


def _column_reduce(values: torch.Tensor, columns: int, reduce: str) -> torch.Tensor:
    """(N, n, ...) -> (N, columns, ...): max or min over each column's span (see _column_spans)."""
    spans = _column_spans(values.shape[1], columns, values.device)
    gathered = values[:, spans]  # (N, columns, L, ...)
    return gathered.amax(dim=2) if reduce == "max" else gathered.amin(dim=2)


def _connect(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`connect_columns` along the last axis: each column's span reaches the previous column."""
    previous = torch.cat((y[..., :1], y[..., :-1]), dim=-1)
    return torch.minimum(y, previous), torch.maximum(y, previous)


def _glow(y_low: torch.Tensor, y_high: torch.Tensor, rows: torch.Tensor, width: float) -> torch.Tensor:
    """`trace_intensity`: 1 on rows y_low..y_high of each column, a Gaussian of `width` pixels
    outside. y_* broadcast against `rows` (..., R, 1)."""
    distance = torch.maximum(torch.maximum(y_low - rows, rows - y_high), torch.zeros((), device=rows.device))
    return torch.exp(-torch.square(distance * (1.0 / width)))


def _rows(size: int) -> torch.Tensor:
    return torch.arange(size, dtype=torch.float32)[:, None]


class WaveformDrawer(nn.Module):
    """`draw_waveform`: ((N, S) samples, (N, 1) their gain, (N, size) the background's row
    brightness as `waveform_rows` gives it) -> (N, 3, size, size)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = int(size)
        self.register_buffer("table", torch.from_numpy(_colour_table().copy()), persistent=False)
        self.register_buffer("rows", _rows(self.size), persistent=False)
        self.register_buffer("line_rgb", torch.tensor([0.85, 1.0, 1.0]), persistent=False)

    def forward(self, samples: torch.Tensor, gain: torch.Tensor, row_unit: torch.Tensor) -> torch.Tensor:
        size = self.size
        with torch.autocast(samples.device.type, enabled=False):
            background = self.table[_to_levels(row_unit.float()).long()] * 0.55  # (N, size, 3): a colour a row
            values = torch.tanh(samples.float() * gain.float())
            low = _column_reduce(values, size, "min")
            high = _column_reduce(values, size, "max")
            centre, half = (size - 1) / 2.0, size * 0.45
            # screen y grows downwards: a positive sample is drawn above the centre
            span_low, _ = _connect(centre - high * half)
            _, span_high = _connect(centre - low * half)
            glow = _glow(span_low[:, None, :], span_high[:, None, :], self.rows, max(1.0, size / 160.0))
            # background * (1 - glow) + line * glow, as the numpy drawer's [glow, 1] @ [line - bg; bg]
            picture = glow[..., None] * (self.line_rgb - background)[:, :, None, :] + background[:, :, None, :]
            return _levels_to_input(_to_levels(picture).permute(0, 3, 1, 2).contiguous())


def _band_colour(columns: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """`pictures._band_colour` of (N, C, 6) history columns -> (N, C, 3)."""
    weights = columns[..., 1:4] + 1e-6
    weights = weights / (weights[..., 0:1] + weights[..., 1:2] + weights[..., 2:3])
    return weights[..., 0:1] * palette[0] + weights[..., 1:2] * palette[1] + weights[..., 2:3] * palette[2]


class HistoryDrawer(nn.Module):
    """`draw_history`: (N, F, 6) feature history rows, oldest first -> (N, 3, size, size)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = int(size)
        self.register_buffer("rows", _rows(self.size), persistent=False)
        self.register_buffer("palette", torch.from_numpy(np.stack([LOW_RGB, MID_RGB, HIGH_RGB])), persistent=False)
        self.register_buffer("kick_rgb", torch.from_numpy(KICK_RGB * np.float32(0.8)), persistent=False)
        self.register_buffer("onset_rgb", torch.tensor([0.72, 0.72, 0.8]), persistent=False)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        size = self.size
        with torch.autocast(history.device.type, enabled=False):
            columns = _column_reduce(history.float(), size, "max")  # (N, size, 6): the loudest frame
            level, kick, onset = columns[..., 0], columns[..., 4], columns[..., 5]
            half_height = 1.0 + level * (size * 0.46)
            distance = (self.rows - (size - 1) / 2.0).abs() / half_height[:, None, :]  # (N, rows, cols)
            inside = ((1.0 - distance) * 3.0).clamp(0.0, 1.0)
            shade = inside * (0.45 + 0.55 * (1.0 - distance).clamp(0.0, 1.0))
            picture = shade[..., None] * _band_colour(columns, self.palette)[:, None, :, :]  # (N, H, W, 3)
            strip = max(2, size // 32)
            bottom = torch.zeros(size, 1, 1, device=history.device)
            bottom[-strip:] = 1.0
            top = torch.zeros(size, 1, 1, device=history.device)
            top[:strip] = 1.0
            picture = picture + bottom * (kick[:, None, :, None] * self.kick_rgb)
            picture = picture + top * (onset[:, None, :, None] * self.onset_rgb)
            return _levels_to_input(_to_levels(picture).permute(0, 3, 1, 2).contiguous())


BANDS_HISTORY_LANES = ((3, HIGH_RGB), (2, MID_RGB), (1, LOW_RGB), (4, KICK_RGB))  # top to bottom: history column, colour


class BandsHistoryDrawer(nn.Module):
    """`draw_bands_history`: (N, F, 6) the newest history rows it shows -> (N, 3, size, size).
    Each picture row belongs to one lane; all lanes are drawn in one pass over the rows."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = int(size)
        lane_height = self.size / len(BANDS_HISTORY_LANES)
        lane = np.empty(self.size, dtype=np.int64)
        bottom = np.empty(self.size, dtype=np.float32)
        for index in range(len(BANDS_HISTORY_LANES)):
            low_edge = (index + 1) * lane_height - 1.0
            first = max(0, int(np.floor(low_edge - lane_height)) + 1)
            last = min(self.size - 1, int(np.floor(low_edge)))
            lane[first:last + 1], bottom[first:last + 1] = index, low_edge
        self.lane_height = lane_height
        self.register_buffer("lane", torch.from_numpy(lane), persistent=False)
        self.register_buffer("bottom", torch.from_numpy(bottom)[:, None], persistent=False)
        self.register_buffer("rows", _rows(self.size), persistent=False)
        self.register_buffer("columns_used", torch.tensor([c for c, _ in BANDS_HISTORY_LANES]), persistent=False)
        colours = np.stack([rgb for _, rgb in BANDS_HISTORY_LANES])
        self.register_buffer("row_rgb", torch.from_numpy(colours)[lane], persistent=False)  # (size, 3)
        self.register_buffer("background", torch.tensor([0.02, 0.02, 0.04]), persistent=False)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        size = self.size
        with torch.autocast(history.device.type, enabled=False):
            columns = _column_reduce(history.float(), size, "max")  # (N, size, 6)
            values = columns[..., self.columns_used].transpose(1, 2)  # (N, lanes, size)
            y = self.bottom[None] - values[:, self.lane] * (self.lane_height * 0.9)  # (N, rows, cols)
            span_low, span_high = _connect(y)
            line = _glow(span_low, span_high, self.rows, max(1.0, size / 200.0))
            line = line * (0.25 + 0.75 * values[:, self.lane])  # a silent lane: a dim baseline
            line = torch.maximum(line, (self.rows >= y).float() * 0.35)  # the filled area below
            picture = self.background + line[..., None] * self.row_rgb[:, None, :]
            return _levels_to_input(_to_levels(picture).permute(0, 3, 1, 2).contiguous())


def audio_params(features, name: str, size: int) -> tuple[torch.Tensor, ...]:
    """What the device drawer of audio picture `name` at `size` draws it from, batch of one, as
    tensors; their shapes depend only on the analysis settings and the size."""
    if name == "bands":
        return (bands_params(features),)
    if name in ("mel", "spectrogram"):
        return colour_map_params(features, name)
    render = render_data(features)
    if name == "waveform":
        return (torch.from_numpy(np.asarray(render.samples, dtype=np.float32).copy())[None],
                torch.tensor([[render.waveform_gain]], dtype=torch.float32),
                torch.from_numpy(waveform_rows(render, size))[None])
    if name == "history":
        return (torch.from_numpy(np.asarray(render.history, dtype=np.float32).copy())[None],)
    if name == "bands_history":
        recent = render.history[-render.bands_history_frames:]
        return (torch.from_numpy(np.asarray(recent, dtype=np.float32).copy())[None],)
    raise ValueError(f"no device drawer for {name!r}")


def audio_drawer(name: str, size: int) -> nn.Module:
    """The device drawer of audio picture `name` at `size`."""
    if name == "bands":
        return BandsDrawer(size)
    if name in ("mel", "spectrogram"):
        return ColourMapDrawer(size, transpose=name == "spectrogram")
    if name == "waveform":
        return WaveformDrawer(size)
    if name == "history":
        return HistoryDrawer(size)
    if name == "bands_history":
        return BandsHistoryDrawer(size)
    raise ValueError(f"no device drawer for {name!r}")


GREY_LEVEL = 128  # a missing camera frame: mid-grey (the host's zeros are level 127.5)


def frame_params(square: np.ndarray | None, size: int) -> torch.Tensor:
    """(1, size, size, 3) uint8: a camera frame already fitted to the model's square (RGB), or,
    with none, mid-grey, so the call's inputs keep one shape and type whether a camera is there
    or not (a compiled call would otherwise compile again when the first frame arrives)."""
    if square is None:
        return torch.full((1, size, size, 3), GREY_LEVEL, dtype=torch.uint8)
    return square_to_frames(square)


class FrameDrawer(nn.Module):
    """Camera frames as `frame_params` gives them, (N, H, W, 3) uint8, -> (N, 3, H, W) in
    [-1, 1], scaled as `image_to_tensor` does. Takes the condition's tensors as arguments and
    returns them in the same arrangement (one, or a tuple: the VAE-associator's (frame, mel)):
    only uint8 frames are converted; float tensors (a picture the host made, a mel) pass as
    they are."""

    def forward(self, *tensors: torch.Tensor):
        out = tuple(frames_to_input(t) if t.dtype == torch.uint8 else t for t in tensors)
        return out[0] if len(out) == 1 else out
