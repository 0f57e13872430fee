"""BYOL (Grill et al. 2020): online encoder + projector + predictor regress an EMA target.

No negatives, so no patient masking. The symmetrised loss is
0.5 * (byol_loss(p_a, z'_b) + byol_loss(p_b, z'_a)) with z' from the target network
(range [0, 4]). The target follows the online network by `momentum_update(m)` after each
optimizer step; the paper ramps m from `ssl.momentum` to 1 with a cosine (the trainer sets
`method.momentum` per step, e.g. from `medssl.ssl.schedules.momentum_at`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medssl.config import SSLConfig
from medssl.models.heads import byol_predictor, byol_projection
from medssl.ssl.losses import byol_loss, feature_std, mean_cosine
from medssl.ssl.ema import TargetNetworkMethod


class BYOL(TargetNetworkMethod):
    """forward(view_a, view_b, patient=None) -> (loss, logs); `patient` is accepted and unused."""

    #: SyncBN under DDP, as in the BYOL paper (its BN statistics are global over the batch)
    global_batchnorm = True

    def __init__(self, encoder: nn.Module, cfg: SSLConfig):
        super().__init__()
        self.encoder = encoder
        self.projector = byol_projection(encoder.feature_dim, cfg.proj_hidden, cfg.proj_dim)
        self.predictor = byol_predictor(cfg.proj_dim, cfg.pred_hidden)
        self.init_target(cfg.momentum)


    def forward(self, view_a: Tensor, view_b: Tensor, patient: Tensor | None = None):
        n = view_a.shape[0]
        views = torch.cat([view_a, view_b])
        h = self.projector(self.encoder(views))
        p = self.predictor(h).float()
        with torch.no_grad():
            z = self.projector_target(self.encoder_target(views)).float()
        p_a, p_b, z_a, z_b = p[:n], p[n:], z[:n], z[n:]
        loss = 0.5 * (byol_loss(p_a, z_b) + byol_loss(p_b, z_a))
        with torch.no_grad():
            off_diagonal = ~torch.eye(n, dtype=torch.bool, device=p.device)
            logs = {
                "pos_sim": 1 - 0.5 * loss.detach(),  # mean cos(prediction, target of the other view)
                "neg_sim": mean_cosine(p_a, z_b, off_diagonal),
                "feat_std": feature_std(h[:n]),
            }
        return loss, logs
