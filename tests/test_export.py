"""`medssl export`: TorchScript and ONNX exports equal the PyTorch model; model cards; clear CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from medssl.cli import main
from medssl.models.backbones import build_encoder

SIZE = 64
LABELS = ["Atelectasis", "Cardiomegaly", "Edema"]
TOL = 1e-4


def _randomise_bn(net: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def _inputs(batch: int, seed: int) -> torch.Tensor:
    return torch.rand(batch, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _onnx_run(path, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(s.run(None, {"image": x.numpy()})[0])


@torch.no_grad()
def _assert_exports_match(out_dir, reference, formats=("torchscript", "onnx")):
    diffs = {}
    for batch, seed in ((1, 100), (4, 101)):
        x = _inputs(batch, seed)
        with torch.no_grad():
            ref = reference(x)
        if "torchscript" in formats:
            ts = torch.jit.load(str(out_dir / "model.ts"))
            diffs["torchscript"] = max(diffs.get("torchscript", 0.0), float((ts(x) - ref).abs().max()))
        if "onnx" in formats:
            diffs["onnx"] = max(diffs.get("onnx", 0.0), float((_onnx_run(out_dir / "model.onnx", x) - ref).abs().max()))
    for fmt, d in diffs.items():
        assert d <= TOL, f"{fmt} differs from PyTorch by {d}"
    return diffs


@pytest.fixture(scope="module")
def full_cell(tmp_path_factory):
    """A full fine-tuning cell folder as medssl.finetune.run writes it: best.pt, metrics.json, result.json."""
    from medssl.finetune.module import Classifier

    d = tmp_path_factory.mktemp("cell")
    torch.manual_seed(0)
    enc = build_encoder("resnet18", 1, SIZE)
    _randomise_bn(enc.net)
    model = Classifier(enc, len(LABELS), SIZE).eval()
    torch.save({"encoder": enc.net.state_dict(), "head": model.head.state_dict(), "init": "runs/x/encoder.pt",
                "selected": json.dumps({"lr": 1e-3, "epoch": 2}), "arch": "resnet18", "in_channels": 1,
                "input_size": SIZE, "labels": LABELS, "mode": "full", "best_epoch": 2, "seed": 1}, d / "best.pt")
    metrics = {"n_images": 40, "n_patients": 30, "tasks": LABELS, "tasks_in_mean": LABELS, "mean_auc": 0.81,
               "mean_auc_ci_low": 0.7, "mean_auc_ci_high": 0.9,
               "bootstrap": {"resamples": 100, "ci": 0.95, "seed": 0, "unit": "patient", "method": "percentile"},
               "classes": {lbl: {"n_pos": 5, "n_neg": 35, "auc": 0.8, "ap": 0.4, "auc_ci_low": 0.6, "auc_ci_high": 0.95}
                           for lbl in LABELS}}
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "result.json").write_text(json.dumps({"n_labeled": 250, "n_val_labeled": 200, "n_labels_total": 450}))
    (d / "config.yaml").write_text("seed: 0\nmodel:\n  arch: resnet18\n")

    def reference(x):
        return torch.sigmoid(model(x))
    return d, reference


def test_full_classifier_torchscript_and_onnx_match_pytorch(full_cell, tmp_path):
    from medssl.models.export import export

    cell, reference = full_cell
    out = export(cell / "best.pt", formats="torchscript,onnx", out_dir=tmp_path / "exp")
    diffs = _assert_exports_match(tmp_path / "exp", reference)
    assert set(out["parity"]) == {"torchscript", "onnx"} and all(v <= TOL for v in out["parity"].values())
    card = json.loads((tmp_path / "exp" / "model_card.json").read_text())
    assert card["kind"] == "classifier" and card["output"]["labels"] == LABELS
    assert card["input"]["shape"] == ["batch", 1, SIZE, SIZE] and card["normalisation"]["inside_model"]
    assert (card["normalisation"]["mean"], card["normalisation"]["std"]) == (0.5, 0.25)
    assert card["evaluation"]["mean_auc"] == 0.81 and card["evaluation"]["mean_auc_ci_low"] == 0.7
    assert card["evaluation"]["classes"]["Edema"]["auc_ci_high"] == 0.95
    assert card["training"]["label_budget"]["n_labeled"] == 250 and card["training"]["label_budget"]["seed"] == 1
    import hashlib
    assert card["config"]["sha256"] == hashlib.sha256((cell / "config.yaml").read_bytes()).hexdigest()
    assert card["training"]["init"] == "encoder.pt"       # file name only: no directory layout
    md = (tmp_path / "exp" / "model_card.md").read_text()
    assert "0.810 [0.700, 0.900]" in md and "Cardiomegaly" in md
    print(f"classifier parity: {diffs}")


def test_encoder_export_matches_pytorch(tmp_path):
    from medssl.models.export import export

    torch.manual_seed(1)
    enc = build_encoder("resnet18", 1, SIZE).eval()
    _randomise_bn(enc.net, 1)
    torch.save(enc.net.state_dict(), tmp_path / "encoder.pt")
    spec = {**enc.spec.to_dict(), "feature_dim": 512, "ssl_method": "mocov2", "epoch": 3}
    (tmp_path / "encoder.json").write_text(json.dumps(spec))
    (tmp_path / "pretrain_summary.json").write_text(json.dumps({"method": "mocov2", "n_images": 782,
                                                                  "n_patients": 400, "epochs": 4}))
    export(tmp_path / "encoder.pt", formats="all", out_dir=tmp_path / "exp")
    diffs = _assert_exports_match(tmp_path / "exp", enc)
    card = json.loads((tmp_path / "exp" / "model_card.json").read_text())
    assert card["kind"] == "encoder" and card["output"]["shape"] == ["batch", 512]
    assert card["pretraining"]["n_images"] == 782 and card["pretraining"]["n_patients"] == 400
    print(f"encoder parity: {diffs}")


def test_linear_probe_without_encoder_loads_its_init(tmp_path):
    """The documented linear contract: head = StandardizedLinear state, the encoder rebuilt from `init`."""
    from medssl.finetune.features import StandardizedLinear
    from medssl.models.export import export

    torch.manual_seed(2)
    enc = build_encoder("resnet18", 1, SIZE).eval()
    _randomise_bn(enc.net, 2)
    (tmp_path / "pre").mkdir()
    torch.save(enc.net.state_dict(), tmp_path / "pre" / "encoder.pt")
    rng = np.random.default_rng(0)
    head = StandardizedLinear(rng.normal(size=512).astype(np.float32), rng.uniform(0.5, 2, 512).astype(np.float32),
                              len(LABELS)).eval()
    cell = tmp_path / "study" / "cells" / "mocov2__linear__250__seed0"
    cell.mkdir(parents=True)
    # the init path as the study recorded it: relative to the folder the study ran in
    torch.save({"head": head.state_dict(), "init": "pre/encoder.pt", "arch": "resnet18", "in_channels": 1,
                "input_size": SIZE, "labels": LABELS, "mode": "linear", "best_epoch": -1, "seed": 0,
                "selected": "[]"}, cell / "best.pt")
    export(cell / "best.pt", formats="torchscript", out_dir=tmp_path / "exp")
    _assert_exports_match(tmp_path / "exp", lambda x: torch.sigmoid(head(enc(x))), formats=("torchscript",))


def test_linear_probe_on_random_encoder_needs_and_uses_the_seed(tmp_path, capsys):
    from medssl.config import Config
    from medssl.finetune.features import StandardizedLinear
    from medssl.finetune.run import build_init_encoder
    from medssl.models.export import export

    head = StandardizedLinear(np.zeros(512, np.float32), np.ones(512, np.float32), len(LABELS)).eval()
    torch.save({"head": head.state_dict(), "init": "random", "arch": "resnet18", "in_channels": 1,
                "input_size": SIZE, "labels": LABELS, "mode": "linear", "seed": 0}, tmp_path / "best.pt")
    assert main(["export", str(tmp_path / "best.pt"), "--format", "torchscript", "--out", str(tmp_path / "e")]) == 2
    assert "--init-seed" in capsys.readouterr().err
    export(tmp_path / "best.pt", formats="torchscript", out_dir=tmp_path / "e", init_seed=7)
    cfg = Config()
    cfg.seed, cfg.model.input_size = 7, SIZE
    enc = build_init_encoder(cfg, "random").eval()
    _assert_exports_match(tmp_path / "e", lambda x: torch.sigmoid(head(enc(x))), formats=("torchscript",))


def test_cli_exports_foreign_rgb_weights_with_arch(tmp_path, capsys):
    """ImageNet-layout weights, 3-channel encoder: the grey channel is repeated inside the export."""
    from tests.models.test_foreign_weights import TorchvisionResNet18, _randomise_bn as randomise

    torch.manual_seed(3)
    ref = randomise(TorchvisionResNet18())
    torch.save(ref.state_dict(), tmp_path / "resnet18-imagenet.pth")
    assert main(["export", str(tmp_path / "resnet18-imagenet.pth"), "--arch", "resnet18", "--in-channels", "3",
                 "--input-size", str(SIZE), "--format", "torchscript", "--out", str(tmp_path / "e")]) == 0
    assert "encoder (resnet18, 512 features)" in capsys.readouterr().out
    _assert_exports_match(tmp_path / "e", lambda x: ref.features(((x - 0.5) / 0.25).expand(-1, 3, -1, -1)),
                          formats=("torchscript",))
    card = json.loads((tmp_path / "e" / "model_card.json").read_text())
    assert card["training"]["weights_format"].startswith("torchvision ResNet")


def test_cli_errors_are_clear(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert main(["export", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "o")]) == 2
    assert "refused or unreadable" in capsys.readouterr().err
    torch.save({"weight": torch.zeros(3)}, tmp_path / "odd.pt")
    assert main(["export", str(tmp_path / "odd.pt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "not a fine-tuned classifier" in err and "--arch" in err
    assert main(["export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    torch.save({"knn": {"k": torch.tensor([3])}, "head": {}, "arch": "resnet18", "labels": LABELS, "mode": "knn",
                "in_channels": 1, "input_size": SIZE}, tmp_path / "knn.pt")
    assert main(["export", str(tmp_path / "knn.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "'knn' cell cannot be exported" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "odd.pt"), "--format", "tflite", "--out", str(tmp_path / "o")]) == 2
    assert "tflite" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
