"""Nearest-neighbour retrieval: test queries and their most similar training images, same patient excluded.

Similarity is the kNN probe's: cosine of features centred with the training mean
(`medssl.finetune.probe`). A training image of the query's own patient is never shown as a
neighbour (with a split manifest there are none; with a manifest whose splits share patients, e.g.
a distributor's published split, the "nearest neighbour" would often be another view of the same
child, which says nothing about the features). Tiles are titled with label names and the
similarity only: no patient id, path or file name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from medssl.analyze.common import label_text, pyplot, save_png, show_image, suptitle


def _unit(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    z = np.asarray(x, np.float64) - mean
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def nearest_neighbours(query_x: np.ndarray, query_patients: Sequence, gallery_x: np.ndarray,
                       gallery_patients: Sequence, k: int, *, mean: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k gallery rows per query by cosine similarity, skipping the query's own patient.

    Returns (index (Q, k) int64 into the gallery, -1 where fewer than k rows are eligible;
    similarity (Q, k) float64, NaN there; skipped (Q,) int64: how many same-patient gallery rows
    were more similar than the k-th neighbour shown, i.e. would have been shown without the rule).
    mean: the centring vector (default the gallery mean).
    """
    gallery_x = np.asarray(gallery_x)
    mean = gallery_x.mean(axis=0) if mean is None else np.asarray(mean)
    sim = _unit(query_x, mean) @ _unit(gallery_x, mean).T                   # (Q, N)
    same = np.asarray(query_patients).astype(str)[:, None] == np.asarray(gallery_patients).astype(str)[None, :]
    masked = np.where(same, -np.inf, sim)
    q = len(sim)
    idx = np.full((q, k), -1, dtype=np.int64)
    out = np.full((q, k), np.nan)
    skipped = np.zeros(q, dtype=np.int64)
    for i in range(q):
        eligible = np.flatnonzero(np.isfinite(masked[i]))
        order = eligible[np.argsort(-masked[i, eligible], kind="stable")][:k]
        idx[i, :order.size], out[i, :order.size] = order, sim[i, order]
        floor = sim[i, order[-1]] if order.size else -np.inf
        skipped[i] = int((same[i] & (sim[i] > floor)).sum())
    return idx, out, skipped


def retrieval_records(query_raw: np.ndarray, gallery_raw: np.ndarray, idx: np.ndarray, sim: np.ndarray,
                      skipped: np.ndarray, labels: Sequence[str]) -> list[dict]:
    """What retrieval.json holds per query: label text, neighbours' label text and similarity, and the
    number of same-patient images skipped. Queries are numbered 1..Q (no row, path or id)."""
    out = []
    for i in range(len(idx)):
        q = label_text(query_raw[i], labels)
        nbrs = [{"rank": r + 1, "labels": label_text(gallery_raw[j], labels), "similarity": float(sim[i, r]),
                 "same_labels": label_text(gallery_raw[j], labels) == q}
                for r, j in enumerate(idx[i]) if j >= 0]
        out.append({"query": i + 1, "labels": q, "neighbours": nbrs, "same_patient_skipped": int(skipped[i])})
    return out


def plot_retrieval(query_images: Sequence[np.ndarray], query_titles: Sequence[str],
                   neighbour_images: Sequence[Sequence[np.ndarray]], neighbour_titles: Sequence[Sequence[str]],
                   path: str | Path, *, title: str = "") -> Path:
    """Grid: one row per query (left, framed), its neighbours to the right, each tile titled with labels."""
    plt = pyplot()
    n_q = len(query_images)
    k = max((len(n) for n in neighbour_images), default=0)
    fig, axes = plt.subplots(n_q, k + 1, figsize=(1.55 * (k + 1), 1.75 * n_q + 0.5), squeeze=False,
                             layout="constrained")
    for i in range(n_q):
        ax = axes[i][0]
        show_image(ax, query_images[i], "query\n" + query_titles[i])
        for side in ax.spines.values():
            side.set_edgecolor("tab:red")
            side.set_linewidth(2.5)
        for r in range(k):
            ax = axes[i][r + 1]
            if r < len(neighbour_images[i]):
                show_image(ax, neighbour_images[i][r], neighbour_titles[i][r])
            else:
                ax.axis("off")
    if title:
        suptitle(fig, title)
    return save_png(fig, path)
