"""The per-sample MONAI path and the batched path sample the SAME distribution of transforms.

Both paths augment a structured image (a bright off-centre, tilted ellipse) many times; the
distributions of measurable effects (centroid x/y, tilt, visible mass, flip rate) are compared
with two-sample KS tests. With N=300 per path the KS test detects a distribution shift of
D ~ 0.15 at the p < 0.002 threshold used here (Bonferroni over the measures); the negative
control shows a real difference (rotation +-3 deg vs +-15 deg) is caught. A thresholded area is
deliberately not compared: the per-sample path resamples once per geometric step, which softens
edges and moves an area measured at a threshold without changing the transform; the intensity
mass (integral) is resampling-invariant and is compared instead.
"""

import numpy as np
import torch
from scipy.stats import ks_2samp

from medssl.augment import policy
from tests.augment.helpers import ellipse_image, measure

N = 300
P_MIN = 0.002


def _both_paths(cpu_policy, batch_policy, x, n=N):
    cpu_policy.set_random_state(1234)
    cpu = torch.stack([cpu_policy(x) for _ in range(n)])
    gen = torch.Generator().manual_seed(4321)
    bat = batch_policy.batch(x[None].expand(n, *x.shape), generator=gen)
    return measure(cpu), measure(bat)


def _tilt(m):
    # hflip mirrors the orientation: fold it back so tilt measures rotation + shear only
    return m["angle"] * np.sign(m["cx"])


def test_xray_default_geometry_has_the_same_distribution_on_both_paths():
    p = policy("xray-default", out_size=40, params={"perspective": {"p": 1.0, "distortion": 0.08}})
    mc, mb = _both_paths(p, p, ellipse_image(56))
    for name, a, b in [("cx", mc["cx"], mb["cx"]), ("cy", mc["cy"], mb["cy"]),
                       ("tilt", _tilt(mc), _tilt(mb)), ("mass", mc["mass"], mb["mass"])]:
        assert ks_2samp(a, b).pvalue > P_MIN, name
    flips_cpu, flips_batch = np.mean(mc["cx"] < 0), np.mean(mb["cx"] < 0)
    assert abs(flips_cpu - 0.5) < 0.1 and abs(flips_batch - 0.5) < 0.1
    assert abs(flips_cpu - flips_batch) < 0.1
    # the transforms really vary: the tilt spreads over the +-10 deg rotation (+ shear)
    assert 4.0 < np.std(_tilt(mb)) < 14.0


def test_ks_detects_a_different_rotation_range():
    x = ellipse_image(56)
    narrow = policy({"rotate": {"degrees": 3}}, out_size=40)
    wide = policy({"rotate": {"degrees": 15}}, out_size=40)
    mc, mb = _both_paths(narrow, wide, x, n=150)
    assert ks_2samp(mc["angle"], mb["angle"]).pvalue < 1e-6


def test_intensity_and_texture_ops_have_the_same_distribution_on_both_paths():
    x = 0.2 + 0.6 * ellipse_image(32, center=(0.0, 0.0), axes=(0.5, 0.3))
    spec = {"intensity": {"scale": 0.1, "shift": 0.05, "p": 0.7}, "window_jitter": {"center": 0.05, "width": 0.1},
            "blur": {"sigma": [0.3, 1.5], "p": 0.5}, "noise": {"std": 0.03, "p": 0.5}}
    p = policy(spec, modality="mr", out_size=32, force_unsafe=True)
    p.set_random_state(99)
    cpu = torch.stack([p(x) for _ in range(N)])
    bat = p.batch(x[None].expand(N, 1, 32, 32), generator=torch.Generator().manual_seed(5))

    def stats(v):
        centre = v[:, 0, 12:20, 12:20].mean(dim=(1, 2))            # inside the ellipse: intensity ops
        edge = (v[:, 0, :, 1:] - v[:, 0, :, :-1]).abs().amax(dim=(1, 2))   # sharpness: blur
        flat = v[:, 0, 14:18, 14:18]
        rough = (flat - flat.mean(dim=(1, 2), keepdim=True)).std(dim=(1, 2))  # noise level
        return centre.numpy(), edge.numpy(), rough.numpy()

    for name, a, b in zip(("centre", "edge", "rough"), stats(cpu), stats(bat)):
        assert ks_2samp(a, b).pvalue > P_MIN, name
