"""Published label-fraction splits -> medssl's budgets table (`path, budget, seed`).

Papers that measure label efficiency often publish the labeled subsets they trained on as a folder
of CSV files, one per (label fraction, repetition), each listing image paths. Importing them lets
a medssl study train on exactly those subsets (`data.budgets`, with `study.budgets` / `study.seeds`
set to what was imported).

Layouts recognised by file name (path relative to the folder, without `.csv`; first match wins):

- MedAug (Vu et al. 2021, `label_fractions/`): `train_semi_<fraction>-it<k>.csv`, CheXpert columns
  with `Path` (an unnamed index column first); `valid.csv` is the validation list, not a subset;
- MoCo-CXR (Sowrirajan et al. 2021, Shenzhen splits): `chexpert_like_<fraction>_<k>.csv` (a
  fraction of 1 is the whole training set); `chexpert_like_val.csv` / `_test.csv` are not subsets;
- generic: a budget followed by a repetition tag at the end of the name or path, e.g.
  `frac0.01_seed2.csv`, `1pct-rep0.csv`, `250_s1.csv`, `0.1/seed_3.csv`, `budget_500_run4.csv`
  (tags it, iter, seed, rep, replicate, run, split, trial, fold, s, r), or a budget alone
  (`train_0.01.csv`, seed 0).

Anything else needs `pattern`: a regex with named groups `budget` and (optionally) `seed`, searched
in that relative name. Files that match no pattern are skipped and reported (validation lists such
as valid.csv); no match at all is an error.

Budgets: decimals (0.01) and percentages (1%, 1pct) are fractions of the training images,
integers are image counts, except that in a folder whose other budgets are fractions < 1 the
integer 1 means 100% (MoCo-CXR writes its full-data split as `..._1_<k>.csv`); `budget_unit`
forces "fraction" or "count". The table holds `medssl.splits.budget_label` of each (1% etc.).

Paths: the path column is `Path`/`path`/`image_path`/`filename`/... (case-insensitive; or
`path_column`), or the only column of a header-less list. Paths are matched to the manifest's
(relative) paths: exactly; else, for absolute paths inside the manifest's data root, relative to
it; else by the longest path suffix that is a manifest path (a published `/deep/group/CheXpert/
CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg` finds the manifest's
`CheXpert-v1.0-small/train/...` or `train/...`); the prefixes dropped are reported. Every imported
path must be a TRAIN row of the manifest: otherwise SplitError listing a few, the split they are in
(or that they are not in the manifest) and the file listing them. Whether the
subsets are nested (each smaller budget inside every larger one of the same seed) is reported,
not required.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medssl.errors import SplitError

log = logging.getLogger(__name__)

_NUM = r"\d+(?:\.\d+)?(?:e-?\d+)?"
_TAGS = r"(?:it|iter|seed|rep|replicate|run|split|trial|fold|s|r)"
#: (layout name, regex over the relative name without .csv), tried in order.
PATTERNS = (
    ("MedAug label_fractions", re.compile(rf"(?:^|/)train_semi_(?P<budget>{_NUM})-it(?P<seed>\d+)$")),
    ("MoCo-CXR chexpert_like", re.compile(rf"(?:^|/)chexpert_like_(?P<budget>{_NUM})_(?P<seed>\d+)$")),
    ("budget + repetition", re.compile(rf"(?:^|[/_\- ]|[A-Za-z])(?P<budget>{_NUM}(?:%|pct)?)[/_\- ]*{_TAGS}[_\- ]?"
                                       rf"(?P<seed>\d+)$", re.IGNORECASE)),
    ("budget only", re.compile(rf"(?:^|[/_\- ])(?P<budget>{_NUM}(?:%|pct)?)$", re.IGNORECASE)),
)
#: Names of evaluation lists (never a labeled training subset), skipped by the built-in layouts.
_EVAL_LIST = re.compile(r"(?:^|[/_\- ])(?:val|valid|validation|test|testing|dev|holdout)(?:$|[/_\- ])", re.IGNORECASE)
PATH_COLUMNS = ("path", "image_path", "img_path", "imagepath", "filepath", "file_path", "filename", "file_name",
                "file", "image", "image index", "img")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".nii", ".nii.gz", ".tif", ".tiff", ".bmp")
_SHOWN = 5


@dataclass
class ImportReport:
    """What an import found: one row per subset, prefixes rewritten, skipped files, nesting per seed."""

    subsets: pd.DataFrame                  # file, layout, budget, seed, n_listed, n_images
    prefixes_dropped: list = field(default_factory=list)
    prefixes_added: list = field(default_factory=list)
    skipped_files: list = field(default_factory=list)
    nested: dict = field(default_factory=dict)   # seed -> True | "<smaller> not inside <larger>: n paths"
    n_train: int = 0

    def text(self) -> str:
        lines = [f"{len(self.subsets)} subset(s) imported from {self.subsets['file'].nunique()} file(s); "
                 f"{self.n_train} training images in the manifest"]
        t = self.subsets.copy()
        t["of_train"] = (t["n_images"] / max(self.n_train, 1)).map(lambda v: f"{100 * v:.2f}%")
        lines.append(t[["file", "layout", "budget", "seed", "n_images", "of_train"]].to_string(index=False))
        if self.prefixes_dropped:
            lines.append(f"path prefixes dropped to match the manifest: {self.prefixes_dropped[:3]}"
                         + (" ..." if len(self.prefixes_dropped) > 3 else ""))
        if self.prefixes_added:
            lines.append(f"manifest path prefixes the files lacked: {self.prefixes_added[:3]}")
        if self.skipped_files:
            lines.append(f"skipped (no budget in the name): {self.skipped_files[:_SHOWN]}"
                         + (f" (+{len(self.skipped_files) - _SHOWN} more)" if len(self.skipped_files) > _SHOWN else ""))
        for seed, v in sorted(self.nested.items()):
            lines.append(f"seed {seed}: " + ("nested (each smaller budget inside every larger one)" if v is True
                                              else f"NOT nested: {v}"))
        return "\n".join(lines)


# ----------------------------------------------------------------------------- file names -> (budget, seed)
def parse_name(relative: str, pattern: str | None = None) -> tuple[str, str, int] | None:
    """(layout, budget text, seed) of a file's relative name without .csv; None when no layout matches."""
    if pattern:
        pats = [("pattern", re.compile(pattern))]
    elif _EVAL_LIST.search(relative):
        return None
    else:
        pats = list(PATTERNS)
    for name, rx in pats:
        m = rx.search(relative)
        if m:
            seed = m.groupdict().get("seed")
            return name, m.group("budget"), int(seed) if seed is not None else 0
    return None


def budget_of(text: str, unit: str, integers_are_fractions: bool):
    """A medssl budget (int count or float fraction) from a file name's budget text."""
    from medssl.splits import parse_budget

    t = text.strip().lower()
    if t.endswith("pct"):
        t = t[:-3] + "%"
    if unit == "fraction" and not t.endswith("%"):
        v = float(t)
        if not 0 < v <= 1:
            raise SplitError(f"budget {text!r} is not a fraction in (0, 1]")
        return v
    if unit == "count":
        v = float(t.rstrip("%"))
        if not v.is_integer() or t.endswith("%"):
            raise SplitError(f"budget {text!r} is not an image count")
        return parse_budget(int(v))
    if integers_are_fractions and re.fullmatch(r"1", t):
        return 1.0
    return parse_budget(t if ("." in t or "%" in t or "e" in t) else int(t))


# ----------------------------------------------------------------------------- reading the CSVs
def read_paths(path: Path, path_column: str | None = None) -> list[str]:
    """The image paths one split file lists, in file order."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, OSError) as e:
        raise SplitError(f"{path}: unreadable as CSV ({e})") from e
    if path_column is not None:
        if path_column not in df.columns:
            raise SplitError(f"{path}: no column {path_column!r} (columns {list(df.columns)[:10]})")
        col = path_column
    else:
        lower = {str(c).strip().lower(): c for c in df.columns}
        col = next((lower[c] for c in PATH_COLUMNS if c in lower), None)
        if col is None:
            header = [str(c) for c in df.columns]
            if len(header) == 1 and _looks_like_path(header[0]):   # a header-less list of paths
                df = pd.read_csv(path, dtype=str, keep_default_na=False, header=None)
                col = 0
            else:
                raise SplitError(f"{path}: no path column among {header[:10]}; expected one of "
                                 f"{list(PATH_COLUMNS)[:6]}... or pass --path-column")
    values = df[col].astype(str).str.strip()
    return values[values.ne("")].tolist()


def _looks_like_path(text: str) -> bool:
    t = text.lower()
    return "/" in t or "\\" in t or t.endswith(IMAGE_SUFFIXES)


def split_files(folder: Path) -> list[Path]:
    """The CSV files of a split folder (recursively), or the one file given."""
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise SplitError(f"{folder}: no such folder or file of published splits")
    files = sorted(p for p in folder.rglob("*.csv") if p.is_file())
    if not files:
        raise SplitError(f"{folder}: no .csv files in it")
    return files


# ----------------------------------------------------------------------------- matching paths
class _Matcher:
    """Maps published paths onto manifest paths (exact, data-root relative, then longest suffix)."""

    def __init__(self, manifest_paths: pd.Series, data_root: str | None):
        self.paths = set(manifest_paths.astype(str))
        self.root = None if data_root is None else str(data_root).replace("\\", "/").rstrip("/") + "/"
        self.dropped: dict[str, int] = {}
        self.added: dict[str, int] = {}
        self._tails: dict | None = None

    def _tail_index(self) -> dict:
        # manifest paths minus 1..3 leading folders -> the path (ambiguous tails removed)
        if self._tails is None:
            seen: dict[str, str | None] = {}
            for p in self.paths:
                parts = p.split("/")
                for j in range(1, min(4, len(parts))):
                    tail = "/".join(parts[j:])
                    seen[tail] = None if tail in seen and seen[tail] != p else p
            self._tails = {k: v for k, v in seen.items() if v is not None and k not in self.paths}
        return self._tails

    def __call__(self, raw: str) -> str | None:
        p = raw.replace("\\", "/")
        while p.startswith("./"):
            p = p[2:]
        if p in self.paths:
            return p
        if self.root and p.startswith(self.root) and p[len(self.root):] in self.paths:
            return p[len(self.root):]
        parts = p.split("/")
        for i in range(1, len(parts)):
            cand = "/".join(parts[i:])
            if cand in self.paths:
                prefix = "/".join(parts[:i]) + "/"
                self.dropped[prefix] = self.dropped.get(prefix, 0) + 1
                return cand
        tails = self._tail_index()
        for i in range(0, len(parts)):
            cand = "/".join(parts[i:])
            if cand in tails:
                full = tails[cand]
                added = full[: len(full) - len(cand)]
                if i:
                    prefix = "/".join(parts[:i]) + "/"
                    self.dropped[prefix] = self.dropped.get(prefix, 0) + 1
                self.added[added] = self.added.get(added, 0) + 1
                return full
        return None


# ----------------------------------------------------------------------------- the import
def import_budgets(folder: str | Path, manifest: pd.DataFrame, *, pattern: str | None = None,
                   path_column: str | None = None, budget_unit: str = "auto") -> tuple[pd.DataFrame, ImportReport]:
    """Read a folder of published split CSVs; return (budgets table `path, budget, seed`, report).

    manifest: a split manifest (medssl.manifest.load; `split` column, attrs["data_root"]).
    Raises SplitError when a file lists paths that are not training rows of the manifest (listing a
    few, where they are, and the file), when two files give the same (budget, seed), or when no file
    name carries a budget. budget_unit: "auto" (see module docstring), "fraction" or "count".
    """
    from medssl.splits import budget_label

    if budget_unit not in ("auto", "fraction", "count"):
        raise SplitError(f"budget_unit must be auto, fraction or count, not {budget_unit!r}")
    if "split" not in manifest.columns:
        raise SplitError("the manifest has no `split` column; run `medssl split` first (published subsets are "
                         "drawn from a training split, which must be the manifest's)")
    folder = Path(folder)
    base = folder if folder.is_dir() else folder.parent
    parsed, skipped = [], []
    for f in split_files(folder):
        rel = f.relative_to(base).as_posix()[: -len(".csv")]
        hit = parse_name(rel, pattern)
        if hit is None:
            skipped.append(f.relative_to(base).as_posix())
        else:
            parsed.append((f, *hit))
    if not parsed:
        raise SplitError(f"{folder}: no file name carries a budget (files: {skipped[:_SHOWN]}); name them like "
                         "train_semi_0.01-it0.csv or 1pct_seed0.csv, or pass --pattern with (?P<budget>...) and "
                         "(?P<seed>...) groups")
    fractions = [t for _, _, t, _ in parsed if re.fullmatch(r"0?\.\d+|\d+(\.\d+)?(%|pct)", t.lower())]
    ints_are_fractions = budget_unit == "auto" and bool(fractions)

    split = manifest["split"].astype(str).to_numpy()
    paths = manifest["path"].astype(str)
    where = dict(zip(paths, split))
    matcher = _Matcher(paths, manifest.attrs.get("data_root"))
    tables, rows, problems = [], [], []
    seen: dict[tuple, str] = {}
    for f, layout, text, seed in parsed:
        name = f.relative_to(base).as_posix()
        budget = budget_of(text, budget_unit, ints_are_fractions)
        label = budget_label(budget)
        if (label, seed) in seen:
            raise SplitError(f"{name} and {seen[(label, seed)]} both give budget {label} seed {seed}; keep one "
                             "(or pass --pattern to read the names differently)")
        seen[(label, seed)] = name
        listed = read_paths(f, path_column)
        mapped = [matcher(p) for p in listed]
        for raw, m in zip(listed, mapped):
            if m is None:
                problems.append((raw, "not in the manifest", name))
            elif where[m] != "train":
                problems.append((raw, f"in the manifest's {where[m]} split", name))
        good = list(dict.fromkeys(m for m in mapped if m is not None))
        tables.append(pd.DataFrame({"path": good, "budget": label, "seed": np.int64(seed)}))
        rows.append({"file": name, "layout": layout, "budget": label, "seed": int(seed), "n_listed": len(listed),
                     "n_images": len(good)})
    if problems:
        shown = "; ".join(f"{p!r} ({w}, listed in {n})" for p, w, n in problems[:_SHOWN])
        kinds = pd.Series([w for _, w, _ in problems]).value_counts().to_dict()
        raise SplitError(f"{len(problems)} imported path(s) are not training images of the manifest ({kinds}), e.g. "
                         f"{shown}. The published subsets must come from the manifest's train split: re-split with "
                         "`medssl split --keep-existing` on the official split, or check that the manifest covers "
                         "the same images")
    table = pd.concat(tables, ignore_index=True)
    table["seed"] = table["seed"].astype(np.int64)
    subsets = pd.DataFrame(rows).sort_values(["seed", "n_images", "budget"], kind="stable").reset_index(drop=True)
    report = ImportReport(subsets, sorted(matcher.dropped, key=matcher.dropped.get, reverse=True),
                          sorted(matcher.added, key=matcher.added.get, reverse=True), skipped,
                          nesting(table), int((split == "train").sum()))
    return table, report


def nesting(table: pd.DataFrame) -> dict:
    """Per seed: True when each smaller subset lies inside every larger one, else the first violation."""
    out = {}
    for seed, part in table.groupby("seed", sort=True):
        sets = sorted(((len(g), b, set(g["path"])) for b, g in part.groupby("budget", sort=False)), key=lambda t: t[0])
        verdict = True
        for (n_small, b_small, small), (_, b_large, large) in zip(sets, sets[1:]):
            outside = len(small - large)
            if outside:
                verdict = f"{b_small} not inside {b_large}: {outside} of {n_small} paths"
                break
        out[int(seed)] = verdict
    return out


def study_overrides(table: pd.DataFrame) -> str:
    """The --set line that makes a study use exactly the imported (budget, seed) grid."""
    from medssl.splits import parse_budget

    budgets = []
    for label in pd.unique(table["budget"]):
        b = parse_budget(label)
        budgets.append(repr(float(b)) if isinstance(b, float) else str(b))   # 1.0 (100%) must not read as 1 image
    seeds = ",".join(str(int(s)) for s in sorted(pd.unique(table["seed"])))
    return f"study.budgets=[{','.join(budgets)}] study.seeds=[{seeds}]"
