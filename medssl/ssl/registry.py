"""Method name (`ssl.method`) -> class, and the one way to build a method.

Every method is an nn.Module with the same surface:
  Method(encoder: medssl.models.backbones.Encoder, cfg: medssl.config.SSLConfig)
  forward(view_a, view_b, patient=None) -> (loss, logs)   views (B,1,H,W) float in [0,1],
      patient (B,) int64 codes or None; logs: detached scalars incl. feat_std, and pos_sim, neg_sim
      for the methods that compare two views (`compares_views`, default True; the single-image
      methods mae/rotation/jigsaw/inpainting set it False, use view_a only: `medssl.ssl.pretext`)
  .encoder            the online medssl Encoder (checkpoint keys `encoder.net.*`)
  .momentum           EMA momentum used by on_train_batch_end (the trainer may set it per step)
  momentum_update(m=None), on_train_batch_end()   EMA step (no-ops for SimCLR and triplet)
  .has_momentum_network   True when the method keeps an EMA copy (MoCo v2/v3, BYOL, DINO): the trainer then
      sets its momentum schedule, calls momentum_update(m) and logs m
Frozen EMA copies have requires_grad False: give the optimizer only parameters that require grad.
"""

from __future__ import annotations

from torch import nn

from medssl.config import SSLConfig
from medssl.errors import ConfigError
from medssl.ssl.barlowtwins import BarlowTwins
from medssl.ssl.byol import BYOL
from medssl.ssl.colorization import NAMES as _REFUSED_COLORIZATION, refuse_colorization
from medssl.ssl.dino import DINO
from medssl.ssl.inpainting import Inpainting
from medssl.ssl.jigsaw import Jigsaw
from medssl.ssl.mae import MAE
from medssl.ssl.moco import MoCo
from medssl.ssl.mocov3 import MoCoV3
from medssl.ssl.rotation import RotationPrediction
from medssl.ssl.simclr import SimCLR
from medssl.ssl.simsiam import SimSiam
from medssl.ssl.swav import SwAV
from medssl.ssl.triplet import Triplet
from medssl.ssl.vicreg import VICReg

METHODS: dict[str, type[nn.Module]] = {"mocov2": MoCo, "simclr": SimCLR, "byol": BYOL, "triplet": Triplet}
# single-image pretext tasks and masked image modelling (medssl.ssl.pretext)
METHODS.update({"mae": MAE, "rotation": RotationPrediction, "jigsaw": Jigsaw, "inpainting": Inpainting})
# non-contrastive joint-embedding methods and MoCo v3 (each in its own module)
METHODS.update({"simsiam": SimSiam, "barlowtwins": BarlowTwins, "vicreg": VICReg, "swav": SwAV, "dino": DINO,
                "mocov3": MoCoV3})


def build_method(name: str, encoder: nn.Module, cfg: SSLConfig) -> nn.Module:
    """The SSL method `name` around `encoder`, configured by the `ssl` config section."""
    if name in _REFUSED_COLORIZATION:
        refuse_colorization(name)   # grayscale only: no colour to predict (medssl.ssl.colorization)
    cls = METHODS.get(name)
    if cls is None:
        raise ConfigError(f"ssl.method: unknown method {name!r}; choose one of {sorted(METHODS)}")
    return cls(encoder, cfg)
