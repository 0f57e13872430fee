"""MoCo v3 (Chen, Xie & He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers"),
after facebookresearch/moco-v3 moco/builder.py.

Online: encoder + 3-layer BN projection + 2-layer BN prediction head; momentum: EMA copy of
encoder + projection (`momentum_update(m)` after each optimizer step; the trainer ramps m from
`ssl.momentum` to 1 with a cosine, the paper's 0.99 -> 1). Symmetric InfoNCE: queries of view a
against the keys of view b and vice versa, the keys being the momentum projections of the
GLOBAL batch (gathered from all ranks, no gradient; no queue), temperature `ssl.temperature`
(0.2, the paper's ViT value; its ResNet code uses 1.0), scaled by 2t as the reference
(`losses.mocov3_loss`). Negatives from the anchor's own patient are masked, as SimCLR and MoCo v2
do here (MICLe pairs otherwise push apart two images of one patient). In-batch negatives only:
the batch size sets the negative count (the paper trains at 4096).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.config import SSLConfig
from medssl.models.heads import mocov3_predictor, mocov3_projection
from medssl.ssl import distributed as D
from medssl.ssl.losses import feature_std, mean_cosine, mocov3_loss
from medssl.ssl.ema import TargetNetworkMethod


class MoCoV3(TargetNetworkMethod):
    """forward(view_a, view_b, patient=None) -> (loss, logs); loss = ctr(q_a, k_b) + ctr(q_b, k_a)."""

    #: SyncBN under DDP, as the reference (its heads' BN and the ResNet's over the global batch)
    global_batchnorm = True

    def __init__(self, encoder: nn.Module, cfg: SSLConfig):
        super().__init__()
        self.encoder = encoder
        self.projector = mocov3_projection(encoder.feature_dim, cfg.proj_hidden, cfg.proj_dim)
        self.predictor = mocov3_predictor(cfg.proj_dim, cfg.pred_hidden)
        self.init_target(cfg.momentum)
        self.temperature = cfg.temperature
        self.mask_same_patient = cfg.mask_same_patient


    def forward(self, view_a: Tensor, view_b: Tensor, patient: Tensor | None = None):
        n = view_a.shape[0]
        views = torch.cat([view_a, view_b])
        q = F.normalize(self.predictor(self.projector(self.encoder(views))).float(), dim=1)
        with torch.no_grad():
            k = F.normalize(self.projector_target(self.encoder_target(views)).float(), dim=1)
        q_a, q_b = q[:n], q[n:]
        k_a, k_b = D.concat_all_gather(k[:n]), D.concat_all_gather(k[n:])        # (N, D) global keys
        offset = D.rank() * n
        mask = None
        if patient is not None and self.mask_same_patient:
            all_patient = D.concat_all_gather(patient.to(q.device))
            mask = patient.to(q.device).view(-1, 1) == all_patient.view(1, -1)    # (n, N)
        loss = (mocov3_loss(q_a, k_b, offset, self.temperature, mask)
                + mocov3_loss(q_b, k_a, offset, self.temperature, mask))
        with torch.no_grad():
            neg = torch.ones(n, k_b.shape[0], dtype=torch.bool, device=q.device)
            rows = torch.arange(n, device=q.device)
            neg[rows, rows + offset] = False
            if mask is not None:
                neg &= ~mask
            logs = {
                "pos_sim": (q_a * k_b[offset:offset + n]).sum(dim=1).mean(),
                "neg_sim": mean_cosine(q_a, k_b, neg),
                "feat_std": feature_std(q_a),
                # share of the candidate negatives dropped as same-patient
                "masked_negatives": (1 - neg.float().sum() / max(1, n * (k_b.shape[0] - 1))) * q.new_ones(()),
            }
        return loss, logs
