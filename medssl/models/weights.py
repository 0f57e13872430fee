"""Loading encoder weights safely from any of the formats users bring.

Accepted: a medssl pretraining checkpoint (Lightning `.ckpt`, online encoder under `encoder.`),
a `medssl export-backbone` state dict (keys of the plain MONAI network), or any plain state dict
for the same MONAI architecture (optionally under "state_dict"/"model", optionally prefixed
`module.`/`net.`/`backbone.`). Files are loaded with `torch.load(weights_only=True)`, so a
checkpoint cannot run code; classifier keys of the plain network are ignored.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from medssl.errors import CheckpointError

#: Prefixes under which the encoder's MONAI network can sit in a state dict, tried in order.
ENCODER_PREFIXES = ("encoder.net.", "model.encoder.net.", "net.", "module.", "backbone.", "encoder.", "")
#: Keys of a plain MONAI network's classifier, which an encoder does not have.
CLASSIFIER_KEYS = ("fc.weight", "fc.bias", "class_layers.out.weight", "class_layers.out.bias")


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


def _tensor_dict(obj: dict) -> dict:
    for key in ("state_dict", "model", "encoder"):
        inner = obj.get(key)
        if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def extract_encoder_state(obj: dict, target_keys) -> dict:
    """Pick the encoder's tensors out of a checkpoint dict so they match `target_keys` exactly."""
    tensors = _tensor_dict(obj)
    target = set(target_keys)
    for prefix in ENCODER_PREFIXES:
        picked = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        picked = {k: v for k, v in picked.items() if k not in CLASSIFIER_KEYS}
        if picked and set(picked) == target:
            return picked
    raise CheckpointError(
        "no encoder weights matching the architecture were found "
        f"({len(tensors)} tensors; first keys: {sorted(tensors)[:3]}). Check model.arch and model.in_channels."
    )


def load_encoder_weights(path: str | Path, encoder: nn.Module) -> nn.Module:
    """Load weights from `path` into `encoder.net` (a medssl Encoder) in place; returns the encoder."""
    obj = safe_load(path)
    net = encoder.net
    state = extract_encoder_state(obj, net.state_dict().keys())
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit {encoder.spec.arch}: {str(e).splitlines()[0]}") from e
    return encoder


def read_export_spec(path: str | Path) -> dict | None:
    """The JSON written beside an exported backbone (`<name>.json`), if there is one."""
    spec = Path(path).with_suffix(".json")
    if spec.is_file():
        return json.loads(spec.read_text())
    return None
