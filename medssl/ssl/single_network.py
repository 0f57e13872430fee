"""What the methods without a momentum network (SimCLR, triplet) share."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SingleNetworkMethod(nn.Module):
    """A method with one online encoder + projector and no EMA target.

    `momentum`, `momentum_update` and `on_train_batch_end` exist so trainers treat every method alike.
    """

    encoder: nn.Module
    projector: nn.Module
    momentum = 0.0
    has_momentum_network = False
    #: SyncBN under DDP (`distributed.wants_sync_batchnorm`); each method sets its own, default off
    global_batchnorm = False

    def momentum_update(self, m: float | None = None) -> None:
        """No momentum network: nothing to update."""

    def on_train_batch_end(self) -> None:
        """Nothing to do after an optimizer step."""

    def project_views(self, view_a: Tensor, view_b: Tensor, normalize: bool = True) -> tuple[Tensor, Tensor]:
        """Both (B,1,H,W) views through encoder + projector in one pass -> two (B, D) float32 embeddings.

        One pass, so BatchNorm sees the 2B-sample batch, as in the SimCLR paper. `normalize`: unit
        vectors (contrastive and clustering losses); off for losses on raw embeddings (Barlow Twins, VICReg).
        """
        n = view_a.shape[0]
        z = self.projector(self.encoder(torch.cat([view_a, view_b]))).float()
        if normalize:
            z = F.normalize(z, dim=1)
        return z[:n], z[n:]
