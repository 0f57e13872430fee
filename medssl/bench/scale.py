"""scale: manifest build, patient split, nested label budgets and dataset memory at CheXpert size.

Table: the real CheXpert train.csv when found ($MEDSSL_SHARED_DATA/metadata/chexpert_train.csv.gz,
else ../shared/data/metadata beside the repository), else (or with --synthetic) a CheXpert-shaped
CSV of --rows rows (about 3.5 images per patient over 1-n studies, frontal +- lateral views, 14
labels with 1/0/-1/blank). Every step runs in a fresh child process that reports its wall time
and peak RSS (VmHWM of that child, else its getrusage maxrss; and its RSS right after imports), so the
numbers are not polluted by this process:
  manifest   medssl.manifest.build("chexpert", csv, verify_files=False) (pseudonymised ids)
  splits     medssl.splits.patient_split + label_subsets (budgets 250..10000 x 3 seeds)
  dataset    a cache index + sparse memmap shards (--cache-size^2 uint8, no pixels on disk) for
             every manifest row, opened by medssl.cache.CachedImages: heap bytes and RSS growth per
             image, pickled size (what each DataLoader worker receives), RSS after reading images
"""

from __future__ import annotations

import argparse

#: Targets from the design brief (reported, never asserted).
TARGET_SPLITS_S = 10.0
TARGET_SPLITS_MB = 1024.0
BUDGETS = (250, 500, 1000, 2500, 5000, 10000)
SEEDS = (0, 1, 2)
CHEXPERT_ROWS = 223_414


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=CHEXPERT_ROWS,
                        help=f"rows of the synthetic table (default {CHEXPERT_ROWS}, CheXpert train)")
    parser.add_argument("--synthetic", action="store_true", help="synthesise the table even if the real one exists")
    parser.add_argument("--csv", default=None, help="a CheXpert-format CSV to use instead")
    parser.add_argument("--cache-size", type=int, default=256, help="image side of the synthetic cache (default 256)")
    parser.add_argument("--touch", type=int, default=500, help="images read from the cache for the RSS figure (default 500; reading holes of "
                             "the sparse shards is slower than reading a real cache)")


# ----------------------------------------------------------------------------- the table
def real_table():
    """Path of the real CheXpert train table, or None."""
    import os
    from pathlib import Path

    candidates = []
    if os.environ.get("MEDSSL_SHARED_DATA"):
        candidates.append(Path(os.environ["MEDSSL_SHARED_DATA"]))
    candidates.append(Path(__file__).resolve().parents[2].parent / "shared" / "data")
    for base in candidates:
        for name in ("chexpert_train.csv.gz", "chexpert_train.csv"):
            if (base / "metadata" / name).is_file():
                return base / "metadata" / name
    return None


def synthetic_chexpert(path, rows: int, seed: int = 0):
    """Write a CheXpert-shaped train CSV of exactly `rows` rows; returns its path.

    Patient structure like CheXpert train (223k images, 64.5k patients, 188k studies): studies
    per patient 1 + geometric (mean ~2.9), a lateral view in ~19% of studies."""
    import numpy as np
    import pandas as pd

    from medssl.manifest.schema import CHEXPERT_LABELS

    rng = np.random.default_rng(seed)
    n_patients = max(1, round(rows / 3.46))
    studies = 1 + rng.geometric(1 / 2.9, n_patients) - 1
    studies = np.minimum(studies, 60)
    patient_of_study = np.repeat(np.arange(n_patients), studies)
    study_no = np.concatenate([np.arange(1, k + 1) for k in studies])
    views = 1 + (rng.random(len(patient_of_study)) < 0.19)
    patient = np.repeat(patient_of_study, views)
    study = np.repeat(study_no, views)
    view_no = np.concatenate([np.arange(1, v + 1) for v in views])
    while len(patient) < rows:   # rare: too few images drawn; repeat the tail patients' studies
        patient = np.concatenate([patient, patient[: rows - len(patient)] + n_patients])
        study = np.concatenate([study, study[: rows - len(study)]])
        view_no = np.concatenate([view_no, view_no[: rows - len(view_no)]])
    patient, study, view_no = patient[:rows], study[:rows], view_no[:rows]
    frontal = view_no == 1
    paths = [f"CheXpert-v1.0-small/train/patient{p + 1:05d}/study{s}/view{v}_{'frontal' if f else 'lateral'}.jpg"
             for p, s, v, f in zip(patient, study, view_no, frontal)]
    table = {"Path": paths,
             "Sex": np.where(rng.random(rows) < 0.6, "Male", "Female"),
             "Age": rng.integers(18, 91, rows),
             "Frontal/Lateral": np.where(frontal, "Frontal", "Lateral"),
             "AP/PA": np.where(frontal, np.where(rng.random(rows) < 0.85, "AP", "PA"), "")}
    values = np.array([1.0, 0.0, -1.0, np.nan])
    for name in CHEXPERT_LABELS:
        table[name] = values[rng.choice(4, rows, p=[0.15, 0.12, 0.08, 0.65])]
    pd.DataFrame(table).to_csv(path, index=False)
    return path


# ----------------------------------------------------------------------------- child processes
def in_child(task: str, **kwargs) -> dict:
    """Run `task` (a function name of this module) in a fresh Python; returns its dict plus
    seconds (of the task), maxrss_mb (peak RSS of the child) and import_rss_mb (RSS before the task)."""
    import json
    import subprocess
    import sys

    from medssl.errors import MedsslError

    code = "from medssl.bench.scale import _child_main; _child_main()"
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps({"task": task, "kwargs": kwargs}),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise MedsslError(f"bench scale: child task {task} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc; 0 where unavailable)."""
    import os

    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError):  # pragma: no cover - not Linux
        return 0.0


def _rss_parts_mb() -> tuple[float, float]:
    """(anonymous, file-backed) resident MB of this process: memory-mapped cache pages are file-backed
    (page cache, reclaimable), data structures are anonymous."""
    parts = {"RssAnon:": 0.0, "RssFile:": 0.0}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key = line.split(":", 1)[0] + ":"
                if key in parts:
                    parts[key] = int(line.split()[1]) / 1e3   # kB
    except OSError:  # pragma: no cover - not Linux
        pass
    return parts["RssAnon:"], parts["RssFile:"]


def _maxrss_mb() -> float:
    """Peak RSS of this process in MB: /proc VmHWM (reset by exec), else getrusage maxrss (which on
    Linux keeps the high-water mark of the forked copy of the PARENT across exec, so a big parent
    such as `bench all` would inflate it)."""
    import resource
    import sys

    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1e3   # kB
    except OSError:  # pragma: no cover - not Linux
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1e6 if sys.platform == "darwin" else rss / 1e3   # bytes on macOS, KiB on Linux


def _child_main() -> None:
    import json
    import sys
    import time

    job = json.loads(sys.stdin.read())
    fn = globals()[f"_task_{job['task']}"]
    fn(warm=True, **job["kwargs"])        # imports only
    base = _rss_mb()
    t = time.perf_counter()
    out = fn(**job["kwargs"])
    out.update(seconds=time.perf_counter() - t, maxrss_mb=_maxrss_mb(), import_rss_mb=base)
    print(json.dumps(out))


def _task_manifest(csv: str, out: str, warm: bool = False) -> dict:
    import medssl.manifest as manifest

    if warm:
        return {}
    df = manifest.build("chexpert", csv, verify_files=False, salt="medssl-bench-scale")
    df.to_parquet(out)
    return {"rows": int(len(df)), "patients": int(df["patient_id"].nunique()),
            "studies": int(df["study_id"].nunique()), "labels": len(manifest.label_columns(df.columns))}


def _task_splits(manifest: str, warm: bool = False) -> dict:
    import time

    import pandas as pd

    from medssl import splits

    if warm:
        return {}
    t0 = time.perf_counter()
    df = pd.read_parquet(manifest)
    t1 = time.perf_counter()
    split = splits.patient_split(df, val=0.1, test=0.1, seed=0)
    t2 = time.perf_counter()
    n_train = int((split["split"] == "train").sum())
    budgets = [b for b in BUDGETS if b <= n_train]   # a tiny --rows table cannot hold the large ones
    subsets = splits.label_subsets(split, budgets, list(SEEDS))
    t3 = time.perf_counter()
    splits.assert_no_leakage(split)
    return {"read_s": t1 - t0, "patient_split_s": t2 - t1, "label_subsets_s": t3 - t2,
            "splits_and_subsets_s": t3 - t1, "train_rows": n_train,
            "subset_rows": int(len(subsets)), "budgets": budgets, "seeds": list(SEEDS)}


def _task_dataset(cache: str, manifest: str, touch: int, warm: bool = False) -> dict:
    import gc
    import pickle
    import time
    import tracemalloc

    import numpy as np
    import pandas as pd

    import torch  # noqa: F401  (imported here so its ~100 MB are not counted as growth below)

    from medssl.cache import CachedImages

    if warm:
        return {}
    df = pd.read_parquet(manifest, columns=["path"])
    gc.collect()
    rss0 = _rss_mb()
    t = time.perf_counter()
    images = CachedImages(cache)
    open_s = time.perf_counter() - t
    rss1 = _rss_mb()
    t = time.perf_counter()
    with_manifest = CachedImages(cache, df)
    open_manifest_s = time.perf_counter() - t
    # heap per image, traced separately (tracemalloc slows allocation down: not in the timings above)
    tracemalloc.start()
    again = CachedImages(cache)
    heap = tracemalloc.get_traced_memory()[0]
    again_manifest = CachedImages(cache, df)
    heap_manifest = tracemalloc.get_traced_memory()[0] - heap
    tracemalloc.stop()
    del again, again_manifest
    pickled = len(pickle.dumps(images))
    n = len(images)
    rss2 = _rss_mb()
    anon2, file2 = _rss_parts_mb()
    order = np.random.default_rng(0).integers(0, n, size=min(touch, n))
    t = time.perf_counter()
    for i in order:
        images.tensor(int(i))
    read_s = time.perf_counter() - t
    rss3 = _rss_mb()
    anon3, file3 = _rss_parts_mb()
    return {"images": n, "open_s": open_s, "open_with_manifest_s": open_manifest_s,
            "heap_bytes_per_image": heap / n, "heap_bytes_per_image_with_manifest": heap_manifest / len(with_manifest),
            "rss_growth_open_mb": rss1 - rss0, "rss_growth_both_open_mb": rss2 - rss0,
            "pickled_bytes": pickled, "pickled_bytes_per_image": pickled / n,
            "touched_images": int(len(order)), "touched_read_s": read_s,
            "rss_growth_after_touch_mb": rss3 - rss2, "anon_rss_growth_after_touch_mb": anon3 - anon2,
            "file_rss_growth_after_touch_mb": file3 - file2,
            "mapped_bytes_per_touched_image": (rss3 - rss2) * 1e6 / max(1, len(order))}


def write_sparse_cache(cache_dir, manifest, size: int, shard_size: int = 4096) -> None:
    """A complete medssl cache for every manifest row with no pixel data on disk: shards are sparse
    memmap files (holes read as zeros), the index and meta.json are real (medssl.cache.meta layout)."""
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from medssl import __version__
    from medssl.atomic import write_json, write_table
    from medssl.cache import meta as M
    from medssl.cache.resize import RESIZE_METHOD

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    keys = M.row_keys(manifest)
    n = len(keys)
    n_shards = -(-n // shard_size)
    for k in range(n_shards):
        rows = min(shard_size, n - k * shard_size)
        np.lib.format.open_memmap(cache_dir / M.shard_name(k), mode="w+", dtype=np.uint8,
                                  shape=(rows, size, size))   # truncate-extends: a sparse file
    r = np.arange(n)
    full = np.full(n, size, dtype=np.int32)
    write_table(cache_dir / M.INDEX_FILE, pd.DataFrame({
        "key": keys, "shard": (r // shard_size).astype(np.int32), "offset": (r % shard_size).astype(np.int32),
        "top": np.zeros(n, np.int32), "left": np.zeros(n, np.int32), "height": full, "width": full,
        "src_height": full, "src_width": full, "ok": np.ones(n, bool)}))
    settings = M.CacheSettings(size=size, dtype="uint8", window="voi", shard_size=shard_size, resize=RESIZE_METHOD)
    write_json(cache_dir / M.META_FILE, {
        "format_version": M.FORMAT_VERSION, "settings": settings.describe(), "manifest_hash": M.manifest_hash(keys),
        "n_images": n, "n_ok": n, "n_failed": 0, "n_shards": n_shards, "medssl_version": __version__,
        "created": "bench", "key": "blake2b-64 of 'path\\0frame' (see medssl.cache.meta)"})


# ----------------------------------------------------------------------------- the part
def run(args) -> dict:
    import os
    import tempfile
    import time
    from pathlib import Path

    from medssl.bench.common import format_table
    from medssl.errors import ConfigError

    if args.rows < 100:
        raise ConfigError("bench scale needs --rows >= 100")
    result: dict = {"settings": {"budgets": list(BUDGETS), "seeds": list(SEEDS), "cache_size": args.cache_size,
                                 "load_average_start": os.getloadavg(),
                                 "memory": "peak RSS (VmHWM, else getrusage maxrss) of a fresh child process per step"}}
    with tempfile.TemporaryDirectory(prefix="medssl-bench-scale-") as tmp:
        tmp = Path(tmp)
        csv = Path(args.csv) if args.csv else (None if args.synthetic else real_table())
        if csv is None:
            t = time.perf_counter()
            csv = synthetic_chexpert(tmp / "train.csv", args.rows)
            result["settings"]["table"] = f"synthetic CheXpert-shaped, {args.rows} rows"
            result["settings"]["synthesise_s"] = time.perf_counter() - t
        else:
            result["settings"]["table"] = f"real: {csv.name}"
        manifest = tmp / "manifest.parquet"
        result["manifest"] = in_child("manifest", csv=str(csv), out=str(manifest))
        s = in_child("splits", manifest=str(manifest))
        s["meets_target"] = s["splits_and_subsets_s"] < TARGET_SPLITS_S and s["maxrss_mb"] < TARGET_SPLITS_MB
        s.update(target_s_max=TARGET_SPLITS_S, target_mb_max=TARGET_SPLITS_MB)
        result["splits"] = s
        import pandas as pd

        t = time.perf_counter()
        write_sparse_cache(tmp / "cache", pd.read_parquet(manifest, columns=["path"]), args.cache_size)
        result["settings"]["sparse_cache_write_s"] = time.perf_counter() - t
        result["dataset"] = in_child("dataset", cache=str(tmp / "cache"), manifest=str(manifest), touch=args.touch)
    result["settings"]["load_average_end"] = os.getloadavg()
    print(format_table(_rows(result), ("step", "seconds", "peak MB", "note")))
    return result


def _rows(result: dict) -> list[tuple]:
    m, s, d = result["manifest"], result["splits"], result["dataset"]
    return [
        ("manifest build (chexpert)", m["seconds"], m["maxrss_mb"],
         f"{m['rows']} rows, {m['patients']} patients, {m['studies']} studies"),
        ("patient_split", s["patient_split_s"], None, "val 0.1, test 0.1, stratified"),
        ("label_subsets", s["label_subsets_s"], None, f"{len(s['budgets'])} budgets x {len(s['seeds'])} seeds"),
        ("splits + subsets", s["splits_and_subsets_s"], s["maxrss_mb"],
         f"target < {s['target_s_max']:g} s and < {s['target_mb_max']:g} MB: "
         f"{'met' if s['meets_target'] else 'NOT met'}"),
        ("CachedImages open", d["open_s"], d["maxrss_mb"],
         f"{d['images']} images: {d['heap_bytes_per_image']:.1f} heap B/image, "
         f"RSS +{d['rss_growth_open_mb']:.1f} MB, pickle {d['pickled_bytes_per_image']:.1f} B/image"),
        ("CachedImages + manifest", d["open_with_manifest_s"], None,
         f"{d['heap_bytes_per_image_with_manifest']:.1f} heap B/image"),
        (f"read {d['touched_images']} images", d["touched_read_s"], None,
         f"RSS +{d['rss_growth_after_touch_mb']:.1f} MB, of which anonymous +{d['anon_rss_growth_after_touch_mb']:.1f} "
         "MB (the rest: mapped page cache, reclaimable)"),
    ]
