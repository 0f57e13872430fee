"""SimSiam, Barlow Twins, VICReg, SwAV, DINO and MoCo v3 run through `medssl pretrain`
(`run_pretrain`) on the embedded real radiographs, lower their loss and do not collapse.

The pattern of tests/ssl/test_module.py (resnet18, 32 px views, 8 patients, batch 8, CPU), with a
probe that measures before and after 16 training steps, on 4 fixed two-view batches (the same
augmented views both times: 32 views of the 8 images), the method's loss, feat_std (std of the
L2-normalised embeddings the method logs) and the effective rank of the encoder's features of those
32 views (BatchNorm statistics re-estimated on them first: 16 steps leave the running statistics far
from the weights, and eval-mode features then read rank ~1 for every method, BYOL included). The
probe works on deep copies under a forked RNG, so training is exactly what it is without it.

Measured (loss before -> after; feat_std after; effective rank before -> after), CPU, one thread:
  simsiam      0.019 -> -0.050   0.164   28.2 -> 23.2
  barlowtwins  38.1  -> 18.8     0.149   28.2 -> 22.0
  vicreg       22.7  -> 20.9     0.139   28.2 -> 17.0
  swav         4.94  -> 3.67     0.132   28.2 -> 22.2
  dino         5.52  -> 5.06     0.021   28.2 -> 26.3   (its bottleneck spread shrinks: 0.138 -> 0.021)
  mocov3       1.88  -> 1.62     0.141   28.3 -> 22.6
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from medssl.ssl.losses_noncontrastive import effective_rank
from medssl.ssl.train import run_pretrain
from tests.ssl._pretrain_data import step_losses, tiny_config, tiny_dataset

STEPS = 16
ADAMW = ("optim.optimizer=adamw", "optim.lr=0.001")
#: method -> overrides that make 16 CPU steps show learning. AdamW: SGD at lr 0.05 (the SimCLR/BYOL
#: setting of test_module.py) collapses DINO's head at the first step (feat_std 0.14 -> 0.002, the
#: reference trains DINO with AdamW) and makes VICReg diverge at 0.1. MoCo v3: in-batch InfoNCE over
#: 8 similar 32-px radiographs does not move in 30 steps under the full pretrain policy (nor does
#: SimCLR's), so it gets the crop/flip part of xray-default only.
LEARNS = {
    "simsiam": ADAMW,
    "barlowtwins": ADAMW,
    "vicreg": ("optim.optimizer=adamw", "optim.lr=0.002"),
    "swav": (*ADAMW, "ssl.swav_prototypes=32"),
    "dino": ("optim.optimizer=adamw", "optim.lr=0.0005", "ssl.dino_out_dim=256", "ssl.momentum=0.9"),
    "mocov3": (*ADAMW, "augment.policy=xray-default",
               "augment.params={rotate: {p: 0.0}, affine: {p: 0.0}, perspective: {p: 0.0}}"),
}


def _views(dm, epoch: int):
    """A fixed two-view batch (batch 0 of `epoch`), built without touching the data module's cursor."""
    from medssl.ssl.data import augment_pair_views, to_unit_float

    item = dm.dataset[(epoch, 0)]
    x = item["images"]
    if not x.dtype.is_floating_point:
        x = augment_pair_views(dm.policy, x, torch.Generator().manual_seed(epoch), item.get("boxes"))
    x = to_unit_float(x)
    return x[:, 0:1], x[:, 1:2], item["patient"]


class Probe(Callback):
    """Loss, feat_std and encoder effective rank on fixed batches at train start and end."""

    EPOCHS = (100, 101, 102, 103)

    def __init__(self):
        self.before = self.after = None

    @torch.no_grad()
    def _measure(self, trainer, pl_module) -> dict:
        dm = trainer.datamodule
        with torch.random.fork_rng():
            batches = [_views(dm, e) for e in self.EPOCHS]
            losses, stds = [], []
            for view_a, view_b, patient in batches:
                method = copy.deepcopy(pl_module.model).train()     # its BN, queue, centre change on the copy
                torch.manual_seed(0)
                loss, logs = method(view_a, view_b, patient)
                losses.append(float(loss))
                stds.append(float(logs["feat_std"]))
            encoder = copy.deepcopy(pl_module.model.encoder)
            x = torch.cat([b[0] for b in batches])
            for m in encoder.modules():   # precise BN: running statistics of exactly these images
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.reset_running_stats()
                    m.momentum = None
            encoder.train()(x)
            features = encoder.eval()(x)
        return {"loss": float(np.mean(losses)), "feat_std": float(np.mean(stds)),
                "rank": float(effective_rank(features)), "finite": bool(torch.isfinite(features).all())}

    def on_train_start(self, trainer, pl_module):
        self.before = self._measure(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self.after = self._measure(trainer, pl_module)


@pytest.fixture
def no_fsync(monkeypatch):
    """One batch per epoch means an epoch-end last.ckpt (+ best.ckpt) at every step, 50-180 MB each;
    their fsyncs, not the training, dominated these runs (~45 s of I/O wait for the six). Durability
    of checkpoints is tested elsewhere (tests/test_atomic.py, tests/ssl/test_resume.py)."""
    import medssl.atomic

    monkeypatch.setattr(medssl.atomic.os, "fsync", lambda fd: None)


@pytest.mark.parametrize("method", sorted(LEARNS))
def test_pretraining_lowers_the_loss_without_collapse(tmp_path, method, no_fsync):
    """Loss down on the fixed views, no collapse, logs and EMA momentum as the trainer promises (numbers
    in the module docstring)."""
    # one batch of the same 8 patients per epoch, as test_module.py: with 16 or 32 patients (each seen 4-8
    # times) 16 steps show no reliable decrease for SimSiam, Barlow Twins, DINO or MoCo v3 (measured)
    data = tiny_dataset(tmp_path, n_train=8, n_val=16)
    out = tmp_path / method
    cfg = tiny_config(data, out, f"ssl.method={method}", "optim.schedule=constant", "trainer.max_epochs=50",
                      f"trainer.max_steps={STEPS}", "trainer.checkpoint_every_n_steps=0", *LEARNS[method])
    probe = Probe()
    result = run_pretrain(cfg, extra_callbacks=[probe])
    before, after = probe.before, probe.after
    losses = list(step_losses(out).values())
    assert len(losses) == STEPS and all(math.isfinite(v) for v in losses), losses
    assert result.encoder.is_file()
    # the loss falls on the same fixed views (SimSiam's loss is a negative cosine in [-1, 1])
    if method == "simsiam":
        assert after["loss"] < before["loss"] - 0.03, (before, after)
    else:
        assert after["loss"] < 0.97 * before["loss"], (before, after)
    # no collapse: embeddings keep spreading (collapsed ones read < 0.01, ssl.collapse_threshold) and the
    # encoder's features keep more effective dimensions than there are images (collapsed: ~1; views
    # made fully invariant to augmentation: ~8)
    assert after["finite"] and after["feat_std"] > 0.015, (before, after)
    assert after["rank"] > 8, (before, after)
    logged = pd.read_csv(next((out / "logs" / "csv").glob("version_*/metrics.csv")))
    assert logged["feat_std_step"].notna().sum() == STEPS
    ema = method in ("dino", "mocov3")
    assert ("momentum" in logged.columns) == ema
    if ema:  # cosine ramp from ssl.momentum towards 1
        m = logged["momentum"].dropna().to_numpy()
        assert m[0] == pytest.approx(float(cfg.ssl.momentum), abs=1e-3) and np.all(np.diff(m) > 0)
