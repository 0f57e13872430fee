"""`medssl inspect`: summary, header dump, PHI masking."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import pydicom
import pytest

from medssl.cli import main


@pytest.fixture
def phi_dicom(pydicom_file, tmp_path):
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN-884422"
    ds.PatientBirthDate = "19610203"
    ds.AccessionNumber = "ACC-5551"
    ds.InstitutionName = "St Example Hospital"
    ds.ReferringPhysicianName = "House^Gregory"
    ds.OperatorsName = "Tech^Tom"  # any PN element
    ds.OtherPatientIDs = "OLD-1234"
    path = tmp_path / "phi.dcm"
    ds.save_as(path)
    return path


SECRETS = ("Doe^Jane", "MRN-884422", "19610203", "ACC-5551", "St Example Hospital", "House^Gregory",
           "Tech^Tom", "OLD-1234")


def test_summary_fields(pydicom_file, capsys):
    assert main(["inspect", str(pydicom_file("CT_small.dcm")), "--window", "none"]) == 0
    out = capsys.readouterr().out
    for text in ("format:      dicom", "shape:       (128, 128)", "dtype:       float32", "[-896, 1167]",
                 "units=HU", "modality:    CT", "spacing:     (0.661468, 0.661468) mm",
                 "photometric: MONOCHROME2"):
        assert text in out
    assert main(["inspect", str(pydicom_file("rtdose.dcm")), "--frame", "3"]) == 0
    assert "shape:       (10, 10)" in capsys.readouterr().out


def test_phi_masked_unless_show_phi(phi_dicom, capsys):
    assert main(["inspect", str(phi_dicom), "--header"]) == 0
    out = capsys.readouterr().out
    assert "PatientName: ***" in out and "PatientID: ***" in out and "patient_id:  ***" in out
    assert "Modality: 'CT'" in out and "Rows: 128" in out  # non-PHI still shown
    for secret in SECRETS:
        assert secret not in out
    assert main(["inspect", str(phi_dicom), "--header", "--show-phi"]) == 0
    out = capsys.readouterr().out
    for secret in SECRETS:
        assert secret in out


def test_nifti_and_jpeg_headers_and_errors(pydicom_file, tmp_path, capsys):
    data = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
    img = nib.load(data)
    img.header["descrip"] = b"patient Jane Doe"
    nib.save(img, tmp_path / "named.nii")
    assert main(["inspect", str(tmp_path / "named.nii"), "--header", "--slice-axis", "axial",
                 "--slice-index", "middle"]) == 0
    out = capsys.readouterr().out
    assert "format:      nifti" in out and "shape:       (41, 33)" in out and "descrip: ***" in out
    assert "Jane" not in out and "dim: [" in out
    assert main(["inspect", str(pydicom_file("rtplan.dcm"))]) == 2
    assert "no PixelData" in capsys.readouterr().err
    # --header still dumps the header of a file without pixels, then reports the error
    assert main(["inspect", str(pydicom_file("rtplan.dcm")), "--header"]) == 2
    captured = capsys.readouterr()
    assert "RTPlanLabel" in captured.out and "PatientName: ***" in captured.out and "no PixelData" in captured.err
