"""Sharded studies: n processes share one grid (a partition, plus per-cell locks), the collected results
equal a single-process study's, missing cells are named, and the shared feature store survives
concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medssl.errors import ConfigError
from medssl.study import locks
from medssl.study.runner import grid, run_cells
from medssl.study.shards import Shard, missing_message, parse_shard, shard_cells
from tests.hospital.helpers import REPO, medssl_cmd, medssl_env
from tests.hospital.test_kill_resume import _results
from tests.study.test_runner import _auc_cell

SIZE = 32


# ----------------------------------------------------------------------------- partition
def test_partition_covers_every_cell_exactly_once():
    cells = list(grid({"random": "random", "moco": ["a.pt", "b.pt"], "byol": "c.pt"}, ["full", "linear", "knn"],
                      [10, 0.5, 100], [0, 1]))
    assert len(cells) == 4 * 3 * 3 * 2
    for n in (1, 2, 3, 5, 7, 16, len(cells), len(cells) + 3):
        shares = [shard_cells(cells, Shard(i, n)) for i in range(n)]
        keys = [c.key for share in shares for c in share]
        assert sorted(keys) == sorted(c.key for c in cells) and len(set(keys)) == len(cells), n
        assert max(map(len, shares)) - min(map(len, shares)) <= 1, n        # balanced
        for i, share in enumerate(shares):                                  # cell k belongs to shard k mod n
            assert [c.key for c in share] == [c.key for k, c in enumerate(cells) if k % n == i]
    # the same config gives the same order, so shards on different machines agree on the partition
    again = list(grid({"random": "random", "moco": ["a.pt", "b.pt"], "byol": "c.pt"}, ["full", "linear", "knn"],
                      [10, 0.5, 100], [0, 1]))
    assert [c.key for c in again] == [c.key for c in cells]


@pytest.mark.parametrize("text", ["3/3", "-1/3", "0/0", "1", "a/b", "1/2/3"])
def test_a_bad_shard_is_a_clear_error(text):
    with pytest.raises(ConfigError, match="--shard"):
        parse_shard(text)


def test_shard_parses_and_names_its_record():
    s = parse_shard(" 2/5 ")
    assert (s.index, s.count, s.label, str(s)) == (2, 5, "2-of-5", "2/5")


# ----------------------------------------------------------------------------- locks
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_held_lock_makes_a_second_runner_skip_and_report_the_cell(tmp_path):
    cells = list(grid({"random": "random"}, ["linear"], [10, 20, 40], [0]))
    first, second, third = (tmp_path / "cells" / f"{c.key}.lock" for c in cells)
    held = locks.acquire(first, shard="0/1")            # a live process (this one) works on cell 0
    assert held.acquired and locks.read_lock(first)["pid"] == os.getpid()
    assert not locks.acquire(first).acquired            # O_EXCL: nobody else gets it
    # cell 1: a lock of a dead process on this host -> taken over (and said so); an hour old, so even a
    # reuse of that pid by a new process is seen as not the holder
    second.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "time": time.time() - 3600,
                                  "token": "old"}))
    # cell 2: another host's lock, older than the timeout -> reported as probably stale, not run
    third.write_text(json.dumps({"host": "node-17", "pid": 4242, "time": time.time() - 7200, "token": "x"}))
    calls = []
    run = run_cells(cells, tmp_path, _auc_cell(calls), lock_timeout_s=3600)
    assert calls == [cells[1].key] and run.ran == [cells[1].key]
    assert [d["key"] for d in run.held] == [cells[0].key] and run.held[0]["pid"] == os.getpid()
    assert [(d["key"], d["host"], d["pid"]) for d in run.stale] == [(cells[2].key, "node-17", 4242)]
    assert run.stale[0]["age_h"] == pytest.approx(2.0, abs=0.05)
    assert [d["key"] for d in run.taken_over] == [cells[1].key]
    assert first.exists() and third.exists() and not second.exists()   # ours released, others' untouched
    # a younger lock of another host is held (probably running), not stale
    third.write_text(json.dumps({"host": "node-17", "pid": 4242, "time": time.time() - 60, "token": "x"}))
    run = run_cells(cells, tmp_path, _auc_cell(calls), lock_timeout_s=3600)
    assert run.ran == [] and run.done == [cells[1].key] and {d["key"] for d in run.held} == {cells[0].key,
                                                                                            cells[2].key}
    # released / removed: the next run does the rest
    held.release()
    third.unlink()
    assert not first.exists()
    run = run_cells(cells, tmp_path, _auc_cell(calls))
    assert sorted(run.ran) == sorted([cells[0].key, cells[2].key]) and not list(tmp_path.glob("cells/*.lock"))


def test_lock_holder_liveness_sees_dead_and_reused_pids_and_reboots():
    me = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), "boot_id": locks._boot_id()}
    assert locks.holder_alive(me)
    assert not locks.holder_alive({**me, "pid": _dead_pid()})
    if locks._process_start(os.getpid()) is not None:      # Linux /proc: this pid, but a lock from before it started
        assert not locks.holder_alive({**me, "time": locks._process_start(os.getpid()) - 3600})
    if me["boot_id"]:
        assert not locks.holder_alive({**me, "boot_id": "another-boot"})


def test_a_failing_cell_releases_its_lock(tmp_path):
    cells = list(grid({"random": "random"}, ["linear"], [10], [0]))

    def boom(cell, d):
        raise RuntimeError("cell failed")

    with pytest.raises(RuntimeError):
        run_cells(cells, tmp_path, boom)
    assert not list(tmp_path.glob("cells/*"))


def test_missing_cells_are_listed_by_the_shard_that_owns_them(tmp_path):
    cells = list(grid({"random": "random", "ssl": "s.pt"}, ["linear"], [10, 20], [0, 1]))
    (tmp_path / "shards").mkdir()
    for i in range(3):
        (tmp_path / "shards" / f"{i}-of-3.json").write_text("{}")
    text = missing_message(tmp_path, cells, [cells[1], cells[4], cells[5]])
    assert text.startswith("3 of 8 cells have no result file")
    assert f"shard 1/3 (2): {cells[1].key}, {cells[4].key}" in text and f"shard 2/3 (1): {cells[5].key}" in text


# ----------------------------------------------------------------------------- feature store, 2 writers
def _feature_writer(root: str, seed: int, barrier, n_rounds: int) -> None:
    from medssl.finetune.features import FeatureStore

    rng = np.random.default_rng(seed)
    store = FeatureStore(root, "enc", {"who": "test"})
    barrier.wait()
    for _ in range(n_rounds):
        rows = rng.choice(400, size=int(rng.integers(5, 120)), replace=False)
        got = store.get("train", rows, lambda missing: np.stack([missing, -missing, missing * 0.5], 1))
        if not np.array_equal(got, np.stack([rows, -rows, rows * 0.5], 1).astype(np.float32)):
            os._exit(3)   # wrong features for the rows asked: the parent sees exit code 3


def test_two_processes_writing_one_feature_file_lose_work_at_most(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_feature_writer, args=(str(tmp_path), s, barrier, 60)) for s in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    with np.load(tmp_path / "enc" / "train.npz") as z:          # complete, consistent, sorted
        rows, feats = z["rows"], z["features"]
    assert rows.size > 100 and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(feats, np.stack([rows, -rows, rows * 0.5], 1).astype(np.float32))
    assert not list((tmp_path / "enc").glob("*.tmp")) and json.loads((tmp_path / "enc" / "key.json").read_text())


# ----------------------------------------------------------------------------- a real sharded study
def _write_data(base: Path) -> dict:
    """80 PNGs (40 patients) whose top/left halves are a little brighter for labels A/B (weak signal, so
    the AUCs differ between cells), their manifest, and a saved random ResNet-18 as a second init."""
    import torch
    from PIL import Image

    from medssl.manifest import save
    from medssl.models.backbones import build_encoder
    from tests.finetune.conftest import make_dataset

    base.mkdir(parents=True, exist_ok=True)
    manifest, _ = make_dataset(n_patients=40, size=SIZE)
    rng = np.random.default_rng(5)
    img = rng.normal(110, 40, (len(manifest), SIZE, SIZE))
    img[manifest["A"].to_numpy() == 1, : SIZE // 2, :] += 12
    img[manifest["B"].to_numpy() == 1, :, : SIZE // 2] += 10
    for path, im in zip(manifest["path"], np.clip(img, 0, 255).astype(np.uint8)):
        Image.fromarray(im).save(base / path)
    save(manifest, base / "manifest.csv")
    torch.manual_seed(123)
    torch.save(build_encoder("resnet18", 1, SIZE).net.state_dict(), base / "encoder.pt")
    return {"manifest": base / "manifest.csv", "encoder": base / "encoder.pt", "cache": base / "cache"}


def _sets(data: dict, out: Path, inits: str | None = None) -> list[str]:
    return ["--set", f"data.manifest={data['manifest']}", f"cache.dir={data['cache']}", f"cache.size={SIZE}",
            f"model.input_size={SIZE}", "study.budgets=[16,32]", "study.seeds=[0,1]", "study.modes=[linear,knn]",
            inits or f"study.inits={{random: random, tiny: {data['encoder']}}}", "evaluate.bootstrap=50",
            "trainer.num_workers=0", "trainer.progress_bar=false", f"study.output_dir={out}"]


def test_a_shard_needs_the_shared_inputs_prepared_first(tmp_path, capsys):
    from medssl.cli import main

    data = _write_data(tmp_path / "data")
    spec = "study.inits={random: random, simclr: {pretrain: {ssl.method: simclr}}}"
    assert main(["study", "--shard", "0/2", *_sets(data, tmp_path / "study", spec)]) == 2
    err = capsys.readouterr().err
    assert "medssl study --prepare" in err and f"no decoded cache at {data['cache']}" in err
    assert "init simclr (pretraining seed 0) is not pretrained yet" in err and "no budgets table" in err
    assert not (tmp_path / "study" / "cells").exists() and not data["cache"].exists()   # nothing was built
    assert main(["study", "--shard", "2/2", *_sets(data, tmp_path / "study")]) == 2
    assert "0 <= INDEX < 2" in capsys.readouterr().err
    assert main(["study", "--allow-incomplete", *_sets(data, tmp_path / "study")]) == 2


# 16 test images: some bootstrap resamples hold one class of a label, whose AUC is then undefined
@pytest.mark.filterwarnings("ignore:Mean of empty slice")
def test_three_shard_processes_then_collect_equal_one_process_study(tmp_path, capsys):
    """3 concurrent `medssl study --shard i/3` processes + `--collect` give the results.csv (and summary,
    paired statistics) of one `medssl study` process on the same config, except timings."""
    from medssl.cli import main

    data = _write_data(tmp_path / "data")
    sharded, single = tmp_path / "sharded", tmp_path / "single"
    assert main(["study", "--prepare", *_sets(data, sharded)]) == 0       # budgets + cache, once
    env = medssl_env()
    procs = [subprocess.Popen(medssl_cmd("study", "--shard", f"{i}/3", *_sets(data, sharded)), env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(3)]
    errs = [p.communicate(timeout=240)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(e[-2000:] for e in errs)
    assert not (sharded / "results.csv").exists() and not (sharded / "report.md").exists()   # shards never report
    records = [json.loads((sharded / "shards" / f"{i}-of-3.json").read_text()) for i in range(3)]
    assert all(r["status"] == "finished" and r["complete"] and r["ran"] == r["cells"] for r in records)
    ran = [k for r in records for k in r["ran"]]
    assert len(ran) == len(set(ran)) == 16                              # every cell once, by one shard
    assert not list(sharded.glob("cells/*.lock"))

    assert main(["study", "--collect", *_sets(data, sharded)]) == 0
    assert main(["study", *_sets(data, single)]) == 0                   # the reference: one process
    want = _results(single)
    assert len(want) == 16 and want["mean_auc"].nunique() > 8 and "diff_vs_random" in want
    pd.testing.assert_frame_equal(_results(sharded), want)
    for name in ("summary.csv", "paired.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(sharded / name), pd.read_csv(single / name))
    assert (sharded / "report.html").is_file() and (sharded / "label_efficiency.png").is_file()

    # a lost cell: --collect names it and its shard, exits non-zero; --allow-incomplete reports the rest
    lost = records[1]["cells"][2]
    (sharded / "cells" / f"{lost}.json").rename(tmp_path / "lost.json")
    capsys.readouterr()
    assert main(["study", "--collect", *_sets(data, sharded)]) == 2
    err = capsys.readouterr().err
    assert "1 of 16 cells have no result file" in err and f"shard 1/3 (1): {lost}" in err
    assert main(["study", "--collect", "--allow-incomplete", *_sets(data, sharded)]) == 0
    assert lost in capsys.readouterr().err
    assert len(pd.read_csv(sharded / "results.csv")) == 15
    assert f"Incomplete study: 1 of 16 cells have no result yet ({lost})" in (sharded / "report.md").read_text()
    # rerunning that shard runs exactly the lost cell
    assert main(["study", "--shard", "1/3", *_sets(data, sharded)]) == 0
    record = json.loads((sharded / "shards" / "1-of-3.json").read_text())
    assert record["ran"] == [lost] and len(record["already_done"]) == len(record["cells"]) - 1
    shutil.rmtree(tmp_path / "data" / "cache")   # keep the tmp folder small
