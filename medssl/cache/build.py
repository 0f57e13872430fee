"""Build a decoded cache: every manifest row read once, fitted to size x size, stored as uint8/uint16.

Layout and validity rules are in `medssl.cache.meta`. The build is parallel over processes
(chunks of rows), writes each shard through `medssl.atomic` (an `open_memmap` on the temp path,
so memory stays flat), and is resumable: a shard and its index part are kept once renamed into
place; an interrupted shard leaves only a `.shard-*.tmp` file, which is removed on the next run.
`meta.json` is written last, so its presence means the cache is complete.

Fixed costs per build are kept to a few milliseconds (`medssl bench io` compares the build with a
bare decode + resize): one fsync per written file, `build.json` and index parts only where a later
shard could resume from them (the last shard's part goes straight into index.parquet), the index
written from numpy arrays with pyarrow, and a process pool only when the decode time measured on
the first chunk says it pays for its start-up. Rows of one NIfTI volume in a chunk share one open
volume (`medssl.io.nifti.NiftiVolume`) instead of re-reading it per slice.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medssl import __version__
from medssl.atomic import atomic_path, write_json, write_table
from medssl.cache import meta as M
from medssl.cache.resize import RESIZE_METHOD, quantise, resize_pad, to_unit_range
from medssl.errors import CacheError, MedsslError, ReaderError

log = logging.getLogger(__name__)

#: Rows per task sent to a worker process (upper bound; smaller for small shards).
MAX_CHUNK = 32


@dataclass
class CacheInfo:
    """Summary of a cache after `build_cache` (or of an existing one, via `cache_info`)."""

    cache_dir: Path
    n_images: int
    n_ok: int
    n_failed: int
    size: int
    dtype: str
    window: str
    shard_size: int
    n_shards: int
    manifest_hash: str
    built_shards: int = 0          # shards decoded by this call (0: the cache was already up to date)
    reused_shards: int = 0         # shards kept from an interrupted build
    seconds: float = 0.0
    errors_path: Path | None = None

    def summary(self) -> str:
        failed = f", {self.n_failed} failed (see {self.errors_path})" if self.n_failed else ""
        return (f"{self.cache_dir}: {self.n_ok}/{self.n_images} images, {self.size}x{self.size} "
                f"{self.dtype}, window={self.window}, {self.n_shards} shard(s){failed}")


# ----------------------------------------------------------------------------- decoding one row
def resolve_path(path: str, data_root: str | None) -> str:
    p = Path(path)
    if data_root is not None and not p.is_absolute():
        p = Path(data_root) / p
    return str(p)


def decode_row(path: str, frame: int, *, data_root: str | None, size: int, dtype: str, window,
               volume=None):
    """Read one manifest row and fit it into the cache format.

    volume: an open `medssl.io.nifti.NiftiVolume` of this row's file (rows of one 3D volume,
    `frame` = slice); the row is then read from it, with the same result as from the file.
    Returns (stored uint8/uint16 (size, size), content box (top, left, h, w), source (h, w)).
    Raises ReaderError naming the file for anything that goes wrong.
    """
    from medssl import io

    full = resolve_path(path, data_root)
    try:
        image = volume.read_slice(frame) if volume is not None else \
            io.read_image(full, window=window, **_frame_args(io, full, frame))
    except MedsslError:
        raise
    except Exception as e:  # a reader bug or an unexpected file: still name the file
        raise ReaderError(full, f"{type(e).__name__}: {e}") from e
    pixels = image.pixels
    if pixels.ndim == 3 and pixels.shape[0] == 1:
        pixels = pixels[0]
    if pixels.ndim == 3:
        raise ReaderError(full, f"is a volume/multi-frame image with {pixels.shape[0]} frames; the cache "
                                "stores 2D images: add a `frame` column to the manifest (one row per "
                                "frame or slice)")
    if pixels.ndim != 2:
        raise ReaderError(full, f"has pixel shape {pixels.shape}; the cache needs a 2D (H, W) image")
    if window == "none" or image.meta.get("units") not in (None, "unit"):
        pixels = to_unit_range(pixels)  # modality units (e.g. HU): per-image min-max to [0, 1]
    canvas, box = resize_pad(pixels, size)
    return quantise(canvas, dtype), box, pixels.shape


def _frame_args(io, path: str, frame: int) -> dict:
    """read_image arguments selecting manifest `frame` (-1: none).

    DICOM / 4D NIfTI: the frame (volume) index. A 3D NIfTI volume has no frames, so there
    `frame` is the slice index along the first axis of the (D, H, W) array read_image returns.
    """
    if frame < 0:
        return {}
    if io.detect_format(path) == "nifti" and len(io.read_header(path).get("shape") or ()) == 3:
        return {"slice_axis": 0, "slice_index": int(frame)}
    return {"frame": int(frame)}


def _source_groups(paths, frames) -> list[np.ndarray]:
    """Positions of the rows of each source file (first-seen order; slices in frame order)."""
    groups: dict[str, list[int]] = {}
    for j, path in enumerate(paths):
        groups.setdefault(path, []).append(j)
    return [np.array(sorted(js, key=lambda j: frames[j]), dtype=np.int64) for js in groups.values()]


def _open_volume(path: str, frames, opts):
    """A NiftiVolume for several slice rows (frame >= 0) of one 3D NIfTI file, else None (rows are read
    one by one, which also reports any error in the row's own words)."""
    if len(frames) < 2 or min(frames) < 0:
        return None
    from medssl import io
    from medssl.io.nifti import NiftiVolume

    full = resolve_path(path, opts["data_root"])
    try:
        if io.detect_format(full) != "nifti":
            return None
        return NiftiVolume.open(full, window=opts["window"], slice_axis=0)
    except MedsslError:
        return None


def _decode_chunk(job):
    """Worker task: decode rows; failures are returned as reasons, never raised (the parent decides).

    Rows of one source file are decoded together, so a NIfTI volume is opened once per chunk
    (and closed before the next file: at most one open volume per worker).
    """
    rows, paths, frames, opts = job
    n, size = len(rows), opts["size"]
    images = np.zeros((n, size, size), dtype=opts["dtype"])
    boxes = np.zeros((n, 6), dtype=np.int32)   # top, left, height, width, src_height, src_width
    ok = np.zeros(n, dtype=bool)
    reasons: list[str | None] = [None] * n
    for group in _source_groups(paths, frames):
        volume = _open_volume(paths[group[0]], frames[group], opts)
        if volume is not None:
            group = group[volume.file_order(frames[group])]   # a .nii.gz then decompresses once
        try:
            for j in group:
                try:
                    images[j], box, src = decode_row(paths[j], frames[j], volume=volume, **opts)
                except ReaderError as e:
                    reasons[j] = e.reason
                    continue
                except MedsslError as e:
                    reasons[j] = str(e)
                    continue
                boxes[j] = (*box, *src)
                ok[j] = True
        finally:
            if volume is not None:
                volume.close()
    return rows, images, boxes, ok, reasons


# ----------------------------------------------------------------------------- the build
def _workers(workers: int) -> int:
    if workers and workers > 0:
        return workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _owned_files(cache_dir: Path) -> list[Path]:
    """Files a cache build creates (and may delete); anything else in the directory is left alone."""
    names = {M.META_FILE, M.INDEX_FILE, M.ERRORS_FILE, M.BUILD_FILE}
    out = [p for p in cache_dir.iterdir() if p.name in names]
    out += list(cache_dir.glob("shard-*.npy")) + list(cache_dir.glob("shard-*.index.npz"))
    out += list(cache_dir.glob(".shard-*.tmp")) + [p for p in cache_dir.glob(".*.tmp")
                                                    if p.name[1:].split(".")[0] in
                                                    {"meta", "index", "errors", "build"}]
    return out


def _clear(cache_dir: Path) -> None:
    for p in _owned_files(cache_dir):
        p.unlink(missing_ok=True)


def _stale_message(cache_dir: Path, diffs: list[str], missing: int, n: int, example: str | None) -> str:
    parts = list(diffs)
    if missing:
        parts.append(f"manifest changed: {missing} of {n} rows are not in the cache (e.g. {example})")
    return (f"the cache in {cache_dir} does not match the request ({'; '.join(parts)}). "
            "Rebuild it with --rebuild (rebuild=True), or choose another --out directory.")


def _index_keys(cache_dir: Path) -> np.ndarray:
    import pyarrow.parquet as pq

    return pq.read_table(cache_dir / M.INDEX_FILE, columns=["key"]).column("key").to_numpy()


def build_cache(manifest_df, cache_dir, *, data_root=None, size: int = 256, dtype: str = "uint8",
                window="voi", shard_size: int = 4096, workers: int = 0, on_error: str = "raise",
                progress: bool = True, rebuild: bool = False) -> CacheInfo:
    """Decode every manifest row into `cache_dir` (see module docstring); resumable and idempotent.

    manifest_df: DataFrame (or CSV/Parquet path) with `path` and optionally `frame`; relative paths
    resolve against `data_root`. window: "voi", "none" (per-image min-max) or "C,W"/(C, W).
    workers=0 uses all cores, 1 decodes in this process. on_error: "raise" (first unreadable file
    raises ReaderError) or "skip" (recorded in errors.csv and the index as not ok).
    A complete cache with the same settings that covers every row is left as is; a different one
    raises CacheError unless rebuild=True.
    """
    t0 = time.perf_counter()
    if on_error not in ("raise", "skip"):
        raise CacheError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if dtype not in ("uint8", "uint16"):
        raise CacheError(f"dtype must be 'uint8' or 'uint16', got {dtype!r}")
    if size < 8:
        raise CacheError(f"size {size} is too small; use e.g. 256 or 512")
    if shard_size < 1:
        raise CacheError(f"shard_size must be >= 1, got {shard_size}")
    manifest = M.as_manifest(manifest_df)
    if len(manifest) == 0:
        raise CacheError("the manifest has no rows; nothing to cache")
    cache_dir = Path(cache_dir)
    window_text = M.window_text(window)
    settings = M.CacheSettings(size=int(size), dtype=dtype, window=window_text,
                               shard_size=int(shard_size), resize=RESIZE_METHOD)
    keys = M.row_keys(manifest)
    dup = _first_duplicate(keys)
    if dup is not None:
        raise CacheError(f"manifest row {dup} repeats an earlier (path, frame): "
                         f"{manifest['path'].iloc[dup]!r}; remove duplicate rows before caching")
    mhash = M.manifest_hash(keys)
    n = len(keys)
    if data_root is None:  # medssl.manifest.load records where the manifest's paths resolve
        data_root = manifest.attrs.get("data_root")
    cache_dir.mkdir(parents=True, exist_ok=True)

    existing = M.read_json(cache_dir / M.META_FILE)
    if existing is not None:
        diffs = M.settings_differences(existing.get("settings", {}), settings)
        if existing.get("format_version") != M.FORMAT_VERSION:
            diffs.insert(0, f"format version {existing.get('format_version')} != {M.FORMAT_VERSION}")
        missing, example = 0, None
        if not diffs and existing.get("manifest_hash") != mhash:
            absent = ~np.isin(keys, _index_keys(cache_dir))
            missing = int(absent.sum())
            example = manifest["path"].iloc[int(np.argmax(absent))] if missing else None
        if not diffs and not missing:
            log.info("cache %s is up to date", cache_dir)
            return cache_info(cache_dir)
        if not rebuild:
            raise CacheError(_stale_message(cache_dir, diffs, missing, n, example))
        log.info("rebuilding %s", cache_dir)
        _clear(cache_dir)

    plan = {"format_version": M.FORMAT_VERSION, "settings": settings.describe(),
            "manifest_hash": mhash, "n_images": n}
    unfinished = M.read_json(cache_dir / M.BUILD_FILE)
    if unfinished is not None and unfinished != plan:
        if not rebuild:
            raise CacheError(f"{cache_dir} holds an interrupted build for another manifest or other "
                             "settings; pass --rebuild (rebuild=True) to discard it, or choose another --out")
        _clear(cache_dir)
        unfinished = None
    for tmp in cache_dir.glob(".shard-*.tmp"):   # half-written shards of a killed build
        tmp.unlink(missing_ok=True)
    if unfinished is None:
        _clear(cache_dir)   # build.json is written below, before the first shard another one follows

    n_shards = math.ceil(n / shard_size)
    todo = [k for k in range(n_shards) if not _shard_complete(cache_dir, k, shard_size, n, settings)]
    reused = n_shards - len(todo)
    if reused:
        log.info("resuming %s: %d of %d shard(s) already built", cache_dir, reused, n_shards)

    opts = {"data_root": None if data_root is None else str(data_root), "size": settings.size,
            "dtype": dtype, "window": M.parse_window(window_text)}
    paths = manifest["path"].astype(str).to_numpy()
    frames = M.frames_of(manifest)
    n_todo = sum(len(_shard_rows(k, shard_size, n)) for k in todo)
    from tqdm.auto import tqdm

    bar = tqdm(total=n_todo, disable=not progress or n_todo == 0, unit="img", desc="medssl cache")
    decoder = _Decoder(min(_workers(workers), max(1, n_todo)), n_todo)
    parts: dict[int, dict] = {}           # index parts of the shards built here
    plan_written = unfinished is not None
    n_ok = None

    def write_index(last_part=None, k=None) -> None:
        nonlocal n_ok
        n_ok = _write_index(cache_dir, n_shards, settings, n, paths, frames, {**parts, k: last_part})

    try:
        for i, k in enumerate(todo):
            # a part file (and build.json, which says whose parts they are) only matters to a later
            # run resuming this one, i.e. when another shard follows; the last part goes straight
            # into index.parquet, written while that shard is being fsynced
            last = i == len(todo) - 1
            if not last and not plan_written:
                write_json(cache_dir / M.BUILD_FILE, plan)
                plan_written = True
            parts[k] = _build_shard(cache_dir, k, _shard_rows(k, shard_size, n), paths, frames, opts, keys,
                                    decoder, on_error, bar, write_part=not last,
                                    alongside=(lambda part, k=k: write_index(part, k)) if last else None)
    finally:
        bar.close()
        decoder.close()
    if n_ok is None:   # every shard was already built (a build killed just before meta.json)
        write_index()

    # meta.json last: every shard and the index are fsynced and in place by now
    _write_meta(cache_dir, n_shards, settings, mhash, n, n_ok)
    info = cache_info(cache_dir)
    info.built_shards, info.reused_shards = len(todo), reused
    info.seconds = time.perf_counter() - t0
    if info.n_failed:
        log.warning("%d of %d images could not be read; they are listed in %s",
                    info.n_failed, n, info.errors_path)
    return info


def _first_duplicate(keys: np.ndarray) -> int | None:
    _, first = np.unique(keys, return_index=True)
    if len(first) == len(keys):
        return None
    seen = np.zeros(len(keys), dtype=bool)
    seen[first] = True
    return int(np.argmin(seen))


def _shard_rows(k: int, shard_size: int, n: int) -> range:
    return range(k * shard_size, min((k + 1) * shard_size, n))


def _shard_complete(cache_dir: Path, k: int, shard_size: int, n: int, settings: M.CacheSettings) -> bool:
    """A shard counts as built when both it and its index part exist and have the expected shapes."""
    shard, part = cache_dir / M.shard_name(k), cache_dir / M.part_name(k)
    if not (shard.is_file() and part.is_file()):
        return False
    rows = _shard_rows(k, shard_size, n)
    try:
        arr = np.load(shard, mmap_mode="r")
        with np.load(part) as z:
            part_ok = len(z["ok"]) == len(rows) and int(z["start"]) == rows.start
    except (OSError, ValueError, KeyError):
        return False
    return part_ok and arr.shape == (len(rows), settings.size, settings.size) and str(arr.dtype) == settings.dtype


def _chunks(rows: range, n_workers: int):
    """Consecutive row ranges: about 4 per worker (load balance), at most MAX_CHUNK rows (one
    worker: MAX_CHUNK, so that the slices of a volume share one open volume)."""
    step = MAX_CHUNK if n_workers <= 1 else max(1, min(MAX_CHUNK, math.ceil(len(rows) / (n_workers * 4))))
    for start in range(rows.start, rows.stop, step):
        yield range(start, min(start + step, rows.stop))


#: Seconds a process pool costs before it decodes faster than this process (start-up of the
#: workers, their first imports, shipping results back): 16 uncompressed 2k DICOMs built 0.13 s
#: slower with a 2-process pool than in one process on a loaded 2-core machine.
POOL_START_S = 0.3


class _Decoder:
    """Runs decode chunks in this process, or in a process pool when that pays off.

    With more than one worker, the first chunk is decoded here and timed; a pool starts only when
    the remaining rows at that rate save more than POOL_START_S across the workers (a build of a
    few cheap images stays in one process). One worker never starts a pool.
    """

    def __init__(self, n_workers: int, n_rows: int):
        self.n_workers, self.rows_left = n_workers, n_rows
        self.pool: ProcessPoolExecutor | None = None
        self.decided = n_workers <= 1

    def results(self, jobs: list):
        """(rows, images, boxes, ok, reasons) per job, in completion order."""
        jobs = list(jobs)
        while jobs and not self.decided:
            t = time.perf_counter()
            got = _decode_chunk(jobs.pop(0))
            self._decide((time.perf_counter() - t) / max(1, len(got[0])), len(got[0]))
            yield got
        if self.pool is None:
            yield from (_decode_chunk(j) for j in jobs)
        else:
            yield from (f.result() for f in as_completed([self.pool.submit(_decode_chunk, j) for j in jobs]))

    def _decide(self, s_per_row: float, done: int) -> None:
        self.rows_left -= done
        saved = s_per_row * self.rows_left * (1 - 1 / self.n_workers)
        if saved > POOL_START_S:
            self.pool = ProcessPoolExecutor(max_workers=self.n_workers)
        self.decided = True

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _reserve_blocks(f) -> None:
    """Allocate the open shard file's blocks now: a full disk then fails here with ENOSPC, which
    atomic_path reports cleanly, rather than in the middle of the writes."""
    if not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return  # a file system without fallocate: nothing to reserve with
        raise


def _build_shard(cache_dir, k, rows, paths, frames, opts, keys, decoder, on_error, bar, *,
                 write_part: bool, alongside=None) -> dict:
    """Decode shard k's rows into shard-k.npy (plain writes at each row's offset, so the shard is
    never held in memory); returns its index part, also written as shard-k.index.npz when
    write_part. The part is renamed into place before the shard: a shard on disk with its part
    is complete. alongside(part), if given, runs in a thread while the shard is fsynced and
    renamed, and has finished (or raised) when this returns."""
    n_rows, size, dtype = len(rows), opts["size"], np.dtype(opts["dtype"])
    boxes = np.zeros((n_rows, 6), dtype=np.int32)
    ok = np.zeros(n_rows, dtype=bool)
    reasons: dict[int, str] = {}
    jobs = [(np.arange(c.start, c.stop), paths[c.start:c.stop], frames[c.start:c.stop], opts)
            for c in _chunks(rows, decoder.n_workers)]
    row_bytes = size * size * dtype.itemsize
    with ThreadPoolExecutor(max_workers=1) as side:
        job = writeback = None
        with atomic_path(cache_dir / M.shard_name(k)) as tmp:
            with open(tmp, "wb") as f:
                np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                         "fortran_order": False, "shape": (n_rows, size, size)})
                data_start = f.tell()
                f.truncate(data_start + n_rows * row_bytes)   # rows that fail stay zero
                _reserve_blocks(f)
                for got_rows, images, got_boxes, got_ok, got_reasons in decoder.results(jobs):
                    local = got_rows - rows.start
                    if on_error == "raise" and not got_ok.all():
                        j = int(np.argmin(got_ok))
                        raise ReaderError(resolve_path(paths[got_rows[j]], opts["data_root"]),
                                          got_reasons[j] + " (pass --on-error skip to leave such rows out)")
                    f.seek(data_start + int(local[0]) * row_bytes)   # a chunk is consecutive rows
                    f.write(np.ascontiguousarray(images, dtype=dtype).data)
                    boxes[local], ok[local] = got_boxes, got_ok
                    reasons.update({int(r): why for r, why in zip(got_rows, got_reasons) if why is not None})
                    bar.update(len(got_rows))
                    if writeback is None or writeback.done():
                        # write the rows so far to disk while the next chunk decodes, so that the
                        # shard's closing fsync finds (almost) nothing left to write
                        f.flush()
                        writeback = side.submit(_datasync, f.fileno())
                if writeback is not None:
                    writeback.result()   # before the file (and its descriptor) is closed
            fail_rows = np.array(sorted(reasons), dtype=np.int64)
            part = {"start": rows.start, "boxes": boxes, "ok": ok, "key": keys[rows.start:rows.stop],
                    "fail_rows": fail_rows, "fail_reasons": np.array([reasons[r] for r in fail_rows], dtype=str)}
            if write_part:
                with atomic_path(cache_dir / M.part_name(k)) as part_tmp, open(part_tmp, "wb") as f:
                    np.savez(f, **part)
            if alongside is not None:   # two fsyncs at once cost about one
                job = side.submit(alongside, part)
            # leaving the block fsyncs the shard and renames it into place: only now does it count as built
        if job is not None:
            job.result()
    return part


def _datasync(fd: int) -> None:
    getattr(os, "fdatasync", os.fsync)(fd)   # no fdatasync on macOS / Windows


def _read_part(cache_dir: Path, k: int) -> dict:
    with np.load(cache_dir / M.part_name(k)) as z:
        return {name: z[name] for name in ("start", "boxes", "ok", "key", "fail_rows", "fail_reasons")}


def _write_index(cache_dir: Path, n_shards: int, settings: M.CacheSettings, n: int, paths, frames,
                 parts: dict) -> int:
    """Merge the index parts (in memory for shards built now, on disk for reused ones) into
    index.parquet and errors.csv; returns the number of rows decoded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ordered = [parts[k] if parts.get(k) is not None else _read_part(cache_dir, k) for k in range(n_shards)]
    boxes = np.concatenate([p["boxes"] for p in ordered])
    ok = np.concatenate([p["ok"] for p in ordered])
    rows = np.arange(n)
    columns = {"key": np.concatenate([p["key"] for p in ordered]).astype(np.uint64),
               "shard": (rows // settings.shard_size).astype(np.int32),
               "offset": (rows % settings.shard_size).astype(np.int32)}
    for i, name in enumerate(("top", "left", "height", "width", "src_height", "src_width")):
        columns[name] = np.ascontiguousarray(boxes[:, i])
    columns["ok"] = ok
    with atomic_path(cache_dir / M.INDEX_FILE) as tmp:
        pq.write_table(pa.table(columns), tmp)
    fail_rows = np.concatenate([p["fail_rows"] for p in ordered]).astype(np.int64)
    errors_path = cache_dir / M.ERRORS_FILE
    if len(fail_rows):
        import pandas as pd

        fail_reasons = np.concatenate([p["fail_reasons"] for p in ordered])
        write_table(errors_path, pd.DataFrame({"path": paths[fail_rows], "frame": frames[fail_rows],
                                               "reason": fail_reasons}))
    else:
        errors_path.unlink(missing_ok=True)
    return int(ok.sum())


def _write_meta(cache_dir: Path, n_shards: int, settings: M.CacheSettings, mhash: str, n: int, n_ok: int) -> None:
    """meta.json (the cache is complete from here on), then drop the index parts and build.json."""
    write_json(cache_dir / M.META_FILE, {
        "format_version": M.FORMAT_VERSION, "settings": settings.describe(), "manifest_hash": mhash,
        "n_images": n, "n_ok": n_ok, "n_failed": n - n_ok, "n_shards": n_shards,
        "medssl_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "key": "blake2b-64 of 'path\\0frame' (see medssl.cache.meta)"})
    for k in range(n_shards):
        (cache_dir / M.part_name(k)).unlink(missing_ok=True)
    (cache_dir / M.BUILD_FILE).unlink(missing_ok=True)


def cache_info(cache_dir) -> CacheInfo:
    """CacheInfo of a complete cache (CacheError when it is missing or unfinished)."""
    cache_dir = Path(cache_dir)
    meta = M.read_meta(cache_dir)
    s = meta["settings"]
    errors = cache_dir / M.ERRORS_FILE
    return CacheInfo(cache_dir=cache_dir, n_images=meta["n_images"], n_ok=meta["n_ok"],
                     n_failed=meta["n_failed"], size=s["size"], dtype=s["dtype"], window=s["window"],
                     shard_size=s["shard_size"], n_shards=meta["n_shards"],
                     manifest_hash=meta["manifest_hash"],
                     errors_path=errors if errors.is_file() else None)
