"""What a cache holds and how to tell whether it matches a manifest and settings.

Files in a cache directory:
  shard-00000.npy ...   uint8/uint16 (n, size, size); row r lives in shard r // shard_size at
                        offset r % shard_size (rows that failed to decode stay all-zero)
  index.parquet         one row per cache row: key, shard, offset, top, left, height, width,
                        src_height, src_width, ok
  errors.csv            path, frame, reason of rows that failed (only with on_error="skip")
  meta.json             written LAST: its presence means the cache is complete

Row keys and the manifest hash: a row is identified by its manifest `path` string (as written in
the manifest, not resolved, so moving the data root keeps the cache valid) and its `frame`
(-1 when the manifest has no frame). The key is a 64-bit BLAKE2b hash of "path\\0frame", stored
as uint64 (no paths, hence no PHI-bearing strings, in the index). The manifest hash is SHA-256
over the ordered keys. Labels, splits and other columns do not affect the pixels, so changing
them keeps the cache valid. An image file edited in place under the same path is NOT detected:
rebuild with `--rebuild` after changing source files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from medssl.errors import CacheError

FORMAT_VERSION = 1
META_FILE = "meta.json"
INDEX_FILE = "index.parquet"
ERRORS_FILE = "errors.csv"
BUILD_FILE = "build.json"          # settings of an unfinished build (for resume)
INDEX_COLUMNS = ("key", "shard", "offset", "top", "left", "height", "width",
                 "src_height", "src_width", "ok")


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.npy"


def part_name(k: int) -> str:
    """Index rows of shard k while a build is running (merged into index.parquet at the end)."""
    return f"shard-{k:05d}.index.npz"


@dataclass(frozen=True)
class CacheSettings:
    """Everything that decides the cached pixels besides the rows themselves."""

    size: int = 256
    dtype: str = "uint8"
    window: str = "voi"
    shard_size: int = 4096
    resize: str = ""

    def describe(self) -> dict:
        return asdict(self)


def parse_window(window):
    """Window text/tuple -> reader argument: "voi", "none" or (center, width) (medssl.io's rules, presets too)."""
    from medssl.io.window import parse_window as io_parse_window

    return io_parse_window(window)


def window_text(window) -> str:
    """Canonical text of a window setting as stored in meta.json: "voi", "none" or "C,W"."""
    parsed = parse_window(window)
    return parsed if isinstance(parsed, str) else f"{parsed[0]:g},{parsed[1]:g}"


def frames_of(manifest) -> np.ndarray:
    """int64 frame per manifest row: the `frame` column, or -1 where absent/blank."""
    n = len(manifest)
    if "frame" not in manifest.columns:
        return np.full(n, -1, dtype=np.int64)
    frames = manifest["frame"].to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isnan(frames), -1, frames).astype(np.int64)


def row_keys(manifest) -> np.ndarray:
    """uint64 key per manifest row from (path, frame); see the module docstring."""
    if "path" not in manifest.columns:
        raise CacheError("the manifest has no `path` column; create it with `medssl manifest`")
    paths = manifest["path"].astype(str).to_numpy()
    frames = frames_of(manifest).tolist()
    blake2b = hashlib.blake2b
    # one bytes object of all 8-byte digests, read as little-endian uint64 in one go
    digests = b"".join(blake2b(f"{p}\0{f}".encode(), digest_size=8).digest() for p, f in zip(paths, frames))
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def manifest_hash(keys: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(keys, dtype="<u8").tobytes()).hexdigest()


def read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CacheError(f"{path} is unreadable ({e}); delete the cache directory and rebuild") from e


def read_meta(cache_dir: str | Path) -> dict:
    """meta.json of a complete cache, or CacheError explaining what is there instead."""
    cache_dir = Path(cache_dir)
    meta = read_json(cache_dir / META_FILE)
    if meta is None:
        if (cache_dir / BUILD_FILE).is_file():
            raise CacheError(f"the cache in {cache_dir} is incomplete (its build was interrupted); "
                             f"run `medssl cache MANIFEST --out {cache_dir}` again to finish it")
        raise CacheError(f"no cache in {cache_dir} (meta.json missing); "
                         f"build one with `medssl cache MANIFEST --out {cache_dir}`")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CacheError(f"{cache_dir} holds a cache of format {meta.get('format_version')}, this medssl "
                         f"reads format {FORMAT_VERSION}; rebuild it with --rebuild")
    return meta


def settings_differences(have: dict, want: CacheSettings) -> list[str]:
    """Human-readable differences between stored settings and requested ones ([] when equal)."""
    diffs = []
    for name, value in want.describe().items():
        if have.get(name) != value:
            diffs.append(f"{name}: cache has {have.get(name)!r}, requested {value!r}")
    return diffs


def as_manifest(manifest):
    """A manifest DataFrame from a DataFrame or a CSV/Parquet path (via medssl.manifest when it has a loader)."""
    import pandas as pd

    if isinstance(manifest, pd.DataFrame):
        return manifest
    path = Path(manifest)
    try:
        from medssl.manifest import load as load_manifest  # the manifest stage's reader, when present
    except ImportError:
        load_manifest = None
    if load_manifest is not None:
        return load_manifest(path)
    if not path.is_file():
        raise CacheError(f"manifest {path} does not exist; create one with `medssl manifest`")
    df = pd.read_parquet(path) if path.suffix == ".parquet" else \
        pd.read_csv(path, dtype={"path": str}, low_memory=False)
    df.attrs["data_root"] = str(path.resolve().parent)   # relative paths resolve beside the manifest
    return df
