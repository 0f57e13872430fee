"""Build the embedded demo data set: a deterministic, patient-whole subset of Kermany pediatric CXR.

Reads the distributor's copy (224x224 RGB JPEG, see its SOURCE.txt) and writes
medssl/data/kermany/{images/*.png, labels.csv, SOURCE.txt, README.md}.

Selection rule (documented in SOURCE.txt): patients are grouped by `patient_id_loose`; each patient
gets a stratum (official split x the set of its subtypes, e.g. train/bacteria+virus); every stratum
gets round(TARGET_IMAGES x its share of all images) images, taken as whole patients in order of
sha256("medssl-kermany-v1:" + patient_id_loose): first from patients with 2..MAX_IMAGES images
until about half the stratum's images are reached (so MICLe pairs exist), then from single-image
patients. Patients with more than MAX_IMAGES images are skipped (no one child dominates).

Usage: python scripts/make_kermany_subset.py [--src DIR] [--out DIR] [--target 1400]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import sys
from pathlib import Path

import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from medssl.atomic import write_bytes, write_table, write_text  # noqa: E402

DEFAULT_SRC = REPO.parent / "shared" / "data" / "real" / "kermany_pediatric"
DEFAULT_OUT = REPO / "medssl" / "data" / "kermany"
SIZE = 128
TARGET_IMAGES = 1400
MAX_IMAGES = 8          # patients with more images are not selected
MULTI_SHARE = 0.5       # share of each stratum's images drawn from multi-image patients first
SALT = "medssl-kermany-v1:"
COLUMNS = ["image", "split", "label_pneumonia", "subtype", "patient_id", "patient_id_loose", "raw_patient_id"]


def patient_order_key(patient: str) -> str:
    return hashlib.sha256((SALT + patient).encode()).hexdigest()


def select(labels: pd.DataFrame, target: int) -> pd.DataFrame:
    """Rows of whole patients, stratified by split x subtype set; deterministic (hash order)."""
    per_patient = labels.groupby("patient_id_loose").agg(
        split=("split", "first"), n=("image", "size"),
        subtypes=("subtype", lambda s: "+".join(sorted(set(s)))))
    per_patient["stratum"] = per_patient["split"] + "/" + per_patient["subtypes"]
    per_patient["key"] = [patient_order_key(p) for p in per_patient.index]
    per_patient = per_patient[per_patient["n"] <= MAX_IMAGES]
    share = labels.merge(per_patient[["stratum"]], left_on="patient_id_loose", right_index=True) \
        .groupby("stratum").size() / len(labels)
    chosen = []
    for stratum, group in per_patient.groupby("stratum"):
        want = round(target * share.get(stratum, 0.0))
        group = group.sort_values("key")
        multi, single = group[group["n"] >= 2], group[group["n"] == 1]
        taken = 0
        for part, limit in ((multi, round(want * MULTI_SHARE)), (pd.concat([single, multi]), want)):
            for pid, row in part.iterrows():
                if taken >= limit:
                    break
                if pid in chosen:
                    continue
                chosen.append(pid)
                taken += row["n"]
    chosen_set = set(chosen)
    return labels[labels["patient_id_loose"].isin(chosen_set)].copy()


def flat_name(image: str, split: str) -> str:
    """images/train/PNEUMONIA/person1_virus_6.jpeg -> train_person1_virus_6.png (unique per split)."""
    return f"{split}_{Path(image).stem}.png"


def to_png(src: Path) -> bytes:
    with Image.open(src) as im:
        gray = im.convert("L").resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    gray.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--target", type=int, default=TARGET_IMAGES)
    args = ap.parse_args(argv)

    labels = pd.read_csv(args.src / "labels.csv", dtype=str)
    subset = select(labels, args.target)
    subset["new_image"] = [f"images/{flat_name(i, s)}" for i, s in zip(subset["image"], subset["split"])]
    assert subset["new_image"].is_unique, "flat names collide"
    images_dir = args.out / "images"
    if images_dir.exists():
        shutil.rmtree(images_dir)
    images_dir.mkdir(parents=True)
    for old, new in zip(subset["image"], subset["new_image"]):
        write_bytes(args.out / new, to_png(args.src / old))
    subset["image"] = subset["new_image"]
    subset = subset[COLUMNS].sort_values("image").reset_index(drop=True)
    write_table(args.out / "labels.csv", subset)
    write_text(args.out / "SOURCE.txt", source_text(subset, labels))
    write_text(args.out / "README.md", readme_text(subset))
    print(summary(subset))
    return 0


def summary(subset: pd.DataFrame) -> str:
    per = subset.groupby("patient_id_loose").size()
    lines = [f"{len(subset)} images, {len(per)} patients (patient_id_loose), "
             f"{int((per >= 2).sum())} patients with >= 2 images",
             subset.groupby(["split", "subtype"]).size().to_string()]
    return "\n".join(lines)


def source_text(subset: pd.DataFrame, full: pd.DataFrame) -> str:
    return f"""Embedded demo data of medssl: a subset of the Kermany pediatric chest X-ray set.

Data: Kermany D, Zhang K, Goldbaum M. "Labeled Optical Coherence Tomography (OCT) and Chest X-Ray
  Images for Classification". Mendeley Data, v2, 2018. doi:10.17632/rscbjbr9sj.2
  Paper: Kermany DS et al. "Identifying Medical Diagnoses and Treatable Diseases by Image-Based Deep
  Learning". Cell 172(5):1122-1131, 2018. doi:10.1016/j.cell.2018.02.010
  Pediatric (ages 1-5) anterior-posterior chest X-rays from Guangzhou Women and Children's Medical
  Center, labelled normal / bacterial pneumonia / viral pneumonia.
Licence: CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/). You may share and adapt the
  images with attribution to the authors above; this folder is an adaptation (changes listed below).

Provenance:
  1. Original: Kermany et al., Mendeley Data v2 (JPEG, variable size, grayscale), train/test splits.
  2. Distributor: github.com/waliatushar/ai-pneumonia-detection, commit
     362d6d1be840461d0f26253972ec86bbc8533772, folder dataset/ - every image opened with PIL,
     converted to RGB and resized to 224x224 WITHOUT keeping the aspect ratio (squashed), saved as
     JPEG over the original (a second lossy JPEG generation). The 16-image val split is absent.
  3. medssl (scripts/make_kermany_subset.py, deterministic): {len(subset)} of the {len(full)} images,
     converted to 8-bit grayscale (the 3 channels are identical) and resized 224x224 -> {SIZE}x{SIZE}
     with Pillow LANCZOS, saved as PNG (lossless from here on). Flat file names
     <split>_<original file stem>.png.

Selection rule: patients grouped by patient_id_loose (split/personN: bacteria and virus images of
  the same person number merged; normal images by IM-XXXX). Each patient gets a stratum = official
  split x the set of its subtypes; each stratum gets round({TARGET_IMAGES} x its share of all images)
  images, taken as WHOLE patients in the order of sha256("{SALT}" + patient_id_loose): first patients
  with 2..{MAX_IMAGES} images until about {MULTI_SHARE:.0%} of the stratum's images (so several images per
  patient exist for MICLe pairs), then single-image patients. Patients with more than {MAX_IMAGES}
  images are never selected. The official split column is kept unchanged.

labels.csv: same columns as the distributor's labels.csv ({", ".join(COLUMNS)});
  `image` is relative to this folder. label_pneumonia from the original folder name (NORMAL=0,
  PNEUMONIA=1); subtype (normal/bacteria/virus) and the patient ids parsed from the original file
  names (personN_bacteria_M / personN_virus_M / [NORMAL2-]IM-XXXX-YYYY). patient_id is conservative
  (split/subtype/personN); patient_id_loose merges bacteria+virus of one personN (use it to group).

Caveats:
  - Patient identity is inferred from file names, a community convention that the data authors do
    not document; images of one child may still be split across ids.
  - Images were squashed to a square by the distributor (aspect ratio lost) and JPEG-compressed
    twice before our resize; they are fine for a pipeline demo, not for clinical conclusions.
  - Pediatric AP images from one centre: results do not transfer to adult PA chest X-rays.
  - Labels are per image (pneumonia yes/no and subtype) from the original study's grading, not
    re-read by us.
  - The subset is small ({len(subset)} images); AUCs on it have wide confidence intervals.
"""


def readme_text(subset: pd.DataFrame) -> str:
    per = subset.groupby("patient_id_loose").size()
    counts = subset.groupby(["split", "subtype"]).size().unstack(fill_value=0)
    return f"""# Embedded demo data: Kermany pediatric chest X-rays (subset)

{len(subset)} real pediatric chest X-rays ({SIZE}x{SIZE} 8-bit grayscale PNG) from {len(per)} patients,
{int((per >= 2).sum())} of them with two or more images. Licence CC BY 4.0 - see SOURCE.txt for the
attribution, provenance and caveats. This is the data `medssl demo` runs on without any download.

Images per official split and subtype:

```
{counts.to_string()}
```

`labels.csv` columns: {", ".join(f"`{c}`" for c in COLUMNS)}. Paths in `image` are relative to
this folder. Group images by `patient_id_loose` when splitting or pairing.

From Python: `medssl.data.embedded_kermany_dir()` returns this folder.

Rebuild (deterministic) from the distributor's copy: `python scripts/make_kermany_subset.py --src DIR`.
"""


if __name__ == "__main__":
    sys.exit(main())
