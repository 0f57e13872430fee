"""Bootstrap confidence intervals resampled BY PATIENT, vectorised over resamples.

A resample draws P patients with replacement from the P patients of the evaluation set and takes
all of each drawn patient's images; it is represented as integer counts (B, P) and applied as image
weights (B, N) = counts[:, patient_of_image]. A weighted ROC-AUC with integer weights equals the
AUC on the expanded (repeated) sample, so all B resamples are scored with one sort per class.

Percentile intervals; a resample in which a class has only one label value scores NaN for that
class and is left out of that class's interval (the count of usable resamples is reported).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

#: Upper bound on the elements of one (resamples x images) weight block, to bound memory (~160 MB float64).
MAX_BLOCK_ELEMENTS = 20_000_000


def patient_codes(patient_ids) -> tuple[np.ndarray, int]:
    """Image -> patient index (int64, (N,)) and the number of distinct patients."""
    _, codes = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    codes = codes.reshape(-1)
    return codes.astype(np.int64), int(codes.max()) + 1 if codes.size else 0


def resample_counts(n_patients: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n_patients) int64: how often each patient is drawn (each row sums to n_patients)."""
    idx = rng.integers(0, n_patients, size=(n_resamples, n_patients))
    idx += np.arange(n_resamples)[:, None] * n_patients
    return np.bincount(idx.ravel(), minlength=n_resamples * n_patients).reshape(n_resamples, n_patients)


def count_blocks(n_patients: int, n_images: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The B resamples' patient counts in blocks small enough that (block, n_images) weights fit in memory.

    Deterministic for (n_patients, n_images, n_resamples, seed): every caller that passes the same
    arguments sees the same resamples, which is what makes the paired bootstrap paired.
    """
    rng = np.random.default_rng(seed)
    block = max(1, min(n_resamples, MAX_BLOCK_ELEMENTS // max(n_images, n_patients, 1)))
    for start in range(0, n_resamples, block):
        yield resample_counts(n_patients, min(block, n_resamples - start), rng)


class _SortedClass:
    """One class's scores sorted once, with tie groups, for repeated weighted-AUC evaluation."""

    def __init__(self, y: np.ndarray, scores: np.ndarray, codes: np.ndarray):
        order = np.argsort(scores, kind="stable")
        s = scores[order]
        self.starts = np.concatenate([[0], np.flatnonzero(np.diff(s)) + 1])
        self.codes = codes[order]
        self.pos = (y[order] == 1).astype(np.float64)

    def auc(self, counts: np.ndarray) -> np.ndarray:
        """(B, P) patient counts -> (B,) weighted AUC; NaN where a resample has no positive or no negative."""
        w = counts[:, self.codes].astype(np.float64)          # (B, n) image weights
        wp = np.add.reduceat(w * self.pos, self.starts, axis=1)  # positive weight per tie group
        wn = np.add.reduceat(w * (1.0 - self.pos), self.starts, axis=1)
        neg_below = np.cumsum(wn, axis=1) - wn
        # each positive beats the negatives scored strictly lower and ties half of those scored equal
        num = (wp * (neg_below + 0.5 * wn)).sum(1)
        den = wp.sum(1) * wn.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def weighted_auc(y, scores, weights) -> np.ndarray:
    """ROC-AUC of `scores` for binary `y` (N,) under each row of `weights` (B, N); returns (B,).

    Equals sklearn's roc_auc_score on the sample with image i repeated weights[b, i] times.
    """
    y = np.asarray(y)
    weights = np.atleast_2d(np.asarray(weights))
    sc = _SortedClass(y, np.asarray(scores, dtype=np.float64), np.arange(y.size))
    return sc.auc(weights)


def bootstrap_aucs(targets: np.ndarray, scores: np.ndarray, patient_ids, *, n_resamples: int = 1000,
                   seed: int = 0, other_scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-class AUC on each patient-level resample: (B, C), and the same for `other_scores` if given.

    targets: (N, C) with 1/0 for evaluable entries and NaN for excluded ones (uncertain/blank).
    scores, other_scores: (N, C). Both models are scored on identical resamples (paired bootstrap).
    """
    targets = np.asarray(targets, dtype=np.float64)
    codes, n_patients = patient_codes(patient_ids)
    n, c = targets.shape
    models = [np.asarray(scores, dtype=np.float64)]
    if other_scores is not None:
        models.append(np.asarray(other_scores, dtype=np.float64))
    sorted_classes = []
    for m in models:
        per_class = []
        for j in range(c):
            valid = ~np.isnan(targets[:, j])
            per_class.append(_SortedClass(targets[valid, j], m[valid, j], codes[valid]) if valid.any() else None)
        sorted_classes.append(per_class)
    out = [np.full((n_resamples, c), np.nan) for _ in models]
    row = 0
    for counts in count_blocks(n_patients, n, n_resamples, seed):
        b = counts.shape[0]
        for k, per_class in enumerate(sorted_classes):
            for j, sc in enumerate(per_class):
                if sc is not None:
                    out[k][row:row + b, j] = sc.auc(counts)
        row += b
    return out[0], (out[1] if other_scores is not None else None)


def percentile_ci(samples: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite values of a 1-D sample; (nan, nan) when none are finite."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(s, [100 * (1 - ci) / 2, 100 * (1 + ci) / 2])
    return float(lo), float(hi)


def mean_over_tasks(aucs: np.ndarray, task_idx: list[int]) -> np.ndarray:
    """(B, C) per-class resample AUCs -> (B,) mean over `task_idx`; NaN when any of those tasks is NaN
    in that resample (averaging over fewer tasks would silently change what the mean measures)."""
    if not task_idx:
        return np.full(aucs.shape[0], np.nan)
    return aucs[:, task_idx].mean(1)


def paired_difference(a: np.ndarray, b: np.ndarray, ci: float = 0.95) -> dict:
    """Summary of per-resample differences a - b (both (B,) on identical resamples).

    `p_two_sided` is the bootstrap fraction 2 * min(P(d <= 0), P(d >= 0)), capped at 1 (a p-value-like
    number, as reported by MoCo-CXR); `frac_not_better` is P(d <= 0).
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return {"ci_low": float("nan"), "ci_high": float("nan"), "frac_not_better": float("nan"),
                "p_two_sided": float("nan"), "n_resamples_valid": 0}
    lo, hi = percentile_ci(d, ci)
    le, ge = float(np.mean(d <= 0)), float(np.mean(d >= 0))
    return {"ci_low": lo, "ci_high": hi, "frac_not_better": le, "p_two_sided": min(1.0, 2 * min(le, ge)),
            "n_resamples_valid": int(d.size)}
