"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning"), after facebookresearch/simsiam.

One encoder + 3-layer BN projector f, a bottleneck predictor h; for the two views
z = f(x), p = h(z) and the symmetric loss 0.5 * (D(p_a, sg(z_b)) + D(p_b, sg(z_a))) with D the
negative cosine and sg the stop-gradient (`losses_noncontrastive.simsiam_loss` applies it). No
negatives, no momentum network, no large batch needed: the stop-gradient and the predictor are
what prevents collapse. No patient masking (there are no negatives to mask). Loss range [-1, 1].

Head sizes: projection `ssl.proj_hidden` -> `ssl.proj_dim` (paper 2048 -> 2048), predictor
bottleneck `ssl.pred_hidden` (paper 512). The paper trains the predictor at a fixed lr; here it
follows the common schedule (the paper reports this costs little at 100 epochs).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medssl.config import SSLConfig
from medssl.models.heads import simsiam_predictor, simsiam_projection
from medssl.ssl.losses import feature_std, mean_cosine
from medssl.ssl.losses_noncontrastive import simsiam_loss
from medssl.ssl.single_network import SingleNetworkMethod


class SimSiam(SingleNetworkMethod):
    """forward(view_a, view_b, patient=None) -> (loss, logs); `patient` is accepted and unused."""

    #: SyncBN under DDP, as the reference (its projector and predictor BN see the global batch)
    global_batchnorm = True

    def __init__(self, encoder: nn.Module, cfg: SSLConfig):
        super().__init__()
        self.encoder = encoder
        self.projector = simsiam_projection(encoder.feature_dim, cfg.proj_hidden, cfg.proj_dim)
        self.predictor = simsiam_predictor(cfg.proj_dim, cfg.pred_hidden)

    def forward(self, view_a: Tensor, view_b: Tensor, patient: Tensor | None = None):
        n = view_a.shape[0]
        z = self.projector(self.encoder(torch.cat([view_a, view_b])))   # one pass: BN sees both views
        p = self.predictor(z)
        z_a, z_b, p_a, p_b = z[:n], z[n:], p[:n], p[n:]
        loss = 0.5 * (simsiam_loss(p_a, z_b) + simsiam_loss(p_b, z_a))
        with torch.no_grad():
            off_diagonal = ~torch.eye(n, dtype=torch.bool, device=z.device)
            logs = {
                "pos_sim": -loss.detach(),                   # mean cos(prediction, other view's projection)
                "neg_sim": mean_cosine(p_a, z_b, off_diagonal),
                "feat_std": feature_std(z_a),                # the paper's collapse monitor (std of l2-normalised z)
            }
        return loss, logs
