"""CheXpert (v1.0 and v1.0-small): train.csv / valid.csv.

Source: one of the CSVs (also .csv.gz), or the dataset folder holding them. Each CSV's `Path` looks
like `CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg`, relative to the folder ABOVE
the dataset folder; the data root is that folder (or the CSV's own folder when paths do not start
with its name). patient = `patient00001`, study = `patient00001/study1` (study numbers restart per
patient), source_split = train/valid (the path's folder). view: Frontal + AP/PA -> AP or PA (other
or blank -> FRONTAL), Lateral -> LATERAL. The 14 observations keep 1 / 0 / -1 (uncertain) / blank
distinct: the uncertainty policy is chosen at training time. Sex/Age -> meta_sex/meta_age.
modality: DX (the CSVs do not say).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medssl.errors import ManifestError
from medssl.manifest.formats.common import Options, Raw, read_csv, require_columns
from medssl.manifest.schema import CHEXPERT_LABELS

_PATH_RE = r"(?:^|/)(train|valid|test)/(patient\d+)/(study\d+)/[^/]+$"


def _csvs(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    for folder in [source, *sorted(p for p in source.glob("CheXpert*") if p.is_dir())]:
        found = [p for name in ("train", "valid") for p in sorted(folder.glob(f"{name}.csv*"))[:1]]
        if found:
            return found
    raise ManifestError(f"no CheXpert train.csv/valid.csv in {source} or its CheXpert* folders; pass "
                        f"the dataset folder or one of its CSVs")


def _root(csv: Path, paths: pd.Series) -> Path:
    folder = csv.resolve().parent
    first = paths.iloc[0].split("/", 1)[0] if len(paths) else ""
    return folder.parent if first == folder.name else folder


def build(source: Path, options: Options) -> Raw:
    tables, roots = [], []
    for csv in _csvs(source):
        t = read_csv(csv, dtype={"Path": str, "Sex": str, "Frontal/Lateral": str, "AP/PA": str})
        require_columns(t, ["Path", "Frontal/Lateral", "AP/PA"], csv, "a CheXpert CSV")
        t["Path"] = t["Path"].str.replace("\\", "/", regex=False)
        tables.append(t)
        roots.append(_root(csv, t["Path"]))
    if len(set(roots)) > 1:
        raise ManifestError(f"CheXpert CSVs resolve against different folders {sorted(set(map(str, roots)))}; "
                            f"build each CSV separately")
    t = pd.concat(tables, ignore_index=True)

    parts = t["Path"].str.extract(_PATH_RE)
    bad = parts[1].isna()
    if bad.any():
        raise ManifestError(f"{int(bad.sum())} CheXpert path(s) do not look like "
                            f"<split>/patientNNNNN/studyN/<file>, e.g. {list(t.loc[bad, 'Path'][:3])}")
    frontal = t["Frontal/Lateral"].str.strip().str.lower().eq("frontal")
    appa = t["AP/PA"].str.strip().str.upper()
    view = np.where(~frontal, "LATERAL", np.where(appa.isin(["AP", "PA"]), appa, "FRONTAL"))

    out = pd.DataFrame({
        "path": t["Path"],
        "patient_id": parts[1],
        "study_id": parts[1] + "/" + parts[2],
        "view": pd.Series(view, index=t.index, dtype="str"),
        "modality": options.modality or "DX",
        "source_split": parts[0],
    })
    labels = [c for c in CHEXPERT_LABELS if c in t.columns]
    if not labels:
        raise ManifestError(f"no CheXpert observation columns ({', '.join(CHEXPERT_LABELS[:3])}, ...) in "
                            f"{source}; is this a CheXpert CSV?")
    for c in labels:
        out[c] = pd.to_numeric(t[c], errors="coerce").astype("float64")
    if "Sex" in t.columns:
        out["meta_sex"] = t["Sex"]
    if "Age" in t.columns:
        out["meta_age"] = pd.to_numeric(t["Age"], errors="coerce")
    return Raw(out, roots[0])
