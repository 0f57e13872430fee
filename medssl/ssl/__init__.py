"""Self-supervised pretraining: losses, methods (MoCo v2, SimCLR, BYOL, triplet), DDP helpers.

`METHODS` (name -> nn.Module class) and `build_method(name, encoder, cfg)` are exported lazily
(PEP 562), so importing a light submodule such as `medssl.ssl.schedules` does not import torch.
"""

from __future__ import annotations

__all__ = ["METHODS", "build_method"]


def __getattr__(name: str):
    if name in __all__:
        from medssl.ssl import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'medssl.ssl' has no attribute {name!r}")
