"""Pretraining data: train rows of the manifest -> decoded cache -> patient-aware pair batches.

Flow per step: the main process samples `(epoch, batch)` keys; a DataLoader worker turns a key
into uint8/uint16 pixels by slicing the cache memmap plus int64 patient codes. Where the two
views are augmented (`augment.on_device`):
  * "auto" on a GPU, or "gpu": `on_after_batch_transfer` augments both views on the device with
    the batched policy (`policy.batch`); workers do no augmentation.
  * "auto" on CPU: the workers run the same `policy.batch` call on their batch (one torch thread
    each, DataLoader's default), so augmentation overlaps the training step instead of
    serialising with it in the main process; same generator seed, identical views.
  * "cpu": the workers run the policy's per-sample (MONAI) path.

Determinism and resume: the pair plan of an epoch is a pure function of (seed, epoch) and every
batch's augmentation randomness of (seed, epoch, batch, rank). The only state is a cursor
(epoch, next batch) advanced when a batch reaches the model; it is saved in checkpoints (as the
DataModule's and the DataLoader's state), so a run resumed mid-epoch continues with exactly the
batches it would have seen.

Labels: pretraining never reads label columns. The manifest is read without them
(`read_label_free`); only the optional monitor reads the val split's labels, separately.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch
import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset, Sampler

from medssl.augment.batch import to_unit_float  # noqa: F401  (re-exported: uint8/uint16 -> [0, 1])
from medssl.errors import CacheError, ManifestError
from medssl.manifest.schema import BOOKKEEPING_COLUMNS, REQUIRED_COLUMNS, label_columns

log = logging.getLogger(__name__)

TRAIN_SPLIT = "train"
#: The only manifest columns pretraining reads.
PRETRAIN_COLUMNS = tuple(REQUIRED_COLUMNS) + tuple(BOOKKEEPING_COLUMNS)


# ----------------------------------------------------------------------------- manifest
def read_label_free(path, *, data_root=None) -> pd.DataFrame:
    """Read a manifest's non-label columns only (label columns are never parsed), validated.

    Returns the full manifest (all splits) in file row order; `attrs["data_root"]` as in
    `medssl.manifest.load`.
    """
    from medssl.manifest import table
    from medssl.manifest.validate import validate

    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist; set data.manifest or create one with "
                            "`medssl manifest build` and `medssl split`")
    keep = set(PRETRAIN_COLUMNS)
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq
            names = [c for c in pq.read_schema(path).names if c in keep]
            df = pd.read_parquet(path, columns=names)
        else:
            df = pd.read_csv(path, usecols=lambda c: c in keep, dtype=str, keep_default_na=False,
                             na_values=[""])
    except (ValueError, OSError, ImportError) as e:
        raise ManifestError(f"cannot read manifest {path}: {e}") from e
    from medssl.manifest.handwritten import prepare

    root = data_root if data_root is not None else table._sidecar_root(path)
    # the same normalisation as medssl.manifest.load (absolute paths rebased, blank study ids filled),
    # so pretraining and the study see the same paths
    df = prepare(df, root, explicit_root=data_root is not None, source=f"manifest {path}")
    df.attrs = {"data_root": str(df.attrs.get("data_root", root))}
    validate(df, source=str(path))
    return df


def train_rows(df: pd.DataFrame, *, views: Optional[list[str]] = None, source: str = "manifest",
               splits: tuple[str, ...] | list[str] = (TRAIN_SPLIT,)) -> np.ndarray:
    """Row positions (into `df`) that pretraining may use: split in `splits` (default train only;
    `data.pretrain_splits` may add val, whose labels pretraining never reads) and `views` if given.
    The test split is never allowed."""
    if "split" not in df.columns:
        raise ManifestError(f"{source} has no `split` column; pretraining uses only the train split so that "
                            "val/test images stay unseen. Run `medssl split MANIFEST --out MANIFEST_SPLIT` and "
                            "set data.manifest to its output")
    if "test" in splits:
        raise ManifestError("data.pretrain_splits must not contain 'test': test images stay unseen until evaluation")
    mask = df["split"].astype("str").isin(list(splits)).to_numpy()
    if views:
        mask &= df["view"].astype("str").str.upper().isin([v.upper() for v in views]).to_numpy()
    rows = np.flatnonzero(mask)
    if len(rows) == 0:
        raise ManifestError(f"{source} has no rows in split(s) {list(splits)}" + (f" with views {views}" if views else "")
                            + "; check the `split` column, data.pretrain_splits and data.views")
    return rows


# ----------------------------------------------------------------------------- seeds
def step_seed(seed: int, epoch: int, batch: int, rank: int = 0) -> int:
    """A 63-bit seed for one batch's randomness, independent of workers and restarts."""
    return int(np.random.SeedSequence([seed, epoch, batch, rank]).generate_state(2, np.uint64)[0] >> np.uint64(1))


# ----------------------------------------------------------------------------- batch plan
def _as_triples(batch, pairs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalise one item of `PairSampler.batches` to (idx_a, idx_b, patient) int64 arrays."""
    if isinstance(batch, tuple) and len(batch) == 3:
        return tuple(np.asarray(x, dtype=np.int64) for x in batch)  # type: ignore[return-value]
    # an array of pair positions into pair_indices(epoch)
    idx_a, idx_b, patient = pairs
    pos = np.asarray(batch, dtype=np.int64)
    return idx_a[pos], idx_b[pos], patient[pos]


class EpochPlan:
    """Per-epoch list of per-device batches for this rank: batch b of epoch e -> (idx_a, idx_b, patient).

    Pairs come from `medssl.pairs.PairSampler.batches` (no two pairs of one patient in a batch).
    A rank takes every world_size-th batch. Every epoch has exactly `n_batches` batches: an epoch
    whose plan comes out shorter wraps around, a longer one is cut (Lightning needs a fixed length).
    """

    def __init__(self, sampler, batch_size: int, rank: int = 0, world_size: int = 1, n_batches: Optional[int] = None):
        self.sampler, self.batch_size = sampler, batch_size
        self.rank, self.world_size = rank, world_size
        self._epoch, self._batches = None, None
        self.n_batches = n_batches if n_batches is not None else len(self._plan(0))
        if self.n_batches == 0:
            raise ManifestError(f"the train split yields no full batch of {batch_size} pairs from distinct "
                                f"patients per device ({world_size} device(s)); lower trainer.batch_size")

    def _plan(self, epoch: int) -> list:
        if self._epoch != epoch:
            pairs = None
            if not hasattr(self.sampler, "batches"):
                raise TypeError("pair sampler lacks batches(batch_size, epoch)")
            raw = list(self.sampler.batches(self.batch_size, epoch))
            if raw and not (isinstance(raw[0], tuple) and len(raw[0]) == 3):
                pairs = tuple(np.asarray(x, dtype=np.int64) for x in self.sampler.pair_indices(epoch))
            mine = raw[self.rank::self.world_size]
            per_rank = len(raw) // self.world_size  # equal length on every rank
            self._batches = [_as_triples(b, pairs) for b in mine[:per_rank]]
            self._epoch = epoch
        return self._batches

    def __call__(self, epoch: int, batch: int):
        plan = self._plan(epoch)
        return plan[batch % len(plan)]


class PairBatchDataset(Dataset):
    """Map-style dataset whose keys are `(epoch, batch)`; items are whole batches.

    Item: {"images": uint8|uint16 (B, 2, S, S) for the batched path, or float32 (B, 2, H, W) in
    [0, 1] already augmented for the CPU path; "patient": int64 (B,); "epoch", "batch": int}.
    """

    def __init__(self, images, plan: EpochPlan, *, seed: int = 0, cpu_policy=None, batch_policy=None):
        if cpu_policy is not None and batch_policy is not None:
            raise ValueError("give cpu_policy (per-sample path) or batch_policy (batched path), not both")
        self.images, self.plan, self.seed = images, plan, seed
        self.cpu_policy, self.batch_policy = cpu_policy, batch_policy

    def __len__(self) -> int:
        return self.plan.n_batches

    def __getitem__(self, key):
        epoch, batch = key
        idx_a, idx_b, patient = self.plan(epoch, batch)
        a = self._read(idx_a)
        b = a if np.array_equal(idx_a, idx_b) else self._read(idx_b)
        pixels = np.stack([a, b], axis=1)
        boxes = self._boxes(idx_a, idx_b)
        seed = step_seed(self.seed, epoch, batch, self.plan.rank)
        if self.cpu_policy is not None:
            images = self._augment_cpu(pixels, boxes, seed)
        elif self.batch_policy is not None:
            generator = torch.Generator().manual_seed(seed)
            images = augment_pair_views(self.batch_policy, torch.from_numpy(pixels), generator,
                                        None if boxes is None else torch.from_numpy(boxes))
        else:
            images = torch.from_numpy(pixels)
        item = {"images": images, "patient": torch.from_numpy(np.asarray(patient, dtype=np.int64)),
                "epoch": epoch, "batch": batch}
        if boxes is not None:
            item["boxes"] = torch.from_numpy(boxes)
        return item

    def _read(self, idx: np.ndarray) -> np.ndarray:
        if hasattr(self.images, "get_batch"):
            return np.asarray(self.images.get_batch(idx))
        return np.stack([np.asarray(self.images[int(i)]) for i in idx])

    def _boxes(self, idx_a: np.ndarray, idx_b: np.ndarray) -> Optional[np.ndarray]:
        """Content boxes (B, 2, 4) int64 (top, left, height, width) so crops stay inside the image."""
        boxes = getattr(self.images, "boxes", None)
        if boxes is None:
            return None
        return np.stack([boxes[idx_a], boxes[idx_b]], axis=1).astype(np.int64)

    def _augment_cpu(self, pixels: np.ndarray, boxes, seed: int) -> torch.Tensor:
        x = to_unit_float(torch.from_numpy(pixels))
        self.cpu_policy.set_random_state(seed=seed % (2 ** 32))
        out = torch.empty((x.shape[0], 2, self.cpu_policy.out_size, self.cpu_policy.out_size))
        for i in range(x.shape[0]):
            for v in range(2):
                box = None if boxes is None else tuple(int(c) for c in boxes[i, v])
                out[i, v] = torch.as_tensor(self.cpu_policy(x[i, v:v + 1], box=box))[0]
        return out


def augment_pair_views(policy, x: torch.Tensor, generator: torch.Generator, boxes=None) -> torch.Tensor:
    """Both views of a pair batch in one `policy.batch` call: x (B, 2, H, W) uint8/uint16, boxes
    (B, 2, 4) or None -> float32 (B, 2, S, S) in [0, 1], on x's device.

    The one definition of the batched augmentation order (view a of every sample, then view b), so
    the worker and the on-device paths draw identical parameters from one seeded generator.
    """
    b = x.shape[0]
    stacked = torch.cat([x[:, 0:1], x[:, 1:2]], dim=0)  # (2B, 1, H, W): one call for both views
    if boxes is not None:
        boxes = torch.cat([boxes[:, 0], boxes[:, 1]], dim=0)
    views = policy.batch(stacked, generator=generator, boxes=boxes)
    return torch.stack([views[:b, 0], views[b:, 0]], dim=1)


@dataclass
class Cursor:
    """Where training stands: the next batch to train is (epoch, batch)."""

    epoch: int = 0
    batch: int = 0


class ResumeSampler(Sampler):
    """Yields `(epoch, batch)` keys from the cursor to the end of its epoch (rolling over when done)."""

    def __init__(self, cursor: Cursor, n_batches: int):
        self.cursor, self.n_batches = cursor, n_batches

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self):
        epoch, start = self.cursor.epoch, self.cursor.batch
        if start >= self.n_batches:
            epoch, start = epoch + 1, 0
        for b in range(start, self.n_batches):
            yield (epoch, b)


class ResumableLoader(DataLoader):
    """A DataLoader that Lightning recognises as resumable (state = the cursor)."""

    def __init__(self, *args, cursor: Cursor, **kwargs):
        super().__init__(*args, **kwargs)
        self.cursor = cursor

    def state_dict(self) -> dict:
        return {"epoch": self.cursor.epoch, "batch": self.cursor.batch}

    def load_state_dict(self, state: dict) -> None:
        self.cursor.epoch, self.cursor.batch = int(state["epoch"]), int(state["batch"])


# ----------------------------------------------------------------------------- monitor data
@dataclass
class MonitorSet:
    """Labeled val images for the kNN/linear monitor: cache rows, labels (N, L) with NaN, patient groups."""

    images: object
    labels: np.ndarray
    label_names: list
    groups: np.ndarray


def monitor_set(manifest_path, df: pd.DataFrame, images_factory, *, max_images: int, seed: int) -> Optional[MonitorSet]:
    """The val split with usable labels (>= 5 positives and negatives in some column), else None.

    Reads label columns of val rows only; train-row labels are never touched.
    """
    if "split" not in df.columns:
        return None
    val = np.flatnonzero(df["split"].astype("str").eq("val").to_numpy())
    if len(val) < 10:
        return None
    if len(val) > max_images:
        val = np.sort(np.random.default_rng(seed).choice(val, max_images, replace=False))
    path = Path(manifest_path)
    if path.suffix == ".parquet":
        full = pd.read_parquet(path)
    else:
        full = pd.read_csv(path, keep_default_na=False, na_values=[""], low_memory=False)
    names = label_columns(full.columns)
    if not names:
        return None
    labels = full.iloc[val][names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, copy=True)
    labels[(labels != 0) & (labels != 1)] = np.nan  # uncertain/blank are not scored
    usable = [(np.nansum(labels[:, j] == 1) >= 5) and (np.nansum(labels[:, j] == 0) >= 5) for j in range(len(names))]
    if not any(usable):
        return None
    keep = np.flatnonzero(usable)
    groups = pd.factorize(df["patient_id"].iloc[val])[0]
    return MonitorSet(images=images_factory(val), labels=labels[:, keep],
                      label_names=[names[j] for j in keep], groups=groups)


# ----------------------------------------------------------------------------- data module
class PretrainDataModule(pl.LightningDataModule):
    """Train split -> cache -> pair batches; augments both views on the device after transfer.

    `batch` after transfer: {"view_a", "view_b": float32 (B, 1, S, S) in [0, 1], "patient": int64 (B,),
    "seed": int} with S = model.input_size.
    """

    def __init__(self, cfg, *, manifest: Optional[pd.DataFrame] = None, augment_in_workers: Optional[bool] = None):
        """`augment_in_workers`: run the batched policy in the DataLoader workers (True) or after
        transfer (False); None decides from `augment.on_device` and the trainer's accelerator
        (`augment_where`), after transfer when no trainer is attached."""
        super().__init__()
        self.cfg = cfg
        self.augment_in_workers = augment_in_workers
        self._manifest = manifest
        self.cursor = Cursor()
        self.plan: Optional[EpochPlan] = None
        self.dataset: Optional[PairBatchDataset] = None
        self.sampler = None
        self.images = None
        self.policy = None
        self.monitor: Optional[MonitorSet] = None
        self.n_patients = 0
        self.n_images = 0
        self._generators: dict = {}
        self._where: Optional[str] = None

    # --- setup
    def prepare(self) -> None:
        """Rank-independent part of setup: manifest, cache reader, pair sampler, policy, monitor set."""
        if self.sampler is not None:
            return
        cfg = self.cfg
        df = self._manifest if self._manifest is not None else read_label_free(
            cfg.data.manifest, data_root=cfg.data.data_root)
        # Enforce "labels are never read": whatever frame we were given, drop its label columns.
        df = df.drop(columns=label_columns(df.columns))
        rows = train_rows(df, views=cfg.data.views, source=str(cfg.data.manifest or "manifest"),
                          splits=cfg.data.pretrain_splits)
        train = df.iloc[rows].reset_index(drop=True)
        self.n_patients = int(train["patient_id"].nunique())
        self.n_images = len(train)
        self.images = open_images(cfg, df, rows)
        from medssl.pairs import PairSampler
        self.sampler = PairSampler(train, mode=cfg.ssl.pairs, scope=cfg.ssl.pair_scope, views=cfg.ssl.pair_views,
                                   seed=cfg.trainer.seed)
        self.policy = build_policy(cfg)
        if cfg.ssl.monitor_every_n_epochs > 0 and cfg.data.manifest and self._manifest is None:
            self.monitor = monitor_set(cfg.data.manifest, df, lambda r: open_images(cfg, df, r),
                                       max_images=cfg.ssl.monitor_max_images, seed=cfg.trainer.seed)
        log.info("pretraining on %d images (splits %s) of %d patients", len(train), "+".join(cfg.data.pretrain_splits),
                 self.n_patients)

    def setup(self, stage: Optional[str] = None) -> None:
        self.prepare()
        rank, world = self._rank_world()
        where = self._augment_where()
        if (self.plan is not None and (self.plan.rank, self.plan.world_size) == (rank, world)
                and self._where == where):
            return
        cfg = self.cfg
        self.plan = EpochPlan(self.sampler, cfg.trainer.batch_size, rank, world)
        self._where = where
        self.dataset = PairBatchDataset(self.images, self.plan, seed=cfg.trainer.seed,
                                        cpu_policy=self.policy if where == "per_sample" else None,
                                        batch_policy=self.policy if where == "workers" else None)
        log.info("augmentation: %s", where)
        log.info("%d batches of %d pairs per epoch on each of %d device(s)", self.plan.n_batches,
                 cfg.trainer.batch_size, world)

    def _augment_where(self) -> str:
        trainer = self.trainer
        if self.augment_in_workers is not None and self.cfg.augment.on_device != "cpu":
            return "workers" if self.augment_in_workers else "device"
        device = None if trainer is None else trainer.strategy.root_device.type
        return augment_where(self.cfg, device)

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        return 0, 1

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        workers = self.cfg.trainer.num_workers
        return ResumableLoader(
            self.dataset, batch_size=None, sampler=ResumeSampler(self.cursor, self.plan.n_batches),
            num_workers=workers, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
            prefetch_factor=self.cfg.trainer.prefetch_factor if workers > 0 else None, cursor=self.cursor)

    # --- per batch, on the device
    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        if not isinstance(batch, dict) or "images" not in batch:
            return batch
        epoch, index = int(batch["epoch"]), int(batch["batch"])
        trainer = self.trainer
        if trainer is not None and trainer.training:
            if epoch != trainer.current_epoch:
                log.warning("data cursor epoch %d differs from trainer epoch %d", epoch, trainer.current_epoch)
            self.cursor.epoch, self.cursor.batch = epoch, index + 1
        rank = self.plan.rank if self.plan is not None else 0
        seed = step_seed(self.cfg.trainer.seed, epoch, index, rank)
        x = batch["images"]
        if x.dtype.is_floating_point:  # already augmented in the worker (batched or per-sample path)
            views = x
        else:
            views = augment_pair_views(self.policy, x, self._generator(x.device, seed), batch.get("boxes"))
        view_a, view_b = views[:, 0:1], views[:, 1:2]
        if self.cfg.model.channels_last:
            view_a = view_a.contiguous(memory_format=torch.channels_last)
            view_b = view_b.contiguous(memory_format=torch.channels_last)
        return {"view_a": view_a, "view_b": view_b, "patient": batch["patient"], "seed": seed}

    def _generator(self, device: torch.device, seed: int) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device)
        return self._generators[key].manual_seed(seed)

    # --- checkpoint state (always restored, also when Lightning does not restore loader states)
    def state_dict(self) -> dict:
        return {"epoch": self.cursor.epoch, "batch": self.cursor.batch}

    def load_state_dict(self, state: dict) -> None:
        self.cursor.epoch, self.cursor.batch = int(state["epoch"]), int(state["batch"])


# ----------------------------------------------------------------------------- factories
def augment_on_cpu(cfg) -> bool:
    """True for the per-sample (MONAI) path in the workers (`augment.on_device: cpu`)."""
    return cfg.augment.on_device == "cpu"


def augment_where(cfg, device_type: Optional[str]) -> str:
    """Where pair views are augmented: "per_sample" (workers, MONAI per sample), "workers" (workers,
    batched policy) or "device" (after transfer, batched policy).

    `device_type`: the training device ("cpu", "cuda", ...) or None when no trainer is attached
    (then "device": the caller augments after its own transfer, as before a trainer exists).
    """
    if augment_on_cpu(cfg):
        return "per_sample"
    if cfg.augment.on_device == "auto" and device_type == "cpu":
        return "workers"
    return "device"


def build_policy(cfg):
    """The pretraining augmentation policy of the config, producing model.input_size square views."""
    from medssl.augment import policy_from_config

    return policy_from_config(cfg, "pretrain")


def cache_dir_of(cfg) -> Path:
    """cache.dir, or the documented default `<manifest dir>/cache-<size>`."""
    if cfg.cache.dir:
        return Path(cfg.cache.dir)
    if not cfg.data.manifest:
        raise ManifestError("set data.manifest (and cache.dir) in the config")
    return Path(cfg.data.manifest).resolve().parent / f"cache-{cfg.cache.size}"


def ensure_cache(cfg, df: Optional[pd.DataFrame] = None) -> Path:
    """Build the decoded cache of cfg.data.manifest when it is missing; return its folder.

    A complete cache is left alone (open_cache refuses it later if it is stale). Under a
    multi-process launch (torchrun/SLURM) the cache must exist beforehand: every rank building it
    at once would race, so that case is an error naming the command to run.
    """
    cache = cache_dir_of(cfg)
    if (cache / "meta.json").is_file():
        return cache
    if world_size_from_env() > 1:
        raise CacheError(f"no cache at {cache}; build it once before a multi-process launch: "
                         f"medssl cache {cfg.data.manifest} --out {cache} --size {cfg.cache.size}")
    from medssl.cache import build_cache
    from medssl.manifest import load

    if df is None:
        df = load(cfg.data.manifest, data_root=cfg.data.data_root)
    log.info("building the decoded cache at %s (one-time)", cache)
    build_cache(df, cache, data_root=df.attrs.get("data_root"), size=cfg.cache.size, dtype=cfg.cache.dtype,
                window=cfg.cache.window, shard_size=cfg.cache.shard_size, workers=cfg.cache.workers,
                on_error=cfg.cache.on_error)
    return cache


def open_images(cfg, df: pd.DataFrame, rows: np.ndarray):
    """The cache reader for manifest rows `rows` (positions in `df`, the whole manifest).

    Refuses a cache that is missing, stale for the manifest, or built with other size/dtype/window.
    """
    from medssl.cache import open_cache

    cache = cache_dir_of(cfg)
    if not (cache / "meta.json").is_file():
        raise CacheError(f"no complete cache at {cache}; build it with "
                         f"`medssl cache {cfg.data.manifest} --out {cache} --size {cfg.cache.size}`")
    return open_cache(cache, df, size=cfg.cache.size, dtype=cfg.cache.dtype, window=cfg.cache.window, rows=rows)


def world_size_from_env() -> int:
    """World size a launcher (torchrun, SLURM) announced, before any process group exists."""
    for key in ("WORLD_SIZE", "SLURM_NTASKS"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 1
