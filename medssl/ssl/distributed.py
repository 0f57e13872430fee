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
         `Trainer(sync_batchnorm=True)`): one global batch statistic.
Which methods want SyncBN is data: each method class declares `global_batchnorm` (see
`wants_sync_batchnorm`); `medssl.ssl.train.build_trainer` turns it on for multi-process runs.
torch's own SyncBatchNorm (2.x, up to at least 2.13) refuses CPU tensors, so `CPUSyncBatchNorm`
below stands in for it on CPU (gloo); on GPUs it is torch's layer unchanged.
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
def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum of `x` over ranks (a new tensor), without gradient: global-batch statistics (SwAV's
    Sinkhorn marginals, DINO's centre). `x` itself in one process."""
    if not is_distributed() or dist.get_world_size() == 1:
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


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


class _AllReduceSum(torch.autograd.Function):
    """all_reduce(SUM) whose backward is all_reduce(SUM) of the output gradient.

    Every rank's loss depends on every rank's input through the sum, so the gradient reaching
    this rank's input is the sum over ranks of their output gradients (DDP then averages the
    parameter gradients, as for `_GatherWithGrad`).
    """

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        ctx.group = group
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM, group=group)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm with statistics over all ranks of the process group, for CPU (gloo) DDP.

    torch (2.13) has no CPU SyncBatchNorm: `nn.SyncBatchNorm` refuses CPU tensors and DDP refuses
    CPU modules that contain it. In training mode under a group of W > 1 ranks this layer computes
    the statistics with two differentiable all_reduces (sum and count, then the centred sum of
    squares): output and gradients equal BatchNorm over the concatenated global batch, and the
    running statistics get the global mean and unbiased global variance. Otherwise (eval mode, one
    process) it is plain BatchNorm. Any input of >= 2 dims (N, C, ...), like nn.SyncBatchNorm.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        group = self.process_group or (dist.group.WORLD if is_distributed() else None)
        if not self.training or group is None or dist.get_world_size(group) == 1:
            return super().forward(input)
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm
                factor = 1.0 / float(self.num_batches_tracked)
        dims = [0] + list(range(2, input.dim()))
        shape = (1, -1) + (1,) * (input.dim() - 2)
        x = input.float()  # statistics in float32 also under bf16 autocast (CPU autocast leaves BN alone)
        count = x.new_full((1,), input.numel() // input.shape[1])
        sums = _AllReduceSum.apply(torch.cat([x.sum(dims), count]), group)
        n = sums[-1].detach()
        mean = sums[:-1] / n
        centred = x - mean.view(shape)
        # two passes: the sum of squares minus the squared mean loses digits in float32
        var = _AllReduceSum.apply((centred * centred).sum(dims), group) / n
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                unbiased = var.detach() * n / (n - 1).clamp(min=1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return out.to(input.dtype)


def _replace_batchnorm(module: nn.Module, old: type, make) -> nn.Module:
    """Every `old` layer -> make(layer), sharing its parameters and buffers (as torch's convert does)."""
    out = module
    if isinstance(module, old):
        out = make(module)
        if module.affine:
            with torch.no_grad():
                out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _replace_batchnorm(child, old, make))
    return out


def to_sync_batchnorm(module: nn.Module, device_type: str = "cuda", process_group=None) -> nn.Module:
    """Every BatchNorm in `module` -> synchronised BatchNorm for a DDP run on `device_type`, always.

    `nn.SyncBatchNorm.convert_sync_batchnorm`, what Lightning's `sync_batchnorm=True` runs (GPUs
    keep torch's fused layer); for "cpu" its layers then become `CPUSyncBatchNorm`. Used by
    `medssl.ssl.train.GlobalBatchNorm` and the DDP tests.
    """
    module = nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    if device_type != "cpu":
        return module
    return _replace_batchnorm(module, nn.SyncBatchNorm, lambda m: CPUSyncBatchNorm(
        m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats, m.process_group))


def cpu_sync_batchnorm_to_torch(module: nn.Module) -> nn.Module:
    """`CPUSyncBatchNorm` layers -> `nn.SyncBatchNorm` (the inverse of the CPU step of `to_sync_batchnorm`)."""
    return _replace_batchnorm(module, CPUSyncBatchNorm, lambda m: nn.SyncBatchNorm(
        m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats, m.process_group))


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """BatchNorm -> SyncBatchNorm (for `ssl.shuffle_bn: false`); unchanged in one process."""
    if not is_distributed() or dist.get_world_size() == 1:
        return module
    device = next((p.device.type for p in module.parameters()), "cpu")
    return to_sync_batchnorm(module, device)


def wants_sync_batchnorm(ssl) -> bool:
    """Whether a multi-process run of the method of `ssl` (an `SSLConfig`) should use SyncBN.

    Read from the method class in `medssl.ssl.registry.METHODS`: its `global_batchnorm_for(ssl)`
    when it defines one (a choice that depends on the config), else its class attribute
    `global_batchnorm` (False when absent). SimCLR, BYOL and triplet say True: global BN as in
    their papers (per-device BN lets the task cheat on batch statistics). MoCo says
    `not ssl.shuffle_bn`: shuffle-BN is its other remedy. Unknown methods: False.
    """
    from medssl.ssl.registry import METHODS  # the registry imports the methods, which import this module

    cls = METHODS.get(ssl.method)
    if cls is None:
        return False
    decide = getattr(cls, "global_batchnorm_for", None)
    if decide is not None:
        return bool(decide(ssl))
    return bool(getattr(cls, "global_batchnorm", False))
