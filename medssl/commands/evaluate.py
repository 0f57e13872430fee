"""`medssl evaluate`: per-class AUC/AP with patient-level bootstrap CIs, optional paired comparison."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  medssl evaluate runs/ft/moco/predictions.csv --out runs/ft/moco/eval
  medssl evaluate moco/predictions.csv --compare random/predictions.csv --out eval/moco-vs-random
  medssl evaluate preds.csv --tasks Cardiomegaly,Edema --set evaluate.bootstrap=2000 --out eval/

PREDICTIONS.csv has columns path, patient_id, prob_<label>, target_<label> (written by `medssl finetune`).
Uncertain (-1) and blank test labels are left out per class. CIs resample patients with replacement
(all images of a drawn patient go together). --compare runs a paired bootstrap of PREDICTIONS minus
OTHER on identical resamples. Writes OUT/metrics.json, OUT/roc.png (+ comparison.json, roc_compare.png)."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="per-class ROC-AUC with patient-level bootstrap CIs; paired model comparison",
        description="Evaluate a predictions CSV: per-class ROC-AUC and average precision, mean AUC over the "
                    "task list, 95%% CIs by patient-level bootstrap, and optionally a paired bootstrap against "
                    "a second model's predictions on the same test set.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("predictions", help="predictions CSV from `medssl finetune`")
    p.add_argument("--tasks", default=None,
                   help="comma-separated labels for the mean AUC (default evaluate.tasks, else the CheXpert "
                        "five when present, else all labels)")
    p.add_argument("--compare", default=None, metavar="OTHER_PREDICTIONS",
                   help="second predictions CSV on the same images: paired bootstrap of the difference")
    p.add_argument("--out", "-o", required=True, help="output directory")
    from medssl.commands.common import add_config_args

    add_config_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from medssl.commands.common import load_from_args
    from medssl.evaluate import write_evaluation

    cfg = load_from_args(args)
    ev = cfg.evaluate
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else ev.tasks
    names = (Path(args.predictions).parent.name or "a", Path(args.compare).parent.name or "b") if args.compare \
        else ("a", "b")
    if args.compare and names[0] == names[1]:
        names = ("a", "b")
    result = write_evaluation(args.predictions, args.out, tasks=tasks, compare=args.compare,
                              n_bootstrap=ev.bootstrap, ci=ev.ci, seed=ev.seed, names=names)
    print(f"{result['n_images']} images, {result['n_patients']} patients; mean AUC over {result['tasks_in_mean']}: "
          f"{result['mean_auc']:.4f} [{result['mean_auc_ci_low']:.4f}, {result['mean_auc_ci_high']:.4f}]")
    for label, m in result["classes"].items():
        print(f"  {label:<28} AUC {m['auc']:.4f} [{m['auc_ci_low']:.4f}, {m['auc_ci_high']:.4f}]  "
              f"AP {m['ap']:.4f}  n+={m['n_pos']} n-={m['n_neg']}")
    if "comparison" in result:
        c = result["comparison"]
        print(f"{names[0]} - {names[1]}: mean AUC difference {c['mean_auc_diff']:+.4f} "
              f"[{c['mean_auc_diff_ci_low']:+.4f}, {c['mean_auc_diff_ci_high']:+.4f}], "
              f"two-sided bootstrap p {c['p_two_sided']:.4f}")
    print(f"wrote {Path(args.out) / 'metrics.json'}")
    return 0
