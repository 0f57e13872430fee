"""Kermany pediatric chest X-rays (Guangzhou; the source of PneumoniaMNIST), as in labels.csv.

Source: the folder holding labels.csv (columns image, split, label_pneumonia, subtype, patient_id,
patient_id_loose, raw_patient_id; `image` relative to that folder), or labels.csv itself. The
embedded demo subset (`medssl.data.embedded_kermany_dir()`) has the same layout.

patient = patient_id_loose (merges the bacterial and viral episodes of one `personN`, which may be
the same child: the safe side for leakage); study = patient_id (one diagnosis episode).
source_split = the distributor's train/test. It is NOT used as `split`: the numbering recurs across
them, so they may share children; `medssl split` re-splits by patient.
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
    pneumonia = pd.to_numeric(t["label_pneumonia"], errors="coerce").astype("float64")
    out = pd.DataFrame({
        "path": t["image"].str.replace("\\", "/", regex=False),
        "patient_id": t["patient_id_loose"],
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
