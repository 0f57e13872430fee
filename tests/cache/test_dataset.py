import pickle
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import torch

from medssl.atomic import write_json, write_table
from medssl.cache import CachedImages, build_cache, open_cache, to_tensor
from medssl.cache import meta as M
from medssl.errors import CacheError


@pytest.fixture
def cache(png_data, tmp_path):
    df, root = png_data
    build_cache(df, tmp_path / "c", data_root=root, size=32, shard_size=3, workers=1, progress=False)
    return CachedImages(tmp_path / "c", df)


def test_get_batch_matches_items_in_any_order(cache):
    order = [6, 0, 4, 4, 2, 5, 1]               # unsorted, repeated, across all three shards
    batch = cache.get_batch(order)
    assert batch.shape == (7, 32, 32) and batch.dtype == np.uint8
    for j, i in enumerate(order):
        np.testing.assert_array_equal(batch[j], cache[i])
    assert cache.get_batch([]).shape == (0, 32, 32)


def test_items_are_zero_copy_memmap_views(cache):
    item = cache[4]
    assert isinstance(item.base, np.memmap) or isinstance(item, np.memmap)
    assert not item.flags.writeable
    with pytest.raises(IndexError):
        cache[7]


def test_tensors_are_float_unit_range(cache):
    t = cache.tensor(2)
    assert t.shape == (1, 32, 32) and t.dtype == torch.float32
    np.testing.assert_allclose(t[0].numpy(), cache[2] / 255.0, atol=1e-7)
    b = cache.batch_tensor([3, 1])
    assert b.shape == (2, 1, 32, 32) and torch.equal(b[1], cache.tensor(1))
    u16 = to_tensor(np.array([[0, 65535]], np.uint16))
    assert u16.tolist() == [[[0.0, 1.0]]]


def test_pickles_without_memmaps(cache):
    cache.get_batch(range(7))                    # opens the shards in this process
    blob = pickle.dumps(cache)
    assert len(blob) < 4000                      # index arrays only, no pixels
    clone = pickle.loads(blob)
    assert clone._shards is None
    np.testing.assert_array_equal(clone[5], cache[5])


def test_dataloader_with_two_workers(cache):
    loader = torch.utils.data.DataLoader(cache.as_tensors(), batch_size=3, num_workers=2, shuffle=False)
    got = torch.cat(list(loader))
    assert got.shape == (7, 1, 32, 32)
    assert torch.equal(got, cache.batch_tensor(range(7)))


def test_open_cache_refuses_missing_or_unfinished(tmp_path, png_data):
    with pytest.raises(CacheError, match="no cache in .*build one with `medssl cache"):
        open_cache(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / M.BUILD_FILE).write_text("{}")
    with pytest.raises(CacheError, match="incomplete"):
        open_cache(tmp_path / "half")


def _synthetic_cache(cache_dir, n: int, size: int = 8, shard_size: int = 4096) -> pd.DataFrame:
    """A cache of n images without decoding anything: sparse zero shards + index + meta.json."""
    manifest = pd.DataFrame({"path": [f"img{i:06d}.png" for i in range(n)]})
    keys = M.row_keys(manifest)
    n_shards = -(-n // shard_size)
    for k in range(n_shards):
        rows = min(shard_size, n - k * shard_size)
        np.lib.format.open_memmap(cache_dir / M.shard_name(k), mode="w+", dtype=np.uint8,
                                  shape=(rows, size, size)).flush()
    rows = np.arange(n)
    write_table(cache_dir / M.INDEX_FILE, pd.DataFrame({
        "key": keys, "shard": rows // shard_size, "offset": rows % shard_size, "top": 0, "left": 0,
        "height": size, "width": size, "src_height": size, "src_width": size, "ok": True}))
    settings = M.CacheSettings(size=size, shard_size=shard_size, resize="synthetic")
    write_json(cache_dir / M.META_FILE, {"format_version": M.FORMAT_VERSION, "settings": settings.describe(),
                                         "manifest_hash": M.manifest_hash(keys), "n_images": n, "n_ok": n,
                                         "n_failed": 0, "n_shards": n_shards})
    return manifest


def _retained_bytes(make) -> tuple[int, object]:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        obj = make()
        return tracemalloc.get_traced_memory()[0] - before, obj
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("with_manifest", [False, True])
def test_memory_per_image_is_a_few_numpy_bytes(tmp_path, with_manifest):
    """Memory held by a dataset of 40k vs 1k images: the difference per image must be what its
    numpy index costs (8-byte cache row + 8-byte item row + 4 x int16 box = 24 bytes), not Python
    objects (a dict or tuple per image would cost >= 100 bytes). Reading items opens memmaps, which
    do not grow the Python heap."""
    sizes = {}
    for n in (1_000, 40_000):
        d = tmp_path / f"n{n}"
        d.mkdir()
        manifest = _synthetic_cache(d, n)
        shuffled = manifest.sample(frac=1.0, random_state=0)   # forces the key-matching path
        held, ds = _retained_bytes(lambda: CachedImages(d, shuffled if with_manifest else None))
        assert len(ds) == n
        ds.get_batch(np.arange(0, n, 97))
        sizes[n] = (held, len(pickle.dumps(ds)))
    per_image = (sizes[40_000][0] - sizes[1_000][0]) / 39_000
    pickled_per_image = (sizes[40_000][1] - sizes[1_000][1]) / 39_000
    print(f"held {per_image:.1f} B/image, pickled {pickled_per_image:.1f} B/image")
    assert per_image <= 32, f"{per_image:.1f} bytes held per image"
    assert pickled_per_image <= 32, f"{pickled_per_image:.1f} pickled bytes per image"
