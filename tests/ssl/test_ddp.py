"""DDP on CPU (gloo, 2 processes) trains exactly like one process on the same global batch."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from medssl.ssl import distributed as D
from tests.conftest import REPO
from tests.ssl.ddp_worker import GLOBAL_BATCH, PATIENTS, STEPS, WORLD, free_port, run_all
from tests.ssl.tiny import one_torch_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(1-process results computed here, [rank 0, rank 1] results from 2 gloo processes)."""
    out = tmp_path_factory.mktemp("ddp")
    port = str(free_port())
    logs = [out / f"rank{r}.log" for r in range(WORLD)]
    procs = []
    for r in range(WORLD):
        with open(logs[r], "w") as log:  # files, not pipes: a chatty rank cannot block on a full pipe
            procs.append(subprocess.Popen([sys.executable, "-m", "tests.ssl.ddp_worker", str(r), port, str(out)],
                                          cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
    single = run_all(0, 1)  # while the ranks start up
    try:
        for p in procs:
            p.wait(timeout=180)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log.read_text()[-3000:]
    return single, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def _assert_equivalent(single, ranks):
    for step in range(STEPS):
        # each rank's loss is over its own anchors; their mean is the global-batch loss
        mean_loss = sum(r["loss"][step] for r in ranks) / len(ranks)
        torch.testing.assert_close(mean_loss, single["loss"][step], atol=1e-5, rtol=1e-5)
        grads = single["grads"][step]
        assert grads and all(set(r["grads"][step]) == set(grads) for r in ranks)
        for name, g in grads.items():
            for r in ranks:  # DDP-averaged gradient on every rank = 1-process gradient
                torch.testing.assert_close(r["grads"][step][name], g, atol=1e-5, rtol=1e-4)


def test_simclr_two_ranks_equal_one_process(runs):
    single, ranks = runs
    _assert_equivalent(single["simclr"], [r["simclr"] for r in ranks])


def test_a_gather_without_gradient_sum_would_be_caught(runs):
    # Negative control: the test above fails for the classic bug (local gradient slice only).
    single, ranks = runs
    g_ref = single["simclr"]["grads"][0]
    g_naive = ranks[0]["simclr_naive"]["grads"][0]
    worst = max(((g_naive[k] - g_ref[k]).abs().max() / g_ref[k].abs().max()).item() for k in g_ref)
    assert worst > 0.05
    torch.testing.assert_close(sum(r["simclr_naive"]["loss"][0] for r in ranks) / 2, single["simclr"]["loss"][0])


def test_moco_two_ranks_equal_one_process(runs):
    single, ranks = runs
    _assert_equivalent(single["mocov2"], [r["mocov2"] for r in ranks])


def test_moco_queue_holds_keys_of_both_ranks_in_global_order(runs):
    single, ranks = runs
    ref = single["mocov2"]
    for step in range(STEPS):
        start = step * GLOBAL_BATCH  # queue_size 12: step 1 wraps around (slots 8..11, 0..3)
        slots = [(start + i) % 12 for i in range(GLOBAL_BATCH)]
        for run in [ref] + [r["mocov2"] for r in ranks]:
            q = run["queue"][step]
            torch.testing.assert_close(q["queue"][slots], ref["expected_keys"][step], atol=1e-5, rtol=1e-5)
            assert q["patient"][slots].tolist() == PATIENTS[step].tolist()
            assert int(q["ptr"]) == (start + GLOBAL_BATCH) % 12


def test_single_process_fallbacks():
    x = torch.randn(3, 4, requires_grad=True)
    assert D.world_size() == 1 and D.rank() == 0
    assert D.gather_with_grad(x) is x and torch.equal(D.concat_all_gather(x), x)
    bn = nn.Sequential(nn.BatchNorm1d(4))
    assert D.convert_sync_batchnorm(bn) is bn
    assert D.wants_sync_batchnorm("mocov2", shuffle_bn=True) is False
    assert D.wants_sync_batchnorm("mocov2", shuffle_bn=False) is True
    assert D.wants_sync_batchnorm("simclr", shuffle_bn=True) is True
