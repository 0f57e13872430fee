"""First-layer kernels: the filters of an encoder's first convolution, drawn as a grid of tiles.

The first conv is the first `nn.Conv2d` of the MONAI network: `conv1` of a ResNet, `features.conv0`
of a DenseNet, a ViT's patch projection (`patch_embedding.patch_embeddings`). Each tile is one
output filter, averaged over input channels (1 for grayscale), scaled by its own largest absolute
weight: mid-grey is 0, white positive, black negative. Random filters look like salt and pepper;
trained ones show oriented edges, blobs and smooth gradients.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from torch import nn

from medssl.analyze.common import pyplot, save_png, suptitle


def first_conv(module: nn.Module) -> tuple[str, nn.Conv2d]:
    """(name, layer) of the first Conv2d of an Encoder's network (or of any module)."""
    net = getattr(module, "net", module)
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    raise ValueError(f"{type(net).__name__} has no Conv2d layer")


def kernel_tiles(weight, max_tiles: int = 64) -> np.ndarray:
    """(n, kh, kw) float64 tiles in [0, 1] (0.5 = zero weight) of the first `max_tiles` filters."""
    w = weight.detach().float().cpu().numpy() if hasattr(weight, "detach") else np.asarray(weight, np.float64)
    w = np.asarray(w, np.float64)[:max_tiles].mean(axis=1)                 # (n, kh, kw)
    scale = np.abs(w).reshape(len(w), -1).max(axis=1)[:, None, None]
    return 0.5 + 0.5 * w / np.maximum(scale, 1e-12)


def mosaic(tiles: np.ndarray, cols: int | None = None, gap: int = 1) -> np.ndarray:
    """Tiles laid out row by row with `gap` NaN pixels between them (NaN renders as background)."""
    n, kh, kw = tiles.shape
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    out = np.full((rows * (kh + gap) - gap, cols * (kw + gap) - gap), np.nan)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (kh + gap):r * (kh + gap) + kh, c * (kw + gap):c * (kw + gap) + kw] = tiles[i]
    return out


def plot_kernels(panels: Sequence[tuple[str, object]], path: str | Path, *, max_tiles: int = 64) -> dict[str, int]:
    """One panel per (title, first-conv weight); returns the number of tiles drawn per panel title."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.9), squeeze=False,
                             layout="constrained")
    cmap = plt.get_cmap("gray").with_extremes(bad="white")
    counts = {}
    for ax, (title, weight) in zip(axes[0], panels):
        tiles = kernel_tiles(weight, max_tiles)
        shape = tuple(weight.shape)
        ax.imshow(mosaic(tiles), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(f"{title}\n{len(tiles)} of {shape[0]} filters, {shape[-2]}x{shape[-1]}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        counts[title] = len(tiles)
    suptitle(fig, "first-layer kernels (mid-grey = 0, each filter scaled to its own range)")
    save_png(fig, path)
    return counts
