"""`medssl analyze`: feature analysis of one encoder (kNN, retrieval, kernels, saliency, embedding)."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """examples:
  medssl analyze random --data medssl-demo/manifest.split.csv -c configs/demo.yaml --out runs/analysis/random
  medssl analyze runs/moco/encoder.pt --data manifest.split.csv --compare runs/simclr/encoder.pt --fast
  medssl analyze runs/moco/encoder.pt --data m.csv --classifier runs/study/cells/moco__full__100__seed0/best.pt
  medssl analyze enc.pt --data m.csv --site-column meta_site --set model.input_size=224 cache.size=256

ENCODER: "random" (the study's random init, drawn from the config's seed) or any weights file medssl
loads (checkpoint, exported backbone, MONAI state dict, torchvision/torchxrayvision, safetensors).
MANIFEST: a split manifest (`medssl split`); the decoded cache (cache.dir, default <manifest
dir>/cache-<size>) is built when missing. Writes into OUT: knn.json + knn.md (per-class test AUC of
a cosine kNN probe, k chosen on val), retrieval.png + retrieval.json (test queries and their
nearest training images, same patient excluded), kernels.png (first conv filters vs the random
init and --compare encoders), saliency.png (Grad-CAM with --classifier on a CNN, and occlusion;
without --classifier, occlusion on a logistic probe), embedding.png + embedding.csv (PCA/t-SNE,
by label and by site) and index.md. File names are fixed; figures carry labels, never ids or paths."""


def register(subparsers) -> None:
    from medssl.commands.common import add_config_args

    p = subparsers.add_parser(
        "analyze", help="feature analysis of an encoder: kNN AUCs, retrieval, first-layer kernels, saliency, embedding",
        description="Encode every train/val/test image with a frozen encoder, then write a kNN evaluation, a "
                    "nearest-neighbour retrieval grid, the first-layer kernels, saliency maps and a 2-D "
                    "embedding coloured by label and site, with an index.md linking them.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("encoder", metavar="ENCODER", help="'random' or a weights file")
    p.add_argument("--data", required=True, metavar="MANIFEST", help="split manifest (sets data.manifest)")
    p.add_argument("--out", "-o", default="runs/analysis", help="output folder (default: runs/analysis)")
    p.add_argument("--classifier", metavar="BEST_PT",
                   help="a full fine-tuning cell's best.pt: Grad-CAM (CNN) and occlusion on it")
    p.add_argument("--compare", action="append", default=[], metavar="ENCODER",
                   help="another encoder whose first-layer kernels are drawn beside (repeatable)")
    p.add_argument("--fast", action="store_true", help="embedding by PCA only (no t-SNE)")
    p.add_argument("--site-column", help="manifest column of the site panel (default: first of meta_site, "
                                         "meta_source, source_split, modality present)")
    p.add_argument("--queries", type=int, default=4, help="retrieval queries (test images; default 4)")
    p.add_argument("--neighbours", "--neighbors", type=int, default=5, help="neighbours per query (default 5)")
    p.add_argument("--saliency-images", type=int, default=4, help="test images in the saliency figure (default 4)")
    p.add_argument("--saliency-label", help="class to explain (default: each image's top-scoring class)")
    p.add_argument("--max-points", type=int, default=2000, help="images in the embedding (default 2000)")
    p.add_argument("--feature-dir", help="feature store to reuse/fill (e.g. a study's features/); default none")
    p.add_argument("--name", help="title of the analysis (default: 'random' or the encoder file's stem)")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from medssl.analyze.run import AnalysisOptions, check_inputs, run_analysis
    from medssl.commands.common import load_from_args
    from medssl.errors import CheckpointError, ConfigError, ManifestError

    for label, path in [("ENCODER", args.encoder), *(("--compare", c) for c in args.compare)]:
        if path != "random" and not Path(path).exists():
            raise CheckpointError(f"{label} {path}: encoder file does not exist; pass 'random' or a weights file "
                                  "(medssl checkpoint, exported backbone or MONAI state dict)")
    if args.classifier and not Path(args.classifier).is_file():
        raise CheckpointError(f"--classifier {args.classifier}: file does not exist; pass the best.pt of a full "
                              "fine-tuning cell (e.g. <study>/cells/<init>__full__<budget>__seed0/best.pt)")
    for flag, value in (("--queries", args.queries), ("--neighbours", args.neighbours),
                        ("--saliency-images", args.saliency_images), ("--max-points", args.max_points)):
        if value < (0 if flag == "--saliency-images" else 1):
            raise ConfigError(f"{flag} must be positive, got {value}")
    if not Path(args.data).is_file():
        raise ManifestError(f"--data {args.data}: manifest does not exist; write one with `medssl manifest build` "
                            "and `medssl split`")
    cfg = load_from_args(args)
    cfg.data.manifest = args.data
    from medssl.cache import open_cache
    from medssl.manifest import load
    from medssl.ssl.data import cache_dir_of, ensure_cache

    df = load(args.data, data_root=cfg.data.data_root).reset_index(drop=True)
    check_inputs(df)
    ensure_cache(cfg, df)
    images = open_cache(cache_dir_of(cfg), df, size=cfg.cache.size, dtype=cfg.cache.dtype, window=cfg.cache.window)
    opts = AnalysisOptions(queries=args.queries, neighbours=args.neighbours, saliency_images=args.saliency_images,
                           saliency_label=args.saliency_label, fast=args.fast, site_column=args.site_column,
                           max_points=args.max_points)
    result = run_analysis(cfg, args.encoder, df, images, args.out, classifier=args.classifier, compare=args.compare,
                          feature_dir=args.feature_dir, options=opts, name=args.name)
    if result.knn is not None:
        aucs = ", ".join(f"{k} {v['test_auc']:.3f}" for k, v in result.knn["classes"].items())
        print(f"medssl analyze: kNN test AUC {aucs}; mean {result.knn['mean_test_auc']:.3f}")
    for step, name in result.files.items():
        if name.endswith(".png"):
            print(f"medssl analyze: {step}: {Path(args.out) / name}")
    print(f"medssl analyze: index: {result.index}")
    return 0
