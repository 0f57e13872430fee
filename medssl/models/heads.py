"""Projection and prediction MLPs put on top of an encoder's (B, feature_dim) features.

One class, `MLPHead` (Linear [-BN] -ReLU- Linear), and a named builder per method so each
method states which head its paper uses:
  MoCo v2 projection:  Linear-ReLU-Linear (no BN, as in facebookresearch/moco)
  SimCLR projection:   Linear-BN-ReLU-Linear
  BYOL projection and predictor: Linear-BN-ReLU-Linear
Deeper heads (`MLP`, any number of layers, optional BN after the last layer) and `DINOHead`:
  SimSiam projection:  3 x Linear, BN after each (the last BN without affine); predictor 2 layers
  Barlow Twins projector / VICReg expander: Linear-BN-ReLU-Linear-BN-ReLU-Linear
  SwAV projection:     Linear-BN-ReLU-Linear (prototypes live in the method)
  MoCo v3 projection:  3 layers, last BN without affine; predictor 2 layers (BN hidden)
  DINO head:           3-layer GELU MLP -> L2 norm -> weight-normalised linear (no BN)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


def mocov2_projection(in_dim: int, hidden_dim: int = 2048, out_dim: int = 128, batch_norm: bool = False) -> MLPHead:
    """MoCo v2's head: no BN in the reference; `batch_norm=True` adds one after the hidden layer."""
    return MLPHead(in_dim, hidden_dim, out_dim, batch_norm=batch_norm)


def simclr_projection(in_dim: int, hidden_dim: int = 2048, out_dim: int = 128) -> MLPHead:
    return MLPHead(in_dim, hidden_dim, out_dim, batch_norm=True)


def byol_projection(in_dim: int, hidden_dim: int = 4096, out_dim: int = 256) -> MLPHead:
    return MLPHead(in_dim, hidden_dim, out_dim, batch_norm=True)


def byol_predictor(dim: int = 256, hidden_dim: int = 4096) -> MLPHead:
    """BYOL's predictor maps a projection to a prediction of the same size."""
    return MLPHead(dim, hidden_dim, dim, batch_norm=True)


class MLP(nn.Module):
    """(B, dims[0]) -> (B, dims[-1]): a Linear between each pair of consecutive `dims`.

    Every hidden Linear is followed by [BatchNorm1d] + activation. `last_bn`: "none" (plain last
    Linear), "affine" or "plain" (BatchNorm1d after the last Linear, with / without learnable
    scale and shift). A Linear followed by BN has no bias (BN's shift makes it redundant).
    """

    def __init__(self, dims: list[int], *, batch_norm: bool = True, last_bn: str = "none",
                 activation: str = "relu"):
        super().__init__()
        if len(dims) < 2 or last_bn not in ("none", "affine", "plain"):
            raise ValueError(f"MLP needs >= 2 dims and last_bn none/affine/plain, got {dims}, {last_bn!r}")
        act = {"relu": lambda: nn.ReLU(inplace=True), "gelu": nn.GELU}[activation]
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            last = i == len(dims) - 2
            bn = (last_bn != "none") if last else batch_norm
            layers.append(nn.Linear(d_in, d_out, bias=not bn))
            if bn:
                layers.append(nn.BatchNorm1d(d_out, affine=not last or last_bn == "affine"))
            if not last:
                layers.append(act())
        self.layers = nn.Sequential(*layers)
        self.in_dim, self.out_dim = dims[0], dims[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def simsiam_projection(in_dim: int, hidden_dim: int = 2048, out_dim: int = 2048) -> MLP:
    """SimSiam (Chen & He 2021): 3 layers with BN after every one; the output BN has no affine."""
    return MLP([in_dim, hidden_dim, hidden_dim, out_dim], last_bn="plain")


def simsiam_predictor(dim: int = 2048, hidden_dim: int = 512) -> MLP:
    """SimSiam's bottleneck predictor: Linear-BN-ReLU-Linear, dim -> hidden -> dim."""
    return MLP([dim, hidden_dim, dim])


def barlowtwins_projection(in_dim: int, hidden_dim: int = 8192, out_dim: int = 8192) -> MLP:
    """Barlow Twins projector (3 layers, BN-ReLU between); the loss standardises its output."""
    return MLP([in_dim, hidden_dim, hidden_dim, out_dim])


def vicreg_expander(in_dim: int, hidden_dim: int = 8192, out_dim: int = 8192) -> MLP:
    """VICReg expander: the same 3-layer shape as the Barlow Twins projector."""
    return MLP([in_dim, hidden_dim, hidden_dim, out_dim])


def swav_projection(in_dim: int, hidden_dim: int = 2048, out_dim: int = 128) -> MLP:
    """SwAV projection Linear-BN-ReLU-Linear; its output is L2-normalised before the prototypes."""
    return MLP([in_dim, hidden_dim, out_dim])


def mocov3_projection(in_dim: int, hidden_dim: int = 4096, out_dim: int = 256) -> MLP:
    """MoCo v3 projection: 3 layers, BN-ReLU between, BN without affine after the last (as SimCLR v2)."""
    return MLP([in_dim, hidden_dim, hidden_dim, out_dim], last_bn="plain")


def mocov3_predictor(dim: int = 256, hidden_dim: int = 4096) -> MLP:
    """MoCo v3 prediction head: Linear-BN-ReLU-Linear (no BN after the last layer, as its ResNet code)."""
    return MLP([dim, hidden_dim, dim])


class DINOHead(nn.Module):
    """DINO head (Caron et al. 2021): 3-layer GELU MLP -> bottleneck, L2 norm, weight-normalised Linear.

    forward(x (B, in_dim)) -> logits (B, out_dim). `embed(x)` gives the L2-normalised bottleneck
    (B, bottleneck_dim) and `logits(e)` the last layer, whose rows are unit vectors (weight norm with
    its gain fixed to 1, the reference's norm_last_layer=True): logits are cosines in [-1, 1], so the
    temperatures alone set how peaked the softmax is. Truncated-normal(0.02) init as the reference.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, out_dim: int = 65536):
        super().__init__()
        self.mlp = MLP([in_dim, hidden_dim, hidden_dim, bottleneck_dim], batch_norm=False, activation="gelu")
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.last_layer = nn.Parameter(torch.empty(out_dim, bottleneck_dim))  # weight_v of the weight norm
        nn.init.trunc_normal_(self.last_layer, std=0.02)
        self.in_dim, self.out_dim = in_dim, out_dim

    def embed(self, x: Tensor) -> Tensor:
        return F.normalize(self.mlp(x), dim=-1)

    def logits(self, e: Tensor) -> Tensor:
        # float32 with autocast off: the cosines are divided by temperatures of 0.04-0.1 in the loss
        with torch.autocast(device_type=e.device.type, enabled=False):
            return F.linear(e.float(), F.normalize(self.last_layer.float(), dim=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.logits(self.embed(x))
