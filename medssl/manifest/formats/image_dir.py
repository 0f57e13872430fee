"""A folder of PNG/JPEG images (any depth): one row per image.

Labels: a labels CSV joined on `path` (relative to the source folder) when given; else class
folders: the folder directly holding an image is its class, one 0/1 column per class (images
directly under the source folder get blank labels). A top-level folder named like a split (train,
val, valid, test, ...) goes to source_split instead of being a class (ImageFolder layouts such as
train/NORMAL/x.png). patient: --patient-regex on the file name (group `patient` or the first group;
optional group `study`), else the labels CSV's patient_id, else one patient per file with a warning
(leakage checks are then meaningless). study: regex group `study`, else one study per image.
view: --view or UNKNOWN; modality: --modality or OT. Every file is opened lazily (header only) so
unreadable files raise or, with on_error="skip", are reported.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medssl.errors import ManifestError
from medssl.manifest.formats.common import (SPLIT_NAMES, Options, Raw, join_labels, patient_from_names,
                                            read_headers, walk, warn_one_patient_per_file)
from medssl.manifest.schema import BOOKKEEPING_COLUMNS, REQUIRED_COLUMNS

SUFFIXES = (".png", ".jpg", ".jpeg")


def _class_table(path: pd.Series) -> tuple[pd.DataFrame, pd.Series | None]:
    parts = path.str.split("/")
    top = parts.map(lambda p: p[0].lower() if len(p) > 1 else None)
    is_split = top.isin(SPLIT_NAMES)
    source_split = top.where(is_split) if is_split.any() else None
    # the class is the folder holding the image, unless that folder is the split folder itself
    cls = parts.map(lambda p: p[-2] if len(p) > 1 else None)
    cls = cls.where(~(is_split & parts.map(len).eq(2)))
    classes = sorted(c for c in cls.dropna().unique())
    clash = [c for c in classes if c in REQUIRED_COLUMNS or c in BOOKKEEPING_COLUMNS]
    if clash:
        raise ManifestError(f"class folder name(s) {clash} collide with manifest columns; rename them")
    labels = pd.DataFrame({c: cls.eq(c).astype("float64").where(cls.notna()) for c in classes},
                          index=path.index)
    return labels, source_split


def build(source: Path, options: Options) -> Raw:
    if not source.is_dir():
        raise ManifestError(f"--format image-dir needs a folder; {source} is a file")
    paths = walk(source, lambda n: n.lower().endswith(SUFFIXES))
    if not paths:
        raise ManifestError(f"no images (*.png, *.jpg, *.jpeg) under {source}")
    _, kept, skipped = read_headers(source, paths, options.on_error)
    path = pd.Series(kept, dtype="str")
    one_per_file = path.str.replace(r"\.[^./]+$", "", regex=True)
    if options.patient_regex:
        patient, study = patient_from_names(path, options.patient_regex)
        study = study if study is not None else one_per_file
    else:
        patient, study = one_per_file, one_per_file
    table = pd.DataFrame({"path": path, "patient_id": patient, "study_id": study,
                          "view": options.view or "UNKNOWN", "modality": options.modality or "OT"})
    if options.labels is not None:
        table = join_labels(table, options.labels, keys=("path",))
    else:
        labels, source_split = _class_table(path)
        if source_split is not None:
            table["source_split"] = source_split
        table = pd.concat([table, labels], axis=1)
    if not options.patient_regex:
        warn_one_patient_per_file(table["patient_id"], one_per_file, "image-dir")
    return Raw(table, source, skipped)
