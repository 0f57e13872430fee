"""Reading and writing manifests (CSV or Parquet) and where their image paths resolve.

How the data root travels with a manifest: `path` values are relative to a data root. `save` writes a
small sidecar `<stem>.meta.json` beside the manifest holding `data_root` RELATIVE to the manifest's
folder (so the manifest, its sidecar and the images can move together) and `data_root_absolute`
(used when the relative folder does not exist: the manifest was moved alone). `load` sets
`df.attrs["data_root"]` (absolute str) from the sidecar, or to the manifest's own folder when there
is none (hand-written manifests: paths relative to the file, or absolute: then their common folder).
`DataConfig.data_root` (`--set data.data_root=...`) overrides both downstream.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from medssl.atomic import atomic_path, write_json, write_table
from medssl.errors import ManifestError
from medssl.manifest.schema import BOOKKEEPING_COLUMNS, META_PREFIX, REQUIRED_COLUMNS, label_columns

#: Columns read as strings (ids must never become ints: "00012" != 12).
TEXT_COLUMNS = ("path", "patient_id", "study_id", "view", "modality", "split", "series_id", "source_split")
SIDECAR_VERSION = 1


def base_name(manifest_path: str | os.PathLike) -> str:
    """The manifest's name without its table suffix: a/m.split.csv.gz -> m.split."""
    name = Path(manifest_path).name
    for suffix in (".csv.gz", ".csv", ".parquet"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def sidecar_path(manifest_path: str | os.PathLike) -> Path:
    """The sidecar of a manifest: manifest.csv -> manifest.meta.json (beside it)."""
    return Path(manifest_path).with_name(f"{base_name(manifest_path)}.meta.json")


def data_root_of(df: pd.DataFrame, data_root: str | os.PathLike | None = None) -> Path | None:
    """The folder `path` values resolve against: the argument, else df.attrs["data_root"], else None."""
    root = data_root if data_root is not None else df.attrs.get("data_root")
    return Path(root) if root is not None else None


def order_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Required columns, bookkeeping, labels, then meta_ columns; ids as str, labels float64."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"manifest lacks required column(s) {missing}; every manifest needs "
                            f"{list(REQUIRED_COLUMNS)} (build one with `medssl manifest build`)")
    books = [c for c in BOOKKEEPING_COLUMNS if c in df.columns]
    labels = label_columns(df.columns)
    meta = [c for c in df.columns if str(c).startswith(META_PREFIX)]
    out = df[list(REQUIRED_COLUMNS) + books + labels + meta].copy()
    for c in TEXT_COLUMNS:
        if c in out.columns:
            out[c] = _as_text(out[c])
    if "frame" in out.columns:
        out["frame"] = pd.to_numeric(out["frame"], errors="coerce").astype("Int64")
    for c in labels:
        out[c] = _as_label(out[c], c)
    return out


def _as_text(values: pd.Series) -> pd.Series:
    """Strings with NaN for blanks; integral floats (a CSV round trip of ids) lose their '.0'."""
    if pd.api.types.is_float_dtype(values) and values.dropna().mod(1).eq(0).all():
        values = values.astype("Int64")
    text = values.astype("str").where(values.notna())
    return text.mask(text.str.strip().eq(""))


def _as_label(values: pd.Series, column: str) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() & values.notna() & values.astype("str").str.strip().ne("")
    if bad.any():
        rows = list(values.index[bad][:5])
        raise ManifestError(f"label column '{column}' holds non-numeric values "
                            f"{list(values[bad].astype(str).unique()[:5])} (rows {rows}); labels must be "
                            f"1, 0, -1 (uncertain) or blank. Columns that are not labels must start "
                            f"with '{META_PREFIX}'")
    return numeric.astype("float64")


def load(path: str | os.PathLike, *, validate: bool = True, data_root: str | os.PathLike | None = None,
         columns=None) -> pd.DataFrame:
    """Read a manifest (.csv, .csv.gz or .parquet): ids as str, labels float64, frame Int64.

    Sets df.attrs["data_root"] (see module docstring; the argument wins). Hand-written manifests are
    normalised first (`medssl.manifest.handwritten.prepare`): absolute paths become relative to their
    common folder, which becomes the data root; blank study ids become one study per image. With validate=True runs
    `medssl.manifest.validate` (schema, labels, duplicates, patient leakage; not file existence).
    columns: read only these columns (plus the required ones), e.g. BOOKKEEPING_COLUMNS for a
    label-free read of a large manifest.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist; create one with `medssl manifest build`")
    keep = None if columns is None else set(REQUIRED_COLUMNS) | set(columns)
    try:
        if path.suffix == ".parquet":
            if keep is not None:
                import pyarrow.parquet as pq
                keep = [c for c in pq.read_schema(path).names if c in keep]
            df = pd.read_parquet(path, columns=keep)
        else:
            # keep_default_na=False: an id "NA" or "null" is an id, only empty cells are blank
            df = pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False,
                             na_values=[""], usecols=None if keep is None else (lambda c: c in keep))
    except (ValueError, OSError, ImportError) as e:
        raise ManifestError(f"cannot read manifest {path}: {e}. Manifests are CSV or Parquet files "
                            f"written by `medssl manifest build`") from e
    from medssl.manifest.handwritten import prepare

    root = data_root if data_root is not None else data_root_for(path)
    try:  # hand-written manifests: absolute paths rebased, blank study ids filled (medssl.manifest.handwritten)
        df = prepare(df, root, explicit_root=data_root is not None, source=f"manifest {path}")
    except ManifestError as e:  # name the file: the same table is read by many commands
        msg = str(e)
        raise ManifestError(msg if msg.startswith(f"manifest {path}") else f"manifest {path}: {msg}") from None
    df.attrs = {"data_root": str(df.attrs.get("data_root", root))}
    if validate:
        from medssl.manifest.validate import validate as _validate
        _validate(df, source=str(path))
    return df


def data_root_for(path: str | os.PathLike) -> Path:
    """Where the paths of the manifest file at `path` resolve: its sidecar, else its folder."""
    path = Path(path)
    folder = path.resolve().parent
    side = sidecar_path(path)
    if not side.is_file():
        return folder
    try:
        meta = json.loads(side.read_text())
        relative = (folder / meta["data_root"]).resolve()
        absolute = meta.get("data_root_absolute")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ManifestError(f"manifest sidecar {side} is unreadable ({e}); delete it to resolve "
                            f"paths against {folder}, or rewrite it with `medssl manifest build`") from e
    # moved together with the images -> the relative path holds; moved alone -> the absolute one
    if not relative.is_dir() and absolute and Path(absolute).is_dir():
        return Path(absolute)
    return relative


_sidecar_root = data_root_for  # earlier name, used by medssl.ssl.data


def save(df: pd.DataFrame, path: str | os.PathLike, *, validate: bool = True) -> Path:
    """Write a manifest atomically (CSV or Parquet by suffix) and its data-root sidecar.

    The data root is df.attrs["data_root"] (as set by build/load), else the manifest's folder.
    """
    path = Path(path)
    out = order_columns(df)
    out.attrs = {}
    if validate:
        from medssl.manifest.validate import validate as _validate
        _validate(out, source=str(path))
    folder = path.resolve().parent
    root = Path(df.attrs.get("data_root") or folder).resolve()
    try:
        stored = Path(os.path.relpath(root, folder)).as_posix()
    except ValueError:  # another drive on Windows
        stored = str(root)
    if path.name.endswith(".csv.gz"):
        with atomic_path(path) as tmp:  # write_table infers compression from the temp name: none
            out.to_csv(tmp, index=False, compression="gzip")
    elif path.suffix in (".csv", ".parquet"):
        write_table(path, out)
    else:
        raise ManifestError(f"cannot save a manifest as {path}: use a .csv, .csv.gz or .parquet name")
    write_json(sidecar_path(path), {"data_root": stored, "data_root_absolute": str(root),
                                    "medssl_manifest": SIDECAR_VERSION})
    return path
