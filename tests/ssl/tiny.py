"""Test-only helpers: a tiny encoder with the medssl Encoder interface, and fixed image batches."""

from __future__ import annotations

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: intra-op threads only add overhead, and under pytest-xdist on 2 cores the
    workers' OpenMP threads oversubscribe the CPU (measured 100x slower steps). Restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TinyEncoder(nn.Module):
    """(B, 1, H, W) in [0, 1] -> (B, feature_dim), no BatchNorm (so DDP ranks compute identical maths).

    Same surface as medssl.models.backbones.Encoder: `.net` (checkpoint keys `encoder.net.*`)
    and `.feature_dim`.
    """

    def __init__(self, feature_dim: int = 16):
        super().__init__()
        self.feature_dim = feature_dim
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, feature_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - 0.5) / 0.25)


class TinyBNEncoder(TinyEncoder):
    """TinyEncoder with BatchNorm after each convolution: in train mode its output depends on the
    whole batch, so DDP ranks match one process only with BN statistics synchronised over ranks."""

    def __init__(self, feature_dim: int = 16):
        super().__init__(feature_dim)
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, feature_dim),
        )


def fixed_batch(n: int, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views (n, 1, size, size) in [0, 1] of n distinct smooth random images (different noise per view)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, 4, 4, generator=g)
    img = nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    view_a = (img + 0.05 * torch.randn(img.shape, generator=g)).clamp(0, 1)
    view_b = (img + 0.05 * torch.randn(img.shape, generator=g)).clamp(0, 1)
    return view_a, view_b
