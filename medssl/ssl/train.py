"""Build the Lightning Trainer from a Config and run (or resume) pretraining.

Output layout under `trainer.output_dir`:
  config.yaml                     the resolved config of the (latest) run
  checkpoints/last.ckpt           every `trainer.checkpoint_every_n_steps` steps, each epoch end, at the end
  checkpoints/best.ckpt           best val_auc (when a labeled val split exists) else lowest train loss
  logs/csv/version_N/metrics.csv  per-step loss, lr, pos_sim, neg_sim, feat_std (+ val_auc); each run
                                  (and each resume) writes a new version; replaced whole on every flush
  logs/tensorboard/version_N/     the same for TensorBoard
  encoder.pt + encoder.json       the exported online encoder (plain MONAI state dict + spec)

Devices, nodes, strategy and precision come from TrainerConfig, so the same command runs under
`torchrun` or SLURM unchanged (Lightning reads the launcher's environment).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.plugins import TorchSyncBatchNorm

from medssl.atomic import write_text
from medssl.config import Config, dump_config
from medssl.errors import CheckpointError, OutputError
from medssl.ssl.checkpoint import AtomicCheckpointIO, export_backbone

log = logging.getLogger(__name__)

LAST = "last.ckpt"
BEST = "best"


@dataclass
class PretrainResult:
    output_dir: Path
    last_checkpoint: Path
    best_checkpoint: Optional[Path]
    encoder: Path
    global_step: int
    epoch: int


def run_dirs(output_dir) -> dict:
    out = Path(output_dir)
    return {"out": out, "ckpt": out / "checkpoints", "logs": out / "logs"}


def resolve_precision(precision: str) -> str:
    """`auto`: bf16-mixed on CUDA devices that support it, else 32-true."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


#: `--resume auto`: this run's last.ckpt when it exists, else a fresh start (requeued / preemptible jobs).
AUTO = "auto"


def resolve_resume(output_dir, resume: Union[None, bool, str]) -> Optional[Path]:
    """The checkpoint to resume from: None (fresh run), True (this run's last.ckpt), "auto" (last.ckpt
    if it exists, else None) or a path.

    A fresh run refuses an output_dir that already holds checkpoints, so it never clobbers them.
    """
    last = run_dirs(output_dir)["ckpt"] / LAST
    if resume == AUTO:
        return last if last.is_file() else None
    if resume is None or resume is False:
        if last.exists():
            raise OutputError(f"{output_dir} already holds checkpoints ({last}); continue it with --resume "
                              "(--resume auto in job scripts that may start fresh or continue), "
                              "or choose another --set trainer.output_dir=..., or delete that folder")
        return None
    path = last if resume is True else Path(resume)
    if not path.is_file():
        raise CheckpointError(f"cannot resume: {path} does not exist"
                              + (" (no checkpoint written in this output_dir yet)" if resume is True else ""))
    return path


class SaveLast(Callback):
    """Write checkpoints/last.ckpt every N optimizer steps, at the last batch of each epoch and at max_steps.

    Saving only at batch ends (never in epoch-end hooks) gives Lightning the restart point it
    resumes exactly: the loop counters, our data cursor and the model agree on "after batch k".
    """

    def __init__(self, path, every_n_steps: int):
        self.path, self.every = Path(path), every_n_steps
        self._saved_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._saved_step or step == 0:
            return
        periodic = self.every > 0 and step % self.every == 0
        epoch_end = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        at_max = 0 < trainer.max_steps <= step
        if periodic or epoch_end or at_max:
            trainer.save_checkpoint(self.path, weights_only=False)
            self._saved_step = step


def build_callbacks(cfg: Config, *, has_monitor: bool) -> list[Callback]:
    ckpt_dir = run_dirs(cfg.trainer.output_dir)["ckpt"]
    callbacks: list[Callback] = [SaveLast(ckpt_dir / LAST, cfg.trainer.checkpoint_every_n_steps)]
    monitor, mode = ("val_auc", "max") if has_monitor else ("train_loss_epoch", "min")
    # best.ckpt holds the best weights (for export/fine-tuning); resume from last.ckpt.
    callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename=BEST, monitor=monitor, mode=mode, save_top_k=1,
                                     save_last=False, every_n_epochs=1, save_on_train_epoch_end=True,
                                     enable_version_counter=False, auto_insert_metric_name=False))
    if cfg.trainer.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, cfg.trainer.log_every_n_steps)))
    return callbacks


class GlobalBatchNorm(TorchSyncBatchNorm):
    """Lightning's `sync_batchnorm=True` plugin, also for CPU (gloo) runs.

    On GPUs the same as Lightning's own (torch's SyncBatchNorm). torch (2.13) has no CPU
    SyncBatchNorm (DDP refuses it in a CPU module), so on CPU the layers become
    `medssl.ssl.distributed.CPUSyncBatchNorm`. The device is `device_type`, or (None) the one the
    strategy puts the model on (`apply` runs in the strategy's setup, before the model moves).
    """

    def __init__(self, device_type: Optional[str] = None):
        self.device_type = device_type

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        from medssl.ssl.distributed import to_sync_batchnorm

        device = self.device_type
        if device is None:
            trainer = getattr(model, "_trainer", None)
            device = trainer.strategy.root_device.type if trainer is not None else "cuda"
        return to_sync_batchnorm(model, device)

    def revert(self, model: torch.nn.Module) -> torch.nn.Module:
        from medssl.ssl.distributed import cpu_sync_batchnorm_to_torch

        return super().revert(cpu_sync_batchnorm_to_torch(model))


def is_multi_process(cfg: Config) -> bool:
    """Whether the run has (or may have) several processes: > 1 planned, or a DDP/FSDP strategy."""
    return planned_world_size(cfg) > 1 or str(cfg.trainer.strategy).startswith(("ddp", "fsdp"))


def uses_sync_batchnorm(cfg: Config) -> bool:
    """SyncBN for this run: a multi-process run of a method that wants global BN statistics
    (`medssl.ssl.distributed.wants_sync_batchnorm`: SimCLR, BYOL, triplet; MoCo without shuffle-BN)."""
    from medssl.ssl.distributed import wants_sync_batchnorm

    return is_multi_process(cfg) and wants_sync_batchnorm(cfg.ssl)


def build_trainer(cfg: Config, *, has_monitor: bool = False, extra_callbacks: Optional[list] = None) -> pl.Trainer:
    """A Trainer configured from `cfg.trainer` with atomic checkpoints and CSV + TensorBoard loggers;
    `sync_batchnorm` on when `uses_sync_batchnorm(cfg)` (with the CPU-capable `GlobalBatchNorm`)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from medssl.ssl.logs import AtomicCSVLogger, FlushLogsAfterCheckpoint

    t = cfg.trainer
    logs = run_dirs(t.output_dir)["logs"]
    # CSV files are replaced whole (kill-safe); TensorBoard's CRC-framed records need no such care (see logs.py)
    loggers = [AtomicCSVLogger(logs, name="csv"), TensorBoardLogger(logs, name="tensorboard", default_hp_metric=False)]
    sync_bn = uses_sync_batchnorm(cfg)
    return pl.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
        precision=resolve_precision(t.precision), max_epochs=t.max_epochs, max_steps=t.max_steps,
        accumulate_grad_batches=t.accumulate_grad_batches, deterministic=t.deterministic,
        log_every_n_steps=t.log_every_n_steps, enable_progress_bar=t.progress_bar,
        callbacks=build_callbacks(cfg, has_monitor=has_monitor) + [FlushLogsAfterCheckpoint()]
        + list(extra_callbacks or []),
        sync_batchnorm=sync_bn, logger=loggers, default_root_dir=t.output_dir,
        plugins=[AtomicCheckpointIO()] + ([GlobalBatchNorm()] if sync_bn else []),
        use_distributed_sampler=False,  # the data module shards batches per rank itself
        num_sanity_val_steps=0, limit_val_batches=0, enable_model_summary=False,
    )


def planned_world_size(cfg: Config) -> int:
    """Processes the run will have: the launcher's WORLD_SIZE, else devices x num_nodes (auto: the GPUs)."""
    from medssl.ssl.data import world_size_from_env

    env = world_size_from_env()
    if env > 1:
        return env
    devices = cfg.trainer.devices
    if isinstance(devices, int):
        n = devices
    elif str(devices).isdigit():
        n = int(devices)
    elif cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        n = torch.cuda.device_count()
    else:
        n = 1
    return max(1, n) * max(1, cfg.trainer.num_nodes)


def measure_step_seconds(cfg: Config, datamodule, steps: int = 3) -> float:
    """Seconds per optimizer step of this config on this machine: a few real steps (data + augmentation
    + forward/backward/update) after one warm-up. With DataLoader workers the data part overlaps the
    compute, so the step costs max(compute, data / workers)."""
    import time

    from medssl.ssl.data import EpochPlan, PairBatchDataset, augment_pair_views, augment_where, to_unit_float
    from medssl.ssl.module import SSLModule

    device = torch.device("cuda" if cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
                          else "cpu")
    plan = EpochPlan(datamodule.sampler, cfg.trainer.batch_size)
    where = augment_where(cfg, device.type)
    ds = PairBatchDataset(datamodule.images, plan, seed=cfg.trainer.seed,
                          batch_policy=datamodule.policy if where == "workers" else None)
    module = SSLModule(cfg).to(device).train()
    params = [p for p in module.model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.0, momentum=0.9)
    data_s = compute_s = 0.0
    for i in range(steps + 1):
        t0 = time.perf_counter()
        item = ds[(0, i % plan.n_batches)]
        x = item["images"].to(device)
        g = torch.Generator(device=device).manual_seed(i)
        views = x if x.dtype.is_floating_point else augment_pair_views(datamodule.policy, x, g, item.get("boxes"))
        views = to_unit_float(views)
        t1 = time.perf_counter()
        loss, _ = module.model(views[:, 0:1], views[:, 1:2], item["patient"].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if i:   # the first step warms up allocators and kernels
            data_s += t1 - t0
            compute_s += t2 - t1
    workers = cfg.trainer.num_workers
    data_s, compute_s = data_s / steps, compute_s / steps
    return max(compute_s, data_s / workers) if workers > 0 else compute_s + data_s


def _saved_config(ckpt_path: Path) -> dict:
    from medssl.ssl.checkpoint import checkpoint_config
    from medssl.models.weights import safe_load

    return checkpoint_config(safe_load(ckpt_path), ckpt_path)


def run_pretrain(cfg: Config, *, resume: Union[None, bool, str] = None, manifest=None,
                 extra_callbacks: Optional[list] = None) -> PretrainResult:
    """Pretrain (or resume) per `cfg`; writes checkpoints, logs, `<output_dir>/encoder.pt` and
    `pretrain_summary.json` (what the study's checks read: final loss vs chance, feat_std, samples seen).

    `auto` settings (trainer.max_epochs, ssl.queue_size) and a time budget are resolved here from
    the data (medssl.ssl.recipe); a resumed run takes them from its checkpoint."""
    import time

    from medssl.ssl.data import PretrainDataModule
    from medssl.ssl.module import SSLModule
    from medssl.ssl.recipe import DataSize, resolve_recipe, resolved_from_checkpoint

    t_start = time.perf_counter()
    dirs = run_dirs(cfg.trainer.output_dir)
    ckpt_path = resolve_resume(dirs["out"], resume)
    # said by medssl itself: Lightning's own "Restoring states" line is quieted with its banners
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    else:
        log.info("starting a new run in %s", dirs["out"])
    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    datamodule = PretrainDataModule(cfg, manifest=manifest)
    datamodule.prepare()  # rank-independent; Lightning calls setup() once ranks are known
    from medssl.ssl.data import EpochPlan

    world = planned_world_size(cfg)
    size = DataSize(n_images=datamodule.n_images, n_patients=datamodule.n_patients,
                    batches_per_epoch=EpochPlan(datamodule.sampler, cfg.trainer.batch_size, 0, world).n_batches,
                    world_size=world)
    if ckpt_path:
        cfg = resolved_from_checkpoint(cfg, _saved_config(ckpt_path))
    else:
        step_s = None
        if cfg.trainer.time_budget_min:
            probe_cfg, _ = resolve_recipe(cfg, size, step_seconds=1.0)   # queue resolved; epochs do not matter here
            step_s = measure_step_seconds(probe_cfg, datamodule)
        cfg, notes = resolve_recipe(cfg, size, step_seconds=step_s)
        for note in notes:
            log.info("recipe: %s", note)
    datamodule.cfg = cfg
    module = SSLModule(cfg)
    module.monitor_set = datamodule.monitor
    trainer = build_trainer(cfg, has_monitor=datamodule.monitor is not None, extra_callbacks=extra_callbacks)
    if trainer.is_global_zero:
        write_text(dirs["out"] / "config.yaml", dump_config(cfg))
    # weights_only=True: resuming never unpickles code (checkpoints hold tensors and plain containers only).
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)

    last = dirs["ckpt"] / LAST
    if not last.exists():  # a run that stopped before its first step
        trainer.save_checkpoint(last, weights_only=False)
    encoder = dirs["out"] / "encoder.pt"
    if trainer.is_global_zero:
        export_backbone(last, encoder)
        write_pretrain_summary(dirs["out"] / "pretrain_summary.json", cfg, trainer, size,
                               seconds=time.perf_counter() - t_start)
    best = dirs["ckpt"] / f"{BEST}.ckpt"
    return PretrainResult(output_dir=dirs["out"], last_checkpoint=last, best_checkpoint=best if best.exists() else None,
                          encoder=encoder, global_step=trainer.global_step, epoch=trainer.current_epoch)


def write_pretrain_summary(path: Path, cfg: Config, trainer: pl.Trainer, size, *, seconds: float) -> dict:
    """What a study needs to judge whether pretraining learned: final loss and its chance value, the
    collapse detector, how much data the run saw. Counts only (no ids)."""
    from medssl.atomic import write_json
    from medssl.ssl.recipe import chance_loss

    metrics = trainer.callback_metrics

    def metric(name):
        v = metrics.get(f"{name}_epoch", metrics.get(name))
        return None if v is None else float(v)

    summary = {
        "method": cfg.ssl.method, "pairs": cfg.ssl.pairs, "arch": cfg.model.arch, "input_size": cfg.model.input_size,
        "final_loss": metric("train_loss"), "chance_loss": chance_loss(cfg, size), "feat_std": metric("feat_std"),
        "val_auc": metric("val_auc"), "proj_dim": cfg.ssl.proj_dim,
        "queue_size": cfg.ssl.queue_size if cfg.ssl.method == "mocov2" else None,
        "epochs": int(trainer.current_epoch), "steps": int(trainer.global_step),
        "samples_seen": int(trainer.global_step) * cfg.trainer.batch_size * size.world_size
        * cfg.trainer.accumulate_grad_batches,
        "n_images": size.n_images, "n_patients": size.n_patients, "pretrain_splits": list(cfg.data.pretrain_splits),
        "seconds": round(seconds, 1),
    }
    write_json(path, summary)
    return summary
