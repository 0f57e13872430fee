"""Manifest labels -> training targets: CheXpert uncertainty policies, blanks, class weights.

Pure numpy. Manifest label values are 1 (positive), 0 (negative), -1 (uncertain), NaN (blank).
`targets_and_mask` returns float32 (N, C) `targets` in {0, 1} and float32 (N, C) `mask` in {0, 1};
an entry with mask 0 contributes nothing to the loss (its target is set to 0 and never read).
"""

from __future__ import annotations

import numpy as np

from medssl.errors import ConfigError, ManifestError

#: CheXpert uncertainty policies (Irvin et al. 2019): U-Ignore, U-Zeros, U-Ones.
UNCERTAINTY_POLICIES = ("ignore", "zeros", "ones")
#: What a blank (NaN: not mentioned in the report) becomes.
BLANK_POLICIES = ("negative", "ignore")


def targets_and_mask(labels, uncertainty: str = "ignore", blank: str = "negative") -> tuple[np.ndarray, np.ndarray]:
    """(N, C) manifest labels -> (targets, mask), both float32 (N, C).

    uncertainty: "ignore" masks -1 out of the loss, "zeros" maps -1 -> 0, "ones" maps -1 -> 1.
    blank: "negative" maps NaN -> 0 (CheXpert convention: not mentioned = absent), "ignore" masks it.
    """
    if uncertainty not in UNCERTAINTY_POLICIES:
        raise ConfigError(f"finetune.uncertainty: {uncertainty!r} is not allowed; choose one of {list(UNCERTAINTY_POLICIES)}")
    if blank not in BLANK_POLICIES:
        raise ConfigError(f"finetune.blank: {blank!r} is not allowed; choose one of {list(BLANK_POLICIES)}")
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    blank_at = np.isnan(y)
    bad = ~blank_at & ~np.isin(y, (1.0, 0.0, -1.0))
    if bad.any():
        raise ManifestError(f"label values must be 1, 0, -1 or blank; found {sorted(set(y[bad].tolist()))[:5]}. "
                            "Fix the manifest's label columns.")
    uncertain = y == -1.0
    targets = np.where(y == 1.0, 1.0, 0.0)
    mask = np.ones_like(y)
    if uncertainty == "ones":
        targets[uncertain] = 1.0
    elif uncertainty == "ignore":
        mask[uncertain] = 0.0
    if blank == "ignore":
        mask[blank_at] = 0.0
    return targets.astype(np.float32), mask.astype(np.float32)


def pos_weight(targets: np.ndarray, mask: np.ndarray, max_weight: float = 100.0) -> np.ndarray:
    """Per-class BCE `pos_weight` = negatives / positives among the masked-in entries, float32 (C,).

    Classes with no positives (or no negatives) get 1.0: there is nothing to rebalance. Clipped at
    `max_weight` so a class with 1 positive in a 250-image budget cannot dominate the loss.
    """
    t = np.asarray(targets, dtype=np.float64)
    m = np.asarray(mask, dtype=np.float64)
    pos = (t * m).sum(0)
    neg = ((1 - t) * m).sum(0)
    w = np.ones(t.shape[1])
    ok = (pos > 0) & (neg > 0)
    w[ok] = np.minimum(neg[ok] / pos[ok], max_weight)
    return w.astype(np.float32)
