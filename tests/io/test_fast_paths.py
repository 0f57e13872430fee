"""The float32 fast paths (window, Modality LUT, inversion, NIfTI slices, cache row keys) equal the reference ones."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut, apply_windowing

from medssl.cache.meta import row_keys
from medssl.io import read_image
from medssl.io.window import apply_window, scale_full_range, to_unit


def _pydicom_unit(ds, window=None, function=None) -> np.ndarray:
    """pydicom's Modality LUT + windowing (float64), scaled from its output range to [0, 1], MONOCHROME1 inverted."""
    ds = copy.deepcopy(ds)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if function is not None:
        ds.VOILUTFunction = function
    values = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64)
    if "WindowCenter" in ds:
        bits = int(ds.BitsStored)
        lo, hi = (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) if ds.PixelRepresentation else (0.0, 2.0 ** bits - 1)
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:
            lo, hi = (v * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for v in (lo, hi))
        unit = (apply_windowing(values.copy(), ds) - lo) / (hi - lo)
    else:  # no window: the full range
        unit = (values - values.min()) / (values.max() - values.min())
    return 1.0 - unit if ds.PhotometricInterpretation == "MONOCHROME1" else unit


def _mono1_12bit(pydicom_file, tmp_path, **elements):
    """examples_overlay (12-bit unsigned) turned MONOCHROME1 with a rescale, saved under tmp_path."""
    ds = pydicom.dcmread(pydicom_file("examples_overlay.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.RescaleSlope, ds.RescaleIntercept = 0.5, -100
    for key, value in elements.items():
        setattr(ds, key, value)
    path = tmp_path / "mono1_12bit.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, pydicom.dcmread(path)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "examples_overlay.dcm"])
def test_dicom_voi_equals_pydicom(pydicom_file, name):
    ds = pydicom.dcmread(pydicom_file(name))
    got = read_image(pydicom_file(name)).pixels
    assert got.dtype == np.float32 and got.shape == ds.pixel_array.shape
    np.testing.assert_allclose(got, _pydicom_unit(ds), atol=1e-5, rtol=0)
    assert 0.05 < got.mean() < 0.95  # a real image, not a constant


@pytest.mark.parametrize("window,function", [((-600.0, 1500.0), "LINEAR_EXACT"), ((40.0, 80.0), "LINEAR_EXACT"),
                                             ((50.0, 351.0), "LINEAR"), ((300.0, 5.0), "LINEAR")])
def test_ct_explicit_windows_equal_pydicom(pydicom_file, window, function):
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))  # slope 1, intercept -1024: HU
    want = _pydicom_unit(ds, window, function)
    if function == "LINEAR_EXACT":  # the reader's explicit windows are LINEAR_EXACT
        np.testing.assert_allclose(read_image(pydicom_file("CT_small.dcm"), window=window).pixels, want, atol=1e-5)
    hu = apply_modality_lut(ds.pixel_array, ds)
    np.testing.assert_allclose(apply_window(hu, *window, function), want, atol=1e-5, rtol=0)
    # folded rescale on the stored int16 values gives the same
    np.testing.assert_allclose(apply_window(ds.pixel_array, *window, function, slope=1.0, intercept=-1024.0),
                               want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_12bit_monochrome1_with_rescale_equals_pydicom(pydicom_file, tmp_path, function):
    path, ds = _mono1_12bit(pydicom_file, tmp_path, WindowCenter=150.0, WindowWidth=300.0, VOILUTFunction=function)
    got = read_image(path).pixels
    want = _pydicom_unit(ds)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert got.max() - got.min() > 0.9 and ((got > 0.1) & (got < 0.9)).any()
    if function != "SIGMOID":  # linear windows clip: both ends are reached exactly
        assert (got == 0).any() and (got == 1).any()


def test_12bit_monochrome1_full_range_ends_are_exact(pydicom_file, tmp_path):
    path, ds = _mono1_12bit(pydicom_file, tmp_path)
    del ds.WindowCenter, ds.WindowWidth
    ds.save_as(path, enforce_file_format=True)
    got = read_image(path).pixels
    stored = ds.pixel_array
    np.testing.assert_allclose(got, _pydicom_unit(ds), atol=1e-5, rtol=0)
    assert got[stored == stored.max()].max() == 0.0 and got[stored == stored.min()].min() == 1.0


def test_to_unit_precision_fallback_and_steps():
    x = np.arange(30000, 30010, dtype=np.uint16)
    # |low| / span = 10000: float32 would lose ~1e-3; the float64 fallback keeps it exact
    np.testing.assert_allclose(to_unit(x, 30002.0, 30005.0), np.clip((x - 30002.0) / 3.0, 0, 1), atol=1e-7)
    np.testing.assert_array_equal(to_unit(x, 30004.0, 30004.0), (x > 30004).astype(np.float32))
    np.testing.assert_array_equal(to_unit(x, 30004.0, 30004.0, invert=True), (x <= 30004).astype(np.float32))
    # negative slope flips; zero slope is a constant image
    v = np.array([0, 10, 20], dtype=np.int16)
    np.testing.assert_allclose(apply_window(v, 0.0, 20.0, slope=-1.0), [0.5, 0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(apply_window(v, 0.0, 20.0, slope=0.0, intercept=5.0), [0.75] * 3, atol=1e-7)
    np.testing.assert_array_equal(scale_full_range(v, slope=-2.0), [1.0, 0.5, 0.0])
    assert to_unit(v, 0, 20).dtype == np.float32


def test_row_keys_unchanged():
    # values computed with the original per-row implementation (before the join + frombuffer rewrite)
    df = pd.DataFrame({"path": ["a/b.dcm", "patients/p001/study 1/\u00ef.dcm", "x.nii.gz"], "frame": [None, 3, 0]})
    assert row_keys(df).tolist() == [5342844446365683989, 9852389360251186844, 14947826902237041450]
    assert row_keys(df).dtype == np.uint64
    assert row_keys(pd.DataFrame({"path": ["a/b.dcm"]})).tolist() == [5342844446365683989]
    assert row_keys(pd.DataFrame({"path": pd.Series([], dtype=str)})).shape == (0,)


def _volume(tmp_path, name, affine, data):
    import nibabel as nib

    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


@pytest.mark.parametrize("axes,flips", [((0, 1, 2), (1, 1, 1)), ((2, 0, 1), (-1, 1, -1)), ((1, 2, 0), (1, -1, 1))])
def test_nifti_slice_reads_equal_the_volume_slices(tmp_path, axes, flips):
    data = np.random.default_rng(1).integers(-1000, 3000, size=(9, 7, 5)).astype(np.int16)
    affine = np.zeros((4, 4))
    for i, (a, f) in enumerate(zip(axes, flips)):
        affine[a, i] = f * (0.5 + i)
    affine[3, 3] = 1
    path = _volume(tmp_path, "v.nii.gz", affine, data)
    volume = read_image(path, window="none")
    for axis in range(3):
        for index in (0, volume.shape[axis] - 1, "middle"):
            got = read_image(path, window="none", slice_axis=axis, slice_index=index)
            k = volume.shape[axis] // 2 if index == "middle" else index
            np.testing.assert_array_equal(got.pixels, np.take(volume.pixels, k, axis=axis))
            assert got.meta["spacing"] == tuple(s for a, s in enumerate(volume.meta["spacing"]) if a != axis)
        win = read_image(path, window="0,2000", slice_axis=axis, slice_index=1).pixels
        np.testing.assert_allclose(win, np.take(read_image(path, window="0,2000").pixels, 1, axis=axis), atol=1e-6)


def test_nifti_slice_does_not_decode_other_slices(tmp_path):
    data = np.ones((6, 6, 4), dtype=np.float32)
    data[..., 0] = np.nan  # file axis 2 slice 0 = the last axial slice (RAS affine, D runs S->I)
    path = _volume(tmp_path, "nan.nii.gz", np.eye(4), data)
    from medssl.errors import ReaderError

    with pytest.raises(ReaderError, match="NaN"):
        read_image(path, window="none")
    assert (read_image(path, window="none", slice_axis="axial", slice_index=0).pixels == 1).all()
    with pytest.raises(ReaderError, match="NaN"):
        read_image(path, window="none", slice_axis="axial", slice_index=3)
