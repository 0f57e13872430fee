"""Audit artefacts for patient identifiers: find known PHI strings in any file medssl wrote.

`scan_tree(root, needles)` looks for each needle (a patient name, raw ID, accession number, birth
date...) in every file under `root`: in its raw bytes and in the text that containers hide from a
plain byte search - gzip/bz2/xz streams, zip members (torch .pt/.ckpt, .npz), Parquet columns
(compressed pages) and PNG text chunks (zTXt/iTXt) - each searched as UTF-8, UTF-16 and UTF-32,
ignoring ASCII case. Hits report the file, the layer and the needle's index, never its value.

The DICOM elements that count as PHI are `medssl.io.dicom.PHI_KEYWORDS` (used by `medssl inspect`).
A site can audit a run folder before sharing it:
    python -m medssl.phi RUN_DIR --needles-file identifiers.txt     # exit 1 when anything is found
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import lzma
import os
import struct
import sys
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Encodings a needle is searched in (BOM-less forms, as they sit inside other data).
ENCODINGS = ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")
#: Files larger than this are scanned on their raw bytes only (chunked), not decoded.
MAX_DECODE_BYTES = 512 << 20
#: Decompressed layers are cut at this size (a decompression bomb never exhausts memory).
MAX_INFLATED_BYTES = 1 << 30
_CHUNK = 16 << 20
_MAX_DEPTH = 3


@dataclass(frozen=True)
class Hit:
    """Needle number `needle` (index into the needles given) found in `path` at `layer` as `encoding`."""

    path: str
    layer: str      # "raw", "gzip", "zip:data/0.pkl", "parquet", "png:zTXt", ...
    needle: int
    encoding: str

    def __str__(self) -> str:
        return f"{self.path} [{self.layer}]: needle #{self.needle} ({self.encoding})"


def _forms(needles: Sequence[str]) -> list[tuple[int, str, bytes]]:
    out = []
    for i, needle in enumerate(needles):
        if not needle:
            raise ValueError(f"needle #{i} is empty; an empty needle matches everything")
        for enc in ENCODINGS:
            out.append((i, enc, needle.lower().encode(enc)))
    return out


def scan_bytes(data: bytes, needles: Sequence[str]) -> list[tuple[int, str]]:
    """(needle index, encoding) of every needle found in `data` (ASCII case ignored)."""
    hay = data.lower()
    return [(i, enc) for i, enc, form in _forms(needles) if form in hay]


# ----------------------------------------------------------------------------- decoded layers
def _inflate(stream) -> bytes:
    with stream:
        return stream.read(MAX_INFLATED_BYTES)


def _png_text(data: bytes) -> Iterator[tuple[str, bytes]]:
    """tEXt / zTXt / iTXt chunk payloads, decompressed (the pixels in IDAT carry no text)."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            yield "png:zTXt", key + b"\0" + zlib.decompressobj().decompress(rest[1:], MAX_INFLATED_BYTES)
        elif kind == b"iTXt":  # keyword\0 flag method language\0 translated keyword\0 text
            key, _, rest = body.partition(b"\0")
            compressed, rest = rest[:1] == b"\1", rest[2:]
            language, _, rest = rest.partition(b"\0")
            translated, _, text = rest.partition(b"\0")
            if compressed:
                text = zlib.decompressobj().decompress(text, MAX_INFLATED_BYTES)
            yield "png:iTXt", b"\0".join([key, language, translated, text])
        elif kind == b"tEXt":
            yield "png:tEXt", body


def _parquet_text(data: bytes) -> bytes:
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data))
    meta = b" ".join(k + b"=" + v for k, v in (table.schema.metadata or {}).items())
    return table.to_pandas().to_csv(index=False).encode("utf-8") + b"\n" + meta


def layers(data: bytes, depth: int = 0) -> Iterator[tuple[str, bytes]]:
    """(layer name, bytes) for the decoded contents of `data`, recursively; not `data` itself, nor zip
    members stored uncompressed (their bytes are part of `data`)."""
    if depth >= _MAX_DEPTH:
        return
    decoded: list[tuple[str, bytes]] = []
    stored: set[str] = set()  # zip members kept uncompressed: their bytes were searched with the file
    try:
        if data[:2] == b"\x1f\x8b":
            decoded.append(("gzip", _inflate(gzip.GzipFile(fileobj=io.BytesIO(data)))))
        elif data[:3] == b"BZh":
            decoded.append(("bz2", _inflate(bz2.BZ2File(io.BytesIO(data)))))
        elif data[:6] == b"\xfd7zXZ\x00":
            decoded.append(("xz", _inflate(lzma.LZMAFile(io.BytesIO(data)))))
        elif data[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for info in zf.infolist():
                    if not info.is_dir():
                        with zf.open(info) as member:
                            decoded.append((f"zip:{info.filename}", member.read(MAX_INFLATED_BYTES)))
                        if info.compress_type == zipfile.ZIP_STORED:
                            stored.add(f"zip:{info.filename}")
        elif data[:4] == b"PAR1" and data[-4:] == b"PAR1":
            decoded.append(("parquet", _parquet_text(data)))
        elif data[:8] == b"\x89PNG\r\n\x1a\n":
            decoded.extend(_png_text(data))
    except Exception as e:  # noqa: BLE001 - a corrupt container is reported as a layer that could not be read
        decoded.append((f"undecodable:{type(e).__name__}", b""))
    for name, payload in decoded:
        if name not in stored:
            yield name, payload
        for inner, inner_payload in layers(payload, depth + 1):
            yield f"{name}/{inner}", inner_payload


# ----------------------------------------------------------------------------- files and trees
def _scan_raw_chunked(path: Path, needles: Sequence[str]) -> set[tuple[int, str]]:
    found: set[tuple[int, str]] = set()
    overlap = 4 * max(len(n) for n in needles)
    tail = b""
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            found.update(scan_bytes(tail + chunk, needles))
            tail = chunk[-overlap:]
    return found


def scan_file(path: str | os.PathLike, needles: Sequence[str]) -> list[Hit]:
    """Every (layer, needle, encoding) found in one file; raw bytes first, then decoded layers."""
    path = Path(path)
    raw = _scan_raw_chunked(path, needles)
    hits = [Hit(str(path), "raw", i, enc) for i, enc in sorted(raw)]
    if path.stat().st_size <= MAX_DECODE_BYTES:
        data = path.read_bytes()
        for layer, payload in layers(data):
            hits += [Hit(str(path), layer, i, enc) for i, enc in scan_bytes(payload, needles)]
    return hits


def iter_files(root: str | os.PathLike) -> Iterator[Path]:
    """Every regular file under root (symlinks not followed), in a stable order."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            p = Path(folder) / name
            if p.is_file() and not p.is_symlink():
                yield p


def scan_tree(root: str | os.PathLike, needles: Sequence[str]) -> list[Hit]:
    """Hits in every file under root (see module docstring). File names are checked as well (layer "name")."""
    hits: list[Hit] = []
    for p in iter_files(root):
        rel = str(p.relative_to(root))
        hits += [Hit(str(p), "name", i, enc) for i, enc in scan_bytes(rel.encode("utf-8"), needles)
                 if enc == "utf-8"]
        hits += scan_file(p, needles)
    return hits


def _read_needles(paths: Iterable[str], values: Iterable[str]) -> list[str]:
    needles = [v for v in values if v]
    for p in paths:
        needles += [line.strip() for line in Path(p).read_text(encoding="utf-8").splitlines() if line.strip()]
    return needles


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m medssl.phi",
        description="Search every file under FOLDER (raw bytes, gzip/zip/Parquet/PNG text; UTF-8/16/32; "
                    "any case) for known identifiers. Prints file and needle number, never the value. "
                    "Exit 0: nothing found; 1: hits; 2: usage error.",
        epilog="example: python -m medssl.phi runs/study --needles-file mrns_and_names.txt")
    ap.add_argument("folder")
    ap.add_argument("--needle", action="append", default=[], help="an identifier to look for (repeatable)")
    ap.add_argument("--needles-file", action="append", default=[], help="a text file, one identifier per line")
    args = ap.parse_args(argv)
    needles = _read_needles(args.needles_file, args.needle)
    if not needles or not Path(args.folder).is_dir():
        print("phi: error: give an existing FOLDER and at least one --needle/--needles-file", file=sys.stderr)
        return 2
    hits = scan_tree(args.folder, needles)
    for hit in hits:
        print(hit)
    n_files = sum(1 for _ in iter_files(args.folder))
    print(f"phi: {len(hits)} hit(s) in {len({h.path for h in hits})} of {n_files} file(s)", file=sys.stderr)
    return 1 if hits else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
