"""The fused batched resample (planar grid, crop folded into the matrix) against a straightforward
reference: per sample, crop the input explicitly, map every output pixel centre through the 3x3
matrices with a plain matmul and homography division, and bilinear-sample with zero padding."""

import torch
import torch.nn.functional as F

from medssl.augment import policy
from medssl.augment.batch import augment_batch, geometry_matrices, sample_geometry, to_unit_float


def _reference(specs, x: torch.Tensor, out_size: int, boxes: torch.Tensor, seed: int) -> torch.Tensor:
    """Same parameter draws (same generator order as augment_batch for a geometry-only policy),
    written the obvious way: one sample at a time, meshgrid points, (S*S, 3) @ M^T, zero outside the crop."""
    spec = {s.name: s.params for s in specs}
    n, _, H, W = x.shape
    g = torch.Generator().manual_seed(seed)
    geo = sample_geometry(spec, n, (H, W), out_size, boxes, g)
    crop, warp = geometry_matrices(geo, (H, W), out_size)
    c = torch.linspace(-1 + 1 / out_size, 1 - 1 / out_size, out_size, dtype=torch.float64)
    v, u = torch.meshgrid(c, c, indexing="ij")
    pts = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)
    out = []
    for i in range(n):
        top, left, h, w = (int(t) for t in geo["crop"][i])
        img = torch.zeros(1, 1, H, W)
        img[..., top:top + h, left:left + w] = to_unit_float(x[i:i + 1, :, top:top + h, left:left + w])
        mapped = pts @ (crop[i] @ warp[i]).T
        grid = (mapped[:, :2] / mapped[:, 2:]).reshape(1, out_size, out_size, 2).float()
        out.append(F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    return torch.cat(out)


def test_fused_resample_matches_the_per_sample_reference_on_a_fixed_seed():
    # geometry only (crop, rotate, flip, shear/translate, perspective always on): every matrix path
    p = policy("xray-default", out_size=40, params={"perspective": {"p": 1.0, "distortion": 0.1},
                                                    "noise": {"p": 0.0}})
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 1, 56, 48), dtype=torch.uint8, generator=gen)
    boxes = torch.tensor([[0, 0, 56, 48], [4, 2, 50, 44], [8, 0, 40, 48]] * 2)
    got = augment_batch(p.specs, x, 40, generator=torch.Generator().manual_seed(7), boxes=boxes)
    want = _reference(p.specs, x, 40, boxes, seed=7)
    assert got.shape == want.shape == (6, 1, 40, 40)
    assert float(want.std()) > 0.1                      # real content, not an all-zero comparison
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
    # and the perspective really changes the result (the homography division is exercised)
    flat = policy("xray-default", out_size=40, params={"perspective": {"p": 0.0}, "noise": {"p": 0.0}})
    other = augment_batch(flat.specs, x, 40, generator=torch.Generator().manual_seed(7), boxes=boxes)
    assert (other - got).abs().max() > 0.1
