"""kNN evaluation of frozen features: per-class test AUC of the cosine kNN probe, k chosen on val.

The probe is `medssl.finetune.probe.fit_knn_probe` (the study's kNN mode) fitted on ALL training
images, its k per label selected on the val split; the test split is scored only afterwards.
Test AUCs follow medssl's evaluation rule (`medssl.evaluate.metrics.class_metrics`: only targets
exactly 0 or 1 count).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from medssl import atomic
from medssl.evaluate import json_safe
from medssl.finetune.data import LabeledSet


def knn_evaluation(train_x: np.ndarray, train: LabeledSet, val_x: np.ndarray, val: LabeledSet,
                   test_x: np.ndarray, test: LabeledSet, labels: Sequence[str], *, ks: Sequence[int],
                   tasks: Sequence[str] | None = None) -> tuple[dict, np.ndarray]:
    """(summary dict, test probabilities (N, C)). summary: per class k, val AUC at k, test AUC, counts;
    mean_test_auc over the evaluation tasks (default `medssl.evaluate.metrics.default_tasks`)."""
    from medssl.evaluate.metrics import SingleClassWarning, class_metrics, resolve_tasks
    from medssl.finetune.probe import fit_knn_probe

    labels = list(labels)
    fit = fit_knn_probe(train_x, train, val_x, val, labels, tasks=tasks, ks=ks)
    probs = fit.predict(test_x)
    classes = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingleClassWarning)
        for j, name in enumerate(labels):
            m = class_metrics(test.labels_raw[:, j], probs[:, j], name)
            k = fit.selected[j]["k"]
            val_auc = next((c["val_auc"] for c in fit.history[j] if c["k"] == k), float("nan"))
            classes[name] = {"k": int(k), "val_auc": float(val_auc), "test_auc": m["auc"],
                             "test_pos": m["n_pos"], "test_neg": m["n_neg"]}
    task_list = resolve_tasks(labels, tasks)
    finite = [classes[t]["test_auc"] for t in task_list if np.isfinite(classes[t]["test_auc"])]
    summary = {
        "labels": labels, "tasks": task_list, "classes": classes,
        "mean_test_auc": float(np.mean(finite)) if finite else float("nan"),
        "n_train": len(train), "n_val": len(val), "n_test": len(test),
        "k_grid": sorted({int(k) for k in ks}), "temperature": fit.state["temperature"],
        "similarity": "cosine on features centred with the training mean",
    }
    return summary, probs


def _fmt(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


def knn_table(summary: dict) -> str:
    """Markdown table: label | k (chosen on val) | val AUC | test AUC | test positives / negatives."""
    lines = ["| label | k (val) | val AUC | test AUC | test pos / neg |", "|---|---|---|---|---|"]
    for name, c in summary["classes"].items():
        lines.append(f"| {name} | {c['k']} | {_fmt(c['val_auc'])} | {_fmt(c['test_auc'])} | "
                     f"{c['test_pos']} / {c['test_neg']} |")
    lines.append(f"| **mean** ({', '.join(summary['tasks'])}) | | | **{_fmt(summary['mean_test_auc'])}** | |")
    return "\n".join(lines)


def write_knn(summary: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """knn.json and knn.md (the table) in out_dir."""
    out_dir = Path(out_dir)
    j = atomic.write_json(out_dir / "knn.json", json_safe(summary))
    md = atomic.write_text(out_dir / "knn.md", "# kNN evaluation\n\n" + knn_table(summary) + "\n\n"
                           f"Cosine kNN on frozen features, {summary['n_train']} training images, k per label "
                           f"chosen on {summary['n_val']} val images, scored on {summary['n_test']} test images.\n")
    return j, md
