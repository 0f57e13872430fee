"""The study grid is resumable: finished cells are never recomputed after a crash."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medssl.study.runner import Cell, collect, grid, run_grid


def _auc_cell(calls):
    """A cell whose metrics are a real AUC of a seeded score vector, so results differ per cell."""
    from sklearn.metrics import roc_auc_score

    def fn(cell: Cell, cell_dir):
        calls.append(cell.key)
        rng = np.random.default_rng(abs(hash(cell.key)) % 2**32)
        y = np.r_[np.zeros(20), np.ones(20)]
        s = y * (0.5 if cell.init == "random" else 1.0) + rng.normal(size=40)
        auc = float(roc_auc_score(y, s))
        return {"n_labeled": int(cell.budget), "mean_auc": auc, "mean_auc_ci_low": auc - 0.1,
                "mean_auc_ci_high": auc + 0.1, "auc_Pneumonia": auc}
    return fn


def test_grid_covers_all_cells_linear_first():
    cells = list(grid({"random": "random", "moco": "m.pt"}, ["full", "linear"], [10, 20], [0, 1]))
    assert len(cells) == 2 * 2 * 2 * 2
    assert len({c.key for c in cells}) == len(cells)
    assert [c.mode for c in cells[:8]] == ["linear"] * 8


def test_crash_after_one_cell_then_rerun_recomputes_nothing(tmp_path):
    cells = list(grid({"random": "random", "moco": "m.pt"}, ["linear"], [10, 20], [0]))
    calls = []
    ok = _auc_cell(calls)

    def crash_after_first(cell, d):
        if calls:
            raise RuntimeError("killed")
        return ok(cell, d)

    with pytest.raises(RuntimeError):
        run_grid(cells, tmp_path, crash_after_first)
    assert len(calls) == 1
    first = calls[0]
    calls.clear()
    results = run_grid(cells, tmp_path, ok)
    assert first not in calls and len(calls) == len(cells) - 1
    assert len(results) == len(cells)
    assert set(results.columns[:8]) == {"init", "mode", "budget", "seed", "n_labeled", "mean_auc",
                                       "mean_auc_ci_low", "mean_auc_ci_high"}
    calls.clear()
    again = run_grid(cells, tmp_path, ok)
    assert calls == []
    pd.testing.assert_frame_equal(again, results)
    on_disk = pd.read_csv(tmp_path / "results.csv")
    assert len(on_disk) == len(cells)
    assert np.allclose(on_disk["mean_auc"], results["mean_auc"])


def test_partial_cell_file_is_never_complete(tmp_path):
    cells = list(grid({"random": "random"}, ["linear"], [10], [0]))
    run_grid(cells, tmp_path, _auc_cell([]))
    files = list((tmp_path / "cells").iterdir())
    assert [f.suffix for f in files] == [".json"]
    assert json.loads(files[0].read_text())["init"] == "random"
    assert len(collect(tmp_path, cells)) == 1


def _file_writing_cell(calls):
    """Like finetune_cell: writes best.pt / predictions.csv / metrics.json and returns their paths as given."""
    def fn(cell: Cell, cell_dir):
        calls.append(cell.key)
        cell_dir.mkdir(parents=True, exist_ok=True)
        (cell_dir / "best.pt").write_bytes(b"weights")
        pd.DataFrame({"path": ["a.png"], "prob_A": [0.25 + 0.5 * (cell.init != "random")]}).to_csv(
            cell_dir / "predictions.csv", index=False)
        (cell_dir / "metrics.json").write_text("{}")
        return {"n_labeled": 10, "mean_auc": 0.7, "mean_auc_ci_low": 0.6, "mean_auc_ci_high": 0.8,
                "checkpoint": str(cell_dir / "best.pt"), "predictions": str(cell_dir / "predictions.csv"),
                "metrics": str(cell_dir / "metrics.json")}
    return fn


def test_result_paths_are_relative_to_the_study_or_working_dir_and_survive_a_move(tmp_path, monkeypatch):
    import shutil

    from medssl.study.runner import resolve_result_path

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    (work / "runs" / "pretrain").mkdir(parents=True)
    elsewhere.mkdir()
    (work / "runs" / "pretrain" / "encoder.pt").write_bytes(b"e")
    (elsewhere / "encoder.pt").write_bytes(b"e")
    monkeypatch.chdir(work)
    inits = {"random": "random", "ssl": str(work / "runs" / "pretrain" / "encoder.pt"),
             "ext": str(elsewhere / "encoder.pt")}
    cells = list(grid(inits, ["linear"], [10], [0]))
    study = work / "study"
    results = run_grid(cells, study, _file_writing_cell([]))

    by_init = results.set_index("init")
    assert by_init.loc["random", "init_path"] == "random"
    assert by_init.loc["ssl", "init_path"] == "runs/pretrain/encoder.pt"  # inside the working directory
    assert by_init.loc["ext", "init_path"] == str(elsewhere / "encoder.pt")  # nowhere relative: absolute
    key = cells[0].key
    row = by_init.loc[cells[0].init]
    assert (row["checkpoint"], row["predictions"], row["metrics"]) == (
        f"cells/{key}/best.pt", f"cells/{key}/predictions.csv", f"cells/{key}/metrics.json")
    on_disk = pd.read_csv(study / "results.csv")
    assert str(work) not in (study / "results.csv").read_text()
    assert str(work) not in (study / "cells" / f"{key}.json").read_text()
    assert json.loads((study / "cells" / f"{key}.json").read_text())["checkpoint"] == f"cells/{key}/best.pt"

    # the study folder moved (and the shell elsewhere): resuming recomputes nothing, paths still open
    moved = tmp_path / "archive" / "study-2024"
    moved.parent.mkdir()
    shutil.move(str(study), str(moved))
    monkeypatch.chdir(tmp_path)
    calls = []
    again = run_grid(cells, moved, _file_writing_cell(calls))
    assert calls == []
    pd.testing.assert_frame_equal(again, results)
    assert on_disk["checkpoint"].tolist() == results["checkpoint"].tolist()
    for _, r in again.iterrows():
        probs = pd.read_csv(resolve_result_path(r["predictions"], moved))["prob_A"].tolist()
        assert probs == [0.25 if r["init"] == "random" else 0.75]
        assert Path(resolve_result_path(r["checkpoint"], moved)).read_bytes() == b"weights"
    assert resolve_result_path("random", moved) == "random"


def test_absolute_paths_from_older_cell_files_and_a_relative_study_dir_read_back_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cells = list(grid({"random": "random"}, ["linear"], [10, 20], [0]))
    # a relative study folder: finetune returns paths relative to the working directory
    results = run_grid(cells[:1], Path("study"), _file_writing_cell([]))
    assert results["checkpoint"].tolist() == [f"cells/{cells[0].key}/best.pt"]
    # a cell file written before paths were portable holds absolute ones
    old = {"init": "random", "mode": "linear", "budget": "20", "seed": 0, "n_labeled": 20, "mean_auc": 0.7,
           "mean_auc_ci_low": 0.6, "mean_auc_ci_high": 0.8,
           "checkpoint": str(tmp_path / "study" / "cells" / cells[1].key / "best.pt")}
    (tmp_path / "study" / "cells" / f"{cells[1].key}.json").write_text(json.dumps(old))
    table = collect(Path("study"), cells)
    assert table["checkpoint"].tolist() == [f"cells/{c.key}/best.pt" for c in cells]


def test_inits_may_be_lists_of_pretraining_runs_or_specs_the_study_pretrains():
    from medssl.errors import ConfigError
    from medssl.study.runner import init_runs, pretrain_spec

    cells = list(grid({"random": "random", "moco": ["a.pt", "b.pt"]}, ["linear"], [10], [0, 1]))
    assert [(c.init, c.pretrain_seed) for c in cells if c.seed == 0] == [("random", None), ("moco", 0), ("moco", 1)]
    assert cells[1].key == "moco__linear__10__seed0__pre0" and cells[0].key == "random__linear__10__seed0"
    assert init_runs(["only.pt"]) == [("only.pt", None)]          # one run keeps the plain key
    assert pretrain_spec("x.pt") is None and pretrain_spec({"pretrain": {"ssl.method": "byol"}})
    with pytest.raises(ConfigError, match="unknown"):
        pretrain_spec({"pretrain": {}, "epochs": 3})


def test_report_says_how_often_full_fine_tuning_kept_its_probe_start():
    from medssl.study.runner import full_start_note

    results = pd.DataFrame({"init": ["random"] * 3 + ["ssl"] * 3, "mode": ["full", "full", "linear"] * 2,
                            "best_epoch": [-1, -1, -1, 4, -1, -1]})
    assert full_start_note(results).endswith("random 2/2, ssl 1/2.")
    assert full_start_note(results[results["mode"] == "linear"]) == ""
