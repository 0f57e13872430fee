"""Helpers of the hospital tests: PHI sentinels, running `medssl` as a user would, clean-error checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: Unique header values per patient ({i} = patient index); the phantom never puts them in file names.
PHI_SPEC = {
    "PatientName": "Zqxsurname{i}^Zqxgiven",
    "PatientID": "ZQXMRN{i:04d}",
    "AccessionNumber": "ZQXACC{i:05d}",
    "PatientBirthDate": "18870419",
    "InstitutionName": "Zqx Sentinel Memorial Hospital",
    "ReferringPhysicianName": "Zqxreferrer^Doctor",
}
#: What must never appear in an output (prefixes catch every patient's value).
NEEDLES = ["Zqxsurname", "Zqxgiven", "ZQXMRN", "ZQXACC", "18870419", "1887-04-19",
           "Zqx Sentinel Memorial", "Zqxreferrer"]


def medssl_env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def medssl_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "medssl.cli", *map(str, args)]


def medssl(*args, log_dir: Path | None = None, name: str | None = None, timeout: float = 300,
           env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """Run `medssl ARGS` in a subprocess; with log_dir, stdout/stderr are kept as <name>.out/.err there."""
    proc = subprocess.run(medssl_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          env=env or medssl_env(), cwd=REPO, check=False)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        stem = name or str(args[0])
        (log_dir / f"{stem}.out").write_text(proc.stdout)
        (log_dir / f"{stem}.err").write_text(proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"medssl {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def assert_clean_error(proc: subprocess.CompletedProcess, *must_name: str, code: int | None = None) -> str:
    """Non-zero exit, one `medssl ...: error:` line naming each of must_name, and no traceback."""
    err = proc.stderr
    assert proc.returncode != 0, f"expected a failure, got 0:\n{proc.stdout[-2000:]}"
    if code is not None:
        assert proc.returncode == code, (proc.returncode, err[-2000:])
    assert "Traceback" not in err, err[-4000:]
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert lines, err[-2000:]
    for name in must_name:
        assert str(name) in lines[-1], f"{name!r} not named in: {lines[-1]}"
    return lines[-1]


def kill_when(jobs: list[tuple[subprocess.Popen, object, float]], timeout: float = 120) -> list[int]:
    """SIGKILL each process `delay` seconds after its predicate() turns true; return the exit codes.

    jobs: (process, predicate, delay) run concurrently. A process that ended before its kill keeps
    its own exit code (callers assert -9 to be sure the kill landed).
    """
    import signal
    import time

    deadline = time.monotonic() + timeout
    kill_at: dict[int, float] = {}
    while len(kill_at) < len(jobs) or any(p.poll() is None for p, _, _ in jobs):
        now = time.monotonic()
        assert now < deadline, "timed out waiting for the kill points"
        for i, (proc, predicate, delay) in enumerate(jobs):
            if proc.poll() is not None:
                kill_at.setdefault(i, now)
            elif i not in kill_at and predicate():
                kill_at[i] = now + delay
            elif i in kill_at and now >= kill_at[i]:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
        time.sleep(0.01)
    return [proc.returncode for proc, _, _ in jobs]


#: Log streams that libraries append to in place (TensorBoard events, Lightning's CSV metrics):
#: checked to parse, but their last record may be cut by a kill.
LOG_STREAM_PARTS = ("logs",)


def check_artefacts_complete(root: Path) -> list[Path]:
    """Load every artefact under root by its type; return the temp files a killed writer left behind.

    A file under its final name must be complete: JSON/YAML/CSV/Parquet parse, checkpoints load
    weights-only, NumPy arrays hold the bytes their header declares, PNGs decode.
    """
    import json

    import numpy as np
    import pandas as pd
    import torch
    import yaml
    from PIL import Image

    leftovers = []
    for p in sorted(q for q in Path(root).rglob("*") if q.is_file()):
        name = p.name
        if name.endswith(".tmp"):
            leftovers.append(p)
            continue
        rel = p.relative_to(root)
        try:
            if name.endswith(".json"):
                json.loads(p.read_text())
            elif name.endswith((".yaml", ".yml")):
                yaml.safe_load(p.read_text())
            elif name.endswith((".csv", ".csv.gz")):
                if not (set(rel.parts) & set(LOG_STREAM_PARTS)):
                    assert p.stat().st_size > 0
                    pd.read_csv(p)
            elif name.endswith(".parquet"):
                pd.read_parquet(p)
            elif name.endswith((".ckpt", ".pt")):
                torch.load(p, map_location="cpu", weights_only=True)
            elif name.endswith(".npz"):
                with np.load(p) as z:
                    for k in z.files:
                        z[k]
            elif name.endswith(".npy"):
                np.load(p, mmap_mode="r")
            elif name.endswith(".png"):
                with Image.open(p) as im:
                    im.load()
        except Exception as e:
            raise AssertionError(f"{rel} looks complete (final name) but does not load: {e!r}") from e
    return leftovers


def medssl_many(jobs: list[list], env: dict, timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Run several `medssl` command lines, two at a time (2 cores); results in the order given."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda args: medssl(*args, env=env, timeout=timeout), jobs))
