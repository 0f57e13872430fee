"""A folder of NIfTI volumes (.nii / .nii.gz, any depth): one row per file, headers only.

patient, in order: the labels CSV's patient_id column (joined on path) > --patient-regex on the
file name > the BIDS `sub-<label>` folder/name entity > the file name without suffix (one patient
per file: leakage checks are then meaningless, a warning says so). study: header study id >
`sub-X/ses-Y` (BIDS session) > patient + file name. modality: header > --modality > BIDS suffix
(`_ct` -> CT; T1w, T2w, FLAIR, PD, bold, dwi -> MR) > OT. view: header > --view > UNKNOWN.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from medssl.errors import ManifestError
from medssl.manifest.formats.common import (Options, Raw, join_labels, log, normalise_view,
                                            patient_from_names, read_headers, walk, warn_one_patient_per_file)

_BIDS_SUB = re.compile(r"(?:^|[/_])(sub-[A-Za-z0-9]+)")
_BIDS_SES = re.compile(r"(?:^|[/_])(ses-[A-Za-z0-9]+)")
_MR_SUFFIXES = ("t1w", "t2w", "flair", "pd", "pdw", "bold", "dwi", "t2star", "swi")


def _stem(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return re.sub(r"\.nii(\.gz)?$", "", name, flags=re.IGNORECASE)


def _guess_modality(path: str) -> str | None:
    suffix = _stem(path).rsplit("_", 1)[-1].lower()
    return "CT" if suffix == "ct" else "MR" if suffix in _MR_SUFFIXES else None


def build(source: Path, options: Options) -> Raw:
    if not source.is_dir():
        raise ManifestError(f"--format nifti-dir needs a folder; {source} is a file")
    paths = walk(source, lambda n: n.lower().endswith((".nii", ".nii.gz")))
    if not paths:
        raise ManifestError(f"no NIfTI files (*.nii, *.nii.gz) under {source}")
    headers, kept, skipped = read_headers(source, paths, options.on_error)
    path = pd.Series(kept, dtype="str")
    stems = path.map(_stem)
    sub = path.str.extract(_BIDS_SUB)[0]
    ses = path.str.extract(_BIDS_SES)[0]
    if options.patient_regex:
        patient, study = patient_from_names(path, options.patient_regex)
    else:
        patient, study = sub.where(sub.notna(), stems), None
    header_study = pd.Series([h.get("study_id") for h in headers], dtype="object")
    if study is None:
        study = (patient + "/" + ses).where(ses.notna(), patient + "/" + stems)
    modality = [h.get("modality") or options.modality or _guess_modality(p) or "OT"
                for h, p in zip(headers, kept)]
    if "OT" in modality and not options.modality:
        log.warning("nifti-dir: modality unknown for %d file(s), written as OT; pass --modality CT/MR",
                    modality.count("OT"))
    table = pd.DataFrame({
        "path": path,
        "patient_id": patient,
        "study_id": header_study.where(header_study.notna(), study),
        "view": normalise_view(pd.Series([h.get("view") or options.view for h in headers], dtype="object")),
        "modality": modality,
    })
    if options.labels is not None:
        table = join_labels(table, options.labels)
    if not options.patient_regex:
        warn_one_patient_per_file(table["patient_id"], stems, "nifti-dir")
    return Raw(table, source, skipped)
