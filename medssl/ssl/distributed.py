"""Collectives the contrastive methods need under DDP, with single-process fallbacks.

Every function works with or without an initialised torch.distributed process group, so the
methods contain no `if distributed` branches. All ranks must pass tensors of the same shape
(use a sampler with drop_last=True), as torch's all_gather requires.

Gradient scaling, the part that is easy to get wrong: DDP *averages* parameter gradients
over ranks. If every rank computes its loss over its local anchors against candidates
gathered from all ranks, the global loss is the mean of the rank losses. The gradient of that
mean with respect to this rank's embeddings is (1/W) * sum over ranks of their loss gradients;
DDP supplies the 1/W, so `gather_with_grad` must return the *sum* over ranks of the gradients of
its gathered output (all_reduce SUM, then this rank's slice) — not only the local gradient,
which would be W times too small for the cross-rank terms.

BatchNorm under DDP, two ways (`ssl.shuffle_bn`):
  true:  MoCo's shuffle-BN (`batch_shuffle_ddp`/`batch_unshuffle_ddp`): the key encoder sees a
         random mix of all ranks' samples, so its BN statistics cannot leak which key belongs to
         which query (the reference facebookresearch/moco approach).
  false: SyncBatchNorm across ranks (`convert_sync_batchnorm`, or Lightning's
         `Trainer(sync_batchnorm=True)`): one global batch statistic. SyncBN needs CUDA.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward sums the output gradient over ranks (see module doc)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.n = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.n
        return grad[start:start + ctx.n]


def gather_with_grad(x: Tensor) -> Tensor:
    """(n, ...) per rank -> (W*n, ...) in rank order, differentiable; identity in one process."""
    if not is_distributed() or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def concat_all_gather(x: Tensor) -> Tensor:
    """(n, ...) per rank -> (W*n, ...) in rank order, without gradient (MoCo keys, patient codes)."""
    if not is_distributed() or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def batch_shuffle_ddp(x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """MoCo shuffle-BN: a random slice of the *global* batch for this rank, and the inverse index.

    Returns (x_shuffled (n, ...), idx_unshuffle (W*n,)). Rank 0 draws the permutation and
    broadcasts it. In one process the permutation is local (BN statistics are then unchanged,
    the round trip is still exercised).
    """
    n_all = x.shape[0] * world_size()
    idx_shuffle = torch.randperm(n_all, generator=generator, device="cpu").to(x.device)
    if not is_distributed() or dist.get_world_size() == 1:
        return x[idx_shuffle], torch.argsort(idx_shuffle)
    x_all = concat_all_gather(x)
    dist.broadcast(idx_shuffle, src=0)
    idx_unshuffle = torch.argsort(idx_shuffle)
    idx_this = idx_shuffle.view(dist.get_world_size(), -1)[dist.get_rank()]
    return x_all[idx_this], idx_unshuffle


@torch.no_grad()
def batch_unshuffle_ddp(x: Tensor, idx_unshuffle: Tensor) -> Tensor:
    """Undo `batch_shuffle_ddp`: this rank's rows back in their original order, (n, ...)."""
    if not is_distributed() or dist.get_world_size() == 1:
        return x[idx_unshuffle]
    x_all = concat_all_gather(x)
    idx_this = idx_unshuffle.view(dist.get_world_size(), -1)[dist.get_rank()]
    return x_all[idx_this]


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """BatchNorm -> SyncBatchNorm (for `ssl.shuffle_bn: false`); unchanged in one process."""
    if not is_distributed() or dist.get_world_size() == 1:
        return module
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)


def wants_sync_batchnorm(method: str, shuffle_bn: bool) -> bool:
    """Whether a multi-GPU run of `method` should use SyncBN (pass to Trainer(sync_batchnorm=...)).

    MoCo uses shuffle-BN unless `shuffle_bn` is false. SimCLR and BYOL use global BN as in
    their papers (per-device BN lets the contrastive task cheat on batch statistics).
    """
    if method == "mocov2":
        return not shuffle_bn
    return method in ("simclr", "byol")
