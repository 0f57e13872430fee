"""DDP equivalence runs for tests/ssl/test_ddp.py.

`run_all(rank, world)` trains each method below for 2 steps on a fixed global batch of 8 and
returns, per method and step, the loss, the parameter gradients after backward (DDP-averaged)
and, for MoCo, the queue. The test calls it in-process for the 1-process reference and starts
`python -m tests.ssl.ddp_worker RANK PORT OUT_DIR` twice for the 2 gloo ranks (4 rows each,
DistributedDataParallel), which write OUT_DIR/rank{RANK}.pt. Methods:
  simclr        eval mode (BN head on running stats, so ranks see the same maths as 1 process)
  simclr_naive  the same with a gather whose backward returns only the local gradient slice:
                the known bug the test must be able to detect
  mocov2        train mode, shuffle-BN across ranks, a BN-free tiny encoder, 2 SGD steps with EMA
  simclr_syncbn train mode, BatchNorm encoder + BN head, BN converted to SyncBN on the ranks by the
                plugin `build_trainer` gives Lightning (`medssl.ssl.train.GlobalBatchNorm`; on CPU its
                layers are `distributed.CPUSyncBatchNorm`)
  simclr_bn_per_rank  the same without the conversion (per-rank BN statistics): the negative control
  byol_syncbn   train mode, BatchNorm encoder + BN heads (online and EMA target), SyncBN on the ranks
"""

from __future__ import annotations


import torch
import torch.distributed as dist

from medssl.config import SSLConfig
from medssl.ssl import build_method
from medssl.ssl import distributed as D
from medssl.ssl.train import GlobalBatchNorm
from tests.ssl.ddp_harness import worker_main
from tests.ssl.tiny import TinyBNEncoder, TinyEncoder, fixed_batch

WORLD = 2
GLOBAL_BATCH = 8
STEPS = 2
#: Patient codes with repeats inside and across the rank halves, so masks cross ranks.
PATIENTS = [torch.tensor([0, 1, 2, 0, 3, 1, 4, 2]), torch.tensor([5, 3, 6, 5, 0, 7, 3, 1])]
METHODS = ("simclr", "simclr_naive", "mocov2", "simclr_syncbn", "simclr_bn_per_rank", "byol_syncbn")
#: Runs whose encoder has BatchNorm and which train in train mode (batch statistics).
BATCHNORM_RUNS = ("simclr_syncbn", "simclr_bn_per_rank", "byol_syncbn")


def _naive_backward(ctx, grad):
    start = dist.get_rank() * ctx.n
    return grad[start:start + ctx.n]  # no all_reduce: the cross-rank gradient terms are lost


def _build(name: str):
    torch.manual_seed(0)
    method = name.split("_")[0]
    cfg = SSLConfig(method=method, proj_hidden=32, proj_dim=8, pred_hidden=32, queue_size=12, temperature=0.3,
                    momentum=0.9)
    model = build_method(method, TinyBNEncoder() if name in BATCHNORM_RUNS else TinyEncoder(), cfg)
    return model.eval() if name in ("simclr", "simclr_naive") else model.train()


def _run(name: str, rank: int, world: int) -> dict:
    model = _build(name)
    if world > 1 and name.endswith("_syncbn"):
        model = GlobalBatchNorm("cpu").apply(model)  # what Lightning's DDP strategy does with sync_batchnorm=True
    inner = model
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD([p for p in inner.parameters() if p.requires_grad], lr=0.5)
    n = GLOBAL_BATCH // world
    rows = slice(rank * n, (rank + 1) * n)
    out = {"loss": [], "grads": [], "queue": [], "expected_keys": [],
           "sync_layers": sum(isinstance(m, D.CPUSyncBatchNorm) for m in inner.modules()),
           "bn_layers": sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in inner.modules())}
    for step in range(STEPS):
        view_a, view_b = fixed_batch(GLOBAL_BATCH, size=16, seed=step)
        if name == "mocov2":
            with torch.no_grad():  # keys of the global batch, in order, from the current key encoder
                keys = inner.projector_k(inner.encoder_k(view_b))
            out["expected_keys"].append(torch.nn.functional.normalize(keys, dim=1))
        torch.manual_seed(100 + step)  # same shuffle-BN permutation on rank 0 and in the single run
        loss, _ = model(view_a[rows], view_b[rows], PATIENTS[step][rows])
        opt.zero_grad()
        loss.backward()
        out["loss"].append(loss.detach().clone())
        out["grads"].append({k: p.grad.clone() for k, p in inner.named_parameters() if p.grad is not None})
        opt.step()
        inner.on_train_batch_end()
        if name == "mocov2":
            out["queue"].append({"queue": inner.queue.clone(), "patient": inner.queue_patient.clone(),
                                 "ptr": inner.queue_ptr.clone()})
    out["bn_running"] = {k: b.clone() for k, b in inner.named_buffers() if k.endswith(("running_mean", "running_var"))}
    return out


def run_all(rank: int = 0, world: int = 1) -> dict:
    results = {}
    for name in METHODS:
        original = D._GatherWithGrad.backward
        if name == "simclr_naive":
            D._GatherWithGrad.backward = staticmethod(_naive_backward)
        try:
            results[name] = _run(name, rank, world)
        finally:
            D._GatherWithGrad.backward = original
    return results


if __name__ == "__main__":
    worker_main(run_all, WORLD)
