"""Projection and prediction MLPs put on top of an encoder's (B, feature_dim) features.

One class, `MLPHead` (Linear [-BN] -ReLU- Linear), and a named builder per method so each
method states which head its paper uses:
  MoCo v2 projection:  Linear-ReLU-Linear (no BN, as in facebookresearch/moco)
  SimCLR projection:   Linear-BN-ReLU-Linear
  BYOL projection and predictor: Linear-BN-ReLU-Linear
"""

from __future__ import annotations

from torch import Tensor, nn


class MLPHead(nn.Module):
    """(B, in_dim) -> (B, out_dim) through one hidden layer of `hidden_dim` units."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)]
        self.layers = nn.Sequential(*layers)
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def mocov2_projection(in_dim: int, hidden_dim: int = 2048, out_dim: int = 128) -> MLPHead:
    return MLPHead(in_dim, hidden_dim, out_dim, batch_norm=False)


def simclr_projection(in_dim: int, hidden_dim: int = 2048, out_dim: int = 128) -> MLPHead:
    return MLPHead(in_dim, hidden_dim, out_dim, batch_norm=True)


def byol_projection(in_dim: int, hidden_dim: int = 4096, out_dim: int = 256) -> MLPHead:
    return MLPHead(in_dim, hidden_dim, out_dim, batch_norm=True)


def byol_predictor(dim: int = 256, hidden_dim: int = 4096) -> MLPHead:
    """BYOL's predictor maps a projection to a prediction of the same size."""
    return MLPHead(dim, hidden_dim, dim, batch_norm=True)
