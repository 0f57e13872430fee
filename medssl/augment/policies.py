"""Named augmentation policies, the transforms they may use, and what each modality allows.

A policy is an ordered list of `TransformSpec(name, params)`. Specs come from a named policy
(`POLICIES`), from YAML (`augment.policy` + `augment.params` overrides such as
`{rotate: {degrees: 5}}`), or from a mapping passed in code; every name, parameter and value is
checked here, before any pixel is touched. Transforms run in the canonical order of
`TRANSFORMS` whatever order the spec lists them in (the batched path fuses all geometric steps
into one resampling, so the order must be fixed):

    intensity (pre-geometry, so zero padding stays air):  window_jitter, intensity, jitter, solarize
    geometry (one resample on the batched path):          crop, rotate, hflip, vflip, affine, perspective
    texture (post-geometry, at output size):              blur, noise

Each modality has an ALLOWED set with bounds. A transform outside it (colour jitter, blur,
solarise, vertical flips, strong crops, large rotations for X-ray ...) raises
`UnsafeAugmentationError` saying why it removes diagnostic signal and how to force it;
`force_unsafe=True` allows it and logs a WARNING. This module is pure Python (no torch): the
pixel work lives in `transforms.py` (per-sample, MONAI) and `batch.py` (batched, any device).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from medssl.errors import ConfigError, UnsafeAugmentationError

log = logging.getLogger(__name__)

FORCE_HINT = ("To use it anyway (e.g. for a SimCLR-style baseline), set `augment.force_unsafe: true` "
              "(CLI: --set augment.force_unsafe=true; code: force_unsafe=True).")

# ----------------------------------------------------------------------------- parameter kinds
# kind -> (check(value) -> normalised value or raise ValueError, description for messages)


def _number(v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError("expected a finite number")
    return float(v)


def _prob(v):
    v = _number(v)
    if not 0.0 <= v <= 1.0:
        raise ValueError("a probability must be in [0, 1]")
    return v


def _fraction(v):
    v = _number(v)
    if not 0.0 <= v <= 1.0:
        raise ValueError("must be a fraction in [0, 1]")
    return v


def _distortion(v):
    v = _number(v)
    if not 0.0 <= v <= 0.25:
        raise ValueError("must be in [0, 0.25] (beyond that the corner quad can fold over)")
    return v


def _degrees(v):
    v = _number(v)
    if not 0.0 <= v <= 180.0:
        raise ValueError("must be an angle in degrees in [0, 180]")
    return v


def _shear_degrees(v):
    v = _number(v)
    if not 0.0 <= v < 45.0:
        raise ValueError("must be a shear angle in degrees in [0, 45)")
    return v


def _interval(lo_min: float, hi_max: float, *, lo_open: bool = True):
    def check(v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            raise ValueError("expected a [min, max] pair")
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            raise ValueError("expected a [min, max] pair")
        lo, hi = _number(v[0]), _number(v[1])
        if (lo <= lo_min if lo_open else lo < lo_min) or hi > hi_max or lo > hi:
            raise ValueError(f"needs {lo_min} {'<' if lo_open else '<='} min <= max <= {hi_max}")
        return (lo, hi)
    return check


PARAM_KINDS = {
    "prob": _prob,
    "fraction": _fraction,
    "degrees": _degrees,
    "distortion": _distortion,
    "shear": _shear_degrees,
    "scale": _interval(0.0, 1.0),       # crop area fraction
    "ratio": _interval(0.0, 10.0),      # crop aspect ratio w/h
    "sigma": _interval(0.0, 20.0),      # blur sigma in output pixels
    "gamma": _interval(0.0, 5.0),       # gamma exponent range
}


@dataclass(frozen=True)
class TransformDef:
    """One transform medssl knows: its stage, parameters (name -> (kind, default)) and meaning."""

    stage: str                        # "intensity" | "geometry" | "texture"
    params: Mapping[str, tuple]
    doc: str


#: Every transform, in the canonical order in which they run.
TRANSFORMS: dict[str, TransformDef] = {
    "window_jitter": TransformDef("intensity", {"center": ("fraction", 0.05), "width": ("fraction", 0.1),
                                                "p": ("prob", 1.0)},
        "re-window the stored intensity range: new centre 0.5 + U(-center, center) and width "
        "1 + U(-width, width), in units of the stored window (for a cache read with window='none' "
        "this jitters the HU window by that fraction of its width); y = clip((x - c) / w + 0.5, 0, 1)"),
    "intensity": TransformDef("intensity", {"scale": ("fraction", 0.1), "shift": ("fraction", 0.05),
                                            "p": ("prob", 1.0)},
        "y = clip(x * (1 + U(-scale, scale)) + U(-shift, shift), 0, 1); scale and shift each with probability p"),
    "jitter": TransformDef("intensity", {"brightness": ("fraction", 0.4), "contrast": ("fraction", 0.4),
                                         "p": ("prob", 0.8)},
        "colour jitter: x * U(1-b, 1+b), then (x - mean) * U(1-c, 1+c) + mean, clipped to [0, 1]"),
    "gamma": TransformDef("intensity", {"gamma": ("gamma", (0.7, 1.4)), "p": ("prob", 0.5)},
        "y = x ** U(gamma); 0 and 1 (air padding, saturated bone) stay where they are"),
    "solarize": TransformDef("intensity", {"threshold": ("fraction", 0.5), "p": ("prob", 0.2)},
        "pixels >= threshold become 1 - x"),
    "crop": TransformDef("geometry", {"scale": ("scale", (0.7, 1.0)), "ratio": ("ratio", (3 / 4, 4 / 3)),
                                      "p": ("prob", 1.0)},
        "random resized crop (area fraction `scale` of the content box, aspect `ratio`, log-uniform), "
        "resized to the output size; when not applied the whole content box is resized"),
    "rotate": TransformDef("geometry", {"degrees": ("degrees", 10.0), "p": ("prob", 1.0)},
        "rotation about the centre by U(-degrees, degrees), zero padding"),
    "hflip": TransformDef("geometry", {"p": ("prob", 0.5)}, "left-right flip"),
    "vflip": TransformDef("geometry", {"p": ("prob", 0.5)}, "up-down flip"),
    "affine": TransformDef("geometry", {"shear": ("shear", 5.0), "translate": ("fraction", 0.05),
                                        "p": ("prob", 1.0)},
        "shear factors U(-tan(shear), tan(shear)) on both axes and translation U(-translate, translate) "
        "of the output size on both axes (MONAI RandAffine conventions)"),
    "perspective": TransformDef("geometry", {"distortion": ("distortion", 0.05), "p": ("prob", 0.5)},
        "homography moving each output corner by U(-distortion, distortion) of the half-size per axis"),
    "blur": TransformDef("texture", {"sigma": ("sigma", (0.1, 2.0)), "p": ("prob", 0.5)},
        "Gaussian blur, sigma per axis U(sigma) in output pixels"),
    "noise": TransformDef("texture", {"std": ("fraction", 0.01), "p": ("prob", 0.0)},
        "additive Gaussian noise with std U(0, std) (MONAI RandGaussianNoise), clipped to [0, 1]"),
}

STAGES = ("intensity", "geometry", "texture")


@dataclass(frozen=True)
class TransformSpec:
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, key):
        return self.params[key]


# ----------------------------------------------------------------------------- named policies
#: Named policies: transform name -> parameter overrides of the TransformDef defaults.
POLICIES: dict[str, dict] = {
    # Keeps most of the field; light geometry only; noise off (enable with params {noise: {p: 0.5}}).
    "xray-default": {
        "crop": {"scale": (0.7, 1.0), "ratio": (3 / 4, 4 / 3)},
        "rotate": {"degrees": 10.0},
        "hflip": {"p": 0.5},
        "affine": {"shear": 5.0, "translate": 0.05},
        "perspective": {"distortion": 0.05, "p": 0.5},
        "noise": {"std": 0.01, "p": 0.0},
    },
    # Left-right flip of an axial slice mirrors situs (heart, liver side): present but OFF (p=0);
    # enable with params {hflip: {p: 0.5}} for tasks that are side-agnostic.
    "ct-default": {
        "window_jitter": {"center": 0.05, "width": 0.1},
        "crop": {"scale": (0.8, 1.0)},
        "rotate": {"degrees": 5.0},
        "hflip": {"p": 0.0},
        "noise": {"std": 0.01, "p": 0.0},
    },
    # MR intensities are not calibrated: small scale/shift; no flips.
    "mr-default": {
        "intensity": {"scale": 0.1, "shift": 0.05},
        "crop": {"scale": (0.8, 1.0)},
        "rotate": {"degrees": 5.0},
    },
    # SimCLR's natural-image recipe in grayscale: refused for every modality unless forced.
    "simclr": {
        "jitter": {"brightness": 0.4, "contrast": 0.4, "p": 0.8},
        "crop": {"scale": (0.08, 1.0)},
        "hflip": {"p": 0.5},
        "blur": {"sigma": (0.1, 2.0), "p": 0.5},
    },
    # Resize only (evaluation, previews of the raw input).
    "none": {},
}

#: Pretraining: each modality's fine-tuning policy plus mild GLOBAL intensity jitter. Geometry alone
#: leaves a shortcut: two views of one radiograph keep its histogram (exposure, processing), so a
#: 32-bin histogram finds the partner among 64 embedded Kermany images 78% of the time; with the
#: X-ray jitter 9% (medssl.augment.shortcut). Allowed in pretraining only (PRETRAIN_ALLOWED). CT and MR
#: already re-window / rescale in their fine-tuning policies and only add a mild gamma.
PRETRAIN_INTENSITY = {
    "xray": {"jitter": {"brightness": 0.3, "contrast": 0.3, "p": 0.8}, "gamma": {"gamma": (0.7, 1.4), "p": 0.5}},
    "ct": {"gamma": {"gamma": (0.8, 1.25), "p": 0.5}},
    "mr": {"gamma": {"gamma": (0.8, 1.25), "p": 0.5}},
}
for _mod, _extra in PRETRAIN_INTENSITY.items():
    POLICIES[f"{_mod}-pretrain"] = {**_extra, **POLICIES[f"{_mod}-default"]}

# ----------------------------------------------------------------------------- safety
#: Why a transform is refused, per transform (used when it is absent from a modality's allowed set).
UNSAFE_REASONS = {
    "jitter": "brightness/contrast jitter changes radiographic density, and density is the diagnostic "
              "signal (an opacity, an effusion, a pneumothorax are density changes)",
    "intensity": "X-ray pixel values are densities, not arbitrary units: scaling/shifting them changes "
                 "density, the diagnostic signal",
    "window_jitter": "X-ray images have no calibrated units to re-window: re-windowing is contrast jitter "
                     "and changes density, the diagnostic signal",
    "gamma": "a gamma change re-maps radiographic density non-linearly, and density is the diagnostic signal",
    "solarize": "solarisation inverts part of the intensity range, so dense and lucent tissue swap",
    "blur": "Gaussian blur destroys fine texture (interstitial markings, small nodules, fracture lines)",
    "vflip": "an up-down flip produces an anatomically impossible image (e.g. diaphragm above the apices)",
}

#: Per-parameter bound reasons: (transform, param) -> why exceeding the bound is unsafe.
BOUND_REASONS = {
    ("crop", "scale"): "a strong crop can cut out the finding that defines the label (a lesion or an "
                       "effusion at the edge of the field)",
    ("rotate", "degrees"): "large rotations produce non-physiological orientations and rotate "
                           "position-dependent anatomy out of the field",
    ("affine", "shear"): "strong shear distorts organ shape (heart size, mediastinal width are measured findings)",
    ("affine", "translate"): "large translations push anatomy out of the field",
    ("perspective", "distortion"): "strong perspective distorts organ size and shape",
    ("noise", "std"): "strong noise hides subtle findings",
    ("window_jitter", "center"): "a large window shift saturates tissue that carries the finding",
    ("window_jitter", "width"): "a large width change alters contrast between tissues",
    ("intensity", "scale"): "large intensity scaling changes tissue contrast",
    ("intensity", "shift"): "large intensity shifts saturate tissue",
    ("jitter", "brightness"): "strong brightness jitter saturates the lungs or the mediastinum",
    ("jitter", "contrast"): "strong contrast jitter flattens the density differences that carry findings",
    ("gamma", "gamma"): "a strong gamma change crushes either the lung fields or the dense structures",
}

_GEOMETRY_BOUNDS = {
    "crop": {"scale": ("min", 0.5)},
    "rotate": {"degrees": ("max", 15.0)},
    "hflip": {},
    "affine": {"shear": ("max", 10.0), "translate": ("max", 0.1)},
    "perspective": {"distortion": ("max", 0.1)},
    "noise": {"std": ("max", 0.05)},
}

#: modality -> {allowed transform -> {param -> ("min"|"max", bound)}}; anything else is refused.
#: "min" on a [min, max] interval bounds its lower end.
ALLOWED: dict[str, dict[str, dict]] = {
    "xray": dict(_GEOMETRY_BOUNDS),
    "ct": {**_GEOMETRY_BOUNDS, "window_jitter": {"center": ("max", 0.1), "width": ("max", 0.2)}},
    "mr": {**_GEOMETRY_BOUNDS, "window_jitter": {"center": ("max", 0.1), "width": ("max", 0.2)},
           "intensity": {"scale": ("max", 0.2), "shift": ("max", 0.1)}},
}

#: What PRETRAINING may add per modality, on top of ALLOWED. In pretraining an augmentation decides
#: what the features learn to ignore: global exposure and processing differences between films are
#: nuisance there, and without them the views match by histogram (see "xray-pretrain"). The
#: fine-tuned classifier still sees true densities: fine-tuning policies are checked against
#: ALLOWED alone. Local blur, solarisation, vertical flips and strong crops stay refused.
PRETRAIN_ALLOWED: dict[str, dict[str, dict]] = {
    "xray": {"jitter": {"brightness": ("max", 0.4), "contrast": ("max", 0.4)},
             "gamma": {"gamma": ("range", (0.5, 2.0))}},
    "ct": {"gamma": {"gamma": ("range", (0.5, 2.0))}},
    "mr": {"gamma": {"gamma": ("range", (0.5, 2.0))}},
}
#: What a policy is for: "pretrain" (ALLOWED + PRETRAIN_ALLOWED) or "finetune" (ALLOWED only).
PURPOSES = ("pretrain", "finetune")


def allowed_set(modality: str, purpose: str = "finetune") -> dict[str, dict]:
    """Transforms (and their bounds) a modality allows for `purpose`."""
    if purpose not in PURPOSES:
        raise ConfigError(f"augmentation purpose {purpose!r} is not one of {list(PURPOSES)}")
    mod = normalise_modality(modality)
    return {**ALLOWED[mod], **(PRETRAIN_ALLOWED[mod] if purpose == "pretrain" else {})}


#: DICOM modality codes and spellings accepted for `modality`.
MODALITY_ALIASES = {"xray": "xray", "x-ray": "xray", "cr": "xray", "dx": "xray", "dr": "xray", "xr": "xray",
                    "ct": "ct", "mr": "mr", "mri": "mr"}


def normalise_modality(modality: str) -> str:
    key = str(modality).strip().lower()
    if key not in MODALITY_ALIASES:
        raise ConfigError(f"modality {modality!r} is not known; use one of {sorted(ALLOWED)} "
                          "(DICOM codes CR/DX/CT/MR also work)")
    return MODALITY_ALIASES[key]


# ----------------------------------------------------------------------------- resolution
def _validate_params(name: str, given: Mapping, where: str) -> dict:
    tdef = TRANSFORMS[name]
    if not isinstance(given, Mapping):
        raise ConfigError(f"{where}: expected a mapping of parameters for '{name}', got {given!r}")
    out = {}
    for key, value in given.items():
        if key not in tdef.params:
            raise ConfigError(f"{where}.{key}: unknown parameter of '{name}'; "
                              f"allowed: {sorted(tdef.params)}")
        kind, _ = tdef.params[key]
        try:
            out[key] = PARAM_KINDS[kind](value)
        except ValueError as e:
            raise ConfigError(f"{where}.{key}: {value!r} is out of range for '{name}': {e}") from None
    return out


def _check_name(name: str, where: str) -> None:
    if name not in TRANSFORMS:
        raise ConfigError(f"{where}: unknown transform '{name}'; known transforms: {list(TRANSFORMS)}")


def resolve_specs(name_or_spec, params: Mapping | None = None) -> tuple[str, list[TransformSpec]]:
    """Policy name or spec mapping + overrides -> (policy name, validated specs in canonical order).

    `name_or_spec`: a key of POLICIES, a mapping {transform: {param: value}}, or a list of
    TransformSpec / {"name": ..., **params}. `params`: {transform: {param: value}} merged on top;
    {transform: null/false} removes a transform; an absent transform is added with its defaults.
    """
    if isinstance(name_or_spec, str):
        if name_or_spec not in POLICIES:
            raise ConfigError(f"augment.policy: unknown policy '{name_or_spec}'; "
                              f"choose one of {sorted(POLICIES)} or give a spec mapping")
        label, base = name_or_spec, POLICIES[name_or_spec]
    elif isinstance(name_or_spec, Mapping):
        label, base = "custom", name_or_spec
    elif isinstance(name_or_spec, (list, tuple)):
        label, base = "custom", {}
        for i, item in enumerate(name_or_spec):
            if isinstance(item, TransformSpec):
                base[item.name] = dict(item.params)
            elif isinstance(item, Mapping) and "name" in item:
                base[item["name"]] = {k: v for k, v in item.items() if k != "name"}
            else:
                raise ConfigError(f"augment spec [{i}]: expected a TransformSpec or a mapping with 'name', "
                                  f"got {item!r}")
    else:
        raise ConfigError(f"augment.policy: expected a policy name or a spec mapping, got {name_or_spec!r}")

    merged: dict[str, dict | None] = {}
    for name, p in base.items():
        _check_name(name, "augment.policy")
        merged[name] = _validate_params(name, p or {}, f"augment.policy.{name}")
    for name, p in (params or {}).items():
        _check_name(name, "augment.params")
        if p is None or p is False:
            merged.pop(name, None)
            continue
        merged[name] = {**(merged.get(name) or {}), **_validate_params(name, p, f"augment.params.{name}")}

    specs = []
    for name, tdef in TRANSFORMS.items():   # canonical order
        if name in merged:
            full = {k: default for k, (_, default) in tdef.params.items()}
            full.update(merged[name])
            specs.append(TransformSpec(name, full))
    return label, specs


def _outside(side: str, bound, value) -> bool:
    if side == "range":   # both ends of an interval inside [lo, hi]
        lo, hi = value if isinstance(value, tuple) else (value, value)
        return lo < bound[0] or hi > bound[1]
    probe = value[0] if isinstance(value, tuple) else value
    return (side == "max" and probe > bound) or (side == "min" and probe < bound)


def bound_text(param: str, side: str, bound) -> str:
    if side == "range":
        return f"{param} within [{bound[0]}, {bound[1]}]"
    return f"{param} {'<=' if side == 'max' else '>='} {bound}"


def unsafe_findings(specs, modality: str, purpose: str = "finetune") -> list[str]:
    """Human-readable reasons why specs are unsafe for `modality` and `purpose` (empty list = all allowed)."""
    allowed = allowed_set(modality, purpose)
    pretrain_only = set(PRETRAIN_ALLOWED[normalise_modality(modality)])
    found = []
    for spec in specs:
        if spec.name not in allowed:
            if spec.params.get("p", 1.0) == 0.0:
                continue   # present but disabled: harmless
            why = UNSAFE_REASONS.get(spec.name, "it is not in the allowed set for this modality")
            where = (f"{modality} fine-tuning (it is allowed, bounded, in pretraining only)"
                     if spec.name in pretrain_only else modality)
            found.append(f"'{spec.name}' is not allowed for {where}: {why}")
            continue
        for param, (side, bound) in allowed[spec.name].items():
            value = spec.params[param]
            if _outside(side, bound, value):
                why = BOUND_REASONS.get((spec.name, param), "it exceeds the safe bound")
                limit = bound_text(param, side, bound)
                found.append(f"'{spec.name}.{param}' = {value} is outside the safe bound for {modality} "
                             f"({limit}): {why}")
    return found


def check_safety(specs, modality: str, *, force_unsafe: bool = False, policy_name: str = "",
                 purpose: str = "finetune") -> list[str]:
    """Raise UnsafeAugmentationError listing every unsafe spec, or (forced) log a WARNING and return them."""
    found = unsafe_findings(specs, modality, purpose)
    if found and not force_unsafe:
        head = f"augmentation policy '{policy_name}' is unsafe for {modality} images" if policy_name \
            else f"augmentation is unsafe for {modality} images"
        raise UnsafeAugmentationError(head + ":\n  - " + "\n  - ".join(found) + "\n" + FORCE_HINT)
    for item in found:
        log.warning("UNSAFE AUGMENTATION FORCED (augment.force_unsafe=true): %s. Results are not "
                    "comparable with safe policies.", item)
    return found


# ----------------------------------------------------------------------------- the policy object
class AugmentPolicy:
    """A validated policy with two executions sampling the same parameter distributions.

    - `policy(x, box=None)`: per-sample CPU path (MONAI transforms), x (1, H, W) in [0, 1]
      (box: content box (top, left, height, width) to crop inside) ->
      (1, S, S) float32 tensor; seed with `set_random_state(seed)`.
    - `policy.batch(x, generator=None, boxes=None)`: x (B, 1, H, W) uint8/uint16/float on any
      device -> (B, 1, S, S) float32 on that device; one resampling for the whole batch.
    - `policy.dict_transform(keys, box_key=None)`: MONAI dictionary form of the CPU path.
    Picklable (DataLoader workers); torch/MONAI are imported on first use.
    """

    def __init__(self, name: str, specs, modality: str, out_size: int, forced=(), purpose: str = "finetune"):
        self.name = name
        self.purpose = purpose               # "pretrain" | "finetune": which allowed set it was checked against
        self.specs = tuple(specs)
        self.modality = modality
        self.out_size = int(out_size)
        self.forced = tuple(forced)          # reasons of forced unsafe transforms (empty when safe)
        self._cpu = None

    # -- per-sample path
    @property
    def cpu_transform(self):
        if self._cpu is None:
            from medssl.augment.transforms import PolicyTransform
            self._cpu = PolicyTransform(self.specs, self.out_size)
        return self._cpu

    def set_random_state(self, seed: int | None = None, state=None) -> "AugmentPolicy":
        self.cpu_transform.set_random_state(seed, state)
        return self

    def __call__(self, x, box=None):
        return self.cpu_transform(x, box=box)

    def dict_transform(self, keys, box_key: str | None = None, allow_missing_keys: bool = False):
        from medssl.augment.transforms import PolicyTransformd
        return PolicyTransformd(self.cpu_transform, keys, box_key=box_key, allow_missing_keys=allow_missing_keys)

    # -- batched path
    def batch(self, x, generator=None, boxes=None):
        from medssl.augment.batch import augment_batch
        return augment_batch(self.specs, x, self.out_size, generator=generator, boxes=boxes)

    # -- introspection
    @property
    def unsafe(self) -> bool:
        return bool(self.forced)

    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def to_dict(self) -> dict:
        return {"policy": self.name, "purpose": self.purpose, "modality": self.modality, "out_size": self.out_size,
                "transforms": {s.name: {k: list(v) if isinstance(v, tuple) else v for k, v in s.params.items()}
                               for s in self.specs},
                "forced_unsafe": list(self.forced)}

    def describe(self) -> str:
        lines = [f"policy {self.name} for {self.modality} {self.purpose}, output {self.out_size}x{self.out_size}"]
        for s in self.specs:
            params = ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in s.params.items())
            lines.append(f"  {s.name:14s} {params}")
        for f in self.forced:
            lines.append(f"  UNSAFE (forced): {f}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"AugmentPolicy({self.name!r}, modality={self.modality!r}, out_size={self.out_size}, " \
               f"transforms={self.names()})"



def policy(name_or_spec="xray-default", *, modality: str = "xray", out_size: int = 224,
           force_unsafe: bool = False, params: Mapping | None = None, purpose: str | None = None) -> AugmentPolicy:
    """Build a validated policy; raises ConfigError (bad spec) or UnsafeAugmentationError (unsafe, not forced).

    purpose: "pretrain" or "finetune" (what the modality allows differs, see PRETRAIN_ALLOWED);
    None infers it from the name: "pretrain" for a named "<modality>-pretrain" policy, else "finetune".
    """
    mod = normalise_modality(modality)
    if isinstance(out_size, bool) or not isinstance(out_size, int) or out_size < 8:
        raise ConfigError(f"augment out_size: {out_size!r} must be an integer >= 8 (e.g. model.input_size 224)")
    if purpose is None:
        purpose = "pretrain" if isinstance(name_or_spec, str) and name_or_spec.endswith("-pretrain") else "finetune"
    label, specs = resolve_specs(name_or_spec, params)
    forced = check_safety(specs, mod, force_unsafe=force_unsafe, policy_name=label, purpose=purpose)
    return AugmentPolicy(label, specs, mod, out_size, forced, purpose=purpose)


#: `augment.policy` / `augment.finetune_policy` value that picks the modality's named policy.
AUTO = "auto"


def policy_name_for(name: str, modality: str, purpose: str) -> str:
    """`auto` -> "<modality>-pretrain" (pretraining) or "<modality>-default" (fine-tuning); else `name`."""
    if name != AUTO:
        return name
    return f"{normalise_modality(modality)}-{'pretrain' if purpose == 'pretrain' else 'default'}"


def policy_from_config(cfg, purpose: str = "pretrain", *, name: str | None = None,
                       modality: str | None = None) -> AugmentPolicy:
    """The policy of a full `medssl.config.Config` for pretraining or fine-tuning.

    pretrain: augment.policy + augment.params; finetune: augment.finetune_policy +
    augment.finetune_params. `auto` picks the modality's named policy (policy_name_for); data.modality
    and model.input_size (the view size) come from the config; `name`/`modality` override them.
    """
    a = cfg.augment
    modality = modality or cfg.data.modality
    if purpose == "pretrain":
        chosen, params = name or a.policy, a.params
    elif purpose == "finetune":
        chosen, params = name or a.finetune_policy, a.finetune_params
    else:
        raise ConfigError(f"augmentation purpose {purpose!r} is not one of {list(PURPOSES)}")
    return policy(policy_name_for(chosen, modality, purpose), modality=modality, out_size=cfg.model.input_size,
                  force_unsafe=a.force_unsafe, params=params or None, purpose=purpose)
