"""Full fine-tuning: a thin LightningModule (encoder + linear multi-label head, masked BCE).

Encoder lr = lr * encoder_lr_mult, head lr = lr (AdamW, cosine over the epochs). After each
validation epoch the module scores the val predictions (mean val AUC, see
`medssl.finetune.data.val_selection_score`) and keeps an in-memory copy of the best weights;
`run.py` writes that copy atomically. No Lightning checkpoint files are written (they are not
atomic); a cell that dies is rerun from scratch by the study runner.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medssl.finetune.data import LabeledSet, resize_batch, val_selection_score


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
               pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean BCE-with-logits over the entries with mask 1 (masked entries contribute exactly 0)."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, weight=mask, pos_weight=pos_weight, reduction="sum")
    return loss / mask.sum().clamp_min(1.0)


class Classifier(nn.Module):
    """Encoder + linear head: (B, 1, H, W) in [0, 1] -> (B, C) logits."""

    def __init__(self, encoder: nn.Module, n_classes: int, input_size: int | None = None):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.feature_dim, n_classes)
        self.input_size = input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(resize_batch(x, self.input_size)))


class FinetuneModule(pl.LightningModule):
    """Trains a Classifier end to end; tracks the best epoch on the validation score.

    augment: optional callable (x (B,1,H,W) float in [0,1], generator, boxes (B,4) int64) -> x, applied
    to training batches only (the modality-safe policy from medssl.augment; crops inside `boxes`).
    freeze_bn_stats: BatchNorm layers normalise with their running statistics during training too (their
    affine weights still train): with a head initialised from a probe on the frozen (eval-mode)
    features, the fine-tuning start is then exactly that probe, and a 50-image batch's noisy statistics
    never replace the init's.
    """

    def __init__(self, model: Classifier, val_set: LabeledSet, labels: Sequence[str], *, lr: float = 1e-3,
                 encoder_lr_mult: float = 0.1, weight_decay: float = 1e-4, epochs: int = 10,
                 tasks: Sequence[str] | None = None, pos_weight: np.ndarray | None = None,
                 augment: Callable | None = None, seed: int = 0, freeze_bn_stats: bool = False):
        super().__init__()
        self.freeze_bn_stats = freeze_bn_stats
        self.model = model
        self.val_set = val_set
        self.labels = list(labels)
        self.tasks = tasks
        self.lr, self.encoder_lr_mult, self.weight_decay, self.epochs = lr, encoder_lr_mult, weight_decay, epochs
        self.register_buffer("pos_weight", torch.as_tensor(pos_weight) if pos_weight is not None else None,
                             persistent=False)
        self.augment = augment
        self.aug_generator = torch.Generator().manual_seed(int(seed))
        self.best_state: dict | None = None
        self.best_epoch, self.best_score, self.score_name = -1, -float("inf"), ""
        self.history: list[dict] = []
        self._val_probs: list[torch.Tensor] = []
        self._val_loss = [0.0, 0.0]   # sum of masked losses, sum of mask
        self._train_loss = [0.0, 0]

    def forward(self, x):
        return self.model(x)

    def on_train_epoch_start(self) -> None:
        # explicit, not left to the mode a module happened to be in when fit started
        self.model.train()
        if self.freeze_bn_stats:
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def training_step(self, batch, batch_idx):
        x, y, m, boxes = batch
        if self.augment is not None:
            x = self.augment(x, self.aug_generator, boxes)
        loss = masked_bce(self(x), y, m, self.pos_weight)
        self._train_loss[0] += float(loss.detach()) * len(x)
        self._train_loss[1] += len(x)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(x))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y, m, _ = batch
        logits = self(x)
        self._val_probs.append(torch.sigmoid(logits).double().cpu())
        self._val_loss[0] += float(masked_bce(logits, y, m, self.pos_weight)) * float(m.sum().clamp_min(1.0))
        self._val_loss[1] += float(m.sum())

    def set_initial_candidate(self, score: float, name: str) -> None:
        """Make the weights as they are now (before any step) the first selection candidate, epoch -1,
        with their val score (e.g. the logistic probe the head was initialised from)."""
        self.best_score, self.best_epoch, self.score_name = float(score), -1, name
        self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        self.history.append({"epoch": -1, "train_loss": None, "val_loss": None, name: float(score)})

    def on_validation_epoch_end(self):
        probs = torch.cat(self._val_probs).numpy()
        loss = self._val_loss[0] / max(self._val_loss[1], 1.0)
        self._val_probs, self._val_loss = [], [0.0, 0.0]
        if len(probs) != len(self.val_set):  # Lightning sanity check or a partial val run: never select on it
            return
        score, name = val_selection_score(self.val_set, probs, self.labels, self.tasks, loss)
        epoch = int(self.current_epoch)
        self.history.append({"epoch": epoch, "train_loss": self._train_loss[0] / max(self._train_loss[1], 1),
                             "val_loss": loss, name: score})
        self._train_loss = [0.0, 0]
        self.log("val_score", score, prog_bar=True)
        if score > self.best_score:  # strict: ties keep the earlier epoch
            self.best_score, self.best_epoch, self.score_name = score, epoch, name
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def configure_optimizers(self):
        groups = [{"params": list(self.model.encoder.parameters()), "lr": self.lr * self.encoder_lr_mult},
                  {"params": list(self.model.head.parameters()), "lr": self.lr}]
        opt = torch.optim.AdamW(groups, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(self.epochs, 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def best_model(self) -> Classifier:
        """The model with the weights of the selected epoch (a copy; the module is left as trained)."""
        model = copy.deepcopy(self.model)
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        return model.eval()
