"""Operator faults through the CLI: a full disk, an unwritable output, a missing data root, a file
deleted between manifest and cache, and checkpoints that would run code. Each must end with one
`medssl <cmd>: error:` line naming the path, no traceback, a non-zero exit - and nothing half-written."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import torch

from tests.hospital.helpers import (
    REPO,
    assert_clean_error,
    check_artefacts_complete,
    medssl,
    medssl_env,
    medssl_many,
)

#: Fallback where tmpfs cannot be mounted (no root / no CAP_SYS_ADMIN): renames onto the "disk" fail
#: with ENOSPC, as the final step of a write to a full disk would.
_FULL_DISK_SITE = '''
import errno, os
_disk = os.environ["MEDSSL_TEST_FULL_DISK"]
_replace = os.replace
def replace(src, dst, *a, **k):
    if os.path.abspath(os.fspath(dst)).startswith(_disk):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(dst))
    return _replace(src, dst, *a, **k)
os.replace = replace
'''


def _mount_tmpfs(folder: Path, options: str) -> bool:
    try:
        return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                              capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture
def full_disk(tmp_path, pipeline):
    """(folder on a 1 MiB disk, env for medssl subprocesses). A real tmpfs when it can be mounted."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if _mount_tmpfs(disk, "size=1m"):
        yield disk, pipeline["env"]
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)
        return
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_FULL_DISK_SITE)
    env = dict(pipeline["env"], PYTHONPATH=f"{site}{os.pathsep}{REPO}", MEDSSL_TEST_FULL_DISK=str(disk))
    yield disk, env


def test_full_disk_stops_cache_and_pretraining_with_one_line(full_disk, pipeline):
    disk, env = full_disk
    cache, run = disk / "cache", disk / "pretrain"
    # 256 px: the cache needs ~3 MiB; a checkpoint ~90 MiB
    procs = medssl_many([
        ["cache", pipeline["split"], "--out", cache, "--size", 256, "--workers", 1, "--no-progress"],
        ["pretrain", "-c", pipeline["pretrain"] / "config.yaml", "--set", f"trainer.output_dir={run}"],
    ], env)
    for proc, where in zip(procs, (cache, run)):
        line = assert_clean_error(proc, where)
        assert "disk" in line and "full" in line, line
        check_artefacts_complete(disk)
    assert not (cache / "meta.json").exists()  # the cache is not marked finished
    assert not list(cache.glob("shard-*.npy"))
    assert not (run / "checkpoints" / "last.ckpt").exists()


def test_unwritable_outputs_are_named(tmp_path, pipeline):
    env = pipeline["env"]
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    jobs = [
        ["manifest", "build", "--format", "dicom-dir", pipeline["source"], "--labels",
         pipeline["source"] / "labels.csv", "--out", a_file / "manifest.csv"],
        ["split", pipeline["split"], "--out", a_file / "sub" / "split.csv"],
        ["cache", pipeline["split"], "--out", a_file / "cache", "--workers", 1],
    ]
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    mounted = _mount_tmpfs(readonly, "ro,size=1m")
    try:
        if mounted:  # root ignores permission bits; a read-only file system stops even root
            jobs.append(["cache", pipeline["split"], "--out", readonly / "cache", "--workers", 1])
        procs = medssl_many(jobs, env)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(readonly)], capture_output=True, check=False)
    for proc, job in zip(procs, jobs):
        out = job[job.index("--out") + 1]
        line = assert_clean_error(proc, out)
        assert "file, not a folder" in line or "read-only" in line.lower(), line
    assert a_file.read_text() == "not a folder"


def test_missing_data_root_is_named(tmp_path, pipeline):
    gone = tmp_path / "unmounted_share"
    procs = medssl_many([
        ["manifest", "build", "--format", "dicom-dir", gone, "--out", tmp_path / "m.csv"],
        ["cache", pipeline["split"], "--out", tmp_path / "cache", "--data-root", gone, "--workers", 1],
    ], pipeline["env"])
    for proc in procs:
        assert_clean_error(proc, gone, code=2)
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "cache" / "meta.json").exists()


def test_file_deleted_between_manifest_and_cache_is_named(tmp_path):
    from medssl.data.phantom import write_phantoms

    src = tmp_path / "src"
    truth = write_phantoms(src, n_patients=2, size=32, studies_per_patient=1, seed=1)
    env = medssl_env(MEDSSL_HOME=str(tmp_path / "home"))
    manifest = tmp_path / "manifest.csv"
    medssl("manifest", "build", "--format", "dicom-dir", src, "--out", manifest, env=env, check=True)
    victim = src / truth["path"].iloc[1]
    victim.unlink()
    proc = medssl("cache", manifest, "--out", tmp_path / "cache", "--size", 32, "--workers", 1, env=env)
    assert_clean_error(proc, victim, code=2)
    assert not (tmp_path / "cache" / "meta.json").exists()


class _Payload:
    """Unpickling this runs a shell command: what a malicious 'checkpoint' from the internet does."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_that_run_code_are_refused_by_resume_and_init(tmp_path, pipeline):
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    real = torch.load(pipeline["pretrain"] / "checkpoints" / "last.ckpt", weights_only=True)
    evil_ckpt, evil_pt = tmp_path / "evil.ckpt", tmp_path / "evil.pt"
    torch.save({**real, "payload": _Payload(marker)}, evil_ckpt)  # a real checkpoint plus a payload
    torch.save({"state_dict": {}, "payload": _Payload(marker)}, evil_pt)
    torch.load(evil_pt, weights_only=False)  # the payload is live: a plain load runs it
    assert marker.exists()
    marker.unlink()

    run = tmp_path / "resumed"
    procs = medssl_many([
        ["pretrain", "-c", pipeline["pretrain"] / "config.yaml", "--set", f"trainer.output_dir={run}",
         "--resume", evil_ckpt],
        ["finetune", *pipeline["common"], "--init", evil_pt, "--mode", "linear", "--out", tmp_path / "ft"],
    ], pipeline["env"])
    for proc, path in zip(procs, (evil_ckpt, evil_pt)):
        line = assert_clean_error(proc, path, code=2)
        assert "weights-only" in line or "refused" in line, line
    assert not marker.exists()
    assert not (run / "checkpoints" / "last.ckpt").exists() and not (tmp_path / "ft" / "result.json").exists()
    shutil.rmtree(tmp_path / "ft", ignore_errors=True)


def test_system_error_messages_are_one_line_with_the_path_and_a_fix():
    import errno

    from medssl.cli import _os_error, os_error_message

    line = os_error_message(OSError(errno.ENOSPC, "No space left on device", "/data/run/last.ckpt"))
    assert line == "/data/run/last.ckpt: No space left on device (the disk is full: free space or choose " \
                   "an output folder on another disk)"
    # a DataLoader worker re-raises an OSError whose message is the worker's whole traceback
    worker = OSError("Caught FileNotFoundError in DataLoader worker process 0.\nOriginal Traceback (most "
                     "recent call last):\n  File \"x.py\", line 1\nFileNotFoundError: [Errno 2] No such file: "
                     "'/nfs/cxr/1.dcm'\n")
    assert os_error_message(worker) == "FileNotFoundError: [Errno 2] No such file: '/nfs/cxr/1.dcm' " \
                                       "(check the path and rerun)"
    cause = PermissionError(errno.EACCES, "Permission denied", "/out")
    try:
        try:
            raise cause
        except PermissionError as e:
            raise RuntimeError("writer failed") from e
    except RuntimeError as wrapped:
        assert _os_error(wrapped) is cause
    try:
        try:
            raise cause
        except PermissionError:
            raise KeyError("a bug while handling it")  # context only: a bug keeps its traceback
    except KeyError as bug:
        assert _os_error(bug) is None
