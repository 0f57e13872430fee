"""What every source format shares: its options, its raw result, and small helpers.

A format builder is `build(source: Path, options: Options) -> Raw`: a table in the manifest schema
but with RAW ids (pseudonymised afterwards by `medssl.manifest.build`), paths relative to `Raw.root`
with forward slashes, and the files it had to leave out.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medssl.errors import ManifestError, ReaderError
from medssl.manifest.schema import BOOKKEEPING_COLUMNS, REQUIRED_COLUMNS

log = logging.getLogger("medssl.manifest")

UNKNOWN_VIEW = "UNKNOWN"
#: Source spellings of a lateral projection, all written as LATERAL (LL/RL: left/right lateral).
_VIEW_SYNONYMS = {"LATERAL": "LATERAL", "LAT": "LATERAL", "LL": "LATERAL", "RL": "LATERAL",
                  "FRONTAL": "FRONTAL", "": UNKNOWN_VIEW, "NAN": UNKNOWN_VIEW, "NONE": UNKNOWN_VIEW}
SPLIT_NAMES = ("train", "training", "val", "valid", "validation", "validate", "dev", "test", "testing")


@dataclass
class Options:
    """Format options beyond the common build() arguments (CLI: --labels, --patient-regex, ...)."""

    labels: Path | None = None          # labels CSV (dicom-dir, nifti-dir, image-dir)
    patient_regex: str | None = None    # regex on file names: group `patient` (or 1), optional `study`
    modality: str | None = None         # used where the source (header, table) does not say
    view: str | None = None             # likewise
    on_error: str = "raise"             # "raise" | "skip" for unreadable files


@dataclass
class Raw:
    """A format's output before pseudonymisation: raw ids, paths relative to `root`."""

    table: pd.DataFrame
    root: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def normalise_view(values: pd.Series) -> pd.Series:
    """Upper-case view codes; LL/RL/LAT -> LATERAL; blank -> UNKNOWN; others (PA, AP, ...) kept."""
    text = values.astype("str").where(values.notna(), "").str.strip().str.upper()
    return text.map(lambda v: _VIEW_SYNONYMS.get(v, v)).astype("str")


def find_csv(folder: Path, patterns: tuple[str, ...], what: str) -> Path:
    """The first file (sorted by name) matching the first pattern that matches anything."""
    for pattern in patterns:
        hits = sorted(folder.glob(pattern))
        if hits:
            return hits[0]
    raise ManifestError(f"no {what} in {folder} (looked for {', '.join(patterns)}); pass the folder "
                        f"that holds it, or the CSV itself")


def read_csv(path: Path, **kwargs) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)
    except (OSError, ValueError) as e:
        raise ManifestError(f"cannot read {path}: {e}") from e


def require_columns(table: pd.DataFrame, columns, source: Path, what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ManifestError(f"{source} lacks column(s) {missing} expected in {what} (has "
                            f"{list(table.columns)[:15]}); is this the right file for --format?")


def walk(root: Path, accept) -> list[str]:
    """Relative posix paths of files under root (sorted) whose name satisfies accept(name).

    Hidden files and folders (".x") are skipped; symlinked folders are not followed.
    """
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = Path(folder).relative_to(root)
        for name in files:
            if not name.startswith(".") and accept(name):
                found.append((rel / name).as_posix())
    return sorted(found)


def read_headers(root: Path, paths: list[str], on_error: str) -> tuple[list[dict], list[str],
                                                                      list[tuple[str, str]]]:
    """medssl.io.read_header for each path: (headers, their paths, skipped (path, reason)).

    on_error="raise" re-raises the first ReaderError with the fix; "skip" collects it.
    """
    from medssl.io import read_header

    headers, kept, skipped = [], [], []
    for rel in paths:
        try:
            headers.append(read_header(root / rel))
            kept.append(rel)
        except ReaderError as e:
            if on_error == "raise":
                raise ReaderError(root / rel, f"{e.reason}. Rerun with --on-error skip to leave "
                                              f"unreadable files out (they are listed in --report)") from e
            skipped.append((rel, e.reason))
    return headers, kept, skipped


def skip_missing_ids(table: pd.DataFrame, columns, skipped: list, on_error: str, root: Path) -> pd.DataFrame:
    """Rows whose header lacks a patient/study id: raise, or skip them into `skipped`."""
    for column in columns:
        blank = table[column].isna() | table[column].astype("str").str.strip().eq("")
        if not blank.any():
            continue
        paths = list(table.loc[blank, "path"])
        if on_error == "raise":
            raise ManifestError(f"{len(paths)} file(s) under {root} have no {column} in their header, e.g. "
                                f"{paths[:3]}; give it via --labels CSV (path,{column},...), or rerun "
                                f"with --on-error skip")
        skipped.extend((p, f"no {column} in the header") for p in paths)
        table = table[~blank]
    return table


def patient_from_names(paths: pd.Series, regex: str) -> tuple[pd.Series, pd.Series | None]:
    """(patient, study or None) from a regex searched in each file NAME.

    The regex's named group `patient` (else its first group, else the whole match) is the patient;
    an optional named group `study` is the study. Raises ManifestError for files it does not match.
    """
    try:
        pattern = re.compile(regex)
    except re.error as e:
        raise ManifestError(f"--patient-regex {regex!r} is not a valid regular expression: {e}") from e
    names = paths.map(lambda p: p.rsplit("/", 1)[-1])
    group = "patient" if "patient" in pattern.groupindex else (1 if pattern.groups else 0)
    matches = names.map(pattern.search)
    unmatched = matches.isna()
    if unmatched.any():
        raise ManifestError(f"--patient-regex {regex!r} does not match {int(unmatched.sum())} file name(s), "
                            f"e.g. {list(names[unmatched][:3])}; adjust it so every file name yields a "
                            f"patient id (named group 'patient' or the first group)")
    patient = matches.map(lambda m: m.group(group))
    study = matches.map(lambda m: m.group("study")) if "study" in pattern.groupindex else None
    return patient, study


def join_labels(table: pd.DataFrame, labels_csv: Path, *, keys=("path", "study_id")) -> pd.DataFrame:
    """Left-join a labels CSV on the first of `keys` it has (paths relative to the source folder).

    Its patient_id/study_id columns (when joined on path) replace the header/file-name ones; its
    other columns become labels (or meta_ columns). Images without a row get blank labels.
    """
    labels_csv = Path(labels_csv)
    if not labels_csv.is_file():
        raise ManifestError(f"labels CSV {labels_csv} does not exist")
    labels = read_csv(labels_csv, dtype={"path": str, "patient_id": str, "study_id": str},
                      keep_default_na=False, na_values=[""])
    key = next((k for k in keys if k in labels.columns), None)
    if key is None:
        raise ManifestError(f"labels CSV {labels_csv} needs a join column, one of {list(keys)} "
                            f"(has {list(labels.columns)[:10]})")
    if key == "path":
        posix = labels["path"].str.replace("\\", "/", regex=False)
        labels["path"] = posix.str.replace(r"^(\./)+", "", regex=True)
    reserved = set(REQUIRED_COLUMNS) | set(BOOKKEEPING_COLUMNS)
    overrides = [c for c in ("patient_id", "study_id") if c in labels.columns and c != key]
    dropped = [c for c in labels.columns if c in reserved and c != key and c not in overrides]
    if dropped:
        log.warning("labels CSV %s: ignoring column(s) %s (the images' own values are used)",
                    labels_csv, dropped)
        labels = labels.drop(columns=dropped)
    dup = labels[key].duplicated()
    if dup.any():
        raise ManifestError(f"labels CSV {labels_csv}: {int(dup.sum())} duplicate '{key}' value(s), e.g. "
                            f"{list(labels.loc[dup, key][:3])}; one row per {key}")
    unmatched = ~labels[key].isin(table[key])
    if unmatched.any():
        log.warning("labels CSV %s: %d of %d row(s) match no image by '%s' (e.g. row %d)", labels_csv,
                    int(unmatched.sum()), len(labels), key, int(labels.index[unmatched][0]))
    base = table.drop(columns=[c for c in overrides if c in table.columns])
    merged = base.merge(labels, on=key, how="left", validate="many_to_one")
    for c in overrides:  # images without a labels row keep their own id
        if c in table.columns:
            merged[c] = merged[c].fillna(table[c].reset_index(drop=True))
    return merged


def warn_one_patient_per_file(patients: pd.Series, per_file: pd.Series, fmt: str) -> None:
    """Warn when patients fell back to one per file: leakage checks cannot catch repeats then."""
    n = int((patients.to_numpy() == per_file.to_numpy()).sum())
    if n:
        log.warning("%s: %d image(s) have no patient id beyond their file name, so each is its own patient "
                    "and patient-level splits/leakage checks are meaningless for them. Pass "
                    "--patient-regex (e.g. '^(?P<patient>[^_]+)_') or a --labels CSV with patient_id", fmt, n)
