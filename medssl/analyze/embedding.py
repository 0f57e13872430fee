"""2-D embedding of frozen features: PCA, then t-SNE (or PCA only), coloured by label and by site.

Two panels of the same points: coloured by label combination, and by a site/source column of the
manifest (`--site-column`; default the first of `SITE_COLUMNS` present). Points that cluster by
site more than by label mean the features encode where an image came from (scanner, hospital,
distributor folder): a shortcut a classifier can exploit and that will not transfer.
Deterministic for a seed: the subsample, PCA (full SVD, fixed signs) and t-SNE (random_state, PCA
initialisation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from medssl.analyze.common import pyplot, save_png, suptitle
from medssl.errors import ManifestError

#: Manifest columns tried, in order, for the site panel.
SITE_COLUMNS = ("meta_site", "meta_source", "source_split", "modality")
#: Categories drawn in their own colour; the rest are "other".
MAX_CATEGORIES = 10
PCA_DIMS = 50


def site_column(df: pd.DataFrame, requested: str | None = None) -> str | None:
    """`requested` (checked), else the first of SITE_COLUMNS in the manifest, else None."""
    if requested:
        if requested not in df.columns:
            raise ManifestError(f"--site-column {requested!r} is not a manifest column; columns: {list(df.columns)}")
        if requested in ("path", "patient_id", "study_id"):
            raise ManifestError(f"--site-column {requested!r} is an identifier column; choose a site/source column")
        return requested
    return next((c for c in SITE_COLUMNS if c in df.columns), None)


def embed_2d(features: np.ndarray, *, seed: int = 0, fast: bool = False, perplexity: float = 30.0
             ) -> tuple[np.ndarray, str]:
    """(coords (N, 2) float64, method description): PCA to <= 50 dims, then t-SNE unless fast."""
    from sklearn.decomposition import PCA

    x = np.asarray(features, np.float64)
    n, d = x.shape
    dims = max(2, min(PCA_DIMS, n, d))
    z = PCA(n_components=dims, svd_solver="full", random_state=seed).fit_transform(x) if n > 2 else \
        np.zeros((n, 2))
    if fast or n < 8:
        return z[:, :2].copy(), "PCA (first two components)"
    from sklearn.manifold import TSNE

    perp = float(min(perplexity, max(2.0, (n - 1) / 3.0)))
    coords = TSNE(n_components=2, perplexity=perp, init="pca", learning_rate="auto", random_state=seed,
                  ).fit_transform(z)
    return np.asarray(coords, np.float64), f"PCA to {dims} dims, then t-SNE (perplexity {perp:g})"


def _categories(values: Sequence[str]) -> list[str]:
    counts = pd.Series(list(values), dtype=object).value_counts()
    keep = list(counts.index[:MAX_CATEGORIES - 1]) if len(counts) > MAX_CATEGORIES else list(counts.index)
    return [str(v) if v in keep else "other" for v in values]


def _scatter(ax, coords, values, title):
    plt = pyplot()
    values = _categories(values)
    cats = sorted(set(values), key=lambda c: (c == "other", c))
    colours = plt.get_cmap("tab10")
    for i, c in enumerate(cats):
        m = np.asarray([v == c for v in values])
        ax.scatter(coords[m, 0], coords[m, 1], s=7, alpha=0.75, color=colours(i % 10), label=f"{c} ({m.sum()})",
                   linewidths=0)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=6, markerscale=1.5, loc="best", frameon=True)


def plot_embedding(coords: np.ndarray, label_values: Sequence[str], site_values: Sequence[str] | None,
                   path: str | Path, *, method: str = "", site_name: str | None = None) -> Path:
    """Two panels: coloured by label combination, and by site (or a note when there is no site column)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), layout="constrained")
    _scatter(axes[0], coords, label_values, "by label")
    if site_values is not None and len(set(site_values)) > 1:
        _scatter(axes[1], coords, site_values, f"by site ({site_name})")
    else:
        axes[1].scatter(coords[:, 0], coords[:, 1], s=7, alpha=0.6, color="grey", linewidths=0)
        axes[1].set_title("by site: " + (f"{site_name} has one value" if site_name else "no site column"), fontsize=9)
        axes[1].set_xticks([])
        axes[1].set_yticks([])
    suptitle(fig, f"{len(coords)} images, {method}", fontsize=9)
    return save_png(fig, path)
