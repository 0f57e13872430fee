"""`medssl split`: patient-level train/val/test split and nested labeled budgets."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """examples:
  medssl split manifest.csv --out manifest.split.csv
  medssl split manifest.csv --out manifest.split.csv --val 0.1 --test 0.2 --seed 1 \\
      --budgets 250,500,1000,1% --seeds 0,1,2
  medssl split kermany.csv --out kermany.split.csv --keep-existing --val 0.1 --budgets 50,100,10%
  medssl split manifest.parquet --out split.parquet --unit patient --budgets 1000 -c configs/demo.yaml

Writes OUT with a `split` column and, with --budgets (or a --config with study.budgets), the table
<OUT stem>.budgets.csv (path, budget, seed) beside it. Budgets: 250 = 250 images, 0.01 or 1% = 1% of
the training images; smaller budgets are subsets of larger ones for the same seed.
Published label-fraction splits (MedAug, MoCo-CXR, ...) instead: `medssl import-budgets DIR --manifest OUT
--out BUDGETS.csv`."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "split", help="patient-level train/val/test split and nested labeled budgets",
        description="Assign every patient to one of train/val/test (stratified on labels, "
                    "deterministic per seed) and draw nested labeled subsets of the training images.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", help="input manifest (CSV or Parquet)")
    p.add_argument("--out", "-o", required=True, help="output manifest with a `split` column (.csv/.parquet)")
    p.add_argument("--val", type=float, default=None, help="fraction of patients for val (default data.val, 0.1)")
    p.add_argument("--test", type=float, default=None, help="fraction of patients for test (default data.test, 0.1)")
    p.add_argument("--seed", type=int, default=None, help="split seed (default data.split_seed, 0)")
    p.add_argument("--by", default="patient_id", help="column that groups images of one patient")
    p.add_argument("--labels", default=None,
                   help="comma-separated label columns to stratify on (default data.labels, else all)")
    p.add_argument("--no-stratify", dest="stratify", action="store_false", help="split at random by patient")
    p.add_argument("--keep-existing", action="store_true",
                   help="keep the manifest's official split (split/source_split column); blank rows and "
                        "missing requested splits are filled by patient")
    p.add_argument("--budgets", default=None,
                   help="comma-separated labeled budgets: counts (250) and/or fractions (0.01 or 1%%)")
    p.add_argument("--seeds", default=None, help="comma-separated budget seeds (default study.seeds, 0,1,2)")
    p.add_argument("--unit", choices=("image", "patient"), default="image",
                   help="draw budgets image by image, or whole patients (>= budget images)")
    from medssl.commands.common import add_config_args
    add_config_args(p)
    p.set_defaults(func=run)


def budgets_path(out: str | Path) -> Path:
    """Where `medssl split` writes the budgets table for manifest `out`: <stem>.budgets.csv."""
    out = Path(out)
    return out.with_name(f"{out.stem}.budgets.csv")


def _manifest_io():
    """(load, save) of the manifest stage; plain pandas + atomic write_table where it is absent."""
    try:
        from medssl.manifest.table import load, save
        return load, save
    except ImportError:
        pass
    import pandas as pd

    from medssl.atomic import write_table
    from medssl.errors import ManifestError

    def load(path):
        path = Path(path)
        if not path.is_file():
            raise ManifestError(f"manifest {path} does not exist; create one with `medssl manifest`")
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        text = ("path", "patient_id", "study_id", "view", "modality", "split", "source_split")
        return pd.read_csv(path, dtype={c: str for c in text})

    def save(df, path):
        write_table(path, df)

    return load, save


def run(args) -> int:
    import pandas as pd

    from medssl import splits
    from medssl.atomic import write_table
    from medssl.commands.common import load_from_args

    cfg = load_from_args(args)
    val = cfg.data.val if args.val is None else args.val
    test = cfg.data.test if args.test is None else args.test
    seed = cfg.data.split_seed if args.seed is None else args.seed
    labels = args.labels.split(",") if args.labels else cfg.data.labels
    budgets = splits.parse_budgets(args.budgets) if args.budgets else (
        list(cfg.study.budgets) if args.config else None)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(cfg.study.seeds)

    load_manifest, save_manifest = _manifest_io()
    df = load_manifest(Path(args.manifest))
    out = splits.patient_split(df, val=val, test=test, seed=seed, by=args.by, stratify=args.stratify,
                               keep_existing=args.keep_existing, labels=labels)
    splits.assert_no_leakage(out, by=args.by)
    table = None
    if budgets:
        table = splits.label_subsets(out, budgets, seeds, labels=labels, unit=args.unit, by=args.by)
    save_manifest(out, Path(args.out))
    print(f"wrote {args.out}: {len(out)} images, {out[args.by].nunique()} patients")
    with pd.option_context("display.width", 160, "display.max_columns", 50, "display.precision", 3):
        print(splits.split_summary(out, by=args.by, labels=labels).T.to_string())
    if table is not None:
        target = budgets_path(args.out)
        write_table(target, table)
        counts = table.groupby(["budget", "seed"], sort=False).size().unstack("seed")
        print(f"wrote {target}: labeled images per budget (rows) and seed (columns), unit={args.unit}")
        print(counts.to_string())
    return 0
