"""Pretraining module and data: every method learns on real images, labels never read, schedules."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from medssl.errors import ManifestError
from medssl.ssl.data import PretrainDataModule, read_label_free, step_seed, train_rows
from medssl.ssl.monitor import probe_auc
from medssl.ssl.schedules import lr_factor, momentum_at
from medssl.ssl.train import run_pretrain
from tests.ssl._pretrain_data import step_losses, tiny_config, tiny_dataset

# method -> overrides that make a handful of CPU steps show learning on 8 real images (MoCo: below).
# At optim.lr=0.05 the loss fell too, but by collapse: SimCLR's and triplet's feat_std fell to 0.4x
# (SimCLR's loss back at chance ln 15, pos_sim - neg_sim 0.14 -> 0.03) and BYOL's predictor output
# became near-constant (feat_std 0.138 -> 0.040: it predicts the mean target for every image).
LEARNS = {
    "simclr": ("optim.lr=0.01",),
    "byol": ("optim.lr=0.005",),
    "triplet": ("optim.lr=0.01",),
}


def _predictor_feat_std(cfg, checkpoint) -> float:
    """feat_std of BYOL's predictions for one real batch (both views, BN on batch statistics as in
    training) from `checkpoint`: near 0 when the predictor answers every image alike."""
    from medssl.models.weights import safe_load
    from medssl.ssl.losses import feature_std
    from medssl.ssl.module import SSLModule

    module = SSLModule(cfg)
    module.load_state_dict(safe_load(checkpoint)["state_dict"])
    dm = PretrainDataModule(cfg)
    dm.setup("fit")
    batch = dm.on_after_batch_transfer(dm.dataset[(0, 0)], 0)
    byol = module.model.train()
    with torch.no_grad():
        return float(feature_std(byol.predictor(byol.projector(byol.encoder(torch.cat([batch["view_a"],
                                                                                         batch["view_b"]]))))))


@pytest.mark.parametrize("method", sorted(LEARNS))
def test_each_method_lowers_its_loss_on_real_images(tmp_path, method):
    data = tiny_dataset(tmp_path, n_train=8, n_val=16)  # one batch of 8 patients per epoch
    out = tmp_path / method
    cfg = tiny_config(data, out, f"ssl.method={method}", "optim.schedule=constant", "trainer.max_epochs=50",
                      "trainer.max_steps=10", "trainer.checkpoint_every_n_steps=0", *LEARNS[method])
    result = run_pretrain(cfg)
    losses = list(step_losses(out).values())
    assert len(losses) == 10 and all(math.isfinite(v) for v in losses)
    start, end = np.mean(losses[1:4]), np.mean(losses[-3:])
    assert end < start, f"{method}: loss {losses}"
    # ...and not by collapsing: the (projector) features keep their spread, scale 1/sqrt(proj_dim)
    std = list(step_losses(out, "feat_std_step").values())
    assert np.mean(std[-3:]) > 0.5 * std[0], f"{method}: feat_std {std}"
    if method == "byol":  # BYOL can also lower its loss by predicting one (the mean) target for all
        pred_std = _predictor_feat_std(cfg, result.last_checkpoint)
        assert pred_std > 0.5 / math.sqrt(cfg.ssl.proj_dim), f"byol: predictor feat_std {pred_std}"
    else:  # contrastive: each view ends up nearer its own pair than the other images
        gap = [p - n for p, n in zip(step_losses(out, "pos_sim_step").values(),
                                     step_losses(out, "neg_sim_step").values())]
        assert np.mean(gap[-3:]) > 0.1, f"{method}: pos_sim - neg_sim {gap}"
    assert result.encoder.is_file() and result.last_checkpoint.is_file()
    logged = pd.read_csv(next((out / "logs" / "csv").glob("version_*/metrics.csv")))
    for column in ("lr", "pos_sim_step", "neg_sim_step", "feat_std_step"):
        assert logged[column].notna().sum() == 10, column
    assert ("momentum" in logged.columns) == (method == "byol")   # only EMA methods log a momentum


def test_mocov2_lowers_its_loss_on_real_images_once_the_queue_is_full(tmp_path):
    """MoCo's loss is only comparable across steps with a full queue: step 0 has no negatives (loss 0)
    and the loss climbs while the 128-slot queue fills (4 steps of 32 keys). From then on it must fall
    below chance, ln(129) = 4.86, and the features must spread (no collapse)."""
    data = tiny_dataset(tmp_path, n_train=64, n_val=16)  # 2 patient-disjoint batches of 32 per epoch
    out = tmp_path / "mocov2"
    cfg = tiny_config(data, out, "ssl.method=mocov2", "ssl.queue_size=128", "trainer.batch_size=32",
                      "optim.schedule=constant", "trainer.max_epochs=50", "trainer.max_steps=24",
                      "trainer.checkpoint_every_n_steps=0")
    run_pretrain(cfg)
    losses = list(step_losses(out).values())
    std = list(step_losses(out, "feat_std_step").values())
    assert len(losses) == 24 and losses[0] == 0.0
    full = losses[4:]  # queue full from step 4 on
    start, end = np.mean(full[:4]), np.mean(full[-4:])
    assert end < start - 0.15 and end < math.log(129) - 0.15, f"mocov2: loss {losses}"
    assert np.mean(std[-4:]) > 0.02, f"mocov2: feat_std {std}"  # collapsed features read ~0.007


def test_labels_are_never_read(tmp_path):
    """Garbage in every label column trains exactly like the real labels."""
    data = tiny_dataset(tmp_path)
    garbage = data["df"].copy()
    garbage["Pneumonia"] = ["not-a-label", "", "7", "x"] * (len(garbage) // 4)
    garbage["Extra finding"] = "??"
    bad_manifest = tmp_path / "garbage.csv"
    garbage.to_csv(bad_manifest, index=False)
    with pytest.raises(ManifestError):  # the ordinary loader refuses these labels...
        from medssl.manifest.table import load
        load(bad_manifest)
    df = read_label_free(bad_manifest, data_root=data["df"].attrs["data_root"])  # ...pretraining never parses them
    assert "Pneumonia" not in df.columns and len(df) == len(garbage)

    runs = {}
    for name, manifest in (("clean", data["manifest"]), ("garbage", bad_manifest)):
        cfg = tiny_config(dict(data, manifest=manifest), tmp_path / name, "trainer.max_steps=3",
                          f"data.data_root={data['df'].attrs['data_root']}")
        run_pretrain(cfg)
        runs[name] = step_losses(tmp_path / name)
    assert len(runs["clean"]) == 3 and runs["clean"] == runs["garbage"]


def test_pretraining_sees_only_train_rows(tmp_path):
    data = tiny_dataset(tmp_path)
    cfg = tiny_config(data, tmp_path / "out")
    dm = PretrainDataModule(cfg)
    dm.setup("fit")
    df = data["df"]
    train = np.flatnonzero(df["split"].eq("train").to_numpy())
    assert np.array_equal(np.sort(dm.images.rows), train)
    batch = dm.dataset[(0, 0)]
    assert batch["images"].dtype == torch.uint8 and batch["images"].shape == (8, 2, 48, 48)
    assert len(set(batch["patient"].tolist())) == 8  # no patient twice in a batch
    out = dm.on_after_batch_transfer(batch, 0)
    assert out["view_a"].shape == (8, 1, 32, 32) and out["view_a"].dtype == torch.float32
    assert 0 <= float(out["view_a"].min()) and float(out["view_b"].max()) <= 1
    assert not torch.equal(out["view_a"], out["view_b"])  # two different augmentations
    again = dm.on_after_batch_transfer(dm.dataset[(0, 0)], 0)
    assert torch.equal(out["view_a"], again["view_a"])  # deterministic per (seed, epoch, batch)
    assert step_seed(0, 0, 0) != step_seed(0, 0, 1) != step_seed(0, 1, 0)

    with pytest.raises(ManifestError, match="medssl split"):
        train_rows(df.drop(columns=["split"]))


def test_lr_schedule_warmup_then_cosine_or_steps():
    f = [lr_factor(s, 100, schedule="cosine", warmup_steps=10) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[55] == pytest.approx(0.5) and f[99] < 0.001
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    steps = [lr_factor(s, 100, schedule="step", milestones=(0.6, 0.8), gamma=0.1) for s in (0, 59, 60, 80)]
    assert steps == pytest.approx([1, 1, 0.1, 0.01])
    assert lr_factor(50, 100, schedule="constant", warmup_steps=10) == 1.0
    assert momentum_at(0, 100, 0.99, "cosine") == pytest.approx(0.99)
    assert momentum_at(100, 100, 0.99, "cosine") == pytest.approx(1.0)
    assert momentum_at(50, 100, 0.99, "cosine") == pytest.approx(0.995)


def test_probe_auc_reads_separable_and_random_features():
    rng = np.random.default_rng(0)
    y = np.repeat([0.0, 1.0], 40)
    groups = np.arange(80) // 2
    separable = np.c_[y * 4 + rng.normal(size=80), rng.normal(size=(80, 7))]
    noise = rng.normal(size=(80, 8))
    labels = y[:, None]
    for method in ("knn", "logreg"):
        assert probe_auc(separable, labels, groups, method=method) > 0.95
        assert abs(probe_auc(noise, labels, groups, method=method) - 0.5) < 0.2
    assert math.isnan(probe_auc(noise, np.full((80, 1), np.nan), groups))


def test_views_augmented_in_a_worker_equal_the_main_process_views(tmp_path):
    """CPU training augments in the DataLoader workers with the same per-batch seed: identical views."""
    from torch.utils.data import DataLoader

    from medssl.ssl.data import augment_where

    data = tiny_dataset(tmp_path)
    cfg = tiny_config(data, tmp_path / "out")
    assert augment_where(cfg, "cpu") == "workers" and augment_where(cfg, "cuda") == "device"
    assert augment_where(cfg, None) == "device"
    assert augment_where(tiny_config(data, tmp_path / "o", "augment.on_device=cpu"), "cpu") == "per_sample"
    assert augment_where(tiny_config(data, tmp_path / "o", "augment.on_device=gpu"), "cpu") == "device"

    main = PretrainDataModule(cfg, augment_in_workers=False)
    main.setup("fit")
    workers = PretrainDataModule(cfg, augment_in_workers=True)
    workers.setup("fit")
    keys = [(0, 1), (1, 0)]
    loader = DataLoader(workers.dataset, batch_size=None, sampler=keys, num_workers=1)  # a real worker process
    for key, item in zip(keys, loader):
        assert item["images"].dtype == torch.float32 and item["images"].shape == (8, 2, 32, 32)
        got = workers.on_after_batch_transfer(item, 0)
        want = main.on_after_batch_transfer(main.dataset[key], 0)
        assert want["seed"] == got["seed"] == step_seed(cfg.trainer.seed, *key)
        assert torch.equal(got["view_a"], want["view_a"]) and torch.equal(got["view_b"], want["view_b"])
        assert not torch.equal(got["view_a"], got["view_b"])

    # a CPU trainer switches the default ("auto") module to augmenting in the workers
    import lightning.pytorch as pl

    auto = PretrainDataModule(cfg)
    auto.setup("fit")
    assert auto.dataset[(0, 1)]["images"].dtype == torch.uint8          # no trainer: after transfer
    auto.trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    auto.setup("fit")
    item = auto.dataset[(0, 1)]
    assert item["images"].dtype == torch.float32
    assert torch.equal(auto.on_after_batch_transfer(item, 0)["view_a"],
                       main.on_after_batch_transfer(main.dataset[(0, 1)], 0)["view_a"])
