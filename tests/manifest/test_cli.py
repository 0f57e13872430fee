"""`medssl manifest build | validate | summary` round trips through medssl.cli.main."""

from __future__ import annotations

import json

import pandas as pd

from medssl.cli import main
from medssl.manifest import FORMATS, load


def test_format_choices_match_the_registry():
    from medssl.commands.manifest import FORMAT_NAMES

    assert tuple(FORMAT_NAMES) == FORMATS


def test_build_validate_summary_round_trip(chexpert_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MEDSSL_SALT", "cli-salt")
    out = tmp_path / "manifests" / "chexpert.csv"
    assert main(["manifest", "build", "--format", "chexpert", str(chexpert_root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "6 images, 4 patients, 5 studies" in printed
    assert "views: AP 3, LATERAL 1, PA 1, FRONTAL 1" in printed
    # Cardiomegaly: 1 positive (valid), 1 negative (patient00003), 1 uncertain (train row 3), 3 blank
    line = next(l for l in printed.splitlines() if l.startswith("Cardiomegaly"))
    assert line.split()[1:] == ["1", "1", "1", "3", "0.333"]
    assert "patient0000" not in printed.replace("CheXpert", "")  # no raw ids in the summary
    df = load(out)
    assert len(df) == 6 and df["patient_id"].str.startswith("pid-").all()

    assert main(["manifest", "validate", str(out), "--verify-files"]) == 0
    assert "valid (6 rows, all files present)" in capsys.readouterr().out
    assert main(["manifest", "summary", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 6 and summary["labels"]["Edema"]["uncertain"] == 1

    (chexpert_root / "valid/patient64541/study1/view1_frontal.jpg").unlink()
    assert main(["manifest", "validate", str(out), "--verify-files"]) == 2
    err = capsys.readouterr().err
    assert "1 of 6 file(s) do not exist" in err and "Traceback" not in err


def test_build_skip_writes_default_report(tmp_path, capsys):
    from .conftest import write_image

    root = tmp_path / "imgs"
    write_image(root / "A" / "1.png")
    (root / "A" / "2.png").write_bytes(b"broken")
    out = tmp_path / "m.parquet"
    assert main(["manifest", "build", "-f", "image-dir", str(root), "-o", str(out), "--on-error", "skip",
                 "--modality", "DX"]) == 0
    assert "skipped 1 file(s)" in capsys.readouterr().out
    report = pd.read_csv(tmp_path / "m.skipped.csv")
    assert report["path"].tolist() == ["A/2.png"]
    assert load(out)["modality"].tolist() == ["DX"]


def test_build_error_exit_code(tmp_path, capsys):
    assert main(["manifest", "build", "-f", "kermany", str(tmp_path), "-o", str(tmp_path / "m.csv")]) == 2
    assert "no Kermany labels.csv" in capsys.readouterr().err
    assert not (tmp_path / "m.csv").exists()
