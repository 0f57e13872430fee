"""Does a policy leave an intensity shortcut? Match two views of each image by histogram alone.

A contrastive task is only as hard as its easiest cue. If two augmented views of one image have
nearly the same intensity histogram while other images' histograms differ, the network can find
the partner among the negatives from exposure alone and learn nothing about anatomy. The test:
augment N images twice, describe each view by its normalised `bins`-bin histogram, and count how
often view b of image i is the nearest (L1) histogram to view a of image i among all N view b's.
Chance is 1/N. Geometry-only X-ray augmentation scores high on real radiographs (exposure and
processing differ between films); global brightness/contrast/gamma jitter brings it down.
"""

from __future__ import annotations

import numpy as np


def view_histograms(views, bins: int = 32) -> np.ndarray:
    """(B, 1, S, S) float views in [0, 1] -> (B, bins) float64 histograms summing to 1."""
    import torch

    v = torch.as_tensor(views).reshape(len(views), -1).clamp(0, 1)
    idx = (v * bins).long().clamp_(max=bins - 1)
    counts = torch.zeros(len(views), bins, dtype=torch.float64)
    counts.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))
    return (counts / counts.sum(1, keepdim=True)).numpy()


def histogram_match_rate(policy, images, *, bins: int = 32, seed: int = 0, boxes=None) -> float:
    """Fraction of images whose second view is the nearest-histogram match of their first view.

    policy: an `AugmentPolicy` (its batched path is used); images: (N, H, W) or (N, 1, H, W) uint8,
    uint16 or float in [0, 1], N >= 2; boxes: optional (N, 4) content boxes. Deterministic per seed.
    """
    import torch

    x = torch.as_tensor(np.asarray(images))
    if x.dim() == 3:
        x = x[:, None]
    if len(x) < 2:
        raise ValueError("histogram_match_rate needs at least 2 images")
    g = torch.Generator().manual_seed(int(seed))
    b = None if boxes is None else torch.as_tensor(np.asarray(boxes))
    h_a = view_histograms(policy.batch(x, generator=g, boxes=b), bins)
    h_b = view_histograms(policy.batch(x, generator=g, boxes=b), bins)
    dist = np.abs(h_a[:, None, :] - h_b[None, :, :]).sum(-1)      # (N, N) L1 distances
    return float(np.mean(dist.argmin(axis=1) == np.arange(len(x))))
