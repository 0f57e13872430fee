"""ViT encoders (model.arch: vit_*): MONAI's ViT, mean-pooled tokens, patch grid check, export and loading."""

from __future__ import annotations

import json

import pytest
import torch
from monai.networks.nets import ViT

from medssl.config import load_config, to_dict
from medssl.errors import ConfigError
from medssl.models.backbones import (ARCHS, Encoder, EncoderSpec, build_encoder, encoder_from_config, feature_dim,
                                     monai_network, vit_kwargs)
from medssl.models.export import ExportModule
from medssl.models.weights import load_encoder_weights
from medssl.ssl.checkpoint import export_backbone
from tests.ssl.tiny import one_torch_thread  # noqa: F401 (autouse fixture)

TINY = dict(patch_size=8, vit_depth=2)


def tiny_vit(in_channels: int = 1, size: int = 32, seed: int = 0):
    torch.manual_seed(seed)
    return build_encoder("vit_tiny", in_channels, size, **TINY).eval()


def test_named_sizes_and_feature_dims():
    assert {"vit_tiny", "vit_small", "vit_base"} <= set(ARCHS)
    assert (feature_dim("vit_tiny"), feature_dim("vit_small"), feature_dim("vit_base")) == (192, 384, 768)
    kw = vit_kwargs("vit_small", 1, 224)
    assert kw["patch_size"] == [16, 16] and kw["num_layers"] == 12 and kw["num_heads"] == 6
    assert kw["classification"] is False and kw["spatial_dims"] == 2


def test_features_are_the_mean_of_the_plain_monai_vit_tokens():
    enc = tiny_vit()
    x = torch.rand(3, 1, 32, 32)
    plain = ViT(**vit_kwargs("vit_tiny", 1, 32, **TINY)).eval()
    result = plain.load_state_dict(enc.net.state_dict(), strict=True)   # no CLS token, no head: plain ViT keys
    assert not result.missing_keys and not result.unexpected_keys
    with torch.no_grad():
        feats = enc(x)
        tokens, _ = plain((x - 0.5) / 0.25)
    assert tokens.shape == (3, 16, 192) and feats.shape == (3, 192) and enc.feature_dim == 192
    torch.testing.assert_close(feats, tokens.mean(dim=1))
    assert enc.fixed_input_size == 32 and build_encoder("resnet18").fixed_input_size is None


def test_input_size_must_be_divisible_by_the_patch_size():
    with pytest.raises(ConfigError, match="divisible by model.patch_size 8"):
        build_encoder("vit_tiny", 1, 36, patch_size=8)
    with pytest.raises(ConfigError, match="model.input_size 100 must be divisible by model.patch_size 16"):
        load_config(None, ["model.arch=vit_small", "model.input_size=100"])
    cfg = load_config(None, ["model.arch=vit_small", "model.input_size=96"])   # 16 divides 96
    assert cfg.model.patch_size == 16
    with pytest.raises(ValueError, match="takes 32x32 inputs"):
        tiny_vit()(torch.rand(1, 1, 48, 48))   # fixed position embedding: one size only


def test_three_channel_vit_accepts_grayscale():
    enc = tiny_vit(in_channels=3)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), enc(x.repeat(1, 3, 1, 1)))


def test_rgb_patch_kernel_is_summed_for_a_grey_encoder(tmp_path):
    """weights.py's first-conv adaptation covers the ViT patch projection: an RGB ViT fed (g, g, g)
    and the 1-channel encoder with the summed kernel compute the same features."""
    rgb = tiny_vit(in_channels=3, seed=1)
    grey = tiny_vit(in_channels=1, seed=2)
    torch.save(rgb.net.state_dict(), tmp_path / "rgb.pt")
    load_encoder_weights(tmp_path / "rgb.pt", grey)
    assert any("summed" in n for n in grey.weights_info["notes"])
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x), atol=1e-5, rtol=1e-4)


def test_export_backbone_writes_a_plain_monai_vit(tmp_path):
    """A pretraining checkpoint (Lightning layout) with a ViT encoder -> export-backbone -> a plain MONAI ViT
    rebuilt from the JSON alone computes the encoder's features; the weights loaders accept both files."""
    cfg = load_config(None, ["model.arch=vit_tiny", "model.input_size=32", "model.patch_size=8", "model.vit_depth=2",
                             "ssl.method=mae"])
    enc = encoder_from_config(cfg.model).eval()
    ckpt = tmp_path / "last.ckpt"
    state = {f"model.encoder.net.{k}": v for k, v in enc.net.state_dict().items()}
    state["model.decoder.embed.weight"] = torch.zeros(4, 192)     # method-only weights are not exported
    torch.save({"state_dict": state, "hyper_parameters": {"config": to_dict(cfg)}, "epoch": 0, "global_step": 2}, ckpt)
    weights, spec_path = export_backbone(ckpt, tmp_path / "encoder.pt")
    spec = json.loads(spec_path.read_text())
    assert spec["arch"] == "vit_tiny" and spec["patch_size"] == 8 and spec["vit_depth"] == 2
    assert spec["feature_dim"] == 192 and spec["monai"]["factory"] == "monai.networks.nets.ViT"
    exported = torch.load(weights, weights_only=True)
    assert set(exported) == set(monai_network("vit_tiny", input_size=32, **TINY).state_dict())
    plain = ViT(**spec["monai"]["kwargs"]).eval()   # what a user without medssl does
    plain.load_state_dict(exported, strict=True)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        tokens, _ = plain((x - spec["mean"]) / spec["std"])
        torch.testing.assert_close(tokens.mean(dim=1), enc(x))
        for source in (weights, ckpt):   # export file and the checkpoint itself load into a fresh encoder
            fresh = Encoder(EncoderSpec(arch="vit_tiny", input_size=32, **TINY))
            load_encoder_weights(source, fresh)
            torch.testing.assert_close(fresh.eval()(x), enc(x))
        # the TorchScript / ONNX export wrapper pools the ViT's tokens the same way
        torch.testing.assert_close(ExportModule(enc.net, mean=0.5, std=0.25)(x), enc(x))
    # `medssl export` of the exported encoder: TorchScript traced, checked against PyTorch, card has the ViT
    from medssl.models.export import export

    written = export(weights, formats=["torchscript"], out_dir=tmp_path / "export")
    assert written["parity"]["torchscript"] is not None and written["parity"]["torchscript"] < 1e-3
    card = json.loads(written["card"][1].read_text())
    assert card["architecture"]["monai"]["kwargs"] == spec["monai"]["kwargs"]
    # CNN export JSONs keep their fields (no ViT-only keys)
    assert "patch_size" not in build_encoder("resnet18").spec.to_dict()
