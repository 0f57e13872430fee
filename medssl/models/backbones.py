"""Encoders: MONAI networks with 1-channel input, classifier removed, normalisation built in.

`build_encoder(arch)` returns an `Encoder` mapping float32 (B, C, H, W) images in [0, 1] to
(B, feature_dim) features. Its `.net` is a plain MONAI network, so `export-backbone` can write
`encoder.net.state_dict()` and users load it into `monai_network(arch)` without medssl.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from medssl.errors import ConfigError

ARCHS = ("resnet18", "resnet34", "resnet50", "densenet121")
#: Intensity normalisation applied once, inside the encoder (images arrive in [0, 1]).
DEFAULT_MEAN = 0.5
DEFAULT_STD = 0.25


@dataclass(frozen=True)
class EncoderSpec:
    """What a plain-MONAI user needs to rebuild and feed an exported encoder."""

    arch: str
    in_channels: int = 1
    input_size: int = 224
    mean: float = DEFAULT_MEAN
    std: float = DEFAULT_STD

    def to_dict(self) -> dict:
        return asdict(self)


def monai_network(arch: str, in_channels: int = 1) -> nn.Module:
    """The plain MONAI 2D network for `arch`, without its classification layer.

    ResNets use the ImageNet stem (7x7 conv, stride 2, max-pool): MONAI's default stride-1
    stem would cost 4x the compute at 224^2 for no gain on radiographs.
    """
    from monai.networks import nets

    if arch.startswith("resnet"):
        factory = {"resnet18": nets.resnet18, "resnet34": nets.resnet34, "resnet50": nets.resnet50}.get(arch)
        if factory is None:
            raise ConfigError(f"model.arch: unknown architecture {arch!r}; choose one of {list(ARCHS)}")
        return factory(spatial_dims=2, n_input_channels=in_channels, conv1_t_size=7, conv1_t_stride=2,
                       feed_forward=False, shortcut_type="B", bias_downsample=False)
    if arch == "densenet121":
        net = nets.DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=1)
        net.class_layers.out = nn.Identity()  # keep relu -> pool -> flatten, drop the classifier
        return net
    raise ConfigError(f"model.arch: unknown architecture {arch!r}; choose one of {list(ARCHS)}")


def feature_dim(arch: str) -> int:
    return {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "densenet121": 1024}[arch]


class Encoder(nn.Module):
    """Normalise, repeat to `in_channels` if needed, run the MONAI network: (B,1|3,H,W) -> (B,D)."""

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.spec = spec
        self.net = monai_network(spec.arch, spec.in_channels)
        self.feature_dim = feature_dim(spec.arch)
        self.register_buffer("mean", torch.tensor(spec.mean), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.spec.in_channels:
            if x.shape[1] == 1:
                # Grayscale into a 3-channel net (e.g. ImageNet weights): same image in every channel.
                x = x.expand(-1, self.spec.in_channels, -1, -1)
            else:
                raise ValueError(f"encoder expects {self.spec.in_channels} channels, got {x.shape[1]}")
        return self.net((x - self.mean) / self.std)


def build_encoder(arch: str = "resnet18", in_channels: int = 1, input_size: int = 224) -> Encoder:
    if arch not in ARCHS:
        raise ConfigError(f"model.arch: unknown architecture {arch!r}; choose one of {list(ARCHS)}")
    if in_channels not in (1, 3):
        raise ConfigError(f"model.in_channels must be 1 or 3, got {in_channels}")
    return Encoder(EncoderSpec(arch=arch, in_channels=in_channels, input_size=input_size))
