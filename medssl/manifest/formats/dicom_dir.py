"""A folder of DICOM files (any depth): one row per file, from headers only (no pixel decoding).

Files considered: *.dcm, *.dicom, *.dic, and files without a suffix that carry the DICM preamble
(DICOMDIR excluded); others (README, CSVs, ...) are ignored. Each is read with
`medssl.io.read_header`: patient_id (PatientID), study_id (StudyInstanceUID), series_id
(SeriesInstanceUID), view (ViewPosition, else --view, else UNKNOWN), modality (else --modality,
else OT).
Unreadable files, and files without PatientID/StudyInstanceUID, raise; with on_error="skip" they
are left out and reported. Labels: optional CSV joined on `path` (relative to the source folder)
or on `study_id` (the raw StudyInstanceUID), see `common.join_labels`.
Multi-frame files are one row each (no `frame` column).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medssl.errors import ManifestError
from medssl.manifest.formats.common import (Options, Raw, join_labels, log, normalise_view, read_headers,
                                            skip_missing_ids, walk)

SUFFIXES = (".dcm", ".dicom", ".dic")


def _is_candidate(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(SUFFIXES) or ("." not in name and name.upper() != "DICOMDIR")


def build(source: Path, options: Options) -> Raw:
    if not source.is_dir():
        raise ManifestError(f"--format dicom-dir needs a folder; {source} is a file")
    from medssl.io.dicom import is_dicom

    # suffix-less files count only with the DICM preamble (READMEs, LICENSE, ... are not errors)
    paths = [p for p in walk(source, _is_candidate) if "." in p.rsplit("/", 1)[-1] or is_dicom(source / p)]
    if not paths:
        raise ManifestError(f"no DICOM files (*.dcm, *.dicom or no suffix) under {source}")
    headers, kept, skipped = read_headers(source, paths, options.on_error)
    table = pd.DataFrame({
        "path": kept,
        "patient_id": [h.get("patient_id") for h in headers],
        "study_id": [h.get("study_id") for h in headers],
        "series_id": [h.get("series_id") for h in headers],
        "view": normalise_view(pd.Series([h.get("view") or options.view for h in headers], dtype="object")),
        "modality": [h.get("modality") or options.modality or "OT" for h in headers],
    })
    if options.labels is not None:
        table = join_labels(table, options.labels)
    table = skip_missing_ids(table, ("patient_id", "study_id"), skipped, options.on_error, source)
    _warn_ids_in_paths(table)
    return Raw(table.reset_index(drop=True), source, skipped)


def _warn_ids_in_paths(table: pd.DataFrame) -> None:
    """PHI check: raw patient ids inside file/folder names survive pseudonymisation in `path`."""
    hits = sum(1 for pid, path in zip(table["patient_id"].astype(str), table["path"])
               if len(pid) >= 4 and pid in path)
    if hits:
        log.warning("%d file path(s) contain the patient's raw PatientID; the manifest's `path` column "
                    "keeps them. Rename those folders/files before sharing the manifest", hits)
