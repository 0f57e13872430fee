"""The study grid is resumable: finished cells are never recomputed after a crash."""

import json

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
