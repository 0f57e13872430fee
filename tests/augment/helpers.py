"""Structured test images and measurements of what a transform did to them."""

from __future__ import annotations

import numpy as np
import torch


def ellipse_image(size: int = 64, center=(0.25, -0.2), axes=(0.22, 0.1), angle_deg: float = 30.0) -> torch.Tensor:
    """(1, size, size) float32: a bright (1.0) ellipse off-centre on black. center/axes in units of the
    half-size, center as (x, y) with x to the right and y down."""
    c = (np.arange(size) + 0.5) / size * 2 - 1
    y, x = np.meshgrid(c, c, indexing="ij")
    t = np.deg2rad(angle_deg)
    dx, dy = x - center[0], y - center[1]
    u = dx * np.cos(t) + dy * np.sin(t)
    v = -dx * np.sin(t) + dy * np.cos(t)
    img = ((u / axes[0]) ** 2 + (v / axes[1]) ** 2 <= 1).astype(np.float32)
    return torch.from_numpy(img)[None]


def measure(img: torch.Tensor) -> dict:
    """Centroid (x, y in half-sizes), area fraction (> 0.5), orientation (deg) of the bright blob(s).

    img: (1, S, S) or (B, 1, S, S); returns arrays of length B."""
    a = img.reshape(-1, img.shape[-2], img.shape[-1]).double()
    S = a.shape[-1]
    c = (torch.arange(S, dtype=torch.float64) + 0.5) / S * 2 - 1
    y, x = torch.meshgrid(c, c, indexing="ij")
    m = a.sum((1, 2)).clamp_min(1e-9)
    cx = (a * x).sum((1, 2)) / m
    cy = (a * y).sum((1, 2)) / m
    dx, dy = x - cx[:, None, None], y - cy[:, None, None]
    mxx, myy, mxy = (a * dx * dx).sum((1, 2)) / m, (a * dy * dy).sum((1, 2)) / m, (a * dx * dy).sum((1, 2)) / m
    angle = 0.5 * torch.atan2(2 * mxy, mxx - myy) * 180 / np.pi
    area = (a > 0.5).double().mean((1, 2))
    return {"cx": cx.numpy(), "cy": cy.numpy(), "area": area.numpy(), "angle": angle.numpy(),
            "mass": m.numpy() / S ** 2}
