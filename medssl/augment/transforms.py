"""Per-sample CPU path of a policy, built from MONAI array transforms (array and dictionary forms).

`PolicyTransform(specs, out_size)`: (1, H, W) float in [0, 1] (tensor or ndarray; uint8/uint16
are scaled) -> (1, S, S) float32 torch tensor. MONAI's RandRotate / RandFlip / RandAffine /
RandGaussianSmooth / RandGaussianNoise / RandScaleIntensity / RandShiftIntensity / SpatialCrop /
Resize do the work; the few transforms MONAI lacks (random *resized* crop with area/aspect
sampling inside a content box, perspective, window jitter, brightness/contrast, solarise) are
small MONAI-style `RandomizableTransform`s here. Seed with `set_random_state(seed)` (MONAI's
DataLoader does it per worker). Each geometric step resamples separately (the batched path in
`batch.py` fuses them into one resampling): same parameter distributions, slightly softer
images.
"""

from __future__ import annotations

import math
from typing import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (MapTransform, RandAffine, RandFlip, RandGaussianNoise, RandGaussianSmooth,
                              Randomizable, RandomizableTransform, RandRotate, RandScaleIntensity,
                              RandShiftIntensity, Resize, SpatialCrop, Transform)
from monai.data import get_track_meta, set_track_meta
from monai.utils import MAX_SEED, convert_to_tensor

from medssl.augment.batch import homography_from_corners, resample, to_unit_float

__all__ = ["PolicyTransform", "PolicyTransformd", "RandResizedCrop", "RandPerspective", "RandWindowJitter",
           "RandBrightnessContrast", "RandGamma", "RandSolarize", "ClipIntensity"]


def _plain(img) -> torch.Tensor:
    return convert_to_tensor(img, track_meta=False)


class ClipIntensity(Transform):
    """Clip to [lo, hi] (keeps the [0, 1] image contract after intensity ops and noise)."""

    def __init__(self, lo: float = 0.0, hi: float = 1.0):
        self.lo, self.hi = lo, hi

    def __call__(self, img):
        return _plain(img).clamp(self.lo, self.hi)


class RandResizedCrop(RandomizableTransform):
    """Random resized crop inside a content box, resized to (S, S) (torchvision's algorithm: 10 tries
    of area fraction U(scale) and log-uniform aspect ratio, uniform position; else the whole box)."""

    def __init__(self, out_size: int, scale=(0.7, 1.0), ratio=(3 / 4, 4 / 3), prob: float = 1.0):
        super().__init__(prob)
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.resize = Resize((out_size, out_size), mode="bilinear", align_corners=False)
        self.crop_box = (0, 0, 1, 1)

    def randomize(self, box, canvas=None) -> None:
        super().randomize(None)
        y0, x0, bh, bw = (int(v) for v in box)
        if not self._do_transform:     # no crop: the whole (aspect-keeping, padded) canvas
            self.crop_box = (0, 0, *canvas) if canvas is not None else (y0, x0, bh, bw)
            return
        for _ in range(10):
            target = bh * bw * self.R.uniform(*self.scale)
            aspect = math.exp(self.R.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 1 <= w <= bw and 1 <= h <= bh:
                top = y0 + int(self.R.randint(0, bh - h + 1))
                left = x0 + int(self.R.randint(0, bw - w + 1))
                self.crop_box = (top, left, h, w)
                return
        # torchvision's fallback: central crop with the aspect clamped into `ratio`
        w, h = bw, bh
        if bw / bh < self.ratio[0]:
            h = round(bw / self.ratio[0])
        elif bw / bh > self.ratio[1]:
            w = round(bh * self.ratio[1])
        self.crop_box = (y0 + (bh - h) // 2, x0 + (bw - w) // 2, h, w)

    def __call__(self, img, box=None, randomize: bool = True):
        img = _plain(img)
        if randomize:
            canvas = (img.shape[-2], img.shape[-1])
            self.randomize(box if box is not None else (0, 0, *canvas), canvas)  # box: (top, left, h, w)
        top, left, h, w = self.crop_box
        img = SpatialCrop(roi_start=(top, left), roi_end=(top + h, left + w))(img)
        return _plain(self.resize(img))


class _RandomImageTransform(RandomizableTransform):
    """A per-image random transform on a (1, H, W) tensor: draw (unless randomize=False), then
    `_apply` when the draw says so, else return the image unchanged."""

    def __call__(self, img, randomize: bool = True):
        img = _plain(img)
        if randomize:
            self.randomize(None)
        if not self._do_transform:
            return img
        return self._apply(img)

    def _apply(self, img):
        raise NotImplementedError


class RandPerspective(_RandomImageTransform):
    """Homography moving each corner by U(-distortion, distortion) of the half-size per axis."""

    def __init__(self, distortion: float = 0.05, prob: float = 0.5):
        super().__init__(prob)
        self.distortion = distortion
        self.offsets = np.zeros((4, 2))

    def randomize(self, data=None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.offsets = self.R.uniform(-self.distortion, self.distortion, size=(4, 2))

    def _apply(self, img):
        m = homography_from_corners(torch.from_numpy(self.offsets)[None])
        return resample(img[None].float(), m, img.shape[-1], projective=True)[0]


class RandWindowJitter(_RandomImageTransform):
    """Re-window: centre 0.5 + U(-center, center), width 1 + U(-width, width) of the stored range."""

    def __init__(self, center: float = 0.05, width: float = 0.1, prob: float = 1.0):
        super().__init__(prob)
        self.center, self.width = center, width
        self.c, self.w = 0.5, 1.0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.c = 0.5 + self.R.uniform(-self.center, self.center)
            self.w = 1.0 + self.R.uniform(-self.width, self.width)

    def _apply(self, img):
        return ((img - self.c) / self.w + 0.5).clamp(0, 1)


class RandBrightnessContrast(_RandomImageTransform):
    """Colour jitter for grayscale: x * U(1-b, 1+b), then (x - mean) * U(1-c, 1+c) + mean, clipped."""

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, prob: float = 0.8):
        super().__init__(prob)
        self.brightness, self.contrast = brightness, contrast
        self.b, self.c = 1.0, 1.0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.b = self.R.uniform(1 - self.brightness, 1 + self.brightness)
            self.c = self.R.uniform(1 - self.contrast, 1 + self.contrast)

    def _apply(self, img):
        img = (img * self.b).clamp(0, 1)
        mean = img.mean()
        return ((img - mean) * self.c + mean).clamp(0, 1)


class RandGamma(_RandomImageTransform):
    """y = x ** g with g ~ U(gamma): a global non-linear contrast change that keeps 0 and 1 fixed."""

    def __init__(self, gamma=(0.7, 1.4), prob: float = 0.5):
        super().__init__(prob)
        self.gamma = tuple(gamma)
        self.g = 1.0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.g = self.R.uniform(*self.gamma)

    def _apply(self, img):
        return img.clamp(0, 1) ** self.g


class RandSolarize(_RandomImageTransform):
    """Pixels >= threshold become 1 - x."""

    def __init__(self, threshold: float = 0.5, prob: float = 0.2):
        super().__init__(prob)
        self.threshold = threshold

    def _apply(self, img):
        return torch.where(img >= self.threshold, 1.0 - img, img)


def build_steps(specs, out_size: int) -> list:
    """Validated specs (canonical order) -> list of MONAI(-style) transforms."""
    spec = {s.name: s.params for s in specs}
    steps: list = []
    if "window_jitter" in spec:
        s = spec["window_jitter"]
        steps.append(RandWindowJitter(s["center"], s["width"], prob=s["p"]))
    if "intensity" in spec:
        s = spec["intensity"]
        steps += [RandScaleIntensity(factors=s["scale"], prob=s["p"]),
                  RandShiftIntensity(offsets=s["shift"], prob=s["p"]), ClipIntensity()]
    if "jitter" in spec:
        s = spec["jitter"]
        steps.append(RandBrightnessContrast(s["brightness"], s["contrast"], prob=s["p"]))
    if "gamma" in spec:
        steps.append(RandGamma(spec["gamma"]["gamma"], prob=spec["gamma"]["p"]))
    if "solarize" in spec:
        steps.append(RandSolarize(spec["solarize"]["threshold"], prob=spec["solarize"]["p"]))
    crop = spec.get("crop", {"scale": (1.0, 1.0), "ratio": (1.0, 1.0), "p": 0.0})   # no crop: resize the box
    steps.append(RandResizedCrop(out_size, crop["scale"], crop["ratio"], prob=crop["p"]))
    if "rotate" in spec:
        steps.append(RandRotate(range_x=math.radians(spec["rotate"]["degrees"]), prob=spec["rotate"]["p"],
                                keep_size=True, mode="bilinear", padding_mode="zeros", align_corners=False))
    if "hflip" in spec:
        steps.append(RandFlip(prob=spec["hflip"]["p"], spatial_axis=1))
    if "vflip" in spec:
        steps.append(RandFlip(prob=spec["vflip"]["p"], spatial_axis=0))
    if "affine" in spec:
        s = spec["affine"]
        shear = math.tan(math.radians(s["shear"]))
        steps.append(RandAffine(prob=s["p"], shear_range=(shear, shear),
                                translate_range=(s["translate"] * out_size, s["translate"] * out_size),
                                mode="bilinear", padding_mode="zeros"))
    if "perspective" in spec:
        steps.append(RandPerspective(spec["perspective"]["distortion"], prob=spec["perspective"]["p"]))
    if "blur" in spec:
        s = spec["blur"]
        steps.append(RandGaussianSmooth(sigma_x=s["sigma"], sigma_y=s["sigma"], prob=s["p"], approx="erf"))
    if "noise" in spec:
        steps += [RandGaussianNoise(prob=spec["noise"]["p"], mean=0.0, std=spec["noise"]["std"]), ClipIntensity()]
    return steps


class PolicyTransform(Randomizable, Transform):
    """Array form: (1, H, W) (or (H, W)) in [0, 1] -> (1, S, S) float32 tensor.

    `box`: content box (top, left, height, width) as in `medssl.cache.CachedImages.content_box`."""

    def __init__(self, specs, out_size: int):
        self.out_size = int(out_size)
        self.steps = build_steps(specs, self.out_size)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        for t in self.steps:     # like monai Compose: children get seeds drawn from our stream
            if isinstance(t, Randomizable):
                t.set_random_state(seed=int(self.R.randint(MAX_SEED, dtype="uint32")))
        return self

    def randomize(self, data=None) -> None:   # each step draws its own parameters
        pass

    def __call__(self, img, box=None, randomize: bool = True) -> torch.Tensor:
        x = torch.as_tensor(np.ascontiguousarray(img)) if isinstance(img, np.ndarray) else _plain(img)
        if x.dim() == 2:
            x = x[None]
        if x.dim() != 3 or x.shape[0] != 1:
            raise ValueError(f"expected a (1, H, W) image, got shape {tuple(x.shape)}")
        x = to_unit_float(x)
        # MetaTensor bookkeeping (affine history for inversion) costs ~2/3 of the time and is not
        # needed for training views; the flag is a MONAI module global, restored right after.
        tracking = get_track_meta()
        set_track_meta(False)
        try:
            for t in self.steps:
                if isinstance(t, RandResizedCrop):
                    x = t(x, box=box, randomize=randomize)
                elif isinstance(t, Randomizable):
                    x = t(x, randomize=randomize)
                else:
                    x = t(x)
        finally:
            set_track_meta(tracking)
        return _plain(x).to(torch.float32)


class PolicyTransformd(Randomizable, MapTransform):
    """Dictionary form: augments `keys` with the SAME random parameters (MONAI semantics), content
    box from `box_key` when given. Call twice for two views."""

    def __init__(self, transform: PolicyTransform, keys: KeysCollection, box_key: str | None = None,
                 allow_missing_keys: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.transform = transform
        self.box_key = box_key

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        box = d.get(self.box_key) if self.box_key else None
        first = True
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key], box=box, randomize=first)
            first = False
        return d

