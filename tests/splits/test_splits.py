"""Patient-level splits and nested labeled budgets (medssl.splits), on random and real manifests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medssl.errors import LeakageError, SplitError
from medssl.splits import (assert_no_leakage, budget_label, budget_rows, label_subsets, labeled_rows,
                           load_budgets, parse_budget, parse_budgets, patient_split, resolve_budget)

HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_manifest(rng: np.random.Generator, n_patients: int, max_images: int = 4,
                  prevalences=(0.3, 0.05)) -> pd.DataFrame:
    """Random manifest: patients with 1..max_images images, labels in {1, 0, -1, blank}."""
    per = rng.integers(1, max_images + 1, n_patients)
    pid = np.repeat(np.arange(n_patients), per)
    n = len(pid)
    df = pd.DataFrame({"path": [f"img/{i:05d}.png" for i in range(n)],
                       "patient_id": [f"pat{p:04d}" for p in pid],
                       "study_id": [f"st{p}" for p in pid], "view": "PA", "modality": "xray"})
    for j, p in enumerate(prevalences):
        u = rng.random(n)
        df[f"L{j}"] = np.select([u < p, u < p + 0.1, u < p + 0.2], [1.0, -1.0, np.nan], 0.0)
    return df


manifests = st.builds(
    lambda seed, n, k, prev: make_manifest(np.random.default_rng(seed), n, k, prev),
    st.integers(0, 2**31), st.integers(12, 120), st.integers(1, 5),
    st.lists(st.sampled_from([0.0, 0.01, 0.05, 0.3]), min_size=0, max_size=4))


def patients_per_split(df):
    return df.groupby("split")["patient_id"].nunique().reindex(["train", "val", "test"], fill_value=0)


# ---------------------------------------------------------------------------- patient_split
@HYP
@given(df=manifests, seed=st.integers(0, 1000), val=st.sampled_from([0.0, 0.1, 0.2]),
       test=st.sampled_from([0.05, 0.1, 0.25]))
def test_split_keeps_patients_whole_with_requested_fractions(df, seed, val, test):
    out = patient_split(df, val=val, test=test, seed=seed)
    assert out.drop(columns="split").equals(df)
    assert set(out["split"]) <= {"train", "val", "test"}
    assert (out.groupby("patient_id")["split"].nunique() == 1).all()
    assert_no_leakage(out)
    n_pat = df["patient_id"].nunique()
    counts = patients_per_split(out)
    for name, frac in (("val", val), ("test", test)):
        assert counts[name] == (max(1, round(n_pat * frac)) if frac else 0)
        assert abs(counts[name] - n_pat * frac) <= 1
    # deterministic, and independent of row order
    assert out["split"].equals(patient_split(df, val=val, test=test, seed=seed)["split"])
    shuffled = patient_split(df.sample(frac=1.0, random_state=seed), val=val, test=test, seed=seed)
    assert shuffled["split"].sort_index().equals(out["split"])


def test_split_stratifies_a_rare_label_and_seeds_differ():
    rng = np.random.default_rng(0)
    df = make_manifest(rng, 2000, 3, prevalences=(0.3,))
    rare_patients = rng.choice(df["patient_id"].unique(), 40, replace=False)
    df["Rare"] = df["patient_id"].isin(rare_patients).astype(float)
    out = patient_split(df, val=0.1, test=0.2, seed=3)
    rare = out[out["Rare"] == 1].groupby("split")["patient_id"].nunique()
    assert abs(rare["val"] - 4) <= 1 and abs(rare["test"] - 8) <= 1 and abs(rare["train"] - 28) <= 2
    # image fractions follow the patient fractions closely (patients of all sizes are spread)
    img_frac = out["split"].value_counts(normalize=True)
    assert abs(img_frac["test"] - 0.2) < 0.02 and abs(img_frac["val"] - 0.1) < 0.02
    other = patient_split(df, val=0.1, test=0.2, seed=4)
    assert (other["split"] != out["split"]).mean() > 0.1


def test_split_errors_name_the_problem():
    df = make_manifest(np.random.default_rng(1), 2)
    with pytest.raises(SplitError, match="too few"):
        patient_split(df, val=0.1, test=0.1)
    with pytest.raises(SplitError, match="no rows"):
        patient_split(df.iloc[:0])
    with pytest.raises(SplitError, match="fractions"):
        patient_split(df, val=0.6, test=0.5)
    df.loc[0, "patient_id"] = None
    with pytest.raises(SplitError, match="1 row.*no 'patient_id'"):
        patient_split(df)


def test_keep_existing_honours_official_split_and_carves_missing_val():
    df = make_manifest(np.random.default_rng(2), 200, 3)
    pats = df["patient_id"].unique()
    official_test = set(pats[:40])
    df["split"] = np.where(df["patient_id"].isin(official_test), "testing", "train")
    df.loc[df["patient_id"] == pats[-1], "split"] = np.nan  # a blank patient gets a split too
    out = patient_split(df, val=0.1, test=0.1, seed=0, keep_existing=True)
    assert set(out.loc[out["patient_id"].isin(official_test), "split"]) == {"test"}
    assert set(out.loc[~out["patient_id"].isin(official_test), "split"]) <= {"train", "val"}
    # val carved from the 159 existing train patients: round(0.1 * 199 existing) = 20
    assert patients_per_split(out)["val"] == 20
    assert out["split"].notna().all()
    assert_no_leakage(out)


def test_keep_existing_rejects_bad_or_leaking_split():
    df = make_manifest(np.random.default_rng(3), 20, 3)
    df["split"] = "train"
    df.loc[0, "split"] = "holdout"
    with pytest.raises(SplitError, match="holdout"):
        patient_split(df, keep_existing=True)
    df["split"] = "train"
    leaking = df["patient_id"].value_counts().index[0]  # a patient with several images
    df.loc[df.index[df["patient_id"] == leaking][0], "split"] = "test"
    with pytest.raises(LeakageError, match=f"1 patient.*{leaking}: test\\+train"):
        patient_split(df, keep_existing=True)
    with pytest.raises(SplitError, match="keep_existing needs"):
        patient_split(df.drop(columns="split"), keep_existing=True)


def test_assert_no_leakage_counts_patients_and_rows():
    df = pd.DataFrame({"patient_id": ["a", "a", "b", "b", "c", "d"],
                       "split": ["train", "test", "val", "train", "test", None]})
    with pytest.raises(LeakageError) as e:
        assert_no_leakage(df)
    msg = str(e.value)
    assert "2 patient(s)" in msg and "4 rows" in msg and "a: test+train" in msg and "b: train+val" in msg
    assert_no_leakage(df.iloc[4:])            # c, d: fine (blank split ignored)
    assert_no_leakage(df.drop(columns="split"))  # nothing to check


# ---------------------------------------------------------------------------- budgets
def test_budget_parsing_and_canonical_labels():
    assert [budget_label(b) for b in (250, 0.01, 0.005, 1.0, "2.5%", "1", 250.0)] == \
        ["250", "1%", "0.5%", "100%", "2.5%", "1", "250"]
    assert parse_budget("1%") == 0.01 and parse_budget("250") == 250 and parse_budget("0.2") == 0.2
    assert all(parse_budget(budget_label(b)) == b for b in (7, 0.01, 0.123, 0.5))
    assert parse_budgets("250, 1%,0.01,500") == [250, 0.01, 500]
    for bad in (0, -3, 1.5, "abc", "150%", True):
        with pytest.raises(SplitError):
            parse_budget(bad)
    assert resolve_budget(0.1, 995) == 100 and resolve_budget(0.0001, 50) == 1
    with pytest.raises(SplitError, match="asks for 300 labeled images but the training split has only 200"):
        resolve_budget(300, 200)


def check_nested(table: pd.DataFrame, order: list[str]):
    for seed, g in table.groupby("seed"):
        sets = [set(g.loc[g["budget"] == b, "path"]) for b in order]
        for small, large in zip(sets, sets[1:]):
            assert small <= large, f"seed {seed}: budget not nested"


@HYP
@given(df=manifests, seeds=st.lists(st.integers(0, 50), min_size=1, max_size=3, unique=True),
       unit=st.sampled_from(["image", "patient"]))
def test_subsets_nested_stratified_and_whole(df, seeds, unit):
    split = patient_split(df, val=0.1, test=0.1, seed=0)
    train = split[split["split"] == "train"]
    n = len(train)
    budgets = sorted({1, 2, max(1, n // 4), max(1, n // 2), n})
    fracs = [0.3]
    table = label_subsets(split, budgets + fracs, seeds, unit=unit)
    assert list(table.columns) == ["path", "budget", "seed"]
    assert set(table["path"]) <= set(train["path"])
    order = [lab for _, lab in sorted({(resolve_budget(b, n), budget_label(b)) for b in budgets + fracs})]
    check_nested(table, order)
    assert table.equals(label_subsets(split, budgets + fracs, seeds, unit=unit))
    labels = [c for c in df.columns if c.startswith("L")]
    pos_labels = [c for c in labels if (train[c] == 1).any()]
    images_per_patient = train.groupby("patient_id").size()
    for (budget, seed), g in table.groupby(["budget", "seed"]):
        want = resolve_budget(budget, n)
        rows = train[train["path"].isin(g["path"])]
        assert g["path"].is_unique
        if unit == "image":
            assert len(g) == want
        else:
            # whole patients; the shortest prefix reaching the budget overshoots by < one patient
            chosen = rows["patient_id"].unique()
            assert len(g) == images_per_patient[chosen].sum()
            assert want <= len(g) < want + images_per_patient[chosen].max()
        if len(rows[["patient_id"] if unit == "patient" else ["path"]].drop_duplicates()) >= len(pos_labels):
            for c in pos_labels:
                assert (rows[c] == 1).any(), f"budget {budget} seed {seed} lacks a positive of {c}"


def test_subsets_differ_across_seeds_and_follow_prevalence():
    rng = np.random.default_rng(5)
    df = make_manifest(rng, 3000, 2, prevalences=(0.2, 0.004))
    split = patient_split(df, seed=0)
    table = label_subsets(split, [20, 400], [0, 1])
    s0, s1 = (set(table[(table.seed == s) & (table.budget == "400")].path) for s in (0, 1))
    assert len(s0 & s1) < 200
    by_patient = label_subsets(split, [400], [0, 1], unit="patient")
    p0, p1 = (set(by_patient.loc[by_patient.seed == s, "path"]) for s in (0, 1))
    assert len(p0 & p1) < 200 and p0 != s0
    train = split[split["split"] == "train"].set_index("path")
    for seed in (0, 1):
        sub = train.loc[table[(table.seed == seed) & (table.budget == "400")].path]
        assert abs((sub["L0"] == 1).mean() - (train["L0"] == 1).mean()) < 0.03
        small = train.loc[table[(table.seed == seed) & (table.budget == "20")].path]
        assert (small["L1"] == 1).any()  # the rare label (about 20 positives in 5000) is in the 20


def test_subset_errors():
    df = make_manifest(np.random.default_rng(6), 30)
    with pytest.raises(SplitError, match="no 'split' column"):
        label_subsets(df, [5], [0])
    split = patient_split(df)
    with pytest.raises(SplitError, match="training split has only"):
        label_subsets(split, [10_000], [0])
    with pytest.raises(SplitError, match="unit"):
        label_subsets(split, [5], [0], unit="study")
    assert len(label_subsets(df, [5], [0], split=None)) == 5


def test_budget_tables_round_trip(tmp_path):
    df = make_manifest(np.random.default_rng(7), 60)
    split = patient_split(df)
    table = label_subsets(split, [10, 0.5], [0, 1])
    table.to_csv(tmp_path / "b.csv", index=False)
    loaded = load_budgets(tmp_path / "b.csv")
    assert loaded.equals(table)
    assert set(budget_rows(loaded, 0.5, 1)["path"]) == set(table[(table.budget == "50%") & (table.seed == 1)].path)
    rows = labeled_rows(split, loaded, "10", 0)
    assert len(rows) == 10 and (rows["split"] == "train").all()
    with pytest.raises(SplitError, match="no budget 20 with seed 0"):
        budget_rows(loaded, 20, 0)
    with pytest.raises(SplitError, match="another manifest"):
        labeled_rows(split.iloc[:5], loaded, 10, 0)
    with pytest.raises(SplitError, match="lacks column"):
        (tmp_path / "bad.csv").write_text("path,seed\na,0\n")
        load_budgets(tmp_path / "bad.csv")
