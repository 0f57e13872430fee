"""Checkpoints and logs: kill-and-resume equivalence, atomic saves and log flushes, weights-only loading,
resume guards."""

from __future__ import annotations

import errno
import pickle
import shutil
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch
import yaml

from medssl.errors import CheckpointError, OutputError
from medssl.ssl.checkpoint import AtomicCheckpointIO, rng_state, set_rng_state
from medssl.ssl.train import resolve_resume, run_pretrain
from tests.ssl._pretrain_data import step_losses, tiny_config, tiny_dataset


class Killed(RuntimeError):
    pass


class KillAt(pl.Callback):
    """Dies at the end of optimizer step `step`, like a SIGKILL after that step's work.

    An exception lets Lightning flush its loggers, a SIGKILL does not: `restore_logs()` puts the
    run's logs folder back as it was on disk at the moment of the kill.
    """

    def __init__(self, step: int, logs: Path):
        self.step, self.logs, self.snapshot = step, Path(logs), Path(str(logs) + ".at_kill")

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            shutil.copytree(self.logs, self.snapshot)
            raise Killed(f"killed after step {self.step}")

    def restore_logs(self) -> None:
        shutil.rmtree(self.logs)
        shutil.copytree(self.snapshot, self.logs)


def logged_steps(metrics_csv: Path) -> list[int]:
    """Steps with a train_loss_step row, in file order; every line of the file is a whole row."""
    text = metrics_csv.read_text()
    lines = text.splitlines()
    assert text.endswith("\n") and len({line.count(",") for line in lines}) == 1, f"cut row in {metrics_csv}"
    df = pd.read_csv(metrics_csv)
    return df.loc[df["train_loss_step"].notna(), "step"].astype(int).tolist()


def test_killed_run_resumes_to_the_same_loss_curve(tmp_path, monkeypatch):
    from medssl.ssl import logs

    # a long run's CSV log: Lightning's per-step flushes are all deferred, only checkpoints force one
    monkeypatch.setattr(logs, "REWRITE_COST_RATIO", 1e9)
    data = tiny_dataset(tmp_path)  # 32 train images, batch 8: 4 steps per epoch
    common = ("ssl.method=mocov2", "trainer.max_steps=8", "trainer.checkpoint_every_n_steps=3")
    straight = run_pretrain(tiny_config(data, tmp_path / "straight", *common))
    assert straight.global_step == 8

    run = tmp_path / "killed"
    kill = KillAt(7, run / "logs")
    with pytest.raises(Killed):
        run_pretrain(tiny_config(data, run, *common), extra_callbacks=[kill])
    kill.restore_logs()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    # saved at step 6 (every 3 steps), mid-epoch 1: the run lost step 7 and resumes inside an epoch
    assert ckpt["global_step"] == 6
    assert ckpt["PretrainDataModule"] == {"epoch": 1, "batch": 2}
    assert {"queue", "queue_patient", "queue_ptr"} <= {k.split(".")[-1] for k in ckpt["state_dict"]}
    assert ckpt["optimizer_states"] and ckpt["lr_schedulers"] and "medssl_rng" in ckpt

    resumed = run_pretrain(tiny_config(data, run, *common), resume=True)
    assert resumed.global_step == 8

    a, b = step_losses(tmp_path / "straight"), step_losses(run)
    assert sorted(a) == list(range(8))
    # each version logs each of its steps once; the killed one had flushed every step up to its
    # checkpoint (step 6 = rows 0..5), the resumed one logs from there: no gap, no repeat
    versions = sorted((run / "logs" / "csv").glob("version_*/metrics.csv"))
    assert [p.parent.name for p in versions] == ["version_0", "version_1"]
    assert [logged_steps(p) for p in versions] == [list(range(6)), [6, 7]]
    for step in sorted(b):
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), f"step {step}"
    sa = torch.load(straight.last_checkpoint, weights_only=True)["state_dict"]
    sb = torch.load(resumed.last_checkpoint, weights_only=True)["state_dict"]
    for key in ("model.queue", "model.encoder.net.conv1.weight", "model.encoder_k.net.conv1.weight"):
        torch.testing.assert_close(sa[key], sb[key], rtol=1e-5, atol=1e-6)


def test_resume_refuses_a_checkpoint_of_another_architecture(tmp_path):
    data = tiny_dataset(tmp_path)
    run = tmp_path / "run"
    run_pretrain(tiny_config(data, run, "trainer.max_steps=1"))
    with pytest.raises(CheckpointError, match="model.arch"):
        run_pretrain(tiny_config(data, run, "trainer.max_steps=2", "model.arch=resnet34"), resume=True)


class ExplodingPickle:
    def __reduce__(self):
        raise RuntimeError("disk vanished mid-save")


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.arange(4.0)}, "global_step": 1}, path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="mid-save"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(1000)}, "bad": ExplodingPickle()}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temp file left behind
    assert io.load_checkpoint(path)["global_step"] == 1


class Payload:
    """A pickled object a weights-only load must refuse to reconstruct."""


def test_loading_is_weights_only(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="weights-only"):
        AtomicCheckpointIO().load_checkpoint(path)


def test_rng_state_survives_a_weights_only_round_trip(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (torch.rand(3), np.random.rand(3), random.random())
    torch.testing.assert_close(got[0], expected[0])
    assert np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_fresh_run_never_clobbers_checkpoints(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    assert resolve_resume(tmp_path, None) is None
    assert resolve_resume(tmp_path, "auto") is None  # auto: nothing to resume, start fresh
    with pytest.raises(CheckpointError, match="no checkpoint written"):
        resolve_resume(tmp_path, True)  # an explicit --resume insists on a checkpoint
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(OutputError, match="--resume"):
        resolve_resume(tmp_path, None)
    assert resolve_resume(tmp_path, True) == tmp_path / "checkpoints" / "last.ckpt"
    assert resolve_resume(tmp_path, "auto") == tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_resume(tmp_path, str(tmp_path / "nope.ckpt"))


# ----------------------------------------------------------------------------- kill-safe logs
def test_metrics_csv_is_replaced_whole_and_a_failed_flush_keeps_the_last_complete_file(tmp_path, monkeypatch):
    from medssl.ssl import logs

    logger = logs.AtomicCSVLogger(tmp_path, name="csv")
    for step in range(3):
        logger.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    logger.flush()
    path = tmp_path / "csv" / "version_0" / "metrics.csv"  # Lightning's layout
    before = path.read_bytes()
    assert pd.read_csv(path)["step"].tolist() == [0, 1, 2]

    real = logs._write_rows

    def dies_half_way(f, fieldnames, rows):  # a full disk (or a kill) in the middle of a flush
        real(f, fieldnames, rows[: len(rows) // 2])
        f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(logs, "_write_rows", dies_half_way)
    for step in range(3, 6):  # a new column: the header changes too
        logger.log_metrics({"loss": 1.0 / (step + 1), "lr": 0.1 * step}, step=step)
    with pytest.raises(OutputError, match="disk is full"):
        logger.flush()
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["metrics.csv"]  # no temp file left behind

    monkeypatch.setattr(logs, "_write_rows", real)
    logger.flush()  # the failed flush's rows are written by the next one, each once
    df = pd.read_csv(path)
    assert list(df.columns) == ["loss", "lr", "step"] and df["step"].tolist() == list(range(6))
    assert df["loss"].tolist() == pytest.approx([1 / (s + 1) for s in range(6)])
    assert df["lr"].isna().tolist() == [True] * 3 + [False] * 3


def test_lightnings_flush_after_every_logged_step_is_throttled_by_the_rewrite_cost(tmp_path, monkeypatch):
    from medssl.ssl import logs

    clock = [100.0]
    monkeypatch.setattr(logs, "_now", lambda: clock[0])
    real = logs._write_rows

    def takes_a_second(f, fieldnames, rows):
        real(f, fieldnames, rows)
        clock[0] += 1.0

    monkeypatch.setattr(logs, "_write_rows", takes_a_second)
    logger = logs.AtomicCSVLogger(tmp_path, name="csv")
    path = tmp_path / "csv" / "version_0" / "metrics.csv"

    def saved():
        return pd.read_csv(path)["step"].tolist()

    logger.log_metrics({"loss": 1.0}, step=0)
    logger.save()  # what Lightning calls after each logged step
    assert saved() == [0]
    clock[0] += 19.0  # 19 s after a 1 s rewrite: too soon (ratio 20), the row waits in memory
    logger.log_metrics({"loss": 0.5}, step=1)
    logger.save()
    assert saved() == [0]
    clock[0] += 1.0
    logger.log_metrics({"loss": 0.25}, step=2)
    logger.save()
    assert saved() == [0, 1, 2]
    logger.log_metrics({"loss": 0.125}, step=3)
    logger.save()
    assert saved() == [0, 1, 2]
    logger.finalize("success")  # the end of a run writes everything
    assert saved() == [0, 1, 2, 3]


def test_hparams_yaml_is_replaced_whole(tmp_path, monkeypatch):
    from medssl.ssl import logs

    logger = logs.AtomicCSVLogger(tmp_path, name="csv")
    logger.log_hyperparams({"config": {"ssl": {"method": "mocov2"}}})
    path = tmp_path / "csv" / "version_0" / "hparams.yaml"
    before = path.read_text()
    assert yaml.safe_load(before) == {"config": {"ssl": {"method": "mocov2"}}}

    def dies_half_way(target, hparams, *args, **kwargs):
        Path(target).write_text("config:\n  ssl: {meth")
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(logs, "save_hparams_to_yaml", dies_half_way)
    with pytest.raises(OutputError, match=str(path)):
        logger.log_hyperparams({"lr": 0.1})
    assert path.read_text() == before
    assert [p.name for p in path.parent.iterdir()] == ["hparams.yaml"]
