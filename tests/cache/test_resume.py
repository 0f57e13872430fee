"""An interrupted build keeps finished shards, never leaves a complete-looking half shard, and a
resumed build ends byte-identical to an uninterrupted one."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import medssl.io
from medssl.cache import CachedImages, build_cache, load_index
from medssl.cache import meta as M
from medssl.errors import CacheError

from .conftest import make_manifest

REPO = Path(__file__).resolve().parents[2]


def _build(df, root, out, **kw):
    return build_cache(df, out, data_root=root, size=32, shard_size=3, workers=1, progress=False, **kw)


def _assert_same_cache(a: Path, b: Path) -> None:
    for name in sorted(p.name for p in a.glob("shard-*.npy")):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    ia, ib = load_index(a), load_index(b)
    for col in M.INDEX_COLUMNS:
        np.testing.assert_array_equal(ia[col], ib[col])


def _finished_shards_are_whole(cache_dir: Path, n: int, shard_size: int) -> int:
    """Every shard-*.npy present has its index part and full shape; returns how many there are."""
    shards = sorted(cache_dir.glob("shard-*.npy"))
    for path in shards:
        k = int(path.stem.split("-")[1])
        assert (cache_dir / M.part_name(k)).is_file()
        rows = min(shard_size, n - k * shard_size)
        assert np.load(path, mmap_mode="r").shape == (rows, 32, 32)
    return len(shards)


def test_resume_after_interruption(png_data, tmp_path, monkeypatch):
    df, root = png_data
    _build(df, root, tmp_path / "fresh")
    real = medssl.io.read_image
    calls = []

    def interrupted(path, **kw):
        calls.append(path)
        if len(calls) == 5:                 # row 4: in the middle of shard 1 (rows 3-5)
            raise KeyboardInterrupt
        return real(path, **kw)

    monkeypatch.setattr(medssl.io, "read_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _build(df, root, tmp_path / "c")
    c = tmp_path / "c"
    assert not (c / M.META_FILE).exists() and (c / M.BUILD_FILE).exists()
    assert _finished_shards_are_whole(c, 7, 3) == 1 and not (c / M.shard_name(1)).exists()
    assert not list(c.glob(".*.tmp"))       # an exception cleans its temp file up
    with pytest.raises(CacheError, match="incomplete"):
        CachedImages(c)
    # what SIGKILL would leave: a stray temp shard; it must be ignored and removed
    (c / ".shard-00001.npy.abc123.tmp").write_bytes(b"\x93NUMPY half written")
    calls.clear()
    info = _build(df, root, c)
    assert (info.reused_shards, info.built_shards) == (1, 2)
    assert len(calls) == 4                  # only rows 3..6 were decoded again
    _assert_same_cache(c, tmp_path / "fresh")


def test_killed_after_the_last_shard_rebuilds_only_it(png_data, tmp_path, monkeypatch):
    """The last shard has no index part (it goes straight into index.parquet): a build killed
    between its rename and meta.json redoes that shard alone, and a one-shard build starts over."""
    import medssl.cache.build as build_module

    df, root = png_data
    _build(df, root, tmp_path / "fresh")

    def killed(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module, "_write_meta", killed)
    with pytest.raises(KeyboardInterrupt):
        _build(df, root, tmp_path / "c")
    c = tmp_path / "c"
    assert (c / M.shard_name(2)).is_file() and not (c / M.part_name(2)).exists()
    assert (c / M.part_name(1)).is_file() and (c / M.BUILD_FILE).is_file() and not (c / M.META_FILE).exists()
    monkeypatch.undo()
    info = _build(df, root, c)
    assert (info.reused_shards, info.built_shards) == (2, 1)
    _assert_same_cache(c, tmp_path / "fresh")
    # one shard: nothing to resume from, no build.json; the next run starts over and ends the same
    monkeypatch.setattr(build_module, "_write_meta", killed)
    with pytest.raises(KeyboardInterrupt):
        build_cache(df, tmp_path / "one", data_root=root, size=32, workers=1, progress=False)
    assert not (tmp_path / "one" / M.BUILD_FILE).exists()
    monkeypatch.undo()
    info = build_cache(df, tmp_path / "one", data_root=root, size=32, workers=1, progress=False)
    assert (info.reused_shards, info.built_shards, info.n_ok) == (0, 1, 7)


def test_resume_with_other_settings_is_refused(png_data, tmp_path, monkeypatch):
    df, root = png_data
    def interrupt(path, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(medssl.io, "read_image", interrupt)
    with pytest.raises(KeyboardInterrupt):
        _build(df, root, tmp_path / "c")
    monkeypatch.undo()
    with pytest.raises(CacheError, match="interrupted build for another manifest or other settings"):
        build_cache(df, tmp_path / "c", data_root=root, size=48, workers=1, progress=False)
    info = build_cache(df, tmp_path / "c", data_root=root, size=48, workers=1, progress=False, rebuild=True)
    assert info.size == 48 and info.n_ok == 7


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_mid_build_then_resume(tmp_path):
    root = tmp_path / "data"
    df = make_manifest(root, n=9)
    df.to_csv(tmp_path / "m.csv", index=False)
    script = textwrap.dedent(f"""
        import time, pandas as pd, medssl.io
        from medssl.cache import build_cache
        real = medssl.io.read_image
        def slow(path, **kw):
            time.sleep(0.15)
            return real(path, **kw)
        medssl.io.read_image = slow
        build_cache(pd.read_csv({str(tmp_path / 'm.csv')!r}), {str(tmp_path / 'c')!r},
                    data_root={str(root)!r}, size=32, shard_size=3, workers=1, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    c = tmp_path / "c"
    deadline = time.monotonic() + 60
    while not (c / M.shard_name(0)).exists():
        assert proc.poll() is None and time.monotonic() < deadline, "build ended before its first shard"
        time.sleep(0.02)
    time.sleep(0.2)                         # now inside shard 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (c / M.META_FILE).exists()
    assert 1 <= _finished_shards_are_whole(c, 9, 3) < 3
    info = _build(df, root, c)
    assert info.reused_shards >= 1 and info.n_ok == 9
    assert not list(c.glob(".*.tmp"))
    _build(df, root, tmp_path / "fresh")
    _assert_same_cache(c, tmp_path / "fresh")
