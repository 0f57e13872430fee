"""`medssl pretrain`: self-supervised pretraining from a config (MoCo v2, SimCLR, BYOL, triplet)."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  medssl pretrain --config configs/demo.yaml
  medssl pretrain -c configs/chexpert_mocov2_r18.yaml --set trainer.output_dir=runs/moco --set trainer.max_epochs=200
  medssl pretrain -c configs/chexpert_mocov2_r18.yaml --set trainer.output_dir=runs/moco --resume
  medssl pretrain -c configs/chexpert_mocov2_r18.yaml --resume runs/moco/checkpoints/last.ckpt
  medssl pretrain -c configs/chexpert_mocov2_r18.yaml --resume auto    # SLURM requeue / preemptible jobs
  medssl pretrain -c configs/demo.yaml --time-budget 10                  # epochs that fit into 10 minutes here
  torchrun --nproc_per_node 4 -m medssl.cli pretrain -c configs/chexpert_mocov2_r18.yaml --set trainer.devices=4

Reads data.manifest (train split, plus val with data.pretrain_splits [train, val]; label columns are
never read). trainer.max_epochs auto (the default) trains for trainer.min_samples two-view samples;
ssl.queue_size auto sizes the MoCo queue to the data; both are resolved once and saved. and the decoded cache at
cache.dir (default <manifest dir>/cache-<cache.size>). A missing cache is built first on a single
process; under torchrun/SLURM build it beforehand with `medssl cache`. Outputs go to
trainer.output_dir: checkpoints/last.ckpt (every trainer.checkpoint_every_n_steps steps and each
epoch), checkpoints/best.ckpt, logs/csv + logs/tensorboard, config.yaml, and encoder.pt +
encoder.json (the exported backbone for `medssl finetune` or plain MONAI)."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain", help="self-supervised pretraining of an encoder on the train split",
        description="Pretrain a MONAI encoder with MoCo v2, SimCLR, BYOL or triplet loss on patient-aware "
                    "pairs (instance or MICLe) from the decoded cache; resumable from its checkpoints.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    from medssl.commands.common import add_config_args
    add_config_args(p)
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CKPT|auto",
                   help="continue a run: from CKPT, or without a value from <trainer.output_dir>/checkpoints/last.ckpt "
                        "(an error if there is none); `auto` continues from last.ckpt when it exists and starts "
                        "fresh otherwise (for requeued jobs; a checkpoint file named auto: ./auto)")
    p.add_argument("--time-budget", type=float, metavar="MIN", default=None,
                   help="train for about MIN minutes: the epochs are set from a step time measured on this machine "
                        "(trainer.time_budget_min; an integer trainer.max_epochs is then an upper bound)")
    p.set_defaults(func=run)


def run(args) -> int:
    from medssl.commands.common import load_from_args
    from medssl.errors import ConfigError
    from medssl.ssl.train import run_dirs

    cfg = load_from_args(args)
    if args.time_budget is not None:
        cfg.trainer.time_budget_min = args.time_budget
    if not cfg.data.manifest:
        raise ConfigError("data.manifest is not set; pass --config with a data.manifest or --set data.manifest=PATH")
    dirs = run_dirs(cfg.trainer.output_dir)
    print(f"medssl pretrain: {cfg.ssl.method} ({cfg.ssl.pairs} pairs) on {cfg.model.arch}; outputs in {dirs['out']}")
    print(f"  checkpoints: {dirs['ckpt']}  logs: {dirs['logs']} (tensorboard --logdir {dirs['logs'] / 'tensorboard'})")
    from medssl.ssl.data import ensure_cache

    ensure_cache(cfg)
    from medssl.ssl.train import run_pretrain

    result = run_pretrain(cfg, resume=args.resume)
    print(f"medssl pretrain: done at epoch {result.epoch}, step {result.global_step}")
    print(f"  last checkpoint: {result.last_checkpoint}")
    if result.best_checkpoint:
        print(f"  best checkpoint: {result.best_checkpoint}")
    print(f"  encoder: {result.encoder} (+ {result.encoder.with_suffix('.json').name})")
    return 0
