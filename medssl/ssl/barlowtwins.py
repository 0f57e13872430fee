"""Barlow Twins (Zbontar et al. 2021), after facebookresearch/barlowtwins.

One encoder + 3-layer projector; the (D, D) cross-correlation of the two views' standardised
projections is driven to the identity (`losses_noncontrastive.barlow_twins_loss`, off-diagonal
weight `ssl.barlow_lambda`). No negatives and no momentum network; it works at small batches
(the paper: 256 loses little against 2048) but wants a wide projector (paper 8192-8192-8192:
`ssl.proj_hidden` / `ssl.proj_dim`).

Under DDP the cross-correlation is over the GLOBAL batch: both views' projections are gathered
with gradient (`distributed.gather_with_grad`) and every rank computes the same global loss, so
2 ranks x n images train exactly like 1 process x 2n images (tests/ssl/test_ddp_stats.py). The
per-dimension standardisation is part of the loss (the reference's affine-free BN), so it is
global too.
"""

from __future__ import annotations

from torch import Tensor, nn

from medssl.config import SSLConfig
from medssl.models.heads import barlowtwins_projection
from medssl.ssl import distributed as D
from medssl.ssl.losses import pair_monitors
from medssl.ssl.losses_noncontrastive import barlow_twins_loss
from medssl.ssl.single_network import SingleNetworkMethod


class BarlowTwins(SingleNetworkMethod):
    """forward(view_a, view_b, patient=None) -> (loss, logs); `patient` is accepted and unused."""

    #: SyncBN under DDP, as the reference (the projector's hidden BN layers see the global batch)
    global_batchnorm = True

    def __init__(self, encoder: nn.Module, cfg: SSLConfig):
        super().__init__()
        self.encoder = encoder
        self.projector = barlowtwins_projection(encoder.feature_dim, cfg.proj_hidden, cfg.proj_dim)
        self.lambd = cfg.barlow_lambda

    def forward(self, view_a: Tensor, view_b: Tensor, patient: Tensor | None = None):
        z_a, z_b = self.project_views(view_a, view_b, normalize=False)
        loss = barlow_twins_loss(D.gather_with_grad(z_a), D.gather_with_grad(z_b), self.lambd)
        return loss, pair_monitors(z_a, z_b)
