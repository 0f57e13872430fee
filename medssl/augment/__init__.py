"""Modality-safe augmentation: named policies, a per-sample MONAI path and a batched on-device path.

    from medssl.augment import policy
    aug = policy("xray-default", modality="xray", out_size=224)
    view = aug(x)                       # (1, H, W) float in [0, 1] -> (1, 224, 224), MONAI, CPU
    views = aug.batch(x_uint8_bchw)     # (B, 1, H, W) uint8/float on CPU or CUDA -> (B, 1, 224, 224)

See `policies.py` for the transforms, their order, and what each modality allows.
"""

from medssl.augment.policies import (ALLOWED, POLICIES, TRANSFORMS, AugmentPolicy, TransformSpec, policy,
                                     policy_from_config, resolve_specs, unsafe_findings)

__all__ = ["ALLOWED", "POLICIES", "TRANSFORMS", "AugmentPolicy", "TransformSpec", "policy", "policy_from_config",
           "resolve_specs", "unsafe_findings"]
