"""Hand-written manifests: absolute paths rebased onto their common folder, blank study ids filled."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from medssl.cli import main
from medssl.errors import LeakageError, ManifestError
from medssl.manifest import load, save, validate
from medssl.manifest.table import sidecar_path


def _images(root, names):
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(b"x")
    return [str(root / n) for n in names]


def _write(path, rows, columns=("path", "patient_id", "study_id", "view", "modality", "Edema")):
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


def test_absolute_paths_become_relative_to_their_common_folder(tmp_path):
    data = tmp_path / "data"
    a, b = _images(data, ["site1/p1/a.png", "site2/p2/b.png"])
    (tmp_path / "lists").mkdir()
    m = _write(tmp_path / "lists" / "m.csv", [[a, "p1", "s1", "PA", "DX", 1], [b, "p2", "s2", "PA", "DX", 0]])
    df = load(m)
    assert df["path"].tolist() == ["site1/p1/a.png", "site2/p2/b.png"]
    assert df.attrs["data_root"] == str(data)
    validate(df, verify_files=True)                      # files resolve under the recorded root
    save(df, tmp_path / "lists" / "m.norm.csv")         # the root travels in the sidecar
    assert sidecar_path(tmp_path / "lists" / "m.norm.csv").is_file()
    again = load(tmp_path / "lists" / "m.norm.csv")
    assert again["path"].tolist() == df["path"].tolist() and again.attrs["data_root"] == str(data)
    assert main(["manifest", "validate", str(m), "--verify-files"]) == 0


def test_the_rest_of_validation_still_applies(tmp_path):
    data = tmp_path / "data"
    a, b = _images(data, ["p1/a.png", "p2/b.png"])
    missing = str(data / "p3" / "c.png")
    df = load(_write(tmp_path / "m.csv", [[a, "p1", "s1", "PA", "DX", 1], [missing, "p3", "s3", "PA", "DX", 0]]))
    with pytest.raises(ManifestError, match=r"1 of 2 file\(s\) do not exist under data root .*p3/c.png"):
        validate(df, verify_files=True)
    dup = _write(tmp_path / "dup.csv", [[a, "p1", "s1", "PA", "DX", 1], [a, "p1", "s1", "PA", "DX", 1]])
    with pytest.raises(ManifestError, match="duplicate row"):
        load(dup)
    leak = pd.DataFrame([[a, "p1", "s1", "PA", "DX", "train"], [b, "p1", "s2", "PA", "DX", "test"]],
                        columns=["path", "patient_id", "study_id", "view", "modality", "split"])
    leak.to_csv(tmp_path / "leak.csv", index=False)
    with pytest.raises(LeakageError):
        load(tmp_path / "leak.csv")
    escape = _write(tmp_path / "esc.csv", [[a, "p1", "s1", "PA", "DX", 1], [str(data) + "/../../x.png", "p2", "s2",
                                                                              "PA", "DX", 0]])
    df = load(escape)     # '..' inside an absolute path is resolved, not an escape: the root widens to hold it
    assert df.attrs["data_root"] == str(tmp_path.parent)
    # an explicit data root is kept; absolute paths outside it are refused
    df = load(_write(tmp_path / "ok.csv", [[a, "p1", "s1", "PA", "DX", 1]]), data_root=tmp_path)
    assert df["path"].tolist() == ["data/p1/a.png"] and df.attrs["data_root"] == str(tmp_path)
    with pytest.raises(ManifestError, match="outside the data root"):
        load(tmp_path / "ok.csv", data_root=data / "p2")


def test_absolute_and_relative_rows_do_not_mix(tmp_path):
    data = tmp_path / "data"
    a, _ = _images(data, ["x/a.png", "y/b.png"])
    m = _write(data / "m.csv", [[a, "p1", "s1", "PA", "DX", 1], ["y/b.png", "p2", "s2", "PA", "DX", 0]])
    with pytest.raises(ManifestError, match=r"manifest .*m.csv: 1 path\(s\) are absolute and 1 relative"):
        load(m)


def test_blank_study_ids_are_one_study_per_image(tmp_path, caplog):
    m = _write(tmp_path / "m.csv", [["a.png", "p1", "", "PA", "DX", 1], ["b.png", "p1", "s9", "PA", "DX", 0],
                                    ["c.png", "p2", None, "PA", "DX", 0]])
    with caplog.at_level(logging.WARNING, logger="medssl.manifest.handwritten"):
        df = load(m)
    assert df["study_id"].tolist() == ["a.png", "s9", "c.png"]       # raw ids: the path itself
    assert "2 of 3 row(s) have no study_id" in caplog.text


def test_blank_study_ids_are_pseudonymised_when_the_manifest_is(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSSL_SALT", "test-salt")
    pid = ["pid-" + "0" * 15 + "1", "pid-" + "0" * 15 + "2"]
    m = _write(tmp_path / "m.csv", [["a/1.png", pid[0], "", "PA", "DX", 1], ["a/2.png", pid[0], "", "PA", "DX", 0],
                                    ["b/3.png", pid[1], "", "PA", "DX", 0]])
    first, second = load(m), load(m)
    ids = first["study_id"]
    assert ids.str.fullmatch(r"sid-[0-9a-f]{16}").all() and ids.nunique() == 3
    assert ids.tolist() == second["study_id"].tolist()               # stable for the same salt
    assert not ids.str.contains("png").any()                         # the path does not show through


def test_no_study_id_column_at_all(tmp_path):
    m = _write(tmp_path / "m.csv", [["a.png", "p1", "PA", "DX", 1]], columns=("path", "patient_id", "view",
                                                                               "modality", "Edema"))
    assert load(m)["study_id"].tolist() == ["a.png"]
