"""Source formats of `medssl manifest build --format F`: one module each, `build(source, options) -> Raw`.

See each module's docstring for how the source maps onto the manifest schema, and
data_manifests/README.md for the overview.
"""

from __future__ import annotations

import importlib

from medssl.errors import ManifestError

#: --format name -> module under medssl.manifest.formats
FORMATS = {
    "chexpert": "chexpert",
    "mimic-cxr-jpg": "mimic",
    "nih-cxr14": "nih",
    "dicom-dir": "dicom_dir",
    "nifti-dir": "nifti_dir",
    "image-dir": "image_dir",
    "kermany": "kermany",
}
#: formats that read every file (so on_error="skip" applies to unreadable files)
FILE_FORMATS = ("dicom-dir", "nifti-dir", "image-dir")


def get(name: str):
    """The build function of a format; ManifestError listing the formats for an unknown name."""
    if name not in FORMATS:
        raise ManifestError(f"unknown manifest format {name!r}; choose one of {', '.join(FORMATS)}")
    return importlib.import_module(f"medssl.manifest.formats.{FORMATS[name]}").build
