"""SwAV (Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments"), after facebookresearch/swav main_swav.py.

One encoder + projection (Linear-BN-ReLU-Linear) whose L2-normalised output z is scored against
K L2-normalised prototypes (`ssl.swav_prototypes`); the codes of each full-size view come from
Sinkhorn-Knopp (`ssl.swav_sinkhorn_iters` 3, `ssl.swav_epsilon` 0.05) over the GLOBAL batch
(row / column sums all-reduced, as the reference's distributed_sinkhorn) and are predicted from
the other crops' scores at temperature `ssl.swav_temperature` 0.1 (swapped prediction). No
negatives, no momentum network.

Prototypes are re-normalised (in place, without gradient) at the start of every training forward,
i.e. after each optimizer step, as the reference does before each step. For the first
`ssl.swav_freeze_prototypes_iters` training forwards the prototypes get a zero gradient (the
reference's freeze_prototypes_niters; a zero gradient rather than none keeps DDP's every-parameter
reduction intact, and since the prototypes are re-normalised, weight decay alone cannot move them).

Queue (`ssl.swav_queue_size` rows per process, 0 = off): embeddings of past batches, per
full-size view, whose scores join the current ones in the Sinkhorn (more samples than
prototypes: small batches otherwise cannot be spread equally over K prototypes). As MoCo's
queue here, it takes part only once it is full of real embeddings. Buffers, saved in checkpoints.

Multi-crop (`ssl.multicrop_n` extra crops of `ssl.multicrop_size` px, area `ssl.multicrop_scale`
of a view, refused below 0.5, see `medssl.ssl.multicrop`): only the two full-size views get codes;
every crop predicts the codes of the views it is not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.config import SSLConfig
from medssl.models.heads import swav_projection
from medssl.ssl.losses import pair_monitors
from medssl.ssl.losses_noncontrastive import sinkhorn, swav_loss
from medssl.ssl.multicrop import check_multicrop, local_crops
from medssl.ssl.single_network import SingleNetworkMethod


class SwAV(SingleNetworkMethod):
    """forward(view_a, view_b, patient=None) -> (loss, logs); `patient` is accepted and unused."""

    #: SyncBN under DDP, as the reference (projection BN over the global batch)
    global_batchnorm = True

    def __init__(self, encoder: nn.Module, cfg: SSLConfig):
        super().__init__()
        check_multicrop(cfg.multicrop_n, cfg.multicrop_size, cfg.multicrop_scale)
        self.encoder = encoder
        self.projector = swav_projection(encoder.feature_dim, cfg.proj_hidden, cfg.proj_dim)
        self.prototypes = nn.Linear(cfg.proj_dim, cfg.swav_prototypes, bias=False)
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        self.temperature = cfg.swav_temperature
        self.epsilon = cfg.swav_epsilon
        self.sinkhorn_iters = cfg.swav_sinkhorn_iters
        self.freeze_iters = cfg.swav_freeze_prototypes_iters
        self.multicrop = (cfg.multicrop_n, cfg.multicrop_size, tuple(cfg.multicrop_scale))
        self.register_buffer("queue", torch.zeros(2, cfg.swav_queue_size, cfg.proj_dim))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))   # rows holding real embeddings
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))      # training forwards so far

    def _scores(self, z: Tensor) -> Tensor:
        """(B, K) cosines of unit embeddings and prototypes, float32 (autocast off: they are divided by
        swav_temperature 0.1 and Sinkhorn's epsilon 0.05, too fine for bf16)."""
        w = self.prototypes.weight
        if self.training and int(self.iteration) < self.freeze_iters:
            w = w.detach() + 0.0 * w        # same values, zero gradient (see the module doc)
        with torch.autocast(device_type=z.device.type, enabled=False):
            return z.float() @ w.float().T

    @torch.no_grad()
    def _codes(self, scores: Tensor, crop: int) -> Tensor:
        """Sinkhorn codes of this batch's scores for full-size view `crop`, with the queue when it is full."""
        n = scores.shape[0]
        size = self.queue.shape[1]
        if size and int(self.queue_filled) >= size:
            with torch.autocast(device_type=scores.device.type, enabled=False):
                queued = self.queue[crop].float() @ F.normalize(self.prototypes.weight.float(), dim=1).T
            return sinkhorn(torch.cat([scores, queued]), self.epsilon, self.sinkhorn_iters)[:n]
        return sinkhorn(scores, self.epsilon, self.sinkhorn_iters)

    @torch.no_grad()
    def _enqueue(self, z_views: list[Tensor]) -> None:
        size = self.queue.shape[1]
        if not size:
            return
        for crop, z in enumerate(z_views):
            z = z.detach().to(self.queue.dtype)[-size:]
            self.queue[crop] = torch.cat([z, self.queue[crop, :size - len(z)]])   # newest first, as the reference
        self.queue_filled.fill_(min(size, int(self.queue_filled) + len(z_views[0])))

    def forward(self, view_a: Tensor, view_b: Tensor, patient: Tensor | None = None):
        n = view_a.shape[0]
        if self.training:
            with torch.no_grad():
                self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        n_local, size, scale = self.multicrop
        z_views = list(self.project_views(view_a, view_b))
        z_crops = []
        if n_local:
            small = torch.cat(local_crops(view_a, view_b, n_local, size, scale))
            z_crops = list(F.normalize(self.projector(self.encoder(small)).float(), dim=1).split(n))
        scores = [self._scores(zc) for zc in z_views + z_crops]
        codes = [self._codes(scores[i].detach(), i) for i in range(2)]
        loss = swav_loss(scores, codes, self.temperature)
        logs = pair_monitors(*z_views)
        # share of the prototypes that are some sample's top code: ~1/K when all samples take one
        logs["prototypes_used"] = codes[0].argmax(dim=1).unique().numel() / codes[0].shape[1] * view_a.new_ones(())
        if self.training:
            self._enqueue(z_views)
            self.iteration += 1
        return loss, logs
