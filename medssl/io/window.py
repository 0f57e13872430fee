"""Intensity windows, CT presets and scaling to [0, 1], shared by every reader.

LINEAR / LINEAR_EXACT windows (DICOM PS3.3 C.11.2.1.2 / C.11.2.1.3.2) and range scaling are
one affine map clipped to [0, 1], computed in float32 in place (`to_unit`); a linear Modality
LUT (slope/intercept) and a MONOCHROME1 inversion fold into the same map, so a decoded
uint16 image becomes [0, 1] float32 in three passes. SIGMOID windows go through pydicom's
`apply_windowing` (rare). Results equal pydicom's float64 ones within float32 rounding.
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np

from medssl.errors import ConfigError

#: Named CT windows as (center, width) in Hounsfield units.
PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft-tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}

#: What `parse_window` returns: "voi", "none", or an explicit (center, width).
Window = Union[str, tuple[float, float]]

_HELP = ('use "voi" (the file\'s own window, else its full range), "none" (modality units), '
         '"center,width" (e.g. "-600,1500") or a preset: ' + ", ".join(PRESETS))


def parse_window(window) -> Window:
    """Normalise a window argument to "voi", "none" or a (center, width) tuple of floats.

    Accepts "voi", "none", a preset name (see PRESETS; "_" or "-" alike), "center,width",
    or a 2-sequence of numbers. Width must be > 0. Raises ConfigError otherwise.
    """
    if window is None:
        return "voi"
    if isinstance(window, str):
        text = window.strip().lower()
        if text in ("voi", "none"):
            return text
        preset = PRESETS.get(text.replace("_", "-").replace(" ", "-"))
        if preset is not None:
            return preset
        parts = text.split(",")
        if len(parts) != 2:
            raise ConfigError(f"window {window!r} not understood; {_HELP}")
        window = parts
    try:
        center, width = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ConfigError(f"window {window!r} not understood; {_HELP}") from None
    if not (np.isfinite(center) and np.isfinite(width) and width > 0):
        raise ConfigError(f"window center={center}, width={width}: both must be finite and width > 0")
    return (center, width)


#: max(|low|, |high|) / (high - low) up to which float32 keeps `to_unit` within ~2e-6 of float64 (see there).
_F32_MAX_OFFSET = 16.0
_F32_DTYPES = frozenset(np.dtype(t) for t in ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32",
                                               "float32"))


def linear_window_range(center: float, width: float, function: str = "LINEAR_EXACT") -> tuple[float, float]:
    """(low, high) modality values that a LINEAR / LINEAR_EXACT window maps to 0 and 1.

    Values <= low give 0 and > high give 1; LINEAR (DICOM's default for stored windows) uses
    center - 0.5 and width - 1, so a LINEAR window of width 1 has low == high (a step).
    Raises ValueError for a width the function does not allow (as pydicom does).
    """
    center, width = float(center), float(width)
    if function == "LINEAR":
        if width < 1:
            raise ValueError("a LINEAR window needs Window Width >= 1")
        center, width = center - 0.5, width - 1.0
    elif width <= 0:
        raise ValueError(f"a {function} window needs Window Width > 0")
    return center - width / 2, center + width / 2


def to_unit(values: np.ndarray, low: float, high: float, *, invert: bool = False) -> np.ndarray:
    """float32 clip((values - low) / (high - low), 0, 1), or clip((high - values) / (high - low)) when invert.

    values: any real array in the units of low/high (e.g. stored uint16 pixels). high <= low
    (or a span too small to divide by) is a step: 1 where values > low. One subtract, divide
    and clip, in place in float32 when the input type allows it and max(|low|, |high|) / span
    is small (error below (that ratio + 2) * 2**-23 on [0, 1]), else in float64; the ends low
    and high map to exactly 0 and 1 when they are representable (e.g. integer min/max).
    """
    values = np.asarray(values)
    low, high = float(low), float(high)
    span = high - low
    scaled_low = max(abs(low), abs(high)) / span if span > 0 else math.inf
    if not (span > 0 and math.isfinite(scaled_low)):
        return (np.greater(values, low) != invert).astype(np.float32)
    f32 = values.dtype in _F32_DTYPES and scaled_low <= _F32_MAX_OFFSET and np.isfinite(np.float32(span)) \
        and np.float32(span) > 0
    dtype = np.float32 if f32 else np.float64
    if invert:
        out = np.subtract(dtype(high), values, dtype=dtype)
    else:
        out = np.subtract(values, dtype(low), dtype=dtype)
    np.divide(out, dtype(span), out=out)
    np.clip(out, 0.0, 1.0, out=out)
    return out.astype(np.float32, copy=False)


def _stored_window(low: float, high: float, slope: float, intercept: float, invert: bool):
    """A window [low, high] on values * slope + intercept as (low, high, invert) on the values themselves."""
    a, b = (low - intercept) / slope, (high - intercept) / slope
    return (a, b, invert) if slope > 0 else (b, a, not invert)


def apply_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR_EXACT", *,
                 slope: float = 1.0, intercept: float = 0.0, invert: bool = False) -> np.ndarray:
    """Map modality units (values * slope + intercept) to [0, 1] with a DICOM VOI window; float32 out.

    function: "LINEAR_EXACT" (default: [center - width/2, center + width/2] -> [0, 1]),
    "LINEAR" (DICOM's default for stored windows, half-pixel offset) or "SIGMOID"
    (pydicom's `apply_windowing`). invert: return 1 - window (MONOCHROME1).
    Raises ValueError for a width the function does not allow.
    """
    if not (np.isfinite(center) and np.isfinite(width)):
        raise ValueError(f"window center {center} and width {width} must be finite")
    if function in ("LINEAR", "LINEAR_EXACT"):
        if slope == 0:  # a constant image: intercept is all there is
            values, slope, intercept = np.full(np.shape(values), float(intercept)), 1.0, 0.0
        low, high, flip = _stored_window(*linear_window_range(center, width, function), float(slope),
                                         float(intercept), invert)
        return to_unit(values, low, high, invert=flip)
    out = _pydicom_window(np.asarray(values, dtype=np.float64) * float(slope) + float(intercept),
                          center, width, function)
    return 1.0 - out if invert else out


def _pydicom_window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """pydicom's `apply_windowing` (float64) for the functions to_unit does not cover (SIGMOID)."""
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_windowing

    # A one-bit unsigned output range makes pydicom's y_min..y_max exactly 0..1.
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelRepresentation = 0
    ds.BitsStored = 1
    ds.WindowCenter = float(center)
    ds.WindowWidth = float(width)
    ds.VOILUTFunction = function
    out = apply_windowing(np.asarray(values, dtype=np.float64), ds)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def scale_range(values: np.ndarray, low: float, high: float, *, invert: bool = False) -> np.ndarray:
    """Linear map [low, high] -> [0, 1], clipped; float32. A degenerate range gives zeros (ones when invert)."""
    values = np.asarray(values)
    span = float(high) - float(low)
    if not np.isfinite(span) or span <= 0:
        return np.full(values.shape, float(invert), dtype=np.float32)
    return to_unit(values, low, high, invert=invert)


def scale_full_range(values: np.ndarray, *, slope: float = 1.0, invert: bool = False) -> np.ndarray:
    """Map the array's own min..max to [0, 1]; float32 (zeros for a constant image, ones when invert).

    slope: of a Modality LUT still to apply (only its sign matters: < 0 flips the image,
    0 makes it constant); min/max are taken on the values themselves, so the ends are exact.
    """
    values = np.asarray(values)
    if values.size == 0:
        return values.astype(np.float32)
    if slope == 0:
        return np.full(values.shape, float(invert), dtype=np.float32)
    return scale_range(values, values.min(), values.max(), invert=invert != (slope < 0))


def to_grayscale(rgb: np.ndarray) -> np.ndarray:
    """(..., 3[+alpha]) colour samples -> (...) float64 gray, in the input's units.

    When the first three channels are identical (grayscale stored as RGB, e.g. many JPEG
    exports) channel 0 is returned exactly; otherwise ITU-R BT.601 luma 0.299 R + 0.587 G + 0.114 B.
    """
    rgb = np.asarray(rgb)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if np.array_equal(r, g) and np.array_equal(r, b):
        return r.astype(np.float64)
    return 0.299 * r.astype(np.float64) + 0.587 * g.astype(np.float64) + 0.114 * b.astype(np.float64)
