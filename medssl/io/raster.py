"""PNG/JPEG reader (Pillow): 8/16-bit grayscale kept at full depth, RGB-encoded gray made gray once.

CheXpert, MIMIC-CXR-JPG and NIH ship display-ready 8-bit images; some PNG exports are 16-bit.
window="voi" scales by the bit depth (x / 255 or x / 65535), never by the data's own range,
so a dark image stays dark.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medssl.errors import ImageTooLargeError, MedsslError, ReaderError
from medssl.io.image import META_KEYS, Image
from medssl.io.limits import check_declared_size, open_clamped
from medssl.io.window import apply_window, parse_window, scale_range, to_grayscale

SUFFIXES = (".png", ".jpg", ".jpeg")

_BANDS = {"1": 1, "L": 1, "LA": 2, "I": 1, "I;16": 1, "I;16B": 1, "I;16L": 1, "I;16N": 1, "F": 1,
          "P": 1, "PA": 2, "RGB": 3, "RGBA": 4, "RGBX": 4, "CMYK": 4, "YCbCr": 3, "LAB": 3, "HSV": 3}


def _open(path, fp):
    """Lazy-open a PNG/JPEG from `fp` (header parsed, pixels not decoded); the caller closes fp.

    The format's plugin class is used directly, so Pillow's global decompression-bomb limit is
    replaced by medssl's own declared-size limit (configurable, checked by the callers).
    """
    from PIL import Image as PILImage
    from PIL import JpegImagePlugin, PngImagePlugin

    try:
        head = fp.read(8)
        fp.seek(0)
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            return PngImagePlugin.PngImageFile(fp)
        if head.startswith(b"\xff\xd8\xff"):
            return JpegImagePlugin.JpegImageFile(fp)
        return PILImage.open(fp)  # wrong suffix: let Pillow identify it
    except PILImage.DecompressionBombError as e:
        raise ImageTooLargeError(path, f"Pillow refused it as a decompression bomb ({e}); if the image is "
                                       "genuine, raise PIL.Image.MAX_IMAGE_PIXELS") from None
    except Exception as e:
        raise ReaderError(path, f"not a readable PNG/JPEG ({type(e).__name__}: {e}); the file is corrupt or "
                                "has the wrong suffix: re-export it") from None


def _open_file(path):
    """open_clamped (a corrupt PNG chunk length must not allocate gigabytes), as ReaderError."""
    if not Path(path).is_file():
        raise ReaderError(path, "no such file; check the path")
    try:
        return open_clamped(path)
    except OSError as e:
        raise ReaderError(path, f"cannot open: {e.strerror or e}; check permissions") from None


def _format_name(im, path) -> str:
    fmt = (im.format or Path(path).suffix.lstrip(".")).lower()
    return "jpeg" if fmt in ("jpeg", "jpg", "mpo") else fmt


def _photometric(mode: str) -> str:
    if mode in ("P", "PA"):
        return "PALETTE COLOR"
    return "RGB" if _BANDS.get(mode, 1) >= 3 else "MONOCHROME2"


def _stored(path, im) -> tuple[np.ndarray, int]:
    """Decoded (H, W) stored values (float64) and their bit depth."""
    mode = im.mode
    if mode == "1":
        return np.asarray(im, dtype=np.float64), 1
    if mode in ("L", "LA"):
        return np.asarray(im.getchannel(0), dtype=np.float64), 8
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im).astype(np.float64)  # 16-bit PNG: Pillow gives I;16 (or I)
        if mode == "I" and (arr.min() < 0 or arr.max() > 65535):
            raise ReaderError(path, f"32-bit integer image (mode I, range {arr.min():.0f}..{arr.max():.0f}); "
                                    "expected 8- or 16-bit samples: re-export as 16-bit PNG")
        return arr, 16
    if mode == "F":
        raise ReaderError(path, "32-bit float raster image; store it as 16-bit PNG, NIfTI or DICOM")
    rgb = np.asarray(im.convert("RGB"))  # RGB/RGBA/CMYK/YCbCr/P: one conversion to 8-bit RGB
    return to_grayscale(rgb), 8


def read_raster(path, *, window="voi", max_pixels: int | None = None) -> Image:
    """Read a PNG/JPEG into an Image (H, W). "none" keeps stored values (units "raw")."""
    from PIL import Image as PILImage

    spec = parse_window(window)
    try:
        with _open_file(path) as fp, _open(path, fp) as im:
            width, height = im.size
            check_declared_size(path, (height, width, _BANDS.get(im.mode, 4)), max_pixels,
                                what="rows x columns x channels")
            fmt, mode = _format_name(im, path), im.mode
            try:
                im.load()
            except OSError as e:
                raise ReaderError(path, f"image data is truncated or corrupt ({e}); copy or export the file "
                                        "again") from None
            values, depth = _stored(path, im)
    except (MedsslError, MemoryError):
        raise
    except PILImage.DecompressionBombError as e:
        raise ImageTooLargeError(path, f"Pillow refused it as a decompression bomb ({e})") from None
    except Exception as e:
        raise ReaderError(path, f"cannot decode image ({type(e).__name__}: {e}); the file is corrupt") from None
    meta = dict.fromkeys(META_KEYS)
    meta.update(photometric=_photometric(mode), source_format=fmt)
    if spec == "none":
        meta["units"] = "raw"
        return Image(values.astype(np.float32), meta)
    if spec == "voi":
        out = scale_range(values, 0.0, 2.0 ** depth - 1)
    else:
        out = apply_window(values, *spec)
    meta["units"] = "unit"
    return Image(out.astype(np.float32, copy=False), meta)


def read_raster_header(path) -> dict:
    """META_KEYS plus `shape` (H, W) from the file header only (Pillow's lazy open)."""
    with _open_file(path) as fp, _open(path, fp) as im:
        meta = dict.fromkeys(META_KEYS)
        meta.update(photometric=_photometric(im.mode), source_format=_format_name(im, path))
        width, height = im.size
        meta["shape"] = (int(height), int(width))
    return meta
