"""`medssl study`: the label-efficiency grid (inits x modes x budgets x seeds), resumable, with a report."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  medssl study --config configs/chexpert_study.yaml
  medssl study -c configs/demo.yaml --set study.budgets=[50,100,200] --set study.seeds=[0,1]
  medssl study -c configs/demo.yaml --set 'study.inits={random: random, mocov2: runs/moco/encoder.pt}'

Reads data.manifest (with a split column from `medssl split`), the budgets table (data.budgets,
default <manifest stem>.budgets.csv; missing budgets are drawn and saved), and the decoded cache.
Writes under study.output_dir: cells/<cell>.json (one per finished cell; a rerun skips them),
results.csv, label_efficiency.png, class_gains.png and report.md."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "study", help="label-efficiency study: fine-tune every init at every budget and seed, report AUCs",
        description="Run the grid of study.inits x study.modes x study.budgets x study.seeds; each cell "
                    "fine-tunes on a nested labeled subset, selects on val and reports test AUC with "
                    "patient-bootstrap CIs. Finished cells are never rerun.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    from medssl.commands.common import add_config_args

    add_config_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from medssl.commands.common import load_from_args
    from medssl.errors import ConfigError
    from medssl.study import run_study

    cfg = load_from_args(args)
    if not cfg.data.manifest:
        raise ConfigError("data.manifest is not set; pass --config or --set data.manifest=PATH")
    results, report = run_study(cfg)
    print(f"medssl study: {len(results)} cells; results: {report.parent / 'results.csv'}")
    print(f"medssl study: report: {report}")
    return 0
