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


def build_trainer(cfg: Config, *, has_monitor: bool = False, extra_callbacks: Optional[list] = None) -> pl.Trainer:
    """A Trainer configured from `cfg.trainer` with atomic checkpoints and CSV + TensorBoard loggers."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from medssl.ssl.logs import AtomicCSVLogger, FlushLogsAfterCheckpoint

    t = cfg.trainer
    logs = run_dirs(t.output_dir)["logs"]
    # CSV files are replaced whole (kill-safe); TensorBoard's CRC-framed records need no such care (see logs.py)
    loggers = [AtomicCSVLogger(logs, name="csv"), TensorBoardLogger(logs, name="tensorboard", default_hp_metric=False)]
    return pl.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
        precision=resolve_precision(t.precision), max_epochs=t.max_epochs, max_steps=t.max_steps,
        accumulate_grad_batches=t.accumulate_grad_batches, deterministic=t.deterministic,
        log_every_n_steps=t.log_every_n_steps, enable_progress_bar=t.progress_bar,
        callbacks=build_callbacks(cfg, has_monitor=has_monitor) + [FlushLogsAfterCheckpoint()]
        + list(extra_callbacks or []),
        logger=loggers, plugins=[AtomicCheckpointIO()], default_root_dir=t.output_dir,
        use_distributed_sampler=False,  # the data module shards batches per rank itself
        num_sanity_val_steps=0, limit_val_batches=0, enable_model_summary=False,
    )


def run_pretrain(cfg: Config, *, resume: Union[None, bool, str] = None, manifest=None,
                 extra_callbacks: Optional[list] = None) -> PretrainResult:
    """Pretrain (or resume) per `cfg`; writes checkpoints, logs and `<output_dir>/encoder.pt`."""
    from medssl.ssl.data import PretrainDataModule
    from medssl.ssl.module import SSLModule

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
    best = dirs["ckpt"] / f"{BEST}.ckpt"
    return PretrainResult(output_dir=dirs["out"], last_checkpoint=last, best_checkpoint=best if best.exists() else None,
                          encoder=encoder, global_step=trainer.global_step, epoch=trainer.current_epoch)
