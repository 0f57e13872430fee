"""The Image record every reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Keys every reader fills in `Image.meta` (value None when the source does not say).
META_KEYS = (
    "patient_id",   # raw patient identifier from the source (PHI: pseudonymised by the manifest)
    "study_id",
    "series_id",
    "view",         # e.g. "PA", "AP", "LATERAL"; None when unknown
    "modality",     # DICOM-style code: "CR", "DX", "CT", "MR", ... or None
    "spacing",      # tuple of floats in mm, one per pixel axis (row, col) or (slice, row, col); None when unknown
    "photometric",  # "MONOCHROME1" / "MONOCHROME2" / "RGB" ... as stored in the source
    "source_format",  # "dicom" | "nifti" | "png" | "jpeg"
    "units",        # "unit" (scaled to [0, 1]) or modality units: "HU", "raw"
)


@dataclass
class Image:
    """Pixels and metadata of one image or volume.

    pixels: float32, (H, W) for 2D or (D, H, W) for volumes; higher value = denser tissue;
    in [0, 1] unless read with window="none" (then modality units, e.g. HU for CT).
    """

    pixels: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.pixels.shape)
