"""VICReg (Bardes, Ponce & LeCun 2022), after facebookresearch/vicreg.

One encoder + 3-layer expander; loss = sim * MSE(z_a, z_b) + std * variance hinge + cov *
off-diagonal covariance (`ssl.vicreg_sim_coeff` / `vicreg_std_coeff` / `vicreg_cov_coeff`,
paper 25 / 25 / 1; hinge target `ssl.vicreg_gamma` 1). No negatives, no momentum network, no
large batch needed; the variance term is what prevents collapse, the covariance term
dimensional collapse. Paper expander 8192-8192-8192 (`ssl.proj_hidden` / `ssl.proj_dim`).

Under DDP variance and covariance are over the GLOBAL batch: the expander outputs are gathered
with gradient (`distributed.gather_with_grad`, the reference's FullGatherLayer); the invariance
term is per sample and stays local (the mean over ranks of the local MSEs is the global MSE).
"""

from __future__ import annotations

from torch import Tensor, nn

from medssl.config import SSLConfig
from medssl.models.heads import vicreg_expander
from medssl.ssl import distributed as D
from medssl.ssl.losses import pair_monitors
from medssl.ssl.losses_noncontrastive import vicreg_terms
from medssl.ssl.single_network import SingleNetworkMethod


class VICReg(SingleNetworkMethod):
    """forward(view_a, view_b, patient=None) -> (loss, logs); logs add the three unweighted terms."""

    #: SyncBN under DDP, as the reference (the expander's BN layers see the global batch)
    global_batchnorm = True

    def __init__(self, encoder: nn.Module, cfg: SSLConfig):
        super().__init__()
        self.encoder = encoder
        self.projector = vicreg_expander(encoder.feature_dim, cfg.proj_hidden, cfg.proj_dim)
        self.coeffs = (cfg.vicreg_sim_coeff, cfg.vicreg_std_coeff, cfg.vicreg_cov_coeff)
        self.gamma = cfg.vicreg_gamma

    def forward(self, view_a: Tensor, view_b: Tensor, patient: Tensor | None = None):
        z_a, z_b = self.project_views(view_a, view_b, normalize=False)
        inv, var, cov = vicreg_terms(z_a, z_b, all_a=D.gather_with_grad(z_a), all_b=D.gather_with_grad(z_b),
                                     gamma=self.gamma)
        sim_c, std_c, cov_c = self.coeffs
        loss = sim_c * inv + std_c * var + cov_c * cov
        logs = pair_monitors(z_a, z_b)
        logs.update(invariance=inv.detach(), variance=var.detach(), covariance=cov.detach())
        return loss, logs
