"""`medssl cache`: decode every manifest image once into a fixed-size memmapped cache."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  medssl cache manifest.csv --out cache-256
  medssl cache manifest.csv --out cache-512 --size 512 --dtype uint16 --workers 8
  medssl cache ct_slices.csv --out cache-ct --window lung --on-error skip
  medssl cache manifest.csv --out cache-256 --rebuild          # after changing images or settings
  medssl cache --info cache-256                               # what a cache holds

Images are resized keeping their aspect ratio (long side = --size) and padded with 0 to a square;
each image's content box is recorded. The build runs on all cores, shows progress, and resumes
where it stopped when interrupted. meta.json is written last: a cache without it is unfinished.
A cache whose manifest rows (path, frame) or settings differ is refused unless --rebuild; label
and split columns may change freely. Unreadable images stop the build (naming the file) unless
--on-error skip, which lists them in CACHE_DIR/errors.csv."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cache", help="decode images once into a fixed-size uint8/uint16 memmapped cache",
        description="Read every manifest row once (DICOM/NIfTI/PNG), fit it to SIZE x SIZE keeping the "
                    "aspect ratio, and store it in memory-mappable shards for fast training.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", nargs="?", help="manifest (CSV or Parquet) with path [, frame] columns")
    p.add_argument("--out", "-o", help="cache directory (default cache.dir, else <manifest dir>/cache-<size>)")
    p.add_argument("--data-root", default=None,
                   help="where relative image paths resolve (default data.data_root, else the manifest's folder)")
    p.add_argument("--size", type=int, default=None, help="square side in pixels (default cache.size, 256)")
    p.add_argument("--dtype", choices=("uint8", "uint16"), default=None, help="stored type (default uint8)")
    p.add_argument("--window", default=None,
                   help="voi (the file's window, default), none (per-image min-max), CENTER,WIDTH "
                        "or a CT preset (lung, mediastinum, soft-tissue, bone, brain)")
    p.add_argument("--shard-size", type=int, default=None, help="images per shard file (default 4096)")
    p.add_argument("--workers", "-j", type=int, default=None, help="processes; 0 = all cores (default)")
    p.add_argument("--on-error", choices=("raise", "skip"), default=None,
                   help="unreadable image: stop (raise, default) or record it and go on (skip)")
    p.add_argument("--rebuild", action="store_true", help="discard a stale or unfinished cache and rebuild")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--info", metavar="CACHE_DIR", help="print what the cache in CACHE_DIR holds and exit")
    from medssl.commands.common import add_config_args
    add_config_args(p)
    p.set_defaults(func=run)


def _pick(cli_value, config_value):
    return config_value if cli_value is None else cli_value


def run(args) -> int:
    from pathlib import Path

    from medssl.errors import ConfigError

    if args.info:
        from medssl.cache import cache_info

        info = cache_info(args.info)
        print(info.summary())
        print(f"manifest hash {info.manifest_hash}; shard size {info.shard_size}")
        return 0
    from medssl.commands.common import load_from_args

    cfg = load_from_args(args)
    manifest = args.manifest or cfg.data.manifest
    if not manifest:
        raise ConfigError("medssl cache needs a MANIFEST (or data.manifest in --config), or --info CACHE_DIR")
    size = _pick(args.size, cfg.cache.size)
    if size < 8:
        raise ConfigError(f"--size {size} is too small; use e.g. 256 or 512")
    out = args.out or cfg.cache.dir or str(Path(manifest).parent / f"cache-{size}")
    # None: the manifest's own data root (its sidecar, else its folder; see medssl.manifest.table)
    data_root = args.data_root or cfg.data.data_root

    from medssl.cache import build_cache

    info = build_cache(
        manifest, out, data_root=data_root, size=size, dtype=_pick(args.dtype, cfg.cache.dtype),
        window=_pick(args.window, cfg.cache.window), shard_size=_pick(args.shard_size, cfg.cache.shard_size),
        workers=_pick(args.workers, cfg.cache.workers), on_error=_pick(args.on_error, cfg.cache.on_error),
        progress=args.progress, rebuild=args.rebuild)
    if info.built_shards:
        rate = info.n_images / info.seconds if info.seconds else float("nan")
        resumed = f", resumed {info.reused_shards} shard(s)" if info.reused_shards else ""
        print(f"built {info.summary()} in {info.seconds:.1f} s ({rate:.1f} images/s{resumed})")
    else:
        print(f"up to date: {info.summary()}")
    if info.n_failed:
        print(f"{info.n_failed} image(s) could not be read and were skipped; see {info.errors_path}")
    return 0
