"""Per-class ROC-AUC / average precision, mean AUC over a task list, patient-level bootstrap CIs.

Predictions table (CSV) contract, one row per evaluated image:
  `path`, `patient_id` (pseudonymised, copied from the manifest), `prob_<label>` (float in [0, 1])
  and `target_<label>` (the raw manifest value: 1, 0, -1 uncertain, NaN blank) for each label.

Exclusion rule: for each class, only images whose target is exactly 1 or 0 are scored; uncertain
(-1) and blank (NaN) test labels are left out of that class's AUC, AP, counts and bootstrap (an
image can therefore count for one class and not another). A class with a single label value among
its scored images gets a `SingleClassWarning` and NaN, and is left out of the mean AUC.
"""

from __future__ import annotations

import logging
import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from medssl.errors import ManifestError
from medssl.evaluate import bootstrap as bs
from medssl.manifest.schema import CHEXPERT_COMPETITION_TASKS

log = logging.getLogger(__name__)

PROB_PREFIX = "prob_"
TARGET_PREFIX = "target_"


class SingleClassWarning(UserWarning):
    """A class has only positives or only negatives in the evaluation set: its AUC is undefined (NaN)."""


# ----------------------------------------------------------------------------- predictions table
def predictions_frame(paths, patient_ids, labels: Sequence[str], probs: np.ndarray, targets: np.ndarray) -> pd.DataFrame:
    """Build the predictions table; probs and targets are (N, C) in `labels` order."""
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    cols = {"path": [str(p) for p in paths], "patient_id": [str(p) for p in patient_ids]}
    for j, lbl in enumerate(labels):
        cols[PROB_PREFIX + lbl] = probs[:, j]
    for j, lbl in enumerate(labels):
        cols[TARGET_PREFIX + lbl] = targets[:, j]
    return pd.DataFrame(cols)


def prediction_labels(df: pd.DataFrame) -> list[str]:
    """Labels that have both a prob_ and a target_ column, in column order."""
    cols = set(df.columns)
    return [c[len(PROB_PREFIX):] for c in df.columns
            if c.startswith(PROB_PREFIX) and TARGET_PREFIX + c[len(PROB_PREFIX):] in cols]


def read_predictions(path) -> pd.DataFrame:
    """Read and check a predictions CSV; ManifestError naming the file when it does not fit the contract."""
    try:
        df = pd.read_csv(path, dtype={"patient_id": str, "path": str})
    except FileNotFoundError:
        raise ManifestError(f"{path}: predictions file does not exist") from None
    except Exception as e:
        raise ManifestError(f"{path}: cannot read predictions CSV ({e})") from e
    missing = [c for c in ("path", "patient_id") if c not in df.columns]
    if missing or not prediction_labels(df):
        raise ManifestError(f"{path}: a predictions CSV needs columns path, patient_id and prob_<label>/target_<label> "
                            f"pairs (missing: {missing or 'prob_/target_ pairs'}); write it with `medssl finetune`.")
    return df


def arrays(df: pd.DataFrame, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(targets, probs) float64 (N, C) from a predictions table, in `labels` order."""
    t = df[[TARGET_PREFIX + lbl for lbl in labels]].to_numpy(dtype=np.float64)
    p = df[[PROB_PREFIX + lbl for lbl in labels]].to_numpy(dtype=np.float64)
    return t, p


# ----------------------------------------------------------------------------- point metrics
def default_tasks(labels: Sequence[str]) -> list[str]:
    """The CheXpert competition five when all are present, else every label."""
    if all(t in labels for t in CHEXPERT_COMPETITION_TASKS):
        return list(CHEXPERT_COMPETITION_TASKS)
    return list(labels)


def resolve_tasks(labels: Sequence[str], tasks: Sequence[str] | None) -> list[str]:
    if not tasks:
        return default_tasks(labels)
    unknown = [t for t in tasks if t not in labels]
    if unknown:
        raise ManifestError(f"evaluate.tasks: {unknown} not among the predicted labels {list(labels)}")
    return list(tasks)


def evaluable(targets: np.ndarray) -> np.ndarray:
    """Boolean mask of entries that are scored: target exactly 1 or 0."""
    t = np.asarray(targets, dtype=np.float64)
    return (t == 1.0) | (t == 0.0)


def scored_targets(targets: np.ndarray) -> np.ndarray:
    """Targets with every non-scored entry (uncertain, blank) set to NaN."""
    t = np.asarray(targets, dtype=np.float64)
    return np.where(evaluable(t), t, np.nan)


def class_metrics(y, scores, label: str = "") -> dict:
    """ROC-AUC, average precision and counts for one class over its scored entries (y in {1, 0})."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    keep = evaluable(y)
    y, s = y[keep], s[keep]
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    out = {"n_pos": n_pos, "n_neg": n_neg, "auc": float("nan"), "ap": float("nan")}
    if n_pos == 0 or n_neg == 0:
        msg = (f"class {label!r}: {n_pos} positives and {n_neg} negatives among scored images; "
               "its AUC is undefined (NaN) and it is left out of the mean AUC")
        warnings.warn(msg, SingleClassWarning, stacklevel=2)
        log.warning(msg)
        return out
    out["auc"] = float(roc_auc_score(y, s))
    out["ap"] = float(average_precision_score(y, s))
    return out


def mean_auc(targets: np.ndarray, probs: np.ndarray, labels: Sequence[str], tasks: Sequence[str] | None = None) -> float:
    """Mean ROC-AUC over `tasks` (default per `default_tasks`), skipping single-class tasks; NaN if none left.

    Used for checkpoint selection on the validation split, so it is quiet about single-class tasks.
    """
    tasks = resolve_tasks(list(labels), tasks)
    aucs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingleClassWarning)
        for t in tasks:
            j = list(labels).index(t)
            aucs.append(class_metrics(targets[:, j], probs[:, j], t)["auc"])
    aucs = [a for a in aucs if np.isfinite(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


# ----------------------------------------------------------------------------- full evaluation
def evaluate_predictions(df: pd.DataFrame, *, tasks: Sequence[str] | None = None, n_bootstrap: int = 1000,
                         ci: float = 0.95, seed: int = 0) -> dict:
    """Metrics for one predictions table: per class AUC [CI], AP, counts; mean AUC [CI] over tasks.

    CIs are percentile intervals over `n_bootstrap` patient-level resamples (see medssl.evaluate.bootstrap).
    """
    labels = prediction_labels(df)
    tasks = resolve_tasks(labels, tasks)
    targets, probs = arrays(df, labels)
    targets = scored_targets(targets)
    per_class = {lbl: class_metrics(targets[:, j], probs[:, j], lbl) for j, lbl in enumerate(labels)}
    boot, _ = bs.bootstrap_aucs(targets, probs, df["patient_id"], n_resamples=n_bootstrap, seed=seed)
    for j, lbl in enumerate(labels):
        lo, hi = bs.percentile_ci(boot[:, j], ci) if np.isfinite(per_class[lbl]["auc"]) else (float("nan"),) * 2
        per_class[lbl].update(auc_ci_low=lo, auc_ci_high=hi, n_resamples_valid=int(np.isfinite(boot[:, j]).sum()))
    used = [t for t in tasks if np.isfinite(per_class[t]["auc"])]
    used_idx = [labels.index(t) for t in used]
    point = float(np.mean([per_class[t]["auc"] for t in used])) if used else float("nan")
    mean_boot = bs.mean_over_tasks(boot, used_idx)
    lo, hi = bs.percentile_ci(mean_boot, ci)
    return {
        "n_images": int(len(df)),
        "n_patients": int(df["patient_id"].nunique()),
        "tasks": tasks,
        "tasks_in_mean": used,
        "mean_auc": point,
        "mean_auc_ci_low": lo,
        "mean_auc_ci_high": hi,
        "mean_auc_resamples_valid": int(np.isfinite(mean_boot).sum()),
        "bootstrap": {"resamples": n_bootstrap, "ci": ci, "seed": seed, "unit": "patient", "method": "percentile"},
        "classes": per_class,
    }


def align_predictions(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reorder `b` to `a`'s rows by path; ManifestError unless both cover the same images with the same targets."""
    if a["path"].duplicated().any() or b["path"].duplicated().any():
        raise ManifestError("predictions to compare must have one row per path")
    if set(a["path"]) != set(b["path"]):
        n = len(set(a["path"]) ^ set(b["path"]))
        raise ManifestError(f"the two predictions files cover different images ({n} paths differ); "
                            "a paired comparison needs both models evaluated on the same test set")
    b = b.set_index("path").loc[a["path"]].reset_index()
    labels = [lbl for lbl in prediction_labels(a) if lbl in prediction_labels(b)]
    ta, _ = arrays(a, labels)
    tb, _ = arrays(b, labels)
    if not np.array_equal(np.nan_to_num(ta, nan=-9), np.nan_to_num(tb, nan=-9)) or \
            not (a["patient_id"].astype(str).to_numpy() == b["patient_id"].astype(str).to_numpy()).all():
        raise ManifestError("the two predictions files disagree on targets or patient ids for the same paths")
    return a, b


def compare_predictions(a: pd.DataFrame, b: pd.DataFrame, *, tasks: Sequence[str] | None = None,
                        n_bootstrap: int = 1000, ci: float = 0.95, seed: int = 0) -> dict:
    """Paired patient-level bootstrap of model A minus model B on the same test images.

    Both models are scored on identical resamples; reports the mean-AUC difference with its CI and
    p-value-like fractions, and the same per class. Identical predictions give a difference of exactly 0.
    """
    a, b = align_predictions(a, b)
    labels = [lbl for lbl in prediction_labels(a) if lbl in prediction_labels(b)]
    tasks = resolve_tasks(labels, tasks)
    targets, pa = arrays(a, labels)
    _, pb = arrays(b, labels)
    targets = scored_targets(targets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingleClassWarning)
        auc_a = [class_metrics(targets[:, j], pa[:, j])["auc"] for j in range(len(labels))]
        auc_b = [class_metrics(targets[:, j], pb[:, j])["auc"] for j in range(len(labels))]
    boot_a, boot_b = bs.bootstrap_aucs(targets, pa, a["patient_id"], n_resamples=n_bootstrap, seed=seed,
                                       other_scores=pb)
    per_class = {}
    for j, lbl in enumerate(labels):
        per_class[lbl] = {"auc_a": auc_a[j], "auc_b": auc_b[j], "diff": auc_a[j] - auc_b[j],
                          **bs.paired_difference(boot_a[:, j], boot_b[:, j], ci)}
    used_idx = [labels.index(t) for t in tasks if np.isfinite(auc_a[labels.index(t)])]
    ma = float(np.mean([auc_a[j] for j in used_idx])) if used_idx else float("nan")
    mb = float(np.mean([auc_b[j] for j in used_idx])) if used_idx else float("nan")
    diff = bs.paired_difference(bs.mean_over_tasks(boot_a, used_idx), bs.mean_over_tasks(boot_b, used_idx), ci)
    return {
        "tasks_in_mean": [labels[j] for j in used_idx],
        "mean_auc_a": ma,
        "mean_auc_b": mb,
        "mean_auc_diff": ma - mb,
        "mean_auc_diff_ci_low": diff["ci_low"],
        "mean_auc_diff_ci_high": diff["ci_high"],
        "frac_not_better": diff["frac_not_better"],
        "p_two_sided": diff["p_two_sided"],
        "n_resamples_valid": diff["n_resamples_valid"],
        "bootstrap": {"resamples": n_bootstrap, "ci": ci, "seed": seed, "unit": "patient", "paired": True},
        "classes": per_class,
    }
