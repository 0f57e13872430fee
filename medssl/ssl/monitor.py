"""Representation monitor during pretraining: AUC of a kNN / logistic probe on frozen val features.

Uses ONLY the labeled val split (never train labels): features of val images are scored by
patient-grouped cross-validation inside the val split, so no image is its own neighbour and no
patient is on both sides. Pure numpy/sklearn on precomputed features.
"""

from __future__ import annotations

import numpy as np


def probe_auc(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, *, method: str = "knn",
              k: int = 20, folds: int = 5) -> float:
    """Mean ROC-AUC over label columns of a cross-validated probe.

    features (N, D) float; labels (N, L) in {0, 1, NaN}; groups (N,) patient codes.
    Columns with fewer than two classes among scored rows are skipped; NaN if none can be scored.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold

    x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    n_groups = len(np.unique(groups))
    splitter = GroupKFold(n_splits=max(2, min(folds, n_groups)))
    aucs = []
    for j in range(labels.shape[1]):
        known = ~np.isnan(labels[:, j])
        y, xj, gj = labels[known, j].astype(int), x[known], groups[known]
        if len(np.unique(y)) < 2 or len(np.unique(gj)) < 2:
            continue
        scores = np.full(len(y), np.nan)
        for fit, test in splitter.split(xj, y, gj):
            if len(np.unique(y[fit])) < 2:
                continue
            if method == "knn":
                sims = xj[test] @ xj[fit].T  # cosine similarity (rows are unit norm)
                kk = min(k, len(fit))
                nearest = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
                weights = np.exp(np.take_along_axis(sims, nearest, axis=1) / 0.1)
                scores[test] = (weights * y[fit][nearest]).sum(1) / weights.sum(1)
            elif method == "logreg":
                clf = LogisticRegression(max_iter=500, C=1.0).fit(xj[fit], y[fit])
                scores[test] = clf.predict_proba(xj[test])[:, 1]
            else:
                raise ValueError(f"unknown monitor {method!r}; choose knn or logreg")
        ok = ~np.isnan(scores)
        if ok.sum() > 1 and len(np.unique(y[ok])) == 2:
            aucs.append(roc_auc_score(y[ok], scores[ok]))
    return float(np.mean(aucs)) if aucs else float("nan")
