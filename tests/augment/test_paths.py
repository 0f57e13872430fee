"""Behaviour of the batched path and the per-sample MONAI path on structured images."""

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medssl.augment import policy
from tests.augment.helpers import ellipse_image, measure

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _gen(seed, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


@pytest.mark.parametrize("device", DEVICES)
def test_batch_shape_range_and_uint8_equals_float(device):
    p = policy("xray-default", out_size=24, params={"noise": {"p": 0.5}})
    x8 = torch.randint(0, 256, (6, 1, 40, 32), dtype=torch.uint8, device=device)
    a = p.batch(x8, generator=_gen(3))
    b = p.batch(x8.float() / 255, generator=_gen(3))
    assert a.shape == (6, 1, 24, 24) and a.dtype == torch.float32 and a.device.type == device
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    x16 = (x8.to(torch.int32) * 257).to(torch.uint16)     # same intensities stored as uint16
    torch.testing.assert_close(p.batch(x16, generator=_gen(3)), a, atol=1e-6, rtol=0)


def test_batch_is_deterministic_per_generator_and_varies_across_seeds_and_samples():
    p = policy("xray-default", out_size=32)
    x = ellipse_image(48)[None].expand(4, 1, 48, 48)
    a, b, c = (p.batch(x, generator=_gen(s)) for s in (0, 0, 1))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])      # each sample draws its own parameters


def test_identity_policy_equals_plain_bilinear_resize_on_both_paths():
    p = policy("none", out_size=48)
    x = torch.rand(3, 1, 64, 64)
    ref = F.interpolate(x, size=(48, 48), mode="bilinear", align_corners=False)
    torch.testing.assert_close(p.batch(x), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(p(x[0]), ref[0], atol=1e-5, rtol=0)


def test_hflip_and_vflip_conventions_match_array_flips_on_both_paths():
    x = torch.rand(2, 1, 32, 32)
    h = policy({"hflip": {"p": 1.0}}, out_size=32)
    v = policy({"vflip": {"p": 1.0}}, modality="xray", out_size=32, force_unsafe=True)
    torch.testing.assert_close(h.batch(x), torch.flip(x, dims=[-1]), atol=1e-6, rtol=0)
    torch.testing.assert_close(v.batch(x), torch.flip(x, dims=[-2]), atol=1e-6, rtol=0)
    torch.testing.assert_close(h(x[0]), torch.flip(x[0], dims=[-1]), atol=1e-6, rtol=0)
    torch.testing.assert_close(v(x[0]), torch.flip(x[0], dims=[-2]), atol=1e-6, rtol=0)


def test_rotation_bounds_and_crop_area_bounds():
    x = ellipse_image(64)
    n = 200
    rot = policy({"rotate": {"degrees": 10}}, out_size=64).batch(x[None].expand(n, 1, 64, 64), generator=_gen(0))
    turn = measure(rot)["angle"] - measure(x)["angle"]
    assert np.abs(turn).max() <= 11.0 and np.abs(turn).max() > 7.0        # uses the whole +-10 deg range
    crop = policy({"crop": {"scale": [0.5, 0.5], "ratio": [1, 1]}}, out_size=64)
    out = crop.batch(torch.ones(n, 1, 64, 64), generator=_gen(0))
    # crops never leave the image: all ones inside; the outermost ring of an upsampled crop
    # (45 px -> 64) blends with zero by at most 0.5 - 0.5 * 45/64 per axis (see batch.py)
    assert torch.allclose(out[..., 1:-1, 1:-1], torch.ones(1)) and float(out.min()) > 0.85 ** 2 - 1e-3
    zoom = measure(crop.batch(x[None].expand(n, 1, 64, 64), generator=_gen(1)))["mass"]
    # a crop of half the area magnifies by 2 in area: visible ellipse mass doubles unless cut
    assert np.median(zoom) == pytest.approx(2 * measure(x)["mass"][0], rel=0.1)


def test_crops_stay_inside_the_content_box_on_both_paths():
    img = torch.ones(1, 1, 64, 64)
    img[..., 16:48, 8:56] = 0.25            # content (top=16, left=8, h=32, w=48); 1.0 is "padding"
    box = (16, 8, 32, 48)
    p = policy({"crop": {"scale": [0.5, 1.0]}}, out_size=32)
    out = p.batch(img.expand(50, 1, 64, 64), generator=_gen(0), boxes=torch.tensor([box] * 50))
    assert float(out.max()) == pytest.approx(0.25, abs=1e-6)
    p.set_random_state(0)
    cpu = torch.stack([p(img[0], box=box) for _ in range(20)])
    assert float(cpu.max()) == pytest.approx(0.25, abs=1e-6)
    # without the box the padding shows up
    assert float(p.batch(img.expand(50, 1, 64, 64), generator=_gen(0)).max()) == pytest.approx(1.0)


def test_noise_and_intensity_ops_stay_in_unit_range_and_act():
    x = torch.full((64, 1, 16, 16), 0.5)
    noisy = policy({"noise": {"std": 0.05, "p": 1.0}}, out_size=16).batch(x, generator=_gen(0))
    stds = (noisy - 0.5).std(dim=(1, 2, 3))
    assert 0.0 < float(stds.min()) and float(stds.max()) <= 0.06      # std ~ U(0, 0.05)
    mr = policy("mr-default", modality="mr", out_size=16, params={"crop": None, "rotate": None})
    means = mr.batch(x, generator=_gen(0)).mean(dim=(1, 2, 3))
    # 0.5 * (1 + U(-0.1, 0.1)) + U(-0.05, 0.05) lies in [0.4, 0.6] and spreads out
    assert 0.4 <= float(means.min()) < 0.47 and 0.53 < float(means.max()) <= 0.6
    ct = policy({"window_jitter": {"center": 0.05, "width": 0.1}}, modality="ct", out_size=16)
    ramp = torch.linspace(0, 1, 16).expand(8, 1, 16, 16)
    out = ct.batch(ramp, generator=_gen(0))
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    assert bool((out.diff(dim=-1) >= 0).all())             # re-windowing is monotone


def test_forced_unsafe_transforms_really_act():
    x = ellipse_image(32)[None].expand(8, 1, 32, 32)
    blur = policy({"blur": {"sigma": [1.5, 2.0], "p": 1.0}}, out_size=32, force_unsafe=True).batch(x)
    assert float((blur.diff(dim=-1) ** 2).sum()) < 0.5 * float((x.diff(dim=-1) ** 2).sum())
    torch.testing.assert_close(blur.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)), rtol=0.02, atol=0)
    jit = policy({"jitter": {"brightness": 0.4, "contrast": 0.0, "p": 1.0}}, out_size=32, force_unsafe=True)
    means = jit.batch(torch.full((16, 1, 8, 8), 0.5)).mean(dim=(1, 2, 3))
    assert float(means.max() - means.min()) > 0.1
    sol = policy({"solarize": {"threshold": 0.5, "p": 1.0}}, out_size=32, force_unsafe=True)
    grey = 0.1 + 0.8 * x               # background 0.1, ellipse 0.9 -> 1 - 0.9 = 0.1: the ellipse vanishes
    torch.testing.assert_close(sol.batch(grey), torch.full_like(grey, 0.1))
    fixed = policy({"blur": {"sigma": [1.5, 1.5], "p": 1.0}}, out_size=32, force_unsafe=True)
    # same kernel as MONAI's GaussianSmooth (erf approximation, zero padding) on the CPU path
    torch.testing.assert_close(fixed.batch(x[:1])[0], fixed(x[0]), atol=1e-4, rtol=0)


def test_cpu_path_seeding_numpy_input_and_pickling():
    p = policy("xray-default", out_size=24)
    x = ellipse_image(40)
    a = p.set_random_state(7)(x)
    b = p.set_random_state(7)(x.numpy())
    c = p.set_random_state(8)(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (1, 24, 24) and type(a) is torch.Tensor
    u8 = p.set_random_state(7)((x * 255).to(torch.uint8))
    torch.testing.assert_close(u8, a, atol=1e-6, rtol=0)
    clone = pickle.loads(pickle.dumps(p))
    torch.testing.assert_close(clone.set_random_state(7)(x), a)


def test_dictionary_form_applies_the_same_draw_to_every_key():
    p = policy("xray-default", out_size=24)
    t = p.dict_transform(keys=["image", "copy"], box_key="box").set_random_state(0)
    x = ellipse_image(40)
    out = t({"image": x, "copy": x.clone(), "box": (0, 0, 40, 40), "label": 3})
    assert torch.equal(out["image"], out["copy"]) and out["label"] == 3
    again = t({"image": x, "copy": x.clone(), "box": (0, 0, 40, 40)})
    assert not torch.equal(out["image"], again["image"])     # a fresh draw per call (second view)


def test_bad_input_shapes_are_refused():
    p = policy("none", out_size=16)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        p.batch(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\(1, H, W\)"):
        p(torch.rand(3, 16, 16))


def test_crop_fallback_and_no_crop_agree_exactly_across_paths():
    img = torch.rand(1, 64, 64)
    box = (0, 20, 64, 24)            # tall content (w/h = 0.375): no random crop fits the ratio range
    p = policy({"crop": {"scale": [0.9, 1.0], "ratio": [0.75, 4 / 3]}}, out_size=32)
    out = p.batch(img[None].expand(4, 1, 64, 64), boxes=torch.tensor([box] * 4))
    # torchvision fallback: central crop of the box with w/h clamped to 0.75 -> 24 wide x 32 tall
    ref = F.interpolate(img[None, :, 16:48, 20:44], size=(32, 32), mode="bilinear", align_corners=False)[0]
    cpu = p(img, box=box)
    torch.testing.assert_close(cpu, ref, atol=1e-5, rtol=0)
    # the fused path blends the outermost (upsampled) columns with zero instead of repeating the
    # edge pixel: equal inside, and at the edge only darker by at most 0.5 - 0.5 * 24/32
    for k in range(4):
        torch.testing.assert_close(out[k, :, :, 1:-1], ref[:, :, 1:-1], atol=1e-5, rtol=0)
        edge = ref[:, :, [0, -1]] - out[k, :, :, [0, -1]]
        assert float(edge.min()) >= -1e-6 and float(edge.max()) <= 0.125 + 1e-6
    # no crop transform: the whole padded canvas is resized (aspect kept), the box is ignored
    none = policy("none", out_size=32)
    whole = F.interpolate(img[None], size=(32, 32), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(none.batch(img[None], boxes=torch.tensor([box]))[0], whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(none(img, box=box), whole, atol=1e-5, rtol=0)


def test_fused_geometry_matches_monai_rotate_and_affine_exactly():
    from monai.transforms import Affine, Rotate

    from medssl.augment.batch import geometry_matrices, resample

    x = ellipse_image(48)
    whole = torch.tensor([[0, 0, 48, 48]], dtype=torch.float64)

    def fused(**params):
        crop, warp = geometry_matrices({"crop": whole, **params}, (48, 48), 48)
        return resample(x[None], crop @ warp, 48, projective=False)[0]

    rotated = Rotate(angle=0.3, keep_size=True, padding_mode="zeros", align_corners=False)(x)
    torch.testing.assert_close(fused(angle=torch.tensor([0.3], dtype=torch.float64)), rotated.as_tensor(),
                               atol=1e-4, rtol=0)
    sheared = Affine(shear_params=(0.1, -0.05), translate_params=(3.0, -2.0), padding_mode="zeros",
                     image_only=True)(x)
    torch.testing.assert_close(fused(shear=torch.tensor([[0.1, -0.05]], dtype=torch.float64),
                                     translate=torch.tensor([[3.0, -2.0]], dtype=torch.float64)),
                               sheared.as_tensor(), atol=1e-4, rtol=0)


def test_sampling_grid_equals_affine_grid_and_the_homography_definition():
    from medssl.augment.batch import homography_from_corners, sampling_grid

    m = torch.eye(3) + 0.1 * torch.randn(4, 3, 3, generator=_gen(0))
    m[:, 2] = torch.tensor([0.0, 0.0, 1.0])
    torch.testing.assert_close(sampling_grid(m, 17, projective=False),
                               F.affine_grid(m[:, :2], [4, 1, 17, 17], align_corners=False), atol=1e-6, rtol=0)
    offsets = 0.2 * torch.rand(4, 4, 2, generator=_gen(1), dtype=torch.float64) - 0.1
    h = homography_from_corners(offsets)
    corners = torch.tensor([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]],
                           dtype=torch.float64)
    mapped = corners @ h.transpose(1, 2)
    torch.testing.assert_close(mapped[..., :2] / mapped[..., 2:], corners[:, :2] + offsets)   # corners land
    c = torch.linspace(-1 + 1 / 9, 1 - 1 / 9, 9)
    y, x = torch.meshgrid(c, c, indexing="ij")
    pts = torch.stack([x, y, torch.ones_like(x)], -1).reshape(-1, 3) @ h.float().transpose(1, 2)
    torch.testing.assert_close(sampling_grid(h.float(), 9, projective=True),
                               (pts[..., :2] / pts[..., 2:]).view(4, 9, 9, 2), atol=1e-5, rtol=0)
