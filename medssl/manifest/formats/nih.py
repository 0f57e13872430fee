"""NIH ChestX-ray14: Data_Entry_2017*.csv(.gz), optional train_val_list.txt / test_list.txt, images.

Source: the dataset folder, or the Data_Entry CSV itself (its folder is then the root). Images are
looked up by file name under every `images*` folder of the root (the official layout is
images_001/images/*.png ... images_012/images/*.png; a flat images/ works too); names not found get
`images/<Image Index>` (so verify_files reports them). patient = Patient ID, study = patient +
Follow-up # (one image per study in this data set). Labels: the 14 findings as 0/1 columns with
NIH's names (Effusion, Pleural_Thickening, ...); "No Finding" -> all 0; no uncertain or blank values.
source_split: train_val / test from the list files when present. view: View Position (PA/AP).
Patient Age/Gender -> meta_age/meta_sex. modality: DX.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from medssl.errors import ManifestError
from medssl.manifest.formats.common import Options, Raw, find_csv, normalise_view, read_csv, require_columns

FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
NO_FINDING = "No Finding"


def _image_paths(root: Path) -> dict[str, str]:
    """File name -> path relative to root, for PNGs under root/images*/ (any depth)."""
    found: dict[str, str] = {}
    for top in sorted(p for p in root.glob("images*") if p.is_dir()):
        for folder, dirs, files in os.walk(top):
            dirs.sort()
            rel = Path(folder).relative_to(root).as_posix()
            for name in files:
                if name.lower().endswith(".png"):
                    found.setdefault(name, f"{rel}/{name}")
    return found


def _list_split(root: Path, names: pd.Series) -> pd.Series | None:
    split = pd.Series(np.nan, index=names.index, dtype="object")
    any_list = False
    for file, value in (("train_val_list.txt", "train_val"), ("test_list.txt", "test")):
        path = root / file
        if path.is_file():
            any_list = True
            listed = set(path.read_text().split())
            split[names.isin(listed)] = value
    return split.astype("str").where(split.notna()) if any_list else None


def build(source: Path, options: Options) -> Raw:
    if source.is_dir():
        root = source
        csv = find_csv(root, ("Data_Entry_2017*.csv", "Data_Entry_2017*.csv.gz", "*Data_Entry*.csv*"),
                       "NIH Data_Entry_2017 CSV")
    else:
        csv, root = source, source.parent
    t = read_csv(csv, dtype={"Image Index": str, "Finding Labels": str, "Patient ID": str,
                             "View Position": str, "Patient Gender": str})
    require_columns(t, ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "View Position"],
                    csv, "the NIH Data_Entry table")
    names = t["Image Index"].str.strip()
    patient = t["Patient ID"].str.strip()
    located = _image_paths(root)
    path = names.map(located)
    path = path.where(path.notna(), "images/" + names)

    findings = t["Finding Labels"].fillna("").str.split("|")
    exploded = findings.explode().str.strip()
    unknown = set(exploded.unique()) - set(FINDINGS) - {NO_FINDING, ""}
    if unknown:
        raise ManifestError(f"{csv}: unknown finding(s) {sorted(unknown)[:5]} in 'Finding Labels'; "
                            f"expected {NO_FINDING!r} or pipe-separated {', '.join(FINDINGS)}")
    out = pd.DataFrame({
        "path": path.astype("str"),
        "patient_id": patient,
        "study_id": patient + "/" + t["Follow-up #"].astype("str").str.strip(),
        "view": normalise_view(t["View Position"]),
        "modality": options.modality or "DX",
    })
    split = _list_split(root, names)
    if split is not None:
        out["source_split"] = split
    row_of = exploded.index.to_numpy()
    for name in FINDINGS:
        hit = np.zeros(len(t), dtype="float64")
        hit[row_of[(exploded == name).to_numpy()]] = 1.0
        out[name] = hit
    if "Patient Age" in t.columns:
        out["meta_age"] = pd.to_numeric(t["Patient Age"], errors="coerce")
    if "Patient Gender" in t.columns:
        out["meta_sex"] = t["Patient Gender"]
    return Raw(out, root)
