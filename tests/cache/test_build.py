import json

import numpy as np
import pandas as pd
import pytest

import medssl.io
from medssl.cache import CachedImages, build_cache, dequantise, open_cache, resize_pad
from medssl.cache.meta import row_keys
from medssl.errors import CacheError, ReaderError

from .conftest import write_png


def build(df, root, out, **kw):
    kw = {"size": 32, "shard_size": 3, "workers": 1, "progress": False, **kw}
    return build_cache(df, out, data_root=root, **kw)


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_round_trip_matches_reader_output_resized(png_data, tmp_path, dtype):
    df, root = png_data
    info = build(df, root, tmp_path / "c", dtype=dtype)
    assert (info.n_images, info.n_ok, info.n_failed, info.n_shards) == (7, 7, 0, 3)
    ds = CachedImages(tmp_path / "c", df)
    step = 1 / (255 if dtype == "uint8" else 65535)
    for i, rel in enumerate(df["path"]):
        stored = ds[i]
        assert stored.dtype == np.dtype(dtype) and stored.shape == (32, 32)
        source = medssl.io.read_image(root / rel).pixels
        expected, box = resize_pad(source, 32)
        assert ds.content_box(i) == box
        assert np.abs(dequantise(stored) - expected).max() <= step / 2 + 1e-6
        # independent of resize_pad: the image's mean brightness survives resizing
        top, left, h, w = box
        assert abs(dequantise(stored)[top:top + h, left:left + w].mean() - source.mean()) < 0.02


def test_aspect_kept_with_zero_padding_and_boxes(tmp_path):
    root = tmp_path / "data"
    write_png(root / "wide.png", np.full((40, 80), 1.0, np.float32))
    write_png(root / "tall.png", np.full((90, 30), 1.0, np.float32))
    df = pd.DataFrame({"path": ["wide.png", "tall.png"]})
    build(df, root, tmp_path / "c")
    ds = CachedImages(tmp_path / "c", df)
    assert ds.content_box(0) == (8, 0, 16, 32) and ds.content_box(1) == (0, 10, 32, 11)
    np.testing.assert_array_equal(ds.boxes, [[8, 0, 16, 32], [0, 10, 32, 11]])
    for i in range(2):
        top, left, h, w = ds.content_box(i)
        inside = np.zeros((32, 32), bool)
        inside[top:top + h, left:left + w] = True
        assert (ds[i][inside] == 255).all() and (ds[i][~inside] == 0).all()


def test_rebuild_is_a_no_op_and_subsets_open(png_data, tmp_path):
    df, root = png_data
    build(df, root, tmp_path / "c")
    before = (tmp_path / "c" / "meta.json").read_text()
    again = build(df.assign(Cardiomegaly=1.0, split="train"), root, tmp_path / "c")  # labels don't matter
    assert again.built_shards == 0 and (tmp_path / "c" / "meta.json").read_text() == before
    sub = df.iloc[[5, 1, 3]].reset_index(drop=True)   # a filtered, reordered manifest (e.g. one split)
    full, part = CachedImages(tmp_path / "c", df), CachedImages(tmp_path / "c", sub)
    for j, i in enumerate([5, 1, 3]):
        np.testing.assert_array_equal(part[j], full[i])
        assert part.content_box(j) == full.content_box(i)
    assert build(sub, root, tmp_path / "c").built_shards == 0    # a cache covering the rows is fine
    rows = CachedImages(tmp_path / "c", df, rows=[6, 0])
    np.testing.assert_array_equal(rows.get_batch([0, 1]), full.get_batch([6, 0]))


def test_stale_manifest_is_detected(png_data, tmp_path):
    df, root = png_data
    build(df.iloc[:5], root, tmp_path / "c")
    with pytest.raises(CacheError, match=r"2 of 7 rows are not in the cache.*--rebuild"):
        build(df, root, tmp_path / "c")
    with pytest.raises(CacheError, match=r"stale for this manifest: 2 of 7 rows.*img5.png"):
        CachedImages(tmp_path / "c", df)
    info = build(df, root, tmp_path / "c", rebuild=True)
    assert info.n_images == 7 and len(CachedImages(tmp_path / "c", df)) == 7


@pytest.mark.parametrize("change,expect", [
    ({"size": 48}, "size: cache has 32, requested 48"),
    ({"dtype": "uint16"}, "dtype: cache has 'uint8', requested 'uint16'"),
    ({"window": "40,400"}, "window: cache has 'voi', requested '40,400'"),
])
def test_changed_settings_are_detected(png_data, tmp_path, change, expect):
    df, root = png_data
    build(df, root, tmp_path / "c")
    with pytest.raises(CacheError, match=expect):
        build(df, root, tmp_path / "c", **change)
    key = next(iter(change))
    with pytest.raises(CacheError, match="built with other settings"):
        open_cache(tmp_path / "c", df, **change)
    assert len(open_cache(tmp_path / "c", df, size=32, dtype="uint8", window="voi")) == 7
    if key == "size":
        assert build(df, root, tmp_path / "c", rebuild=True, **change).size == 48


def test_frame_changes_the_row_key():
    a = pd.DataFrame({"path": ["x.dcm", "x.dcm"], "frame": [0, 1]})
    b = pd.DataFrame({"path": ["x.dcm"]})
    keys = row_keys(a)
    assert keys[0] != keys[1] and row_keys(b)[0] not in keys
    assert row_keys(a.iloc[[1, 0]]).tolist() == keys[::-1].tolist()


def test_on_error_skip_records_failures(png_data, tmp_path):
    df, root = png_data
    (root / "broken.png").write_bytes(b"this is not a png")
    df = pd.concat([df, pd.DataFrame({"path": ["broken.png", "missing.png"]})], ignore_index=True)
    with pytest.raises(ReaderError, match="broken.png"):
        build(df, root, tmp_path / "raise")
    assert not (tmp_path / "raise" / "meta.json").exists()
    info = build(df, root, tmp_path / "c", on_error="skip")
    assert (info.n_images, info.n_ok, info.n_failed) == (9, 7, 2)
    report = pd.read_csv(info.errors_path)
    assert report["path"].tolist() == ["broken.png", "missing.png"] and report["reason"].str.len().min() > 0
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert (meta["n_ok"], meta["n_failed"]) == (7, 2)
    with pytest.raises(CacheError, match="2 requested rows failed to decode"):
        CachedImages(tmp_path / "c", df)
    ds = CachedImages(tmp_path / "c", df, skip_failed=True)
    assert len(ds) == 7 and ds.rows.tolist() == list(range(7))
    assert len(CachedImages(tmp_path / "c", df.iloc[:7])) == 7   # the readable rows alone are fine


def test_parallel_build_equals_serial(png_data, tmp_path, monkeypatch):
    import medssl.cache.build as build_module

    df, root = png_data
    started = []
    real_pool = build_module.ProcessPoolExecutor
    monkeypatch.setattr(build_module, "ProcessPoolExecutor", lambda **kw: started.append(kw) or real_pool(**kw))
    build(df, root, tmp_path / "serial", workers=1)
    build(df, root, tmp_path / "small", workers=2)       # 7 tiny images: a pool would cost more than it saves
    assert started == []
    monkeypatch.setattr(build_module, "POOL_START_S", 0.0)
    build(df, root, tmp_path / "parallel", workers=2)
    assert started == [{"max_workers": 2}]
    a, b, c = (CachedImages(tmp_path / d) for d in ("serial", "parallel", "small"))
    for other in (b, c):
        np.testing.assert_array_equal(a.get_batch(range(7)), other.get_batch(range(7)))
        np.testing.assert_array_equal(a.boxes, other.boxes)
    assert (tmp_path / "serial" / "shard-00001.npy").read_bytes() == (tmp_path / "parallel" / "shard-00001.npy").read_bytes()


def test_volume_without_frame_is_refused_and_frames_pick_slices(tmp_path):
    import nibabel as nib

    z = np.arange(4, dtype=np.int16)                       # slice k holds the value 100 * k
    vol = np.broadcast_to(z * 100, (20, 12, 4)).copy()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "ct.nii.gz")
    with pytest.raises(ReaderError, match="4 frames.*`frame` column"):
        build(pd.DataFrame({"path": ["ct.nii.gz"]}), tmp_path, tmp_path / "c")
    df = pd.DataFrame({"path": ["ct.nii.gz"] * 4, "frame": [0, 1, 2, 3]})
    build(df, tmp_path, tmp_path / "c2")
    ds = CachedImages(tmp_path / "c2", df)
    values = []
    for i in range(4):
        top, left, h, w = ds.content_box(i)
        assert (h, w) in ((32, 19), (19, 32))              # a 20 x 12 slice, aspect kept
        content = ds[i][top:top + h, left:left + w]
        assert content.min() == content.max()              # one slice = one value
        values.append(int(content[0, 0]))
    assert sorted(values) == [0, 85, 170, 255]             # the volume's range spread over its slices


def test_duplicate_rows_are_refused(png_data, tmp_path):
    df, root = png_data
    with pytest.raises(CacheError, match="repeats an earlier"):
        build(pd.concat([df, df.iloc[[2]]]), root, tmp_path / "c")
