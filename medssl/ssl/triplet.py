"""Triplet pretraining: anchor = view a, positive = view b of the same row, negative = view b of
a row from another patient in the same batch (the nearest such row cyclically after the anchor).

Rows whose batch holds no other patient have no valid negative and are left out of the loss
(logged as `valid_frac`). Embeddings are L2-normalised; the distance (`ssl.triplet_distance`)
and margin (`ssl.margin`) are those of `losses.triplet_loss`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medssl.config import SSLConfig
from medssl.models.heads import mocov2_projection
from medssl.ssl.losses import feature_std, triplet_loss
from medssl.ssl.single_network import SingleNetworkMethod


def pick_negatives(patient: Tensor | None, batch_size: int) -> tuple[Tensor, Tensor]:
    """For each row i, the index of a row of another patient: the first of i+1, i+2, ... (mod B).

    Returns (index (B,) long, valid (B,) bool). Without patient codes every other row counts as
    another instance, so the index is i+1 (a roll by one). `valid` is False where the batch holds
    no other patient (index then points at i+1 and the row must be ignored).
    """
    rows = torch.arange(batch_size, device=patient.device if patient is not None else None)
    if patient is None or batch_size < 2:
        return (rows + 1) % batch_size, torch.full((batch_size,), batch_size > 1, dtype=torch.bool)
    shifts = torch.arange(1, batch_size, device=rows.device)
    cand = (rows.view(-1, 1) + shifts.view(1, -1)) % batch_size          # (B, B-1), nearest first
    other = patient[cand] != patient.view(-1, 1)
    first = other.int().argmax(dim=1)                                    # first True (0 if none)
    return cand[rows, first], other.any(dim=1)


class Triplet(SingleNetworkMethod):
    """forward(view_a, view_b, patient=None) -> (loss, logs)."""

    #: SyncBN under DDP: one batch statistic for anchors, positives and negatives of all ranks
    global_batchnorm = True

    def __init__(self, encoder: nn.Module, cfg: SSLConfig):
        super().__init__()
        self.encoder = encoder
        self.projector = mocov2_projection(encoder.feature_dim, cfg.proj_hidden, cfg.proj_dim)
        self.margin = cfg.margin
        self.distance = cfg.triplet_distance

    def forward(self, view_a: Tensor, view_b: Tensor, patient: Tensor | None = None):
        n = view_a.shape[0]
        anchor, positive = self.project_views(view_a, view_b)
        if patient is not None:
            patient = patient.to(anchor.device)
        neg_idx, valid = pick_negatives(patient, n)
        valid = valid.to(anchor.device)
        negative = positive[neg_idx.to(anchor.device)]
        loss = triplet_loss(anchor, positive, negative, self.margin, self.distance, weight=valid.float())
        with torch.no_grad():
            w = valid.float()
            logs = {
                "pos_sim": (anchor * positive).sum(dim=1).mean(),
                "neg_sim": ((anchor * negative).sum(dim=1) * w).sum() / w.sum().clamp(min=1),
                "feat_std": feature_std(anchor),
                "valid_frac": w.mean(),
            }
        return loss, logs
