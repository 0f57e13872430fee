"""Pretraining defaults that scale with the data: auto epochs, a time budget, a queue sized to the data."""

import json
import math

import pytest
import yaml

from medssl.config import load_config
from medssl.ssl.recipe import (DataSize, auto_queue_size, chance_loss, epochs_for_samples, resolve_recipe,
                               resolved_from_checkpoint)
from tests.ssl._pretrain_data import tiny_config, tiny_dataset


def test_queue_is_a_power_of_two_near_half_the_images():
    assert auto_queue_size(984, 64) == 256          # the embedded demo's train + val images
    assert auto_queue_size(4395, 64) == 2048         # full Kermany without its test split
    assert auto_queue_size(190_000, 256) == 65_536   # CheXpert: the MoCo reference size
    assert auto_queue_size(40, 64) == 64             # never below the global batch


def test_auto_epochs_see_the_minimum_samples_and_a_time_budget_fits_the_measured_steps():
    cfg = load_config(None, ["trainer.batch_size=64", "trainer.min_samples=20000"])
    size = DataSize(n_images=984, n_patients=518, batches_per_epoch=15)
    resolved, notes = resolve_recipe(cfg, size)
    assert resolved.trainer.max_epochs == 21 == epochs_for_samples(cfg, size)   # 21 x 960 >= 20,000 > 20 x 960
    assert resolved.ssl.queue_size == 256 and len(notes) == 2
    timed = load_config(None, ["trainer.batch_size=64", "trainer.time_budget_min=1.5"])
    assert resolve_recipe(timed, size, step_seconds=0.5)[0].trainer.max_epochs == 12   # 90 s / (15 x 0.5 s)
    capped = load_config(None, ["trainer.batch_size=64", "trainer.time_budget_min=1.5", "trainer.max_epochs=5"])
    assert resolve_recipe(capped, size, step_seconds=0.5)[0].trainer.max_epochs == 5
    with pytest.raises(ValueError, match="step time"):
        resolve_recipe(timed, size)
    fixed = load_config(None, ["trainer.max_epochs=7", "ssl.queue_size=1024"])
    assert resolve_recipe(fixed, size) == (fixed, [])


def test_resume_keeps_the_resolved_schedule_unless_numbers_are_given():
    saved = {"ssl": {"queue_size": 256}, "trainer": {"max_epochs": 21}}
    again = resolved_from_checkpoint(load_config(None, ["trainer.time_budget_min=3"]), saved)
    assert (again.ssl.queue_size, again.trainer.max_epochs, again.trainer.time_budget_min) == (256, 21, None)
    longer = resolved_from_checkpoint(load_config(None, ["trainer.max_epochs=40"]), saved)
    assert longer.trainer.max_epochs == 40


def test_chance_loss_is_log_negatives_plus_one():
    size = DataSize(n_images=984, n_patients=518, batches_per_epoch=15, world_size=2)
    assert chance_loss(load_config(None, ["ssl.method=mocov2", "ssl.queue_size=256"]), size) == pytest.approx(
        math.log(257))
    assert chance_loss(load_config(None, ["ssl.method=simclr", "trainer.batch_size=32"]), size) == pytest.approx(
        math.log(127))
    assert chance_loss(load_config(None, ["ssl.method=byol"]), size) is None


def test_auto_run_resolves_once_writes_its_summary_and_resumes_on_the_same_schedule(tmp_path):
    from medssl.ssl.train import run_pretrain

    data = tiny_dataset(tmp_path)
    out = tmp_path / "run"
    cfg = tiny_config(data, out, "trainer.max_epochs=auto", "trainer.min_samples=40", "ssl.queue_size=auto",
                      "ssl.method=mocov2")
    first = run_pretrain(cfg)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    # 32 train images -> 4 batches of 8 per epoch: 2 epochs for >= 40 samples; queue: max(8, 16) = 16
    assert saved["trainer"]["max_epochs"] == 2 and saved["ssl"]["queue_size"] == 16
    summary = json.loads((out / "pretrain_summary.json").read_text())
    assert summary["samples_seen"] == first.global_step * 8 == 64 and summary["n_images"] == 32
    assert summary["chance_loss"] == pytest.approx(math.log(17)) and summary["final_loss"] > 0
    assert summary["queue_size"] == 16 and 0 < summary["feat_std"] < 1
    # resuming an auto run: nothing left to train, the schedule is the checkpoint's
    again = run_pretrain(cfg, resume=True)
    assert again.global_step == first.global_step and again.epoch == first.epoch


def test_a_time_budget_measures_steps_and_sets_the_epochs(tmp_path, caplog):
    import logging

    from medssl.ssl.train import run_pretrain

    data = tiny_dataset(tmp_path)
    out = tmp_path / "timed"
    cfg = tiny_config(data, out, "trainer.time_budget_min=0.02", "trainer.max_epochs=3", "ssl.method=simclr")
    with caplog.at_level(logging.INFO, logger="medssl.ssl.train"):
        result = run_pretrain(cfg)
    note = [r.getMessage() for r in caplog.records if "min at a measured" in r.getMessage()]
    assert note, "the recipe says how it chose the epochs"
    epochs = yaml.safe_load((out / "config.yaml").read_text())["trainer"]["max_epochs"]
    assert 1 <= epochs <= 3 and result.epoch == epochs
