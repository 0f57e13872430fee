"""Labeled sets for one fine-tuning cell: manifest rows -> targets/masks, and a torch Dataset over images.

An *image source* is anything indexable by manifest row position (0..len(manifest)-1) that returns
one (S, S) array: uint8, uint16 (the decoded cache) or float in [0, 1]; `medssl.cache.CachedImages`
opened on the same manifest is one. `to_unit_float` turns such an array into float32 in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from medssl.errors import ManifestError, SplitError
from medssl.finetune.labels import targets_and_mask


def to_unit_float(arr: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / float image -> float32 in [0, 1] (integers scaled by their dtype's maximum)."""
    a = np.asarray(arr)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    return a.astype(np.float32, copy=False)


@dataclass
class LabeledSet:
    """Rows of one split (or labeled subset) with their training targets.

    rows: int64 (N,) positions in the manifest (= indices into the image source);
    labels_raw: float64 (N, C) manifest values (1/0/-1/NaN), used for AUC (evaluation exclusion rule);
    targets, mask: float32 (N, C) after the uncertainty/blank policies, used for the loss.
    """

    name: str
    rows: np.ndarray
    paths: np.ndarray
    patient_ids: np.ndarray
    labels_raw: np.ndarray
    targets: np.ndarray
    mask: np.ndarray

    def __len__(self) -> int:
        return int(self.rows.size)


def label_names(manifest: pd.DataFrame, wanted: Sequence[str] | None = None) -> list[str]:
    """Label columns to train on: `wanted` (checked) or every label column of the manifest."""
    from medssl.manifest.schema import label_columns

    available = label_columns(manifest.columns)
    if not wanted:
        if not available:
            raise ManifestError("the manifest has no label columns; fine-tuning needs at least one")
        return available
    missing = [w for w in wanted if w not in available]
    if missing:
        raise ManifestError(f"data.labels: {missing} are not label columns of the manifest; available: {available}")
    return list(wanted)


def make_set(manifest: pd.DataFrame, rows: np.ndarray, labels: Sequence[str], name: str, *,
             uncertainty: str = "ignore", blank: str = "negative") -> LabeledSet:
    """A LabeledSet of manifest positions `rows` (manifest must have a default RangeIndex-like order)."""
    rows = np.asarray(rows, dtype=np.int64)
    sub = manifest.iloc[rows]
    raw = sub[list(labels)].to_numpy(dtype=np.float64, na_value=np.nan)
    targets, mask = targets_and_mask(raw, uncertainty, blank)
    return LabeledSet(name=name, rows=rows, paths=sub["path"].astype(str).to_numpy(),
                      patient_ids=sub["patient_id"].astype(str).to_numpy(), labels_raw=raw,
                      targets=targets, mask=mask)


def split_rows(manifest: pd.DataFrame, split: str) -> np.ndarray:
    """Positions of the rows of one split; SplitError if the manifest has no split column or no such rows."""
    if "split" not in manifest.columns:
        raise SplitError("the manifest has no 'split' column; run `medssl split` first")
    rows = np.flatnonzero(manifest["split"].astype(str).to_numpy() == split)
    if rows.size == 0:
        raise SplitError(f"the manifest has no '{split}' rows; re-run `medssl split` with a {split} fraction > 0")
    return rows


def labeled_train_rows(manifest: pd.DataFrame, budgets: pd.DataFrame | None, budget, seed: int) -> np.ndarray:
    """Positions of the labeled training subset `budget`/`seed` (budget None: every train row)."""
    train = split_rows(manifest, "train")
    if budget is None:
        return train
    if budgets is None:
        raise SplitError("a budget was requested but no budgets table was given (data.budgets); "
                         "create one with `medssl split MANIFEST --out OUT --budgets 250,1000`")
    from medssl.splits import budget_rows

    paths = set(budget_rows(budgets, budget, seed)["path"].astype(str))
    in_train = manifest["path"].astype(str).to_numpy()[train]
    rows = train[np.isin(in_train, list(paths))]
    if rows.size != len(paths):
        raise SplitError(f"{len(paths) - rows.size} path(s) of budget {budget} seed {seed} are not training rows "
                         "of this manifest; the budgets table belongs to another manifest or split - re-run "
                         "`medssl split` on this one")
    return rows


class ImageDataset:
    """torch-style Dataset: i -> (image float32 (1, S, S) in [0, 1], targets (C,), mask (C,), box int64 (4,)).

    `box` is the image's content box (top, left, height, width) inside the cache's padded canvas
    (`CachedImages.content_box`), the whole image for sources without one: training augmentation
    draws its crops inside it, so a crop is never mostly padding.
    """

    def __init__(self, images, labeled: LabeledSet):
        self.images = images
        self.set = labeled

    def __len__(self) -> int:
        return len(self.set)

    def __getitem__(self, i: int):
        import torch

        row = int(self.set.rows[i])
        x = to_unit_float(self.images[row])
        box = (self.images.content_box(row) if hasattr(self.images, "content_box")
               else (0, 0, x.shape[-2], x.shape[-1]))
        return (torch.from_numpy(np.ascontiguousarray(x))[None], torch.from_numpy(self.set.targets[i]),
                torch.from_numpy(self.set.mask[i]), torch.tensor(box, dtype=torch.int64))


def image_batch(images, rows):
    """Images of manifest positions `rows` from an image source as one float32 tensor (B, 1, S, S) in [0, 1]."""
    import torch

    return torch.from_numpy(np.stack([to_unit_float(images[int(r)]) for r in rows]))[:, None]


class ArrayImages:
    """An in-memory image source: (N, S, S) array indexed by manifest position (tests, small data sets)."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.array[i]


def resize_batch(x, size: int | None):
    """(B, 1, H, W) float tensor -> (B, 1, size, size) (bilinear, antialiased); unchanged when already that size."""
    if size is None or (x.shape[-2] == size and x.shape[-1] == size):
        return x
    import torch.nn.functional as F

    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def val_selection_score(labeled: LabeledSet, probs: np.ndarray, labels: Sequence[str],
                        tasks: Sequence[str] | None, loss: float) -> tuple[float, str]:
    """The number checkpoint selection maximises on the VALIDATION set, and its name.

    Mean val ROC-AUC over the evaluation tasks (default per medssl.evaluate.default_tasks; tasks not
    trained are dropped). When no task has both classes in val (AUC undefined every epoch, since it
    depends on labels only) the fallback is minus the masked val loss.
    """
    from medssl.evaluate.metrics import mean_auc

    tasks = [t for t in (tasks or []) if t in labels] or None
    auc = mean_auc(labeled.labels_raw, probs, labels, tasks)
    if np.isfinite(auc):
        return auc, "val_mean_auc"
    return -float(loss), "neg_val_loss"
