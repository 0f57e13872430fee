import pytest
import torch

from medssl.errors import ConfigError
from medssl.models.backbones import build_encoder, monai_network


@pytest.mark.parametrize("arch,dim", [("resnet18", 512), ("densenet121", 1024)])
def test_encoder_shapes_one_channel(arch, dim):
    enc = build_encoder(arch).eval()
    with torch.no_grad():
        out = enc(torch.rand(2, 1, 64, 64))
    assert out.shape == (2, dim) and enc.feature_dim == dim


def test_three_channel_net_accepts_grayscale():
    enc = build_encoder("resnet18", in_channels=3).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        a = enc(x)
        b = enc(x.repeat(1, 3, 1, 1))
    torch.testing.assert_close(a, b)


def test_state_dict_loads_into_plain_monai_network():
    enc = build_encoder("resnet18")
    plain = monai_network("resnet18", 1)
    result = plain.load_state_dict(enc.net.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_unknown_arch():
    with pytest.raises(ConfigError, match="resnet18"):
        build_encoder("vit_b")
