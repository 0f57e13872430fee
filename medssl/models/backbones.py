"""Encoders: MONAI networks with 1-channel input, classifier removed, normalisation built in.

`build_encoder(arch)` returns an `Encoder` mapping float32 (B, C, H, W) images in [0, 1] to
(B, feature_dim) features. Its `.net` is a plain MONAI network, so `export-backbone` can write
`encoder.net.state_dict()` and users load it into `monai_network(arch)` without medssl.

Vision Transformers (`model.arch: vit_tiny | vit_small | vit_base`) are MONAI's `ViT` (2D, 1 input
channel, `model.patch_size` x `model.patch_size` patches, default 16; `model.input_size` must be
divisible by it), with fixed 2D sin-cos position embeddings (as MAE and MoCo v3 use), qkv bias, no
CLS token and no classification head, so the exported state dict is a plain `monai.networks.nets.ViT`
one. Its features are the MEAN of the final-LayerNorm token embeddings, (B, N, D) -> (B, D)
(`pool_tokens`; MAE's fine-tuning recipe also pools), so a masked-token encoder (MAE) and the full
encoder compute the same kind of vector. A ViT has a FIXED input size (its position embedding has one
entry per patch): inputs must be model.input_size square; `Encoder.fixed_input_size` says so to
callers that feed crops (the jigsaw task resizes its tiles). `model.vit_depth` overrides the number of
transformer blocks (12 for every named size), e.g. for tests and small data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from medssl.errors import ConfigError

#: ViT sizes (DeiT-Ti / ViT-S / ViT-B): hidden width, MLP width, blocks, attention heads.
VIT_SIZES = {
    "vit_tiny": {"hidden_size": 192, "mlp_dim": 768, "num_layers": 12, "num_heads": 3},
    "vit_small": {"hidden_size": 384, "mlp_dim": 1536, "num_layers": 12, "num_heads": 6},
    "vit_base": {"hidden_size": 768, "mlp_dim": 3072, "num_layers": 12, "num_heads": 12},
}
ARCHS = ("resnet18", "resnet34", "resnet50", "densenet121", *VIT_SIZES)
DEFAULT_PATCH_SIZE = 16
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
    patch_size: int | None = None     # ViT only (None: DEFAULT_PATCH_SIZE)
    vit_depth: int | None = None      # ViT only (None: the size's 12 blocks)

    def to_dict(self) -> dict:
        """All fields; the ViT-only ones only for a ViT (CNN specs stay as they were)."""
        d = asdict(self)
        if not is_vit(self.arch):
            d.pop("patch_size")
            d.pop("vit_depth")
        else:
            d["patch_size"] = self.patch_size or DEFAULT_PATCH_SIZE
        return d


def is_vit(arch: str) -> bool:
    return arch in VIT_SIZES


def vit_kwargs(arch: str, in_channels: int = 1, input_size: int = 224, patch_size: int | None = None,
               vit_depth: int | None = None) -> dict:
    """The `monai.networks.nets.ViT(**kwargs)` medssl builds for `arch` (also written to export JSONs).

    Raises ConfigError when input_size is not a multiple of patch_size (MONAI would silently drop the
    remainder pixels and the patch grid would not tile the image).
    """
    patch = int(patch_size or DEFAULT_PATCH_SIZE)
    if patch < 1 or input_size % patch:
        raise ConfigError(f"model.input_size {input_size} must be divisible by model.patch_size {patch} for "
                          f"{arch} (the patch grid must tile the image); e.g. input_size "
                          f"{max(patch, input_size // patch * patch)} or a patch size dividing {input_size}")
    size = dict(VIT_SIZES[arch])
    if vit_depth is not None:
        if vit_depth < 1:
            raise ConfigError(f"model.vit_depth must be >= 1, got {vit_depth}")
        size["num_layers"] = int(vit_depth)
    return {"in_channels": in_channels, "img_size": [input_size, input_size], "patch_size": [patch, patch],
            **size, "pos_embed_type": "sincos", "classification": False, "spatial_dims": 2, "qkv_bias": True}


def freeze_unused_cross_attention(module: nn.Module) -> None:
    """requires_grad False on MONAI TransformerBlocks' `norm_cross_attn` (built even without cross-attention,
    never used): a parameter that never gets a gradient makes DDP fail its reduction. The tensors stay in
    the state dict, so the plain MONAI network still loads it."""
    for name, p in module.named_parameters():
        if "norm_cross_attn" in name:
            p.requires_grad_(False)


def pool_tokens(out) -> torch.Tensor:
    """A MONAI ViT's output `(tokens (B, N, D), hidden states)` -> (B, D) mean over tokens; other nets' (B, D)
    pass through unchanged."""
    if isinstance(out, tuple):
        return out[0].mean(dim=1)
    return out


def monai_network(arch: str, in_channels: int = 1, *, input_size: int = 224, patch_size: int | None = None,
                  vit_depth: int | None = None) -> nn.Module:
    """The plain MONAI 2D network for `arch`, without its classification layer.

    ResNets use the ImageNet stem (7x7 conv, stride 2, max-pool): MONAI's default stride-1
    stem would cost 4x the compute at 224^2 for no gain on radiographs. `input_size`, `patch_size`
    and `vit_depth` matter only for a ViT (`vit_kwargs`).
    """
    from monai.networks import nets

    if is_vit(arch):
        import warnings

        kwargs = vit_kwargs(arch, in_channels, input_size, patch_size, vit_depth)
        with warnings.catch_warnings():  # MONAI's sin-cos embedding calls torch.meshgrid without indexing=
            warnings.filterwarnings("ignore", message=".*torch.meshgrid.*")
            return nets.ViT(**kwargs)

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
    if is_vit(arch):
        return VIT_SIZES[arch]["hidden_size"]
    return {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "densenet121": 1024}[arch]


class Encoder(nn.Module):
    """Normalise, repeat to `in_channels` if needed, run the MONAI network: (B,1|3,H,W) -> (B,D)."""

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.spec = spec
        self.net = monai_network(spec.arch, spec.in_channels, input_size=spec.input_size,
                                 patch_size=spec.patch_size, vit_depth=spec.vit_depth)
        self.feature_dim = feature_dim(spec.arch)
        #: The only (square) input size the network takes (a ViT), None when any size works (CNNs).
        self.fixed_input_size = spec.input_size if is_vit(spec.arch) else None
        if is_vit(spec.arch):
            freeze_unused_cross_attention(self.net)
        self.register_buffer("mean", torch.tensor(spec.mean), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_tokens(self.net(self.prepare(x)))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """What the network sees: (x - mean) / std, grey repeated to in_channels; (B, C, H, W) float."""
        if self.fixed_input_size is not None and tuple(x.shape[-2:]) != (self.fixed_input_size,) * 2:
            raise ValueError(f"{self.spec.arch} takes {self.fixed_input_size}x{self.fixed_input_size} inputs "
                             f"(model.input_size), got {tuple(x.shape[-2:])}")
        if x.shape[1] != self.spec.in_channels:
            if x.shape[1] == 1:
                # Grayscale into a 3-channel net (e.g. ImageNet weights): same image in every channel.
                x = x.expand(-1, self.spec.in_channels, -1, -1)
            else:
                raise ValueError(f"encoder expects {self.spec.in_channels} channels, got {x.shape[1]}")
        return (x - self.mean) / self.std


def build_encoder(arch: str = "resnet18", in_channels: int = 1, input_size: int = 224, *,
                  patch_size: int | None = None, vit_depth: int | None = None) -> Encoder:
    """An Encoder for `arch`; `patch_size` / `vit_depth` are used by ViTs only (see the module docstring)."""
    if arch not in ARCHS:
        raise ConfigError(f"model.arch: unknown architecture {arch!r}; choose one of {list(ARCHS)}")
    if in_channels not in (1, 3):
        raise ConfigError(f"model.in_channels must be 1 or 3, got {in_channels}")
    vit = is_vit(arch)
    return Encoder(EncoderSpec(arch=arch, in_channels=in_channels, input_size=input_size,
                               patch_size=(patch_size or DEFAULT_PATCH_SIZE) if vit else None,
                               vit_depth=vit_depth if vit else None))


def encoder_from_config(model) -> Encoder:
    """`build_encoder` from a `model` config section: a ModelConfig or its dict (a checkpoint's, where
    configs written before ViT support lack patch_size / vit_depth)."""
    get = model.get if isinstance(model, dict) else (lambda k, d=None: getattr(model, k, d))
    return build_encoder(get("arch"), get("in_channels", 1), get("input_size", 224),
                         patch_size=get("patch_size"), vit_depth=get("vit_depth"))
