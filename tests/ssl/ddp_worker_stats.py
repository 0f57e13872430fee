"""DDP equivalence runs for tests/ssl/test_ddp_stats.py: global-batch statistics of the
non-contrastive methods (Barlow Twins' cross-correlation, VICReg's variance / covariance, SwAV's
Sinkhorn, DINO's centre) and MoCo v3's keys gathered from all ranks.

`run_all(rank, world)` trains each variant below for 2 SGD steps on a fixed global batch of 8 and
returns, per variant and step, the loss, the parameter gradients after backward (DDP-averaged)
and, for DINO, the centre. The test calls it in-process for the 1-process reference and starts
`python -m tests.ssl.ddp_worker_stats RANK PORT OUT_DIR` twice for the 2 gloo ranks (4 rows each,
DistributedDataParallel), which write OUT_DIR/rank{RANK}.pt.

Heads with BatchNorm run in eval mode (running statistics: per sample, so the only batch
statistic left is the one under test); DINO (no BN in the tiny encoder or its head) in train mode.
The `*_local` variants are the bug the test must catch: the same method with its statistic
computed over the rank's own rows only (no gather / no all_reduce).
"""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import torch

from medssl.config import SSLConfig
from medssl.ssl import build_method
from tests.ssl.ddp_harness import worker_main
from tests.ssl.tiny import TinyEncoder, fixed_batch

WORLD = 2
GLOBAL_BATCH = 8
STEPS = 2
PATIENTS = [torch.tensor([0, 1, 2, 0, 3, 1, 4, 2]), torch.tensor([5, 3, 6, 5, 0, 7, 3, 1])]
METHODS = ("barlowtwins", "vicreg", "swav", "dino", "mocov3")
VARIANTS = METHODS + tuple(f"{m}_local" for m in METHODS)
TRAIN_MODE = {"dino"}
CFG = dict(proj_hidden=32, proj_dim=8, pred_hidden=32, temperature=0.3, momentum=0.9, swav_prototypes=6,
           dino_out_dim=12, dino_teacher_temp=0.2, dino_center_momentum=0.5, barlow_lambda=0.05,
           vicreg_gamma=0.02)  # the tiny eval-mode expander outputs have std ~0.01: keep the hinge active but not saturated


@contextmanager
def local_statistics(method: str):
    """Make `method` compute its batch statistic over this rank's rows only (the negative control)."""
    import medssl.ssl.barlowtwins as barlow
    import medssl.ssl.losses_noncontrastive as losses
    import medssl.ssl.mocov3 as mocov3
    import medssl.ssl.vicreg as vicreg

    module, fake = {
        "barlowtwins": (barlow, SimpleNamespace(gather_with_grad=lambda x: x)),
        "vicreg": (vicreg, SimpleNamespace(gather_with_grad=lambda x: x)),
        # Sinkhorn / centre normalised by this rank's sums and row count
        "swav": (losses, SimpleNamespace(all_reduce_sum=lambda x: x, world_size=lambda: 1)),
        "dino": (losses, SimpleNamespace(all_reduce_sum=lambda x: x, world_size=lambda: 1)),
        # keys of this rank only (offset 0 into them)
        "mocov3": (mocov3, SimpleNamespace(concat_all_gather=lambda x: x, rank=lambda: 0)),
    }[method]
    original = module.D
    module.D = fake
    try:
        yield
    finally:
        module.D = original


def _build(method: str):
    torch.manual_seed(0)
    model = build_method(method, TinyEncoder(), SSLConfig(method=method, **CFG))
    return model.train() if method in TRAIN_MODE else model.eval()


def _run(variant: str, rank: int, world: int) -> dict:
    method = variant.removesuffix("_local")
    model = _build(method)
    inner = model
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD([p for p in inner.parameters() if p.requires_grad], lr=0.05)
    n = GLOBAL_BATCH // world
    rows = slice(rank * n, (rank + 1) * n)
    out = {"loss": [], "grads": [], "center": []}
    for step in range(STEPS):
        view_a, view_b = fixed_batch(GLOBAL_BATCH, size=16, seed=step)
        loss, _ = model(view_a[rows], view_b[rows], PATIENTS[step][rows])
        opt.zero_grad()
        loss.backward()
        out["loss"].append(loss.detach().clone())
        out["grads"].append({k: p.grad.clone() for k, p in inner.named_parameters() if p.grad is not None})
        opt.step()
        inner.on_train_batch_end()
        if method == "dino":
            out["center"].append(inner.center.clone())
    return out


def run_all(rank: int = 0, world: int = 1) -> dict:
    results = {}
    for variant in VARIANTS:
        if variant.endswith("_local"):
            with local_statistics(variant.removesuffix("_local")):
                results[variant] = _run(variant, rank, world)
        else:
            results[variant] = _run(variant, rank, world)
    return results


if __name__ == "__main__":
    worker_main(run_all, WORLD)
