"""Manifests: one row per image (`path, patient_id, study_id, view, modality` + float labels).

    df = build("chexpert", "/data/CheXpert-v1.0-small")     # pseudonymised ids, validated
    save(df, "chexpert.csv")                                 # + chexpert.meta.json (data root)
    df = load("chexpert.csv")                                # df.attrs["data_root"]
    validate(df, verify_files=True)

Schema and label coding: medssl.manifest.schema and data_manifests/README.md.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from medssl.errors import ManifestError
from medssl.manifest import formats
from medssl.manifest.formats.common import Options
from medssl.manifest.pseudonym import pseudonymise, resolve_salt
from medssl.manifest.schema import (BOOKKEEPING_COLUMNS, CHEXPERT_LABELS, LABEL_VALUES, META_PREFIX,
                                    REQUIRED_COLUMNS, label_columns)
from medssl.manifest.table import data_root_of, load, order_columns, save
from medssl.manifest.validate import check_files, missing_files, validate

__all__ = ["build", "load", "save", "validate", "summary", "format_summary", "FORMATS", "REQUIRED_COLUMNS",
           "BOOKKEEPING_COLUMNS", "META_PREFIX", "LABEL_VALUES", "CHEXPERT_LABELS", "label_columns",
           "data_root_of"]

FORMATS = tuple(formats.FORMATS)
log = logging.getLogger(__name__)


def build(format: str, source: str | os.PathLike, *, data_root: str | os.PathLike | None = None,
          verify_files: bool = True, salt: str | bytes | None = None, keep_ids: bool = False,
          on_error: str = "raise", report: str | os.PathLike | None = None,
          labels: str | os.PathLike | None = None, patient_regex: str | None = None,
          modality: str | None = None, view: str | None = None) -> pd.DataFrame:
    """Build a validated manifest from a source data set (see medssl.manifest.formats).

    Paths are relative to `data_root` (default: the source's own root) with forward slashes;
    df.attrs["data_root"] holds it (absolute) and `save` records it beside the file.
    Ids are pseudonymised (salt: argument > MEDSSL_SALT > per-user salt file) unless keep_ids.
    on_error="skip" leaves out unreadable files (and, with verify_files, missing ones), writes them
    to `report` (CSV: path, reason) when given; df.attrs["skipped"] is their count.
    labels / patient_regex / modality / view: options of the folder formats (dicom-dir, nifti-dir,
    image-dir; modality/view also where a table format does not say).
    """
    if on_error not in ("raise", "skip"):
        raise ManifestError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    source = Path(source)
    if not source.exists():
        raise ManifestError(f"manifest source {source} does not exist")
    builder = formats.get(format)
    options = Options(labels=Path(labels) if labels else None, patient_regex=patient_regex,
                      modality=modality, view=view, on_error=on_error)
    raw = builder(source, options)
    table, root, skipped = raw.table.reset_index(drop=True), raw.root.resolve(), list(raw.skipped)

    if data_root is not None:
        table["path"] = _rebase(table["path"], root, Path(data_root).resolve())
        root = Path(data_root).resolve()
    if verify_files:
        absent = missing_files(table, root)
        if absent.any() and on_error == "skip":
            skipped.extend((p, "file not found") for p in table.loc[absent, "path"])
            table = table[~absent].reset_index(drop=True)
        elif absent.any():
            check_files(table, root, f"manifest built from {source}")

    if keep_ids:
        log.warning("--keep-ids: the manifest keeps RAW patient/study ids (PHI); do not share it")
    else:
        table = pseudonymise(table, resolve_salt(salt))
    if skipped:
        log.warning("%d file(s) skipped (unreadable or missing)%s", len(skipped),
                    f"; listed in {report}" if report else "")
    if report is not None:  # written before validation: if nothing is left, the report says why
        from medssl.atomic import write_table
        write_table(report, pd.DataFrame(skipped, columns=["path", "reason"]))
    df = order_columns(table)
    validate(df, source=f"built from {source}")
    df.attrs = {"data_root": str(root), "skipped": len(skipped)}
    return df


def _rebase(paths: pd.Series, root: Path, data_root: Path) -> pd.Series:
    """Paths relative to root -> relative to data_root (which may contain root or lie inside it)."""
    if root == data_root:
        return paths
    if root.is_relative_to(data_root):
        return root.relative_to(data_root).as_posix() + "/" + paths
    if data_root.is_relative_to(root):
        prefix = data_root.relative_to(root).as_posix() + "/"
        outside = ~paths.str.startswith(prefix)
        if outside.any():
            raise ManifestError(f"{int(outside.sum())} image(s) lie outside --data-root {data_root}, e.g. "
                                f"{list(paths[outside][:3])} (relative to {root}); choose a data root that "
                                f"contains every image")
        return paths.str.slice(len(prefix))
    raise ManifestError(f"--data-root {data_root} neither contains nor lies inside the source root {root}; "
                        f"choose a folder that contains every image")


def summary(df: pd.DataFrame) -> dict:
    """Counts without any id: images, patients, studies, per view/modality/split, and per label
    positives, negatives, uncertain, blank and prevalence (positives / non-blank)."""
    out = {"images": int(len(df)), "patients": int(df["patient_id"].nunique()),
           "studies": int(df["study_id"].nunique()),
           "views": {str(k): int(v) for k, v in df["view"].value_counts(dropna=False).items()},
           "modalities": {str(k): int(v) for k, v in df["modality"].value_counts(dropna=False).items()}}
    for column in ("source_split", "split"):
        if column in df.columns:
            out[column] = {str(k): int(v) for k, v in df[column].value_counts(dropna=False).items()}
    labels = {}
    for c in label_columns(df.columns):
        v = df[c]
        pos, neg, unc = int((v == 1).sum()), int((v == 0).sum()), int((v == -1).sum())
        known = pos + neg + unc
        labels[c] = {"positive": pos, "negative": neg, "uncertain": unc, "blank": int(v.isna().sum()),
                     "prevalence": round(pos / known, 4) if known else None}
    out["labels"] = labels
    return out


def format_summary(s: dict) -> str:
    """The summary as readable text (what `medssl manifest build/summary` print)."""
    lines = [f"{s['images']} images, {s['patients']} patients, {s['studies']} studies",
             "views: " + ", ".join(f"{k} {v}" for k, v in s["views"].items()),
             "modalities: " + ", ".join(f"{k} {v}" for k, v in s["modalities"].items())]
    for column in ("source_split", "split"):
        if column in s:
            lines.append(f"{column}: " + ", ".join(f"{k} {v}" for k, v in s[column].items()))
    if s["labels"]:
        width = max(len(c) for c in s["labels"])
        lines.append(f"{'label':<{width}}  {'pos':>7} {'neg':>7} {'uncert':>7} {'blank':>7}  prevalence")
        for c, d in s["labels"].items():
            prev = "-" if d["prevalence"] is None else f"{d['prevalence']:.3f}"
            lines.append(f"{c:<{width}}  {d['positive']:>7} {d['negative']:>7} {d['uncertain']:>7} "
                         f"{d['blank']:>7}  {prev}")
    else:
        lines.append("no label columns")
    return "\n".join(lines)
