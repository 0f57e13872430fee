"""load/save: dtypes, CSV and Parquet round trips, and how the data root travels (sidecar)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medssl.errors import ManifestError
from medssl.manifest import build, load, save, validate


def test_round_trip_csv_parquet_gz(chexpert_root, tmp_path):
    df = build("chexpert", chexpert_root, salt="s")
    for name in ("m.csv", "m.parquet", "m.csv.gz"):
        out = save(df, tmp_path / "out" / name)
        back = load(out)
        pd.testing.assert_frame_equal(back.drop(columns=["meta_age"]), df.drop(columns=["meta_age"]),
                                      check_dtype=False)
        assert back["Edema"].dtype == np.float64 and back["patient_id"].dtype == "str"
        # data root recorded relative to the manifest, resolved back to the source root
        assert back.attrs["data_root"] == df.attrs["data_root"]
        validate(back, verify_files=True)
    side = json.loads((tmp_path / "out" / "m.meta.json").read_text())
    assert side["data_root"] == "../chexpert"


def test_data_root_moves_with_the_folder(chexpert_root, tmp_path):
    import shutil

    df = build("chexpert", chexpert_root, salt="s")
    save(df, chexpert_root.parent / "manifests" / "m.csv")
    moved = tmp_path / "moved"
    shutil.move(str(chexpert_root.parent), moved)
    back = load(moved / "manifests" / "m.csv")
    assert back.attrs["data_root"] == str(moved.resolve())
    validate(back, verify_files=True)


def test_handwritten_csv_defaults_to_its_folder_and_keeps_id_strings(tmp_path):
    (tmp_path / "m.csv").write_text("path,patient_id,study_id,view,modality,Nodule,meta_site\n"
                                    "a.png,00012,NA,PA,DX,1,x\nb.png,00012,null,PA,DX,,y\n")
    df = load(tmp_path / "m.csv")
    assert df.attrs["data_root"] == str(tmp_path.resolve())
    assert df["patient_id"].tolist() == ["00012", "00012"]      # not the integer 12
    assert df["study_id"].tolist() == ["NA", "null"]            # ids, not missing values
    assert df["Nodule"].tolist()[0] == 1.0 and np.isnan(df["Nodule"][1])
    assert load(tmp_path / "m.csv", data_root=tmp_path / "x").attrs["data_root"] == str(tmp_path / "x")


def test_load_errors(tmp_path):
    with pytest.raises(ManifestError, match="does not exist.*medssl manifest build"):
        load(tmp_path / "nope.csv")
    (tmp_path / "m.csv").write_text("path,patient_id,study_id,view,modality,Nodule\na.png,p,s,PA,DX,maybe\n")
    with pytest.raises(ManifestError, match=r"'Nodule' holds non-numeric values \['maybe'\].*meta_"):
        load(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("path,patient_id\na.png,p\n")
    with pytest.raises(ManifestError, match="lacks required column"):
        load(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("path,patient_id,study_id,view,modality,split\n"
                                    "a.png,p,s1,PA,DX,train\nb.png,p,s2,PA,DX,test\n")
    with pytest.raises(ManifestError, match="more than one 'split'"):
        load(tmp_path / "m.csv")
    assert len(load(tmp_path / "m.csv", validate=False)) == 2


def test_save_refuses_invalid_and_unknown_suffix(tmp_path):
    df = pd.DataFrame({"path": ["a.png", "a.png"], "patient_id": ["p", "q"], "study_id": "s",
                       "view": "PA", "modality": "DX"})
    with pytest.raises(ManifestError, match="more than one row"):
        save(df, tmp_path / "m.csv")
    assert not (tmp_path / "m.csv").exists()
    with pytest.raises(ManifestError, match=r"\.csv, \.csv\.gz or \.parquet"):
        save(df.iloc[:1], tmp_path / "m.xlsx")


def test_column_order(chexpert_root, tmp_path):
    df = build("chexpert", chexpert_root, salt="s")
    shuffled = df[list(reversed(df.columns))]
    save(shuffled, tmp_path / "m.csv")
    cols = list(load(tmp_path / "m.csv").columns)
    assert cols[:6] == ["path", "patient_id", "study_id", "view", "modality", "source_split"]
    assert set(cols[-2:]) == {"meta_sex", "meta_age"} and cols[6] == "Support Devices"  # labels keep their order


def test_manifest_moved_alone_uses_the_absolute_root(chexpert_root, tmp_path):
    import shutil

    df = build("chexpert", chexpert_root, salt="s")
    save(df, tmp_path / "a" / "m.csv")
    (tmp_path / "elsewhere" / "deeper").mkdir(parents=True)
    for name in ("m.csv", "m.meta.json"):
        shutil.move(str(tmp_path / "a" / name), tmp_path / "elsewhere" / "deeper" / name)
    back = load(tmp_path / "elsewhere" / "deeper" / "m.csv")
    assert back.attrs["data_root"] == df.attrs["data_root"]
    validate(back, verify_files=True)


def test_load_selected_columns(chexpert_root, tmp_path):
    df = build("chexpert", chexpert_root, salt="s")
    for name in ("m.csv", "m.parquet"):
        save(df, tmp_path / name)
        part = load(tmp_path / name, columns=["source_split", "Edema"])
        assert list(part.columns) == ["path", "patient_id", "study_id", "view", "modality", "source_split", "Edema"]
        assert part["Edema"].tolist()[2] == -1.0 and part.attrs["data_root"] == df.attrs["data_root"]
