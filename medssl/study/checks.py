"""Results that must not pass silently: chance-level AUCs and pretraining that did not learn.

Pure functions over the study summary and the pretraining summaries (`pretrain_summary.json`,
written by `medssl.ssl.train.run_pretrain` beside each encoder). Each warning names what was seen,
the likely cause and what to change; the study prints them and puts them at the top of the report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

#: A pretraining run should see at least this many two-view samples (the recipes in configs/ do).
MIN_SAMPLES = 20_000
#: Final contrastive loss within this fraction of its chance value ln(negatives + 1) = no learning.
CHANCE_LOSS_MARGIN = 0.05
MIN_INPUT_SIZE = 64
MIN_IMAGES = 1_000

CAUSES = ("too few pretraining epochs (raise trainer.max_epochs or pass --time-budget), images too small "
          "(raise model.input_size / cache.size), too few unlabelled images (pretrain on every non-test image: "
          "data.pretrain_splits [train, val]), or findings the images at this size cannot show")


def contains_chance(summary: pd.DataFrame) -> pd.Series:
    """Per summary row: whether its CI contains 0.5 (or is undefined)."""
    lo, hi = summary["ci_low"].to_numpy(float), summary["ci_high"].to_numpy(float)
    return pd.Series(~(np.isfinite(lo) & np.isfinite(hi)) | ((lo <= 0.5) & (hi >= 0.5)), index=summary.index)


def chance_warnings(summary: pd.DataFrame) -> list[str]:
    """Warn when every init's test-AUC CI contains 0.5: everywhere, or at some (mode, budget)."""
    if summary.empty:
        return []
    chance = contains_chance(summary)
    if bool(chance.all()):
        return [f"every init's test AUC CI contains 0.5 (chance) at every budget and mode: nothing here "
                f"performs better than chance. Likely causes: {CAUSES}."]
    out = []
    for (mode, budget), g in summary.groupby(["mode", "budget"], sort=False):
        if bool(chance.loc[g.index].all()):
            out.append(f"{mode} at {budget} labels: every init's test AUC CI contains 0.5 (chance); "
                       "more labels or a stronger init are needed at this budget.")
    return out


def read_pretrain_summary(init_path: str | Path) -> dict | None:
    """The `pretrain_summary.json` beside an encoder file (or its checkpoint folder's parent), if any."""
    p = Path(init_path)
    for candidate in (p.parent / "pretrain_summary.json", p.parent.parent / "pretrain_summary.json"):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except (OSError, ValueError):
                return None
    return None


def pretraining_warnings(name: str, s: dict, collapse_threshold: float = 0.01) -> list[str]:
    """Warnings for one pretraining run's summary (keys: method, final_loss, chance_loss, feat_std,
    samples_seen, n_images, input_size)."""
    out = []
    loss, chance = s.get("final_loss"), s.get("chance_loss")
    if loss is not None and chance:
        if loss >= (1 - CHANCE_LOSS_MARGIN) * chance:
            hard = (" With MICLe pairs (two different images are positives) and a large queue the loss can stay "
                    "this close to chance while the features still improve: compare its probe and kNN rows with "
                    "random init before discarding it." if s.get("pairs") == "micle" else "")
            out.append(f"pretraining '{name}' ({s.get('method')}) ended with loss {loss:.3f}, within "
                       f"{CHANCE_LOSS_MARGIN:.0%} of chance ln(negatives + 1) = {chance:.3f}: it may barely have learned "
                       f"to tell images apart. Likely causes: {CAUSES}.{hard}")
    std = s.get("feat_std")
    if std is not None and std < 2 * collapse_threshold:
        out.append(f"pretraining '{name}' ended near representation collapse (feat_std {std:.4f}; spread "
                   f"features are ~{1 / np.sqrt(max(int(s.get('proj_dim') or 128), 1)):.3f}): lower optim.lr, "
                   "add warm-up (optim.warmup_epochs), or check the augmentation with `medssl augment preview`.")
    seen = s.get("samples_seen")
    if seen is not None and seen < MIN_SAMPLES:
        out.append(f"pretraining '{name}' saw only {int(seen):,} two-view samples (< {MIN_SAMPLES:,}): too short "
                   "to learn; raise trainer.max_epochs or set trainer.min_samples / --time-budget.")
    n = s.get("n_images")
    if n is not None and n < MIN_IMAGES:
        out.append(f"pretraining '{name}' used {int(n):,} unlabelled images (< {MIN_IMAGES:,}): small archives limit "
                   "what pretraining can add; pretrain on every non-test image (data.pretrain_splits: [train, val]).")
    size = s.get("input_size")
    if size is not None and size < MIN_INPUT_SIZE:
        out.append(f"pretraining '{name}' ran at {size} px (< {MIN_INPUT_SIZE}): most chest X-ray findings need more "
                   "pixels; raise model.input_size.")
    return out
