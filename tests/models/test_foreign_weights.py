"""Foreign weight layouts (torchvision ResNet, torchxrayvision DenseNet, safetensors, MONAI bundles).

The references are written here in plain torch with torchvision's / torchxrayvision's module names
(torchvision itself is never imported), initialised at random with non-trivial BatchNorm statistics,
and the mapped MONAI encoder must compute the same features.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medssl.errors import CheckpointError
from medssl.models.backbones import build_encoder
from medssl.models.weights import load_encoder_weights


# ----------------------------------------------------------------------------- reference ResNet-18
class _BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchvisionResNet18(nn.Module):
    """torchvision.models.resnet18's module names and computation, in plain torch."""

    def __init__(self, in_channels=3, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        chans, cin = (64, 128, 256, 512), 64
        for i, c in enumerate(chans, 1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(_BasicBlock(cin, c, stride), _BasicBlock(c, c, 1)))
            cin = c
        self.fc = nn.Linear(512, num_classes)

    def features(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


# ----------------------------------------------------------------------------- reference DenseNet-121
class _DenseLayer(nn.Sequential):
    def __init__(self, cin, growth=32, bn_size=4):
        super().__init__()
        self.add_module("norm1", nn.BatchNorm2d(cin))
        self.add_module("relu1", nn.ReLU())
        self.add_module("conv1", nn.Conv2d(cin, bn_size * growth, 1, bias=False))
        self.add_module("norm2", nn.BatchNorm2d(bn_size * growth))
        self.add_module("relu2", nn.ReLU())
        self.add_module("conv2", nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False))

    def forward(self, x):
        return torch.cat([x, super().forward(x)], 1)


class XrvDenseNet121(nn.Module):
    """torchxrayvision.models.DenseNet's module names (1-channel input, 18 outputs) in plain torch."""

    def __init__(self, in_channels=1, num_classes=18):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)), ("norm0", nn.BatchNorm2d(64)),
            ("relu0", nn.ReLU()), ("pool0", nn.MaxPool2d(3, 2, 1))]))
        n = 64
        for i, layers in enumerate((6, 12, 24, 16), 1):
            block = nn.Sequential(OrderedDict([(f"denselayer{j + 1}", _DenseLayer(n + j * 32)) for j in range(layers)]))
            self.features.add_module(f"denseblock{i}", block)
            n += layers * 32
            if i != 4:
                self.features.add_module(f"transition{i}", nn.Sequential(OrderedDict([
                    ("norm", nn.BatchNorm2d(n)), ("relu", nn.ReLU()), ("conv", nn.Conv2d(n, n // 2, 1, bias=False)),
                    ("pool", nn.AvgPool2d(2, 2))])))
                n //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(n))
        self.classifier = nn.Linear(n, num_classes)
        self.register_buffer("op_threshs", torch.rand(num_classes))

    def feats(self, x):
        return torch.flatten(F.adaptive_avg_pool2d(F.relu(self.features(x)), 1), 1)


def _randomise_bn(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so a wrong mapping cannot hide behind identity BNs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return net.eval()


def _image(n=2, size=64, seed=1):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("in_channels", [3, 1])
def test_torchvision_resnet18_maps_to_monai(tmp_path, in_channels):
    torch.manual_seed(0)
    ref = _randomise_bn(TorchvisionResNet18(in_channels=3))
    torch.save(ref.state_dict(), tmp_path / "resnet18-imagenet.pth")
    enc = build_encoder("resnet18", in_channels=in_channels, input_size=64).eval()
    load_encoder_weights(tmp_path / "resnet18-imagenet.pth", enc)
    assert enc.weights_info["format"].startswith("torchvision ResNet")
    x = _image()
    z = (x - enc.spec.mean) / enc.spec.std
    with torch.no_grad():
        # a grey image as (g, g, g) into the RGB reference: the summed 1-channel kernel must agree exactly
        expected = ref.features(z.expand(-1, 3, -1, -1))
        got = enc(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    if in_channels == 1:
        torch.testing.assert_close(enc.net.conv1.weight, ref.conv1.weight.sum(1, keepdim=True))


def test_torchvision_layout_under_moco_prefix_and_safetensors(tmp_path):
    """MoCo checkpoints keep torchvision keys under module.encoder_q. (with an MLP head fc.0/fc.2)."""
    from safetensors.torch import save_file

    torch.manual_seed(1)
    ref = _randomise_bn(TorchvisionResNet18())
    state = {f"module.encoder_q.{k}": v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    state.update({"module.encoder_q.fc.0.weight": torch.zeros(512, 512),
                  "module.encoder_q.fc.2.weight": torch.zeros(128, 512), "module.queue": torch.zeros(128, 16)})
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "moco.safetensors"))
    enc = build_encoder("resnet18", input_size=64).eval()
    load_encoder_weights(tmp_path / "moco.safetensors", enc)
    with torch.no_grad():
        torch.testing.assert_close(enc(_image()), ref.features(((_image() - 0.5) / 0.25).expand(-1, 3, -1, -1)),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_torchxrayvision_densenet121_maps_to_monai(tmp_path, in_channels):
    """1-channel weights, scaled to torchxrayvision's input range; into a 3-channel encoder replicated / 3."""
    torch.manual_seed(2)
    ref = _randomise_bn(XrvDenseNet121())
    torch.save(ref.state_dict(), tmp_path / "xrv-densenet121.pt")
    enc = build_encoder("densenet121", in_channels=in_channels, input_size=64).eval()
    load_encoder_weights(tmp_path / "xrv-densenet121.pt", enc)
    assert enc.weights_info["format"].startswith("torchxrayvision")
    x = _image()
    with torch.no_grad():
        expected = ref.feats((2 * x - 1) * 1024)     # torchxrayvision's own input scaling
        got = enc(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_rgb_densenet_layout_is_summed_not_scaled(tmp_path):
    torch.manual_seed(3)
    ref = _randomise_bn(XrvDenseNet121(in_channels=3, num_classes=1000))
    state = {k: v for k, v in ref.state_dict().items() if k != "op_threshs"}
    # torchvision's old checkpoint spelling: norm.1 / conv.1 inside dense layers
    state = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v for k, v in state.items()}
    torch.save({"state_dict": state}, tmp_path / "tv-densenet.pt")
    enc = build_encoder("densenet121", input_size=64).eval()
    load_encoder_weights(tmp_path / "tv-densenet.pt", enc)
    assert enc.weights_info["format"].startswith("torchvision / torchxrayvision")
    z = (_image() - 0.5) / 0.25
    with torch.no_grad():
        torch.testing.assert_close(enc(_image()), ref.feats(z.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)


def test_monai_bundle_folder_with_nested_state(tmp_path):
    """A bundle's models/model.pt holding a 3-channel MONAI DenseNet121 (with classifier) under "model"."""
    from medssl.models.backbones import monai_network
    from monai.networks.nets import DenseNet121

    torch.manual_seed(4)
    net = _randomise_bn(DenseNet121(spatial_dims=2, in_channels=3, out_channels=2))
    (tmp_path / "bundle" / "models").mkdir(parents=True)
    torch.save({"model": net.state_dict(), "epoch": 7}, tmp_path / "bundle" / "models" / "model.pt")
    enc = build_encoder("densenet121", input_size=64).eval()
    load_encoder_weights(tmp_path / "bundle", enc)
    plain = monai_network("densenet121", in_channels=3).eval()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("class_layers.out")})
    z = (_image() - 0.5) / 0.25
    with torch.no_grad():
        torch.testing.assert_close(enc(_image()), plain(z.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)


def test_unmatched_layout_lists_keys_and_formats(tmp_path):
    state = TorchvisionResNet18().state_dict()
    state = {k.replace("layer4.", "stage4."): v for k, v in state.items()}
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError) as e:
        load_encoder_weights(tmp_path / "odd.pt", build_encoder("resnet18"))
    msg = str(e.value)
    assert "formats tried" in msg and "torchvision ResNet" in msg
    assert "missing key(s)" in msg and "'layer4." in msg
    assert "unexpected key(s)" in msg and "'stage4." in msg


def test_wrong_channel_count_is_a_shape_error(tmp_path):
    state = TorchvisionResNet18(in_channels=2).state_dict()
    torch.save(state, tmp_path / "two.pt")
    with pytest.raises(CheckpointError, match="another shape"):
        load_encoder_weights(tmp_path / "two.pt", build_encoder("resnet18"))
