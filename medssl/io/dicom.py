"""DICOM reader (pydicom + pylibjpeg codecs).

Pipeline per file: parse (pixel-free when only the header is wanted) -> validate geometry and
transfer syntax -> refuse oversized declared sizes -> decode (one frame or all) -> colour to
gray (RGB/YBR luminance, PALETTE COLOR through its LUT) -> Modality LUT (slope/intercept or
LUT sequence) -> VOI LUT / window -> invert MONOCHROME1, so bright always means dense.
Common case (integer pixels, slope/intercept, LINEAR window or full range): Modality LUT,
window and inversion are one affine map applied in float32 (medssl.io.window.to_unit);
Modality/VOI LUT sequences, SIGMOID and colour go through pydicom in float64.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np

from medssl.errors import MedsslError, ReaderError
from medssl.io.image import META_KEYS, Image
from medssl.io.limits import check_declared_size, check_float32_range, open_clamped
from medssl.io.window import apply_window, parse_window, scale_full_range, scale_range, to_grayscale

log = logging.getLogger(__name__)

SUFFIXES = (".dcm", ".dicom")

#: Elements treated as PHI by `header_lines` (any PN-VR element and private text elements too).
PHI_KEYWORDS = frozenset({
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientBirthName",
    "PatientMotherBirthName", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
    "PatientAddress", "PatientTelephoneNumbers", "PatientComments", "IssuerOfPatientID",
    "MedicalRecordLocator", "MilitaryRank", "AdditionalPatientHistory", "AccessionNumber",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "ReferringPhysicianName", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord",
    "RequestingPhysician", "OperatorsName", "StationName", "DeviceSerialNumber",
    "StudyID", "RequestedProcedureID", "ScheduledProcedureStepID", "PerformedProcedureStepID",
})
_TEXT_VRS = frozenset({"AE", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UT", "UN"})

#: pip packages providing a decoder, by transfer syntax family.
_CODEC_PACKAGES = {
    "jpeg": "pylibjpeg pylibjpeg-libjpeg",
    "j2k": "pylibjpeg pylibjpeg-openjpeg",
    "rle": "pylibjpeg pylibjpeg-rle",
}

_VIEW_ALIASES = {"LL": "LATERAL", "RL": "LATERAL", "LAT": "LATERAL", "LATERAL": "LATERAL",
                 "LLD": "LATERAL", "RLD": "LATERAL", "PA": "PA", "AP": "AP"}


# ----------------------------------------------------------------------------- parsing
def is_dicom(path) -> bool:
    """True when the file carries the DICOM preamble ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _read_dataset(path, *, stop_before_pixels: bool = False):
    """Parse the file (all in memory, file closed on return). Raises ReaderError."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        fp = open_clamped(path)  # a corrupt element length must not allocate gigabytes
    except OSError as e:
        raise ReaderError(path, f"cannot open: {e.strerror or e}; check the path and permissions") from None
    with fp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(fp, stop_before_pixels=stop_before_pixels)
        except InvalidDicomError:
            # No preamble/file meta (old ACR-NEMA style exports): parse it anyway, then
            # insist on image elements so random bytes are not taken for a DICOM file.
            fp.seek(0)
            ds = pydicom.dcmread(fp, stop_before_pixels=stop_before_pixels, force=True)
            _require_image_elements(path, ds)
        _default_transfer_syntax(ds)
    for w in caught:
        log.debug("%s: pydicom: %s", path, w.message)
    return ds


def _require_image_elements(path, ds) -> None:
    """A file parsed with force=True must at least look like an image, or it is not DICOM."""
    markers = (0x00280010, 0x00280011, 0x7FE00010, 0x00080016, 0x00080060, 0x0020000D)
    if not any(tag in ds for tag in markers):
        raise ReaderError(path, "not a DICOM file (no 'DICM' preamble and no image elements); "
                                "check the path, or convert the file to DICOM/NIfTI/PNG")


def _default_transfer_syntax(ds) -> None:
    """Files without file meta (ACR-NEMA style exports): take the encoding the parser detected."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None and file_meta.get("TransferSyntaxUID"):
        return
    implicit, little = ds.original_encoding
    if implicit is None:
        return
    if not little:
        uid = ExplicitVRBigEndian
    else:
        uid = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    if file_meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid


# ----------------------------------------------------------------------------- metadata
def _text(ds, keyword: str) -> str | None:
    try:
        value = ds.get(keyword)
    except Exception:
        return None
    if value is None:
        return None
    text = str(value).strip().strip("\x00").strip()
    return text or None


def _view(ds) -> str | None:
    view = _text(ds, "ViewPosition")
    if view:
        return _VIEW_ALIASES.get(view.upper(), view.upper())
    try:
        meaning = str(ds.ViewCodeSequence[0].CodeMeaning).lower()
    except Exception:
        return None
    if "lateral" in meaning:
        return "LATERAL"
    if meaning.startswith("postero-anterior") or meaning.startswith("posterior-anterior"):
        return "PA"
    if meaning.startswith("antero-posterior") or meaning.startswith("anterior-posterior"):
        return "AP"
    return meaning.upper() or None


def _floats(value, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in (value if hasattr(value, "__len__") and not isinstance(value, str)
                                       else [value]))
    except (TypeError, ValueError):
        return None
    if len(out) != n or not all(math.isfinite(v) and v > 0 for v in out):
        return None
    return out


def _pixel_spacing(ds) -> tuple[float, float] | None:
    """(row, col) spacing in mm from PixelSpacing, ImagerPixelSpacing or the enhanced-MF groups."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            spacing = _floats(ds.get(keyword), 2)
        except Exception:
            spacing = None
        if spacing:
            return spacing
    try:
        measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        return _floats(measures.PixelSpacing, 2)
    except Exception:
        return None


def _slice_spacing(ds) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = _floats(ds.get(keyword), 1)
        except Exception:
            value = None
        if value:
            return value[0]
    return float("nan")


def _spacing(ds, ndim: int):
    """Spacing per pixel axis in mm; for volumes the slice axis is NaN when the file does not say."""
    rc = _pixel_spacing(ds)
    if rc is None:
        return None
    return (_slice_spacing(ds), *rc) if ndim == 3 else rc


def dicom_meta(ds) -> dict:
    """META_KEYS from a parsed dataset (every key present, None when absent or unreadable)."""
    meta = dict.fromkeys(META_KEYS)
    modality = _text(ds, "Modality")
    meta.update(
        patient_id=_text(ds, "PatientID"),
        study_id=_text(ds, "StudyInstanceUID"),
        series_id=_text(ds, "SeriesInstanceUID"),
        view=_view(ds),
        modality=modality.upper() if modality else None,
        spacing=_spacing(ds, 2),
        photometric=_text(ds, "PhotometricInterpretation"),
        source_format="dicom",
    )
    return meta


# ----------------------------------------------------------------------------- geometry
def _int(path, ds, keyword: str, default: int | None = None) -> int:
    try:
        value = ds.get(keyword)
    except Exception as e:
        raise ReaderError(path, f"{keyword} is unreadable ({e}); the header is corrupt") from None
    if value is None or value == "":
        if default is not None:
            return default
        raise ReaderError(path, f"missing {keyword} (0028,xxxx) element required to decode pixels; "
                                "the file is incomplete or not an image")
    try:
        return int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise ReaderError(path, f"{keyword} = {value!r} is not an integer; the header is corrupt") from None


def _geometry(path, ds) -> tuple[int, int, int, int, int]:
    """(rows, cols, frames, samples_per_pixel, bits_allocated), validated."""
    if not any(t in ds for t in (0x7FE00010, 0x7FE00008, 0x7FE00009)):
        what = _text(ds, "Modality") or "non-image"
        raise ReaderError(path, f"no PixelData element (7FE0,0010): this is a {what} object without an "
                                "image (e.g. a plan, report or structure set); leave it out of the image list")
    rows, cols = _int(path, ds, "Rows"), _int(path, ds, "Columns")
    frames = _int(path, ds, "NumberOfFrames", default=1)
    spp = _int(path, ds, "SamplesPerPixel", default=1)
    bits = _int(path, ds, "BitsAllocated")
    if spp not in (1, 3):
        raise ReaderError(path, f"SamplesPerPixel = {spp}; only 1 (gray) or 3 (colour) are supported")
    if bits not in (1, 8, 16, 32, 64):
        raise ReaderError(path, f"BitsAllocated = {bits}; expected 1, 8, 16, 32 or 64 (corrupt header)")
    if rows < 1 or cols < 1 or frames < 1:
        raise ReaderError(path, f"header declares Rows={rows}, Columns={cols}, NumberOfFrames={frames}; "
                                "all must be >= 1 (corrupt header)")
    return rows, cols, frames, spp, bits


def _shape(ds) -> tuple[int, ...] | None:
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
    except Exception:
        return None
    return (frames, rows, cols) if frames > 1 else (rows, cols)


def _check_transfer_syntax(path, ds):
    """Return the transfer syntax UID after checking pydicom can decode it (else ReaderError)."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    try:
        value = ds.file_meta.get("TransferSyntaxUID")
    except Exception:
        value = None
    if not value:
        raise ReaderError(path, "file meta has no TransferSyntaxUID (0002,0010); re-export the file with a "
                                "DICOM-conformant tool (e.g. `gdcmconv --raw`)")
    uid = UID(str(value).strip())
    known = not uid.is_private and uid.is_transfer_syntax
    if not known:
        raise ReaderError(path, f"unknown transfer syntax UID {str(uid)!r}; the header is corrupt or the "
                                "encoding is proprietary: convert the file to an uncompressed transfer syntax "
                                "(e.g. `gdcmconv --raw in.dcm out.dcm` or `dcmdjpeg`)")
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise ReaderError(path, f"transfer syntax {uid} ({uid.name}) has no pixel decoder in pydicom "
                                "(video/JPIP/unsupported); convert it to an uncompressed or JPEG 2000 transfer "
                                "syntax, e.g. `gdcmconv --raw in.dcm out.dcm`") from None
    if not decoder.is_available:
        family = "rle" if uid == "1.2.840.10008.1.2.5" else \
            "j2k" if ("2000" in uid.name or "J2K" in uid.name) else "jpeg"
        missing = "; ".join(decoder.missing_dependencies)
        raise ReaderError(path, f"transfer syntax {uid} ({uid.name}) needs a codec that is not installed: "
                                f"`pip install {_CODEC_PACKAGES[family]}` ({missing})")
    return uid


# ----------------------------------------------------------------------------- intensities
def _stored_range(ds) -> tuple[float, float]:
    bits = int(ds.get("BitsStored") or ds.BitsAllocated)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0 ** bits - 1


def _modality_range(ds, values: np.ndarray) -> tuple[float, float]:
    """Declared output range of the Modality LUT (falls back to the data's own range)."""
    try:
        if ds.get("ModalityLUTSequence"):
            return 0.0, 2.0 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
        lo, hi = _stored_range(ds)
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        a, b = lo * slope + intercept, hi * slope + intercept
        if math.isfinite(a) and math.isfinite(b) and a != b:
            return min(a, b), max(a, b)
    except Exception:
        pass
    return float(values.min()), float(values.max())


def _linear_rescale(ds, arr: np.ndarray) -> tuple[float, float] | None:
    """(slope, intercept) of a linear Modality LUT on integer pixels, or None (use pydicom's).

    Mirrors pydicom's apply_modality_lut: a Modality LUT Sequence wins, else RescaleSlope
    and RescaleIntercept when both are present, else identity. None too when the values
    would not be finite, so pydicom's path reports the problem.
    """
    if arr.dtype.kind not in "iu" or ds.get("ModalityLUTSequence"):
        return None
    if "RescaleSlope" not in ds or "RescaleIntercept" not in ds:
        return 1.0, 0.0
    try:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    except Exception:
        return None
    info = np.iinfo(arr.dtype)
    ends = (info.min * slope + intercept, info.max * slope + intercept)
    return (slope, intercept) if all(math.isfinite(v) for v in ends) else None


def _file_voi(path, ds, values: np.ndarray, slope: float = 1.0, intercept: float = 0.0,
              invert: bool = False) -> np.ndarray:
    """The file's own VOI -> [0, 1] (1 - that when invert) of modality units values * slope + intercept.

    VOI LUT Sequence, else Window Center/Width, else the full range.
    """
    from pydicom.pixels import apply_voi

    if ds.get("VOILUTSequence"):
        try:
            depth = int(ds.VOILUTSequence[0].LUTDescriptor[2])
            modality = np.asarray(values, dtype=np.float64) * slope + intercept
            out = apply_voi(np.rint(modality).astype(np.int64), ds)
            return scale_range(out, 0.0, 2.0 ** depth - 1, invert=invert)
        except Exception as e:  # a broken LUT should not cost the image: use the window/range
            log.warning("%s: VOI LUT Sequence unusable (%s); using the window or the full range", path, e)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            center = ds["WindowCenter"].value
            width = ds["WindowWidth"].value
            center = float(center[0] if ds["WindowCenter"].VM > 1 else center)
            width = float(width[0] if ds["WindowWidth"].VM > 1 else width)
            function = (_text(ds, "VOILUTFunction") or "LINEAR").upper()
            return apply_window(values, center, width, function, slope=slope, intercept=intercept, invert=invert)
        except Exception as e:
            log.warning("%s: Window Center/Width unusable (%s); scaling the full range", path, e)
    return scale_full_range(values, slope=slope, invert=invert)


# ----------------------------------------------------------------------------- reading
def read_dicom(path, *, frame: int | None = None, window="voi", max_pixels: int | None = None) -> Image:
    """Decode a DICOM file to an Image: (H, W), or (F, H, W) for multi-frame with frame=None.

    See medssl.io.read_image for the window contract. Raises ReaderError/ImageTooLargeError.
    """
    spec = parse_window(window)
    try:
        return _read_dicom(path, frame, spec, max_pixels)
    except (MedsslError, MemoryError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # also a Rust codec's panic (pyo3 PanicException is a BaseException)
        raise ReaderError(path, f"cannot decode DICOM ({type(e).__name__}: {e}); the file is corrupt or "
                                "truncated: re-export or copy it again") from None


def _read_dicom(path, frame, spec, max_pixels) -> Image:
    from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array

    ds = _read_dataset(path)
    rows, cols, frames, spp, bits = _geometry(path, ds)
    uid = _check_transfer_syntax(path, ds)
    if frame is not None:
        frame = int(frame)
        if not 0 <= frame < frames:
            raise ReaderError(path, f"frame {frame} out of range: the file has {frames} frame(s) "
                                    f"(0..{frames - 1})")
    check_declared_size(path, (frames if frame is None else 1, rows, cols, spp), max_pixels,
                        what="frames x rows x columns x samples")
    if not uid.is_compressed and 0x7FE00010 in ds:
        # YBR_FULL_422 stores 2 samples per pixel on average (chroma subsampled)
        samples = 2 if (_text(ds, "PhotometricInterpretation") or "").upper() == "YBR_FULL_422" else spp
        expected = (rows * cols * frames * samples * bits + 7) // 8
        got = len(ds.PixelData or b"")
        if got < expected:
            raise ReaderError(path, f"pixel data is truncated: {got} of {expected} bytes; the file was cut "
                                    "short (incomplete copy or download): copy it again")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arr = pixel_array(ds, index=frame)
    for w in caught:
        log.debug("%s: pydicom: %s", path, w.message)

    photometric = (_text(ds, "PhotometricInterpretation") or "").upper()
    color = spp == 3 or photometric == "PALETTE COLOR"
    slope, intercept = 1.0, 0.0   # Modality LUT still to apply to `values` (fast path only)
    rescale = None if color else _linear_rescale(ds, arr)
    if rescale is not None and spec != "none":
        values, full = arr, None   # stored integers: finite; the rescale folds into the window map
        slope, intercept = rescale
    elif spp == 3:  # pydicom already converted YBR_* to RGB
        values = to_grayscale(arr)
        full = 2.0 ** int(ds.get("BitsStored") or bits) - 1
    elif photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        values = to_grayscale(rgb)
        full = float(np.iinfo(rgb.dtype).max) if rgb.dtype.kind in "ui" else float(values.max())
    else:
        values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
        full = None
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ReaderError(path, "pixel values contain NaN/Inf after the Modality LUT (corrupt float pixel "
                                "data or RescaleSlope/Intercept); fix or re-export the file")

    invert = photometric == "MONOCHROME1"
    if (_text(ds, "PresentationLUTShape") or "").upper() == "INVERSE" and not color:
        invert = not invert
    meta = dicom_meta(ds)
    meta["spacing"] = _spacing(ds, values.ndim)
    if spec == "none":
        check_float32_range(path, values)
        if invert:  # reflect inside the declared range, so bright = dense in the same units
            lo, hi = _modality_range(ds, values)
            values = lo + hi - values
        meta["units"] = "HU" if meta["modality"] == "CT" and not color else "raw"
        return Image(values.astype(np.float32), meta)
    if spec == "voi":
        out = scale_range(values, 0.0, full, invert=invert) if color else \
            _file_voi(path, ds, values, slope, intercept, invert)
    else:
        out = apply_window(values, *spec, slope=slope, intercept=intercept, invert=invert)
    meta["units"] = "unit"
    return Image(out.astype(np.float32, copy=False), meta)


def read_dicom_header(path) -> dict:
    """META_KEYS plus `shape` ((H, W) or (F, H, W), None when unknown) without decoding pixels."""
    try:
        ds = _read_dataset(path, stop_before_pixels=True)
        meta = dicom_meta(ds)
        shape = _shape(ds)
        if shape is not None and len(shape) == 3:
            meta["spacing"] = _spacing(ds, 3)
    except (MedsslError, MemoryError):
        raise
    except Exception as e:
        raise ReaderError(path, f"cannot parse DICOM header ({type(e).__name__}: {e}); the file is corrupt "
                                "or truncated") from None
    meta["shape"] = shape
    return meta


# ----------------------------------------------------------------------------- header dump
def is_phi_element(elem) -> bool:
    """True for elements that can identify a patient: PHI_KEYWORDS, any PN, private text."""
    if elem.keyword in PHI_KEYWORDS or elem.VR == "PN":
        return True
    return elem.tag.is_private and elem.VR in _TEXT_VRS


def _format_value(elem, limit: int = 96) -> str:
    try:
        value = elem.value
    except Exception as e:
        return f"<unreadable: {e}>"
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dataset_lines(ds, show_phi: bool, depth: int) -> list[str]:
    lines = []
    pad = "  " * depth
    for elem in ds:
        name = elem.keyword or elem.name
        head = f"{pad}{elem.tag} {elem.VR} {name}"
        if not show_phi and is_phi_element(elem):
            lines.append(f"{head}: ***")
        elif elem.VR == "SQ":
            items = elem.value or []
            lines.append(f"{head}: {len(items)} item(s)")
            for i, item in enumerate(items):
                lines.append(f"{pad}  item {i}:")
                lines.extend(_dataset_lines(item, show_phi, depth + 2))
        else:
            lines.append(f"{head}: {_format_value(elem)}")
    return lines


def header_lines(path, *, show_phi: bool = False) -> list[str]:
    """The file meta and dataset (pixels not read) as text lines, PHI masked as *** unless show_phi."""
    try:
        ds = _read_dataset(path, stop_before_pixels=True)
        lines = []
        if getattr(ds, "file_meta", None):
            lines.append("# file meta")
            lines.extend(_dataset_lines(ds.file_meta, show_phi, 0))
            lines.append("# dataset")
        lines.extend(_dataset_lines(ds, show_phi, 0))
        return lines
    except (MedsslError, MemoryError):
        raise
    except Exception as e:
        raise ReaderError(path, f"cannot parse DICOM header ({type(e).__name__}: {e})") from None
