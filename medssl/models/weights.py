"""Loading encoder weights safely from any of the formats users bring.

The format is detected from the tensors' key names, never from the file name. Accepted:

- a medssl pretraining checkpoint (Lightning `.ckpt`, online encoder under `encoder.net.`);
- a `medssl export-backbone` state dict, or any state dict of the same MONAI network, optionally
  nested (under `state_dict`, `model`, `network`, ... up to three levels, as MONAI bundles and
  training scripts save them) and prefixed (`module.`, `net.`, `backbone.`, `model.`, MoCo's
  `module.encoder_q.`, ...);
- torchvision's ResNet-18/34/50 layout (`conv1.weight`, `bn1.*`, `layerL.B.conv1.weight`,
  `layerL.0.downsample.0/1.*`, `fc.*`), e.g. ImageNet weights: MONAI's ResNet, as
  `medssl.models.backbones.monai_network` builds it (7x7 stride-2 stem, max-pool, shortcut B, no
  downsample bias), has exactly these module names and the same computation, so the mapping only
  drops `fc.*` (the classifier, or a MoCo MLP head);
- the torchvision / torchxrayvision DenseNet-121 layout (`features.conv0.weight`,
  `features.denseblockD.denselayerL.norm1.*`, `features.transitionT.*`, `features.norm5.*`,
  `classifier.*`, torchxrayvision's `op_threshs` buffer; also the old `norm.1`/`conv.1` spelling):
  MONAI's DenseNet121 keeps a dense layer's modules under `.layers.`, so `denselayerL.norm1` ->
  `denselayerL.layers.norm1`; `classifier.*` and `op_threshs` are dropped;
- `.safetensors` files (read with the `safetensors` package; they cannot hold code at all);
- a MONAI bundle: its folder (weights in `models/model.pt`, or `models/model.safetensors`) or that
  file itself.

First convolution and input channels. medssl feeds grayscale (1 channel). When the weights' first
conv has 3 input channels (RGB, e.g. ImageNet) and the encoder has 1, the kernel is SUMMED over
the RGB channels: a grey image g fed to the RGB network as (g, g, g) gives sum_c W_c * g, so the
summed kernel makes the 1-channel network respond to g exactly as the RGB network responds to the
grey image (a mean would divide every first-layer response by 3 and put it off the scale the
following BatchNorm statistics expect). The other way (1-channel weights, 3-channel encoder) the
kernel is replicated and divided by 3, which keeps the same identity for a grey image replicated
into 3 channels (what `Encoder` feeds a 3-channel network).

Intensity scale of torchxrayvision weights. torchxrayvision trains on images scaled to
[-1024, 1024] (2048 x - 1024 for x in [0, 1]); medssl's encoder feeds z = (x - 0.5) / 0.25, in
[-2, 2]. With the default mean 0.5 the two differ by a pure factor (2048 x - 1024 = 2048 * std * z)
and the first conv has no bias, so multiplying the first conv by 2048 * std (512) makes medssl's
encoder compute exactly torchxrayvision's features. This is applied to a 1-channel DenseNet in
the torchvision layout (torchxrayvision's; torchvision's own ImageNet DenseNet has 3 channels).

ImageNet weights get no such correction: ImageNet normalisation is per RGB channel
((x - m_c) / s_c, m = 0.485/0.456/0.406, s = 0.229/0.224/0.225), which for a grey image is
about 1.1 z + 0.07..0.42, not a multiple of z, and an offset cannot be folded into a bias-free conv
whose zero padding sees the border. See README ("Weights medssl accepts") for what this means.

Files are loaded with `torch.load(weights_only=True)` (or safetensors), so a checkpoint cannot run
code. When nothing fits, CheckpointError lists the formats tried and the closest attempt's missing
and unexpected keys.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from medssl.errors import CheckpointError

log = logging.getLogger(__name__)

#: Prefixes under which the encoder's network can sit in a state dict, tried in order.
ENCODER_PREFIXES = ("encoder.net.", "model.encoder.net.", "module.encoder_q.", "encoder_q.", "module.encoder.",
                    "net.", "module.", "backbone.", "model.", "encoder.", "")
#: Keys of a plain MONAI network's classifier, which an encoder does not have.
CLASSIFIER_KEYS = ("fc.weight", "fc.bias", "class_layers.out.weight", "class_layers.out.bias")
#: Keys under which checkpoints nest their weights (Lightning, MONAI bundles, training scripts), tried first.
NESTED_KEYS = ("state_dict", "model", "network", "net", "model_state_dict", "state", "weights", "encoder")
#: How deep nested dicts are searched for the weights.
MAX_NESTING = 3
#: The first convolution's weight, per architecture family (where channel adaptation happens).
FIRST_CONV = {"resnet": "conv1.weight", "densenet": "features.conv0.weight",
              "vit": "patch_embedding.patch_embeddings.weight"}   # a ViT's patch projection is a conv too
#: torchxrayvision's input range is [-1024, 1024]: 2048 * x - 1024 for x in [0, 1].
XRV_RANGE = 2048.0
#: Files looked for inside a MONAI bundle folder, in order.
BUNDLE_FILES = ("models/model.pt", "models/model.safetensors")
_SHOWN = 5


def family(arch: str) -> str | None:
    """"resnet", "densenet", "vit" (MONAI's own layout only) or None."""
    if arch.startswith("vit_"):
        return "vit"
    if arch.startswith("resnet"):
        return "resnet"
    if arch.startswith("densenet"):
        return "densenet"
    return None


# ----------------------------------------------------------------------------- reading files
def safe_load(path: str | Path) -> dict:
    """torch.load with weights_only=True; every failure becomes a CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle refusal, truncation, wrong format all land here
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{path}: refused or unreadable as a weights-only checkpoint ({text}). medssl never unpickles "
            "code; re-save the weights with torch.save(model.state_dict(), path) from a trusted session."
        ) from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict or checkpoint dict, found {type(obj).__name__}")
    return obj


def resolve_weights_path(path: str | Path) -> Path:
    """The weights file of `path`: the file itself, or a MONAI bundle folder's models/model.pt."""
    path = Path(path)
    if path.is_dir():
        for name in BUNDLE_FILES:
            if (path / name).is_file():
                return path / name
        if (path / "models" / "model.ts").is_file():
            raise CheckpointError(f"{path}: this MONAI bundle ships only TorchScript (models/model.ts), which medssl "
                                  "does not load (it is code, not weights); export its state dict to models/model.pt")
        raise CheckpointError(f"{path}: a folder, but not a MONAI bundle with {' or '.join(BUNDLE_FILES)}")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    return path


def load_weights_file(path: str | Path) -> dict:
    """Read a weights file safely: `.safetensors` with safetensors, anything else with `safe_load`;
    a MONAI bundle folder resolves to its models/model.pt first."""
    path = resolve_weights_path(path)
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:  # a dependency of medssl; only a broken install lacks it
            raise CheckpointError(f"{path}: reading .safetensors needs the `safetensors` package "
                                  "(pip install safetensors)") from e
        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as e:
            raise CheckpointError(f"{path}: unreadable as a safetensors file ({str(e).splitlines()[0]})") from e
    return safe_load(path)


# ----------------------------------------------------------------------------- key layouts
def _drop(state: dict, keys=(), prefixes=()) -> dict:
    return {k: v for k, v in state.items() if k not in keys and not k.startswith(tuple(prefixes))}


def _monai(state: dict) -> dict:
    return _drop(state, CLASSIFIER_KEYS)


def _torchvision_resnet(state: dict) -> dict | None:
    # module names are MONAI's already; fc.* is the ImageNet classifier (or a MoCo MLP head: fc.0/fc.2).
    # Without any fc.* key the dict is a plain MONAI/medssl one (the next layout names it so).
    if not any(k.startswith("fc.") for k in state):
        return None
    return _drop(state, prefixes=("fc.",))


_DENSE_LAYER = re.compile(r"^(features\.denseblock\d+\.denselayer\d+\.)(norm|relu|conv)\.?([12])\.(.+)$")


def _torchvision_densenet(state: dict) -> dict | None:
    if any(".layers." in k for k in state):   # MONAI's own DenseNet layout
        return None
    out = {}
    for k, v in _drop(state, keys=("op_threshs",), prefixes=("classifier.",)).items():
        m = _DENSE_LAYER.match(k)
        out[f"{m.group(1)}layers.{m.group(2)}{m.group(3)}.{m.group(4)}" if m else k] = v
    return out


@dataclass(frozen=True)
class Layout:
    """One way a foreign state dict's keys map onto the MONAI network's keys."""

    name: str
    families: tuple          # architecture families it applies to; () = all
    rename: Callable[[dict], dict | None]   # None: the keys are not in this layout


#: Tried in order; the torchvision ResNet layout differs from MONAI's only by its fc.* keys.
LAYOUTS = (
    Layout("torchvision ResNet (e.g. ImageNet)", ("resnet",), _torchvision_resnet),
    Layout("medssl / MONAI state dict", (), _monai),
    Layout("torchvision / torchxrayvision DenseNet", ("densenet",), _torchvision_densenet),
)
MONAI_LAYOUT = LAYOUTS[1].name


@dataclass
class Mapped:
    """Weights mapped onto a MONAI network: its state dict, the layout detected, and what was adapted."""

    state: dict
    format: str
    where: str = ""                      # nesting path + prefix the weights were found under
    notes: list = field(default_factory=list)


def _tensor_dicts(obj: dict, where: str = "", depth: int = 0) -> Iterator[tuple[str, dict]]:
    """(nesting path, tensors) of every dict in `obj` holding tensors; known nesting keys first."""
    nested = [k for k in NESTED_KEYS if isinstance(obj.get(k), dict)]
    nested += [k for k, v in obj.items() if isinstance(v, dict) and k not in nested]
    if depth < MAX_NESTING:
        for key in nested[:1]:
            yield from _tensor_dicts(obj[key], f"{where}{key}/", depth + 1)
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if tensors:
        yield where, tensors
    if depth < MAX_NESTING:
        for key in nested[1:]:
            yield from _tensor_dicts(obj[key], f"{where}{key}/", depth + 1)


def _adapt_first_conv(src: torch.Tensor, want: torch.Size, key: str) -> tuple[torch.Tensor, str | None]:
    if src.shape == want or src.ndim != 4 or len(want) != 4 or src.shape[0] != want[0] or src.shape[2:] != want[2:]:
        return src, None
    if src.shape[1] == 3 and want[1] == 1:
        return src.sum(dim=1, keepdim=True), f"{key}: RGB kernel summed over its 3 input channels (grey input)"
    if src.shape[1] == 1 and want[1] == 3:
        return src.repeat(1, 3, 1, 1) / 3.0, f"{key}: 1-channel kernel replicated into 3 channels / 3"
    return src, None


def map_state(obj: dict, target: dict, arch: str, *, mean: float = 0.5, std: float = 0.25) -> Mapped:
    """Map the weights in checkpoint dict `obj` onto `target` (a MONAI network's state_dict).

    Tries every nested tensor dict x every prefix in ENCODER_PREFIXES x every LAYOUT for `arch`'s
    family and takes the first whose keys equal the target's exactly; then adapts the first conv's
    input channels (sum 3 -> 1, replicate/3 1 -> 3) and scales a torchxrayvision first conv
    (2048 * std, exact when mean is 0.5). Raises CheckpointError when no layout fits (listing the
    formats tried and the closest attempt's missing / unexpected keys) or when shapes differ.
    `mean`, `std`: the encoder's input normalisation (EncoderSpec).
    """
    fam = family(arch)
    layouts = [lay for lay in LAYOUTS if not lay.families or fam in lay.families]
    want = set(target)
    best = None   # (overlap, layout name, where, missing, unexpected)
    for where, tensors in _tensor_dicts(obj):
        for prefix in ENCODER_PREFIXES:
            picked = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            if not picked:
                continue
            for lay in layouts:
                mapped = lay.rename(picked)
                if mapped is None:
                    continue
                have = set(mapped)
                if have == want:
                    return _finish(mapped, target, arch, lay, f"{where}{prefix}", mean=mean, std=std)
                overlap = len(have & want)
                if best is None or overlap > best[0]:
                    best = (overlap, lay.name, f"{where}{prefix}", sorted(want - have), sorted(have - want))
    tried = [lay.name for lay in layouts]
    if best is None:
        raise CheckpointError(f"no tensors found (formats tried: {tried}); this is not a weights file")
    _, name, where, missing, unexpected = best
    raise CheckpointError(
        f"no encoder weights matching the architecture {arch} were found (formats tried: {tried}). Closest: "
        f"{name} under {where or '(top level)'!r}: {len(missing)} missing key(s) {_few(missing)}, "
        f"{len(unexpected)} unexpected key(s) {_few(unexpected)}. Check model.arch and model.in_channels, "
        "or see README 'Weights medssl accepts'.")


def _few(keys: list) -> str:
    more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return f"{keys[:_SHOWN]}{more}"


def _finish(mapped: dict, target: dict, arch: str, lay: Layout, where: str, *, mean: float, std: float) -> Mapped:
    out = Mapped(dict(mapped), lay.name, where)
    conv = FIRST_CONV.get(family(arch) or "")
    src_channels = None
    if conv in out.state:
        src_channels = out.state[conv].shape[1] if out.state[conv].ndim == 4 else None
        out.state[conv], note = _adapt_first_conv(out.state[conv], target[conv].shape, conv)
        if note:
            out.notes.append(note)
    if lay.rename is _torchvision_densenet and src_channels == 1:
        # torchxrayvision: its [-1024, 1024] input is (2048 * std) * z when mean == 0.5 (see module docstring)
        scale = XRV_RANGE * std
        out.state[conv] = out.state[conv] * scale
        out.format = "torchxrayvision DenseNet (1-channel)"
        out.notes.append(f"{conv}: scaled by {scale:g} so medssl's (x - {mean:g}) / {std:g} reproduces "
                         "torchxrayvision's [-1024, 1024] input")
        if abs(mean - 0.5) > 1e-9:
            out.notes.append(f"encoder mean {mean:g} != 0.5: torchxrayvision's input is reproduced only up to "
                             "a brightness offset")
    bad = [f"{k}: file {tuple(v.shape)} vs network {tuple(target[k].shape)}" for k, v in out.state.items()
           if tuple(v.shape) != tuple(target[k].shape)]
    if bad:
        raise CheckpointError(f"{lay.name} weights do not fit {arch}: {len(bad)} tensor(s) of another shape, "
                              f"{_few(bad)}. Check model.arch and model.in_channels")
    out.state = {k: v.to(target[k].dtype) for k, v in out.state.items()}
    return out


# ----------------------------------------------------------------------------- into an encoder
def load_encoder_weights(path: str | Path, encoder: nn.Module) -> nn.Module:
    """Load weights from `path` into `encoder.net` (a medssl Encoder) in place; returns the encoder.

    `path`: any format of the module docstring (file or MONAI bundle folder). The detected format and
    adaptations are logged and kept on `encoder.weights_info` ({"format", "notes"}).
    """
    obj = load_weights_file(path)
    net = encoder.net
    spec = encoder.spec
    try:
        mapped = map_state(obj, net.state_dict(), spec.arch, mean=float(spec.mean), std=float(spec.std))
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    try:
        net.load_state_dict(mapped.state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit {spec.arch}: {str(e).splitlines()[0]}") from e
    if mapped.format != MONAI_LAYOUT or mapped.notes:
        log.info("%s: %s weights into %s%s", path, mapped.format, spec.arch,
                 "".join(f"; {n}" for n in mapped.notes))
    encoder.weights_info = {"format": mapped.format, "notes": list(mapped.notes)}
    return encoder


def read_export_spec(path: str | Path) -> dict | None:
    """The JSON written beside an exported backbone (`<name>.json`), if there is one."""
    spec = Path(path).with_suffix(".json")
    if spec.is_file():
        return json.loads(spec.read_text())
    return None
