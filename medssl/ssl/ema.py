"""EMA target networks: the momentum encoder of MoCo, BYOL, MoCo v3 and DINO.

`momentum_encoder(online)` makes the frozen copy, `update_momentum(target, online, m)` moves it;
`TargetNetworkMethod` is the base of the methods whose target is an EMA of `encoder` + `projector`
(kept as `encoder_target` / `projector_target`), with the trainer-facing surface of the registry:
`has_momentum_network`, `momentum`, `momentum_update(m)`, `on_train_batch_end()`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def momentum_encoder(online: nn.Module) -> nn.Module:
    """A frozen deep copy of `online` (no gradients; updated only by `update_momentum`)."""
    target = copy.deepcopy(online)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def update_momentum(target: nn.Module, online: nn.Module, m: float) -> None:
    """EMA of parameters: target <- m * target + (1 - m) * online (m=1 freezes, m=0 copies).

    Buffers (BN running statistics) are not averaged: the target keeps its own, as in the
    reference implementations; they only matter if the target network is ever run in eval mode.
    """
    t_params = [p for p in target.parameters()]
    o_params = [p.detach() for p in online.parameters()]
    if len(t_params) != len(o_params):
        raise ValueError("momentum target and online network have different parameter lists")
    torch._foreach_lerp_(t_params, o_params, 1.0 - m)


class TargetNetworkMethod(nn.Module):
    """A method with an online encoder + projector and their EMA copies as the target/teacher."""

    has_momentum_network = True
    encoder: nn.Module
    projector: nn.Module

    def init_target(self, momentum: float) -> None:
        """Create the EMA copies of `self.encoder` and `self.projector` (call once both exist)."""
        self.encoder_target = momentum_encoder(self.encoder)
        self.projector_target = momentum_encoder(self.projector)
        self.momentum = momentum                  # the trainer may set a schedule value per step

    def momentum_update(self, m: float | None = None) -> None:
        """Move the target towards the online network; m defaults to `self.momentum`."""
        m = self.momentum if m is None else m
        update_momentum(self.encoder_target, self.encoder, m)
        update_momentum(self.projector_target, self.projector, m)

    def on_train_batch_end(self) -> None:
        self.momentum_update()
