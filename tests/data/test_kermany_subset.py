"""The embedded Kermany demo subset: files match labels.csv, whole patients, provenance."""

from __future__ import annotations

import importlib.util
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medssl.data import embedded_kermany_dir

COLUMNS = ["image", "split", "label_pneumonia", "subtype", "patient_id", "patient_id_loose", "raw_patient_id"]
ROOT = embedded_kermany_dir()


@pytest.fixture(scope="module")
def labels() -> pd.DataFrame:
    return pd.read_csv(ROOT / "labels.csv", dtype=str)


def test_labels_match_the_image_files(labels):
    assert list(labels.columns) == COLUMNS
    assert 1200 <= len(labels) <= 1500 and labels["image"].is_unique
    on_disk = {f"images/{p.name}" for p in (ROOT / "images").glob("*.png")}
    assert on_disk == set(labels["image"])  # no missing, no extra files
    for rel in labels["image"]:
        with Image.open(ROOT / rel) as im:
            assert im.mode == "L" and im.size == (128, 128) and im.format == "PNG"
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    assert total < 20 * 2**20


def test_labels_are_consistent_and_useful(labels):
    assert set(labels["split"]) == {"train", "test"}
    assert labels.groupby("split")["subtype"].nunique().eq(3).all()  # all three subtypes in each split
    assert ((labels["subtype"] == "normal") == (labels["label_pneumonia"] == "0")).all()
    per_patient = labels.groupby("patient_id_loose")
    assert per_patient["split"].nunique().max() == 1  # no patient in two splits
    sizes = per_patient.size()
    assert (sizes >= 2).sum() >= 200 and sizes.max() <= 8  # MICLe pairs exist; no patient dominates
    share = labels["subtype"].value_counts(normalize=True)
    assert 0.2 < share["normal"] < 0.35 and 0.4 < share["bacteria"] < 0.55 and 0.2 < share["virus"] < 0.32
    text = (ROOT / "SOURCE.txt").read_text()
    assert "CC BY 4.0" in text and "10.17632/rscbjbr9sj.2" in text and "224x224" in text and "128x128" in text
    assert "Kermany" in (ROOT / "README.md").read_text()


def test_whole_patients_and_pixels_from_the_source(labels, shared_data):
    src = shared_data / "real" / "kermany_pediatric"
    full = pd.read_csv(src / "labels.csv", dtype=str)
    chosen = full[full["patient_id_loose"].isin(labels["patient_id_loose"])]
    assert len(chosen) == len(labels)  # every image of every selected patient, nothing else
    merged = chosen.assign(image=[f"images/{s}_{p.rsplit('/', 1)[1].rsplit('.', 1)[0]}.png"
                                  for s, p in zip(chosen["split"], chosen["image"])])
    pd.testing.assert_frame_equal(merged.sort_values("image")[COLUMNS].reset_index(drop=True),
                                  labels.sort_values("image").reset_index(drop=True))
    # all columns but `image` carried over unchanged (frame equality above);
    # pixels: the script's conversion of the source image reproduces the stored PNG exactly
    spec = importlib.util.spec_from_file_location("make_kermany_subset",
                                                  ROOT.parents[2] / "scripts" / "make_kermany_subset.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for i in (0, len(labels) // 2, len(labels) - 1):
        row = merged.sort_values("image").iloc[i]
        source = full.loc[full["image"].str.endswith(row["image"].split("_", 1)[1].replace(".png", ".jpeg"))
                          & (full["split"] == row["split"]), "image"].iloc[0]
        regenerated = np.asarray(Image.open(io.BytesIO(script.to_png(src / source))))
        assert np.array_equal(regenerated, np.asarray(Image.open(ROOT / row["image"])))
        with Image.open(src / source) as original:  # a downsized version of the real image
            small = np.asarray(original.convert("L").resize((128, 128)), dtype=float)
        assert np.corrcoef(small.ravel(), regenerated.ravel().astype(float))[0, 1] > 0.98
