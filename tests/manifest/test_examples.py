"""The example manifests in data_manifests/ stay valid and in step with the builders; the embedded
demo data builds with every file present (no ../shared needed)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from medssl.manifest import build, load
from medssl.manifest.schema import label_columns

EXAMPLES = Path(__file__).resolve().parents[2] / "data_manifests"


@pytest.mark.parametrize("name", ["example_chexpert.csv", "example_nih_cxr14.csv", "example_dicom_dir.csv",
                                  "example_kermany.csv"])
def test_example_is_valid_and_pseudonymised(name):
    df = load(EXAMPLES / name)  # validates
    assert df["patient_id"].str.fullmatch(r"pid-[0-9a-f]{16}").all()
    assert df["study_id"].str.fullmatch(r"sid-[0-9a-f]{16}").all()
    assert label_columns(df.columns)


def test_chexpert_example_matches_the_builder(chexpert_root):
    built = build("chexpert", chexpert_root, salt="medssl-example")
    example = load(EXAMPLES / "example_chexpert.csv")
    pd.testing.assert_frame_equal(example.drop(columns="meta_age"), built.drop(columns="meta_age"),
                                  check_dtype=False)


def test_embedded_kermany_builds_with_all_files():
    from medssl.data import embedded_kermany_dir

    df = build("kermany", embedded_kermany_dir(), salt="s")  # verify_files=True by default
    assert len(df) > 1000 and df.attrs["skipped"] == 0
    assert set(df["Bacterial"] + df["Viral"]) == {0.0, 1.0}
    assert (df["Pneumonia"] == df["Bacterial"] + df["Viral"]).all()
    assert df.groupby("patient_id").size().max() >= 2  # several images per patient exist
