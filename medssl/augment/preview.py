"""A grid of originals and augmented views, so a radiologist can check a policy before training.

Rows are manifest rows decoded exactly as training sees them: from the decoded cache when one
is given, else read with `medssl.io.read_image` and fitted into the cache format
(`medssl.cache.decode_row`: same window, size, padding and content box). Each row shows the
stored image and `views` outputs of the batched path (the one training uses). Titles carry row
numbers only, never patient or study ids (PHI).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medssl.atomic import atomic_path
from medssl.augment.policies import AugmentPolicy
from medssl.errors import ConfigError, ManifestError


def pick_rows(n_rows: int, n: int, seed: int = 0) -> np.ndarray:
    """n manifest row numbers drawn without replacement (deterministic per seed), sorted."""
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    if n_rows == 0:
        raise ManifestError("the manifest has no rows to preview")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_rows, size=min(n, n_rows), replace=False))


def load_rows(df, rows, *, cache_dir=None, data_root=None, size: int = 256, dtype: str = "uint8",
              window="voi") -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """(stored uint8/uint16 (S, S) image, content box (top, left, h, w)) for each manifest row."""
    if cache_dir is not None:
        from medssl.cache import CachedImages
        images = CachedImages(cache_dir, manifest=df)
        return [(np.asarray(images[int(r)]), images.content_box(int(r))) for r in rows]
    import pandas as pd

    from medssl.cache import decode_row
    root = data_root if data_root is not None else df.attrs.get("data_root")
    out = []
    for r in rows:
        value = df["frame"].iloc[int(r)] if "frame" in df.columns else None
        frame = -1 if value is None or pd.isna(value) else int(value)      # -1: the file has no frames
        stored, box, _ = decode_row(str(df["path"].iloc[int(r)]), frame, data_root=None if root is None else str(root),
                                    size=size, dtype=dtype, window=window)
        out.append((stored, tuple(int(v) for v in box)))
    return out


def preview_figure(images, row_numbers, policy: AugmentPolicy, *, views: int = 4, seed: int = 0):
    """matplotlib Figure: one row per image, the stored image then `views` augmented views."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import torch

    if views < 1:
        raise ConfigError(f"--views must be >= 1, got {views}")
    n = len(images)
    fig, axes = plt.subplots(n, views + 1, figsize=(1.7 * (views + 1), 1.8 * n + 0.4), squeeze=False)
    for i, ((stored, box), row) in enumerate(zip(images, row_numbers)):
        x = torch.from_numpy(np.ascontiguousarray(stored))[None, None].expand(views, 1, *stored.shape)
        gen = torch.Generator().manual_seed(int(seed) * 100_003 + int(row))
        out = policy.batch(x, generator=gen, boxes=torch.tensor([box] * views)).numpy()
        scale = float(np.iinfo(stored.dtype).max) if stored.dtype.kind in "ui" else 1.0
        panels = [stored.astype(np.float32) / scale] + [out[k, 0] for k in range(views)]
        for j, (ax, img) in enumerate(zip(axes[i], panels)):
            ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"row {int(row)}" if j == 0 else f"view {j}", fontsize=8)
    unsafe = "  [UNSAFE: forced]" if policy.unsafe else ""
    fig.suptitle(f"{policy.name} ({policy.modality}), {policy.out_size}px{unsafe}", fontsize=9)
    fig.tight_layout()
    return fig


def write_preview(out, df, policy: AugmentPolicy, *, n: int = 6, views: int = 4, seed: int = 0,
                  cache_dir=None, data_root=None, size: int = 256, dtype: str = "uint8", window="voi") -> Path:
    """Pick n rows, augment them, and write the grid PNG atomically to `out`."""
    import matplotlib.pyplot as plt

    rows = pick_rows(len(df), n, seed)
    images = load_rows(df, rows, cache_dir=cache_dir, data_root=data_root, size=size, dtype=dtype, window=window)
    fig = preview_figure(images, rows, policy, views=views, seed=seed)
    out = Path(out)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)
    return out
