"""Inpainting, the context encoder (Pathak et al. 2016, "Context Encoders: Feature Learning by
Inpainting"): hide a square region of the image, encode the rest, reconstruct the hidden region.

- Hole: a square of side round(ssl.inpaint_frac * S) (default 0.5: a quarter of the area, the
  paper's 64 of 128), at the centre (`ssl.inpaint_mask: center`) or at a uniformly random position
  per image (`random`, the default: the paper reports that features trained on a fixed central hole
  latch onto its boundary, and uses random blocks / regions against that). The hole is
  filled with 0.5, which the encoder's (x - 0.5) / 0.25 normalisation turns into 0 (no signal).
- Network: medssl's encoder (any arch) -> (B, D) features -> a small decoder (a linear layer to a
  4 x 4 x 128 map, then x2 nearest upsampling + 3x3 conv + ReLU stages up to at least the input
  size, a 3x3 conv to 1 channel, sigmoid, resized to S x S).
- Loss: mean squared error over the HIDDEN pixels only (`masked_mse`); pixels outside the hole
  have weight 0 (they are in the input: reconstructing them is copying). The paper's adversarial
  term is left out: it sharpens the painted pixels, which pretraining throws away with the decoder.

Only view_a is used (`medssl.ssl.pretext`). Shapes: view_a (B, 1, S, S) float in [0, 1]; mask
(B, 1, S, S) float, 1 = hidden.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.config import SSLConfig
from medssl.ssl.losses import feature_std
from medssl.ssl.pretext import PretextMethod

FILL = 0.5


def block_mask(shape: tuple, frac: float, mode: str = "random", device=None) -> Tensor:
    """(B, 1, H, W) float mask, 1 inside one square hole per image of side round(frac * min(H, W)).

    mode "center": the same centred hole for every image; "random": top-left corner uniform per image
    (global torch RNG).
    """
    b, _, h, w = shape
    side = max(1, min(min(h, w) - 1, round(frac * min(h, w))))
    if mode == "center":
        top = torch.full((b,), (h - side) // 2, device=device)
        left = torch.full((b,), (w - side) // 2, device=device)
    elif mode == "random":
        top = torch.randint(0, h - side + 1, (b,), device=device)
        left = torch.randint(0, w - side + 1, (b,), device=device)
    else:
        raise ValueError(f"unknown inpainting mask mode {mode!r}; choose random or center")
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    inside = ((rows >= top.view(b, 1, 1)) & (rows < (top + side).view(b, 1, 1))
              & (cols >= left.view(b, 1, 1)) & (cols < (left + side).view(b, 1, 1)))
    return inside.unsqueeze(1).float()


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """sum(mask * (pred - target)^2) / sum(mask), in float32: the mean squared error over hidden pixels only."""
    pred, target, mask = pred.float(), target.float(), mask.float()
    return (mask * (pred - target) ** 2).sum() / mask.sum().clamp(min=1)


class InpaintDecoder(nn.Module):
    """(B, D) -> (B, 1, S, S) in [0, 1]: linear to 4x4xwidth, x2 upsampling stages, 1-channel sigmoid."""

    def __init__(self, in_dim: int, out_size: int = 224, width: int = 128, base: int = 4):
        super().__init__()
        self.base, self.width, self.out_size = base, width, out_size
        self.fc = nn.Linear(in_dim, width * base * base)
        stages = max(1, math.ceil(math.log2(max(out_size, base * 2) / base)))
        layers: list[nn.Module] = []
        c = width
        for i in range(stages):
            nxt = max(16, width >> (i + 1))
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, nxt, 3, padding=1), nn.ReLU(inplace=True)]
            c = nxt
        layers.append(nn.Conv2d(c, 1, 3, padding=1))
        self.up = nn.Sequential(*layers)

    def forward(self, feats: Tensor, size: tuple[int, int]) -> Tensor:
        x = F.relu(self.fc(feats)).view(-1, self.width, self.base, self.base)
        x = self.up(x)
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return torch.sigmoid(x)


class Inpainting(PretextMethod):
    """forward(view_a, view_b, patient=None) -> (MSE over the hidden region, logs feat_std)."""

    def __init__(self, encoder: nn.Module, cfg: SSLConfig):
        super().__init__()
        self.encoder = encoder
        self.frac = float(cfg.inpaint_frac)
        self.mode = cfg.inpaint_mask
        size = getattr(getattr(encoder, "spec", None), "input_size", 64)
        self.decoder = InpaintDecoder(encoder.feature_dim, out_size=int(size))

    def forward_parts(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(pred (B,1,S,S), mask (B,1,S,S), encoder features (B, D)); mask default: `block_mask`."""
        if mask is None:
            mask = block_mask(x.shape, self.frac, self.mode, device=x.device)
        mask = mask.to(x.dtype)
        feats = self.encoder(x * (1 - mask) + FILL * mask)
        return self.decoder(feats, tuple(x.shape[-2:])), mask, feats

    def forward(self, view_a: Tensor, view_b: Tensor | None = None, patient: Tensor | None = None):
        pred, mask, feats = self.forward_parts(view_a)
        loss = masked_mse(pred, view_a[:, :1], mask)
        with torch.no_grad():
            logs = {"feat_std": feature_std(feats)}
        return loss, logs
