"""Synthetic chest X-ray phantoms written as real DICOM files (pydicom), with known ground truth.

`write_phantoms(out_dir, n_patients=...)` writes patients x studies x views as DX DICOM files and
returns the ground truth table. Anatomy varies by patient (body and lung size, heart size, rib
spacing), acquisition by image (exposure, gamma, noise, rotation, shift, Rescale Slope/Intercept,
Window Center/Width, MONOCHROME1 stored inverted), and findings change pixels as labelled:

* Cardiomegaly: heart shadow 1.45x wider (patient-level: all studies of a patient);
* Pleural Effusion: basal opacity with a meniscus that blunts the costophrenic angle;
* Consolidation: patchy opacity blobs inside a lung;
* Pneumothorax: one apex without lung markings, darker, with a thin pleural line;
* Nodule: a small round opacity in a lung.

Drawing is analytic and vectorised: shapes are evaluated on a rotated/shifted coordinate grid, so
one 512x512 image costs a few tens of milliseconds. `draw_chest` is the pure drawing function
(float32 (H, W) in [0, 1], bright = dense) for tests that need full control.

File names (p00001/s1/pa.dcm) never contain the PHI values written in the headers.
Command line: `python -m medssl.data.phantom OUT --patients 20` (writes OUT/truth.csv too).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from medssl.errors import ConfigError

FINDINGS = ("Cardiomegaly", "Pleural Effusion", "Consolidation", "Pneumothorax", "Nodule")
DEFAULT_FINDINGS = ("Cardiomegaly", "Pleural Effusion", "Consolidation")
#: View name -> DICOM ViewPosition.
VIEW_POSITIONS = {"PA": "PA", "AP": "AP", "LATERAL": "LL", "LL": "LL", "RL": "RL"}
#: Short names -> (transfer syntax UID name in pydicom.uid, compress kwargs).
TRANSFER_SYNTAXES = {
    "explicit-le": ("ExplicitVRLittleEndian", {}),
    "implicit-le": ("ImplicitVRLittleEndian", {}),
    "deflated": ("DeflatedExplicitVRLittleEndian", {}),
    "rle": ("RLELossless", {}),
    "jpeg2000-lossless": ("JPEG2000Lossless", {}),
    "jpeg2000": ("JPEG2000", {"j2k_cr": [15]}),
    "jpeg-ls": ("JPEGLSLossless", {}),
    "jpeg-ls-near": ("JPEGLSNearLossless", {"jls_error": 2}),
}
PHI_FIELDS = ("PatientName", "PatientID", "AccessionNumber", "PatientBirthDate", "InstitutionName",
              "ReferringPhysicianName", "PatientSex", "StudyDate")
_UNCOMPRESSED = ("explicit-le", "implicit-le", "deflated")
_LOSSY = ("jpeg2000", "jpeg-ls-near")
_SOP_CLASS_DX = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
_SURNAMES = ("SMITH", "GARCIA", "MULLER", "ROSSI", "NGUYEN", "KOWALSKI", "TANAKA", "OKAFOR", "SILVA",
             "JOHANSSON", "DUBOIS", "PATEL", "COHEN", "IVANOV", "MURPHY", "KIM")
_GIVEN = ("ANNA", "JOHN", "MARIA", "WEI", "FATIMA", "LUCAS", "SOFIA", "OMAR", "ELENA", "JAMES",
          "AMARA", "NOAH", "LEILA", "PAUL", "YUKI", "IVAN")
_INSTITUTIONS = ("ST ELSEWHERE GENERAL", "NORTHFIELD UNIVERSITY HOSPITAL", "RIVERSIDE CLINIC",
                 "MERCY MEDICAL CENTRE")


# ============================================================================ drawing
@dataclass
class Anatomy:
    """Per-patient shape parameters in normalised coordinates (x, y in [-1, 1], y down)."""
    body_rx: float = 0.85
    lung_x: float = 0.36       # lung centre distance from the midline
    lung_y: float = -0.08
    lung_rx: float = 0.25
    lung_ry: float = 0.52
    heart_x: float = 0.08      # towards the image right = patient's left on a PA view
    heart_y: float = 0.24
    heart_r: float = 0.25      # horizontal radius of the normal heart shadow
    rib_spacing: float = 0.12
    rib_phase: float = 0.0

    @classmethod
    def random(cls, rng: np.random.Generator) -> "Anatomy":
        return cls(body_rx=rng.uniform(0.78, 0.93), lung_x=rng.uniform(0.33, 0.39),
                   lung_y=rng.uniform(-0.12, -0.04), lung_rx=rng.uniform(0.22, 0.27),
                   lung_ry=rng.uniform(0.46, 0.56), heart_x=rng.uniform(0.06, 0.12),
                   heart_y=rng.uniform(0.2, 0.28), heart_r=rng.uniform(0.22, 0.27),
                   rib_spacing=rng.uniform(0.105, 0.14), rib_phase=rng.uniform(0, 2 * np.pi))


@dataclass
class Acquisition:
    """Per-image geometry and exposure: rotation (degrees), shift (fraction of the field), gain..."""
    rotation: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0
    gain: float = 0.85
    offset: float = 0.05
    gamma: float = 1.0
    noise: float = 0.0          # Gaussian sd at full brightness (quantum-like: sd ~ sqrt(value))
    seed: int = 0               # noise and finding placement

    @classmethod
    def random(cls, rng: np.random.Generator) -> "Acquisition":
        return cls(rotation=rng.uniform(-4, 4), shift=tuple(rng.uniform(-0.04, 0.04, 2)),
                   scale=rng.uniform(0.95, 1.05), gain=rng.uniform(0.7, 0.95),
                   offset=rng.uniform(0.02, 0.1), gamma=rng.uniform(0.85, 1.15),
                   noise=rng.uniform(0.004, 0.02), seed=int(rng.integers(2**31)))


@dataclass
class Findings:
    """Which findings an image shows, and on which side (+1 image right, -1 image left)."""
    present: frozenset = field(default_factory=frozenset)
    side: int = 1


def _ellipse(x, y, cx, cy, rx, ry, edge=0.04):
    """Soft-edged filled ellipse in [0, 1] (float32 (H, W))."""
    d = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return np.clip((1.0 - d) / edge, 0.0, 1.0)


def _grid(size: int, acq: Acquisition):
    """Rotated, shifted, scaled normalised coordinates (x, y) of every pixel, float32 (H, W)."""
    t = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0)
    a = math.radians(acq.rotation)
    c, s = np.float32(math.cos(a)), np.float32(math.sin(a))
    x0, y0 = t[None, :], t[:, None]
    x = (c * x0 + s * y0 - np.float32(acq.shift[0] * 2)) / np.float32(acq.scale)
    y = (-s * x0 + c * y0 - np.float32(acq.shift[1] * 2)) / np.float32(acq.scale)
    return x.astype(np.float32), y.astype(np.float32)


def _pa_density(x, y, an: Anatomy, fi: Findings, rng: np.random.Generator) -> np.ndarray:
    has = fi.present.__contains__
    body = _ellipse(x, y, 0.0, 0.1, an.body_rx, 1.15, edge=0.06)
    dens = 0.02 + 0.40 * body
    lungs = []
    for sign in (-1, 1):
        lung = _ellipse(x, y, sign * an.lung_x, an.lung_y, an.lung_rx, an.lung_ry, edge=0.08)
        lungs.append(lung)
    lung = np.maximum(*lungs)
    dens -= 0.28 * lung
    # ribs: curved bands over the thorax; spine: a dense midline band
    thorax = _ellipse(x, y, 0.0, an.lung_y, an.lung_x + an.lung_rx + 0.05, an.lung_ry + 0.08)
    ribs = np.cos((y + 0.35 * x * x) * (2 * np.pi / an.rib_spacing) + an.rib_phase)
    dens += 0.10 * thorax * np.clip((ribs - 0.3) / 0.4, 0, 1)
    dens += 0.12 * np.clip((0.06 - np.abs(x)) / 0.02, 0, 1) * body
    # lung markings: vessels radiating from the hila, fading to the periphery
    markings = np.zeros_like(dens)
    for sign, lung_s in zip((-1, 1), lungs):
        dx, dy = x - sign * (an.lung_x - 0.12), y - 0.0
        ang = np.arctan2(dy, dx)
        r = np.sqrt(dx * dx + dy * dy)
        markings += lung_s * np.clip(np.cos(ang * 23.0 + 3 * r) - 0.6, 0, 1) * np.exp(-2.5 * r)
    if has("Pneumothorax"):
        # apex of one lung: no markings beyond a curved pleural line, darker, thin bright line
        s = fi.side
        edge = (y - (an.lung_y - 0.1)) + 0.8 * (s * x - an.lung_x) ** 2
        region = lungs[(s + 1) // 2] * np.clip(-edge / 0.03, 0, 1)
        markings *= 1 - region
        dens -= 0.07 * region
        dens += 0.08 * lungs[(s + 1) // 2] * np.clip(1 - np.abs(edge) / 0.012, 0, 1)
    dens += 0.12 * markings
    heart_rx = an.heart_r * (1.45 if has("Cardiomegaly") else 1.0)
    heart = _ellipse(x, y, an.heart_x, an.heart_y, heart_rx, an.heart_r * 0.75, edge=0.06)
    dens += 0.26 * heart
    if has("Pleural Effusion"):
        s = fi.side
        lung_s = lungs[(s + 1) // 2]
        depth = rng.uniform(0.25, 0.4) * an.lung_ry
        level = an.lung_y + an.lung_ry - depth - 0.5 * np.clip(s * x - an.lung_x, 0, None)
        dens += 0.30 * lung_s * np.clip((y - level) / 0.05, 0, 1)
    if has("Consolidation"):
        s = fi.side
        patches = np.zeros_like(dens)
        for _ in range(int(rng.integers(2, 5))):
            cx = s * an.lung_x + rng.uniform(-0.6, 0.6) * an.lung_rx
            cy = an.lung_y + rng.uniform(-0.3, 0.5) * an.lung_ry
            rad = rng.uniform(0.06, 0.11)
            patches += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * rad * rad))
        texture = 0.65 + 0.35 * np.cos(31 * x + rng.uniform(0, 6)) * np.cos(27 * y + rng.uniform(0, 6))
        dens += 0.26 * lungs[(s + 1) // 2] * np.clip(patches, 0, 1) * texture
    if has("Nodule"):
        s = -fi.side
        cx = s * an.lung_x + rng.uniform(-0.4, 0.4) * an.lung_rx
        cy = an.lung_y + rng.uniform(-0.5, 0.2) * an.lung_ry
        dens += 0.22 * _ellipse(x, y, cx, cy, 0.04, 0.04, edge=0.3)
    return dens


def _lateral_density(x, y, an: Anatomy, fi: Findings, rng: np.random.Generator) -> np.ndarray:
    """Left lateral view: anterior to the image left, spine to the right."""
    has = fi.present.__contains__
    body = _ellipse(x, y, 0.0, 0.1, an.body_rx * 0.95, 1.15, edge=0.06)
    dens = 0.02 + 0.45 * body
    lung_ry = an.lung_ry * 1.1
    lung = _ellipse(x, y, 0.05, an.lung_y, 0.55, lung_ry, edge=0.08)
    dens -= 0.26 * lung
    dens += 0.18 * np.clip((0.09 - np.abs(x - 0.58)) / 0.02, 0, 1) * body  # spine
    vertebrae = np.cos(y * (2 * np.pi / (an.rib_spacing * 0.9)) + an.rib_phase)
    dens += 0.06 * np.clip((0.09 - np.abs(x - 0.58)) / 0.02, 0, 1) * np.clip(vertebrae, 0, 1)
    heart_rx = an.heart_r * (1.4 if has("Cardiomegaly") else 1.0)
    dens += 0.2 * _ellipse(x, y, -0.22 + 0.5 * (heart_rx - an.heart_r), an.heart_y - 0.05,
                           heart_rx, an.heart_r * 0.9, edge=0.06)
    if has("Pleural Effusion"):
        depth = rng.uniform(0.25, 0.4) * lung_ry
        level = an.lung_y + lung_ry - depth - 0.6 * np.clip(x - 0.25, 0, None)
        dens += 0.30 * lung * np.clip((y - level) / 0.05, 0, 1)
    if has("Consolidation"):
        patches = np.zeros_like(dens)
        for _ in range(int(rng.integers(2, 4))):
            cx, cy, rad = rng.uniform(-0.2, 0.35), an.lung_y + rng.uniform(-0.3, 0.4) * lung_ry, rng.uniform(0.07, 0.12)
            patches += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * rad * rad))
        dens += 0.22 * lung * np.clip(patches, 0, 1)
    if has("Nodule"):
        dens += 0.2 * _ellipse(x, y, rng.uniform(-0.1, 0.3), an.lung_y + rng.uniform(-0.4, 0.1), 0.04, 0.04, edge=0.3)
    if has("Pneumothorax"):
        dens -= 0.05 * lung * np.clip((an.lung_y - 0.2 - y) / 0.05, 0, 1)
    return dens


def draw_chest(size: int, anatomy: Anatomy, findings: Findings | Sequence[str] = (),
               acquisition: Acquisition | None = None, view: str = "PA") -> np.ndarray:
    """One chest radiograph: float32 (size, size) in [0, 1], bright = dense (before storage)."""
    acq = acquisition or Acquisition()
    if not isinstance(findings, Findings):
        findings = Findings(frozenset(findings))
    unknown = set(findings.present) - set(FINDINGS)
    if unknown:
        raise ConfigError(f"unknown phantom finding(s) {sorted(unknown)}; supported: {list(FINDINGS)}")
    rng = np.random.default_rng(acq.seed)
    x, y = _grid(size, acq)
    lateral = VIEW_POSITIONS.get(view.upper(), view) in ("LL", "RL")
    dens = (_lateral_density if lateral else _pa_density)(x, y, anatomy, findings, rng)
    v = np.clip(dens / 0.85, 0.0, 1.0) ** np.float32(acq.gamma)
    v = acq.offset + acq.gain * v
    if acq.noise > 0:
        noise = rng.standard_normal(v.shape, dtype=np.float32)
        v = v + np.float32(acq.noise) * np.sqrt(np.maximum(v, 0.0) + 0.05) * noise
    return np.clip(v, 0.0, 1.0).astype(np.float32)


# ============================================================================ DICOM writing
def available_transfer_syntaxes() -> list[str]:
    """Short names of the transfer syntaxes this environment can encode (see TRANSFER_SYNTAXES)."""
    import pydicom.uid
    from pydicom.pixels import get_encoder

    out = []
    for name, (uid_name, _) in TRANSFER_SYNTAXES.items():
        if name in _UNCOMPRESSED or get_encoder(getattr(pydicom.uid, uid_name)).is_available:
            out.append(name)
    return out


def _check_syntaxes(transfer_syntax) -> list[str]:
    names = [transfer_syntax] if isinstance(transfer_syntax, str) else list(transfer_syntax)
    if names == ["mixed"]:  # every lossless syntax this environment can encode
        return [n for n in available_transfer_syntaxes() if n not in _LOSSY]
    unknown = [n for n in names if n not in TRANSFER_SYNTAXES]
    if unknown:
        raise ConfigError(f"unknown transfer syntax {unknown}; choose from {list(TRANSFER_SYNTAXES)} "
                          f"or 'mixed'")
    missing = [n for n in names if n not in available_transfer_syntaxes()]
    if missing:
        raise ConfigError(f"no encoder installed for {missing} (JPEG-LS needs `pip install pyjpegls`); "
                          f"available here: {available_transfer_syntaxes()}")
    return names


def _phi_value(spec, key: str, index: int, default):
    """A PHI value: None -> default; str with {i} formatted by patient index; callable(i); list[i]."""
    if spec is None:
        return default
    if callable(spec):
        return str(spec(index))
    if isinstance(spec, (list, tuple)):
        return str(spec[index])
    return str(spec).format(i=index)


def _fake_phi(rng: np.random.Generator, n_patients: int) -> list[dict]:
    mrns = rng.choice(9_000_000, n_patients, replace=False) + 1_000_000
    out = []
    for i in range(n_patients):
        birth = np.datetime64("1930-01-01") + np.timedelta64(int(rng.integers(0, 365 * 80)), "D")
        out.append({
            "PatientName": f"{_SURNAMES[rng.integers(len(_SURNAMES))]}^{_GIVEN[rng.integers(len(_GIVEN))]}",
            "PatientID": f"MRN{mrns[i]:07d}",
            "PatientBirthDate": str(birth).replace("-", ""),
            "PatientSex": "FM"[int(rng.integers(2))],
            "InstitutionName": _INSTITUTIONS[rng.integers(len(_INSTITUTIONS))],
            "ReferringPhysicianName": f"{_SURNAMES[rng.integers(len(_SURNAMES))]}^{_GIVEN[rng.integers(len(_GIVEN))]}",
        })
    return out


def _store(v: np.ndarray, bits: int, monochrome1: bool) -> np.ndarray:
    """[0, 1] bright = dense -> stored unsigned integers; MONOCHROME1 stores dense as LOW values."""
    top = (1 << bits) - 1
    stored = np.rint(v * top)
    if monochrome1:
        stored = top - stored
    return stored.astype(np.uint8 if bits <= 8 else np.uint16)


def _dataset(pixels: np.ndarray, *, bits: int, photometric: str, slope: float, intercept: float,
             uids: dict, header: dict, view_position: str, size_mm: float):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = _SOP_CLASS_DX
    ds.file_meta.MediaStorageSOPInstanceUID = uids["sop"]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = _SOP_CLASS_DX
    ds.SOPInstanceUID = uids["sop"]
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.Modality = "DX"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view_position
    ds.PatientOrientation = ["P", "F"] if view_position in ("LL", "RL") else ["L", "F"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    for key, value in header.items():
        setattr(ds, key, value)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    spacing = round(size_mm / pixels.shape[0], 4)
    ds.PixelSpacing = [spacing, spacing]
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    ds.RescaleType = "US"
    # VOI window over the body's stored range, in rescaled (modality) units
    sample = pixels[::4, ::4].astype(np.float64)
    lo, hi = np.percentile(sample, [2, 99.5])
    ds.WindowCenter = f"{slope * (lo + hi) / 2 + intercept:.1f}"
    ds.WindowWidth = f"{max(slope * (hi - lo) * 1.1, 1.0):.1f}"
    ds.PixelData = pixels.tobytes()
    return ds


def write_phantoms(out_dir, *, n_patients: int, studies_per_patient: int | tuple[int, int] = (1, 2),
                   views: Sequence[str] = ("PA", "LATERAL"), size: int = 256, bits_stored: int = 12,
                   photometric: str = "MONOCHROME2", transfer_syntax: str | Sequence[str] = "explicit-le",
                   findings: Sequence[str] = DEFAULT_FINDINGS, prevalence: float = 0.3,
                   phi: dict | None = None, seed: int = 0):
    """Write n_patients x studies x views DX DICOM files under out_dir; return the ground truth.

    studies_per_patient: inclusive (min, max) range per patient, or an int; every study has every view.
    photometric: "MONOCHROME2", "MONOCHROME1" (stored inverted: dense = low values) or "mixed".
    transfer_syntax: a name of TRANSFER_SYNTAXES, a list (one drawn per image) or "mixed" (every
    lossless one `available_transfer_syntaxes()` can encode here). bits_stored: 8..16.
    findings: label columns; each is present in a study with probability `prevalence`
    (Cardiomegaly per patient: all of its studies). phi: header values for PHI_FIELDS, each a
    str ("{i}" is replaced by the patient index), a list per patient or callable(i); the rest are
    random fake values. Same arguments and seed -> byte-identical files.

    Returns a DataFrame, one row per file: path (relative to out_dir, posix), patient_id (the raw
    header PatientID), patient_name, study_uid, sop_uid, view, photometric, transfer_syntax,
    accession, rescale_slope, rescale_intercept, then one float column (1/0) per finding.
    Files: out_dir/p00001/s1/pa.dcm - never the PHI values.
    """
    import pandas as pd
    import pydicom.uid
    from pydicom.uid import generate_uid

    from medssl.atomic import atomic_path

    if n_patients < 1:
        raise ConfigError(f"n_patients must be >= 1, got {n_patients}")
    if not 8 <= bits_stored <= 16:
        raise ConfigError(f"bits_stored must be in 8..16, got {bits_stored}")
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "mixed"):
        raise ConfigError(f"photometric must be MONOCHROME1, MONOCHROME2 or mixed, got {photometric!r}")
    bad_views = [v for v in views if v.upper() not in VIEW_POSITIONS]
    if bad_views:
        raise ConfigError(f"unknown view(s) {bad_views}; choose from {list(VIEW_POSITIONS)}")
    findings = list(findings)
    unknown = set(findings) - set(FINDINGS)
    if unknown:
        raise ConfigError(f"unknown phantom finding(s) {sorted(unknown)}; supported: {list(FINDINGS)}")
    bad_phi = set(phi or {}) - set(PHI_FIELDS)
    if bad_phi:
        raise ConfigError(f"unknown phi field(s) {sorted(bad_phi)}; settable: {list(PHI_FIELDS)}")
    syntaxes = _check_syntaxes(transfer_syntax)
    lo, hi = (studies_per_patient, studies_per_patient) if isinstance(studies_per_patient, int) \
        else studies_per_patient
    if not 1 <= lo <= hi:
        raise ConfigError(f"studies_per_patient must be (min, max) with 1 <= min <= max, got {studies_per_patient}")
    out_dir = Path(out_dir)
    rng = np.random.default_rng([0x9A7, int(seed)])
    fakes = _fake_phi(rng, n_patients)
    rows = []
    for p in range(n_patients):
        anatomy = Anatomy.random(rng)
        cardiomegaly = rng.random() < prevalence
        header_p = {k: _phi_value((phi or {}).get(k), k, p, fakes[p].get(k)) for k in
                    ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "InstitutionName",
                     "ReferringPhysicianName")}
        for s in range(int(rng.integers(lo, hi + 1))):
            present = {f for f in findings if (cardiomegaly if f == "Cardiomegaly" else rng.random() < prevalence)}
            fi = Findings(frozenset(present), side=int(rng.choice([-1, 1])))
            study_date = np.datetime64("2015-01-01") + np.timedelta64(int(rng.integers(0, 3000)), "D")
            header = dict(header_p)
            header["AccessionNumber"] = _phi_value((phi or {}).get("AccessionNumber"), "AccessionNumber",
                                                   p, f"A{int(rng.integers(10**9, 10**10))}")
            header["StudyDate"] = _phi_value((phi or {}).get("StudyDate"), "StudyDate", p,
                                             str(study_date).replace("-", ""))
            header["StudyID"] = str(s + 1)
            study_uid = generate_uid(entropy_srcs=["medssl-phantom", str(seed), str(p), str(s)])
            for v_index, view in enumerate(views):
                acq = Acquisition.random(rng)
                mono1 = photometric == "MONOCHROME1" or (photometric == "mixed" and rng.random() < 0.5)
                syntax = syntaxes[int(rng.integers(len(syntaxes)))]
                slope, intercept = [(1.0, 0.0), (0.5, 0.0), (2.0, -1024.0), (1.0, 100.0)][int(rng.integers(4))]
                pixels = _store(draw_chest(size, anatomy, fi, acq, view=view), bits_stored, mono1)
                entropy = ["medssl-phantom", str(seed), str(p), str(s), str(v_index)]
                uids = {"study": study_uid, "series": generate_uid(entropy_srcs=entropy + ["series"]),
                        "sop": generate_uid(entropy_srcs=entropy + ["sop"])}
                ds = _dataset(pixels, bits=bits_stored, photometric="MONOCHROME1" if mono1 else "MONOCHROME2",
                              slope=slope, intercept=intercept, uids=uids, header=header,
                              view_position=VIEW_POSITIONS[view.upper()], size_mm=430.0)
                ds.SeriesNumber = v_index + 1
                ds.InstanceNumber = 1
                uid_name, kwargs = TRANSFER_SYNTAXES[syntax]
                tsuid = getattr(pydicom.uid, uid_name)
                if syntax not in _UNCOMPRESSED:
                    ds.compress(tsuid, pixels, generate_instance_uid=False, **kwargs)
                    if syntax in _LOSSY:
                        ds.LossyImageCompression = "01"
                        ds.LossyImageCompressionMethod = "ISO_15444_1" if "2000" in syntax else "ISO_14495_1"
                else:
                    ds.file_meta.TransferSyntaxUID = tsuid
                rel = f"p{p + 1:05d}/s{s + 1}/{view.lower()}.dcm"
                with atomic_path(out_dir / rel) as tmp:
                    ds.save_as(tmp, enforce_file_format=True, implicit_vr=syntax == "implicit-le",
                               little_endian=True)
                rows.append({"path": rel, "patient_id": header["PatientID"],
                             "patient_name": str(header["PatientName"]), "study_uid": str(study_uid),
                             "sop_uid": str(uids["sop"]), "view": view.upper(),
                             "photometric": ds.PhotometricInterpretation, "transfer_syntax": syntax,
                             "accession": header["AccessionNumber"], "rescale_slope": slope,
                             "rescale_intercept": intercept,
                             **{f: float(f in present) for f in findings}})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m medssl.data.phantom",
        description="Write synthetic chest X-ray phantoms as DICOM files plus OUT/truth.csv "
                    "(ground truth: path, raw patient id, study uid, view, findings).",
        epilog="example: python -m medssl.data.phantom phantoms --patients 20 --size 512 "
               "--photometric mixed --transfer-syntax mixed")
    ap.add_argument("out", help="output folder")
    ap.add_argument("--patients", type=int, default=10)
    ap.add_argument("--studies", default="1,2", help="min,max studies per patient (default 1,2)")
    ap.add_argument("--views", default="PA,LATERAL")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--bits", type=int, default=12)
    ap.add_argument("--photometric", default="MONOCHROME2", choices=("MONOCHROME1", "MONOCHROME2", "mixed"))
    ap.add_argument("--transfer-syntax", default="explicit-le",
                    help=f"one of {list(TRANSFER_SYNTAXES)}, comma-separated several, or mixed")
    ap.add_argument("--findings", default=",".join(DEFAULT_FINDINGS), help=f"from {list(FINDINGS)}")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from medssl.atomic import write_table
    from medssl.errors import MedsslError

    lo, hi = (int(v) for v in args.studies.split(","))
    ts = args.transfer_syntax if args.transfer_syntax == "mixed" else args.transfer_syntax.split(",")
    try:
        truth = write_phantoms(args.out, n_patients=args.patients, studies_per_patient=(lo, hi),
                               views=args.views.split(","), size=args.size, bits_stored=args.bits,
                               photometric=args.photometric, transfer_syntax=ts,
                               findings=[f for f in args.findings.split(",") if f], seed=args.seed)
    except MedsslError as e:
        print(f"phantom: error: {e}", file=sys.stderr)
        return 2
    write_table(Path(args.out) / "truth.csv", truth)
    print(f"wrote {len(truth)} DICOM files of {truth['patient_id'].nunique()} patients to {args.out} "
          f"(ground truth: {Path(args.out) / 'truth.csv'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
