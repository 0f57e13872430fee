"""`medssl study`: the label-efficiency grid (inits x modes x budgets x seeds), resumable, with a report."""

from __future__ import annotations

import argparse
import sys

EXAMPLES = """examples:
  medssl study --config configs/chexpert_study.yaml
  medssl study -c configs/demo.yaml --set study.budgets=[50,100,200] --set study.seeds=[0,1]
  medssl study -c configs/demo.yaml --set 'study.inits={random: random, mocov2: runs/moco/encoder.pt}'

Reads data.manifest (with a split column from `medssl split`), the budgets table (data.budgets,
default <manifest stem>.budgets.csv; missing budgets are drawn and saved), and the decoded cache.
Writes under study.output_dir: cells/<cell>.json (one per finished cell; a rerun skips them),
results.csv, label_efficiency.png, class_gains.png, report.md and report.html (one self-contained
page to open in a browser). With --set study.analyze=true, also analysis/<init>/ (`medssl analyze`:
kNN, retrieval, kernels, saliency, embedding), linked from the report.

Many GPUs or machines (all processes share study.output_dir, e.g. on NFS):
  medssl study -c study.yaml --prepare          # once: budgets, cache, pretraining of spec inits
  medssl study -c study.yaml --shard 0/4 &      # ... one process per shard, 0/4 .. 3/4, anywhere
  medssl study -c study.yaml --collect          # results.csv + report; lists missing cells
Cell k of the grid belongs to shard k mod n; a shard writes shards/<i>-of-<n>.json, never the
report. docker/slurm_study_array.sbatch (SLURM array) and docker/study_shards.sh (one machine,
one GPU per shard) run this."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "study", help="label-efficiency study: fine-tune every init at every budget and seed, report AUCs",
        description="Run the grid of study.inits x study.modes x study.budgets x study.seeds; each cell "
                    "fine-tunes on a nested labeled subset, selects on val and reports test AUC with "
                    "patient-bootstrap CIs. Finished cells are never rerun.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    from medssl.commands.common import add_config_args

    add_config_args(p)
    step = p.add_mutually_exclusive_group()
    step.add_argument("--prepare", action="store_true",
                      help="only build what shards share (budgets table, decoded cache, pretraining of spec "
                           "inits) and exit; run it once before the shards")
    step.add_argument("--shard", metavar="I/N",
                      help="run only the cells k with k mod N == I (0-based) and write shards/I-of-N.json; "
                           "no results.csv or report (see --collect). Needs --prepare first")
    step.add_argument("--collect", action="store_true",
                      help="train nothing: build results.csv, statistics and the report from the cell files; "
                           "exits non-zero listing the missing cells unless --allow-incomplete")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="with --collect: write the report of the finished cells even when some are missing")
    p.add_argument("--lock-timeout", type=float, default=24.0, metavar="HOURS",
                   help="a cell lock of another host older than this is reported as probably stale (the cell "
                        "is skipped and the command exits non-zero; it is never broken automatically). Default 24")
    p.set_defaults(func=run)


def run(args) -> int:
    from medssl.commands.common import load_from_args
    from medssl.errors import ConfigError
    from medssl.study import run_study
    from medssl.study.shards import parse_shard

    shard = parse_shard(args.shard) if args.shard is not None else None   # a bad I/N fails before any work
    cfg = load_from_args(args)
    if not cfg.data.manifest:
        raise ConfigError("data.manifest is not set; pass --config or --set data.manifest=PATH")
    if args.allow_incomplete and not args.collect:
        raise ConfigError("--allow-incomplete goes with --collect")
    if not args.lock_timeout > 0:
        raise ConfigError(f"--lock-timeout {args.lock_timeout:g}: give a positive number of hours")
    timeout_s = args.lock_timeout * 3600
    if args.prepare:
        from medssl.study.runner import prepare_study

        inits = prepare_study(cfg)
        print(f"medssl study: prepared {cfg.study.output_dir} (budgets, cache, inits: {sorted(inits)}); "
              "now start the shards: medssl study ... --shard I/N")
        return 0
    if shard is not None:
        from medssl.study.runner import run_shard

        record = run_shard(cfg, shard, lock_timeout_s=timeout_s)
        print(f"medssl study: shard {shard}: {len(record['ran'])} cells run, {len(record['already_done'])} already "
              f"finished, {len(record['held'])} being run by other processes (of {len(record['cells'])}); "
              f"record: {cfg.study.output_dir}/shards/{shard.label}.json")
        return 0
    if args.collect:
        from medssl.study.runner import collect_study

        results, report, missing = collect_study(cfg, allow_incomplete=args.allow_incomplete)
        if missing:
            print(f"medssl study: {len(missing)} cells missing, left out of the report: {', '.join(missing)}",
                  file=sys.stderr)
    else:
        results, report = run_study(cfg, lock_timeout_s=timeout_s)
    print(f"medssl study: {len(results)} cells; results: {report.parent / 'results.csv'}")
    print(f"medssl study: report: {report} and {report.with_suffix('.html')}")
    return 0
