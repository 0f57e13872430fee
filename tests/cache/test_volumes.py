"""Rows that are slices of one NIfTI volume: the build opens the volume once per chunk and stores
exactly what reading each slice on its own stores."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import medssl.cache.build as build_module
from medssl.cache import CachedImages, build_cache, load_index
from medssl.errors import ReaderError
from medssl.io import nifti, read_image
from medssl.io.nifti import NiftiVolume


def _volume(tmp_path, name="ct.nii.gz", *, cal=None, affine=None, nan=False):
    rng = np.random.default_rng(0)
    data = (rng.integers(-1000, 1500, size=(24, 20, 10)) + np.arange(10) * 37).astype(np.int16)
    img = nib.Nifti1Image(data.astype(np.float32) if nan else data, np.eye(4) if affine is None else affine)
    if nan:
        img.dataobj[3, 4, 7] = np.nan
    if cal is not None:
        img.header["cal_min"], img.header["cal_max"] = cal
    nib.save(img, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("window,cal", [("voi", None), ("voi", (-200, 900)), ("none", None), ("40,400", None)])
def test_volume_slices_equal_single_slice_reads(tmp_path, window, cal):
    flipped = np.diag([-1.0, 1.0, -1.0, 1.0])     # an LPI-ish affine: file axes reversed on reading
    path = _volume(tmp_path, cal=cal, affine=flipped)
    vol = NiftiVolume.open(path, window=window, slice_axis=0)
    vol.RANGE_SLAB_BYTES = 20 * 24 * 8 * 3         # the range pass in slabs of 3 slices (4 passes)
    for k in [9, 0, 4]:
        want, got = read_image(path, window=window, slice_axis=0, slice_index=k), vol.read_slice(k)
        assert got.pixels.dtype == np.float32 and got.pixels.shape == want.pixels.shape == (20, 24)
        np.testing.assert_array_equal(got.pixels, want.pixels)
        assert got.meta == want.meta
    assert sorted(vol.file_order([0, 9, 4])) == [0, 1, 2]
    with pytest.raises(ReaderError, match="out of range"):
        vol.read_slice(10)
    vol.close()


def test_volume_with_nan_fails_every_slice_like_the_reader(tmp_path):
    path = _volume(tmp_path, "nan.nii", nan=True)
    with pytest.raises(ReaderError) as want:
        read_image(path, slice_axis=0, slice_index=0)
    with NiftiVolume.open(path) as vol, pytest.raises(ReaderError) as got:
        vol.read_slice(0)
    assert str(got.value) == str(want.value) and "1 voxel(s) are NaN" in str(got.value)


def test_cache_of_slices_opens_each_volume_once_per_chunk(tmp_path, monkeypatch):
    a, b = _volume(tmp_path, "a.nii.gz"), _volume(tmp_path, "b.nii", cal=(-500, 500))
    # slices of two volumes, interleaved and out of order, plus a volume read whole (no frame)
    df = pd.DataFrame({"path": ["a.nii.gz", "b.nii", "a.nii.gz", "a.nii.gz", "b.nii", "a.nii.gz"],
                       "frame": [7, 2, 0, 3, 9, 9]})
    opens = []
    real_load = nifti._load
    monkeypatch.setattr(nifti, "_load", lambda path, **kw: opens.append(str(path)) or real_load(path, **kw))
    build_cache(df, tmp_path / "grouped", data_root=tmp_path, size=32, workers=1, progress=False)
    assert sorted(opens) == sorted([str(a), str(b)])        # one chunk (6 rows): each volume opened once
    opens.clear()
    monkeypatch.setattr(build_module, "_open_volume", lambda *args: None)   # row by row, as before
    build_cache(df, tmp_path / "rows", data_root=tmp_path, size=32, workers=1, progress=False)
    assert len(opens) >= 6                                   # each row opens its file again
    g, r = tmp_path / "grouped", tmp_path / "rows"
    assert (g / "shard-00000.npy").read_bytes() == (r / "shard-00000.npy").read_bytes()
    gi, ri = load_index(g), load_index(r)
    for col in gi:
        np.testing.assert_array_equal(gi[col], ri[col])
    cached = CachedImages(g, df)
    assert not np.array_equal(cached[0], cached[2])          # different slices, different pixels
    assert (cached[0] > 0).mean() > 0.3


def test_slices_of_volumes_in_several_chunks(tmp_path, monkeypatch):
    _volume(tmp_path, "a.nii")
    df = pd.DataFrame({"path": ["a.nii"] * 10, "frame": list(range(10))})
    monkeypatch.setattr(build_module, "MAX_CHUNK", 4)      # chunks of 4, 4, 2 rows
    opens = []
    real_load = nifti._load
    monkeypatch.setattr(nifti, "_load", lambda path, **kw: opens.append(path) or real_load(path, **kw))
    build_cache(df, tmp_path / "c", data_root=tmp_path, size=32, workers=1, progress=False)
    assert len(opens) == 3
    ds = CachedImages(tmp_path / "c", df)
    for k in (0, 5, 9):
        box = ds.content_box(k)
        want = build_module.decode_row("a.nii", k, data_root=str(tmp_path), size=32, dtype="uint8", window="voi")
        np.testing.assert_array_equal(ds[k], want[0])
        assert box == want[1]
