"""`medssl import-budgets`: published label-fraction split files -> medssl's budgets table."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  medssl import-budgets MedAug/label_fractions --manifest runs/cx/manifest.split.csv --out runs/cx/medaug.budgets.csv
  medssl import-budgets shenzhen_splits/ --manifest sz.split.csv --out sz.budgets.csv
  medssl import-budgets my_splits/ --manifest m.split.csv --out b.csv --pattern 'n(?P<budget>\\d+)_v(?P<seed>\\d+)$'

Recognised file names: MedAug's train_semi_<fraction>-it<k>.csv, MoCo-CXR's chexpert_like_<fraction>_<k>.csv,
and generic <...><budget>_<seed|it|rep|run|s|...><k>.csv or <...>_<budget>.csv; validation/test lists
(valid.csv, *_val.csv, *_test.csv) are skipped. Every listed image must be a TRAIN row of the manifest
(paths are matched exactly, relative to the data root, or by their longest suffix that is a manifest
path). Prints each subset's size, the path prefixes dropped, whether the subsets are nested per seed,
and the --set line that makes `medssl study` use exactly this grid (with --set data.budgets=OUT)."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import-budgets", help="import published label-fraction splits (MedAug, MoCo-CXR, ...) as a budgets table",
        description="Read a folder of CSV files, one per (label fraction or count, repetition), each listing "
                    "image paths, check them against the manifest's train split, and write the budgets table "
                    "(path, budget, seed) that `medssl finetune` / `medssl study` read.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="folder of split CSV files (searched recursively), or one CSV file")
    p.add_argument("--manifest", "-m", required=True, help="the split manifest (with a split column)")
    p.add_argument("--out", "-o", required=True, help="budgets table to write (.csv or .parquet)")
    p.add_argument("--pattern", help="regex on each file's path relative to FOLDER (no .csv) with named groups "
                                     "budget and optionally seed; replaces the built-in layouts")
    p.add_argument("--path-column", help="column holding the image paths (default: Path/path/filename/...)")
    p.add_argument("--budget-unit", choices=("auto", "fraction", "count"), default="auto",
                   help="how to read the budget in file names (default auto: decimals and %% are fractions, "
                        "integers counts, except 1 among fractions = 100%%)")
    p.add_argument("--data-root", help="where the manifest's paths resolve (default: its sidecar, else its folder)")
    p.set_defaults(func=run)


def run(args) -> int:
    from medssl.atomic import write_table
    from medssl.manifest import load
    from medssl.manifest.published_splits import import_budgets, study_overrides

    manifest = load(args.manifest, data_root=args.data_root)
    table, report = import_budgets(args.folder, manifest, pattern=args.pattern, path_column=args.path_column,
                                   budget_unit=args.budget_unit)
    write_table(args.out, table)
    print(report.text())
    print(f"wrote {args.out}: {len(table)} rows (path, budget, seed)")
    print(f"use it in a study: --set data.budgets={args.out} {study_overrides(table)}")
    return 0
