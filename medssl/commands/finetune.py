"""`medssl finetune`: train and evaluate one cell (init x mode x budget x seed)."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """examples:
  medssl finetune -c configs/demo.yaml --init random --mode linear --budget 250 --seed 0 --out runs/ft/random
  medssl finetune -c cfg.yaml --init runs/pretrain/last.ckpt --mode full --budget 1% --out runs/ft/moco-full
  medssl finetune -c cfg.yaml --init backbone.pt --set finetune.uncertainty=ones --set finetune.epochs=10 --out o/

Needs a split manifest (data.manifest, from `medssl split`), its budgets table (data.budgets, default
<manifest stem>.budgets.csv) when --budget is given, and the decoded cache (cache.dir, from `medssl cache`).
Hyperparameters (C, k, or learning rate and epoch) are selected on the labelled val subset
(study.val_labels: by default no more val images than training labels); the test split is
predicted only after selection.
Writes OUT/best.pt, history.json, val_predictions.csv, predictions.csv (test), metrics.json, roc.png
and result.json; probes (linear, knn) cache encoder features under finetune.feature_dir (default OUT/features)."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune", help="logistic or kNN probe, or full fine-tuning, on a labeled budget; test metrics with CIs",
        description="Train a multi-label classifier on one labeled subset (budget, seed) from a random or "
                    "pretrained encoder, select its hyperparameters on validation AUC, then predict and evaluate the test split.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    from medssl.commands.common import add_config_args

    add_config_args(p)
    p.add_argument("--init", default=None,
                   help="'random' or a weights file: medssl checkpoint, exported backbone or plain MONAI state "
                        "dict (default finetune.init)")
    p.add_argument("--mode", choices=("linear", "knn", "full"), default=None,
                   help="linear: L2 logistic regression on frozen features (C chosen on val); knn: cosine kNN "
                        "on frozen features (k chosen on val); full: train everything, one run per "
                        "finetune.lr_grid value (default finetune.mode)")
    p.add_argument("--budget", default=None,
                   help="labeled training images: a count (250) or fraction (0.01 or 1%%); default "
                        "finetune.budget, else all training images")
    p.add_argument("--seed", type=int, default=None, help="budget / training seed (default finetune.budget_seed)")
    p.add_argument("--manifest", default=None, help="split manifest (overrides data.manifest)")
    p.add_argument("--out", "-o", required=True, help="output directory of this cell")
    p.set_defaults(func=run)


def load_manifest(path: str | Path):
    from medssl.manifest.table import load

    return load(path)


def open_images(cfg, manifest_df):
    """The decoded cache (cache.dir, default <manifest dir>/cache-<size>), image i = manifest row i."""
    import numpy as np

    from medssl.ssl.data import open_images as open_cache

    return open_cache(cfg, manifest_df, np.arange(len(manifest_df)))


def run(args) -> int:
    from medssl import atomic
    from medssl.commands.common import load_from_args
    from medssl.errors import ConfigError
    from medssl.evaluate import json_safe
    from medssl.finetune.run import augment_from_config, finetune_cell
    from medssl.splits import load_budgets, parse_budget

    cfg = load_from_args(args)
    if args.manifest:
        cfg.data.manifest = args.manifest
    manifest_path = cfg.data.manifest
    if not manifest_path:
        raise ConfigError("no manifest: set data.manifest in the config or pass --manifest "
                          "(a split manifest written by `medssl split`)")
    init = args.init or cfg.finetune.init
    mode = args.mode or cfg.finetune.mode
    budget = parse_budget(args.budget) if args.budget is not None else (
        parse_budget(cfg.finetune.budget) if cfg.finetune.budget is not None else None)
    seed = cfg.finetune.budget_seed if args.seed is None else args.seed
    manifest = load_manifest(manifest_path)
    budgets = None
    if budget is not None:
        from medssl.commands.split import budgets_path

        budgets = load_budgets(cfg.data.budgets or budgets_path(manifest_path))
    images = open_images(cfg, manifest)
    augment = augment_from_config(cfg) if mode == "full" else None
    result = finetune_cell(cfg, manifest_df=manifest, images=images, budgets_df=budgets, init=init, mode=mode,
                           budget=budget, seed=seed, out_dir=args.out, augment=augment)
    atomic.write_json(Path(args.out) / "result.json", json_safe(result))
    print(f"{mode} from {init}: {result['n_labeled']} labeled training + {result['n_val_labeled']} labelled val "
          f"images; selected {result['selected']} ({result['val_score_name']} {result['val_score']:.4f})")
    print(f"test mean AUC {result['mean_auc']:.4f} [{result['mean_auc_ci_low']:.4f}, "
          f"{result['mean_auc_ci_high']:.4f}]  ->  {args.out}")
    return 0
