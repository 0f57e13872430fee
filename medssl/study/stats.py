"""Study-level statistics: mean AUC over label subsets with honest CIs, and paired SSL-vs-random tests.

Every cell of a study predicts the same test images, so all cells are scored on the SAME patient
bootstrap resamples (`medssl.evaluate.bootstrap`: identical resamples for identical test sets and
seed). For a group of cells (init, mode, budget) over replicates r (label-subset seeds, and
pretraining seeds when a method was pretrained several times):

  point     = mean_r AUC_r                          (AUC on the full test set)
  var_test  = var over resamples of mean_r AUC_r,b   (test-patient sampling, replicates kept paired)
  var_rep   = var_r(AUC_r) / R                       (which labels were drawn, training noise; R >= 2)
  CI        = point +- z * sqrt(var_test + var_rep)

An average of per-seed CI bounds is not a CI of anything; this is the CI of the mean over label
subsets that the label-efficiency claim is about. With one replicate var_rep cannot be measured:
the CI then covers test sampling only, and the report says so.

Paired difference of an init against the random init, same mode and budget: per subset seed
d_s = AUC_init,s - AUC_random,s on the same resamples (pretraining seeds of the init averaged
first), then the same formula; p = two-sided normal p-value of point / se.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from medssl.evaluate import bootstrap as bs
from medssl.evaluate.metrics import arrays, prediction_labels, read_predictions, resolve_tasks, scored_targets

BASELINE = "random"
GROUP = ["init", "mode", "budget"]


def _z(ci: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + ci / 2))


def _p_two_sided(point: float, se: float) -> float:
    from scipy.stats import norm

    if not np.isfinite(point) or not np.isfinite(se):
        return float("nan")
    if se == 0:
        return 0.0 if point != 0 else 1.0
    return float(2 * norm.sf(abs(point) / se))


def cell_bootstrap(predictions: pd.DataFrame, tasks: Sequence[str] | None, n_resamples: int,
                   seed: int) -> tuple[float, np.ndarray, list[str]]:
    """(mean AUC over tasks on the full test set, (B,) the same on each patient resample, tasks used)."""
    from medssl.evaluate.metrics import class_metrics

    labels = prediction_labels(predictions)
    tasks = resolve_tasks(labels, tasks)
    targets, probs = arrays(predictions, labels)
    targets = scored_targets(targets)
    idx = [labels.index(t) for t in tasks]
    import warnings

    from medssl.evaluate.metrics import SingleClassWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingleClassWarning)
        point_per = [class_metrics(targets[:, j], probs[:, j])["auc"] for j in idx]
    used = [j for j, a in zip(idx, point_per) if np.isfinite(a)]
    boot, _ = bs.bootstrap_aucs(targets, probs, predictions["patient_id"], n_resamples=n_resamples, seed=seed)
    point = float(np.mean([a for a in point_per if np.isfinite(a)])) if used else float("nan")
    return point, bs.mean_over_tasks(boot, used), [labels[j] for j in used]


def _combine(points: np.ndarray, boots: np.ndarray, ci: float) -> dict:
    """points (R,), boots (R, B) -> mean, its CI (test + replicate variance), and the variance parts."""
    r = len(points)
    point = float(np.mean(points))
    mean_boot = np.nanmean(boots, axis=0) if r else np.array([np.nan])
    finite = mean_boot[np.isfinite(mean_boot)]
    var_test = float(np.var(finite, ddof=1)) if finite.size > 1 else float("nan")
    var_rep = float(np.var(points, ddof=1) / r) if r > 1 else 0.0
    se = math.sqrt(var_test + var_rep) if np.isfinite(var_test) else float("nan")
    z = _z(ci)
    return {"mean": point, "ci_low": point - z * se, "ci_high": point + z * se, "se": se,
            "se_test": math.sqrt(var_test) if np.isfinite(var_test) else float("nan"),
            "se_replicates": math.sqrt(var_rep), "replicates": r, "replicate_sd": float(np.std(points, ddof=1))
            if r > 1 else float("nan")}


def _resolve(path: str, out_dir: Path) -> Path:
    from medssl.study.runner import resolve_result_path

    return Path(resolve_result_path(str(path), out_dir))


def study_statistics(results: pd.DataFrame, out_dir: str | Path, *, tasks: Sequence[str] | None = None,
                     n_bootstrap: int = 1000, ci: float = 0.95, seed: int = 0,
                     baseline: str = BASELINE) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(summary per init x mode x budget, paired differences vs `baseline`, per-cell paired columns).

    results: the study's results table (a `predictions` path per cell; `pretrain_seed` optional).
    summary columns: init, mode, budget, n_labeled, n_val_labeled, n_labels_total, replicates, mean_auc,
      ci_low, ci_high, se, se_test, se_replicates, replicate_sd (+ init_sd across pretraining seeds).
    paired columns: init, mode, budget, n_labeled, seeds, diff, ci_low, ci_high, p_value, se, se_test,
      se_replicates. per-cell columns (keyed by cell `key`): diff_vs_random, diff_ci_low, diff_ci_high,
      diff_p (single-seed paired bootstrap).
    """
    out_dir = Path(out_dir)
    df = results.copy()
    if "pretrain_seed" not in df.columns:
        df["pretrain_seed"] = 0
    df["pretrain_seed"] = df["pretrain_seed"].fillna(0).astype(int)
    ref_paths = None
    point, boot = {}, {}
    for i, row in df.iterrows():
        pred = read_predictions(_resolve(row["predictions"], out_dir))
        if ref_paths is None:
            ref_paths = pred["path"].tolist()
        elif pred["path"].tolist() != ref_paths:
            from medssl.errors import ManifestError

            raise ManifestError(f"{row['predictions']}: this cell predicted another test set than the first cell; "
                                "a study's cells must share one split manifest")
        point[i], boot[i], _ = cell_bootstrap(pred, tasks, n_bootstrap, seed)

    summary_rows, paired_rows = [], []
    for (init, mode, budget), g in df.groupby(GROUP, sort=False):
        stats = _combine(np.array([point[i] for i in g.index]), np.stack([boot[i] for i in g.index]), ci)
        per_pretrain = g.groupby("pretrain_seed").apply(lambda h: np.mean([point[i] for i in h.index]),
                                                        include_groups=False)
        row = {"init": init, "mode": mode, "budget": budget, "n_labeled": int(g["n_labeled"].median()),
               **{c: int(g[c].median()) for c in ("n_val_labeled", "n_labels_total") if c in g.columns},
               "seeds": int(g["seed"].nunique()), "pretrain_seeds": int(g["pretrain_seed"].nunique()),
               "replicates": stats.pop("replicates"), "mean_auc": stats.pop("mean"), **stats,
               "init_sd": float(np.std(per_pretrain.to_numpy(), ddof=1)) if len(per_pretrain) > 1 else float("nan")}
        summary_rows.append(row)
    summary = pd.DataFrame(summary_rows)

    cell_rows = []
    base = df[df["init"] == baseline]
    for (init, mode, budget), g in df[df["init"] != baseline].groupby(GROUP, sort=False):
        b = base[(base["mode"] == mode) & (base["budget"] == budget)]
        seeds = sorted(set(g["seed"]) & set(b["seed"]))
        if not seeds:
            continue
        d_point, d_boot = [], []
        for s in seeds:
            bi = b.index[b["seed"] == s][0]
            gi = g.index[g["seed"] == s]
            init_point = np.mean([point[i] for i in gi])
            init_boot = np.nanmean(np.stack([boot[i] for i in gi]), axis=0)
            d_point.append(init_point - point[bi])
            d_boot.append(init_boot - boot[bi])
            for i in gi:     # one cell against its random-init twin (same budget, seed, mode)
                diff = bs.paired_difference(boot[i], boot[bi], ci)
                cell_rows.append({"row": i, "diff_vs_random": point[i] - point[bi], "diff_ci_low": diff["ci_low"],
                                  "diff_ci_high": diff["ci_high"], "diff_p": diff["p_two_sided"]})
        stats = _combine(np.array(d_point), np.stack(d_boot), ci)
        paired_rows.append({"init": init, "mode": mode, "budget": budget, "n_labeled": int(g["n_labeled"].median()),
                            "seeds": len(seeds), "diff": stats["mean"], "ci_low": stats["ci_low"],
                            "ci_high": stats["ci_high"], "p_value": _p_two_sided(stats["mean"], stats["se"]),
                            "se": stats["se"], "se_test": stats["se_test"], "se_replicates": stats["se_replicates"]})
    paired = pd.DataFrame(paired_rows, columns=["init", "mode", "budget", "n_labeled", "seeds", "diff", "ci_low",
                                                "ci_high", "p_value", "se", "se_test", "se_replicates"])
    per_cell = pd.DataFrame(cell_rows, columns=["row", "diff_vs_random", "diff_ci_low", "diff_ci_high", "diff_p"])
    return summary, paired, per_cell
