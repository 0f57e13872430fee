"""Intensity windows, CT presets and scaling to [0, 1], shared by every reader.

Windowing itself is pydicom's `apply_windowing` (DICOM PS3.3 C.11.2: LINEAR, LINEAR_EXACT,
SIGMOID), called with a one-bit output range so that its output is already [0, 1]; the
readers apply it to modality units (HU for CT, stored values otherwise).
"""

from __future__ import annotations

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


def apply_window(values: np.ndarray, center: float, width: float,
                 function: str = "LINEAR_EXACT") -> np.ndarray:
    """Map modality units to [0, 1] with a DICOM VOI window; float32 out, same shape.

    function: "LINEAR_EXACT" (default: [center - width/2, center + width/2] -> [0, 1]),
    "LINEAR" (DICOM's default for stored windows, half-pixel offset) or "SIGMOID".
    Raises ValueError (from pydicom) for a width the function does not allow.
    """
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_windowing

    if not (np.isfinite(center) and np.isfinite(width)):
        raise ValueError(f"window center {center} and width {width} must be finite")
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


def scale_range(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linear map [low, high] -> [0, 1], clipped; float32. A degenerate range gives zeros."""
    values = np.asarray(values, dtype=np.float64)
    span = float(high) - float(low)
    if not np.isfinite(span) or span <= 0:
        return np.zeros(values.shape, dtype=np.float32)
    out = values - float(low)  # one float64 temporary, then in place (large images: 4M+ pixels)
    out *= 1.0 / span
    np.clip(out, 0.0, 1.0, out=out)
    return out.astype(np.float32)


def scale_full_range(values: np.ndarray) -> np.ndarray:
    """Map the array's own min..max to [0, 1]; float32 (all zeros for a constant image)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values.astype(np.float32)
    return scale_range(values, float(values.min()), float(values.max()))


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
