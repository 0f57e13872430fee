"""The figures of an analysis on real images: kernels, embedding, PNG content, and no identifiers anywhere."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest


def _png(path):
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    return mpimg.imread(path)


def test_every_figure_is_a_real_non_blank_png(random_run):
    pngs = [random_run.out_dir / f for f in random_run.files.values() if f.endswith(".png")]
    assert sorted(p.name for p in pngs) == ["embedding.png", "kernels.png", "retrieval.png", "saliency.png"]
    for p in pngs:
        img = _png(p)
        assert img.shape[0] > 200 and img.shape[1] > 200, (p, img.shape)
        grey = img[..., :3].mean(axis=2)
        assert grey.std() > 0.1, p                        # not a flat image
        assert (grey < 0.9).mean() > 0.05, p              # more than a white page with a title
        if p.name in ("embedding.png", "saliency.png"):   # coloured points / heatmaps are drawn
            chroma = img[..., :3].max(axis=2) - img[..., :3].min(axis=2)
            assert (chroma > 0.3).mean() > 0.01, p
    index = random_run.index.read_text()
    for step, f in random_run.files.items():
        assert step == "index" or f"({f})" in index
    assert "| Pneumonia |" in index


def test_kernel_grid_has_one_tile_per_filter(random_run):
    """The random run draws resnet18's 64 conv1 filters; a ViT patch projection (192 filters) is capped at
    max_tiles; the mosaic holds exactly that many separate tiles."""
    from scipy import ndimage

    from medssl.analyze.kernels import first_conv, kernel_tiles, mosaic, plot_kernels
    from medssl.models.backbones import build_encoder

    assert random_run.kernel_tiles == {"random": 64}
    vit = build_encoder("vit_tiny", 1, 32, patch_size=8, vit_depth=1)
    name, conv = first_conv(vit)
    assert name == "patch_embedding.patch_embeddings" and conv.weight.shape[0] == 192
    for cap in (64, 50, 200):
        tiles = kernel_tiles(conv.weight, cap)
        _, n_blocks = ndimage.label(np.isfinite(mosaic(tiles)))
        assert len(tiles) == n_blocks == min(cap, 192)
        assert tiles.min() >= 0 and tiles.max() <= 1
    counts = plot_kernels([("a", conv.weight), ("b", first_conv(build_encoder("resnet18"))[1].weight)],
                          random_run.out_dir.parent / "kernels-test.png", max_tiles=100)
    assert counts == {"a": 100, "b": 64}


def test_embedding_coordinates_are_deterministic_per_seed(kermany):
    from medssl.analyze.embedding import embed_2d, site_column

    z = np.load(next(kermany.feature_dir.glob("*/test.npz")))["features"][:150]
    a, method = embed_2d(z, seed=3)
    b, _ = embed_2d(z, seed=3)
    assert "t-SNE" in method and np.array_equal(a, b) and np.isfinite(a).all() and a.std() > 0
    p1, _ = embed_2d(z, seed=0, fast=True)
    assert np.array_equal(p1, embed_2d(z, seed=1, fast=True)[0])   # PCA has no randomness at all
    assert site_column(kermany.df) == "source_split"
    assert site_column(kermany.df.assign(meta_site="A")) == "meta_site"


def test_embedding_subsample_follows_the_seed(kermany, random_run, tmp_path):
    from medssl.analyze.run import AnalysisOptions, run_analysis

    def coords(seed, name):
        run_analysis(kermany.cfg(), "random", kermany.df, kermany.images, tmp_path / name,
                     feature_dir=kermany.feature_dir,
                     options=AnalysisOptions(steps=("embedding",), fast=True, max_points=300, seed=seed))
        return pd.read_csv(tmp_path / name / "embedding.csv")

    a, b, c = coords(5, "a"), coords(5, "b"), coords(6, "c")
    assert len(a) == 300 and a.equals(b) and not a.equals(c)
    assert set(a.columns) == {"x", "y", "split", "labels", "site"}
    full = pd.read_csv(random_run.out_dir / "embedding.csv")
    assert len(full) == len(kermany.df) and set(full["site"]) == {"train", "test"}


def _needles(kermany, random_run) -> list[str]:
    """Paths, file names and patient ids (pseudonymised and raw) of every image the figures show, plus a sample."""
    from medssl.data import embedded_kermany_dir

    shown = set(random_run.query_rows.tolist()) | set(random_run.saliency_rows.tolist())
    shown |= {int(r) for r in random_run.neighbour_rows.ravel() if r >= 0}
    shown |= set(range(0, len(kermany.df), 97))
    rows = kermany.df.iloc[sorted(shown)]
    raw = pd.read_csv(embedded_kermany_dir() / "labels.csv", dtype=str).set_index("image")["raw_patient_id"]
    needles = set(rows["path"]) | {p.rsplit("/", 1)[-1] for p in rows["path"]} | set(rows["patient_id"])
    needles |= set(rows["study_id"]) | set(raw.reindex(rows["path"]).dropna())
    return sorted(needles)


def test_no_manifest_path_or_patient_id_in_any_output_file(kermany, random_run, tmp_path):
    """medssl.phi's scanner (raw bytes, PNG text chunks, UTF-8/16/32, any case) finds none of the shown
    images' paths, file names or ids in the output folder; the same needles are found when planted."""
    from medssl.phi import scan_tree

    needles = _needles(kermany, random_run)
    assert len(needles) > 50 and any(n.startswith("images/") for n in needles)
    assert scan_tree(random_run.out_dir, needles) == []
    some = [n for n in needles if n.startswith("images/")][:1] + [n for n in needles if n.startswith("pid-")][:1]
    cmd = [sys.executable, "-m", "medssl.phi", str(random_run.out_dir)] + [f"--needle={n}" for n in some]
    assert subprocess.run(cmd, capture_output=True, text=True).returncode == 0
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "note.md").write_text(f"query {some[1]}\n")
    out = subprocess.run([sys.executable, "-m", "medssl.phi", str(planted)] + [f"--needle={n}" for n in some],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "needle #1" in out.stdout


@pytest.mark.parametrize("name", ["retrieval.json", "knn.json", "index.md", "embedding.csv"])
def test_text_outputs_carry_labels_not_identifiers(random_run, name):
    text = (random_run.out_dir / name).read_text()
    assert "pid-" not in text and "images/" not in text and ".png" not in text.replace("](", "").replace(
        "retrieval.png", "").replace("kernels.png", "").replace("saliency.png", "").replace("embedding.png", "")
