"""Kill-safe training logs: Lightning's CSV logger with every file written through medssl.atomic.

Lightning's CSVLogger appends rows to `metrics.csv` in place, so a SIGKILL mid-flush can leave a cut
last row. `AtomicCSVLogger` keeps the same layout (`<save_dir>/<name>/version_N/metrics.csv` and
`hparams.yaml`, same columns and row format) but rewrites the whole file on each flush to a temp file
that is fsynced and renamed: a reader sees the previous complete file or the new complete one.

Lightning flushes after every logged step; rewriting a growing file that often would cost O(rows^2),
so a flush is skipped while less than REWRITE_COST_RATIO x the last rewrite's duration has passed
(rewrites take at most ~5% of the run however long it gets). Skipped rows are written by the next
flush, and always at each checkpoint save (`FlushLogsAfterCheckpoint`) and at the end of the run, so a
run killed and resumed from its last checkpoint has every step in its CSV logs (the resumed run logs
the steps after the checkpoint again, in a new version).

TensorBoard needs no such care: its event files are append-only records, each framed with a length
and CRCs, and readers skip a cut last record, so a killed run loses at most that record.
"""

from __future__ import annotations

import csv
import os
from time import monotonic as _now
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from medssl.atomic import atomic_path


def _write_rows(file, fieldnames: list[str], rows: list[dict]) -> None:
    """Header + rows, exactly as Lightning's writer formats them."""
    writer = csv.DictWriter(file, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(rows)


#: A throttled flush waits this many times as long as the last rewrite took (~5% of the time).
REWRITE_COST_RATIO = 20


class AtomicExperimentWriter(ExperimentWriter):
    """Holds this version's rows and rewrites `metrics.csv` whole (temp + fsync + rename) on `save()`.

    Memory grows with the number of logged rows (one per `log_every_n_steps` steps), small next to a
    checkpoint. `save()` may skip a flush (see the module doc); `save(force=True)` never does.
    """

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir=log_dir)
        self.saved_rows: list[dict[str, Any]] = []
        self._last_end = self._last_seconds = 0.0

    def save(self, force: bool = False) -> None:
        if not self.metrics:
            return
        if not force and _now() - self._last_end < REWRITE_COST_RATIO * self._last_seconds:
            return
        start = _now()
        self._record_new_keys()
        rows = self.saved_rows + self.metrics
        with atomic_path(self.metrics_file_path) as tmp, open(tmp, "w", newline="") as f:
            _write_rows(f, self.metrics_keys, rows)
        # only after the rename: a failed flush keeps its rows for the next one
        self.saved_rows, self.metrics = rows, []
        self._last_end = _now()
        self._last_seconds = self._last_end - start

    def log_hparams(self, params: dict[str, Any]) -> None:
        self.hparams.update(params)
        with atomic_path(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE)) as tmp:
            save_hparams_to_yaml(tmp, self.hparams)


class AtomicCSVLogger(CSVLogger):
    """`lightning.pytorch.loggers.CSVLogger` whose files are only ever replaced whole (see module doc)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AtomicExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AtomicExperimentWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def flush(self) -> None:
        """Write every row logged so far, now (`save()` may defer them)."""
        if self._experiment is not None:
            self._experiment.save(force=True)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.flush()


class FlushLogsAfterCheckpoint(Callback):
    """Flush the CSV logs (forced) at the first batch after each checkpoint save.

    Lightning logs a step's row after the batch-end hooks that save the checkpoint, so flushing at the
    next batch start puts every step up to the checkpoint on disk: a run killed later and resumed from
    that checkpoint has no gap in its CSV logs.
    """

    def __init__(self) -> None:
        self._pending = False

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._pending = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._pending:
            for logger in trainer.loggers:
                (logger.flush if isinstance(logger, AtomicCSVLogger) else logger.save)()
            self._pending = False
