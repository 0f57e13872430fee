"""`medssl pretrain` / `medssl export-backbone` end to end, and every shipped config loads."""

from __future__ import annotations

import logging
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from medssl.cli import main
from medssl.config import load_config
from medssl.errors import ConfigError
from medssl.ssl.checkpoint import file_sha256
from tests.ssl._pretrain_data import CACHE_SIZE, tiny_dataset

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_shipped_configs_exist_and_load():
    names = {p.name for p in CONFIGS}
    assert {"chexpert_mocov2_r18.yaml", "chexpert_micle_simclr_r50.yaml", "mimic_mocov2_r18.yaml",
            "dicom_dir_template.yaml", "ct_nifti_template.yaml", "demo.yaml"} <= names
    for path in CONFIGS:
        cfg = load_config(path)
        assert cfg.data.manifest and cfg.trainer.output_dir, path.name
    demo = load_config(CONFIGS[[p.name for p in CONFIGS].index("demo.yaml")])
    assert demo.model.input_size <= 128 and demo.trainer.batch_size <= 64 and demo.trainer.max_epochs <= 5


def test_unknown_config_key_names_its_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"trainer": {"max_epoch": 3}}))
    with pytest.raises(ConfigError, match="trainer.max_epoch"):
        load_config(bad)


def monai_from_spec(spec: dict) -> torch.nn.Module:
    """Rebuild the exported network exactly as a user without medssl would."""
    import monai.networks.nets as nets

    module, name = spec["monai"]["factory"].rsplit(".", 1)
    assert module == "monai.networks.nets"
    net = getattr(nets, name)(**spec["monai"]["kwargs"])
    if spec["monai"]["after"]:
        net.class_layers.out = torch.nn.Identity()
    return net


def test_cli_pretrains_resumes_and_exports_a_plain_monai_backbone(tmp_path, capsys, caplog):
    data = tiny_dataset(tmp_path)
    cfg = tmp_path / "run.yaml"
    out = tmp_path / "run"
    cfg.write_text(yaml.safe_dump({
        "data": {"manifest": str(data["manifest"])},
        "cache": {"dir": str(data["cache"]), "size": CACHE_SIZE},
        "model": {"arch": "resnet18", "input_size": 32},
        "ssl": {"method": "simclr", "proj_hidden": 64, "proj_dim": 32, "monitor_every_n_epochs": 1},
        "trainer": {"output_dir": str(out), "max_epochs": 1, "batch_size": 8, "num_workers": 1,
                    "accelerator": "cpu", "devices": 1, "progress_bar": False, "log_every_n_steps": 1},
    }))
    # --resume auto with nothing to resume starts fresh (a first SLURM submission)
    caplog.set_level(logging.INFO, logger="medssl.ssl.train")
    assert main(["pretrain", "-c", str(cfg), "--resume", "auto"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "encoder" in printed and "starting a new run" in caplog.text
    ckpts = out / "checkpoints"
    assert (ckpts / "last.ckpt").is_file() and (ckpts / "best.ckpt").is_file() and (out / "config.yaml").is_file()
    metrics = next((out / "logs" / "csv").glob("version_*/metrics.csv")).read_text()
    assert "val_auc" in metrics  # the labeled val split is monitored
    assert list((out / "logs" / "tensorboard").glob("version_*/events.*"))

    # a second start without --resume refuses to clobber; with --resume auto (a requeued job) it continues
    assert main(["pretrain", "-c", str(cfg)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["pretrain", "-c", str(cfg), "--resume", "auto", "--set", "trainer.max_epochs=2"]) == 0
    assert f"resuming from {ckpts / 'last.ckpt'}" in caplog.text
    last = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 * 4
    # it continued from step 4 (a fresh start would have logged steps 0-7 again)
    logged = [pd.read_csv(p).dropna(subset=["train_loss_step"])["step"].tolist()
              for p in sorted((out / "logs" / "csv").glob("version_*/metrics.csv"))]
    assert logged == [[0, 1, 2, 3], [4, 5, 6, 7]]

    # export-backbone: a plain MONAI network with identical outputs to the trained encoder
    export = tmp_path / "exported" / "encoder.pt"
    assert main(["export-backbone", str(ckpts / "last.ckpt"), "--out", str(export)]) == 0
    spec = json.loads(export.with_suffix(".json").read_text())
    assert spec["arch"] == "resnet18" and spec["in_channels"] == 1 and spec["input_size"] == 32
    assert spec["source_sha256"] == file_sha256(ckpts / "last.ckpt") and spec["ssl_method"] == "simclr"
    net = monai_from_spec(spec).eval()
    net.load_state_dict(torch.load(export, weights_only=True))

    from medssl.ssl.module import SSLModule
    module = SSLModule(last["hyper_parameters"]["config"])
    module.load_state_dict(last["state_dict"])
    encoder = module.model.encoder.eval()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net((x - spec["mean"]) / spec["std"]), encoder(x))
    # the automatic export at the end of `medssl pretrain` is the same network
    auto = torch.load(out / "encoder.pt", weights_only=True)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(auto[key], value)


def test_cli_reports_a_missing_manifest(tmp_path, capsys):
    code = main(["pretrain", "--set", f"data.manifest={tmp_path / 'none.csv'}",
                 "--set", f"cache.dir={tmp_path / 'cache'}", "--set", f"trainer.output_dir={tmp_path / 'o'}"])
    assert code == 2 and "none.csv" in capsys.readouterr().err
