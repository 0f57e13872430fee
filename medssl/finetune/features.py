"""Frozen-encoder features for the probes: encode each image once, keep the features on disk.

`FeatureStore` keeps features on disk per (encoder fingerprint, split) so a study encodes each split
once per init and reuses it across budgets and seeds; it holds the union of the rows asked for so
far (nested budgets make that the largest budget) and computes only missing rows. The frozen encoder
runs in eval mode (BatchNorm uses its running statistics), without augmentation.

The probes themselves (logistic regression, kNN) live in `medssl.finetune.probe`; the fitted linear
probe is exported as a `StandardizedLinear` head (standardisation buffers + one linear layer).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from medssl import atomic
from medssl.finetune.data import image_batch, resize_batch

log = logging.getLogger(__name__)


@torch.inference_mode()
def encode(encoder: nn.Module, images, rows: Sequence[int], *, batch_size: int = 64, input_size: int | None = None,
           device: str | torch.device = "cpu") -> np.ndarray:
    """Features of images[rows] from a frozen encoder in eval mode: float32 (N, feature_dim)."""
    rows = np.asarray(rows, dtype=np.int64)
    was_training = encoder.training
    encoder.eval().to(device)
    out = np.zeros((rows.size, encoder.feature_dim), dtype=np.float32)
    try:
        for start in range(0, rows.size, batch_size):
            chunk = rows[start:start + batch_size]
            x = image_batch(images, chunk).to(device)
            out[start:start + chunk.size] = encoder(resize_batch(x, input_size)).float().cpu().numpy()
    finally:
        encoder.train(was_training)
    return out


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def feature_key(*, arch: str, in_channels: int, input_size: int | None, init: str, init_seed: int,
                manifest_paths: Sequence[str], images_fingerprint: str | None = None) -> tuple[str, dict]:
    """Short hash naming a feature store, and the description it hashes (written beside the features).

    Everything that changes the features is in it: architecture, input size, the init's file
    content (or the seed of a random init), the manifest's row order, and the image source's
    fingerprint when it has one (e.g. the cache's settings).
    """
    init_id = f"random:{init_seed}" if init == "random" else f"sha256:{file_digest(init)}"
    paths_digest = hashlib.sha256("\n".join(map(str, manifest_paths)).encode()).hexdigest()
    desc = {"arch": arch, "in_channels": in_channels, "input_size": input_size, "init": init_id,
            "manifest_paths_sha256": paths_digest, "images": images_fingerprint, "version": 1}
    key = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]
    return key, desc


class FeatureStore:
    """On-disk features of one encoder: `<root>/<key>/<split>.npz` with arrays `rows` and `features`.

    Safe for concurrent writers (the shards of a study share one store): each write is a complete
    file renamed into place (`medssl.atomic`), so a reader sees an old or a new complete file, never
    a mix. Two writers of one split can only lose work (the last rename wins; rows only the other
    one added are encoded again when next asked for); what `get` returns is always computed or read
    for exactly the rows asked.
    """

    def __init__(self, root: str | Path, key: str, description: dict | None = None):
        self.dir = Path(root) / key
        self.description = description or {}

    def _path(self, split: str) -> Path:
        return self.dir / f"{split}.npz"

    def _load(self, split: str) -> tuple[np.ndarray, np.ndarray] | None:
        p = self._path(split)
        if not p.is_file():
            return None
        try:
            with np.load(p) as z:
                return z["rows"], z["features"]
        except Exception as e:  # a corrupt file is recomputed, never trusted
            log.warning("feature file %s is unreadable (%s); recomputing it", p, e)
            return None

    def get(self, split: str, rows: Sequence[int], compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Features for `rows` (in that order); `compute(missing_rows)` is called only for rows not stored yet."""
        rows = np.asarray(rows, dtype=np.int64)
        stored = self._load(split)
        have_rows, have_feats = stored if stored is not None else (np.zeros(0, np.int64), None)
        missing = np.setdiff1d(rows, have_rows)
        if missing.size:
            log.info("encoding %d images of split %s (%d already stored in %s)", missing.size, split,
                     have_rows.size, self.dir)
            new = np.asarray(compute(missing), dtype=np.float32)
            all_rows = np.concatenate([have_rows, missing])
            all_feats = new if have_feats is None else np.concatenate([have_feats, new])
            order = np.argsort(all_rows)
            have_rows, have_feats = all_rows[order], all_feats[order]
            with atomic.atomic_path(self._path(split)) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, rows=have_rows, features=have_feats)
            if self.description and not (self.dir / "key.json").is_file():
                atomic.write_json(self.dir / "key.json", self.description)
        idx = np.searchsorted(have_rows, rows)
        return have_feats[idx]


class StandardizedLinear(nn.Module):
    """A linear head on features standardised with the labeled training set's mean/std.

    Frozen features of a briefly trained or random encoder can be large and badly scaled
    (norms in the thousands after few steps, BN statistics unsettled): without standardising,
    the logits saturate and the probe learns nothing. Mean/std are buffers, saved with the head.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray, n_classes: int):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.linear = nn.Linear(len(mean), n_classes)

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.linear((feats - self.mean) / self.std)


def predict_head(head: nn.Module, feats: np.ndarray, device="cpu", batch_size: int = 4096) -> np.ndarray:
    """Sigmoid probabilities (N, C) float64 of a head on features."""
    head = head.to(device).eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(feats), batch_size):
            out.append(torch.sigmoid(head(torch.from_numpy(feats[s:s + batch_size]).to(device))).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, head.out_features))
