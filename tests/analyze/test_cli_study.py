"""`medssl analyze` on real images, its input errors, and `study.analyze` in a tiny real study."""

from __future__ import annotations

import json

import pytest
import torch

from medssl.cli import main

SET = ["--set", "model.input_size=32", "cache.size=32", "trainer.num_workers=0", "finetune.batch_size=256"]


def _full_checkpoint(kermany, path):
    """A best.pt in the layout finetune_cell writes for mode full (random encoder + head, untrained)."""
    from medssl.finetune import data as fd
    from medssl.finetune.module import Classifier
    from medssl.finetune.run import build_init_encoder

    cfg = kermany.cfg()
    labels = fd.label_names(kermany.df)
    model = Classifier(build_init_encoder(cfg, "random"), len(labels), 32)
    torch.save({"encoder": model.encoder.net.state_dict(), "head": model.head.state_dict(), "init": "random",
                "arch": "resnet18", "in_channels": 1, "input_size": 32, "labels": labels, "mode": "full",
                "best_epoch": 0, "seed": 0}, path)
    return path


def test_cli_with_classifier_and_compare(kermany, tmp_path, capsys):
    """--classifier: Grad-CAM + occlusion on it; --compare: a third kernel panel; features from the store."""
    ckpt = _full_checkpoint(kermany, tmp_path / "best.pt")
    out = tmp_path / "out"
    rc = main(["analyze", "random", "--data", str(kermany.manifest), "--out", str(out), "--classifier", str(ckpt),
               "--compare", str(ckpt), "--fast", "--queries", "2", "--neighbours", "3", "--saliency-images", "2",
               "--feature-dir", str(kermany.feature_dir), *SET])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "kNN test AUC Pneumonia" in text and "saliency.png" in text
    index = (out / "index.md").read_text()
    assert "maps: Grad-CAM, occlusion" in index and "(`--classifier`)" in index
    retrieval = json.loads((out / "retrieval.json").read_text())
    assert len(retrieval["queries"]) == 2 and all(len(q["neighbours"]) == 3 for q in retrieval["queries"])
    assert f"Panels: random (64 filters); compare 1: {tmp_path.name}/best.pt (64 filters)." in index


def test_cli_missing_encoder_exits_2_with_a_clear_message(kermany, tmp_path, capsys):
    rc = main(["analyze", str(tmp_path / "nope.pt"), "--data", str(kermany.manifest), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "nope.pt" in err and "does not exist" in err and "'random'" in err
    assert not (tmp_path / "o").exists()


def test_cli_manifest_without_split_exits_2(kermany, tmp_path, capsys):
    from medssl.manifest import save

    plain = save(kermany.df.drop(columns=["split"]).assign(), tmp_path / "manifest.csv")
    rc = main(["analyze", "random", "--data", str(plain), "--out", str(tmp_path / "o"), *SET])
    err = capsys.readouterr().err
    assert rc == 2 and "no 'split' column" in err and "medssl split" in err
    rc = main(["analyze", "random", "--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_study_analyze_links_every_init_from_the_report(kermany, tmp_path, monkeypatch):
    """study.analyze: true -> <study>/analysis/<init>/ per init, saliency from the init's full cell
    (Grad-CAM), and report.md (and report.html) link them in a "Feature analysis" section."""
    import medssl.analyze.study as study_mod
    from medssl.analyze.run import AnalysisOptions
    from medssl.study import run_study

    monkeypatch.setattr(study_mod, "STUDY_OPTIONS", AnalysisOptions(fast=True, queries=2, saliency_images=2))
    cfg = kermany.cfg(f"study.output_dir={tmp_path / 'study'}", "study.budgets=[50]", "study.seeds=[0]",
                      "study.modes=[knn,full]", "finetune.epochs=1", "finetune.lr_grid=[0.001]", "study.analyze=true",
                      f"data.budgets={tmp_path / 'budgets.csv'}")
    results, report = run_study(cfg)
    folder = tmp_path / "study" / "analysis" / "random"
    index = (folder / "index.md").read_text()
    assert "maps: Grad-CAM, occlusion" in index          # the full cell's best.pt was used
    md = report.read_text()
    assert "## Feature analysis" in md
    for link in ("analysis/random/index.md", "analysis/random/knn.md", "analysis/random/retrieval.png",
                 "analysis/random/kernels.png", "analysis/random/saliency.png", "analysis/random/embedding.png"):
        assert f"]({link})" in md
        assert (tmp_path / "study" / link).is_file()
    html = report.with_name("report.html")
    if html.is_file():
        assert 'id="analysis"' in html.read_text() and 'href="analysis/random/index.md"' in html.read_text()
    mtime = (folder / "index.md").stat().st_mtime_ns
    run_study(cfg)                                         # rerun: nothing recomputed
    assert (folder / "index.md").stat().st_mtime_ns == mtime


def test_best_full_checkpoint_prefers_the_smallest_budget_and_val_score(tmp_path):
    import pandas as pd

    from medssl.analyze.study import best_full_checkpoint

    for name in ("a", "b", "c", "d"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "best.pt").write_bytes(b"x")
    results = pd.DataFrame([
        {"init": "m", "mode": "full", "n_labeled": 50, "val_score": 0.6, "mean_auc": 0.9, "checkpoint": "a/best.pt"},
        {"init": "m", "mode": "full", "n_labeled": 50, "val_score": 0.7, "mean_auc": 0.5, "checkpoint": "b/best.pt"},
        {"init": "m", "mode": "full", "n_labeled": 100, "val_score": 0.9, "mean_auc": 0.9, "checkpoint": "c/best.pt"},
        {"init": "m", "mode": "knn", "n_labeled": 10, "val_score": 0.9, "mean_auc": 0.9, "checkpoint": "d/best.pt"},
    ])
    assert best_full_checkpoint(results, "m", tmp_path) == str(tmp_path / "b" / "best.pt")
    assert best_full_checkpoint(results, "other", tmp_path) is None


@pytest.mark.parametrize("name,expected", [("mocov2", "mocov2"), ("../x y", "x_y"), ("", "init")])
def test_analysis_folder_names_are_safe(name, expected):
    from medssl.analyze.study import folder_name

    assert folder_name(name) == expected
