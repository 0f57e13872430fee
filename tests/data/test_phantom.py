"""Synthetic DICOM chest phantoms: valid files, stored photometrics, findings in the pixels, PHI headers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pydicom
import pytest

from medssl.data.phantom import (FINDINGS, Acquisition, Anatomy, Findings, available_transfer_syntaxes,
                                 draw_chest, main, write_phantoms)
from medssl.errors import ConfigError

SIZE = 64


def read(root, rel) -> tuple[pydicom.Dataset, np.ndarray]:
    ds = pydicom.dcmread(root / rel)
    return ds, ds.pixel_array


def test_files_are_valid_dicom_with_the_ground_truth_headers(tmp_path):
    truth = write_phantoms(tmp_path, n_patients=3, studies_per_patient=(1, 3), size=SIZE, seed=4)
    per_patient = truth.groupby("patient_id")["study_uid"].nunique()
    assert len(per_patient) == 3 and per_patient.between(1, 3).all()
    assert (truth.groupby("study_uid")["view"].apply(sorted) == pd.Series([["LATERAL", "PA"]] * len(truth.study_uid.unique()),
            index=sorted(truth.study_uid.unique()))).all()
    assert truth["sop_uid"].is_unique and truth["path"].is_unique
    for row in truth.itertuples():
        ds, px = read(tmp_path, row.path)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.Modality == "DX" and ds.BitsStored == 12 and ds.BitsAllocated == 16
        assert px.shape == (SIZE, SIZE) and px.dtype == np.uint16 and px.max() <= 4095
        assert ds.PatientID == row.patient_id and str(ds.StudyInstanceUID) == row.study_uid
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID == row.sop_uid
        assert ds.ViewPosition == {"PA": "PA", "LATERAL": "LL"}[row.view]
        assert float(ds.RescaleSlope) == row.rescale_slope and float(ds.RescaleIntercept) == row.rescale_intercept
        # the VOI window covers the stored body range, in rescaled units
        lo, hi = (float(ds.WindowCenter) + k * float(ds.WindowWidth) / 2 for k in (-1, 1))
        rescaled = px * row.rescale_slope + row.rescale_intercept
        assert lo <= np.median(rescaled) <= hi and hi - lo > 0.3 * (rescaled.max() - rescaled.min())
        assert ds.PatientName and ds.AccessionNumber and ds.PatientBirthDate and ds.InstitutionName


def test_same_seed_same_bytes_and_seeds_differ(tmp_path):
    a = write_phantoms(tmp_path / "a", n_patients=2, size=SIZE, seed=7, photometric="mixed")
    b = write_phantoms(tmp_path / "b", n_patients=2, size=SIZE, seed=7, photometric="mixed")
    c = write_phantoms(tmp_path / "c", n_patients=2, size=SIZE, seed=8)
    assert a.equals(b)
    for rel in a["path"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert not np.array_equal(read(tmp_path / "a", a.path[0])[1], read(tmp_path / "c", c.path[0])[1])


def test_monochrome1_is_stored_inverted(tmp_path):
    m2 = write_phantoms(tmp_path / "m2", n_patients=1, studies_per_patient=(1, 1), size=SIZE, seed=3)
    write_phantoms(tmp_path / "m1", n_patients=1, studies_per_patient=(1, 1), size=SIZE, seed=3,
                        photometric="MONOCHROME1", bits_stored=12)
    for rel in m2["path"]:
        ds2, px2 = read(tmp_path / "m2", rel)
        ds1, px1 = read(tmp_path / "m1", rel)
        assert ds2.PhotometricInterpretation == "MONOCHROME2" and ds1.PhotometricInterpretation == "MONOCHROME1"
        np.testing.assert_array_equal(px1.astype(int), 4095 - px2.astype(int))
        # dense (bright) spine column on MONOCHROME2 is dark in the stored MONOCHROME1 values
        centre = slice(SIZE // 2 - 2, SIZE // 2 + 2)
        assert px2[SIZE // 4:, centre].mean() > np.median(px2) and px1[SIZE // 4:, centre].mean() < np.median(px1)


def test_every_available_lossless_syntax_decodes_to_the_same_pixels(tmp_path):
    names = [n for n in available_transfer_syntaxes() if n not in ("jpeg2000", "jpeg-ls-near")]
    assert {"explicit-le", "implicit-le", "deflated", "rle", "jpeg2000-lossless"} <= set(names)
    ref = None
    for name in names:
        truth = write_phantoms(tmp_path / name, n_patients=1, studies_per_patient=(1, 1), views=("PA",),
                               size=SIZE, transfer_syntax=name, seed=5)
        ds, px = read(tmp_path / name, truth.path[0])
        assert truth.transfer_syntax[0] == name and ds.PatientID == truth.patient_id[0]
        ref = px if ref is None else ref
        np.testing.assert_array_equal(px, ref, err_msg=name)
    lossy = write_phantoms(tmp_path / "lossy", n_patients=1, studies_per_patient=(1, 1), views=("PA",),
                           size=SIZE, transfer_syntax="jpeg2000", seed=5)
    ds, px = read(tmp_path / "lossy", lossy.path[0])
    err = np.abs(px.astype(int) - ref.astype(int))
    assert ds.LossyImageCompression == "01" and 0 < err.mean() < 0.05 * 4095  # lossy, but close
    assert np.corrcoef(px.ravel(), ref.ravel())[0, 1] > 0.95
    if "jpeg-ls" not in available_transfer_syntaxes():
        with pytest.raises(ConfigError, match="pyjpegls"):
            write_phantoms(tmp_path / "jls", n_patients=1, transfer_syntax="jpeg-ls")


def test_phi_is_settable_and_never_in_file_names(tmp_path):
    phi = {"PatientName": "DOE^JANE{i}", "PatientID": ["SECRET-A", "SECRET-B"], "AccessionNumber": "ACC{i}",
           "PatientBirthDate": "19800101", "InstitutionName": lambda i: f"HOSPITAL {i}"}
    truth = write_phantoms(tmp_path, n_patients=2, size=SIZE, phi=phi, seed=1)
    assert sorted(truth["patient_id"].unique()) == ["SECRET-A", "SECRET-B"]
    for row in truth.itertuples():
        ds, _ = read(tmp_path, row.path)
        i = 0 if ds.PatientID == "SECRET-A" else 1
        assert (str(ds.PatientName), ds.AccessionNumber, ds.PatientBirthDate, ds.InstitutionName) == \
            (f"DOE^JANE{i}", f"ACC{i}", "19800101", f"HOSPITAL {i}")
    names = " ".join(str(p) for p in tmp_path.rglob("*"))
    assert not any(s in names for s in ("SECRET", "DOE", "ACC", "HOSPITAL", "19800101"))
    with pytest.raises(ConfigError, match="OtherPatientIDs"):
        write_phantoms(tmp_path / "x", n_patients=1, phi={"OtherPatientIDs": "1"})
    # default fake PHI differs between patients
    fake = write_phantoms(tmp_path / "fake", n_patients=5, size=32, studies_per_patient=(1, 1), views=("PA",))
    assert fake["patient_id"].is_unique and fake["patient_name"].nunique() > 1


# ---------------------------------------------------------------------------- findings in pixels
ANATOMY = Anatomy()
ACQ = Acquisition(noise=0.0)
N = 128


def box(img, x0, x1, y0, y1):
    """Mean over normalised coordinates x0..x1, y0..y1 (x, y in [-1, 1], y down)."""
    c = lambda v: int((v + 1) / 2 * N)
    return float(img[c(y0):c(y1), c(x0):c(x1)].mean())


def test_findings_change_the_expected_region():
    base = draw_chest(N, ANATOMY, (), ACQ)
    assert base.shape == (N, N) and base.dtype == np.float32 and 0 <= base.min() and base.max() <= 1
    a = ANATOMY
    # heart border: normal at heart_x + heart_r = 0.33; cardiomegaly extends it to 0.44
    cardio = draw_chest(N, a, ["Cardiomegaly"], ACQ)
    band = (a.heart_x + a.heart_r + 0.02, a.heart_x + 1.4 * a.heart_r, a.heart_y - 0.05, a.heart_y + 0.05)
    assert box(cardio, *band) > box(base, *band) + 0.1
    far = (-0.9, -0.7, -0.9, -0.7)
    assert box(cardio, *far) == box(base, *far)  # nothing else changes
    # effusion on the image-right lung: its base gets denser, the other lung does not
    eff = draw_chest(N, a, Findings(frozenset({"Pleural Effusion"}), side=1), ACQ)
    base_r = (a.lung_x, a.lung_x + 0.15, a.lung_y + 0.35, a.lung_y + a.lung_ry - 0.03)
    base_l = (-a.lung_x - 0.15, -a.lung_x, a.lung_y + 0.35, a.lung_y + a.lung_ry - 0.03)
    assert box(eff, *base_r) > box(base, *base_r) + 0.05 and box(eff, *base_l) == box(base, *base_l)
    # consolidation: patchy opacity inside one lung
    cons = draw_chest(N, a, Findings(frozenset({"Consolidation"}), side=-1), ACQ)
    lung_l = (-a.lung_x - 0.15, -a.lung_x + 0.15, a.lung_y - 0.3, a.lung_y + 0.4)
    assert box(cons, *lung_l) > box(base, *lung_l) + 0.02
    assert np.std(cons - base) > 0.01
    # pneumothorax: the apex of one lung gets darker and loses its markings
    ptx = draw_chest(N, a, Findings(frozenset({"Pneumothorax"}), side=1), ACQ)
    apex = (a.lung_x - 0.1, a.lung_x + 0.1, a.lung_y - 0.45, a.lung_y - 0.25)
    assert box(ptx, *apex) < box(base, *apex) - 0.02
    nod = draw_chest(N, a, ["Nodule"], ACQ)
    assert (nod - base).max() > 0.1 and (nod - base).min() >= 0
    with pytest.raises(ConfigError, match="Fracture"):
        draw_chest(N, a, ["Fracture"], ACQ)
    assert set(FINDINGS) >= {"Cardiomegaly", "Pleural Effusion", "Consolidation"}


def test_file_labels_match_the_pixels(tmp_path):
    """Same seed with the finding forced on/off: only the labelled region of each file changes."""
    kw = dict(n_patients=4, studies_per_patient=(1, 1), views=("PA",), size=N, findings=("Cardiomegaly",),
              photometric="mixed", seed=11)
    pos = write_phantoms(tmp_path / "pos", prevalence=1.0, **kw)
    neg = write_phantoms(tmp_path / "neg", prevalence=0.0, **kw)
    assert (pos["Cardiomegaly"] == 1).all() and (neg["Cardiomegaly"] == 0).all()
    for rel, mono in zip(pos["path"], pos["photometric"]):
        p = read(tmp_path / "pos", rel)[1].astype(float)
        n = read(tmp_path / "neg", rel)[1].astype(float)
        if mono == "MONOCHROME1":
            p, n = 4095 - p, 4095 - n
        diff = p - n
        rows = np.flatnonzero(np.abs(diff).max(axis=1) > 0)
        cols = np.flatnonzero(np.abs(diff).max(axis=0) > 0)
        assert diff.sum() > 0 and diff.min() >= 0  # the enlarged heart only adds density
        # only around the heart: the lower middle of the chest, mostly to the image right
        assert rows.min() > 0.45 * N and rows.max() < 0.85 * N
        assert cols.min() > 0.25 * N and cols.max() < 0.85 * N and cols.mean() > N / 2


def test_command_line_writes_truth(tmp_path):
    out = tmp_path / "ph"
    assert main([str(out), "--patients", "2", "--studies", "1,1", "--size", "32", "--views", "PA",
                 "--transfer-syntax", "rle,explicit-le"]) == 0
    truth = pd.read_csv(out / "truth.csv")
    assert len(truth) == 2 and set(truth["transfer_syntax"]) <= {"rle", "explicit-le"}
    assert all((out / p).is_file() for p in truth["path"])
    assert main([str(out), "--findings", "Bogus"]) == 2
    r = subprocess.run([sys.executable, "-m", "medssl.data.phantom", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "truth.csv" in r.stdout
