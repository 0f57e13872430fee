"""Batched augmentation on any device: all parameters sampled at once, one resampling per batch.

Input (B, 1, H, W) uint8/uint16/float on CPU or CUDA -> output (B, 1, S, S) float32 in [0, 1].
Crop + rotation + flips + shear/translate (+ perspective) are composed into one 3x3 matrix per
sample that maps output to input coordinates (normalised, align_corners=False: -1/+1 are the
outer pixel edges), so the whole batch is one sampling grid (the affine_grid computation written
as broadcast sums, plus the homography division when the policy has perspective) + one
`F.grid_sample`. The input is zeroed outside each crop first, so the fused warp behaves like the
per-sample path's crop -> resize -> warp with zero padding; the one difference is a fringe of
at most half an input pixel at the crop edge when the crop is upsampled, which blends with zero
where the per-sample resize repeats the edge pixel. Intensity and texture ops are
elementwise/grouped convolutions over the batch.

Parameters are sampled on the generator's device (CPU by default) in float64, so a seeded
CPU generator gives the same geometry on CPU and CUDA. The distributions are exactly those of
the per-sample MONAI path in `transforms.py` (same order, same conventions; checked
statistically in tests/augment).

Content boxes: (B, 4) integers (top, left, height, width) in input pixels, the format of
`medssl.cache.CachedImages.boxes`; crops are drawn inside the box (outside it is padding). When
the crop is off (no crop transform, or its p not drawn) the whole input canvas is resized, so the
cache's aspect-keeping padding stays as it is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medssl.augment.policies import TRANSFORMS

__all__ = ["to_unit_float", "augment_batch", "sample_crop_boxes", "homography_from_corners",
           "geometry_matrices", "sample_geometry", "sampling_grid", "resample", "to_unit_float_inside"]

_CROP_TRIES = 10


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> /255, uint16 -> /65535, other integers by their max, floats -> float32 (on x's device)."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).mul_(1.0 / 255.0)
    if x.dtype == torch.uint16:
        return x.to(torch.float32).mul_(1.0 / 65535.0)
    if not x.is_floating_point():
        return x.to(torch.float32).mul_(1.0 / float(torch.iinfo(x.dtype).max))
    return x.to(torch.float32)


def _uniform(shape, lo, hi, g):
    return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64,
                                       device=g.device if g is not None else "cpu")


def _coin(n, p, g):
    return torch.rand(n, generator=g, dtype=torch.float64, device=g.device if g is not None else "cpu") < p


def sample_crop_boxes(boxes: torch.Tensor, scale, ratio, g=None) -> torch.Tensor:
    """Random-resized-crop boxes (top, left, h, w), integers as float64, inside content `boxes`
    (n, 4) = (top, left, height, width).

    torchvision's RandomResizedCrop algorithm, vectorised: 10 tries of area fraction U(scale) and
    log-uniform aspect w/h in `ratio` at a uniform position; a sample with no valid try gets the
    central crop of its box with the aspect clamped into `ratio`.
    """
    n = boxes.shape[0]
    y0, x0, bh, bw = boxes.unbind(1)
    target = (bh * bw)[:, None] * _uniform((n, _CROP_TRIES), scale[0], scale[1], g)
    aspect = torch.exp(_uniform((n, _CROP_TRIES), math.log(ratio[0]), math.log(ratio[1]), g))
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w >= 1) & (h >= 1) & (w <= bw[:, None]) & (h <= bh[:, None])
    first = ok.to(torch.int8).argmax(1, keepdim=True)
    found = ok.any(1)
    fw, fh = fallback_crop_size(bh, bw, ratio)
    w = torch.where(found, w.gather(1, first)[:, 0], fw)
    h = torch.where(found, h.gather(1, first)[:, 0], fh)
    top = torch.where(found, y0 + torch.floor(_uniform(n, 0, 1, g) * (bh - h + 1)), y0 + torch.floor((bh - h) / 2))
    left = torch.where(found, x0 + torch.floor(_uniform(n, 0, 1, g) * (bw - w + 1)), x0 + torch.floor((bw - w) / 2))
    return torch.stack([top, left, h, w], 1)


def fallback_crop_size(bh, bw, ratio):
    """(w, h) of torchvision's fallback: the whole box with its aspect w/h clamped into `ratio`."""
    in_ratio = bw / bh
    w = torch.where(in_ratio > ratio[1], torch.round(bh * ratio[1]), bw)
    h = torch.where(in_ratio < ratio[0], torch.round(bw / ratio[0]), bh)
    return w, h


def homography_from_corners(offsets: torch.Tensor) -> torch.Tensor:
    """(n, 4, 2) corner offsets (normalised x, y) -> (n, 3, 3) homographies mapping the corners
    (-1,-1), (1,-1), (1,1), (-1,1) of the output to corners + offsets (sampling direction)."""
    n = offsets.shape[0]
    src = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64,
                       device=offsets.device).expand(n, 4, 2)
    dst = src + offsets.to(torch.float64)
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
    a = torch.cat([rows_u, rows_v], 1)                       # (n, 8, 8)
    b = torch.cat([u, v], 1)                                 # (n, 8)
    h = torch.linalg.solve(a, b)
    return torch.cat([h, torch.ones(n, 1, dtype=h.dtype, device=h.device)], 1).view(n, 3, 3)


def sample_geometry(spec: dict, n: int, in_hw: tuple[int, int], out_size: int, boxes=None, g=None) -> dict:
    """Sample every geometric parameter for n samples (float64 on the generator's device)."""
    H, W = in_hw
    dev = g.device if g is not None else torch.device("cpu")
    whole = torch.tensor([0, 0, H, W], dtype=torch.float64, device=dev).expand(n, 4)
    boxes = whole if boxes is None else torch.as_tensor(boxes).to(device=dev, dtype=torch.float64).reshape(n, 4)
    # without a crop the whole (padded, aspect-keeping) canvas is resized; crops stay in the content box
    p: dict = {"crop": whole}
    if "crop" in spec:
        c = spec["crop"]
        crop = sample_crop_boxes(boxes, c["scale"], c["ratio"], g)
        p["crop"] = torch.where(_coin(n, c["p"], g)[:, None], crop, whole)
    if "rotate" in spec:
        r = math.radians(spec["rotate"]["degrees"])
        p["angle"] = _uniform(n, -r, r, g) * _coin(n, spec["rotate"]["p"], g)
    for flip in ("hflip", "vflip"):
        if flip in spec:
            p[flip] = _coin(n, spec[flip]["p"], g)
    if "affine" in spec:
        a = spec["affine"]
        on = _coin(n, a["p"], g)[:, None]
        shear = math.tan(math.radians(a["shear"]))
        p["shear"] = _uniform((n, 2), -shear, shear, g) * on                 # MONAI (c0, c1), (row, col) order
        p["translate"] = _uniform((n, 2), -a["translate"], a["translate"], g) * out_size * on  # pixels (row, col)
    if "perspective" in spec:
        d = spec["perspective"]["distortion"]
        on = _coin(n, spec["perspective"]["p"], g)[:, None, None]
        p["corners"] = _uniform((n, 4, 2), -d, d, g) * on
    return p


def geometry_matrices(p: dict, in_hw: tuple[int, int], out_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(crop, warp): (n, 3, 3) float64 maps in normalised (x, y, 1) coordinates, sampling direction.

    warp: output -> crop-resized image (rotate <- flip <- shear+translate <- perspective);
    crop: crop-resized image -> input (a per-axis scale and shift). `crop @ warp` maps output
    to input in one step.
    """
    H, W = in_hw
    crop = p["crop"]
    n, dev = crop.shape[0], crop.device
    eye = torch.eye(3, dtype=torch.float64, device=dev).repeat(n, 1, 1)
    top, left, h, w = crop.unbind(1)
    c = eye.clone()
    c[:, 0, 0], c[:, 0, 2] = w / W, (2 * left + w - W) / W
    c[:, 1, 1], c[:, 1, 2] = h / H, (2 * top + h - H) / H
    m = eye
    if "angle" in p:
        cos, sin = torch.cos(p["angle"]), torch.sin(p["angle"])
        r = eye.clone()      # same direction as monai.transforms.Rotate(angle) (tested)
        r[:, 0, 0], r[:, 0, 1], r[:, 1, 0], r[:, 1, 1] = cos, sin, -sin, cos
        m = m @ r
    for flip, axis in (("hflip", 0), ("vflip", 1)):
        if flip in p:
            f = eye.clone()
            f[:, axis, axis] = 1.0 - 2.0 * p[flip].to(torch.float64)
            m = m @ f
    if "shear" in p:
        c0, c1 = p["shear"].unbind(1)
        # MONAI: affine = shear @ translate in (row, col) order, shear = [[1, c0], [c1, 1 + c0 c1]];
        # written here in (x, y) = (col, row) order with translation in normalised units.
        a = eye.clone()
        a[:, 0, 0], a[:, 0, 1], a[:, 1, 0], a[:, 1, 1] = 1 + c0 * c1, c1, c0, 1.0
        t = eye.clone()
        t[:, 0, 2] = p["translate"][:, 1] * 2.0 / out_size
        t[:, 1, 2] = p["translate"][:, 0] * 2.0 / out_size
        m = m @ a @ t
    if "corners" in p:
        m = m @ homography_from_corners(p["corners"])
    return c, m


def sampling_grid(m: torch.Tensor, out_size: int, projective: bool) -> torch.Tensor:
    """(B, S, S, 2) grid_sample grid from (B, 3, 3) output->input maps (align_corners=False).

    Written as broadcast sums of per-row and per-column terms (x' = m00 u + m01 v + m02) into
    planar (B, 3, S, S) coordinates, returned as a (B, S, S, 2) view (not contiguous). Same numbers
    as affine_grid, but on CPU the planar layout avoids broadcasting over a size-2 inner dimension
    (the homography division is one in-place pass) and grid_sample reads it faster than an
    interleaved grid (bench: 11 ms instead of 31 ms for 64 x 224^2 projective views, one thread).
    Projective maps divide by the third row (z > 0 for distortion <= 0.25).
    """
    c = torch.linspace(-1 + 1 / out_size, 1 - 1 / out_size, out_size, device=m.device, dtype=m.dtype)
    rows_used = 3 if projective else 2
    along_cols = m[:, :rows_used, 0, None] * c + m[:, :rows_used, 2, None]     # (B, k, S): x' terms of u
    along_rows = m[:, :rows_used, 1, None] * c                                 # (B, k, S): terms of v
    planes = along_cols[:, :, None, :] + along_rows[:, :, :, None]             # (B, k, S_rows, S_cols)
    if projective:
        planes[:, :2].mul_(planes[:, 2:].reciprocal_())
    return planes[:, :2].permute(0, 2, 3, 1)


def resample(x: torch.Tensor, m: torch.Tensor, out_size: int, projective: bool) -> torch.Tensor:
    """One grid_sample for the batch: x (B,1,H,W) float, m (B,3,3) output->input normalised."""
    m = m.to(device=x.device, dtype=torch.float32)
    grid = sampling_grid(m, out_size, projective)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def to_unit_float_inside(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """`to_unit_float(x)` with zeros outside each sample's (top, left, h, w) box; x (B,1,H,W).

    With the crop fused into the warp, this is what keeps sampling inside the crop: points the
    warp sends beyond the crop read zeros (the zero padding of the per-sample path's rotate/affine
    steps) and never pixels outside the crop or the content box. Two passes over the input,
    the dtype conversion included.
    """
    B, _, H, W = x.shape
    if x.dtype == torch.uint8:
        scale = 1.0 / 255.0
    elif x.dtype == torch.uint16:
        scale = 1.0 / 65535.0
    elif not x.is_floating_point():
        scale = 1.0 / float(torch.iinfo(x.dtype).max)
    else:
        scale = 1.0
    if x.dtype == torch.uint16:       # few kernels support uint16 arithmetic: widen first
        x = x.to(torch.int32)
    boxes = boxes.to(device=x.device, dtype=torch.float32)
    top, left, h, w = boxes.unbind(1)
    rows = torch.arange(H, device=x.device, dtype=torch.float32)
    cols = torch.arange(W, device=x.device, dtype=torch.float32)
    in_rows = ((rows >= top[:, None]) & (rows < (top + h)[:, None])).to(torch.float32).mul_(scale)
    in_cols = ((cols >= left[:, None]) & (cols < (left + w)[:, None])).to(torch.float32)
    # not in place: x may be the caller's tensor; the first multiply also converts the dtype
    return torch.mul(x, in_rows.view(B, 1, H, 1)).mul_(in_cols.view(B, 1, 1, W))


# ----------------------------------------------------------------------------- intensity / texture
def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _intensity_ops(x: torch.Tensor, spec: dict, g) -> torch.Tensor:
    n = x.shape[0]
    if "window_jitter" in spec:
        s = spec["window_jitter"]
        on = _coin(n, s["p"], g)
        c = 0.5 + _uniform(n, -s["center"], s["center"], g) * on
        w = 1.0 + _uniform(n, -s["width"], s["width"], g) * on
        x = ((x - _per_sample(c, x)) / _per_sample(w, x) + 0.5).clamp_(0, 1)
    if "intensity" in spec:
        s = spec["intensity"]
        scale = 1.0 + _uniform(n, -s["scale"], s["scale"], g) * _coin(n, s["p"], g)
        shift = _uniform(n, -s["shift"], s["shift"], g) * _coin(n, s["p"], g)
        x = (x * _per_sample(scale, x) + _per_sample(shift, x)).clamp_(0, 1)
    if "jitter" in spec:
        s = spec["jitter"]
        on = _coin(n, s["p"], g)
        b = torch.where(on, _uniform(n, 1 - s["brightness"], 1 + s["brightness"], g), 1.0)
        c = torch.where(on, _uniform(n, 1 - s["contrast"], 1 + s["contrast"], g), 1.0)
        x = (x * _per_sample(b, x)).clamp_(0, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * _per_sample(c, x) + mean).clamp_(0, 1)
    if "gamma" in spec:
        s = spec["gamma"]
        on = _coin(n, s["p"], g)
        gam = torch.where(on, _uniform(n, *s["gamma"], g), 1.0)
        x = x.clamp(0, 1).pow(_per_sample(gam, x))   # not in place: x may still be the caller's tensor
    if "solarize" in spec:
        s = spec["solarize"]
        on = _per_sample(_coin(n, s["p"], g), x).bool()
        x = torch.where(on & (x >= s["threshold"]), 1.0 - x, x)
    return x


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(n,) sigmas -> (n, 2*radius+1) normalised erf-integrated Gaussian kernels (MONAI approx='erf')."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=sigma.device)
    s = (0.70710678 / sigma.clamp_min(1e-6))[:, None]
    k = 0.5 * (torch.erf(s * (t + 0.5)) - torch.erf(s * (t - 0.5)))
    return k / k.sum(1, keepdim=True)


def _texture_ops(x: torch.Tensor, spec: dict, g) -> torch.Tensor:
    n, _, S, _ = x.shape
    if "blur" in spec:
        s = spec["blur"]
        on = _coin(n, s["p"], g)
        sig_row = _uniform(n, *s["sigma"], g)
        sig_col = _uniform(n, *s["sigma"], g)
        radius = int(max(s["sigma"][1] * 4.0, 0.5) + 0.5)
        delta = torch.zeros(2 * radius + 1, dtype=torch.float64, device=on.device)
        delta[radius] = 1.0
        k_row = torch.where(on[:, None], gaussian_kernels(sig_row, radius), delta)
        k_col = torch.where(on[:, None], gaussian_kernels(sig_col, radius), delta)
        k_row = k_row.to(device=x.device, dtype=x.dtype)
        k_col = k_col.to(device=x.device, dtype=x.dtype)
        y = x.reshape(1, n, S, S)      # channels = samples: one grouped conv per axis
        y = F.conv2d(y, k_row.view(n, 1, -1, 1), padding=(radius, 0), groups=n)
        y = F.conv2d(y, k_col.view(n, 1, 1, -1), padding=(0, radius), groups=n)
        x = y.reshape(n, 1, S, S)
    if "noise" in spec:
        s = spec["noise"]
        on = _coin(n, s["p"], g)
        std = _uniform(n, 0.0, s["std"], g) * on
        if bool(on.any()):
            seed = int(torch.randint(0, 2 ** 62, (1,), generator=g, device=on.device))
            dg = torch.Generator(device=x.device).manual_seed(seed)
            noise = torch.randn(x.shape, generator=dg, device=x.device, dtype=x.dtype)
            x = (x + noise * _per_sample(std, x)).clamp_(0, 1)
    return x


def augment_batch(specs, x: torch.Tensor, out_size: int, *, generator: torch.Generator | None = None,
                  boxes=None) -> torch.Tensor:
    """Apply validated specs to x (B,1,H,W) (or (B,H,W)) on its device -> (B,1,S,S) float32 in [0,1]."""
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"expected a (B, 1, H, W) batch, got shape {tuple(x.shape)}")
    spec = {s.name: s.params for s in specs}
    n, _, H, W = x.shape
    intensity_first = any(TRANSFORMS[name].stage == "intensity" for name in spec)
    if intensity_first or "crop" not in spec:
        x = _intensity_ops(to_unit_float(x), spec, generator)
    geo = sample_geometry(spec, n, (H, W), out_size, boxes, generator)
    crop, warp = geometry_matrices(geo, (H, W), out_size)
    if "crop" in spec:   # sample inside the crop only (converting to float on the way when not done yet)
        x = to_unit_float_inside(x, geo["crop"])
    x = resample(x, crop @ warp, out_size, projective="corners" in geo)
    return _texture_ops(x, spec, generator)
