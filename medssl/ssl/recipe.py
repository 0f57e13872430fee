"""Pretraining settings that scale with the data: `auto` epochs, a time budget, a queue sized to the data.

A recipe copied from ImageNet (200 epochs, a 65,536-key queue) is wrong both ways for a hospital
archive: 800 images x 4 epochs is too short to learn anything, and a queue larger than the data
holds stale keys of the anchor's own images. So:

* `trainer.max_epochs: auto` trains for enough epochs that the run sees `trainer.min_samples`
  two-view samples (default 20,000: on the embedded 900 images about 22 epochs);
* `trainer.time_budget_min: M` measures the step time on this machine (a few real training steps
  with the real data and augmentation) and sets the epochs that fit into M minutes (an int
  max_epochs is then an upper bound);
* `ssl.queue_size: auto` is the largest power of two <= half the pretraining images, at least the
  global batch, at most 65,536 (the MoCo reference): about half an epoch of keys, fresh enough that
  the encoder which wrote them is close to the current one.

`resolve_recipe` is pure (the step time comes in as a number); `run_pretrain` calls it once and
writes the resolved values into config.yaml and the checkpoint, and a resumed run takes them from
its checkpoint, so resuming never changes the schedule.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

AUTO = "auto"
MAX_QUEUE = 65_536


@dataclass(frozen=True)
class DataSize:
    n_images: int            # pretraining images
    n_patients: int
    batches_per_epoch: int   # per device
    world_size: int = 1


def auto_queue_size(n_images: int, global_batch: int) -> int:
    """Largest power of two <= n_images / 2, clamped to [global_batch, 65536]."""
    half = max(1, n_images // 2)
    k = 1 << (half.bit_length() - 1)
    return int(min(MAX_QUEUE, max(global_batch, k)))


def samples_per_epoch(cfg, size: DataSize) -> int:
    return size.batches_per_epoch * cfg.trainer.batch_size * size.world_size


def epochs_for_samples(cfg, size: DataSize) -> int:
    """Epochs for the run to see at least trainer.min_samples two-view samples (>= 1)."""
    return max(1, math.ceil(cfg.trainer.min_samples / max(1, samples_per_epoch(cfg, size))))


def epochs_for_time(cfg, size: DataSize, step_seconds: float) -> int:
    """Epochs that fit into trainer.time_budget_min at `step_seconds` per optimizer step (>= 1)."""
    epoch_s = step_seconds * size.batches_per_epoch / max(1, cfg.trainer.accumulate_grad_batches)
    return max(1, int(cfg.trainer.time_budget_min * 60 // max(epoch_s, 1e-9)))


def resolve_recipe(cfg, size: DataSize, *, step_seconds: float | None = None):
    """A copy of cfg with `auto` epochs / queue size (and a time budget) resolved; and notes on each choice."""
    cfg = copy.deepcopy(cfg)
    notes = []
    global_batch = cfg.trainer.batch_size * size.world_size
    if cfg.ssl.queue_size == AUTO:
        cfg.ssl.queue_size = auto_queue_size(size.n_images, global_batch)
        notes.append(f"ssl.queue_size auto -> {cfg.ssl.queue_size} (largest power of two <= half of "
                     f"{size.n_images} pretraining images)")
    if cfg.trainer.time_budget_min:
        if step_seconds is None:
            raise ValueError("a time budget needs the measured step time")
        epochs = epochs_for_time(cfg, size, step_seconds)
        if cfg.trainer.max_epochs != AUTO:
            epochs = min(epochs, int(cfg.trainer.max_epochs))
        notes.append(f"trainer.max_epochs -> {epochs} ({cfg.trainer.time_budget_min:g} min at a measured "
                     f"{step_seconds:.3f} s per step, {size.batches_per_epoch} steps per epoch)")
        cfg.trainer.max_epochs = epochs
    elif cfg.trainer.max_epochs == AUTO:
        cfg.trainer.max_epochs = epochs_for_samples(cfg, size)
        notes.append(f"trainer.max_epochs auto -> {cfg.trainer.max_epochs} (>= {cfg.trainer.min_samples:,} two-view "
                     f"samples at {samples_per_epoch(cfg, size):,} per epoch)")
    return cfg, notes


def resolved_from_checkpoint(cfg, saved: dict):
    """A copy of cfg whose `auto` / time-budget values are the ones the checkpoint's run resolved
    (numbers the user sets now, e.g. a larger max_epochs to extend a run, are kept)."""
    cfg = copy.deepcopy(cfg)
    if cfg.ssl.queue_size == AUTO:
        cfg.ssl.queue_size = int(saved["ssl"]["queue_size"])
    if cfg.trainer.max_epochs == AUTO or cfg.trainer.time_budget_min:
        cfg.trainer.max_epochs = int(saved["trainer"]["max_epochs"])
        cfg.trainer.time_budget_min = None
    return cfg


def chance_loss(cfg, size: DataSize) -> float | None:
    """The loss of features that tell nothing apart: ln(negatives + 1) for the InfoNCE-type methods
    medssl knows the negative count of (MoCo v2: the queue; SimCLR: 2N - 2 in-batch negatives), ln(classes)
    for the classification pretext tasks (rotation: 4; jigsaw: ssl.jigsaw_permutations)."""
    method = cfg.ssl.method
    if method == "mocov2" and isinstance(cfg.ssl.queue_size, int):
        return math.log(cfg.ssl.queue_size + 1)
    if method == "simclr":
        return math.log(2 * cfg.trainer.batch_size * size.world_size - 1)
    if method == "rotation":   # a 4-way classifier that cannot tell the rotations apart
        return math.log(4)
    if method == "jigsaw":     # uniform over the fixed permutation set
        return math.log(cfg.ssl.jigsaw_permutations)
    return None
