"""Salted pseudonyms for patient, study and series identifiers (PHI never leaves the manifest stage raw).

`pid-<16 hex>` = first 64 bits of HMAC-SHA256(salt, "patient\\0" + raw id); `sid-` for studies and
`ser-` for series likewise. Same raw id + same salt -> same pseudonym, so manifests built at different
times (or by different formats) of one archive join; without the salt the mapping cannot be reversed
or rebuilt by dictionary attack on short ids (e.g. 8-digit MRNs).

Salt precedence: the `salt` argument > env MEDSSL_SALT > a per-user salt file
(`$MEDSSL_HOME/salt`, else `~/.config/medssl/salt`): 32 random bytes stored as 64 hex characters,
created with mode 0600 on first use. The salt is never written anywhere else nor logged. Copy the
file (or set MEDSSL_SALT) on another machine to get the same pseudonyms there.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from medssl.errors import ConfigError

log = logging.getLogger(__name__)

SALT_ENV = "MEDSSL_SALT"
HOME_ENV = "MEDSSL_HOME"
#: id column -> (HMAC domain tag, pseudonym prefix)
ID_KINDS = {"patient_id": ("patient", "pid-"), "study_id": ("study", "sid-"), "series_id": ("series", "ser-")}
_HEX = 16


def salt_file() -> Path:
    """Where the per-user salt lives: $MEDSSL_HOME/salt, else ~/.config/medssl/salt."""
    home = os.environ.get(HOME_ENV)
    return Path(home) / "salt" if home else Path.home() / ".config" / "medssl" / "salt"


def _read_salt_file(path: Path) -> bytes:
    try:
        text = path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"cannot read the salt file {path}: {e.strerror or e}; fix its permissions "
                          f"or set {SALT_ENV}") from e
    if not text:
        raise ConfigError(f"salt file {path} is empty; delete it (a new one is created, which changes "
                          f"every pseudonym) or restore it from a backup")
    if os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("salt file %s is readable by other users; run `chmod 600 %s`", path, path)
    return text.encode("utf-8")


def _create_salt_file(path: Path) -> bytes:
    """Create the salt file exactly once, even with concurrent builders.

    Written to a private temp file, then hard-linked into place: link fails if the file exists, so
    a losing racer reads the winner's salt instead of replacing it (os.replace would let two
    processes pseudonymise with different salts).
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".salt.", dir=path.parent)  # mkstemp creates 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
            log.info("created a new pseudonymisation salt at %s (keep it: it links pseudonyms across "
                     "runs; copy it or set %s on other machines)", path, SALT_ENV)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return _read_salt_file(path)


def resolve_salt(salt: str | bytes | None = None) -> bytes:
    """The salt as bytes: argument > MEDSSL_SALT > salt file (created on first use)."""
    if salt is not None:
        value = salt.encode("utf-8") if isinstance(salt, str) else bytes(salt)
        if not value:
            raise ConfigError("the pseudonymisation salt is empty; pass a non-empty secret")
        return value
    env = os.environ.get(SALT_ENV)
    if env is not None:
        if not env:
            raise ConfigError(f"{SALT_ENV} is set but empty; unset it or set a non-empty secret")
        return env.encode("utf-8")
    path = salt_file()
    if path.is_file():
        return _read_salt_file(path)
    try:
        return _create_salt_file(path)
    except OSError as e:
        raise ConfigError(f"cannot create the salt file {path}: {e.strerror or e}; set {SALT_ENV} "
                          f"or {HOME_ENV} to a writable folder") from e


def pseudonym(raw: str, salt: bytes, kind: str = "patient") -> str:
    """One pseudonym, e.g. pseudonym("12345", salt) -> "pid-3f0c...". kind: patient, study, series."""
    prefix = {tag: pre for tag, pre in ID_KINDS.values()}[kind]
    digest = hmac.new(salt, f"{kind}\0{raw}".encode("utf-8"), hashlib.sha256).hexdigest()
    return prefix + digest[:_HEX]


def pseudonymise_series(values: pd.Series, salt: bytes, kind: str) -> pd.Series:
    """Pseudonyms for a column; hashes each distinct value once (fast for 10^5 rows). NaN stays NaN."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    prefix = {tag: pre for tag, pre in ID_KINDS.values()}[kind]
    keyed = hmac.new(salt, f"{kind}\0".encode("utf-8"), hashlib.sha256)  # copy() skips re-keying
    names = []
    for u in uniques:
        h = keyed.copy()
        h.update(str(u).encode("utf-8"))
        names.append(prefix + h.hexdigest()[:_HEX])
    mapped = np.array(names + [np.nan], dtype=object)
    return pd.Series(mapped[codes], index=values.index, dtype="str")


def pseudonymise(df: pd.DataFrame, salt: bytes) -> pd.DataFrame:
    """Copy of df with patient_id, study_id and series_id (those present) replaced by pseudonyms."""
    out = df.copy()
    for column, (kind, _) in ID_KINDS.items():
        if column in out.columns:
            out[column] = pseudonymise_series(out[column], salt, kind)
    return out
