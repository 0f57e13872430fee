"""Patient-level splits and nested labeled subsets ("budgets"). Pure pandas/numpy, no torch.

* `patient_split` adds a `split` column (train/val/test); every patient lands in exactly one split,
  stratified on patient-level positives of the label columns.
* `label_subsets` draws, per seed, nested labeled subsets of the training rows: each smaller budget's
  rows are a subset of every larger budget's rows, and every label with a positive in train has a
  positive in each subset large enough to hold one per label.
* `assert_no_leakage` raises `LeakageError` when a patient appears in two splits.

How the stratification works (one idea for both functions, all vectorised):
units (patients, or images) are first grouped into *strata* by their rarest positive label (label
rarity counted over units; units without any positive form the last stratum), and inside a stratum
by their exact positive-label *signature*. Only a value of exactly 1 counts as positive: uncertain
(-1), 0 and blank are "not positive". Then

* splits: units are ordered by (stratum, signature, size bucket, random) and assigned with an exact
  integer "Bresenham" spread, so every contiguous run - hence every stratum and signature - gets its
  share of val/test within +-1 unit, and the totals are exact;
* subsets: each unit gets a position in [0, 1) that spreads its signature evenly over its stratum
  and its stratum evenly over the ordering (systematic stratified sampling); budgets take prefixes of
  that order, which makes them nested by construction. A short greedy "coverage" prefix that holds a
  positive of every label (rarest first) goes in front.

Budgets: an int is a number of labeled training images, a float in (0, 1] a fraction of the training
images (0.01 = 1%; note 1.0 = 100% while 1 = one image). `budget_label` gives the canonical string
("250", "1%", "0.5%") used in the budgets table, file names and reports.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from medssl.errors import LeakageError, ManifestError, SplitError
from medssl.manifest.schema import label_columns

SPLITS = ("train", "val", "test")
#: Official split names we accept with `keep_existing` and their medssl name.
SPLIT_SYNONYMS = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "validate": "val", "dev": "val", "test": "test", "testing": "test"}
BUDGET_COLUMNS = ("path", "budget", "seed")
_SPLIT_SALT = 0x5B117
_SUBSET_SALT = 0xB0D6E7

Budget = int | float


# ============================================================================ budgets
def parse_budget(value) -> Budget:
    """One budget from an int, a float or a string ("250", "0.01", "1%", "2.5%").

    Ints (and integral numbers > 1 such as 250.0) are image counts; floats in (0, 1] and strings
    ending in "%" are fractions of the training images. "1" is one image, "1.0" is 100%.
    """
    if isinstance(value, bool):
        raise SplitError(f"budget {value!r} is not a number; use e.g. 250 (images) or 0.01 (1%)")
    if isinstance(value, str):
        text = value.strip()
        try:
            if text.endswith("%"):
                pct = float(text[:-1])
                if not 0 < pct <= 100:
                    raise ValueError
                return round(pct / 100.0, 10)  # "12.3%" -> 0.123 exactly, not 0.12300000000000001
            if text.lstrip("+").isdigit():
                value = int(text)
            else:
                value = float(text)
        except ValueError:
            raise SplitError(f"budget {value!r} is not understood; use a count (250), a fraction "
                             f"in (0, 1] (0.01) or a percentage (1%)") from None
    if isinstance(value, numbers.Integral):
        if value < 1:
            raise SplitError(f"budget {value} must be >= 1 image")
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if 0 < value <= 1:
            return value
        if value > 1 and value.is_integer():
            return int(value)
        raise SplitError(f"budget {value} is neither a fraction in (0, 1] nor a whole number of "
                         f"images; use e.g. 0.05 for 5% or 250 for 250 images")
    raise SplitError(f"budget {value!r} is not a number")


def parse_budgets(values: str | Iterable) -> list[Budget]:
    """A list of budgets from "250,500,1%" or an iterable; duplicates (same label) removed."""
    items = values.split(",") if isinstance(values, str) else list(values)
    out: dict[str, Budget] = {}
    for v in items:
        if isinstance(v, str) and not v.strip():
            continue
        b = parse_budget(v)
        out.setdefault(budget_label(b), b)
    return list(out.values())


def budget_label(budget) -> str:
    """Canonical string of a budget: 250 -> "250", 0.01 -> "1%", 0.005 -> "0.5%", 1.0 -> "100%".

    Fractions are written as percentages with up to 6 significant digits; `parse_budget` reads
    the label back. Safe in file names (no "/" or spaces).
    """
    b = parse_budget(budget)
    if isinstance(b, int):
        return str(b)
    return f"{round(b * 100, 8):g}%"


def resolve_budget(budget, n_train: int) -> int:
    """Number of training images a budget asks for: ints as is, fractions round(f * n_train) >= 1.

    Raises SplitError when the budget exceeds the training set.
    """
    b = parse_budget(budget)
    n = b if isinstance(b, int) else max(1, int(round(b * n_train)))
    if n > n_train:
        raise SplitError(f"budget {budget_label(b)} asks for {n} labeled images but the training "
                         f"split has only {n_train}; use budgets <= {n_train} or a fraction such "
                         f"as 0.5 (= {max(1, round(0.5 * n_train))} images)")
    return n


def load_budgets(path: str | Path) -> pd.DataFrame:
    """Read a budgets table (`path, budget, seed`; CSV or Parquet) with budget as canonical str."""
    path = Path(path)
    if not path.is_file():
        raise SplitError(f"budgets table {path} does not exist; create it with "
                         f"`medssl split MANIFEST --out OUT --budgets 250,1%`")
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path, dtype={"path": str, "budget": str}, keep_default_na=False)
    missing = [c for c in BUDGET_COLUMNS if c not in df.columns]
    if missing:
        raise SplitError(f"budgets table {path} lacks column(s) {missing}; expected "
                         f"{list(BUDGET_COLUMNS)} (written by `medssl split --budgets`)")
    df = df[list(BUDGET_COLUMNS)].copy()
    labels = {b: budget_label(b) for b in pd.unique(df["budget"].astype(str))}
    df["budget"] = df["budget"].astype(str).map(labels)
    df["seed"] = df["seed"].astype(np.int64)
    return df


def budget_rows(budgets_df: pd.DataFrame, budget, seed: int) -> pd.DataFrame:
    """Rows (`path, budget, seed`) of one budget and seed; SplitError listing what exists if absent."""
    label = budget_label(budget)
    sel = budgets_df[(budgets_df["budget"].astype(str) == label) & (budgets_df["seed"] == int(seed))]
    if sel.empty:
        have = sorted({(str(b), int(s)) for b, s in zip(budgets_df["budget"], budgets_df["seed"])})
        raise SplitError(f"the budgets table has no budget {label} with seed {seed}; available "
                         f"(budget, seed): {have[:20]}; re-run `medssl split --budgets ... --seeds ...`")
    return sel


def labeled_rows(manifest: pd.DataFrame, budgets_df: pd.DataFrame, budget, seed: int) -> pd.DataFrame:
    """Manifest rows of the labeled subset `budget`/`seed`; SplitError if the tables do not match."""
    paths = budget_rows(budgets_df, budget, seed)["path"]
    mask = manifest["path"].isin(paths)
    n_found = manifest.loc[mask, "path"].nunique()
    if n_found != paths.nunique():
        raise SplitError(f"{paths.nunique() - n_found} path(s) of budget {budget_label(budget)} "
                         f"seed {seed} are not in the manifest; the budgets table belongs to another "
                         f"manifest - re-run `medssl split` on this one")
    return manifest[mask]


# ============================================================================ shared helpers
def _positives(df: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """(rows, labels) bool: exactly 1 is positive; 0, -1, blank and non-numbers are not."""
    if not labels:
        return np.zeros((len(df), 0), dtype=bool)
    missing = [c for c in labels if c not in df.columns]
    if missing:
        raise SplitError(f"label column(s) {missing} are not in the manifest; "
                         f"columns are {list(df.columns)}")
    try:
        values = df[list(labels)].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        values = df[list(labels)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    return values == 1.0


def _group_codes(df: pd.DataFrame, by: str) -> tuple[np.ndarray, np.ndarray]:
    """Codes 0..U-1 per row of the sorted unique values of `by` (so row order does not matter)."""
    if by not in df.columns:
        raise SplitError(f"column '{by}' is not in the manifest; columns are {list(df.columns)}")
    col = df[by]
    n_missing = int(col.isna().sum())
    if n_missing:
        raise SplitError(f"{n_missing} row(s) have no '{by}'; every image needs one (use the study "
                         f"or image id as a stand-in for unknown patients)")
    codes, uniques = pd.factorize(col.astype(str), sort=True)
    return codes.astype(np.int64), np.asarray(uniques)


def _unit_table(codes: np.ndarray, pos: np.ndarray, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    """Per unit: any-positive (U, L) bool and number of rows (U,)."""
    rows = np.bincount(codes, minlength=n_units)
    if pos.shape[1] == 0 or len(codes) == 0:
        return np.zeros((n_units, pos.shape[1]), dtype=bool), rows
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(rows)[:-1]])
    unit_pos = np.maximum.reduceat(pos[order].view(np.uint8), starts, axis=0) > 0
    return unit_pos, rows


def _strata(unit_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per unit: stratum (rank of its rarest positive label; no positive = last) and signature code."""
    n_units, n_labels = unit_pos.shape
    if n_labels == 0:
        return np.zeros(n_units, np.int64), np.zeros(n_units, np.int64)
    counts = unit_pos.sum(axis=0)
    # rarity rank of each label (labels without positives never decide a stratum)
    rank = np.empty(n_labels, np.int64)
    rank[np.lexsort((np.arange(n_labels), counts))] = np.arange(n_labels)
    stratum = np.where(unit_pos, rank[None, :], n_labels).min(axis=1)
    packed = np.packbits(unit_pos, axis=1)
    _, signature = np.unique(packed, axis=0, return_inverse=True)
    return stratum, signature.reshape(-1).astype(np.int64)


def _rank_within(groups: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each item inside its group when sorted by key, and the group's size per item."""
    order = np.lexsort((key, groups))
    sizes = np.bincount(groups)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(len(groups), np.int64)
    rank[order] = np.arange(len(groups)) - starts[groups[order]]
    return rank, sizes[groups]


def _spread(items: int, chosen: int, phase: int) -> np.ndarray:
    """Exact integer spread: bool mask of `chosen` of `items` positions, evenly spaced."""
    k = np.arange(items, dtype=np.int64)
    return ((k + 1) * chosen + phase) // max(items, 1) - (k * chosen + phase) // max(items, 1) > 0


# ============================================================================ patient split
def _allocate(unit_pos: np.ndarray, unit_rows: np.ndarray, n_val: int, n_test: int,
              rng: np.random.Generator) -> np.ndarray:
    """Split codes (0 train, 1 val, 2 test) for units; exactly n_val val and n_test test units."""
    n = len(unit_rows)
    stratum, signature = _strata(unit_pos)
    size_bucket = -np.floor(np.log2(np.maximum(unit_rows, 1))).astype(np.int64)  # big ones first
    order = np.lexsort((rng.random(n), size_bucket, signature, stratum))
    n_hold = n_val + n_test
    hold = _spread(n, n_hold, int(rng.integers(n)) if n else 0)
    test_in_hold = _spread(n_hold, n_test, int(rng.integers(n_hold)) if n_hold else 0)
    codes_sorted = np.zeros(n, np.int8)
    codes_sorted[hold] = np.where(test_in_hold, 2, 1)
    codes = np.empty(n, np.int8)
    codes[order] = codes_sorted
    return codes


def _split_counts(n_units: int, val: float, test: float, what: str,
                  at_least_one: bool = True) -> tuple[int, int]:
    """Units for val and test: round(n * fraction), at least 1 when the fraction is > 0 (if asked)."""
    low = 1 if at_least_one else 0
    n_val = max(low, round(n_units * val)) if val > 0 else 0
    n_test = max(low, round(n_units * test)) if test > 0 else 0
    if n_units and n_val + n_test >= n_units and at_least_one:
        raise SplitError(f"{n_units} {what} are too few for val={val} and test={test}: train would "
                         f"be empty; add data, lower --val/--test or set one of them to 0")
    return n_val, n_test


def _existing_split(df: pd.DataFrame) -> pd.Series:
    """The official split column normalised to train/val/test (NaN where blank)."""
    col = "split" if "split" in df.columns else "source_split" if "source_split" in df.columns else None
    if col is None:
        raise SplitError("keep_existing needs a 'split' (or 'source_split') column in the manifest; "
                         "drop --keep-existing to split by patient")
    raw = df[col]
    text = raw.astype(str).str.strip().str.lower()
    blank = raw.isna() | (text == "")
    norm = text.map(SPLIT_SYNONYMS)
    bad = norm.isna() & ~blank
    if bad.any():
        values = sorted(pd.unique(raw[bad].astype(str)))[:10]
        raise SplitError(f"column '{col}' has unknown split value(s) {values}; allowed: "
                         f"{sorted(SPLIT_SYNONYMS)} or blank (blank rows are split by patient)")
    return norm.where(~blank)


def patient_split(df: pd.DataFrame, *, val: float = 0.1, test: float = 0.1, seed: int = 0,
                  by: str = "patient_id", stratify: bool = True, keep_existing: bool = False,
                  labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Copy of `df` with a `split` column in {train, val, test}; whole patients go to one split.

    val/test are fractions of *patients* (each rounded, at least 1 patient when > 0, exact per
    seed). Stratified on patient-level positives (a patient is positive for a label if any of its
    images is 1) of `labels` (default: all label columns). Deterministic per seed and independent
    of row order.

    keep_existing=True honours an existing `split` (or `source_split`) column: synonyms such as
    "valid" become "val", unknown values raise SplitError, a patient in two official splits raises
    LeakageError. Patients with a blank split are split with val/test. A requested split that the
    existing column lacks (e.g. Kermany has train/test but no val) is carved out of the existing
    train patients: round(fraction x patients-with-an-existing-split) of them, stratified.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise SplitError(f"val={val} and test={test} must be fractions in [0, 1) summing to < 1")
    if df.empty:
        raise SplitError("the manifest has no rows to split")
    codes, uniques = _group_codes(df, by)
    n_units = len(uniques)
    if labels is None:
        labels = label_columns(df.columns) if stratify else []
    pos = _positives(df, labels if stratify else [])
    unit_pos, unit_rows = _unit_table(codes, pos, n_units)
    rng = np.random.default_rng([_SPLIT_SALT, int(seed)])

    unit_split = np.zeros(n_units, np.int8)
    if not keep_existing:
        n_val, n_test = _split_counts(n_units, val, test, f"patients ('{by}')")
        unit_split = _allocate(unit_pos, unit_rows, n_val, n_test, rng)
    else:
        existing = _existing_split(df)
        check = pd.DataFrame({by: df[by].to_numpy(), "split": existing.to_numpy()})
        assert_no_leakage(check, by=by, split_col="split")
        ex_codes = existing.map({"train": 0, "val": 1, "test": 2}).to_numpy(np.float64)
        # per unit: the (unique) existing code, -1 where all of its rows are blank
        unit_ex = np.full(n_units, -1, np.int64)
        has = ~np.isnan(ex_codes)
        unit_ex[codes[has]] = ex_codes[has].astype(np.int64)
        unit_split[:] = np.where(unit_ex >= 0, unit_ex, 0)
        free = np.flatnonzero(unit_ex < 0)
        if len(free):
            n_val, n_test = _split_counts(len(free), val, test, "patients with a blank split",
                                          at_least_one=False)
            unit_split[free] = _allocate(unit_pos[free], unit_rows[free], n_val, n_test, rng)
        n_known = int((unit_ex >= 0).sum())
        for code, frac in ((1, val), (2, test)):
            if frac > 0 and n_known and not (unit_ex == code).any():
                train_units = np.flatnonzero(unit_ex == 0)
                want = max(1, round(n_known * frac))
                if want >= len(train_units):
                    raise SplitError(f"cannot carve {SPLITS[code]}={frac} ({want} patients) out of "
                                     f"{len(train_units)} existing train patients; lower the fraction")
                n_val, n_test = (want, 0) if code == 1 else (0, want)
                carved = _allocate(unit_pos[train_units], unit_rows[train_units], n_val, n_test, rng)
                unit_split[train_units[carved > 0]] = code

    out = df.copy()
    out["split"] = pd.Categorical.from_codes(unit_split[codes], categories=list(SPLITS)).astype(str)
    return out


def assert_no_leakage(df: pd.DataFrame, *, by: str = "patient_id", split_col: str = "split") -> None:
    """Raise LeakageError if any `by` value (patient) has rows in more than one split.

    A manifest without `split_col` has nothing to check. Rows with a blank split or a blank
    patient id are ignored here (the manifest validator reports blank ids).
    """
    if split_col not in df.columns:
        return
    if by not in df.columns:
        raise ManifestError(f"cannot check patient leakage: column '{by}' is missing; "
                            f"the manifest needs one patient id per row")
    pairs = df[[by, split_col]].dropna().drop_duplicates()
    n_splits = pairs.groupby(by, sort=False)[split_col].nunique()
    leaking = n_splits[n_splits > 1]
    if leaking.empty:
        return
    examples = pairs[pairs[by].isin(leaking.index[:5])]
    desc = "; ".join(f"{pid}: {'+'.join(sorted(map(str, g[split_col])))}"
                     for pid, g in examples.groupby(by, sort=True))
    n_rows = int(df[by].isin(leaking.index).sum())
    raise LeakageError(f"{len(leaking)} patient(s) ('{by}') appear in more than one '{split_col}' "
                       f"({n_rows} rows), e.g. {desc}. Re-split by patient with `medssl split "
                       f"MANIFEST --out OUT` (without --keep-existing) or fix the '{split_col}' column")


# ============================================================================ labeled subsets
def _subset_order(unit_pos: np.ndarray, unit_rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit indices in the order budgets take them (every prefix is a stratified sample)."""
    n, n_labels = unit_pos.shape
    stratum, signature = _strata(unit_pos)
    # spread each signature evenly inside its stratum, then each stratum over the whole order
    r_sig, n_sig = _rank_within(signature, rng.random(n))
    inner = (r_sig + rng.random(n)) / n_sig
    r_str, n_str = _rank_within(stratum, inner)
    position = (r_str + rng.random(n)) / n_str
    # coverage prefix: for each label (rarest first) not yet covered, one of its positive units -
    # the smallest (less overshoot for whole patients), then the one covering most uncovered
    # labels, then the earliest position
    covered = np.zeros(n_labels, bool)
    first: list[int] = []
    counts = unit_pos.sum(axis=0)
    for lab in np.lexsort((np.arange(n_labels), counts)):
        if counts[lab] == 0 or covered[lab]:
            continue
        cand = np.flatnonzero(unit_pos[:, lab])
        gain = unit_pos[cand][:, ~covered].sum(axis=1)
        best = cand[np.lexsort((position[cand], -gain, unit_rows[cand]))[0]]
        first.append(int(best))
        covered |= unit_pos[best]
    position[first] = -1.0 + np.arange(len(first)) / max(len(first), 1)
    return np.argsort(position, kind="stable")


def label_subsets(df: pd.DataFrame, budgets, seeds, *, labels: Sequence[str] | None = None,
                  unit: str = "image", split: str | None = "train", by: str = "patient_id") -> pd.DataFrame:
    """Nested, stratified labeled subsets of the `split` rows: a table `path, budget, seed`.

    budgets: ints (images) and/or fractions in (0, 1] of the split's images, mixed freely; sorted by
    the image count they resolve to. For each seed the budgets are prefixes of one stratified order,
    so smaller budgets are subsets of larger ones; a positive (value 1) of every label with a
    positive in the split is in every subset with at least as many units as such labels.
    unit="image": exactly the budget's image count (rows sharing a `path` count and go together).
    unit="patient": whole patients are added in order until the image count reaches the budget;
    the subset is the shortest such prefix, so it holds >= budget images and overshoots by less
    than the last patient's image count. A budget larger than the split raises SplitError.
    `budget` holds `budget_label(b)`; `seed` the seed. Deterministic per seed.
    """
    if unit not in ("image", "patient"):
        raise SplitError(f"unit must be 'image' or 'patient', got {unit!r}")
    if split is not None:
        if "split" not in df.columns:
            raise SplitError("the manifest has no 'split' column; run `medssl split` (patient_split) "
                             "first, or pass split=None to draw from all rows")
        df = df[df["split"] == split]
    if df.empty:
        raise SplitError(f"no rows in split {split!r} to draw labeled subsets from")
    if "path" not in df.columns:
        raise SplitError("the manifest has no 'path' column")
    budgets = parse_budgets(budgets)
    seeds = [int(s) for s in seeds]
    n_rows = len(df)
    resolved = sorted(((resolve_budget(b, n_rows), budget_label(b)) for b in budgets))
    if labels is None:
        labels = label_columns(df.columns)
    pos = _positives(df, labels)
    codes, uniques = _group_codes(df, "path" if unit == "image" else by)
    unit_pos, unit_rows = _unit_table(codes, pos, len(uniques))
    paths = df["path"].to_numpy()

    tables = []
    for seed in seeds:
        rng = np.random.default_rng([_SUBSET_SALT, seed])
        order = _subset_order(unit_pos, unit_rows, rng)
        unit_rank = np.empty(len(order), np.int64)
        unit_rank[order] = np.arange(len(order))
        row_rank = unit_rank[codes]
        cum_rows = np.cumsum(unit_rows[order])
        for n_images, label in resolved:
            last = int(np.searchsorted(cum_rows, n_images))  # first prefix with >= n_images rows
            take = np.flatnonzero(row_rank <= last)
            tables.append(pd.DataFrame({"path": paths[take], "budget": label, "seed": seed}))
    out = pd.concat(tables, ignore_index=True)
    out["seed"] = out["seed"].astype(np.int64)
    return out


_VAL_SUBSET_SALT = 0x7A1DA7E

#: `study.val_labels` values besides a count: "budget" (a labelled val set no larger than the training
#: budget) and "all" (every val image).
VAL_LABEL_MODES = ("budget", "all")


def val_label_count(val_labels, n_train_labeled: int, n_val: int) -> int:
    """How many val images may carry labels: "all" -> n_val, "budget" -> min(budget, n_val), N -> min(N, n_val)."""
    if val_labels == "all":
        return n_val
    if val_labels == "budget":
        return min(int(n_train_labeled), n_val)
    if isinstance(val_labels, numbers.Integral) and not isinstance(val_labels, bool) and val_labels >= 1:
        return min(int(val_labels), n_val)
    raise SplitError(f"study.val_labels: {val_labels!r} is not allowed; use 'budget', 'all' or a count >= 1")


def val_label_subset(df: pd.DataFrame, n_images: int, seed: int, *, labels: Sequence[str] | None = None,
                     by: str = "patient_id") -> np.ndarray:
    """Paths of the labelled validation subset: whole val patients, at most `n_images` images.

    The patients come in one stratified order per seed (the order `label_subsets` uses, positives of
    every label first), and the subset is the longest prefix with <= n_images images (at least one
    patient), so the subsets of one seed are nested as n_images grows. All val rows when n_images
    covers them. A label budget of 100 then selects on <= 100 labelled val images, not on the
    whole val split: the labels a hospital would have to provide for model selection.
    """
    val = df[df["split"] == "val"] if "split" in df.columns else None
    if val is None or val.empty:
        raise SplitError("no 'val' rows to draw a labelled validation subset from; run `medssl split` with val > 0")
    if n_images >= len(val):
        return val["path"].to_numpy()
    if labels is None:
        labels = label_columns(val.columns)
    codes, uniques = _group_codes(val, by)
    unit_pos, unit_rows = _unit_table(codes, _positives(val, labels), len(uniques))
    order = _subset_order(unit_pos, unit_rows, np.random.default_rng([_VAL_SUBSET_SALT, int(seed)]))
    cum = np.cumsum(unit_rows[order])
    n_units = max(1, int(np.searchsorted(cum, n_images, side="right")))
    keep = np.zeros(len(uniques), bool)
    keep[order[:n_units]] = True
    return val["path"].to_numpy()[keep[codes]]


def split_summary(df: pd.DataFrame, *, by: str = "patient_id",
                  labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Per split: images, patients and each label's prevalence (fraction of images that are 1)."""
    if labels is None:
        labels = label_columns(df.columns)
    pos = pd.DataFrame(_positives(df, labels), columns=list(labels), index=df.index)
    grouped = df.groupby("split", sort=False)
    table = pd.DataFrame({"images": grouped.size(), "patients": grouped[by].nunique()})
    table = table.join(pos.groupby(df["split"], sort=False).mean())
    order = [s for s in SPLITS if s in table.index] + [s for s in table.index if s not in SPLITS]
    return table.loc[order]
