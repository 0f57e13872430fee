"""Evaluation: per-class ROC-AUC/AP, patient-level bootstrap CIs, paired comparison, ROC figures.

`write_evaluation(predictions, out_dir)` is what `medssl evaluate` and each fine-tuning cell run:
it writes `metrics.json` and `roc.png` (and `comparison.json` + `roc_compare.png` with `compare=`),
all atomically, and returns the metrics dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from medssl.evaluate.metrics import (SingleClassWarning, class_metrics, compare_predictions, default_tasks,
                                     evaluate_predictions, mean_auc, predictions_frame, read_predictions)

__all__ = ["SingleClassWarning", "class_metrics", "compare_predictions", "default_tasks", "evaluate_predictions",
           "mean_auc", "predictions_frame", "read_predictions", "write_evaluation", "json_safe"]


def write_evaluation(predictions, out_dir: str | Path, *, tasks: Sequence[str] | None = None,
                     compare=None, n_bootstrap: int = 1000, ci: float = 0.95, seed: int = 0,
                     names: tuple[str, str] = ("a", "b"), plots: bool = True) -> dict:
    """Evaluate a predictions table (DataFrame or CSV path), optionally against a second one; write outputs.

    Returns the metrics dict (as in metrics.json); with `compare`, its "comparison" key holds the
    paired-bootstrap result of predictions minus compare.
    """
    from medssl import atomic
    from medssl.evaluate import metrics as m

    out_dir = Path(out_dir)
    df = predictions if not isinstance(predictions, (str, Path)) else m.read_predictions(predictions)
    result = m.evaluate_predictions(df, tasks=tasks, n_bootstrap=n_bootstrap, ci=ci, seed=seed)
    if plots:
        from medssl.evaluate.plots import plot_roc_curves

        labels = m.prediction_labels(df)
        targets, probs = m.arrays(df, labels)
        plot_roc_curves(targets, probs, labels, out_dir / "roc.png", metrics=result["classes"])
    if compare is not None:
        other = compare if not isinstance(compare, (str, Path)) else m.read_predictions(compare)
        comparison = m.compare_predictions(df, other, tasks=tasks, n_bootstrap=n_bootstrap, ci=ci, seed=seed)
        comparison["names"] = {"a": names[0], "b": names[1]}
        atomic.write_json(out_dir / "comparison.json", json_safe(comparison))
        result["comparison"] = comparison
        if plots:
            a, b = m.align_predictions(df, other)
            labels = [lbl for lbl in m.prediction_labels(a) if lbl in m.prediction_labels(b)]
            targets, pa = m.arrays(a, labels)
            _, pb = m.arrays(b, labels)
            plot_roc_curves(targets, {names[0]: pa, names[1]: pb}, labels, out_dir / "roc_compare.png",
                            title=f"ROC curves: {names[0]} vs {names[1]}")
    atomic.write_json(out_dir / "metrics.json", json_safe(result))
    return result


def json_safe(obj):
    """NaN/inf -> None (strict JSON has no NaN), recursively through dicts and lists."""
    import math

    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
