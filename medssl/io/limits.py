"""Size limits checked against an image's DECLARED size, before any pixel buffer is allocated.

A corrupt or hostile header can declare a 100000 x 100000 x 5000 image in a 1 kB file; the
readers call `check_declared_size` with the header's dimensions first, so such a file costs
a header parse, never gigabytes of memory.
"""

from __future__ import annotations

import io
import math
import os
from typing import Iterable

import numpy as np

from medssl.errors import ConfigError, ImageTooLargeError, ReaderError

#: Default limit in pixels (samples): 2**28 = 268M, e.g. a 512x512x1024 volume; 1 GiB as float32.
DEFAULT_MAX_PIXELS = 2**28
#: Environment variable that overrides the default limit (an integer number of pixels).
ENV_MAX_PIXELS = "MEDSSL_MAX_PIXELS"


def resolve_max_pixels(max_pixels: int | None = None) -> int:
    """The limit in force: `max_pixels` if given, else $MEDSSL_MAX_PIXELS, else DEFAULT_MAX_PIXELS."""
    if max_pixels is None:
        env = os.environ.get(ENV_MAX_PIXELS, "").strip()
        if not env:
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(float(env))
        except ValueError:
            raise ConfigError(f"{ENV_MAX_PIXELS}={env!r} is not a number; set it to a pixel count "
                              f"such as {DEFAULT_MAX_PIXELS} or unset it") from None
    if int(max_pixels) < 1:
        raise ConfigError(f"max_pixels must be a positive pixel count, got {max_pixels}")
    return int(max_pixels)


def check_declared_size(path, dims: Iterable[int], max_pixels: int | None = None, *,
                        what: str = "image") -> int:
    """Return the product of `dims` (the declared sample count); refuse bad or oversized dims.

    Raises ReaderError for a zero/negative dimension and ImageTooLargeError when the product
    exceeds the limit (see `resolve_max_pixels`).
    """
    dims = [int(d) for d in dims]
    if any(d < 1 for d in dims):
        raise ReaderError(path, f"header declares {what} dimensions {tuple(dims)}; every dimension must "
                                "be >= 1 (the header is corrupt; re-export the file)")
    limit = resolve_max_pixels(max_pixels)
    total = math.prod(dims)
    if total > limit:
        raise ImageTooLargeError(
            path, f"header declares {what} dimensions {tuple(dims)} = {total:,} pixels, above the limit of "
                  f"{limit:,}; if the file is genuine, raise the limit with max_pixels= or "
                  f"{ENV_MAX_PIXELS}=<pixels> (or read one frame/slice)")
    return total


def check_float32_range(path, values: np.ndarray) -> None:
    """Refuse values that would overflow float32 (e.g. an absurd rescale slope) instead of returning inf."""
    if values.size and float(np.abs(values).max()) > float(np.finfo(np.float32).max):
        raise ReaderError(path, "pixel values exceed the float32 range after rescaling (check the rescale "
                                "slope/intercept in the header); fix the header or read with a window")


class _ClampedReader(io.BufferedReader):
    """A file whose read(n) never asks for more than what is left in it."""

    def __init__(self, raw, size: int):
        super().__init__(raw)
        self._size = size

    def read(self, size=-1):
        if size is not None and size > 0:
            size = max(0, min(size, self._size - self.tell()))
        return super().read(size)


def open_clamped(path) -> io.BufferedReader:
    """Open `path` for reading so that read(n) is clamped to the bytes left in the file.

    Python allocates the n bytes a read asks for before reading; a corrupt length field of
    4 GB in a 1 kB file (a DICOM element, a PNG chunk) must not cost 4 GB. Raises OSError.
    """
    raw = io.FileIO(path, "rb")
    try:
        return _ClampedReader(raw, os.fstat(raw.fileno()).st_size)
    except BaseException:
        raw.close()
        raise
