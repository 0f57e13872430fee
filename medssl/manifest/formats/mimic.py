"""MIMIC-CXR-JPG 2.0: mimic-cxr-2.0.0-{metadata,chexpert,split}.csv(.gz) in the dataset root.

One row per image of the metadata table (dicom_id, subject_id, study_id, ViewPosition); path
`files/p10/p10000032/s50414267/<dicom_id>.jpg` relative to the root; patient = subject_id,
study = study_id (MIMIC study ids are unique across patients). Labels: the 14 CheXpert observations
of the study (1 / 0 / -1 / blank; studies missing from the labels table get all blank).
source_split from the split table (train / validate / test, MIMIC's own names). view: ViewPosition
(LL -> LATERAL, blank -> UNKNOWN). modality: DX. The -negbio labels file is not used.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medssl.errors import ManifestError
from medssl.manifest.formats.common import Options, Raw, find_csv, normalise_view, read_csv, require_columns
from medssl.manifest.schema import CHEXPERT_LABELS

_IDS = {"dicom_id": str, "subject_id": str, "study_id": str}


def build(source: Path, options: Options) -> Raw:
    root = source if source.is_dir() else source.parent
    meta_csv = find_csv(root, ("*-metadata.csv", "*-metadata.csv.gz"), "MIMIC-CXR metadata CSV")
    meta = read_csv(meta_csv, dtype={**_IDS, "ViewPosition": str})
    require_columns(meta, ["dicom_id", "subject_id", "study_id", "ViewPosition"], meta_csv,
                    "the MIMIC-CXR metadata table")
    for c in ("subject_id", "study_id"):
        meta[c] = meta[c].str.strip()

    subject, study = meta["subject_id"], meta["study_id"]
    out = pd.DataFrame({
        "path": "files/p" + subject.str[:2] + "/p" + subject + "/s" + study + "/" + meta["dicom_id"] + ".jpg",
        "patient_id": subject,
        "study_id": study,
        "view": normalise_view(meta["ViewPosition"]),
        "modality": options.modality or "DX",
    })

    split_csv = next(iter(sorted(root.glob("*-split.csv*"))), None)
    if split_csv is not None:
        split = read_csv(split_csv, dtype=_IDS)
        require_columns(split, ["dicom_id", "split"], split_csv, "the MIMIC-CXR split table")
        out["source_split"] = meta["dicom_id"].map(split.drop_duplicates("dicom_id")
                                                   .set_index("dicom_id")["split"])

    labels_csv = next(iter(sorted(root.glob("*-chexpert.csv*"))), None)
    if labels_csv is None:
        raise ManifestError(f"no MIMIC-CXR labels table (*-chexpert.csv[.gz]) in {root}")
    labels = read_csv(labels_csv, dtype=_IDS)
    require_columns(labels, ["subject_id", "study_id"], labels_csv, "the MIMIC-CXR chexpert table")
    names = [c for c in CHEXPERT_LABELS if c in labels.columns]
    labels = labels.drop_duplicates(["subject_id", "study_id"])
    joined = out[["patient_id", "study_id"]].merge(
        labels[["subject_id", "study_id", *names]].rename(columns={"subject_id": "patient_id"}),
        on=["patient_id", "study_id"], how="left")
    for c in names:
        out[c] = pd.to_numeric(joined[c], errors="coerce").to_numpy("float64")
    return Raw(out, root)
