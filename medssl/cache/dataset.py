"""Read a decoded cache: map-style access to uint8/uint16 (size, size) arrays with zero decode cost.

Memory: the dataset holds only numpy arrays (cache row, content box per item, about 24 bytes per
item) and opens the shard memmaps lazily in each process, so it pickles small for DataLoader
workers and creates no Python object per image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medssl.cache import meta as M
from medssl.cache.resize import QUANT_MAX
from medssl.errors import CacheError


def load_index(cache_dir) -> dict[str, np.ndarray]:
    """The cache's index table as numpy arrays (columns of `meta.INDEX_COLUMNS`)."""
    import pyarrow.parquet as pq

    path = Path(cache_dir) / M.INDEX_FILE
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as e:
        raise CacheError(f"{path} is unreadable ({e}); rebuild the cache with --rebuild") from e
    return {c: table.column(c).to_numpy() for c in M.INDEX_COLUMNS}


def match_rows(cache_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Cache row of each key (int64), -1 where the key is not in the cache."""
    order = np.argsort(cache_keys, kind="stable")
    pos = np.searchsorted(cache_keys, keys, sorter=order)
    pos = np.minimum(pos, len(order) - 1)
    found = order[pos]
    return np.where(cache_keys[found] == keys, found, -1).astype(np.int64)


class CachedImages:
    """Map-style view of a cache: item i is the stored (size, size) uint8/uint16 array.

    manifest (DataFrame or path, optional): item i is manifest row i, located in the cache by its
    (path, frame) key, so a filtered or reordered manifest (e.g. one split) works; a row missing
    from the cache raises CacheError (stale cache). Rows that failed to decode (built with
    on_error="skip") raise CacheError unless skip_failed=True, which drops them; `rows` then says
    which manifest rows remain. rows: optional subset (indices into the manifest, or into the
    cache when no manifest is given).
    """

    def __init__(self, cache_dir, manifest=None, rows=None, *, skip_failed: bool = False):
        self.cache_dir = Path(cache_dir)
        self.meta = M.read_meta(self.cache_dir)
        settings = self.meta["settings"]
        self.size = int(settings["size"])
        self.dtype = np.dtype(settings["dtype"])
        self.shard_size = int(settings["shard_size"])
        index = load_index(self.cache_dir)
        if manifest is not None:
            manifest = M.as_manifest(manifest)
            keys = M.row_keys(manifest)
            if M.manifest_hash(keys) == self.meta["manifest_hash"]:
                cache_rows = np.arange(len(keys), dtype=np.int64)
            else:
                cache_rows = match_rows(index["key"], keys)
                missing = np.flatnonzero(cache_rows < 0)
                if len(missing):
                    raise CacheError(
                        f"the cache in {self.cache_dir} is stale for this manifest: {len(missing)} of "
                        f"{len(keys)} rows are not in it (e.g. {manifest['path'].iloc[missing[0]]!r}); "
                        f"rebuild with `medssl cache MANIFEST --out {self.cache_dir} --rebuild`")
        else:
            cache_rows = np.arange(len(index["key"]), dtype=np.int64)
        item_rows = np.arange(len(cache_rows), dtype=np.int64)
        if rows is not None:
            item_rows = np.asarray(rows, dtype=np.int64).reshape(-1)
            if len(item_rows) and (item_rows.min() < 0 or item_rows.max() >= len(cache_rows)):
                raise CacheError(f"rows must index 0..{len(cache_rows) - 1}; got values outside")
            cache_rows = cache_rows[item_rows]
        bad = ~index["ok"][cache_rows]
        if bad.any():
            if not skip_failed:
                raise CacheError(
                    f"{int(bad.sum())} requested rows failed to decode when the cache was built (see "
                    f"{self.cache_dir / M.ERRORS_FILE}); drop them from the manifest or pass skip_failed=True")
            cache_rows, item_rows = cache_rows[~bad], item_rows[~bad]
        #: manifest (or cache) row of each item
        self.rows = item_rows
        self._cache_rows = cache_rows
        self._boxes = np.stack([index[c][cache_rows] for c in ("top", "left", "height", "width")],
                               axis=1).astype(np.int16 if self.size < 32768 else np.int32)
        self._shards: list[np.ndarray] | None = None

    # -- pickling: memmaps are reopened lazily in each process
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_shards"] = None
        return state

    def _open(self) -> list[np.ndarray]:
        if self._shards is None:
            shards = []
            for k in range(int(self.meta["n_shards"])):
                path = self.cache_dir / M.shard_name(k)
                try:
                    shards.append(np.load(path, mmap_mode="r"))
                except (OSError, ValueError) as e:
                    raise CacheError(f"{path} is missing or corrupt ({e}); rebuild with --rebuild") from e
            self._shards = shards
        return self._shards

    def __len__(self) -> int:
        return len(self._cache_rows)

    def _locate(self, i: int) -> tuple[int, int]:
        r = int(self._cache_rows[i])
        return r // self.shard_size, r % self.shard_size

    def __getitem__(self, i: int) -> np.ndarray:
        """Stored (size, size) uint8/uint16 array of item i: a read-only memmap view (no copy)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} out of range for {len(self)} images")
        shard, offset = self._locate(i)
        return self._open()[shard][offset]

    def content_box(self, i: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the image inside the padded canvas of item i."""
        return tuple(int(v) for v in self._boxes[i])

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) int array of content boxes (top, left, height, width), one per item."""
        return self._boxes

    def get_batch(self, indices) -> np.ndarray:
        """Stored pixels of several items as one (B, size, size) array, in the order given.

        Reads each shard's rows in sorted order (sequential disk access), then restores the order.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty((len(indices), self.size, self.size), dtype=self.dtype)
        if len(indices) == 0:
            return out
        rows = self._cache_rows[indices]
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        shard_of = sorted_rows // self.shard_size
        shards = self._open()
        for k in np.unique(shard_of):
            sel = shard_of == k
            out[order[sel]] = shards[int(k)][sorted_rows[sel] - int(k) * self.shard_size]
        return out

    def tensor(self, i: int):
        """float32 torch tensor (1, size, size) in [0, 1] of item i."""
        return to_tensor(self[i])

    def batch_tensor(self, indices):
        """float32 torch tensor (B, 1, size, size) in [0, 1]."""
        return to_tensor(self.get_batch(indices)).unsqueeze(1)

    def as_tensors(self) -> "TensorView":
        """A map-style dataset over the same items returning float32 (1, size, size) tensors."""
        return TensorView(self)


def to_tensor(stored: np.ndarray):
    """uint8/uint16 cache pixels (..., H, W) -> float32 torch tensor in [0, 1]; (H, W) gets a channel axis."""
    import torch

    scale = np.float32(1.0 / QUANT_MAX[str(stored.dtype)])
    t = torch.from_numpy(np.multiply(stored, scale, dtype=np.float32))
    return t.unsqueeze(0) if t.ndim == 2 else t


class TensorView:
    """Items of a CachedImages as float32 (1, S, S) tensors (for a plain torch DataLoader)."""

    def __init__(self, images: CachedImages):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images.tensor(i)


def open_cache(cache_dir, manifest=None, *, size: int | None = None, dtype: str | None = None,
               window: str | None = None, rows=None, skip_failed: bool = False) -> CachedImages:
    """Open a complete cache, refusing one that is stale for `manifest` or has other settings.

    size/dtype/window: what the caller expects (None: accept what is there).
    """
    images = CachedImages(cache_dir, manifest, rows, skip_failed=skip_failed)
    have = images.meta["settings"]
    want = {"size": size, "dtype": dtype,
            "window": None if window is None else M.window_text(window)}
    diffs = [f"{k}: cache has {have[k]!r}, expected {v!r}" for k, v in want.items()
             if v is not None and have[k] != v]
    if diffs:
        raise CacheError(f"the cache in {cache_dir} was built with other settings ({'; '.join(diffs)}); "
                         f"rebuild it with `medssl cache MANIFEST --out {cache_dir} --rebuild` and the "
                         "settings you want, or point to another cache")
    return images
