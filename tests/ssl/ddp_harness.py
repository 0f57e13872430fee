"""The one way the DDP tests launch ranks: `launch(worker_module, ...)` starts WORLD gloo processes
running `python -m <worker_module> RANK PORT OUT`, computes the 1-process reference meanwhile,
and returns (reference, [rank results]). A worker module defines `run_all(rank, world)` and calls
`worker_main(run_all, world)` under `__main__`."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_main(run_all, world: int) -> None:
    """Entry point of a worker process: argv = RANK PORT OUT_DIR; writes OUT_DIR/rank<RANK>.pt."""
    rank, port, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        torch.save(run_all(rank, world), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def launch(worker_module: str, out: Path, run_all, world: int, timeout: float = 180) -> tuple[dict, list[dict]]:
    port = str(free_port())
    logs = [out / f"rank{r}.log" for r in range(world)]
    procs = []
    for r in range(world):
        with open(logs[r], "w") as log:  # files, not pipes: a chatty rank cannot block on a full pipe
            procs.append(subprocess.Popen([sys.executable, "-m", worker_module, str(r), port, str(out)],
                                          cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
    single = run_all(0, 1)  # while the ranks start up
    try:
        for p in procs:
            p.wait(timeout=timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log.read_text()[-3000:]
    return single, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]
