"""The thin LightningModule around an SSL method (`medssl.ssl.build_method`).

It owns only training mechanics: the optimizer and per-step LR schedule, the EMA momentum
schedule, logging (loss, lr, pos_sim, neg_sim, feat_std, collapse and MoCo-queue warnings), the
optional val-AUC monitor, and RNG state in checkpoints. The method (encoder, heads, loss, queue)
lives in `self.model`, so the online encoder's weights are `model.encoder.net.*` in checkpoints.
"""

from __future__ import annotations

import logging
import math
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn

from medssl.config import Config, from_dict, to_dict
from medssl.errors import CheckpointError
from medssl.ssl.checkpoint import CONFIG_KEY, RNG_KEY, rng_state, set_rng_state
from medssl.ssl.schedules import build_lr_scheduler, momentum_at

log = logging.getLogger(__name__)

#: Config entries a resumed run must share with its checkpoint (the weights' shapes depend on them).
RESUME_MUST_MATCH = (("model", "arch"), ("model", "in_channels"), ("model", "patch_size"), ("model", "vit_depth"),
                     ("ssl", "method"), ("ssl", "proj_dim"),
                     ("ssl", "proj_hidden"), ("ssl", "queue_size"), ("ssl", "proj_batchnorm"))


def momentum_schedule(cfg: Config) -> str:
    if cfg.ssl.momentum_schedule != "auto":
        return cfg.ssl.momentum_schedule
    # BYOL, DINO and MoCo v3 ramp their EMA momentum to 1 with a cosine in their papers
    return "cosine" if cfg.ssl.method in ("byol", "dino", "mocov3") else "constant"


class SSLModule(pl.LightningModule):
    """Pretraining step: batch {"view_a", "view_b": (B,1,S,S) float, "patient": (B,) int64, "seed": int}."""

    def __init__(self, config: Union[Config, dict]):
        super().__init__()
        cfg = config if isinstance(config, Config) else from_dict(Config, config)
        if cfg.ssl.queue_size == "auto" or cfg.trainer.max_epochs == "auto":
            from medssl.errors import ConfigError

            raise ConfigError("ssl.queue_size / trainer.max_epochs are 'auto': they are resolved from the data by "
                              "medssl.ssl.train.run_pretrain (medssl.ssl.recipe.resolve_recipe); set numbers to "
                              "build an SSLModule directly")
        self.cfg = cfg
        self.save_hyperparameters({CONFIG_KEY: to_dict(cfg)})
        from medssl.models.backbones import encoder_from_config
        from medssl.ssl import build_method

        encoder = encoder_from_config(cfg.model)
        self.model = build_method(cfg.ssl.method, encoder, cfg.ssl)
        if cfg.model.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._warned_collapse_epoch = -1
        self.monitor_set = None  # set by train.py from the data module (val split with labels)

    # --- setup
    def configure_model(self) -> None:
        if self.cfg.trainer.compile and not getattr(self, "_compiled", False):
            self.model.compile()  # in place: state-dict keys stay `model.encoder.net.*`
            self._compiled = True

    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        n_patients = getattr(dm, "n_patients", 0)
        if self.cfg.ssl.method == "mocov2" and n_patients:
            try:
                from medssl.pairs import queue_warning
            except ImportError:  # pragma: no cover - pairs is part of medssl
                return
            text = queue_warning(self.cfg.ssl.queue_size, n_patients, masked=self.cfg.ssl.mask_same_patient)
            if text:
                rank_zero_warn(text)

    def configure_optimizers(self):
        o = self.cfg.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        if o.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
        total, per_epoch = self._step_counts()
        sched = build_lr_scheduler(opt, total_steps=total, warmup_steps=round(o.warmup_epochs * per_epoch),
                                   schedule=o.schedule, milestones=o.step_milestones, gamma=o.step_gamma,
                                   min_ratio=o.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    def _step_counts(self) -> tuple[int, int]:
        """(total optimizer steps, optimizer steps per epoch) of this run."""
        trainer = self.trainer
        total = trainer.estimated_stepping_batches
        batches = trainer.num_training_batches
        per_epoch = math.ceil(batches / trainer.accumulate_grad_batches) if math.isfinite(batches) else total
        if not math.isfinite(total):
            total = per_epoch * max(1, trainer.max_epochs or 1)
        return int(total), max(1, int(per_epoch))

    # --- training
    def training_step(self, batch, batch_idx):
        # Per-step seed for randomness inside the method (shuffle-BN permutations, triplet negatives):
        # makes a resumed run draw exactly what the uninterrupted run drew.
        torch.manual_seed(int(batch["seed"]))
        view_a, view_b, patient = batch["view_a"], batch["view_b"], batch["patient"]
        loss, logs = self.model(view_a, view_b, patient)
        n = view_a.shape[0]
        self.log("train_loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=n,
                 sync_dist=True)
        for key in ("pos_sim", "neg_sim", "feat_std"):
            if key in logs:
                self.log(key, torch.as_tensor(logs[key]).detach().float(), on_step=True, on_epoch=True,
                         batch_size=n, sync_dist=True)
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False, batch_size=n)
        if "feat_std" in logs:
            self._check_collapse(float(logs["feat_std"]))
        return loss

    def _check_collapse(self, feat_std: float) -> None:
        if feat_std < self.cfg.ssl.collapse_threshold and self._warned_collapse_epoch != self.current_epoch:
            self._warned_collapse_epoch = self.current_epoch
            rank_zero_warn(
                f"possible representation collapse: feat_std={feat_std:.4f} < ssl.collapse_threshold="
                f"{self.cfg.ssl.collapse_threshold} at step {self.global_step} (features are nearly constant). "
                "Lower optim.lr, raise warmup, or check the augmentation policy and batch size.")

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # EMA right after each optimizer step (once per step under gradient accumulation), before any
        # on_train_batch_end callback can write a checkpoint, so a checkpoint never misses an update.
        if self.model.has_momentum_network:
            total, _ = self._step_counts()
            m = momentum_at(self.global_step, total, self.cfg.ssl.momentum, momentum_schedule(self.cfg))
            self.model.momentum_update(m)
            self.log("momentum", m, on_step=True, on_epoch=False, batch_size=1)

    # --- val monitor (labels of the val split only)
    def on_train_epoch_end(self) -> None:
        every = self.cfg.ssl.monitor_every_n_epochs
        if self.monitor_set is None or every <= 0 or (self.current_epoch + 1) % every:
            return
        from medssl.ssl.monitor import probe_auc

        feats = self.encode_images(self.monitor_set.images)
        auc = probe_auc(feats, self.monitor_set.labels, self.monitor_set.groups, method=self.cfg.ssl.monitor)
        if not np.isnan(auc):
            self.log("val_auc", auc, on_step=False, on_epoch=True, batch_size=1)

    @torch.no_grad()
    def encode_images(self, images, batch_size: int = 64) -> np.ndarray:
        """Online-encoder features (N, D) of cached images, resized to model.input_size."""
        from medssl.ssl.data import to_unit_float

        encoder = self.model.encoder
        was_training = encoder.training
        encoder.eval()
        size = self.cfg.model.input_size
        out = []
        try:
            for start in range(0, len(images), batch_size):
                idx = np.arange(start, min(start + batch_size, len(images)))
                pixels = images.get_batch(idx) if hasattr(images, "get_batch") else np.stack([images[i] for i in idx])
                x = to_unit_float(torch.from_numpy(np.ascontiguousarray(pixels))).unsqueeze(1).to(self.device)
                if x.shape[-1] != size:
                    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
                with self.trainer.precision_plugin.forward_context():
                    out.append(encoder(x).float().cpu())
        finally:
            encoder.train(was_training)
        return torch.cat(out).numpy()

    # --- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[RNG_KEY] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = (checkpoint.get("hyper_parameters") or {}).get(CONFIG_KEY) or {}
        current = to_dict(self.cfg)
        for section, key in RESUME_MUST_MATCH:
            was, now = saved.get(section, {}).get(key), current[section][key]
            if was is not None and was != now:
                raise CheckpointError(f"cannot resume: the checkpoint has {section}.{key}={was!r} but the config "
                                      f"says {now!r}; use the config the run started with or start a new run")
        if RNG_KEY in checkpoint:
            set_rng_state(checkpoint[RNG_KEY])
