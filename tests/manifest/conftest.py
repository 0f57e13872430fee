"""Fixtures for manifest tests: tiny data sets in the real layouts, built in tmp folders.

Every test runs with its own salt home (MEDSSL_HOME in tmp, MEDSSL_SALT unset) so no test touches
~/.config/medssl or depends on another's salt.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage


@pytest.fixture(autouse=True)
def isolated_salt(tmp_path, monkeypatch):
    home = tmp_path / "medssl-home"
    monkeypatch.setenv("MEDSSL_HOME", str(home))
    monkeypatch.delenv("MEDSSL_SALT", raising=False)
    return home


def write_image(path: Path, size: int = 8, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(np.full((size, size), value, np.uint8)).save(path)
    return path


def write_dicom(path: Path, *, patient_id: str | None = "PAT-0001", study_uid: str | None = "1.2.3.1",
                series_uid: str = "1.2.3.1.1", view: str | None = "PA", modality: str = "DX",
                rows: int = 8, cols: int = 8) -> Path:
    """A real, minimal DICOM file (Explicit VR Little Endian, 12-bit in uint16)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    if patient_id is not None:
        ds.PatientID = patient_id
    ds.PatientName = "Doe^Jane"
    if study_uid is not None:
        ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    if view is not None:
        ds.ViewPosition = view
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(rows * cols, dtype=np.uint16) * 7 % 4096).reshape(rows, cols).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_gz_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        f.write(text)
    return path


CHEXPERT_HEADER = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
                   "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
                   "Pleural Effusion,Pleural Other,Fracture,Support Devices\n")
_CX = "CheXpert-v1.0-small"
CHEXPERT_TRAIN = CHEXPERT_HEADER + (
    f"{_CX}/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0\n"
    f"{_CX}/train/patient00001/study1/view2_lateral.jpg,Female,68,Lateral,,1.0,,,,,,,,,0.0,,,,1.0\n"
    f"{_CX}/train/patient00002/study2/view1_frontal.jpg,Male,87,Frontal,PA,,,-1.0,1.0,,-1.0,-1.0,,-1.0,,-1.0,,1.0,\n"
    f"{_CX}/train/patient00002/study1/view1_frontal.jpg,Male,83,Frontal,AP,,,,1.0,,,-1.0,,,,,,1.0,\n"
    f"{_CX}/train/patient00003/study1/view1_frontal.jpg,Unknown,41,Frontal,LL,0.0,0.0,0.0,0.0,0.0,0.0,0.0,"
    f"0.0,0.0,0.0,0.0,0.0,0.0,0.0\n")
CHEXPERT_VALID = CHEXPERT_HEADER + (
    f"{_CX}/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,0.0,1.0,1.0,1.0,0.0,1.0,0.0,0.0,"
    f"0.0,0.0,0.0,0.0,0.0,0.0\n")


@pytest.fixture
def chexpert_root(tmp_path) -> Path:
    """<root>/CheXpert-v1.0-small/{train,valid}.csv + their JPEGs; returns <root>/CheXpert-v1.0-small."""
    root = tmp_path / "chexpert"
    ds = root / _CX
    ds.mkdir(parents=True)
    (ds / "train.csv").write_text(CHEXPERT_TRAIN)
    (ds / "valid.csv").write_text(CHEXPERT_VALID)
    for line in (CHEXPERT_TRAIN + CHEXPERT_VALID).splitlines():
        if line.startswith(_CX):
            write_image(root / line.split(",")[0])
    return ds


@pytest.fixture
def mimic_root(tmp_path) -> Path:
    """MIMIC-CXR-JPG 2.0 layout: three gzipped tables and files/pXX/pSUBJECT/sSTUDY/DICOM.jpg."""
    root = tmp_path / "mimic"
    images = [  # dicom_id, subject, study, view, split
        ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "10000032", "50414267", "PA", "train"),
        ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "10000032", "50414267", "LATERAL", "train"),
        ("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "10000032", "53189527", "AP", "train"),
        ("68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714", "10000764", "57375967", "LL", "validate"),
        ("fffabebf-74fd3a1f-673b6b41-96ec0ac9-2ab69818", "10000898", "50771383", "", "test"),
    ]
    meta = "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns\n" + "".join(
        f"{d},{s},{st},CHEST (PA AND LAT),{v},3056,2544\n" for d, s, st, v, _ in images)
    split = "dicom_id,study_id,subject_id,split\n" + "".join(f"{d},{st},{s},{sp}\n" for d, s, st, _, sp in images)
    labels = ("subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,"
              "Fracture,Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,"
              "Pneumothorax,Support Devices\n"
              "10000032,50414267,,,,,,,,,1.0,,,,,\n"
              "10000032,53189527,,-1.0,,,,,,,,1.0,,,0.0,\n"
              "10000764,57375967,,,1.0,,,,,,,,,-1.0,,\n")  # 50771383 has no labels row
    write_gz_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", meta)
    write_gz_csv(root / "mimic-cxr-2.0.0-split.csv.gz", split)
    write_gz_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", labels)
    for d, s, st, _, _ in images:
        write_image(root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{st}" / f"{d}.jpg")
    return root


NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n")


@pytest.fixture
def nih_root(tmp_path) -> Path:
    """NIH ChestX-ray14 layout: Data_Entry CSV, list files, images_00N/images/*.png."""
    root = tmp_path / "nih"
    rows = [("00000001_000.png", "Cardiomegaly", 0, 1, "PA"),
            ("00000001_001.png", "Cardiomegaly|Emphysema", 1, 1, "PA"),
            ("00000002_000.png", "No Finding", 0, 2, "AP"),
            ("00000003_000.png", "Hernia|Pleural_Thickening|Effusion", 0, 3, "PA")]
    text = NIH_HEADER + "".join(f"{n},{f},{fu},{p},57,M,{v},2682,2749,0.143,0.143\n" for n, f, fu, p, v in rows)
    root.mkdir()
    (root / "Data_Entry_2017_v2020.csv").write_text(text)
    (root / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000003_000.png\n")
    (root / "test_list.txt").write_text("00000002_000.png\n")
    for i, (name, *_rest) in enumerate(rows):
        write_image(root / f"images_00{1 + i // 2}" / "images" / name)
    return root


KERMANY_HEADER = "image,split,label_pneumonia,subtype,patient_id,patient_id_loose,raw_patient_id\n"


@pytest.fixture
def kermany_root(tmp_path) -> Path:
    root = tmp_path / "kermany"
    rows = [("images/train/NORMAL/IM-0115-0001.jpeg", "train", 0, "normal", "train/normal/IM-0115",
             "train/IM-0115", "IM-0115"),
            ("images/train/PNEUMONIA/person1_bacteria_1.jpeg", "train", 1, "bacteria",
             "train/bacteria/person1", "train/person1", "person1"),
            ("images/train/PNEUMONIA/person1_virus_6.jpeg", "train", 1, "virus", "train/virus/person1",
             "train/person1", "person1"),
            ("images/test/PNEUMONIA/person100_bacteria_475.jpeg", "test", 1, "bacteria",
             "test/bacteria/person100", "test/person100", "person100"),
            # the same file-name id in the distributor's test folder: the same child
            ("images/test/PNEUMONIA/person1_virus_12.jpeg", "test", 1, "virus", "test/virus/person1",
             "test/person1", "person1")]
    root.mkdir()
    (root / "labels.csv").write_text(KERMANY_HEADER + "".join(",".join(map(str, r)) + "\n" for r in rows))
    for r in rows:
        write_image(root / r[0])
    return root
