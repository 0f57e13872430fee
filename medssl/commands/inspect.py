"""`medssl inspect`: what medssl's readers make of one file (shape, range, modality, header)."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  medssl inspect chest.dcm
  medssl inspect chest.dcm --header                 # all DICOM elements, PHI shown as ***
  medssl inspect chest.dcm --header --show-phi      # unmasked (only on a machine allowed to hold PHI)
  medssl inspect ct.dcm --window none               # Hounsfield units
  medssl inspect ct.dcm --window lung               # presets: lung, mediastinum, soft-tissue, bone, brain
  medssl inspect cine.dcm --frame 3
  medssl inspect brain.nii.gz --slice-axis axial --slice-index middle --window 40,80
  medssl inspect view1_frontal.jpg

Patient-identifying values (PatientName, PatientID, birth date, accession number, institution,
physicians, any person-name element, private text elements; NIfTI descrip/aux_file; PNG text
chunks) are printed as *** unless --show-phi is given."""

MASK = "***"

#: NIfTI header fields that are free text (converters may put names or IDs there).
_NIFTI_TEXT_FIELDS = ("descrip", "aux_file", "db_name", "intent_name")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect", help="show how medssl reads an image file (shape, range, modality, header)",
        description="Read one DICOM/NIfTI/PNG/JPEG file with medssl's readers and print its format, "
                    "shape, dtype, value range, modality, view, spacing and photometric "
                    "interpretation; --header dumps the file header with PHI masked.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="image file (.dcm/.dicom/no suffix, .nii/.nii.gz, .png, .jpg/.jpeg)")
    p.add_argument("--header", action="store_true", help="also print the file header (DICOM elements, "
                                                         "NIfTI header fields, PNG/JPEG info)")
    p.add_argument("--show-phi", action="store_true",
                   help="print patient-identifying values instead of *** (PHI: use with care)")
    p.add_argument("--frame", type=int, default=None, help="DICOM frame / 4D NIfTI volume index (default: all)")
    p.add_argument("--window", default="voi",
                   help='"voi" (default), "none" (modality units), "center,width" or a CT preset')
    p.add_argument("--slice-axis", default=None, help="cut a slice of a volume: 0/1/2 or axial/coronal/sagittal")
    p.add_argument("--slice-index", default=None, help='slice number, "middle" or "all"')
    p.set_defaults(func=run)


def _mask(value, show_phi: bool):
    return value if show_phi or value is None else MASK


def summary_lines(path, *, frame=None, window="voi", slice_axis=None, slice_index=None,
                  show_phi: bool = False) -> list[str]:
    """The decoded image described in `key: value` lines (patient/study/series IDs masked)."""
    import numpy as np

    from medssl.io import detect_format, read_image

    if isinstance(slice_index, str) and slice_index.lstrip("-").isdigit():
        slice_index = int(slice_index)
    if isinstance(slice_axis, str) and slice_axis.isdigit():
        slice_axis = int(slice_axis)
    img = read_image(path, frame=frame, window=window, slice_axis=slice_axis, slice_index=slice_index)
    meta, px = img.meta, img.pixels
    spacing = meta.get("spacing")
    lines = [
        f"file:        {path}",
        f"format:      {meta.get('source_format') or detect_format(path)}",
        f"shape:       {tuple(px.shape)}",
        f"dtype:       {px.dtype}",
        f"range:       [{float(np.min(px)):.6g}, {float(np.max(px)):.6g}] "
        f"(mean {float(np.mean(px)):.6g}; window={window}, units={meta.get('units')})",
        f"modality:    {meta.get('modality')}",
        f"view:        {meta.get('view')}",
        f"spacing:     {tuple(round(s, 6) for s in spacing) if spacing else None}" + (" mm" if spacing else ""),
        f"photometric: {meta.get('photometric')}",
        f"patient_id:  {_mask(meta.get('patient_id'), show_phi)}",
        f"study_id:    {_mask(meta.get('study_id'), show_phi)}",
        f"series_id:   {_mask(meta.get('series_id'), show_phi)}",
    ]
    return lines


def _nifti_header_lines(path, show_phi: bool) -> list[str]:
    from medssl.io.nifti import _load

    header = _load(path).header
    lines = []
    for key in header.keys():
        value = header[key]
        if key in _NIFTI_TEXT_FIELDS and not show_phi and str(value).strip("b'\" \x00"):
            value = MASK
        lines.append(f"{key}: {value}")
    return lines


def _raster_header_lines(path, show_phi: bool) -> list[str]:
    from medssl.io.raster import _open, _open_file

    with _open_file(path) as fp, _open(path, fp) as im:
        lines = [f"format: {im.format}", f"mode: {im.mode}", f"size: {im.size[0]} x {im.size[1]} (W x H)"]
        for key, value in im.info.items():
            if isinstance(value, (bytes, bytearray)):
                value = f"<{len(value)} bytes>"
            elif isinstance(value, str) and not show_phi:
                value = MASK  # text chunks / comments are free text
            lines.append(f"{key}: {value}")
    return lines


def header_lines(path, *, show_phi: bool = False) -> list[str]:
    """The file's header as text lines, PHI masked unless show_phi."""
    from medssl.io import detect_format

    kind = detect_format(path)
    if kind == "dicom":
        from medssl.io.dicom import header_lines as dicom_header_lines

        return dicom_header_lines(path, show_phi=show_phi)
    if kind == "nifti":
        return _nifti_header_lines(path, show_phi)
    return _raster_header_lines(path, show_phi)


def _emit(lines) -> None:
    import os
    import sys

    try:
        print("\n".join(lines), flush=True)
    except BrokenPipeError:  # `medssl inspect ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def run(args) -> int:
    from medssl.errors import MedsslError

    try:
        lines = summary_lines(args.path, frame=args.frame, window=args.window, slice_axis=args.slice_axis,
                              slice_index=args.slice_index, show_phi=args.show_phi)
        error = None
    except MedsslError as e:
        if not args.header:
            raise
        reason = getattr(e, "reason", e)
        lines, error = [f"file:        {args.path}", f"pixels:      not readable ({reason})"], e
    if args.header:
        lines += ["", "header" + ("" if args.show_phi else " (PHI masked; --show-phi to reveal)") + ":"]
        lines += ["  " + line for line in header_lines(args.path, show_phi=args.show_phi)]
    _emit(lines)
    if error is not None:
        raise error
    return 0
