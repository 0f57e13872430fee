"""One tiny end-to-end run on DICOM phantoms whose headers carry PHI sentinels, shared by the tests.

source/ (input, holds the PHI) -> `medssl manifest build` -> `medssl demo --data` (split, cache,
SimCLR pretraining, linear-probe study, report) -> finetune, evaluate, export-backbone, split,
augment preview, cache --info, manifest summary and inspect through the CLI. Every command's
stdout/stderr is kept under run/logs/, so the PHI scan sees what a user's terminal and log files see.
Built once per test session, also under pytest-xdist (the first worker builds, the others wait).
"""

from __future__ import annotations

import fcntl
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.hospital.helpers import PHI_SPEC, medssl, medssl_env

SIZE = 32
N_PATIENTS = 16


def common_args(split: Path, cache: Path) -> list[str]:
    """--set arguments pointing finetune/study/augment at the shared split manifest and cache."""
    return ["--set", f"data.manifest={split}", "--set", f"cache.dir={cache}", "--set", f"cache.size={SIZE}",
            "--set", f"model.input_size={SIZE}", "--set", "finetune.epochs=1", "--set", "evaluate.bootstrap=50",
            "--set", "trainer.num_workers=0"]


def _build(base: Path) -> dict:
    from medssl.atomic import write_table
    from medssl.data.phantom import write_phantoms

    t0 = time.perf_counter()
    src, out = base / "source", base / "run"
    env = medssl_env(MEDSSL_HOME=str(base / "home"))
    logs = out / "logs"
    truth = write_phantoms(src, n_patients=N_PATIENTS, size=64, studies_per_patient=(1, 2), phi=PHI_SPEC, seed=3)
    write_table(src / "labels.csv", truth[["path", "Cardiomegaly", "Pleural Effusion"]])
    write_table(base / "truth.csv", truth)  # raw ids and names: outside the scanned run folder

    def run(name, *args):
        return medssl(*args, log_dir=logs, name=name, env=env, check=True)

    run("manifest_build", "manifest", "build", "--format", "dicom-dir", src, "--labels", src / "labels.csv",
        "--out", out / "manifest.csv")
    demo = out / "demo"
    run("demo", "demo", "--data", out / "manifest.csv", "--out", demo, "--size", SIZE, "--input-size", SIZE,
        "--pretrain-epochs", 1, "--finetune-epochs", 1, "--methods", "simclr", "--modes", "linear",
        "--seeds", 0, "--budgets", "4,8", "--set", "trainer.batch_size=4", "--set", "ssl.queue_size=16",
        "--set", "evaluate.bootstrap=50", "--set", "trainer.checkpoint_every_n_steps=2",
        "--set", "trainer.log_every_n_steps=1")
    split = demo / "manifest.split.csv"
    pretrain = demo / "study" / "pretrain" / "simclr"   # the study pretrains its spec inits there
    common = common_args(split, demo / f"cache-{SIZE}")
    cells = demo / "study" / "cells"
    first = src / truth["path"].iloc[0]
    rest = [
        ("finetune_full", "finetune", *common, "--init", pretrain / "encoder.pt", "--mode", "full",
         "--budget", 8, "--seed", 0, "--out", out / "finetune_full"),
        ("evaluate", "evaluate", cells / "simclr__linear__8__seed0" / "predictions.csv",
         "--compare", cells / "random__linear__8__seed0" / "predictions.csv", "--out", out / "evaluate",
         "--set", "evaluate.bootstrap=50"),
        ("export_backbone", "export-backbone", pretrain / "checkpoints" / "last.ckpt", "--out",
         out / "export" / "encoder.pt"),
        ("split", "split", out / "manifest.csv", "--out", out / "cli_split" / "manifest.split.parquet",
         "--val", 0.2, "--test", 0.2, "--budgets", 4, "--seeds", 0),
        ("augment_preview", "augment", "preview", *common, "--n", 2, "--views", 2, "--out", out / "preview.png"),
        ("cache_info", "cache", "--info", demo / f"cache-{SIZE}"),
        ("manifest_summary", "manifest", "summary", split),
        ("inspect", "inspect", first, "--header"),
    ]
    with ThreadPoolExecutor(2) as pool:  # independent commands, two at a time (2 cores)
        list(pool.map(lambda job: run(*job), rest))
    info = {"base": base, "source": src, "out": out, "demo": demo, "split": split, "pretrain": pretrain,
            "cache": demo / f"cache-{SIZE}", "first_dicom": first, "seconds": round(time.perf_counter() - t0, 1)}
    return {k: str(v) if isinstance(v, Path) else v for k, v in info.items()}


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory, worker_id) -> dict:
    """Paths of the shared run (Path values), its env for subprocesses and common --set args."""
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":  # pytest-xdist: one build shared by all workers of this session
        root = root.parent
    base = root / "hospital"
    ready = base / "ready.json"
    with open(root / "hospital.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not ready.is_file():
                base.mkdir(parents=True, exist_ok=True)
                from medssl.atomic import write_json

                write_json(ready, _build(base))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    info = json.loads(ready.read_text())
    out = {k: Path(v) if isinstance(v, str) else v for k, v in info.items()}
    out["env"] = medssl_env(MEDSSL_HOME=str(out["base"] / "home"))
    out["common"] = common_args(out["split"], out["cache"])
    return out


@pytest.fixture(scope="session")
def worker_id(request) -> str:
    """pytest-xdist's worker id ("gw0", ...), or "master" without xdist."""
    return getattr(request.config, "workerinput", {}).get("workerid", "master")
