"""Folder formats (dicom-dir, nifti-dir, image-dir): real files written by the tests, labels CSVs,
patient regexes and on_error="skip" with its report."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from medssl.errors import ManifestError, ReaderError
from medssl.manifest import build
from medssl.manifest.pseudonym import pseudonym
from medssl.manifest.schema import label_columns

from .conftest import write_dicom, write_image

SALT = "test-salt"
S = SALT.encode()


@pytest.fixture
def dicom_dir(tmp_path):
    root = tmp_path / "dicom"
    write_dicom(root / "a" / "img1.dcm", patient_id="MRN001", study_uid="1.2.3.1", view="PA")
    write_dicom(root / "a" / "img2", patient_id="MRN001", study_uid="1.2.3.1", view="LL")  # no suffix
    write_dicom(root / "b" / "img3.dcm", patient_id="MRN002", study_uid="1.2.3.2", view=None, modality="CR")
    (root / "README.txt").write_text("not an image")
    (root / "LICENSE").write_text("no suffix, no DICM preamble: ignored")
    return root


def test_dicom_dir_headers(dicom_dir):
    df = build("dicom-dir", dicom_dir, salt=SALT)
    assert list(df["path"]) == ["a/img1.dcm", "a/img2", "b/img3.dcm"]
    assert list(df["view"]) == ["PA", "LATERAL", "UNKNOWN"]
    assert list(df["modality"]) == ["DX", "DX", "CR"]
    assert df.loc[0, "patient_id"] == pseudonym("MRN001", S)
    assert df.loc[2, "study_id"] == pseudonym("1.2.3.2", S, "study")
    assert df["series_id"].str.startswith("ser-").all()
    assert label_columns(df.columns) == []
    assert df.attrs["data_root"] == str(dicom_dir.resolve())


def test_dicom_dir_labels_on_path_and_study(dicom_dir, tmp_path):
    by_path = tmp_path / "by_path.csv"
    by_path.write_text("path,Cardiomegaly,meta_note\na/img1.dcm,1,x\nb/img3.dcm,-1,y\nzz/none.dcm,0,z\n")
    df = build("dicom-dir", dicom_dir, salt=SALT, labels=by_path)
    assert df["Cardiomegaly"].tolist()[0] == 1.0 and np.isnan(df["Cardiomegaly"][1])
    assert df["Cardiomegaly"][2] == -1.0
    assert df["meta_note"][0] == "x" and pd.isna(df["meta_note"][1]) and df["meta_note"][2] == "y"
    by_study = tmp_path / "by_study.csv"
    by_study.write_text("study_id,Effusion\n1.2.3.1,1\n1.2.3.2,0\n")
    df = build("dicom-dir", dicom_dir, salt=SALT, labels=by_study)
    assert df["Effusion"].tolist() == [1.0, 1.0, 0.0]


def test_dicom_dir_unreadable_raise_and_skip(dicom_dir, tmp_path, caplog):
    (dicom_dir / "b" / "broken.dcm").write_bytes(b"not a DICOM file")
    write_dicom(dicom_dir / "c" / "anon.dcm", patient_id=None)
    with pytest.raises(ReaderError, match=r"broken\.dcm.*--on-error skip"):
        build("dicom-dir", dicom_dir, salt=SALT)
    report = tmp_path / "out" / "skipped.csv"
    with caplog.at_level(logging.WARNING):
        df = build("dicom-dir", dicom_dir, salt=SALT, on_error="skip", report=report)
    assert len(df) == 3 and df.attrs["skipped"] == 2
    skipped = pd.read_csv(report)
    assert sorted(skipped["path"]) == ["b/broken.dcm", "c/anon.dcm"]
    assert skipped.set_index("path").loc["c/anon.dcm", "reason"] == "no patient_id in the header"
    assert "2 file(s) skipped" in caplog.text


def test_dicom_dir_warns_when_paths_carry_ids(tmp_path, caplog):
    write_dicom(tmp_path / "d" / "MRN12345" / "x.dcm", patient_id="MRN12345")
    with caplog.at_level(logging.WARNING):
        build("dicom-dir", tmp_path / "d", salt=SALT)
    assert "contain the patient's raw PatientID" in caplog.text


def _nifti(path):
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3), np.eye(4)).to_filename(path)
    return path


def test_nifti_dir_bids_and_regex(tmp_path):
    root = tmp_path / "bids"
    _nifti(root / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_T1w.nii.gz")
    _nifti(root / "sub-01" / "ses-2" / "anat" / "sub-01_ses-2_T1w.nii.gz")
    _nifti(root / "sub-02" / "ct" / "sub-02_ct.nii")
    df = build("nifti-dir", root, salt=SALT)
    assert df["patient_id"].tolist() == [pseudonym("sub-01", S)] * 2 + [pseudonym("sub-02", S)]
    assert df["study_id"].tolist()[:2] == [pseudonym("sub-01/ses-1", S, "study"), pseudonym("sub-01/ses-2", S, "study")]
    assert df["modality"].tolist() == ["MR", "MR", "CT"]
    flat = tmp_path / "flat"
    _nifti(flat / "case7_scan1.nii.gz")
    _nifti(flat / "case7_scan2.nii.gz")
    df = build("nifti-dir", flat, salt=SALT, patient_regex=r"^(case\d+)_", modality="CT", keep_ids=True)
    assert df["patient_id"].tolist() == ["case7", "case7"] and set(df["modality"]) == {"CT"}


def test_nifti_dir_labels_give_patient(tmp_path):
    root = tmp_path / "vols"
    _nifti(root / "a.nii.gz")
    _nifti(root / "b.nii.gz")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,patient_id,Tumor\na.nii.gz,P9,1\nb.nii.gz,P9,0\n")
    df = build("nifti-dir", root, labels=labels, keep_ids=True)
    assert df["patient_id"].tolist() == ["P9", "P9"] and df["Tumor"].tolist() == [1.0, 0.0]


def test_image_dir_class_folders_and_regex(tmp_path, caplog):
    root = tmp_path / "png"
    write_image(root / "train" / "NORMAL" / "p1_a.png")
    write_image(root / "train" / "PNEUMONIA" / "p1_b.jpg")
    write_image(root / "test" / "PNEUMONIA" / "p2_a.jpeg")
    df = build("image-dir", root, salt=SALT, patient_regex=r"^(?P<patient>p\d+)_(?P<study>\w)")
    assert label_columns(df.columns) == ["NORMAL", "PNEUMONIA"]
    assert df[["NORMAL", "PNEUMONIA"]].values.tolist() == [[0, 1], [1, 0], [0, 1]]  # sorted: test/ first
    assert df["source_split"].tolist() == ["test", "train", "train"]
    assert df["patient_id"].tolist() == [pseudonym(p, S) for p in ("p2", "p1", "p1")]
    assert df["modality"].tolist() == ["OT"] * 3
    with caplog.at_level(logging.WARNING):
        df = build("image-dir", root, salt=SALT)
    assert df["patient_id"].nunique() == 3 and "3 image(s) have no patient id" in caplog.text
    with pytest.raises(ManifestError, match="does not match 1 file name"):
        build("image-dir", root, salt=SALT, patient_regex=r"^(p1)_")


def test_image_dir_labels_csv_and_skip(tmp_path):
    root = tmp_path / "imgs"
    write_image(root / "x1.png")
    write_image(root / "x2.png")
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,patient_id,Nodule\nx1.png,A,1\nx2.png,A,\n")
    with pytest.raises(ReaderError, match="bad.png"):
        build("image-dir", root, labels=labels, salt=SALT)
    df = build("image-dir", root, labels=labels, salt=SALT, on_error="skip", modality="DX", view="PA")
    assert df["path"].tolist() == ["x1.png", "x2.png"] and df.attrs["skipped"] == 1
    assert df["patient_id"].nunique() == 1 and df["Nodule"].tolist()[0] == 1.0 and np.isnan(df["Nodule"][1])
    assert set(df["view"]) == {"PA"} and set(df["modality"]) == {"DX"}
