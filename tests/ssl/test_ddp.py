"""DDP on CPU (gloo, 2 processes) trains exactly like one process on the same global batch."""

import copy
from types import SimpleNamespace
from unittest.mock import patch

import pytest
import torch
from torch import nn

from medssl.config import SSLConfig
from medssl.ssl import METHODS, build_method
from medssl.ssl import distributed as D
from tests.ssl.ddp_harness import launch
from tests.ssl.ddp_worker import GLOBAL_BATCH, PATIENTS, STEPS, WORLD, run_all
from tests.ssl.tiny import TinyEncoder, one_torch_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(1-process results computed here, [rank 0, rank 1] results from 2 gloo processes)."""
    return launch("tests.ssl.ddp_worker", tmp_path_factory.mktemp("ddp"), run_all, WORLD)


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


def test_simclr_with_batchnorm_two_ranks_equal_one_process_with_syncbn(runs):
    # train-mode BN in encoder and head: the ranks match one process only with global BN statistics
    single, ranks = runs
    assert single["simclr_syncbn"]["sync_layers"] == 0 and single["simclr_syncbn"]["bn_layers"] == 3
    assert all(r["simclr_syncbn"]["sync_layers"] == 3 for r in ranks)  # every BN converted
    _assert_equivalent(single["simclr_syncbn"], [r["simclr_syncbn"] for r in ranks])
    _assert_same_running_stats(single["simclr_syncbn"], [r["simclr_syncbn"] for r in ranks])


def test_byol_with_batchnorm_two_ranks_equal_one_process_with_syncbn(runs):
    # BN in encoder, projector and predictor, online and EMA target (the target's BN runs without grad)
    single, ranks = runs
    n_bn = single["byol_syncbn"]["bn_layers"]
    assert n_bn == 2 * (2 + 1) + 1 and all(r["byol_syncbn"]["sync_layers"] == n_bn for r in ranks)
    _assert_equivalent(single["byol_syncbn"], [r["byol_syncbn"] for r in ranks])
    _assert_same_running_stats(single["byol_syncbn"], [r["byol_syncbn"] for r in ranks])


def test_per_rank_batchnorm_would_be_caught(runs):
    # Negative control: without SyncBN (BN statistics over each rank's half) the equivalence fails.
    single, ranks = runs
    ref, per_rank = single["simclr_syncbn"], [r["simclr_bn_per_rank"] for r in ranks]
    assert all(r["sync_layers"] == 0 for r in per_rank)
    with pytest.raises(AssertionError):
        _assert_equivalent(ref, per_rank)
    g_ref, g_bad = ref["grads"][0], per_rank[0]["grads"][0]
    worst = max(((g_bad[k] - g_ref[k]).abs().max() / g_ref[k].abs().max()).item() for k in g_ref)
    assert worst > 0.05
    mean_loss = sum(r["loss"][0] for r in per_rank) / len(per_rank)
    assert abs(mean_loss - ref["loss"][0]).item() > 1e-3


def _assert_same_running_stats(single, ranks):
    assert single["bn_running"] and all(set(r["bn_running"]) == set(single["bn_running"]) for r in ranks)
    for name, ref in single["bn_running"].items():
        for r in ranks:
            torch.testing.assert_close(r["bn_running"][name], ref, atol=1e-5, rtol=1e-4, msg=name)


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


def test_cpu_sync_batchnorm_is_batchnorm_in_one_process_and_reverts():
    # the all_reduce path only runs under a process group (test_*_with_syncbn); without one: plain BN
    from medssl.ssl.train import GlobalBatchNorm

    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 36, 2), nn.BatchNorm1d(2))
    synced = GlobalBatchNorm("cpu").apply(copy.deepcopy(plain))
    assert [type(m) for m in synced.modules()].count(D.CPUSyncBatchNorm) == 2
    assert [type(m) for m in D.to_sync_batchnorm(copy.deepcopy(plain), "cuda").modules()].count(nn.SyncBatchNorm) == 2
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(synced(x), plain(x))
    torch.testing.assert_close(synced[1].running_var, plain[1].running_var)
    synced.eval(), plain.eval()
    torch.testing.assert_close(synced(x), plain(x))
    reverted = GlobalBatchNorm("cpu").revert(synced)  # what Lightning does at teardown
    assert not any(isinstance(m, (D.CPUSyncBatchNorm, nn.SyncBatchNorm)) for m in reverted.modules())
    torch.testing.assert_close(reverted.eval()(x), plain(x))  # Lightning's revert leaves train mode on


@pytest.mark.parametrize("device, layer", [("cpu", D.CPUSyncBatchNorm), ("cuda", nn.SyncBatchNorm)])
def test_sync_batchnorm_plugin_picks_the_layer_for_the_strategy_device(device, layer):
    # in a fit, Lightning calls apply(lightning_module) before moving it: the device comes from the strategy
    from medssl.ssl.train import GlobalBatchNorm

    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    model._trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
    assert type(GlobalBatchNorm().apply(model)[1]) is layer


def test_wants_sync_batchnorm_reads_the_method_classes():
    assert D.wants_sync_batchnorm(SSLConfig(method="mocov2", shuffle_bn=True)) is False
    assert D.wants_sync_batchnorm(SSLConfig(method="mocov2", shuffle_bn=False)) is True
    for name in ("simclr", "byol", "triplet"):
        assert D.wants_sync_batchnorm(SSLConfig(method=name, shuffle_bn=True)) is True
    # a method class that does not declare `global_batchnorm` gets per-rank BN
    undeclared = type("Undeclared", (nn.Module,), {})
    with patch.dict(METHODS, {"undeclared": undeclared}):
        assert D.wants_sync_batchnorm(SimpleNamespace(method="undeclared", shuffle_bn=False)) is False
    with patch.dict(METHODS, {"declared": type("Declared", (nn.Module,), {"global_batchnorm": True})}):
        assert D.wants_sync_batchnorm(SimpleNamespace(method="declared", shuffle_bn=True)) is True
    # a MoCo instance says the same as the registry does for its config
    for shuffle in (True, False):
        cfg = SSLConfig(method="mocov2", shuffle_bn=shuffle, proj_hidden=8, proj_dim=4, queue_size=4)
        assert build_method("mocov2", TinyEncoder(), cfg).global_batchnorm is (not shuffle)


@pytest.mark.parametrize("method, devices, strategy, shuffle_bn, expected", [
    ("simclr", 2, "ddp", True, True), ("byol", 2, "ddp", True, True), ("triplet", 2, "ddp", True, True),
    ("mocov2", 2, "ddp", True, False), ("mocov2", 2, "ddp", False, True),
    ("simclr", 1, "auto", True, False), ("mocov2", 1, "auto", False, False),
])
def test_build_trainer_switches_on_sync_batchnorm(tmp_path, monkeypatch, method, devices, strategy, shuffle_bn,
                                                   expected):
    from lightning.pytorch.plugins import TorchSyncBatchNorm

    from medssl.config import Config
    from medssl.ssl.train import GlobalBatchNorm, build_trainer

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cfg = Config()
    cfg.ssl.method, cfg.ssl.shuffle_bn = method, shuffle_bn
    cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.strategy = "cpu", devices, strategy
    cfg.trainer.output_dir, cfg.trainer.progress_bar = str(tmp_path), False
    with patch("lightning.pytorch.Trainer.__init__", return_value=None) as init:  # kwargs only, nothing launched
        build_trainer(cfg)
    kwargs = init.call_args.kwargs
    assert kwargs["sync_batchnorm"] is expected
    layer_sync = [p for p in kwargs["plugins"] if isinstance(p, TorchSyncBatchNorm)]
    assert [type(p) for p in layer_sync] == ([GlobalBatchNorm] if expected else [])
    # and a real Trainer (constructed, not fitted) hands that plugin to its DDP strategy
    trainer = build_trainer(cfg)
    assert isinstance(getattr(trainer.strategy, "_layer_sync", None), GlobalBatchNorm) is expected
