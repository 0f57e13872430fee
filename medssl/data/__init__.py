"""Data shipped with medssl and synthetic data generators.

* `embedded_kermany_dir()`: a real 1,306-image subset of the Kermany pediatric chest X-ray set
  (128x128 grayscale PNG, CC BY 4.0; see kermany/SOURCE.txt), the data `medssl demo` uses.
* `medssl.data.phantom.write_phantoms`: synthetic chest phantoms written as real DICOM files.
"""

from __future__ import annotations

from pathlib import Path

KERMANY_DIR = Path(__file__).resolve().parent / "kermany"


def embedded_kermany_dir() -> Path:
    """Folder of the embedded Kermany subset: images/*.png, labels.csv, SOURCE.txt, README.md."""
    if not (KERMANY_DIR / "labels.csv").is_file():
        from medssl.errors import ManifestError
        raise ManifestError(f"the embedded demo data is missing from {KERMANY_DIR}; reinstall medssl "
                            "or rebuild it with scripts/make_kermany_subset.py")
    return KERMANY_DIR
