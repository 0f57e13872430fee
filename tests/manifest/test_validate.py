"""Every validation error: the message names the problem, the column/rows, and the fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medssl.errors import LeakageError, ManifestError
from medssl.manifest import validate


def _manifest(n=4) -> pd.DataFrame:
    return pd.DataFrame({
        "path": [f"img/{i}.png" for i in range(n)],
        "patient_id": [f"pid-{i // 2}" for i in range(n)],
        "study_id": [f"sid-{i}" for i in range(n)],
        "view": "PA", "modality": "DX",
        "Effusion": [1.0, 0.0, -1.0, np.nan][:n],
        "meta_age": [30, 40, 50, 60][:n],
    })


def test_valid_manifest_passes():
    assert validate(_manifest()) is None


def test_missing_required_columns():
    with pytest.raises(ManifestError,
                       match=r"lacks required column\(s\) \['study_id', 'view'\].*medssl manifest build"):
        validate(_manifest().drop(columns=["study_id", "view"]))


def test_no_rows():
    with pytest.raises(ManifestError, match="no rows"):
        validate(_manifest().iloc[:0])


@pytest.mark.parametrize("value", [np.nan, "", "  "])
def test_empty_patient_id(value):
    df = _manifest().astype({"patient_id": object})
    df.loc[2, "patient_id"] = value
    with pytest.raises(ManifestError, match=r"1 row\(s\) have an empty 'patient_id' \(rows 2\).*patient id"):
        validate(df)


def test_duplicate_rows_and_paths():
    df = pd.concat([_manifest(), _manifest().iloc[[1]]], ignore_index=True)
    with pytest.raises(ManifestError, match=r"1 duplicate row\(s\) \(rows 4 "):
        validate(df)
    df.loc[4, "Effusion"] = 1.0
    with pytest.raises(ManifestError, match=r"1 path\(s\) appear on more than one row.*'img/1.png'"):
        validate(df)
    df["frame"] = [0, 0, 0, 0, 1]  # a second frame of the same file is a different image
    validate(df)


@pytest.mark.parametrize("bad", [2.0, 0.5, "yes"])
def test_labels_outside_allowed_values(bad):
    df = _manifest().astype({"Effusion": object})
    df.loc[1, "Effusion"] = bad
    with pytest.raises(ManifestError, match=r"label column 'Effusion' has 1 value\(s\) outside .* at rows 1\b.*meta_"):
        validate(df)


@pytest.mark.parametrize("path", ["/abs/x.png", "../up.png", "a/../../b.png", "C:/data/x.png", "\\\\srv\\x.png"])
def test_unsafe_paths(path):
    df = _manifest()
    df.loc[0, "path"] = path
    with pytest.raises(ManifestError, match=r"1 path\(s\) are absolute or leave the data root"):
        validate(df)


def test_dotdot_inside_root_is_fine():
    df = _manifest()
    df.loc[0, "path"] = "a/../b/x..y.png"
    validate(df)


def test_split_leakage():
    df = _manifest()
    df["split"] = ["train", "test", "val", "val"]  # pid-0 in train and test
    with pytest.raises(LeakageError, match="pid-0"):
        validate(df)
    df["split"] = ["train", "train", "val", "val"]
    validate(df)


def test_missing_files(tmp_path):
    df = _manifest()
    for p in df["path"][:3]:
        (tmp_path / p).parent.mkdir(exist_ok=True)
        (tmp_path / p).write_bytes(b"x")
    validate(df, data_root=tmp_path)  # files are not checked by default
    with pytest.raises(ManifestError, match=r"1 of 4 file\(s\) do not exist under data root .*'img/3.png'"):
        validate(df, data_root=tmp_path, verify_files=True)
    with pytest.raises(ManifestError, match="without a data root"):
        validate(df, verify_files=True)
    df.attrs["data_root"] = str(tmp_path)
    with pytest.raises(ManifestError, match="1 of 4"):
        validate(df, verify_files=True)


def test_unsafe_paths_agree_with_normpath():
    """Property: a relative path escapes its root exactly when posixpath.normpath says '..' first."""
    import posixpath

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from medssl.manifest.validate import unsafe_paths

    segment = st.sampled_from(["a", "b", "..", ".", "", "x..y"])
    path = st.lists(segment, min_size=1, max_size=7).filter(lambda s: s[0] != "").map("/".join)

    @settings(max_examples=25, deadline=None)
    @given(st.lists(path, min_size=1, max_size=40))  # batches: one pandas call per example
    def check(paths):
        expected = [posixpath.normpath(p).split("/")[0] == ".." for p in paths]
        assert unsafe_paths(pd.Series(paths)).tolist() == expected, paths

    check()
