"""Published label-fraction splits (MedAug / MoCo-CXR / generic layouts) imported as medssl budgets."""

from __future__ import annotations

import pandas as pd
import pytest

from medssl.cli import main
from medssl.errors import SplitError
from medssl.manifest import load, save
from medssl.manifest.published_splits import import_budgets, study_overrides
from medssl.splits import budget_rows, load_budgets

N = 40   # patients, one frontal image each: 30 train, 5 val, 5 test
FOREIGN = "/deep/group/CheXpert/"


def _rel(i: int) -> str:
    return f"CheXpert-v1.0-small/train/patient{i:05d}/study1/view1_frontal.jpg"


@pytest.fixture
def manifest(tmp_path):
    split = ["train"] * 30 + ["val"] * 5 + ["test"] * 5
    df = pd.DataFrame({"path": [_rel(i) for i in range(N)], "patient_id": [f"p{i}" for i in range(N)],
                       "study_id": [f"s{i}" for i in range(N)], "view": "PA", "modality": "DX", "split": split,
                       "Edema": [float(i % 2) for i in range(N)]})
    df.attrs["data_root"] = str(tmp_path / "data")
    save(df, tmp_path / "m.split.csv")
    return tmp_path / "m.split.csv"


def _medaug_csv(path, ids):
    """MedAug's label_fractions CSV: an unnamed index column, CheXpert columns, absolute foreign paths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"Path": [FOREIGN + _rel(i) for i in ids], "Sex": "Male", "Age": 50, "Frontal/Lateral": "Frontal",
                  "AP/PA": "PA", "Edema": 1.0}, index=[i * 7 for i in ids]).to_csv(path)


def test_medaug_layout(tmp_path, manifest):
    d = tmp_path / "label_fractions"
    _medaug_csv(d / "train_semi_0.1-it0.csv", [0, 1, 2])
    _medaug_csv(d / "train_semi_0.1-it1.csv", [3, 4, 5])
    _medaug_csv(d / "train_semi_0.5-it0.csv", list(range(15)))
    _medaug_csv(d / "valid.csv", [30, 31])                   # the validation list: not a subset, skipped
    m = load(manifest)
    table, report = import_budgets(d, m)
    assert set(zip(table["budget"], table["seed"])) == {("10%", 0), ("10%", 1), ("50%", 0)}
    assert budget_rows(table, 0.1, 1)["path"].tolist() == [_rel(3), _rel(4), _rel(5)]
    assert report.prefixes_dropped == [FOREIGN] and report.skipped_files == ["valid.csv"]
    assert report.nested == {0: True, 1: True}
    assert "nested" in report.text() and "10%" in report.text()
    assert study_overrides(table) == "study.budgets=[0.1,0.5] study.seeds=[0,1]"
    # what fine-tuning reads
    from medssl.finetune.data import labeled_train_rows

    table.to_csv(tmp_path / "b.csv", index=False)
    rows = labeled_train_rows(m, load_budgets(tmp_path / "b.csv"), 0.5, 0)
    assert sorted(m["path"].iloc[rows]) == sorted(_rel(i) for i in range(15))


def test_mocoxr_layout_full_fraction_and_missing_prefix(tmp_path, manifest):
    d = tmp_path / "shenzhen"
    d.mkdir()
    # paths relative to a folder INSIDE the manifest's layout: the manifest prefix is added back
    pd.DataFrame({"Path": [_rel(i).split("/", 1)[1] for i in range(10)]}).to_csv(d / "chexpert_like_0.25_0.csv")
    pd.DataFrame({"Path": [_rel(i).split("/", 1)[1] for i in range(30)]}).to_csv(d / "chexpert_like_1_0.csv")
    pd.DataFrame({"Path": [_rel(i) for i in range(30, 35)]}).to_csv(d / "chexpert_like_val.csv")
    table, report = import_budgets(d, load(manifest))
    assert set(table["budget"]) == {"25%", "100%"}            # 1 among fractions is the whole training set
    assert len(budget_rows(table, 1.0, 0)) == 30
    assert report.prefixes_added == ["CheXpert-v1.0-small/"]
    assert report.skipped_files == ["chexpert_like_val.csv"] and report.nested == {0: True}
    assert "1.0" in study_overrides(table)


def test_generic_names_counts_and_nesting_report(tmp_path, manifest):
    d = tmp_path / "g"
    d.mkdir()
    # header-less path lists, relative paths, counts in the name
    (d / "n3_seed0.csv").write_text("\n".join([_rel(0), _rel(1), _rel(20)]) + "\n")
    (d / "n5_seed0.csv").write_text("\n".join(_rel(i) for i in range(5)) + "\n")
    table, report = import_budgets(d, load(manifest))
    assert set(table["budget"]) == {"3", "5"}
    assert report.nested[0] == "3 not inside 5: 1 of 3 paths"
    assert "NOT nested" in report.text()
    custom, _ = import_budgets(d, load(manifest), pattern=r"n(?P<budget>\d+)_seed(?P<seed>\d+)$", budget_unit="count")
    assert custom.equals(table)


def test_paths_outside_the_train_split_are_refused_with_where_they_are(tmp_path, manifest):
    d = tmp_path / "bad"
    d.mkdir()
    pd.DataFrame({"Path": [_rel(0), _rel(31), _rel(36), "elsewhere/x.jpg"]}).to_csv(d / "train_0.1.csv", index=False)
    with pytest.raises(SplitError) as e:
        import_budgets(d, load(manifest))
    msg = str(e.value)
    assert "3 imported path(s) are not training images" in msg
    assert "in the manifest's val split" in msg and "in the manifest's test split" in msg
    assert "not in the manifest" in msg and "listed in train_0.1.csv" in msg and _rel(31) in msg


def test_other_refusals(tmp_path, manifest):
    d = tmp_path / "dups"
    d.mkdir()
    pd.DataFrame({"path": [_rel(0)]}).to_csv(d / "a_1%_seed0.csv", index=False)
    pd.DataFrame({"path": [_rel(1)]}).to_csv(d / "b_0.01_seed0.csv", index=False)
    with pytest.raises(SplitError, match="both give budget 1% seed 0"):
        import_budgets(d, load(manifest))
    (tmp_path / "none").mkdir()
    pd.DataFrame({"path": [_rel(0)]}).to_csv(tmp_path / "none" / "valid.csv", index=False)
    with pytest.raises(SplitError, match="no file name carries a budget"):
        import_budgets(tmp_path / "none", load(manifest))
    unsplit = load(manifest).drop(columns=["split"])
    with pytest.raises(SplitError, match="no `split` column"):
        import_budgets(d, unsplit)
    (tmp_path / "cols").mkdir()
    pd.DataFrame({"image_id": [1], "label": [0]}).to_csv(tmp_path / "cols" / "x_0.1.csv", index=False)
    with pytest.raises(SplitError, match="no path column.*--path-column"):
        import_budgets(tmp_path / "cols", load(manifest))


def test_cli(tmp_path, manifest, capsys):
    d = tmp_path / "label_fractions"
    _medaug_csv(d / "train_semi_0.1-it0.csv", [0, 1, 2])
    _medaug_csv(d / "train_semi_0.5-it0.csv", list(range(15)))
    out = tmp_path / "medaug.budgets.csv"
    assert main(["import-budgets", str(d), "--manifest", str(manifest), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "seed 0: nested" in text and f"--set data.budgets={out} study.budgets=[0.1,0.5] study.seeds=[0]" in text
    assert len(load_budgets(out)) == 18
    pd.DataFrame({"Path": [_rel(39)]}).to_csv(d / "train_semi_0.01-it0.csv")
    assert main(["import-budgets", str(d), "--manifest", str(manifest), "--out", str(out)]) == 2
    assert "test split" in capsys.readouterr().err
