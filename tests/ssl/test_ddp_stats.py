"""DDP on CPU (gloo, 2 processes): the global-batch statistics of Barlow Twins (cross-correlation),
VICReg (variance, covariance), SwAV (Sinkhorn), DINO (centre) and MoCo v3's gathered keys make
2 ranks x 4 rows train exactly like 1 process x 8 rows; per-rank statistics (the `*_local`
negative controls of tests/ssl/ddp_worker_stats.py) do not."""


import pytest
import torch

from tests.ssl.ddp_harness import launch
from tests.ssl.ddp_worker_stats import METHODS, STEPS, WORLD, run_all
from tests.ssl.tiny import one_torch_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(1-process results computed here, [rank 0, rank 1] results from 2 gloo processes)."""
    return launch("tests.ssl.ddp_worker_stats", tmp_path_factory.mktemp("ddp_stats"), run_all, WORLD)


def _max_rel_diff(a: dict, b: dict) -> float:
    return max(((a[k] - b[k]).abs().max() / b[k].abs().max().clamp(min=1e-12)).item() for k in b)


@pytest.mark.parametrize("method", METHODS)
def test_two_ranks_equal_one_process(runs, method):
    single, ranks = runs
    ref, got = single[method], [r[method] for r in ranks]
    for step in range(STEPS):
        # each rank's loss is its share of the global loss (the global loss itself for Barlow Twins,
        # VICReg's statistics); their mean is the 1-process loss on the whole batch
        mean_loss = sum(r["loss"][step] for r in got) / len(got)
        torch.testing.assert_close(mean_loss, ref["loss"][step], atol=1e-5, rtol=1e-5)
        grads = ref["grads"][step]
        assert grads and all(set(r["grads"][step]) == set(grads) for r in got)
        # float32 noise scales with the largest gradient (Barlow Twins' output bias has an exactly zero
        # gradient, the standardisation removes it, next to entries of ~40)
        atol = 1e-5 * max(1.0, max(g.abs().max().item() for g in grads.values()))
        for name, g in grads.items():
            for r in got:  # DDP-averaged gradient on every rank = 1-process gradient
                torch.testing.assert_close(r["grads"][step][name], g, atol=atol, rtol=1e-4)
        if method == "dino":  # the centre moved by the global-batch mean on both ranks
            for r in got:
                torch.testing.assert_close(r["center"][step], ref["center"][step], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_per_rank_statistics_would_be_caught(runs, method):
    """Negative control: the same method with its statistic over each rank's own 4 rows differs from
    the 1-process run by far more than the tolerance of the test above."""
    single, ranks = runs
    ref = single[method]
    local = [r[f"{method}_local"] for r in ranks]
    if method == "dino":
        # step 0's loss uses the initial (zero) centre on both; the centre it leaves behind is local
        worst = max((r["center"][0] - ref["center"][0]).abs().max().item() for r in local)
        assert worst > 0.01 * ref["center"][0].abs().max().item(), worst
        # ...and the next step's targets, so its loss, follow the wrong centre
        assert max(abs((r["loss"][1] - ref["loss"][1]).item()) for r in local) > 1e-4
        return
    loss_diff = abs((sum(r["loss"][0] for r in local) / len(local) - ref["loss"][0]).item())
    grad_diff = max(_max_rel_diff(r["grads"][0], ref["grads"][0]) for r in local)
    # far outside the tolerances of the test above (atol 1e-5 + rtol 1e-5 for the loss, 1e-4 for gradients)
    assert loss_diff > 10 * (1e-5 + 1e-5 * abs(ref["loss"][0].item())) and grad_diff > 0.01, (loss_diff, grad_diff)
