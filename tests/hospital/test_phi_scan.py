"""PHI: nothing the pipeline writes (manifests, cache, checkpoints, TensorBoard events, logs, reports,
plots, terminal output) carries the names, IDs, accession numbers or birth dates of the source
DICOM headers. The scanner itself is shown to find a sentinel in every container it claims to read."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, PngImagePlugin

from medssl.phi import main as phi_main
from medssl.phi import scan_file, scan_tree
from tests.hospital.helpers import NEEDLES, PHI_SPEC

SECRET = "ZqxSecret4711"


def _containers(folder: Path) -> dict[str, Path]:
    """One file per container/encoding, each hiding SECRET where a plain byte search cannot see it."""
    f = {}

    def put(name, data: bytes):
        f[name] = folder / name
        f[name].write_bytes(data)

    put("utf16.txt", f"id: {SECRET}".encode("utf-16"))
    put("utf32be.bin", SECRET.encode("utf-32-be"))
    put("upper.log", SECRET.upper().encode())
    put("table.csv.gz", gzip.compress(f"path,patient_id\na.dcm,{SECRET}\n".encode()))
    put("notes.bz2", bz2.compress(SECRET.encode()))
    put("notes.xz", lzma.compress(SECRET.encode("utf-16-le")))
    buf = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": {"note": SECRET}}, buf)
    put("model.ckpt", buf.getvalue())
    buf = io.BytesIO()
    np.savez_compressed(buf, ids=np.array([SECRET, "other"]), x=np.zeros(3))
    put("features.npz", buf.getvalue())
    buf = io.BytesIO()
    pd.DataFrame({"patient_id": [SECRET] * 50 + ["b"] * 50}).to_parquet(buf, compression="zstd")
    put("index.parquet", buf.getvalue())
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", f"patient {SECRET}", zip=True)  # zTXt: deflated
    info.add_itxt("Author", SECRET, zip=True)  # compressed iTXt
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG", pnginfo=info)
    put("plot.png", buf.getvalue())
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("deep/report.txt.gz", gzip.compress(SECRET.encode()))
    put("bundle.zip", inner.getvalue())
    return f


def test_scanner_finds_a_sentinel_hidden_in_every_container(tmp_path):
    files = _containers(tmp_path)
    visible = {n for n, p in files.items() if SECRET.encode() in p.read_bytes()}
    assert visible <= {"model.ckpt", "index.parquet"}, visible  # the rest is invisible to a plain grep
    for name, path in files.items():
        assert scan_file(path, [SECRET]), f"{name}: the scanner missed the sentinel"
    clean = tmp_path / "clean.csv.gz"
    clean.write_bytes(gzip.compress(b"path,patient_id\na.dcm,pid-0123abcd\n"))
    assert scan_file(clean, [SECRET]) == []
    (tmp_path / f"{SECRET}.txt").write_text("x")  # a file name counts too
    layers = {h.layer for h in scan_tree(tmp_path, [SECRET]) if h.path.endswith(f"{SECRET}.txt")}
    assert "name" in layers
    assert phi_main([str(tmp_path), "--needle", SECRET]) == 1
    assert phi_main([str(tmp_path), "--needle", "NotThereAtAll"]) == 0


def test_the_source_dicoms_do_carry_every_sentinel(pipeline):
    """The positive control: the input holds each PHI value, so zero hits downstream means something."""
    hits = scan_tree(pipeline["source"], NEEDLES)
    found = {NEEDLES[h.needle] for h in hits}
    assert found >= set(NEEDLES) - {"1887-04-19"}, sorted(set(NEEDLES) - found)
    n_dicoms = sum(1 for _ in pipeline["source"].rglob("*.dcm"))
    assert len({h.path for h in hits}) >= n_dicoms


def test_no_output_of_the_whole_pipeline_carries_phi(pipeline):
    out = pipeline["out"]
    files = [p for p in out.rglob("*") if p.is_file()]
    kinds = Counter(p.suffix for p in files)
    # the scan covers every kind of artefact the pipeline writes
    assert {".csv", ".parquet", ".npy", ".npz", ".json", ".ckpt", ".pt", ".png", ".yaml", ".md",
            ".out", ".err"} <= set(kinds), kinds
    assert any(p.name.startswith("events.out.tfevents") for p in files)
    hits = scan_tree(out, NEEDLES)
    assert hits == [], "\n".join(str(h) for h in hits[:20])
    # and the ids the pipeline does write are pseudonyms, not the raw header values
    manifest = pd.read_csv(pipeline["split"], dtype=str)
    assert manifest["patient_id"].str.startswith("pid-").all()
    assert manifest["patient_id"].nunique() == len(list(pipeline["source"].glob("p*")))


def test_inspect_masks_phi_unless_asked(pipeline, capsys):
    from medssl.cli import main

    masked = (pipeline["out"] / "logs" / "inspect.out").read_text()
    assert "PatientName: ***" in masked and "PatientID: ***" in masked and "AccessionNumber: ***" in masked
    assert "PatientBirthDate: ***" in masked and "InstitutionName: ***" in masked
    assert not any(n.lower() in masked.lower() for n in NEEDLES)
    assert main(["inspect", str(pipeline["first_dicom"])]) == 0  # no --header: no header at all
    plain = capsys.readouterr().out
    assert "PatientName" not in plain and not any(n.lower() in plain.lower() for n in NEEDLES)
    assert main(["inspect", str(pipeline["first_dicom"]), "--header", "--show-phi"]) == 0
    shown = capsys.readouterr().out
    assert PHI_SPEC["InstitutionName"] in shown and "ZQXMRN0000" in shown and "18870419" in shown
