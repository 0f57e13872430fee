"""`medssl finetune` and `medssl evaluate` end to end through the CLI."""

import json

import pandas as pd

from medssl.cli import main
from medssl.finetune.data import ArrayImages

from .conftest import budgets_for


def test_finetune_then_evaluate_with_compare(tmp_path, tiny_data, monkeypatch, capsys):
    man, imgs = tiny_data
    man.to_csv(tmp_path / "m.csv", index=False)
    budgets_for(man).to_csv(tmp_path / "m.budgets.csv", index=False)
    import medssl.commands.finetune as cmd

    monkeypatch.setattr(cmd, "open_images", lambda cfg, df: ArrayImages(imgs))
    common = ["--manifest", str(tmp_path / "m.csv"), "--set", "model.input_size=32", "--set", "evaluate.bootstrap=50",
              "--set", "finetune.epochs=5", "--budget", "40"]
    assert main(["finetune", *common, "--mode", "linear", "--out", str(tmp_path / "lin")]) == 0
    assert main(["finetune", *common, "--mode", "linear", "--seed", "0", "--budget", "20",
                 "--out", str(tmp_path / "lin20")]) == 0
    result = json.loads((tmp_path / "lin" / "result.json").read_text())
    assert result["n_labeled"] == 40 and "test mean AUC" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "lin" / "predictions.csv"), "--compare",
                 str(tmp_path / "lin20" / "predictions.csv"), "--tasks", "A", "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "lin - lin20" in out
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["tasks_in_mean"] == ["A"] and metrics["comparison"]["tasks_in_mean"] == ["A"]


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing.csv"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    pd.DataFrame({"path": ["a"], "score": [1]}).to_csv(tmp_path / "bad.csv", index=False)
    assert main(["evaluate", str(tmp_path / "bad.csv"), "--out", str(tmp_path)]) == 2
    assert "prob_<label>" in capsys.readouterr().err
    assert main(["finetune", "--out", str(tmp_path / "x")]) == 2
    assert "data.manifest" in capsys.readouterr().err
