"""ROC curve figures (matplotlib, Agg backend), written atomically as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from medssl import atomic
from medssl.evaluate.metrics import evaluable


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc_curves(targets: np.ndarray, probs: dict[str, np.ndarray] | np.ndarray, labels: Sequence[str],
                    path: str | Path, *, metrics: dict | None = None, title: str = "ROC curves (test)") -> Path:
    """One panel per label with the ROC curve of each model; single-class labels show a note instead.

    targets: (N, C) raw targets (only 1/0 entries are used); probs: (N, C), or {model name: (N, C)}.
    metrics: optional {label: {"auc", "auc_ci_low", "auc_ci_high"}} for the legend of a single model.
    """
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    models = probs if isinstance(probs, dict) else {"model": probs}
    n = len(labels)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.3 * rows), squeeze=False)
    for k, lbl in enumerate(labels):
        ax = axes[k // cols][k % cols]
        y = np.asarray(targets[:, k], dtype=np.float64)
        keep = evaluable(y)
        if len(set(y[keep].tolist())) < 2:
            ax.text(0.5, 0.5, "single class:\nAUC undefined", ha="center", va="center", transform=ax.transAxes)
        else:
            for name, p in models.items():
                fpr, tpr, _ = roc_curve(y[keep], np.asarray(p)[keep, k])
                legend = name
                m = (metrics or {}).get(lbl)
                if m is not None and len(models) == 1:
                    legend = f"AUC {m['auc']:.3f} [{m['auc_ci_low']:.3f}, {m['auc_ci_high']:.3f}]"
                ax.plot(fpr, tpr, lw=1.5, label=legend)
            ax.legend(fontsize=7, loc="lower right")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_title(f"{lbl} (n+={int((y == 1).sum())}, n-={int((y == 0).sum())})", fontsize=9)
        ax.set_xlabel("1 - specificity", fontsize=8)
        ax.set_ylabel("sensitivity", fontsize=8)
        ax.set_aspect("equal")
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
