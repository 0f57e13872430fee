"""Pretraining policies add global intensity jitter (and only there): the histogram shortcut closes."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp

from medssl.augment import policy, policy_from_config
from medssl.augment.shortcut import histogram_match_rate, view_histograms
from medssl.config import load_config
from medssl.data import embedded_kermany_dir
from medssl.errors import UnsafeAugmentationError


@pytest.fixture(scope="module")
def kermany64():
    """64 embedded Kermany images of 64 different patients, uint8 (64, 128, 128)."""
    root = embedded_kermany_dir()
    labels = pd.read_csv(root / "labels.csv").drop_duplicates("patient_id_loose").sample(64, random_state=0)
    return np.stack([np.asarray(Image.open(root / p).convert("L")) for p in labels["image"]])


def test_geometry_only_views_match_by_histogram_and_pretraining_jitter_breaks_it(kermany64):
    geometry = policy("xray-default", out_size=64)
    jittered = policy("xray-pretrain", out_size=64)
    before = np.mean([histogram_match_rate(geometry, kermany64, seed=s) for s in range(3)])
    after = np.mean([histogram_match_rate(jittered, kermany64, seed=s) for s in range(3)])
    # measured: 0.78 before, 0.09 after (chance 1/64 = 0.016)
    assert before > 0.6
    assert after < 0.15


def test_histogram_match_rate_is_one_for_identity_views_and_near_chance_for_shuffled(kermany64):
    none = policy("none", out_size=64)
    assert histogram_match_rate(none, kermany64) == 1.0
    h = view_histograms(torch.rand(5, 1, 8, 8), bins=4)
    assert h.shape == (5, 4) and np.allclose(h.sum(1), 1.0)


def test_pretraining_jitter_is_refused_for_fine_tuning_with_the_reason():
    with pytest.raises(UnsafeAugmentationError, match="allowed, bounded, in pretraining only") as e:
        policy("xray-pretrain", out_size=32, purpose="finetune")
    assert "'jitter'" in str(e.value) and "'gamma'" in str(e.value)
    # and pretraining still refuses local blur, solarisation and strong jitter
    with pytest.raises(UnsafeAugmentationError, match="texture"):
        policy("xray-pretrain", out_size=32, params={"blur": {}})
    with pytest.raises(UnsafeAugmentationError, match="brightness <= 0.4"):
        policy("xray-pretrain", out_size=32, params={"jitter": {"brightness": 0.6}})
    with pytest.raises(UnsafeAugmentationError, match=r"gamma within \[0.5, 2.0\]"):
        policy("xray-pretrain", out_size=32, params={"gamma": {"gamma": [0.3, 1.0]}})
    assert policy("xray-pretrain", out_size=32).purpose == "pretrain"


def test_auto_policies_from_config_differ_between_pretraining_and_fine_tuning():
    cfg = load_config(None, ["model.input_size=32"])
    pre, fine = policy_from_config(cfg, "pretrain"), policy_from_config(cfg, "finetune")
    assert pre.name == "xray-pretrain" and {"jitter", "gamma"} <= set(pre.names())
    assert fine.name == "xray-default" and not {"jitter", "gamma"} & set(fine.names())
    ct = load_config(None, ["data.modality=ct", "model.input_size=32"])
    assert policy_from_config(ct, "pretrain").name == "ct-pretrain"
    assert policy_from_config(ct, "finetune").name == "ct-default"


def test_gamma_has_the_same_distribution_on_both_paths_and_keeps_black_and_white():
    x = torch.linspace(0, 1, 32 * 32).reshape(1, 32, 32)
    p = policy({"gamma": {"gamma": [0.6, 1.6], "p": 0.7}}, modality="mr", out_size=32, purpose="pretrain")
    p.set_random_state(3)
    cpu = torch.stack([p(x) for _ in range(300)])
    bat = p.batch(x[None].expand(300, 1, 32, 32), generator=torch.Generator().manual_seed(4))
    mid_cpu, mid_bat = cpu[:, 0, 16, 16].numpy(), bat[:, 0, 16, 16].numpy()
    assert ks_2samp(mid_cpu, mid_bat).pvalue > 0.002
    assert abs(np.mean(np.isclose(mid_bat, x[0, 16, 16].item())) - 0.3) < 0.1   # p = 0.7 applied
    for v in (cpu, bat):   # 0 -> 0 and 1 -> 1 under any gamma
        assert float(v[:, 0, 0, 0].abs().max()) == 0.0 and torch.allclose(v[:, 0, -1, -1], torch.ones(300))
