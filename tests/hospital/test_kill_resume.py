"""SIGKILL real `medssl pretrain` / `medssl study` processes at several moments, rerun the same command,
and get the uninterrupted result. (tests/ssl/test_resume.py covers in-process resume equivalence;
this is the operator's view: a killed process, files on disk, the command rerun.) Each kill point
kills the run the previous kill left behind."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.hospital.helpers import check_artefacts_complete, kill_when, medssl_cmd
from tests.ssl._pretrain_data import step_losses


def _popen(args, env) -> subprocess.Popen:
    return subprocess.Popen(medssl_cmd(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]


def _step(ckpt: Path) -> int:
    return torch.load(ckpt, weights_only=True)["global_step"]


def _replaced(ckpt: Path):
    """A predicate: true once `ckpt` differs from the file first seen (the next periodic save)."""
    first = {}

    def check() -> bool:
        try:
            mtime = ckpt.stat().st_mtime_ns
        except FileNotFoundError:
            return False
        first.setdefault("t", mtime)
        return mtime != first["t"]
    return check


def test_pretraining_killed_twice_resumes_to_the_uninterrupted_weights(pipeline, tmp_path):
    """Reference: the shared demo run's SimCLR pretraining (1 epoch = 8 steps, last.ckpt every 2 steps)."""
    env, straight = pipeline["env"], pipeline["pretrain"]
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    n_steps = a["global_step"]
    assert n_steps >= 6
    run = tmp_path / "killed"
    args = ["pretrain", "-c", straight / "config.yaml", "--set", f"trainer.output_dir={run}"]
    last = run / "checkpoints" / "last.ckpt"

    # kill 1: the moment the first checkpoint lands
    assert kill_when([(_popen(args, env), last.exists, 0.0)]) == [-9]
    check_artefacts_complete(run)
    assert not (run / "encoder.pt").exists()  # the run did not finish, and nothing claims it did
    first = _step(last)

    # kill 2: the resumed run, at a random moment after its next save (mid-step or mid-save)
    delay = random.Random(11).uniform(0.0, 0.15)
    assert kill_when([(_popen(args + ["--resume"], env), _replaced(last), delay)]) == [-9], \
        "the run finished before the second kill; make it longer"
    check_artefacts_complete(run)
    second = _step(last)
    assert 0 < first < second < n_steps

    _finish(_popen(args + ["--resume"], env))
    check_artefacts_complete(run)
    b = torch.load(last, weights_only=True)
    assert b["global_step"] == n_steps
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    curve_a, curve_b = step_losses(straight), step_losses(run)
    assert sorted(curve_a) == list(range(n_steps)) and set(range(second, n_steps)) <= set(curve_b)
    for step, loss in curve_b.items():
        assert loss == pytest.approx(curve_a[step], rel=1e-4), f"step {step}"
    enc_a, enc_b = (torch.load(p / "encoder.pt", weights_only=True) for p in (straight, run))
    for key in enc_a:
        torch.testing.assert_close(enc_b[key], enc_a[key], rtol=1e-4, atol=1e-5)


def _results(study_dir: Path) -> pd.DataFrame:
    """results.csv with paths made relative to the study folder and timings dropped."""
    df = pd.read_csv(study_dir / "results.csv")
    df = df.drop(columns=[c for c in df.columns if c.endswith("seconds")])
    for c in df.columns:
        if not pd.api.types.is_numeric_dtype(df[c]):
            df[c] = df[c].astype(str).str.replace(str(study_dir), "<study>", regex=False)
    return df


def test_study_killed_mid_cell_and_after_a_cell_gives_the_same_results(pipeline, tmp_path):
    """Reference: the shared demo run's study (random + SimCLR inits, linear, budgets 4 and 8, seed 0),
    rerun from the demo's own resolved config in a new output folder."""
    env, straight = pipeline["env"], pipeline["demo"] / "study"
    run = tmp_path / "study"
    args = ["study", "-c", pipeline["pretrain"] / "config.yaml", "--set", f"study.output_dir={run}",
            "--set", f"study.inits={{random: random, simclr: {pipeline['pretrain'] / 'encoder.pt'}}}"]

    # kill 1: inside the first cell, once its encoder features start landing on disk
    assert kill_when([(_popen(args, env), lambda: any(run.glob("features/*/*.npz")), 0.0)]) == [-9]
    check_artefacts_complete(run)
    assert not list(run.glob("cells/*.json")) and not (run / "results.csv").exists()

    # kill 2: right after the first finished cell file appears
    assert kill_when([(_popen(args, env), lambda: any(run.glob("cells/*.json")), 0.0)]) == [-9], \
        "the study finished before the second kill"
    check_artefacts_complete(run)
    assert 1 <= len(list(run.glob("cells/*.json"))) < 4 and not (run / "report.md").exists()

    _finish(_popen(args, env))
    want = _results(straight)
    # the demo's study pretrained its encoder inside its own folder; the rerun reads the same file from outside
    want["init_path"] = want["init_path"].str.replace("pretrain/", str(pipeline["pretrain"].parent) + "/", regex=False)
    assert len(want) == 4 and want["mean_auc"].notna().all()
    assert want["mean_auc"].nunique() > 1  # real numbers, not one constant
    pd.testing.assert_frame_equal(_results(run), want)
    assert (run / "report.md").is_file() and (run / "label_efficiency.png").is_file()
