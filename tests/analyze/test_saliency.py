"""Grad-CAM and occlusion on real images: a toy classifier whose logit sees only one region."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn


class TopLeft(nn.Module):
    """Keeps the top-left quadrant of the image, zeroes the rest."""

    def forward(self, x):
        h, w = x.shape[-2:]
        mask = torch.zeros_like(x)
        mask[..., : h // 2, : w // 2] = 1
        return x * mask


class RegionToy(nn.Module):
    """A conv block that sees only the top-left quadrant -> global mean -> 2 logits: no pixel outside the
    quadrant can change the output."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.block = nn.Sequential(TopLeft(), nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.ReLU())
        with torch.no_grad():
            self.block[1].weight.abs_()
        self.head = nn.Linear(8, 2)
        with torch.no_grad():
            self.head.weight.fill_(1.0)

    def forward(self, x):
        return self.head(self.block(x).mean(dim=(2, 3)))


def _images(kermany, n=3):
    from medssl.finetune.data import image_batch, split_rows

    return image_batch(kermany.images, split_rows(kermany.df, "test")[:n])


def _region_contrast(maps):
    h, w = maps.shape[-2:]
    inside = np.abs(maps[:, : h // 2, : w // 2]).mean(axis=(1, 2))
    outside = (np.abs(maps).sum(axis=(1, 2)) - np.abs(maps[:, : h // 2, : w // 2]).sum(axis=(1, 2))) / (h * w * 0.75)
    return inside, outside


def test_gradcam_and_occlusion_highlight_the_only_region_the_logit_depends_on(kermany):
    from medssl.analyze.saliency import gradcam, occlusion

    model = RegionToy().eval()
    x = _images(kermany)
    cam = gradcam(model, x, 0, model.block)
    assert cam.shape == (3, 32, 32) and cam.min() >= 0 and np.isclose(cam.max(axis=(1, 2)), 1).all()
    inside, outside = _region_contrast(cam)
    assert (inside > 0.2).all() and (inside > 20 * outside).all(), (inside, outside)
    occ = occlusion(model, x, 0, patch=4, stride=2)
    inside, outside = _region_contrast(occ)
    assert (inside > 3 * outside).all(), (inside, outside)
    # pixels whose every covering patch misses the quadrant do not change the logit (float noise only)
    assert np.abs(occ[:, 20:, 20:]).max() < 1e-5 * inside.min()


def test_gradcam_block_of_monai_networks_and_vit_fallback(kermany):
    """ResNet: layer4, or an earlier block when layer4 is below 3x3 (32 px -> layer2 at 4x4); DenseNet:
    its `features` block at 96 px; a ViT has none (occlusion only). The maps are finite, in [0, 1]."""
    from medssl.analyze.saliency import cam_blocks, choose_cam_block, gradcam
    from medssl.finetune.module import Classifier
    from medssl.models.backbones import build_encoder

    x = _images(kermany, 2)
    resnet = Classifier(build_encoder("resnet18", 1, 32), 3, 32).eval()
    assert [n for n, _ in cam_blocks(resnet)][0] == "layer4"
    name, layer, size = choose_cam_block(resnet, (32, 32))
    assert (name, size) == ("layer2", (4, 4))
    assert choose_cam_block(Classifier(build_encoder("resnet18", 1, 96), 3, 96).eval(), (32, 32))[0] == "layer4"
    cam = gradcam(resnet, x, [0, 2], layer)
    assert cam.shape == (2, 32, 32) and np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1
    dense = Classifier(build_encoder("densenet121", 1, 96), 3, 96).eval()
    name, layer, _ = choose_cam_block(dense, (32, 32))
    assert name == "features"
    assert np.isfinite(gradcam(dense, x, 1, layer)).all()
    vit = Classifier(build_encoder("vit_tiny", 1, 32, patch_size=8, vit_depth=1), 3, 32).eval()
    assert cam_blocks(vit) == [] and choose_cam_block(vit, (32, 32)) is None


def test_load_classifier_refuses_a_probe_checkpoint(tmp_path):
    from medssl.analyze.saliency import load_classifier
    from medssl.errors import CheckpointError

    torch.save({"mode": "linear", "head": {}}, tmp_path / "best.pt")
    with pytest.raises(CheckpointError, match="full fine-tuning"):
        load_classifier(tmp_path / "best.pt")
