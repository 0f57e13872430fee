"""NIfTI-1/2 reader (nibabel), volumes in one documented orientation.

Axis convention of every volume medssl returns, (D, H, W) = (superior->inferior,
anterior->posterior, patient right->left): the data are first reoriented to RAS+ with
`nibabel.as_closest_canonical`, then flipped and transposed, so that
  pixels[k]       is an axial slice as a radiologist views it (top = anterior, image left = patient right),
  pixels[:, j, :] is a coronal slice (top = superior, image left = patient right),
  pixels[:, :, i] is a sagittal slice (top = superior, image left = anterior).
In nibabel axis codes the returned array is ("I", "P", "L") ordered as (D, H, W).
scl_slope/scl_inter are applied by nibabel, so CT volumes come out in HU.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from medssl.errors import MedsslError, ReaderError
from medssl.io.image import META_KEYS, Image
from medssl.io.limits import check_declared_size, check_float32_range
from medssl.io.window import apply_window, parse_window, scale_full_range, scale_range

SUFFIXES = (".nii", ".nii.gz")

#: Voxel types kept as read (smaller and faster than float64); others become float64.
_KEPT_DTYPES = frozenset(np.dtype(t) for t in ("int8", "uint8", "int16", "uint16", "int32", "uint32",
                                               "float32", "float64"))

#: Named slice axes of a (D, H, W) volume.
SLICE_AXES = {"axial": 0, "coronal": 1, "sagittal": 2}


def is_nifti_name(path) -> bool:
    return str(path).lower().endswith(SUFFIXES)


def _load(path, *, keep_file_open: bool = False):
    import nibabel as nib

    if not Path(path).is_file():
        raise ReaderError(path, "no such file; check the path")
    try:
        # nibabel logs (to stderr) each header field it repairs on load, e.g. a bad vox_offset;
        # medssl's own checks below decide whether the file is usable, so silence that logger.
        logger, disabled = nib.imageglobals.logger, nib.imageglobals.logger.disabled
        logger.disabled = True
        try:
            img = nib.load(str(path), keep_file_open=keep_file_open)
        finally:
            logger.disabled = disabled
    except MedsslError:
        raise
    except Exception as e:
        raise ReaderError(path, f"not a readable NIfTI file ({type(e).__name__}: {e}); the header is corrupt "
                                "or the file is truncated: re-export it (e.g. with dcm2niix)") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ReaderError(path, f"{type(img).__name__} is not NIfTI; save it as .nii/.nii.gz")
    return img


def _spatial_shape(path, img, frame) -> tuple[tuple[int, ...], tuple]:
    """(spatial shape (2 or 3 dims), index into the data array selecting it)."""
    shape = tuple(int(d) for d in img.shape)
    if len(shape) < 2:
        raise ReaderError(path, f"{len(shape)}D NIfTI of shape {shape}; expected a 2D image or a 3D volume")
    extra = shape[3:]
    while extra and extra[-1] == 1:
        extra = extra[:-1]
    if len(extra) > 1:
        raise ReaderError(path, f"{len(shape)}D NIfTI of shape {shape}; only 2D, 3D and 4D (one volume per "
                                "frame=) are supported: split it into 3D volumes (e.g. `fslsplit`)")
    if extra:
        if frame is None:
            raise ReaderError(path, f"4D NIfTI of shape {shape} where a 2D image or 3D volume was expected; "
                                    f"pass frame=N (0..{extra[0] - 1}) to read one volume")
        if not 0 <= int(frame) < extra[0]:
            raise ReaderError(path, f"frame {frame} out of range: the file has {extra[0]} volumes")
    elif frame not in (None, 0):
        raise ReaderError(path, f"frame {frame} requested but the file is a single {len(shape[:3])}D volume")
    index = (slice(None),) * min(3, len(shape)) + tuple(
        (int(frame) if (i == 0 and extra) else 0) for i in range(len(shape) - 3))
    return shape[:3], index


def _check_dtype(path, img) -> None:
    dtype = img.get_data_dtype()
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise ReaderError(path, f"NIfTI data type {dtype} (datatype code {int(img.header['datatype'])}) is not "
                                "a real-valued scalar type; convert it to int16/float32")


def _to_dhw(data_ras: np.ndarray) -> np.ndarray:
    """RAS+ (i, j, k) array -> (D, H, W) = (S->I, A->P, R->L), see the module docstring."""
    return data_ras[::-1, ::-1, ::-1].transpose(2, 1, 0)


def _canonical(path, img, frame, slab=None) -> tuple[np.ndarray, tuple[float, ...]]:
    """Spatial data (DHW, 2D squeezed; the file's int/float dtype, float64 otherwise) and its spacing in mm.

    slab: (file axis, index) to read only that one-voxel-thick slab of the volume (nibabel
    reads just those bytes; the slab's axis is then the squeezed one).
    """
    import nibabel as nib

    spatial, index = _spatial_shape(path, img, frame)
    if slab is not None:
        axis, k = slab
        index = index[:axis] + (slice(k, k + 1),) + index[axis + 1:]
        spatial = spatial[:axis] + (1,) + spatial[axis + 1:]
    data = np.asarray(img.dataobj[index]).reshape(spatial)  # scl_slope/inter applied by nibabel
    if data.dtype not in _KEPT_DTYPES:
        data = data.astype(np.float64)
    if data.ndim == 2:
        data = data[:, :, None]
    canonical = nib.as_closest_canonical(nib.Nifti1Image(data, img.affine))
    ras = np.asarray(canonical.dataobj)
    zooms = tuple(float(z) for z in canonical.header.get_zooms()[:3])
    pixels, spacing = _to_dhw(ras), (zooms[2], zooms[1], zooms[0])
    singles = [a for a in range(3) if pixels.shape[a] == 1]
    if len(singles) == 1:  # a 2D image (or single slice) stored as NIfTI: return it as (H, W)
        pixels = np.take(pixels, 0, axis=singles[0])
        spacing = tuple(s for a, s in enumerate(spacing) if a != singles[0])
    return pixels, spacing


def _cal_range(img) -> tuple[float, float] | None:
    try:
        lo, hi = float(img.header["cal_min"]), float(img.header["cal_max"])
    except Exception:
        return None
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) and hi > lo else None


def _slice_axis(slice_axis) -> int | None:
    """0/1/2 for a valid slice_axis (default 0, axial), None for an invalid one."""
    axis = 0 if slice_axis is None else SLICE_AXES.get(str(slice_axis).lower(), slice_axis)
    return None if axis not in (0, 1, 2) or isinstance(axis, bool) else axis


def _slice_index(slice_index, n: int) -> int | None:
    """The slice number for an int / "middle" / None (middle) request, None when malformed or out of range."""
    if slice_index is None or slice_index == "middle":
        return n // 2
    try:
        index = int(slice_index)
    except (TypeError, ValueError):
        return None
    return index if 0 <= index < n else None


def select_slice(path, pixels: np.ndarray, spacing, slice_axis=None, slice_index=None):
    """Cut a 2D slice out of a (D, H, W) volume; returns (pixels, spacing).

    slice_axis: 0/1/2 or "axial"/"coronal"/"sagittal" (default axial when only slice_index
    is given); slice_index: int, "middle" (default) or "all" (keep the stack). 2D input is
    returned unchanged.
    """
    if (slice_axis is None and slice_index is None) or pixels.ndim != 3:
        return pixels, spacing
    axis = _slice_axis(slice_axis)
    if axis is None:
        raise ReaderError(path, f"slice_axis {slice_axis!r}: use 0/1/2 or " + "/".join(SLICE_AXES))
    if slice_index == "all":
        return pixels, spacing
    n = pixels.shape[axis]
    index = _slice_index(slice_index, n)
    if index is None:
        try:
            int(slice_index)
        except (TypeError, ValueError):
            raise ReaderError(path, f"slice_index {slice_index!r}: use an int, 'middle' or 'all'") from None
        raise ReaderError(path, f"slice_index {slice_index} out of range for axis {axis} with {n} slices")
    out = np.take(pixels, index, axis=axis)
    if spacing is not None and len(spacing) == 3:
        spacing = tuple(s for a, s in enumerate(spacing) if a != axis)
    return out, spacing


def _slab(img, spatial, slice_axis, slice_index):
    """(file axis, index) holding the requested (D, H, W) slice, or None when the whole volume is needed.

    Only for one slice (an int or "middle") of a genuine 3D volume; out-of-range and malformed
    requests return None so that select_slice reports them. Uses the same orientation as
    `nibabel.as_closest_canonical`: DHW axis a is RAS axis 2 - a, reversed.
    """
    import nibabel as nib

    if (slice_axis is None and slice_index is None) or slice_index == "all" or len(spatial) != 3 \
            or 1 in spatial:
        return None
    axis = _slice_axis(slice_axis)
    if axis is None:
        return None
    ornt = nib.io_orientation(img.affine)
    if np.isnan(ornt).any():
        return None
    file_axis = int(np.flatnonzero(ornt[:, 0] == 2 - axis)[0])
    n = spatial[file_axis]
    index = _slice_index(slice_index, n)
    if index is None:
        return None
    # DHW index -> RAS index n-1-index -> file index (the file axis is reversed when flip is -1)
    return file_axis, (index if ornt[file_axis, 1] < 0 else n - 1 - index)


def read_nifti(path, *, frame: int | None = None, window="voi", slice_axis=None, slice_index=None,
               max_pixels: int | None = None) -> Image:
    """Read a .nii/.nii.gz into an Image: (D, H, W) volume, or (H, W) for 2D files or a slice.

    frame picks the volume of a 4D file. "voi" uses the header's cal_min/cal_max display
    range when set, else the volume's full range (computed before slicing, so slices of
    one volume share a scale). One slice with a window that does not need the volume's range
    ("none", an explicit window, or cal_min/cal_max) reads only that slice from the file
    (many slices of one volume: `NiftiVolume`). Raises ReaderError/ImageTooLargeError.
    """
    spec = parse_window(window)
    img = _load(path)
    try:
        spatial, _ = _spatial_shape(path, img, frame)
        check_declared_size(path, spatial, max_pixels, what="NIfTI volume")
        _check_dtype(path, img)
        slab = None if spec == "voi" and _cal_range(img) is None else \
            _slab(img, spatial, slice_axis, slice_index)
        values, spacing = _canonical(path, img, frame, slab)
    except (MedsslError, MemoryError):
        raise
    except Exception as e:
        raise _corrupt(path, e) from None
    _check_finite(path, int((~np.isfinite(values)).sum()))
    out, units = _scale(path, values, spec, _cal_range(img))
    if slab is None:
        out, spacing = select_slice(path, out, spacing, slice_axis, slice_index)
    return _image(out, units, spacing)


def _corrupt(path, e: Exception) -> ReaderError:
    return ReaderError(path, f"cannot read NIfTI data ({type(e).__name__}: {e}); the file is corrupt or "
                             "truncated: re-export it")


def _check_finite(path, n_bad: int) -> None:
    if n_bad:
        raise ReaderError(path, f"{n_bad} voxel(s) are NaN/Inf (or scl_slope/scl_inter make them so); fix the "
                                "volume (e.g. replace NaN with the background value) before using it")


def _scale(path, values: np.ndarray, spec, cal, full_range=None) -> tuple[np.ndarray, str]:
    """(pixels, units) for a window spec; "voi" without cal uses full_range, else the values' own range."""
    if spec == "none":
        check_float32_range(path, values)
        return values, "raw"
    if spec == "voi":
        if cal:
            return scale_range(values, *cal), "unit"
        return (scale_full_range(values) if full_range is None else scale_range(values, *full_range)), "unit"
    return apply_window(values, *spec), "unit"


def _image(pixels: np.ndarray, units: str, spacing) -> Image:
    meta = dict.fromkeys(META_KEYS)
    meta["source_format"] = "nifti"
    meta["units"] = units
    meta["spacing"] = tuple(float(s) for s in spacing) if spacing else None
    return Image(np.ascontiguousarray(pixels, dtype=np.float32), meta)


class NiftiVolume:
    """One 3D NIfTI volume kept open and read slice by slice, with memory bounded by a slab.

    `read_slice(k)` returns exactly what `read_nifti(path, window=window, slice_axis=axis,
    slice_index=k)` returns, but reads only that slice from the file; for window="voi" without
    cal_min/cal_max the volume's range, which every slice is scaled by, is computed once, in slabs
    of at most RANGE_SLAB_BYTES (as float64). `open` returns None for files it does not serve (2D,
    4D, an affine without an orientation): read those with read_nifti. Reading slices in
    `file_order` decompresses a .nii.gz once per pass. Use as a context manager, or close().
    """

    RANGE_SLAB_BYTES = 64 << 20

    def __init__(self, path, img, spatial, index, spec, window, axis: int, max_pixels):
        self.path, self._img, self._spatial, self._index = path, img, spatial, index
        self._spec, self._window, self.axis, self._max_pixels = spec, window, axis, max_pixels
        self._cal = _cal_range(img)
        self._range = None   # (min, max, n non-finite) of the whole volume, when the window needs it

    @classmethod
    def open(cls, path, *, window="voi", slice_axis=0, max_pixels: int | None = None) -> NiftiVolume | None:
        spec = parse_window(window)
        axis = _slice_axis(slice_axis)
        img = _load(path, keep_file_open=True)
        try:
            spatial, index = _spatial_shape(path, img, None)
            check_declared_size(path, spatial, max_pixels, what="NIfTI volume")
            _check_dtype(path, img)
            if axis is None or _slab(img, spatial, axis, 0) is None:
                return None
        except (MedsslError, MemoryError):
            raise
        except Exception as e:
            raise _corrupt(path, e) from None
        return cls(path, img, spatial, index, spec, window, axis, max_pixels)

    def _slab(self, k):
        return _slab(self._img, self._spatial, self.axis, k)

    def file_order(self, slice_indices) -> np.ndarray:
        """Positions that sort `slice_indices` by where their slices lie in the file."""
        keys = [(s[1] if (s := self._slab(int(k))) is not None else -1) for k in slice_indices]
        return np.argsort(np.asarray(keys), kind="stable")

    def read_slice(self, k) -> Image:
        slab = self._slab(k)
        if slab is None:   # out of range or malformed: read_nifti says why, in its own words
            return read_nifti(self.path, window=self._window, slice_axis=self.axis, slice_index=k,
                              max_pixels=self._max_pixels)
        try:
            full_range = None
            if self._spec == "voi" and self._cal is None:
                lo, hi, bad = self._volume_range()
                _check_finite(self.path, bad)
                full_range = (lo, hi)
            values, spacing = _canonical(self.path, self._img, None, slab)
        except (MedsslError, MemoryError):
            raise
        except Exception as e:
            raise _corrupt(self.path, e) from None
        _check_finite(self.path, int((~np.isfinite(values)).sum()))
        out, units = _scale(self.path, values, self._spec, self._cal, full_range)
        return _image(out, units, spacing)

    def _volume_range(self):
        """(min, max, non-finite count) over the volume as _canonical reads it, in slabs of the last file axis."""
        if self._range is None:
            n = self._spatial[-1]
            step = max(1, self.RANGE_SLAB_BYTES // (8 * int(np.prod(self._spatial[:-1]))))
            lo = hi = None
            bad = 0
            for a in range(0, n, step):
                index = self._index[:2] + (slice(a, min(a + step, n)),) + self._index[3:]
                data = np.asarray(self._img.dataobj[index])
                if data.dtype not in _KEPT_DTYPES:
                    data = data.astype(np.float64)
                if data.dtype.kind == "f":
                    bad += int((~np.isfinite(data)).sum())
                if data.size:
                    lo = data.min() if lo is None else min(lo, data.min())
                    hi = data.max() if hi is None else max(hi, data.max())
            self._range = (lo, hi, bad)
        return self._range

    def close(self) -> None:
        self._img = None   # nibabel closes the kept-open file with its array proxy

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_nifti_header(path) -> dict:
    """META_KEYS plus `shape`: (D, H, W) as read_image returns it ((T, D, H, W) for 4D), header only."""
    import nibabel as nib

    img = _load(path)
    meta = dict.fromkeys(META_KEYS)
    meta["source_format"] = "nifti"
    try:
        shape = tuple(int(d) for d in img.shape)
        zooms = tuple(float(z) for z in img.header.get_zooms())
        if len(shape) >= 2:
            spatial = shape[:3] + (1,) * (3 - len(shape[:3]))
            ornt = nib.io_orientation(img.affine)
            ras_shape, ras_zoom = [0, 0, 0], [0.0, 0.0, 0.0]
            for axis in range(3):
                ras_shape[int(ornt[axis, 0])] = spatial[axis]
                ras_zoom[int(ornt[axis, 0])] = zooms[axis] if axis < len(zooms) else 1.0
            dhw, spacing = tuple(reversed(ras_shape)), tuple(reversed(ras_zoom))
            singles = [a for a in range(3) if dhw[a] == 1]
            if len(singles) == 1:
                dhw = tuple(d for a, d in enumerate(dhw) if a != singles[0])
                spacing = tuple(z for a, z in enumerate(spacing) if a != singles[0])
            extra = tuple(d for d in shape[3:] if d != 1)
            meta["shape"] = extra + dhw
            meta["spacing"] = spacing
        else:
            meta["shape"] = shape
    except Exception:
        meta["shape"] = None
    return meta


def extract_patch(volume: np.ndarray, center, size, fill: float = 0.0) -> np.ndarray:
    """A patch of shape `size` around voxel `center` of a 2D/3D array, padded with `fill` outside.

    size: int (same on every axis) or one int per axis; the patch on each axis spans
    [center - size // 2, center - size // 2 + size). Same dtype as `volume`.
    """
    volume = np.asarray(volume)
    ndim = volume.ndim
    sizes = (int(size),) * ndim if np.isscalar(size) else tuple(int(s) for s in size)
    center = tuple(int(c) for c in center)
    if len(sizes) != ndim or len(center) != ndim or any(s < 1 for s in sizes):
        raise ValueError(f"center {center} and size {sizes} must have {ndim} entries, sizes >= 1")
    out = np.full(sizes, fill, dtype=volume.dtype)
    src, dst = [], []
    for c, s, n in zip(center, sizes, volume.shape):
        start = c - s // 2
        lo, hi = max(start, 0), min(start + s, n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = volume[tuple(src)]
    return out
