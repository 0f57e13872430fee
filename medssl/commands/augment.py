"""`medssl augment`: preview an augmentation policy on manifest images, or show what a policy does."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  medssl augment preview -c configs/demo.yaml --manifest manifest.csv --out grid.png
  medssl augment preview -c configs/demo.yaml --n 8 --views 6 --seed 1 --out grid.png
  medssl augment preview -c configs/chexpert_mocov2_r18.yaml --cache cache-256 --out grid.png \\
      --set augment.params.rotate.degrees=5
  medssl augment show -c configs/ct_nifti_template.yaml      # resolved policy + what the modality allows
  medssl augment show --policy simclr --modality xray         # why a policy is refused

The policy comes from the config: augment.policy for pretraining (auto = <modality>-pretrain:
geometry + mild global brightness/contrast/gamma), augment.finetune_policy for full fine-tuning
(auto = <modality>-default: geometry only); named policies xray-pretrain, xray-default, ct-pretrain,
ct-default, mr-pretrain, mr-default, simclr, none; augment.params / finetune_params overrides (e.g.
{rotate: {degrees: 5}, noise: {p: 0.5}}), data.modality and model.input_size. Transforms that remove diagnostic signal for the modality are refused
unless augment.force_unsafe is true. The preview shows manifest rows (titled by row number, never
by patient id) as stored in the cache, then augmented views from the batched path training uses."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "augment", help="preview or inspect a modality-safe augmentation policy",
        description="Check an augmentation policy before training: a PNG grid of original and augmented "
                    "images for a few manifest rows, or the resolved policy and the modality's allowed set.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    from medssl.commands.common import add_config_args
    sub = p.add_subparsers(dest="augment_command", metavar="ACTION")
    sub.required = True

    pv = sub.add_parser("preview", help="write a grid PNG of originals and augmented views",
                        description="Augment a few manifest rows several times and write a grayscale grid.",
                        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    pv.add_argument("--manifest", "-m", default=None, help="manifest CSV/Parquet (default data.manifest)")
    pv.add_argument("--out", "-o", required=True, help="output PNG")
    pv.add_argument("--n", type=int, default=6, help="manifest rows to show (default 6)")
    pv.add_argument("--views", type=int, default=4, help="augmented views per row (default 4)")
    pv.add_argument("--seed", type=int, default=0, help="which rows and which augmentations (default 0)")
    pv.add_argument("--cache", default=None,
                    help="read rows from this decoded cache (default: cache.dir when it holds a cache, "
                         "else decode the images)")
    pv.add_argument("--data-root", default=None, help="where relative image paths resolve")
    pv.add_argument("--for", dest="purpose", choices=("pretrain", "finetune"), default="pretrain",
                    help="which policy: pretraining (augment.policy, default) or full fine-tuning "
                         "(augment.finetune_policy)")
    add_config_args(pv)
    pv.set_defaults(func=run)

    sh = sub.add_parser("show", help="print the resolved policy and the modality's allowed transforms",
                        description="Print a policy's transforms with their parameters and the bounds "
                                    "the modality allows; refusals are printed with their reasons.")
    sh.add_argument("--policy", default=None, help="policy name (default augment.policy)")
    sh.add_argument("--modality", default=None, help="xray, ct or mr (default data.modality)")
    sh.add_argument("--for", dest="purpose", choices=("pretrain", "finetune"), default="pretrain",
                    help="pretraining (default) or fine-tuning: the modality allows more intensity jitter "
                         "in pretraining")
    add_config_args(sh)
    sh.set_defaults(func=run)
    p.set_defaults(func=run)


def _policy(cfg, name=None, modality=None, purpose="pretrain"):
    from medssl.augment import policy_from_config
    return policy_from_config(cfg, purpose, name=name, modality=modality)


def _show(args, cfg) -> int:
    from medssl.augment.policies import allowed_set, bound_text, normalise_modality
    from medssl.errors import UnsafeAugmentationError

    modality = normalise_modality(args.modality or cfg.data.modality)
    try:
        print(_policy(cfg, args.policy, modality, args.purpose).describe())
        code = 0
    except UnsafeAugmentationError as e:
        print(f"REFUSED: {e}")
        code = 2
    print(f"\nallowed for {modality} {args.purpose} (anything else needs augment.force_unsafe):")
    for name, bounds in allowed_set(modality, args.purpose).items():
        limits = ", ".join(bound_text(k, side, v) for k, (side, v) in bounds.items())
        print(f"  {name:14s} {limits}")
    return code


def _cache_dir(args, cfg):
    from pathlib import Path
    if args.cache:
        return args.cache
    if cfg.cache.dir and (Path(cfg.cache.dir) / "meta.json").is_file():
        return cfg.cache.dir
    return None


def run(args) -> int:
    from medssl.commands.common import load_from_args

    cfg = load_from_args(args)
    if args.augment_command == "show":
        return _show(args, cfg)

    from medssl.augment.preview import write_preview
    from medssl.errors import ConfigError
    from medssl.manifest.table import load

    manifest = args.manifest or cfg.data.manifest
    if not manifest:
        raise ConfigError("no manifest: pass --manifest or set data.manifest in the config")
    aug = _policy(cfg, purpose=args.purpose)
    df = load(manifest, validate=False, columns=("frame",))
    out = write_preview(args.out, df, aug, n=args.n, views=args.views, seed=args.seed,
                        cache_dir=_cache_dir(args, cfg), data_root=args.data_root or cfg.data.data_root,
                        size=cfg.cache.size, dtype=cfg.cache.dtype, window=cfg.cache.window)
    print(f"wrote {out} ({min(args.n, len(df))} rows x {args.views} views, policy {aug.name})")
    return 0
