"""Table formats (chexpert, mimic-cxr-jpg, nih-cxr14, kermany) on tiny fixtures and the real tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medssl.errors import ManifestError
from medssl.manifest import build, validate
from medssl.manifest.pseudonym import pseudonym
from medssl.manifest.schema import CHEXPERT_LABELS, label_columns

SALT = "test-salt"


def test_chexpert_folder(chexpert_root):
    df = build("chexpert", chexpert_root, salt=SALT)
    assert len(df) == 6
    assert df.attrs["data_root"] == str(chexpert_root.parent.resolve())  # Path starts with the folder name
    assert df["path"].iloc[0] == "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    assert list(df["view"]) == ["AP", "LATERAL", "PA", "AP", "FRONTAL", "AP"]
    assert list(df["source_split"]) == ["train"] * 5 + ["valid"]
    assert label_columns(df.columns) == list(CHEXPERT_LABELS)
    # patient from the path; study numbers restart per patient, so study = patient + study
    assert df["patient_id"].nunique() == 4 and df["study_id"].nunique() == 5
    assert df.loc[0, "patient_id"] == pseudonym("patient00001", SALT.encode())
    assert df.loc[0, "study_id"] == pseudonym("patient00001/study1", SALT.encode(), "study")
    # -1 (uncertain) and blank stay distinct
    row = df.iloc[2]
    assert row["Cardiomegaly"] == -1.0 and np.isnan(row["No Finding"]) and row["Lung Opacity"] == 1.0
    assert df["Cardiomegaly"].dtype == np.float64
    assert list(df["meta_sex"]) == ["Female", "Female", "Male", "Male", "Unknown", "Male"]
    assert list(df["meta_age"]) == [68, 68, 87, 83, 41, 73]


def test_chexpert_single_csv_and_data_root(chexpert_root):
    df = build("chexpert", chexpert_root / "valid.csv", salt=SALT, data_root=chexpert_root)
    assert list(df["path"]) == ["valid/patient64541/study1/view1_frontal.jpg"]
    assert df.attrs["data_root"] == str(chexpert_root.resolve())
    with pytest.raises(ManifestError, match="lie outside --data-root"):
        build("chexpert", chexpert_root / "valid.csv", salt=SALT, data_root=chexpert_root / "train")


def test_chexpert_missing_files_raise_or_skip(chexpert_root, tmp_path):
    (chexpert_root / "train/patient00002/study2/view1_frontal.jpg").unlink()
    with pytest.raises(ManifestError, match=r"1 of 6 file\(s\) do not exist.*patient00002/study2"):
        build("chexpert", chexpert_root, salt=SALT)
    report = tmp_path / "skipped.csv"
    df = build("chexpert", chexpert_root, salt=SALT, on_error="skip", report=report)
    assert len(df) == 5 and df.attrs["skipped"] == 1
    skipped = pd.read_csv(report)
    assert list(skipped.columns) == ["path", "reason"]
    assert skipped.loc[0, "path"].endswith("patient00002/study2/view1_frontal.jpg")
    assert len(build("chexpert", chexpert_root, salt=SALT, verify_files=False)) == 6


def test_mimic(mimic_root):
    df = build("mimic-cxr-jpg", mimic_root, salt=SALT)
    assert len(df) == 5
    assert df["path"].iloc[0] == "files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg"
    assert list(df["view"]) == ["PA", "LATERAL", "AP", "LATERAL", "UNKNOWN"]
    assert list(df["source_split"]) == ["train", "train", "train", "validate", "test"]
    assert df["patient_id"].nunique() == 3 and df["study_id"].nunique() == 4
    assert list(df["No Finding"].iloc[:2]) == [1.0, 1.0]            # both images of study 50414267
    assert df["Cardiomegaly"].iloc[2] == -1.0 and df["Pneumothorax"].iloc[2] == 0.0
    assert df.iloc[4][label_columns(df.columns)].isna().all()        # study without a labels row


def test_nih_layout(nih_root):
    df = build("nih-cxr14", nih_root, salt=SALT)
    assert list(df["path"]) == ["images_001/images/00000001_000.png", "images_001/images/00000001_001.png",
                                "images_002/images/00000002_000.png", "images_002/images/00000003_000.png"]
    assert len(label_columns(df.columns)) == 14
    assert df.loc[1, ["Cardiomegaly", "Emphysema"]].tolist() == [1.0, 1.0]
    assert df.loc[1, label_columns(df.columns)].sum() == 2
    assert df.loc[2, label_columns(df.columns)].sum() == 0                  # No Finding -> all 0
    assert df.loc[3, ["Hernia", "Pleural_Thickening", "Effusion"]].tolist() == [1.0, 1.0, 1.0]
    assert df["study_id"].nunique() == 4 and df["patient_id"].nunique() == 3
    assert list(df["source_split"]) == ["train_val", "train_val", "test", "train_val"]
    assert list(df["meta_age"]) == [57] * 4


def test_kermany(kermany_root):
    df = build("kermany", kermany_root, salt=SALT)
    assert list(df[["Pneumonia", "Bacterial", "Viral"]].itertuples(index=False, name=None)) == [
        (0.0, 0.0, 0.0), (1.0, 1.0, 0.0), (1.0, 0.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 1.0)]
    # patient = the raw file-name id: person1's bacterial and viral episodes AND its image in the
    # distributor's test folder are one child (patient_id_loose would make test/person1 another one,
    # free to land in another split); study = the strict id (one episode)
    assert df["patient_id"].nunique() == 3 and df["study_id"].nunique() == 5
    assert df.loc[1, "patient_id"] == df.loc[2, "patient_id"] == df.loc[4, "patient_id"] \
        == pseudonym("person1", SALT.encode())
    assert list(df["source_split"]) == ["train", "train", "train", "test", "test"]
    assert "split" not in df.columns and "raw_patient_id" not in df.columns
    assert set(df["view"]) == {"FRONTAL"} and set(df["modality"]) == {"DX"}


def test_kermany_bad_subtype(kermany_root):
    csv = kermany_root / "labels.csv"
    csv.write_text(csv.read_text().replace(",virus,", ",fungal,"))
    with pytest.raises(ManifestError, match="fungal"):
        build("kermany", kermany_root, salt=SALT)


def test_unknown_format_and_wrong_csv(chexpert_root, kermany_root):
    with pytest.raises(ManifestError, match="unknown manifest format 'xray'.*chexpert"):
        build("xray", chexpert_root)
    with pytest.raises(ManifestError, match="lacks column"):
        build("nih-cxr14", kermany_root / "labels.csv", salt=SALT)


# ---------------------------------------------------------------------------- real tables
def test_real_chexpert_table(shared_data):
    df = build("chexpert", shared_data / "metadata" / "chexpert_train.csv.gz", verify_files=False, salt=SALT)
    assert len(df) == 223_414 and df["patient_id"].nunique() == 64_540
    assert df["patient_id"].str.match(r"^pid-[0-9a-f]{16}$").all()
    assert df["view"].value_counts().to_dict() == {"AP": 161_590, "LATERAL": 32_387, "PA": 29_420, "FRONTAL": 17}
    raw = pd.read_csv(shared_data / "metadata" / "chexpert_train.csv.gz", usecols=["Edema"])
    # uncertain and blank counts survive exactly
    assert (df["Edema"] == -1).sum() == (raw["Edema"] == -1).sum() > 0
    assert df["Edema"].isna().sum() == raw["Edema"].isna().sum() > 0


def test_real_nih_table(shared_data):
    df = build("nih-cxr14", shared_data / "metadata" / "nih_cxr14_Data_Entry_2017_v2020.csv.gz",
               verify_files=False, salt=SALT)
    assert len(df) == 112_120 and df["patient_id"].nunique() == 30_805
    assert df["study_id"].nunique() == 112_120
    labels = label_columns(df.columns)
    assert len(labels) == 14 and df[labels].isin([0.0, 1.0]).all().all()
    assert int(df["Hernia"].sum()) == 227 and int(df["Infiltration"].sum()) == 19_894
    assert (df[labels].sum(axis=1) == 0).sum() == 60_361  # the "No Finding" rows


def test_real_kermany(shared_data):
    df = build("kermany", shared_data / "real" / "kermany_pediatric", salt=SALT)  # verifies 5,840 files
    assert len(df) == 5_840
    assert int(df["Pneumonia"].sum()) == 4_265
    assert df["source_split"].value_counts().to_dict() == {"train": 5_216, "test": 624}
    # 170 file-name ids occur in both distributor folders; merged, 3,103 children (3,273 with the folder prefix)
    assert df["patient_id"].nunique() == 3_103
    validate(df, verify_files=True)


def test_real_kermany_split_keeps_each_raw_id_in_one_split(shared_data):
    from medssl.splits import patient_split

    raw = pd.read_csv(shared_data / "real" / "kermany_pediatric" / "labels.csv", usecols=["image", "raw_patient_id"])
    df = patient_split(build("kermany", shared_data / "real" / "kermany_pediatric", salt=SALT), val=0.15, test=0.25)
    joined = df.merge(raw, left_on="path", right_on="image")
    assert len(joined) == 5_840
    splits_per_id = joined.groupby("raw_patient_id")["split"].nunique()
    assert splits_per_id.max() == 1
    for straddler in ("person53", "person102", "person1628"):  # in both distributor folders
        assert joined.loc[joined["raw_patient_id"] == straddler, "source_split"].nunique() == 2
