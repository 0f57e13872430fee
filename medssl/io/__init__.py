"""Readers: DICOM, NIfTI and PNG/JPEG files -> `Image` (float32 pixels, bright = dense, + meta).

    from medssl.io import read_image, read_header
    img = read_image("chest.dcm")                       # (H, W) in [0, 1], the file's VOI window
    hu = read_image("ct.dcm", window="none").pixels     # Hounsfield units
    lung = read_image("ct.nii.gz", window="lung", slice_axis="axial", slice_index="middle")

Every failure is a ReaderError (ImageTooLargeError for declared sizes over the limit) naming the
file and the fix. Formats are recognised by content (DICM preamble, PNG/JPEG/NIfTI magic), then
by suffix. Module map: dicom.py, nifti.py, raster.py, window.py (windows, presets, scaling),
limits.py (size limits), image.py (the Image record).
"""

from __future__ import annotations

from pathlib import Path

from medssl.errors import MedsslError, ReaderError
from medssl.io.image import META_KEYS, Image
from medssl.io.limits import DEFAULT_MAX_PIXELS, ENV_MAX_PIXELS, check_declared_size, resolve_max_pixels
from medssl.io.window import PRESETS, apply_window, parse_window

__all__ = [
    "Image", "META_KEYS", "PRESETS", "DEFAULT_MAX_PIXELS", "ENV_MAX_PIXELS", "read_image", "read_header",
    "detect_format", "parse_window", "apply_window", "resolve_max_pixels", "check_declared_size", "SUFFIXES",
]

#: Suffixes the readers claim (files without a suffix are sniffed for the DICM preamble).
SUFFIXES = (".dcm", ".dicom", ".nii", ".nii.gz", ".png", ".jpg", ".jpeg")


def detect_format(path) -> str:
    """"dicom", "nifti" or "raster" from the first bytes, else from the suffix; ReaderError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ReaderError(path, "no such file" + (" (it is a directory)" if path.is_dir() else "") +
                                "; check the path (relative paths resolve against the manifest folder)")
    try:
        with open(path, "rb") as f:
            head = f.read(352)
    except OSError as e:
        raise ReaderError(path, f"cannot open: {e.strerror or e}; check permissions") from None
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff"):
        return "raster"
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00",):
        return "nifti"
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".png", ".jpg", ".jpeg")):
        return "raster"
    if name.endswith((".dcm", ".dicom")) or not path.suffix:
        return "dicom"
    raise ReaderError(path, f"unrecognised file type {path.suffix!r}; medssl reads DICOM (.dcm/.dicom or "
                            "no suffix), NIfTI (.nii/.nii.gz), PNG and JPEG")


def read_image(path, *, frame: int | None = None, window="voi", slice_axis=None, slice_index=None,
               max_pixels: int | None = None) -> Image:
    """Read one image or volume.

    Returns Image with float32 pixels (H, W), or (D, H, W) for volumes / multi-frame files
    (frame=None); higher = denser; in [0, 1] unless window="none" (modality units: HU for CT
    DICOM after Rescale Slope/Intercept, stored values otherwise). window: "voi" (the file's
    VOI LUT / window, NIfTI cal_min/cal_max, PNG bit depth; else the image's full range),
    "none", (center, width), "center,width" or a preset in HU (see PRESETS).
    frame: DICOM frame index or 4D-NIfTI volume index. slice_axis (0/1/2, "axial"/"coronal"/
    "sagittal") + slice_index (int, "middle", "all") cut a 2D slice out of a volume (axes: see
    medssl.io.nifti). max_pixels: size limit (default $MEDSSL_MAX_PIXELS, else 2**28) checked on
    the declared size before decoding. meta holds every key of META_KEYS (None when unknown).
    """
    kind = detect_format(path)
    if kind == "dicom":
        from medssl.io.dicom import read_dicom
        from medssl.io.nifti import select_slice

        img = read_dicom(path, frame=frame, window=window, max_pixels=max_pixels)
        if img.pixels.ndim == 3 and (slice_axis is not None or slice_index is not None):
            pixels, spacing = select_slice(path, img.pixels, img.meta.get("spacing"), slice_axis, slice_index)
            img = Image(pixels, {**img.meta, "spacing": spacing})
        return img
    if kind == "nifti":
        from medssl.io.nifti import read_nifti

        return read_nifti(path, frame=frame, window=window, slice_axis=slice_axis, slice_index=slice_index,
                          max_pixels=max_pixels)
    from medssl.io.raster import read_raster

    if frame not in (None, 0):
        raise ReaderError(path, f"frame {frame} requested but PNG/JPEG files hold one frame")
    return read_raster(path, window=window, max_pixels=max_pixels)


def read_header(path) -> dict:
    """META_KEYS plus `shape` (None when unknown) without decoding pixels. Raises ReaderError."""
    kind = detect_format(path)
    if kind == "dicom":
        from medssl.io.dicom import read_dicom_header as reader
    elif kind == "nifti":
        from medssl.io.nifti import read_nifti_header as reader
    else:
        from medssl.io.raster import read_raster_header as reader
    try:
        return reader(path)
    except (MedsslError, MemoryError):
        raise
    except Exception as e:  # a reader's own guard missed it: still a ReaderError naming the file
        raise ReaderError(path, f"cannot read header ({type(e).__name__}: {e})") from None
