"""Shared pieces of the analysis tools: matplotlib setup, PNG writing, label text, query choice."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from medssl import atomic

#: Text of an image with no positive label.
NO_FINDING = "no finding"


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write a figure atomically as PNG (no metadata beyond matplotlib's software tag) and close it."""
    plt = pyplot()
    path = Path(path)
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", metadata={"Software": None})
    plt.close(fig)
    return path


def label_text(raw_row: np.ndarray, labels: Sequence[str]) -> str:
    """The positive labels of one image, e.g. "Pneumonia, Viral"; uncertain ones get a "?"; none: "no finding"."""
    parts = []
    for value, name in zip(np.asarray(raw_row, dtype=np.float64), labels):
        if value == 1:
            parts.append(str(name))
        elif value == -1:
            parts.append(f"{name}?")
    return ", ".join(parts) if parts else NO_FINDING


def label_texts(raw: np.ndarray, labels: Sequence[str]) -> list[str]:
    return [label_text(r, labels) for r in np.asarray(raw)]


def pick_queries(texts: Sequence[str], n: int, seed: int) -> np.ndarray:
    """`n` positions into `texts`, spread over label combinations: one random image per combination in
    turn (most frequent combination first), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    texts = np.asarray(list(texts), dtype=object)
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        groups.setdefault(str(t), []).append(i)
    order = sorted(groups, key=lambda t: (-len(groups[t]), t))
    pools = {t: list(rng.permutation(groups[t])) for t in order}
    out: list[int] = []
    while len(out) < min(n, len(texts)):
        for t in order:
            if pools[t] and len(out) < n:
                out.append(int(pools[t].pop()))
    return np.asarray(out, dtype=np.int64)


def show_image(ax, img: np.ndarray, title: str | None = None, fontsize: float = 7) -> None:
    """A grey image in [0, 1] on an axis without ticks; `title` is label text, never an identifier."""
    ax.imshow(np.asarray(img, dtype=np.float32), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def suptitle(fig, text: str, fontsize: float = 8) -> None:
    """A figure title wrapped to the figure's width (narrow figures would cut a long line)."""
    import textwrap

    width = max(20, int(fig.get_figwidth() * 72 / (0.55 * fontsize)))
    fig.suptitle(textwrap.fill(text, width), fontsize=fontsize)
