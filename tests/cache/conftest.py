"""Fixtures for cache tests: small PNG images of several shapes and bit depths plus their manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image as PILImage


def _gradient(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth content in (0, 1) with a little noise; different per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 0.5 + 0.35 * np.sin(x / (3 + seed % 5)) * np.cos(y / 4.0) + 0.05 * rng.standard_normal((h, w))
    return np.clip(img, 0.02, 0.98).astype(np.float32)


def write_png(path: Path, values: np.ndarray, bits: int = 8) -> Path:
    """Write floats in [0, 1] as an 8- or 16-bit grayscale PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if bits == 8:
        PILImage.fromarray(np.rint(values * 255).astype(np.uint8)).save(path)
    else:
        PILImage.fromarray(np.rint(values * 65535).astype(np.uint16)).save(path)
    return path


#: (height, width, bits) of the test images: portrait, landscape, square, 16-bit
SHAPES = [(40, 64, 8), (64, 30, 8), (48, 48, 16), (33, 70, 16), (50, 20, 8), (64, 64, 8), (20, 41, 8)]


def make_manifest(root: Path, n: int | None = None) -> pd.DataFrame:
    rows = []
    shapes = SHAPES if n is None else [SHAPES[i % len(SHAPES)] for i in range(n)]
    for i, (h, w, bits) in enumerate(shapes):
        rel = f"p{i:03d}/img{i}.png"
        write_png(root / rel, _gradient(h, w, i), bits)
        rows.append({"path": rel, "patient_id": f"p{i:03d}", "study_id": f"s{i}", "view": "PA",
                     "modality": "DX", "Cardiomegaly": float(i % 2)})
    return pd.DataFrame(rows)


@pytest.fixture
def png_data(tmp_path):
    """(manifest DataFrame, data root) of len(SHAPES) PNG images with relative paths."""
    root = tmp_path / "data"
    return make_manifest(root), root
