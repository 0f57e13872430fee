"""Manifests as users write them: absolute paths and missing study ids, normalised on read.

`prepare(df, data_root)` is what `medssl.manifest.load` runs between reading the table and
validating it, so every reader of a manifest file sees the same rows (and the cache the same
manifest hash):

- Absolute paths (`/data/cxr/p1/a.png`, `C:/data/...`) are accepted. The data root becomes their
  common folder (`os.path.commonpath` of the files' folders) and `path` is rewritten relative to
  it, which is the form every later stage expects (the data root then travels in the manifest's
  sidecar when it is saved). All paths must then be absolute: a manifest mixing absolute and
  relative paths is refused (one absolute row among relative ones is more often a mistake, or a
  row pointing out of the data, than a way of writing). An explicit data root (`--data-root`,
  `data.data_root`) is kept: absolute paths must lie inside it.
  Validation is unchanged otherwise: duplicates, '..' escapes, missing files (with
  --verify-files) and leaking patients are still refused.
- An empty `study_id` (or no study_id column) means one study per image: the id is derived from
  the image's (relative) path, `sid-` + a salted HMAC of it when the manifest's patient ids are
  pseudonymised (`pid-<16 hex>`, as `medssl manifest build` writes them), the path itself when
  the ids are raw. A warning says how many rows were affected.
"""

from __future__ import annotations

import logging
import ntpath
import os
import posixpath
import re
from pathlib import Path

import pandas as pd

from medssl.errors import ManifestError

log = logging.getLogger(__name__)

_PSEUDONYM = re.compile(r"^pid-[0-9a-f]{16}$")
_DRIVE = re.compile(r"^[A-Za-z]:/")
#: Domain tag of a study pseudonym derived from a path (never equal to a real study id's pseudonym).
PATH_STUDY_PREFIX = "image:"


def blank(values: pd.Series) -> pd.Series:
    """True where an id is missing: NaN, empty/whitespace, or the text nan/none (what validate refuses)."""
    text = values.astype("str")
    return values.isna() | text.str.strip().eq("") | text.str.lower().isin(["nan", "none"])


def is_pseudonymised(df: pd.DataFrame) -> bool:
    """Every patient id looks like a medssl pseudonym (pid- + 16 hex digits)."""
    ids = df["patient_id"].dropna().astype(str)
    return len(ids) > 0 and bool(ids.str.fullmatch(_PSEUDONYM).all())


def fill_study_ids(df: pd.DataFrame, *, salt: bytes | str | None = None, source: str = "manifest") -> pd.DataFrame:
    """Blank study ids -> one study per image, derived from the path (see module docstring); a copy."""
    missing = blank(df["study_id"])
    if not missing.any():
        return df
    out = df.copy()
    paths = out.loc[missing, "path"].astype(str)
    if is_pseudonymised(out):
        from medssl.manifest.pseudonym import pseudonymise_series, resolve_salt

        out.loc[missing, "study_id"] = pseudonymise_series(PATH_STUDY_PREFIX + paths, resolve_salt(salt), "study")
        how = "a salted pseudonym of its path"
    else:
        out.loc[missing, "study_id"] = paths
        how = "its path"
    log.warning("%s: %d of %d row(s) have no study_id; each of these images is its own study (study_id = %s). "
                "MICLe study-level pairs cannot pair them with other images.",
                source, int(missing.sum()), len(out), how)
    return out


def _absolute(paths: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(forward-slash paths, mask of absolute ones: /x, C:/x, //server/x)."""
    p = paths.astype("str").str.replace("\\", "/", regex=False)
    return p, p.str.startswith("/") | p.str.match(_DRIVE)


def rebase_absolute(df: pd.DataFrame, data_root: str | os.PathLike | None, *, explicit_root: bool = False,
                    source: str = "manifest") -> tuple[pd.DataFrame, str | None]:
    """Rewrite absolute paths relative to a data root; returns (df, root). Unchanged without absolute paths.

    explicit_root: `data_root` was given by the user (kept; absolute paths must lie inside it); else
    the root becomes the common folder of all images.
    """
    p, absolute = _absolute(df["path"])
    if not absolute.any():
        return df, None if data_root is None else str(data_root)
    windows = p[absolute].str.match(_DRIVE)
    if windows.any() and not windows.all():
        raise ManifestError(f"{source}: absolute paths mix Windows drives and POSIX folders, e.g. "
                            f"{list(p[absolute][windows][:1]) + list(p[absolute][~windows][:1])}; use one kind")
    mod = ntpath if windows.any() else posixpath
    if (~absolute).any():
        # a single absolute path among relative ones is more likely an error (or a hostile row pointing
        # out of the data) than a hand-written manifest: those are written one way throughout
        raise ManifestError(f"{source}: {int(absolute.sum())} path(s) are absolute and {int((~absolute).sum())} "
                            f"relative, e.g. {list(p[absolute][:2])} and {list(p[~absolute][:2])}; write them all "
                            "absolute (the data root becomes their common folder) or all relative to the data root")
    full = p.copy()
    full = full.map(mod.normpath)
    if explicit_root and data_root is not None:
        root = mod.normpath(str(data_root))
    else:
        folders = pd.unique(full.map(mod.dirname))
        try:
            root = mod.commonpath(list(folders))
        except ValueError as e:   # different drives
            raise ManifestError(f"{source}: the absolute paths share no common folder ({e}); keep the images "
                                "under one folder (or drive)") from None
    rel = full.map(lambda q: mod.relpath(q, root).replace("\\", "/"))
    outside = rel.str.startswith("../") | rel.eq("..")
    if outside.any():
        raise ManifestError(f"{source}: {int(outside.sum())} absolute path(s) lie outside the data root {root}, "
                            f"e.g. {list(p[outside][:3])}; choose a data root (--data-root) that contains every image")
    out = df.copy()
    out["path"] = rel
    log.info("%s: %d absolute path(s); data root %s (%s), paths stored relative to it", source,
             int(absolute.sum()), root, "as given" if explicit_root else "their common folder")
    if mod.dirname(root) == root:
        log.warning("%s: the images share no folder below %s; the data root is the file system root", source, root)
    return out, str(Path(root)) if mod is posixpath else root


def prepare(df: pd.DataFrame, data_root: str | os.PathLike | None, *, explicit_root: bool = False,
            salt: bytes | str | None = None, source: str = "manifest") -> pd.DataFrame:
    """A table as read from a manifest file -> medssl's form: columns ordered and typed
    (`order_columns`), absolute paths rebased, blank study ids filled; attrs["data_root"] set.

    Call it before `validate` (which still refuses what is wrong, not merely hand-written).
    """
    from medssl.manifest.table import order_columns

    if "study_id" not in df.columns and "path" in df.columns:
        df = df.assign(study_id=pd.NA)
    df = order_columns(df)
    df, root = rebase_absolute(df, data_root, explicit_root=explicit_root, source=source)
    if root is None:
        root = None if data_root is None else str(data_root)
    df = fill_study_ids(df, salt=salt, source=source)
    df.attrs = {"data_root": root} if root is not None else {}
    return df
