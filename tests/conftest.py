"""Shared fixtures. Real data lives outside the repository (../shared/data, or $MEDSSL_SHARED_DATA).

Tests that need it use the `shared_data` fixture. Where the data is absent (a user's machine),
they are reported as skipped with the reason; under CI (CI=true) or with
MEDSSL_REQUIRE_REAL_DATA=1 a missing data folder fails instead of skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path | None:
    env = os.environ.get("MEDSSL_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if (c / "metadata").is_dir():
            return c
    return None


@pytest.fixture(autouse=True)
def _isolated_medssl_home(tmp_path_factory, monkeypatch):
    """Tests never create or read the user's real pseudonymisation salt file."""
    monkeypatch.setenv("MEDSSL_HOME", str(tmp_path_factory.mktemp("medssl_home")))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = _shared_data_dir()
    if d is None:
        msg = "real data not found: set MEDSSL_SHARED_DATA to the folder holding metadata/ and real/"
        if os.environ.get("MEDSSL_REQUIRE_REAL_DATA") == "1" or os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return d


@pytest.fixture(scope="session")
def pydicom_file():
    """Path of a DICOM file bundled with pydicom (local files only; never triggers a download)."""
    import pydicom

    base = Path(pydicom.__file__).parent / "data" / "test_files"

    def get(name: str) -> Path:
        p = base / name
        assert p.is_file(), f"pydicom test file {name} not bundled with this pydicom"
        return p

    return get
