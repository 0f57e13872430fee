"""Pseudonymisation: deterministic per salt, different across salts, salt precedence, no raw ids."""

from __future__ import annotations

import os
import stat

import pytest

from medssl.errors import ConfigError
from medssl.manifest import build, save
from medssl.manifest.pseudonym import pseudonym, resolve_salt, salt_file


def test_deterministic_per_salt_and_distinct_across_salts(chexpert_root):
    a1 = build("chexpert", chexpert_root, salt="one")
    a2 = build("chexpert", chexpert_root, salt="one")
    b = build("chexpert", chexpert_root, salt="two")
    assert a1["patient_id"].tolist() == a2["patient_id"].tolist()
    assert a1["study_id"].tolist() == a2["study_id"].tolist()
    assert set(a1["patient_id"]).isdisjoint(b["patient_id"])
    # structure is kept: same raw id -> same pseudonym, different raw ids -> different pseudonyms
    assert a1["patient_id"].nunique() == b["patient_id"].nunique() == 4
    assert a1["patient_id"].str.fullmatch(r"pid-[0-9a-f]{16}").all()
    assert a1["study_id"].str.fullmatch(r"sid-[0-9a-f]{16}").all()
    # patient and study namespaces differ even for the same raw string
    assert pseudonym("x", b"s", "patient")[4:] != pseudonym("x", b"s", "study")[4:]


def test_no_raw_id_in_written_manifest(tmp_path):
    from .conftest import write_dicom

    root = tmp_path / "d"
    write_dicom(root / "1.dcm", patient_id="HOSP-778899", study_uid="1.2.840.99.12345")
    write_dicom(root / "2.dcm", patient_id="HOSP-778899", study_uid="1.2.840.99.12345")
    out = tmp_path / "m.csv"
    save(build("dicom-dir", root, salt="s3cret"), out)
    written = out.read_text() + (tmp_path / "m.meta.json").read_text()
    assert "HOSP-778899" not in written and "1.2.840.99.12345" not in written and "Doe" not in written
    assert "s3cret" not in written
    kept = build("dicom-dir", root, keep_ids=True)
    assert kept["patient_id"].tolist() == ["HOSP-778899"] * 2
    assert kept["study_id"].tolist() == ["1.2.840.99.12345"] * 2


def test_keep_ids_is_logged(chexpert_root, caplog):
    df = build("chexpert", chexpert_root, keep_ids=True)
    assert df["patient_id"].tolist()[:3] == ["patient00001", "patient00001", "patient00002"]
    assert "RAW patient/study ids" in caplog.text


def test_salt_precedence_and_file(isolated_salt, monkeypatch):
    path = salt_file()
    assert path == isolated_salt / "salt" and not path.exists()
    from_file = resolve_salt()                      # created on first use, 32 random bytes as hex, 0600
    assert path.is_file() and len(from_file) == 64 and int(from_file, 16) >= 0
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_salt() == from_file              # reused, not regenerated
    monkeypatch.setenv("MEDSSL_SALT", "from-env")
    assert resolve_salt() == b"from-env"            # env beats the file
    assert resolve_salt("arg") == b"arg"            # argument beats env
    monkeypatch.setenv("MEDSSL_SALT", "")
    with pytest.raises(ConfigError, match="MEDSSL_SALT is set but empty"):
        resolve_salt()
    with pytest.raises(ConfigError, match="empty"):
        resolve_salt("")


def test_env_salt_gives_same_pseudonyms_as_argument(chexpert_root, monkeypatch):
    monkeypatch.setenv("MEDSSL_SALT", "shared")
    assert build("chexpert", chexpert_root)["patient_id"].tolist() == \
        build("chexpert", chexpert_root, salt="shared")["patient_id"].tolist()
