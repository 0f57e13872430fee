"""Checkpoints: kill-and-resume equivalence, atomic saves, weights-only loading, resume guards."""

from __future__ import annotations

import pickle

import lightning.pytorch as pl
import pytest
import torch

from medssl.errors import CheckpointError, OutputError
from medssl.ssl.checkpoint import AtomicCheckpointIO, rng_state, set_rng_state
from medssl.ssl.train import resolve_resume, run_pretrain
from tests.ssl._pretrain_data import step_losses, tiny_config, tiny_dataset


class Killed(RuntimeError):
    pass


class KillAt(pl.Callback):
    """Dies at the end of optimizer step `step`, like a SIGKILL after that step's work."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            raise Killed(f"killed after step {self.step}")


def test_killed_run_resumes_to_the_same_loss_curve(tmp_path):
    data = tiny_dataset(tmp_path)  # 32 train images, batch 8: 4 steps per epoch
    common = ("ssl.method=mocov2", "trainer.max_steps=8", "trainer.checkpoint_every_n_steps=3")
    straight = run_pretrain(tiny_config(data, tmp_path / "straight", *common))
    assert straight.global_step == 8

    run = tmp_path / "killed"
    with pytest.raises(Killed):
        run_pretrain(tiny_config(data, run, *common), extra_callbacks=[KillAt(7)])
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
    assert set(range(6, 8)) <= set(b)  # the resumed steps were logged
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
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(OutputError, match="--resume"):
        resolve_resume(tmp_path, None)
    assert resolve_resume(tmp_path, True) == tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_resume(tmp_path, str(tmp_path / "nope.ckpt"))
