"""SimCLR (Chen et al. 2020): one encoder, BN projection head, NT-Xent over the global batch.

Under DDP each rank's anchors are its own 2n views; negatives are the 2N views of all ranks
(gathered with gradient, see `distributed.gather_with_grad`), so 2 ranks x n images train
exactly like 1 process x 2n images. Negatives from the anchor's own patient are masked.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medssl.config import SSLConfig
from medssl.models.heads import simclr_projection
from medssl.ssl import distributed as D
from medssl.ssl.losses import feature_std, mean_cosine, nt_xent
from medssl.ssl.single_network import SingleNetworkMethod


class SimCLR(SingleNetworkMethod):
    """forward(view_a, view_b, patient=None) -> (loss, logs); both views are anchors."""

    #: SyncBN under DDP: with per-rank BN statistics the contrastive task can cheat (SimCLR paper, 3.3)
    global_batchnorm = True

    def __init__(self, encoder: nn.Module, cfg: SSLConfig):
        super().__init__()
        self.encoder = encoder
        self.projector = simclr_projection(encoder.feature_dim, cfg.proj_hidden, cfg.proj_dim)
        self.temperature = cfg.temperature
        self.mask_same_patient = cfg.mask_same_patient

    def forward(self, view_a: Tensor, view_b: Tensor, patient: Tensor | None = None):
        n = view_a.shape[0]
        z_a, z_b = self.project_views(view_a, view_b)
        all_a, all_b = D.gather_with_grad(z_a), D.gather_with_grad(z_b)
        offset = D.rank() * n
        mask = None
        if patient is not None and self.mask_same_patient:
            all_patient = D.concat_all_gather(patient.to(z_a.device))
            mask = patient.to(z_a.device).view(-1, 1) == all_patient.view(1, -1)   # (n, N)
        loss = nt_xent(z_a, z_b, self.temperature, mask, all_a=all_a, all_b=all_b, offset=offset)
        with torch.no_grad():
            # negatives of local anchor i: all other global samples (both views) not masked
            neg = torch.ones(n, all_a.shape[0], dtype=torch.bool, device=z_a.device)
            neg[torch.arange(n, device=z_a.device), torch.arange(n, device=z_a.device) + offset] = False
            if mask is not None:
                neg &= ~mask
            logs = {
                "pos_sim": (z_a * z_b).sum(dim=1).mean(),
                "neg_sim": mean_cosine(z_a, all_b.detach(), neg),
                "feat_std": feature_std(z_a),
            }
        return loss, logs
