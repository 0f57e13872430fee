"""Method name (`ssl.method`) -> class, and the one way to build a method.

Every method is an nn.Module with the same surface:
  Method(encoder: medssl.models.backbones.Encoder, cfg: medssl.config.SSLConfig)
  forward(view_a, view_b, patient=None) -> (loss, logs)   views (B,1,H,W) float in [0,1],
      patient (B,) int64 codes or None; logs: detached scalars incl. pos_sim, neg_sim, feat_std
  .encoder            the online medssl Encoder (checkpoint keys `encoder.net.*`)
  .momentum           EMA momentum used by on_train_batch_end (the trainer may set it per step)
  momentum_update(m=None), on_train_batch_end()   EMA step (no-ops for SimCLR and triplet)
  .has_momentum_network   True when the method keeps an EMA copy (MoCo, BYOL): the trainer then
      sets its momentum schedule, calls momentum_update(m) and logs m
Frozen EMA copies have requires_grad False: give the optimizer only parameters that require grad.
"""

from __future__ import annotations

from torch import nn

from medssl.config import SSLConfig
from medssl.errors import ConfigError
from medssl.ssl.byol import BYOL
from medssl.ssl.moco import MoCo
from medssl.ssl.simclr import SimCLR
from medssl.ssl.triplet import Triplet

METHODS: dict[str, type[nn.Module]] = {"mocov2": MoCo, "simclr": SimCLR, "byol": BYOL, "triplet": Triplet}


def build_method(name: str, encoder: nn.Module, cfg: SSLConfig) -> nn.Module:
    """The SSL method `name` around `encoder`, configured by the `ssl` config section."""
    cls = METHODS.get(name)
    if cls is None:
        raise ConfigError(f"ssl.method: unknown method {name!r}; choose one of {sorted(METHODS)}")
    return cls(encoder, cfg)
