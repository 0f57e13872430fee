"""NIfTI reader on nibabel's bundled files: orientation, windows, 4D, slices, patches, errors."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from medssl.errors import ImageTooLargeError, ReaderError
from medssl.io import read_header, read_image
from medssl.io.nifti import extract_patch

DATA = Path(nib.__file__).parent / "tests" / "data"
ANAT = DATA / "anatomical.nii"  # 33 x 41 x 25, LAS


def _ipl(img) -> np.ndarray:
    """Reference via nibabel's orientation code: the data with axes pointing (I, P, L)."""
    data = np.asarray(img.dataobj, dtype=np.float64)
    return apply_orientation(data, ornt_transform(io_orientation(img.affine), axcodes2ornt(("I", "P", "L"))))


def test_volume_axes_follow_the_documented_convention():
    img = nib.load(ANAT)
    assert nib.aff2axcodes(img.affine) == ("L", "A", "S")
    out = read_image(ANAT, window="none")
    expected = _ipl(img)  # axes reordered and flipped by nibabel to point (I, P, L) = (D, H, W)
    assert out.shape == (25, 41, 33) and out.meta["spacing"] == (2.0, 2.0, 2.0)
    np.testing.assert_array_equal(out.pixels, expected.astype(np.float32))
    assert out.meta["source_format"] == "nifti" and out.meta["units"] == "raw"


def test_flipped_and_permuted_affines_give_the_same_ras_array(tmp_path):
    img = nib.load(ANAT)
    data = np.asarray(img.dataobj)
    ref = read_image(ANAT, window="none").pixels
    # flip the first voxel axis: data reversed along x, affine column negated and origin moved
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, data.shape[0] - 1
    flipped = nib.Nifti1Image(data[::-1].copy(), img.affine @ flip)
    nib.save(flipped, tmp_path / "flipped.nii")
    assert nib.aff2axcodes(flipped.affine)[0] == "R"
    np.testing.assert_array_equal(read_image(tmp_path / "flipped.nii", window="none").pixels, ref)
    # permute voxel axes (z, x, y) with the matching affine
    perm = np.eye(4)[:, [2, 0, 1, 3]]
    permuted = nib.Nifti1Image(data.transpose(2, 0, 1).copy(), img.affine @ perm)
    nib.save(permuted, tmp_path / "permuted.nii.gz")
    out = read_image(tmp_path / "permuted.nii.gz", window="none")
    np.testing.assert_array_equal(out.pixels, ref)
    assert read_header(tmp_path / "permuted.nii.gz")["shape"] == ref.shape


def test_windows_and_cal_range():
    raw = read_image(DATA / "example4d.nii.gz", frame=0, window="none").pixels.astype(np.float64)
    voi = read_image(DATA / "example4d.nii.gz", frame=0).pixels  # header cal_min/cal_max = 0/1162
    np.testing.assert_allclose(voi, np.clip(raw / 1162.0, 0, 1), atol=1e-6)
    win = read_image(DATA / "example4d.nii.gz", frame=0, window="500,1000").pixels
    np.testing.assert_allclose(win, np.clip((raw - 0.0) / 1000.0, 0, 1), atol=1e-6)
    anat = read_image(ANAT).pixels  # no cal range: full range
    assert anat.min() == 0.0 and anat.max() == 1.0
    std = read_image(DATA / "standard.nii.gz")
    assert std.shape == (7, 5, 4) and std.meta["spacing"] == (2.0, 3.0, 1.0)


def test_4d_needs_a_frame_and_nifti2_reads():
    with pytest.raises(ReaderError, match="4D NIfTI .* pass frame=N") as err:
        read_image(DATA / "example4d.nii.gz")
    assert str(DATA / "example4d.nii.gz") in str(err.value)
    a, b = (read_image(DATA / "example4d.nii.gz", frame=k, window="none").pixels for k in (0, 1))
    assert a.shape == (24, 96, 128) and not np.array_equal(a, b)
    with pytest.raises(ReaderError, match="frame 2 out of range"):
        read_image(DATA / "example4d.nii.gz", frame=2)
    n2 = read_image(DATA / "example_nifti2.nii.gz", frame=1)
    assert n2.shape == (12, 20, 32) and 0 <= n2.pixels.min() and n2.pixels.max() <= 1
    assert read_header(DATA / "example_nifti2.nii.gz")["shape"] == (2, 12, 20, 32)


def test_slices():
    vol = read_image(ANAT, window="none").pixels
    np.testing.assert_array_equal(read_image(ANAT, window="none", slice_axis="axial", slice_index="middle").pixels,
                                  vol[12])
    cor = read_image(ANAT, window="none", slice_axis="coronal", slice_index=5)
    np.testing.assert_array_equal(cor.pixels, vol[:, 5, :])
    assert cor.meta["spacing"] == (2.0, 2.0)
    np.testing.assert_array_equal(read_image(ANAT, window="none", slice_axis=2, slice_index=0).pixels, vol[:, :, 0])
    assert read_image(ANAT, slice_axis="sagittal", slice_index="all").shape == vol.shape
    with pytest.raises(ReaderError, match="out of range"):
        read_image(ANAT, slice_axis="axial", slice_index=25)
    with pytest.raises(ReaderError, match="slice_axis"):
        read_image(ANAT, slice_axis="oblique", slice_index=0)
    # slices of one volume share the volume's scale under "voi"
    full = read_image(ANAT).pixels
    np.testing.assert_array_equal(read_image(ANAT, slice_index=3).pixels, full[3])


def test_2d_nifti_and_nan(tmp_path):
    img2d = nib.Nifti1Image(np.arange(12, dtype=np.int16).reshape(3, 4), np.diag([0.5, 0.7, 1, 1]))
    nib.save(img2d, tmp_path / "xray.nii")
    out = read_image(tmp_path / "xray.nii", window="none")
    assert out.shape == (4, 3) and out.meta["spacing"] == pytest.approx((0.7, 0.5))
    np.testing.assert_array_equal(out.pixels, np.arange(12).reshape(3, 4)[::-1, ::-1].T)
    assert read_header(tmp_path / "xray.nii")["shape"] == (4, 3)
    data = np.ones((4, 4, 4), np.float32)
    data[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(ReaderError, match="NaN/Inf") as err:
        read_image(tmp_path / "nan.nii.gz")
    assert "nan.nii.gz" in str(err.value)
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), 30000, np.int16), np.eye(4)), tmp_path / "slope.nii")
    raw = bytearray((tmp_path / "slope.nii").read_bytes())
    raw[112:116] = np.float32(3e38).tobytes()  # scl_slope: 30000 * 3e38 overflows float32
    (tmp_path / "slope.nii").write_bytes(bytes(raw))
    with pytest.raises(ReaderError, match="slope.nii.*float32"):
        read_image(tmp_path / "slope.nii", window="none")
    raw[112:116] = np.float32(np.nan).tobytes()  # NaN slope: nibabel reads the data unscaled
    (tmp_path / "slope.nii").write_bytes(bytes(raw))
    assert read_image(tmp_path / "slope.nii", window="none").pixels.max() == 30000


def test_size_limit_and_corrupt_files(tmp_path):
    raw = bytearray(ANAT.read_bytes())
    hdr = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(bytes(raw[:348])))
    hdr.set_data_shape((30000, 30000, 30000))
    big = tmp_path / "big.nii"
    big.write_bytes(hdr.binaryblock + bytes(raw[348:]))
    with pytest.raises(ImageTooLargeError, match="big.nii"):
        read_image(big)
    with pytest.raises(ImageTooLargeError):
        read_image(ANAT, max_pixels=1000)
    cut = tmp_path / "cut.nii"
    cut.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(ReaderError, match="cut.nii"):
        read_image(cut)
    gz = (DATA / "standard.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(ReaderError):
        read_image(tmp_path / "cut.nii.gz")
    rgb = nib.Nifti1Image(np.zeros((4, 4, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]), np.eye(4))
    nib.save(rgb, tmp_path / "rgb.nii")
    with pytest.raises(ReaderError, match="real-valued"):
        read_image(tmp_path / "rgb.nii")


def test_extract_patch():
    vol = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    np.testing.assert_array_equal(extract_patch(vol, (2, 3, 3), 3), vol[1:4, 2:5, 2:5])
    edge = extract_patch(vol, (0, 0, 0), (2, 4, 4), fill=-1)
    assert edge.shape == (2, 4, 4) and edge.dtype == vol.dtype
    np.testing.assert_array_equal(edge[1:, 2:, 2:], vol[:1, :2, :2])
    assert (edge[0] == -1).all() and (edge[:, :2] == -1).all()
    assert (extract_patch(vol, (50, 50, 50), 4) == 0).all()
    np.testing.assert_array_equal(extract_patch(vol[0], (1, 1), (2, 2)), vol[0, :2, :2])
    with pytest.raises(ValueError):
        extract_patch(vol, (1, 1), 3)
