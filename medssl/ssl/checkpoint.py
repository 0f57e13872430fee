"""Checkpoint IO for pretraining: atomic Lightning checkpoints, RNG state, backbone export.

- `AtomicCheckpointIO` is the Trainer's CheckpointIO: every `.ckpt` is written to a temp file,
  fsynced and renamed (medssl.atomic), so a run killed mid-save keeps the previous checkpoint.
  Loading defaults to `torch.load(weights_only=True)`: a checkpoint cannot execute code.
- `export_backbone(ckpt, out)` writes the online encoder as a plain MONAI state dict
  (`out`, e.g. encoder.pt) and `out.with_suffix(".json")` describing how to rebuild and feed it.
"""

from __future__ import annotations

import hashlib
import logging
import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO

from medssl import __version__
from medssl.atomic import atomic_path, write_json
from medssl.errors import CheckpointError

log = logging.getLogger(__name__)

#: Where Lightning keeps our module's config inside a checkpoint.
CONFIG_KEY = "config"
RNG_KEY = "medssl_rng"


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose saves are atomic and whose loads are weights-only by default."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path, map_location=None, weights_only: Optional[bool] = None) -> dict[str, Any]:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint file does not exist")
        weights_only = True if weights_only is None else weights_only
        try:
            return torch.load(path, map_location=map_location or "cpu", weights_only=weights_only)
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"{path}: unreadable or refused as a weights-only checkpoint ({first}). "
                                  "Resume from another checkpoint (e.g. best.ckpt) or start a new run.") from e


# ----------------------------------------------------------------------------- RNG state
def rng_state() -> dict:
    """Python, NumPy and torch RNG states as weights-only-loadable objects (ints, lists, tensors)."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of `rng_state`; missing parts (e.g. CUDA on a CPU machine) are skipped."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- export
def file_sha256(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def monai_constructor(arch: str, in_channels: int = 1, *, input_size: int = 224, patch_size: int | None = None,
                      vit_depth: int | None = None) -> dict:
    """How `medssl.models.backbones.monai_network` builds `arch`, as data for users without medssl.

    `{"factory": "monai.networks.nets.<name>", "kwargs": {...}, "after": "..."}`; a test checks
    that building from this description gives a network the exported weights load into. A ViT's
    entry adds "features": how its (tokens, hidden states) output becomes the (B, D) feature vector.
    """
    from medssl.models.backbones import is_vit, vit_kwargs

    if is_vit(arch):
        return {"factory": "monai.networks.nets.ViT",
                "kwargs": vit_kwargs(arch, in_channels, input_size, patch_size, vit_depth),
                "after": None,
                "features": "tokens, _ = net(x_normalised); features = tokens.mean(dim=1)   # (B, N, D) -> (B, D)"}
    if arch in ("resnet18", "resnet34", "resnet50"):
        return {"factory": f"monai.networks.nets.{arch}",
                "kwargs": {"spatial_dims": 2, "n_input_channels": in_channels, "conv1_t_size": 7,
                           "conv1_t_stride": 2, "feed_forward": False, "shortcut_type": "B",
                           "bias_downsample": False},
                "after": None}
    if arch == "densenet121":
        return {"factory": "monai.networks.nets.DenseNet121",
                "kwargs": {"spatial_dims": 2, "in_channels": in_channels, "out_channels": 1},
                "after": "net.class_layers.out = torch.nn.Identity()"}
    raise CheckpointError(f"no MONAI constructor known for architecture {arch!r}")


def checkpoint_config(ckpt: dict, path) -> dict:
    """The medssl config dict stored in a pretraining checkpoint's hyper-parameters."""
    hp = ckpt.get("hyper_parameters") or {}
    cfg = hp.get(CONFIG_KEY)
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise CheckpointError(f"{path}: not a medssl pretraining checkpoint (no hyper_parameters.config); "
                              "export-backbone needs a checkpoint written by `medssl pretrain`.")
    return cfg


def export_backbone(ckpt_path, out) -> tuple[Path, Path]:
    """Write the online encoder of a pretraining checkpoint as a plain MONAI state dict + JSON spec.

    Returns (weights path, json path). Both files are written atomically; the JSON last.
    """
    from medssl.models.backbones import encoder_from_config
    from medssl.models.weights import load_encoder_weights, safe_load

    ckpt_path, out = Path(ckpt_path), Path(out)
    ckpt = safe_load(ckpt_path)
    cfg = checkpoint_config(ckpt, ckpt_path)
    model = cfg["model"]
    encoder = encoder_from_config(model)
    load_encoder_weights(ckpt_path, encoder)
    state = {k: v.detach().cpu().clone() for k, v in encoder.net.state_dict().items()}
    with atomic_path(out) as tmp:
        torch.save(state, tmp)
    spec = encoder.spec.to_dict()
    info = {
        **spec,
        "normalisation": {"mean": spec["mean"], "std": spec["std"],
                          "applies_to": "float32 (B, C, H, W) in [0, 1], bright = dense: x' = (x - mean) / std"},
        "feature_dim": encoder.feature_dim,
        "monai": monai_constructor(model["arch"], model["in_channels"], input_size=spec["input_size"],
                                   patch_size=spec.get("patch_size"), vit_depth=spec.get("vit_depth")),
        "ssl_method": cfg.get("ssl", {}).get("method"),
        "epoch": ckpt.get("epoch"),
        "global_step": ckpt.get("global_step"),
        "source_checkpoint": ckpt_path.name,
        "source_sha256": file_sha256(ckpt_path),
        "medssl_version": __version__,
    }
    spec_path = out.with_suffix(".json")
    write_json(spec_path, info)
    log.info("exported encoder %s (%s) -> %s", model["arch"], ckpt_path.name, out)
    return out, spec_path
