"""Reader fuzzing engine: mutate real DICOM/NIfTI/PNG files, read them, classify the outcome.

Every case must end in an Image or a MedsslError: any other exception, a MemoryError (the
size limit failed), a case slower than CASE_SECONDS or a worker that hangs is a defect.
Case i is fully determined by (seed, i), so a failure reproduces with
    .venv/bin/python -m tests.io.fuzzing --case 1234 [--seed 0]
Used by tests/io/test_fuzz.py (MEDSSL_FUZZ_CASES cases; `make fuzz` runs 50000).
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import struct
import tempfile
import time
import traceback
import warnings
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

#: Limit passed to the readers: mutated headers may declare anything, decoding stays small.
MAX_PIXELS = 2**22
#: A single case slower than this is reported (a hang is caught by the parent's timeout).
CASE_SECONDS = 5.0
#: Address space a worker may add on top of its start size (catches huge allocations).
EXTRA_ADDRESS_SPACE = 2 * 2**30

DICOM_SOURCES = ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
                 "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "CT_small.dcm", "rtdose.dcm",
                 "rtdose_rle.dcm", "SC_rgb_rle.dcm", "SC_rgb_small_odd_jpeg.dcm", "JPEGLSNearLossless_16.dcm")
NIFTI_SOURCES = ("standard.nii.gz", "anatomical.nii", "example_nifti2.nii.gz")

_SOURCES: dict[str, tuple[bytes, str]] = {}


def _load_sources() -> dict[str, tuple[bytes, str]]:
    """name -> (raw bytes, suffix); uncompressed NIfTI bytes so header fields can be edited."""
    if _SOURCES:
        return _SOURCES
    import gzip

    import nibabel
    import pydicom
    from PIL import Image as PILImage

    dicom_dir = Path(pydicom.__file__).parent / "data" / "test_files"
    for name in DICOM_SOURCES:
        _SOURCES[name] = ((dicom_dir / name).read_bytes(), ".dcm")
    nifti_dir = Path(nibabel.__file__).parent / "tests" / "data"
    for name in NIFTI_SOURCES:
        raw = (nifti_dir / name).read_bytes()
        _SOURCES[name] = (gzip.decompress(raw) if name.endswith(".gz") else raw, ".nii")
    ds = pydicom.dcmread(dicom_dir / "MR_small.dcm")
    gray = (ds.pixel_array.astype(np.int32) - ds.pixel_array.min()).astype(np.uint16)
    for mode, arr in (("png16", gray), ("png8", (gray >> 4).astype(np.uint8))):
        buf = io.BytesIO()
        PILImage.fromarray(arr).save(buf, format="PNG")
        _SOURCES[mode] = (buf.getvalue(), ".png")
    return _SOURCES


# ----------------------------------------------------------------------------- DICOM mutations
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def _dicom_elements(raw: bytes) -> list[tuple[int, int, int]]:
    """(offset, length field offset, length field size) of the file meta and top-level elements
    of little-endian files, found by walking the byte stream (no pydicom, so offsets are exact)."""
    out = []
    if raw[128:132] != b"DICM":
        return out
    pos, explicit = 132, True
    meta_end = None
    while pos + 8 <= len(raw):
        group, _ = struct.unpack_from("<HH", raw, pos)
        if meta_end is None and group != 2:
            meta_end = pos
            ts = raw[:pos].split(b"1.2.840.10008.1.2")
            explicit = not (len(ts) > 1 and ts[-1][:1] in (b"\x00", b" "))  # "...1.2" alone = implicit
        vr = raw[pos + 4:pos + 6]
        if explicit and vr.isalpha() and vr.isupper():
            if vr in _LONG_VRS:
                lpos, lsize, head = pos + 8, 4, 12
            else:
                lpos, lsize, head = pos + 6, 2, 8
        else:
            lpos, lsize, head = pos + 4, 4, 8
        if lpos + lsize > len(raw):
            break
        length = int.from_bytes(raw[lpos:lpos + lsize], "little")
        out.append((pos, lpos, lsize))
        if length == 0xFFFFFFFF:
            break  # undefined length (sequence/encapsulated pixels): stop the walk here
        pos += head + length
    return out


def _flip_bytes(rng, raw: bytearray, start: int = 0) -> None:
    if len(raw) <= start:
        return
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(start, len(raw)))
        raw[i] ^= int(rng.integers(1, 256))


def _bad_length(rng, raw: bytearray) -> None:
    elements = _dicom_elements(bytes(raw))
    if not elements:
        return _flip_bytes(rng, raw)
    _, lpos, lsize = elements[int(rng.integers(len(elements)))]
    old = int.from_bytes(raw[lpos:lpos + lsize], "little")
    top = 2 ** (8 * lsize) - 1
    choice = [0, 1, old + 1, max(old - 1, 0), old * 2 + 7, top, top - 1, int(rng.integers(0, top))]
    raw[lpos:lpos + lsize] = (choice[int(rng.integers(len(choice)))] & top).to_bytes(lsize, "little")


def _bogus_transfer_syntax(rng, raw: bytearray) -> bytes:
    i = raw.find(b"\x02\x00\x10\x00UI")
    if i < 0:
        return bytes(raw)
    n = int.from_bytes(raw[i + 6:i + 8], "little")
    options = [b"1.2.3.4.5.6.7.8", b"1.2.840.10008.1.2.4.100", b"1.2.840.10008.1.2.4.50", b"1.2.840.10008.1.2.5",
               b"1.2.840.10008.1.2", b"1.2.840.10008.1.2.2", b"1.2.840.10008.1.2.4.90", b"\xff\xfe garbage",
               b"", b"1.2.840.10008.1.2.1.99"]
    new = options[int(rng.integers(len(options)))]
    if len(new) % 2:
        new += b"\x00"
    # keep the meta group length consistent half of the time, so parsing reaches the pixels
    out = bytes(raw[:i + 6]) + len(new).to_bytes(2, "little") + new + bytes(raw[i + 8 + n:])
    if rng.random() < 0.5 and out[132:136] == b"\x02\x00\x00\x00":
        glen = int.from_bytes(out[140:144], "little") + len(new) - n
        out = out[:140] + glen.to_bytes(4, "little") + out[144:]
    return out


_HEADER_EDITS = {
    "Rows": [0, 1, 65535, 3, 64000], "Columns": [0, 1, 65535, 7, 64000],
    "NumberOfFrames": ["1000000000", "-5", "abc", "0", "99999", "2"],
    "BitsAllocated": [0, 1, 7, 12, 48, 64], "BitsStored": [0, 17, 40, 1],
    "HighBit": [31, 0], "SamplesPerPixel": [0, 2, 4, 3, 1], "PixelRepresentation": [2, 1, 0],
    "PhotometricInterpretation": ["MONOCHROME1", "RGB", "YBR_FULL_422", "PALETTE COLOR", "FOO", ""],
    "PlanarConfiguration": [0, 1, 5], "RescaleSlope": ["abc", "1e300", "0", "nan", "-1", "1e-300"],
    "RescaleIntercept": ["inf", "-1e308", "x"], "WindowCenter": ["nan", "1e308", "40", "q"],
    "WindowWidth": ["0", "-1", "nan", "0.5", "1e-9"], "VOILUTFunction": ["SIGMOID", "FOO", "LINEAR_EXACT"],
    "PixelSpacing": [["0", "0"], ["a", "b"], ["1"]], "PresentationLUTShape": ["INVERSE", "???"],
}


def _edit_header(rng, raw: bytes) -> bytes:
    """Semantic edits through pydicom (values any file could carry), written back to bytes."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(io.BytesIO(raw))
        except Exception:
            return raw
        keys = sorted(_HEADER_EDITS)
        for _ in range(int(rng.integers(1, 4))):
            key = keys[int(rng.integers(len(keys)))]
            values = _HEADER_EDITS[key]
            value = values[int(rng.integers(len(values)))]
            try:
                setattr(ds, key, value)
            except Exception:
                pass
        if rng.random() < 0.05 and "PixelData" in ds:
            del ds.PixelData
        buf = io.BytesIO()
        try:
            ds.save_as(buf, enforce_file_format=False)
        except Exception:
            return raw
    return buf.getvalue()


def mutate_dicom(rng, raw: bytes) -> bytes:
    out = bytearray(raw)
    for _ in range(int(rng.integers(1, 3))):
        try:
            out = _dicom_edit(rng, out)
        except (ValueError, OverflowError, IndexError, struct.error):
            pass  # an edit that does not apply to this (already mutated) file
        if not out:
            break
    return bytes(out)


def _dicom_edit(rng, out: bytearray) -> bytearray:
    """One random edit: byte flips, truncation, element length, transfer syntax, header values."""
    kind = int(rng.integers(6))
    if kind == 0:
        _flip_bytes(rng, out, start=128)
    elif kind == 1:  # truncation, half of the time inside the last 10% (the pixel data)
        low = int(len(out) * 0.9) if rng.random() < 0.5 else 0
        out = out[: int(rng.integers(low, len(out)))]
    elif kind == 2:
        _bad_length(rng, out)
    elif kind == 3:
        out = bytearray(_bogus_transfer_syntax(rng, out))
    else:
        out = bytearray(_edit_header(rng, bytes(out)))
    return out


# ----------------------------------------------------------------------------- NIfTI mutations
def mutate_nifti(rng, raw: bytes) -> bytes:
    import nibabel as nib

    nifti2 = raw[4:8] == b"n+2\x00" or struct.unpack("<i", raw[:4])[0] == 540 or struct.unpack(">i", raw[:4])[0] == 540
    dtype = (nib.nifti2 if nifti2 else nib.nifti1).header_dtype
    size = dtype.itemsize
    if struct.unpack("<i", raw[:4])[0] != size:
        dtype = dtype.newbyteorder(">")
    hdr = np.frombuffer(raw[:size], dtype=dtype).copy()
    body = bytearray(raw[size:])
    for _ in range(int(rng.integers(1, 4))):
        try:
            hdr, body = _nifti_edit(rng, hdr, body, dtype, nifti2)
        except (ValueError, OverflowError):  # value not representable in that field (NIfTI-2 ints)
            pass
    out = hdr.tobytes() + bytes(body)
    if rng.random() < 0.3:  # as .nii.gz, sometimes cut mid-stream
        packed = zlib.compressobj(wbits=31)
        gz = packed.compress(out) + packed.flush()
        return gz[: int(rng.integers(10, len(gz) + 1))] if rng.random() < 0.3 else gz
    return out


def _nifti_edit(rng, hdr, body, dtype, nifti2):
    """One random header/body edit: dims, datatype, vox_offset, scaling, geometry, magic, bytes."""
    kind = int(rng.integers(9))
    if kind == 0:  # dims
        dim = hdr["dim"][0].copy()
        i = int(rng.integers(0, 8))
        big = 2**40 if nifti2 else 32767
        dim[i] = [0, -1, 1, 7, 9, big, int(rng.integers(-5, 300))][int(rng.integers(7))]
        hdr["dim"][0] = dim
    elif kind == 1:  # datatype / bitpix
        hdr["datatype"] = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048,
                           2304, 9999, -4][int(rng.integers(20))]
        if rng.random() < 0.5:
            hdr["bitpix"] = [0, 1, 8, 13, 16, 64, 255][int(rng.integers(7))]
    elif kind == 2:  # vox_offset
        hdr["vox_offset"] = [0, 1, 352 + 16, -352, 1e9, 2**31, float("nan"), 353][int(rng.integers(8))]
    elif kind == 3:  # scaling
        hdr["scl_slope"] = [float("nan"), float("inf"), 0.0, -1e38, 1e38, 1e-30][int(rng.integers(6))]
        hdr["scl_inter"] = [0.0, float("nan"), 1e38, float("-inf")][int(rng.integers(4))]
    elif kind == 4:  # geometry
        field = ["pixdim", "srow_x", "quatern_b", "qform_code", "sform_code"][int(rng.integers(5))]
        value = [float("nan"), 0.0, -3.0, 1e30, 5][int(rng.integers(5))]
        if hdr[field].ndim > 1:
            hdr[field][0][int(rng.integers(hdr[field].shape[1]))] = value
        else:
            hdr[field] = value
    elif kind == 5:  # cal range / magic / sizeof_hdr
        field = ["cal_min", "cal_max", "magic", "sizeof_hdr"][int(rng.integers(4))]
        hdr[field] = {"magic": b"n+9", "sizeof_hdr": 12345}.get(field, float("nan"))
    elif kind == 6:
        head = bytearray(hdr.tobytes())
        _flip_bytes(rng, head)
        hdr = np.frombuffer(bytes(head), dtype=dtype).copy()
    elif kind == 7:
        body = body[: int(rng.integers(0, len(body) + 1))]
    else:
        if body:
            _flip_bytes(rng, body)
    return hdr, body


def mutate_png(rng, raw: bytes) -> bytes:
    out = bytearray(raw)
    kind = int(rng.integers(3))
    if kind == 0:
        _flip_bytes(rng, out, start=8)
    elif kind == 1:
        out = out[: int(rng.integers(0, len(out)))]
    else:  # IHDR dimensions (valid CRC, so the header is believed)
        w, h = [(0, 5), (65535, 65535), (1, 2**31 - 1), (64, 64000), (3, 3)][int(rng.integers(5))]
        ihdr = struct.pack(">II", w, h) + bytes(out[24:29])
        out[16:29] = ihdr
        out[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(out)


# ----------------------------------------------------------------------------- running cases
def make_case(seed: int, index: int) -> tuple[str, bytes, str, dict]:
    """(source name, mutated bytes, suffix, read_image kwargs) of case `index`."""
    sources = _load_sources()
    rng = np.random.default_rng([seed, index])
    names = sorted(sources)
    name = names[int(rng.integers(len(names)))]
    raw, suffix = sources[name]
    if suffix == ".dcm":
        data = mutate_dicom(rng, raw)
    elif suffix == ".nii":
        data = mutate_nifti(rng, raw)
        if data[:2] == b"\x1f\x8b":
            suffix = ".nii.gz"
    else:
        data = mutate_png(rng, raw)
    kwargs = {"max_pixels": MAX_PIXELS,
              "window": ["voi", "none", "lung", (40.0, 400.0)][int(rng.integers(4))],
              "frame": [None, None, None, None, 0, 1][int(rng.integers(6))]}
    return name, data, suffix, kwargs


def _reason(error) -> str:
    """A short, number-free category of an error message, for the outcome table."""
    import re

    text = getattr(error, "reason", str(error))
    text = re.split(r"[(:;]", text, maxsplit=1)[0]
    return re.sub(r"'[^']*'|[0-9][0-9,.x ]*", "#", text).strip()[:60]


def run_case(seed: int, index: int, workdir: str) -> tuple[str, float, str]:
    """Run one case: (outcome, seconds, detail). outcome: "image", an error class name, or
    "UNEXPECTED ..." for anything that is not a MedsslError."""
    from medssl.errors import MedsslError
    from medssl.io import read_header, read_image

    name, data, suffix, kwargs = make_case(seed, index)
    path = os.path.join(workdir, f"case{suffix}")
    with open(path, "wb") as f:
        f.write(data)
    start = time.perf_counter()
    outcome, detail = "image", ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                read_header(path)
            except MedsslError:
                pass
            img = read_image(path, **kwargs)
        assert img.pixels.dtype == np.float32 and img.pixels.ndim in (2, 3), img.pixels.shape
        if kwargs["window"] != "none":
            assert np.isfinite(img.pixels).all() and img.pixels.min() >= 0 and img.pixels.max() <= 1
    except MedsslError as e:
        outcome = type(e).__name__
        detail = _reason(e)
    except BaseException as e:  # noqa: BLE001 - this is exactly what the fuzzer hunts
        outcome = f"UNEXPECTED {type(e).__name__}"
        detail = f"case {index} ({name}, {kwargs}): {e!r}\n{traceback.format_exc(limit=6)}"
    return outcome, time.perf_counter() - start, detail


_WORKDIR: str | None = None
#: Peak RSS of a worker right after its set-up, in MB: what the cases add is measured above it
#  (the baseline depends on what the parent process had imported, e.g. torch under pytest-xdist).
_BASELINE_MB = 0.0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _init_worker(root: str | None = None) -> None:
    """Per worker: a private temp dir and an address-space cap (a huge allocation becomes MemoryError)."""
    global _WORKDIR, _BASELINE_MB
    import logging

    _WORKDIR = tempfile.mkdtemp(prefix="worker-", dir=root)
    logging.disable(logging.WARNING)  # readers warn about unusable windows etc.: expected here
    os.environ["RUST_BACKTRACE"] = "0"  # a panicking Rust codec (caught as ReaderError) prints less
    _load_sources()
    _BASELINE_MB = _peak_rss_mb()
    try:
        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + EXTRA_ADDRESS_SPACE, resource.RLIM_INFINITY))
    except (OSError, ValueError, StopIteration):
        pass


def run_chunk(args: tuple[int, int, int]) -> dict:
    """Run cases [start, stop) in a worker; returns counts, slowest case and unexpected details."""
    seed, start, stop = args
    counts: Counter = Counter()
    reasons: Counter = Counter()
    slowest, problems = (0.0, -1), []
    for index in range(start, stop):
        outcome, seconds, detail = run_case(seed, index, _WORKDIR)
        counts[outcome] += 1
        if not outcome.startswith("UNEXPECTED") and detail:
            reasons[f"{outcome}: {detail}"] += 1
        slowest = max(slowest, (seconds, index))
        if outcome.startswith("UNEXPECTED") or seconds > CASE_SECONDS:
            problems.append(f"{outcome} in {seconds:.1f}s: {detail}")
    rss_mb = _peak_rss_mb() - _BASELINE_MB
    return {"counts": counts, "reasons": reasons, "slowest": slowest, "problems": problems, "rss_mb": rss_mb,
            "range": (start, stop)}


def campaign(cases: int, seed: int = 0, workers: int = 2, chunk: int = 50, chunk_timeout: float = 120.0) -> dict:
    """Run `cases` cases in a spawn pool. A chunk that does not finish in chunk_timeout is a hang."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    chunks = [(seed, s, min(s + chunk, cases)) for s in range(0, cases, chunk)]
    counts: Counter = Counter()
    reasons: Counter = Counter()
    problems, slowest, rss, done = [], (0.0, -1), 0.0, set()
    start = time.perf_counter()
    root = tempfile.TemporaryDirectory(prefix="medssl-fuzz-")
    pool = ctx.Pool(workers, initializer=_init_worker, initargs=(root.name,))
    try:
        results = pool.imap_unordered(run_chunk, chunks)
        for _ in chunks:
            try:
                r = results.next(timeout=chunk_timeout)
            except mp.TimeoutError:
                missing = [c[1:] for c in chunks if c[1:] not in done]
                problems.append(f"HANG: no chunk finished within {chunk_timeout:.0f}s; unfinished case "
                                f"ranges {missing[:workers * 2]} (rerun single cases with --case)")
                break
            done.add(tuple(r["range"]))
            counts.update(r["counts"])
            reasons.update(r["reasons"])
            problems.extend(r["problems"])
            slowest = max(slowest, tuple(r["slowest"]))
            rss = max(rss, r["rss_mb"])
    finally:
        pool.terminate()
        pool.join()
        root.cleanup()
    return {"cases": cases, "seed": seed, "completed": sum(counts.values()),
            "seconds": round(time.perf_counter() - start, 2), "outcomes": dict(counts.most_common()),
            "top_error_reasons": dict(reasons.most_common(15)),
            "slowest_case": {"seconds": round(slowest[0], 3), "index": slowest[1]},
            "max_worker_rss_growth_mb": round(rss, 1), "problems": problems}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="medssl reader fuzzer (see module docstring)")
    parser.add_argument("--cases", type=int, default=int(os.environ.get("MEDSSL_FUZZ_CASES", 2400)))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case", type=int, default=None, help="run one case in this process and print it")
    args = parser.parse_args(argv)
    if args.case is not None:
        with tempfile.TemporaryDirectory() as d:
            name, _, suffix, kwargs = make_case(args.seed, args.case)
            outcome, seconds, detail = run_case(args.seed, args.case, d)
            print(f"case {args.case}: source {name} ({suffix}), {kwargs}: {outcome} in {seconds:.3f}s\n{detail}")
        return 0
    import json

    print(json.dumps(campaign(args.cases, args.seed), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
