"""Multi-crop (Caron et al. 2020, SwAV; also DINO): extra low-resolution crops cut from the two views.

The pair sampler delivers two full-size augmented views; `local_crops` derives `ssl.multicrop_n`
more from them inside the method (crop i from view a when i is even, from view b when odd), each
`ssl.multicrop_size` pixels square, covering an area fraction U(`ssl.multicrop_scale`) of its
view at aspect ratio 3/4..4/3 (torchvision's RandomResizedCrop draw, `augment.batch.sample_crop_boxes`).

Crop size bound. The reference's local crops cover 5-14% of the image; the augmentation
policies refuse crops under half the field for every modality (`augment.policies`
_GEOMETRY_BOUNDS crop scale min 0.5: a strong crop can cut out the finding that defines the
label), and the same bound holds here: `check_multicrop` raises ConfigError below it. The
fraction is of the view, which is itself a crop (the pretrain policy's crop scale), so the share
of the original field is their product (e.g. >= 0.5 * 0.7).

Randomness is torch's default generator, which the Lightning module seeds per step (resumed runs
draw the same crops). Resampling is one bilinear `grid_sample` per batch (no antialiasing: at
the reference's 224 -> 96 px and a >= 0.5 area crop the downscale is <= 1.7x).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medssl.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor

# torch is imported inside `local_crops` only: `check_multicrop` runs when a config is loaded, which
# stays torch-free (fast CLI start, `medssl split` on a machine without torch).

#: Aspect ratio range (w/h) of the local crops, as torchvision's default.
CROP_RATIO = (3 / 4, 4 / 3)


def min_crop_scale() -> float:
    """The smallest crop area fraction the augmentation policies allow (0.5)."""
    from medssl.augment.policies import _GEOMETRY_BOUNDS

    kind, bound = _GEOMETRY_BOUNDS["crop"]["scale"]
    assert kind == "min"
    return float(bound)


def check_multicrop(n: int, size: int, scale) -> None:
    """Raise ConfigError for a multi-crop setting the pipeline refuses (see the module doc)."""
    if n < 0:
        raise ConfigError(f"ssl.multicrop_n must be >= 0 (0: no extra crops), got {n}")
    if n == 0:
        return
    if size < 8:
        raise ConfigError(f"ssl.multicrop_size must be >= 8 pixels, got {size}")
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ConfigError(f"ssl.multicrop_scale must be [low, high] with 0 < low <= high <= 1, got {list(scale)}")
    bound = min_crop_scale()
    if scale[0] < bound:
        raise ConfigError(
            f"ssl.multicrop_scale: a local crop of {scale[0]:g} of the field is refused; the augmentation policies "
            f"allow crops of at least {bound:g} of the field for every modality (medssl.augment.policies, crop "
            "scale min) because a strong crop can cut out the finding that defines the label (a lesion or an "
            "effusion at the edge of the field). SwAV/DINO's usual 0.05-0.14 local crops are too small for "
            f"radiographs: use ssl.multicrop_scale=[{bound:g}, 1.0] (or a higher low end), or ssl.multicrop_n=0")


def local_crops(view_a: Tensor, view_b: Tensor, n: int, size: int, scale=(0.5, 1.0), *,
                return_boxes: bool = False):
    """n crops (B, C, size, size) float, crop i from view_a (i even) or view_b (i odd); views (B, C, H, W).

    return_boxes: also return the n crop boxes (B, 4) (top, left, height, width) in view pixels.
    """
    import torch
    import torch.nn.functional as F

    from medssl.augment.batch import sample_crop_boxes

    crops, boxes = [], []
    for i in range(n):
        view = view_a if i % 2 == 0 else view_b
        b, c, h, w = view.shape
        whole = torch.tensor([0.0, 0.0, h, w], dtype=torch.float64).expand(b, 4)
        box = sample_crop_boxes(whole, scale, CROP_RATIO)                         # pixels, float64
        boxes.append(box)
        top, left, ch, cw = box.unbind(1)
        # output -> input map in normalised coordinates (align_corners=False: -1/+1 are pixel edges)
        theta = torch.zeros(b, 2, 3, dtype=torch.float64)
        theta[:, 0, 0] = cw / w
        theta[:, 0, 2] = (2 * left + cw) / w - 1
        theta[:, 1, 1] = ch / h
        theta[:, 1, 2] = (2 * top + ch) / h - 1
        grid = F.affine_grid(theta.to(device=view.device, dtype=torch.float32), [b, c, size, size],
                             align_corners=False)
        crops.append(F.grid_sample(view.float(), grid, mode="bilinear", padding_mode="border", align_corners=False))
    return (crops, boxes) if return_boxes else crops

