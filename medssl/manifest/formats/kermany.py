"""Kermany pediatric chest X-rays (Guangzhou; the source of PneumoniaMNIST), as in labels.csv.

Source: the folder holding labels.csv (columns image, split, label_pneumonia, subtype, patient_id,
patient_id_loose, raw_patient_id; `image` relative to that folder), or labels.csv itself. The
embedded demo subset (`medssl.data.embedded_kermany_dir()`) has the same layout.

patient = the raw file-name id (`raw_patient_id`: personN, IM-XXXX or NORMAL2-IM-XXXX), i.e. one
id for every image of `personN` whatever its subtype and whichever of the distributor's train/test
folders it sits in. `patient_id_loose` (split/personN) keeps the folder prefix, so the same number in
train/ and test/ became two patients and could straddle medssl's splits (person53, person102,
person1628 in the full set: 170 ids occur in both folders); merging on the raw id is the safe side
for leakage. `NORMAL2-IM-XXXX` stays distinct from `IM-XXXX`: both series occur inside one folder
(test/NORMAL holds IM-0028 and NORMAL2-IM-0028), so the prefix is a separate numbering, not a copy.
Without a raw_patient_id column the raw id is patient_id_loose with its folder prefix removed.
study = patient_id (split/subtype/personN: one diagnosis episode).
source_split = the distributor's train/test. It is NOT used as `split`: the numbering recurs across
them; `medssl split` re-splits by patient.
Labels: Pneumonia (label_pneumonia), Bacterial and Viral (from subtype; normal -> 0 for both).
view: FRONTAL (the files do not say AP or PA; pediatric films are mostly AP). modality: DX (the
source gives no DICOM header; DX is the generic digital radiography code). raw_patient_id is dropped.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medssl.errors import ManifestError
from medssl.manifest.formats.common import Options, Raw, read_csv, require_columns

COLUMNS = ("image", "split", "label_pneumonia", "subtype", "patient_id", "patient_id_loose")
SUBTYPES = ("normal", "bacteria", "virus")


def build(source: Path, options: Options) -> Raw:
    csv = source / "labels.csv" if source.is_dir() else source
    if not csv.is_file():
        raise ManifestError(f"no Kermany labels.csv in {source}; pass the folder holding labels.csv "
                            f"(columns {', '.join(COLUMNS)})")
    t = read_csv(csv, dtype={c: str for c in ("image", "split", "subtype", "patient_id", "patient_id_loose")})
    require_columns(t, COLUMNS, csv, "a Kermany labels.csv")
    subtype = t["subtype"].str.strip().str.lower()
    bad = ~subtype.isin(SUBTYPES)
    if bad.any():
        raise ManifestError(f"{csv}: subtype must be one of {SUBTYPES}; found "
                            f"{sorted(subtype[bad].astype(str).unique())[:5]} (rows {list(t.index[bad][:5])})")
    raw_id = (t["raw_patient_id"].astype(str).str.strip() if "raw_patient_id" in t.columns
              else t["patient_id_loose"].str.split("/").str[-1])
    pneumonia = pd.to_numeric(t["label_pneumonia"], errors="coerce").astype("float64")
    out = pd.DataFrame({
        "path": t["image"].str.replace("\\", "/", regex=False),
        "patient_id": raw_id,
        "study_id": t["patient_id"],
        "view": options.view or "FRONTAL",
        "modality": options.modality or "DX",
        "source_split": t["split"],
        "Pneumonia": pneumonia,
        "Bacterial": subtype.eq("bacteria").astype("float64"),
        "Viral": subtype.eq("virus").astype("float64"),
    })
    inconsistent = (out["Pneumonia"] == 1) != (subtype != "normal")
    if inconsistent.any():
        raise ManifestError(f"{csv}: label_pneumonia disagrees with subtype on {int(inconsistent.sum())} "
                            f"row(s), e.g. rows {list(t.index[inconsistent][:5])}")
    return Raw(out, csv.resolve().parent)
