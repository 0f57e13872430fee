"""The manifest schema: one row per image.

Required columns: path, patient_id, study_id, view, modality. Every other column is a label
(float: 1 positive, 0 negative, -1 uncertain, NaN blank) unless it is a known bookkeeping
column (`split`, `series_id`, `frame`) or starts with `meta_` (free metadata such as age).
"""

from __future__ import annotations

REQUIRED_COLUMNS = ("path", "patient_id", "study_id", "view", "modality")
#: Non-label columns medssl itself may add or read.
BOOKKEEPING_COLUMNS = ("split", "series_id", "frame", "source_split")
META_PREFIX = "meta_"
#: Allowed label values besides NaN (blank).
LABEL_VALUES = (1.0, 0.0, -1.0)

#: CheXpert's 14 observations, in the order of its CSVs.
CHEXPERT_LABELS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
)
#: The headline tasks of the CheXpert competition (mean AUC over these).
CHEXPERT_COMPETITION_TASKS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion",
)


def label_columns(columns) -> list[str]:
    """Label columns of a manifest, in table order: everything that is not required/bookkeeping/meta_."""
    reserved = set(REQUIRED_COLUMNS) | set(BOOKKEEPING_COLUMNS)
    return [c for c in columns if c not in reserved and not str(c).startswith(META_PREFIX)]
