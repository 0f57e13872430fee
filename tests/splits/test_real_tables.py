"""Splits and budgets at full scale on the real CheXpert and NIH ChestX-ray14 tables (real patient structure)."""

from __future__ import annotations

import pandas as pd
import pytest

from medssl.commands.split import budgets_path
from medssl.cli import main
from medssl.manifest.schema import CHEXPERT_LABELS
from medssl.splits import assert_no_leakage, label_subsets, load_budgets, patient_split

NIH_LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
              "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")


@pytest.fixture(scope="module")
def chexpert(shared_data) -> pd.DataFrame:
    raw = pd.read_csv(shared_data / "metadata" / "chexpert_train.csv.gz")
    df = pd.DataFrame({"path": raw["Path"],
                       "patient_id": raw["Path"].str.extract(r"/(patient\d+)/", expand=False),
                       "study_id": raw["Path"].str.extract(r"/(patient\d+/study\d+)/", expand=False),
                       "view": raw["AP/PA"].fillna(raw["Frontal/Lateral"]), "modality": "xray"})
    return pd.concat([df, raw[list(CHEXPERT_LABELS)]], axis=1)


@pytest.fixture(scope="module")
def nih(shared_data) -> pd.DataFrame:
    raw = pd.read_csv(shared_data / "metadata" / "nih_cxr14_Data_Entry_2017_v2020.csv.gz")
    df = pd.DataFrame({"path": raw["Image Index"], "patient_id": raw["Patient ID"].astype(str),
                       "study_id": raw["Image Index"], "view": raw["View Position"], "modality": "xray"})
    findings = raw["Finding Labels"].str.get_dummies("|")
    for lab in NIH_LABELS:
        df[lab] = findings[lab].astype(float)
    return df


def check_nested_per_seed(table: pd.DataFrame):
    for _, g in table.groupby("seed"):
        sizes = g.groupby("budget", sort=False).size().sort_values()
        sets = [set(g.loc[g["budget"] == b, "path"]) for b in sizes.index]
        assert all(a <= b for a, b in zip(sets, sets[1:]))


def test_chexpert_full_table(chexpert):
    assert chexpert["patient_id"].nunique() == 64540
    out = patient_split(chexpert, val=0.1, test=0.1, seed=0)
    assert_no_leakage(out)
    pats = out.groupby("split")["patient_id"].nunique()
    assert pats["val"] == pats["test"] == 6454
    train = out[out["split"] == "train"]
    # stratified: the rarest label's prevalence is the same in every split to within 0.2 points
    prev = (out["Pleural Other"] == 1).groupby(out["split"]).mean()
    assert prev.max() - prev.min() < 0.002
    table = label_subsets(out, [250, 1000, 5000, 0.01, 0.1], [0, 1, 2])
    check_nested_per_seed(table)
    sizes = table[table["seed"] == 0].groupby("budget").size().to_dict()
    assert sizes == {"250": 250, "1000": 1000, "5000": 5000, "1%": round(0.01 * len(train)),
                     "10%": round(0.1 * len(train))}
    small = train[train["path"].isin(table.loc[(table.budget == "250") & (table.seed == 2), "path"])]
    assert ((small[list(CHEXPERT_LABELS)] == 1).any()).all()  # all 14 labels among 250 images


def test_nih_full_table_patient_budgets(nih):
    out = patient_split(nih, val=0.1, test=0.2, seed=1)
    assert_no_leakage(out)
    assert out.groupby("patient_id")["split"].nunique().max() == 1
    table = label_subsets(out, [500, 2000, 0.05], [0, 1], unit="patient")
    check_nested_per_seed(table)
    train = out[out["split"] == "train"]
    per_patient = train.groupby("patient_id").size()
    for (budget, seed), g in table.groupby(["budget", "seed"]):
        chosen = train.loc[train["path"].isin(g["path"]), "patient_id"].unique()
        assert len(g) == per_patient[chosen].sum()  # whole patients only
        assert (train.loc[train["path"].isin(g["path"]), list(NIH_LABELS)] == 1).any().all()


def test_cli_split_writes_manifest_and_budgets(tmp_path, nih, capsys):
    src = tmp_path / "nih.csv"
    sample = nih[nih["patient_id"].astype(int) < 2000]
    sample.to_csv(src, index=False)
    out = tmp_path / "out" / "nih.split.csv"
    rc = main(["split", str(src), "--out", str(out), "--test", "0.2", "--budgets", "100,5%,50",
               "--seeds", "0,1", "--unit", "patient"])
    assert rc == 0
    written = pd.read_csv(out, dtype={"patient_id": str})
    from medssl.manifest.table import load
    assert load(out).attrs["data_root"] == str(tmp_path)  # paths still resolve next to the input
    assert len(written) == len(sample) and set(written["split"]) == {"train", "val", "test"}
    assert_no_leakage(written)
    budgets = load_budgets(budgets_path(out))
    assert budgets_path(out).name == "nih.split.budgets.csv"
    assert set(budgets["budget"]) == {"50", "100", "5%"} and set(budgets["seed"]) == {0, 1}
    assert set(budgets["path"]) <= set(written.loc[written["split"] == "train", "path"])
    text = capsys.readouterr().out
    assert "patients" in text and "Hernia" in text and "5%" in text
    # a budget that does not fit is a user error (exit 2), and nothing is written
    rc = main(["split", str(src), "--out", str(tmp_path / "x.csv"), "--budgets", "100000"])
    assert rc == 2 and not (tmp_path / "x.csv").exists()
    assert "training split has only" in capsys.readouterr().err
