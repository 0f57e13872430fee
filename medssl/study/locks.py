"""Per-cell lock files: no two processes train the same study cell, even on different machines.

A process that is about to run a cell creates `cells/<key>.lock` with O_CREAT|O_EXCL (atomic on
local disks and on NFSv3+/Lustre/GPFS: exactly one creator succeeds) holding JSON
{host, pid, boot_id, time, shard, token}, and removes it when the cell is finished or failed.
The sharded study never gives one cell to two shards (a partition); the lock guards against a
duplicate launch of the same shard (a resubmitted job, a second terminal) and against a plain
`medssl study` run beside shards.

A lock another process left behind is handled by what can be known about its holder:
- same host, holder dead (no such pid, the pid now belongs to a process started after the lock was
  taken, or the host rebooted since): the lock is stale and is taken over, with a warning;
- same host, holder alive, or another host and younger than the timeout: the cell is held, skipped
  and listed (the holder is probably still working on it);
- another host and older than the timeout: reported as probably stale (skipped, listed, and the
  command exits non-zero). Liveness on another machine cannot be checked, so the lock is never
  broken automatically: delete it by hand once that process is known to be gone.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: Default age after which a lock of another host is reported as probably stale (`--lock-timeout`).
DEFAULT_TIMEOUT_S = 24 * 3600.0
#: A live pid whose process started this long after the lock was taken is a reused pid, not the holder.
PID_START_SLACK_S = 30.0
#: A lock file that does not parse (its creator died between create and write) counts as held for this long.
UNREADABLE_GRACE_S = 60.0


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _process_start(pid: int) -> float | None:
    """Start time of a live process (epoch seconds, Linux /proc), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])   # field 22 (starttime), after "pid (comm)"
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def holder_alive(holder: dict) -> bool:
    """Whether the process named by a lock of THIS host still exists and is the one that took it."""
    if holder.get("boot_id") and _boot_id() and holder["boot_id"] != _boot_id():
        return False   # the host rebooted since: every pid of then is gone
    try:
        pid = int(holder["pid"])
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass   # exists, owned by someone else
    except (KeyError, TypeError, ValueError, OverflowError):
        return False
    started = _process_start(pid)
    # a pid reused by a process started after the lock was written is not the holder; the slack covers
    # the coarse start time /proc gives (boot time + ticks, shifted by clock adjustments since boot)
    return started is None or started <= float(holder.get("time", 0)) + PID_START_SLACK_S


def read_lock(path: str | os.PathLike) -> dict | None:
    """The lock's JSON, or None when it is gone or not (yet) complete."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


@dataclass
class LockResult:
    """Outcome of `acquire`: acquired (then `release()` when done), or why not."""
    path: Path
    acquired: bool
    holder: dict = field(default_factory=dict)   # the other process's lock content when not acquired
    stale: bool = False                          # another host's lock older than the timeout
    took_over: dict | None = None                # the dead holder whose lock was taken over
    token: str = ""

    def describe(self) -> dict:
        """What a shard report lists for a cell it could not take: key, lock file, holder, age."""
        h = self.holder
        since = h.get("time")
        return {"key": self.path.name[:-len(".lock")], "lock": str(self.path), "host": h.get("host"),
                "pid": h.get("pid"), "shard": h.get("shard"),
                "since": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since)) if since else None,
                "age_h": round((time.time() - since) / 3600, 2) if since else None}

    def release(self) -> None:
        """Remove the lock if it is still ours (never another process's lock)."""
        if not self.acquired:
            return
        held = read_lock(self.path)
        if held is not None and held.get("token") == self.token:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        self.acquired = False


def _create(path: Path, info: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, (json.dumps(info, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _take_over(path: Path, holder: dict) -> bool:
    """Move a dead holder's lock aside; True when exactly that lock was removed.

    Renaming is atomic, so of two processes judging the same lock stale only one moves it; the
    other may move the NEW lock the winner just created, sees a token it did not judge and puts it
    back (link fails if a third lock appeared meanwhile: then that one stands).
    """
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    moved = read_lock(aside)
    if moved is not None and moved.get("token") == holder.get("token"):
        aside.unlink(missing_ok=True)
        return True
    try:
        os.link(aside, path)
    except FileExistsError:
        pass
    aside.unlink(missing_ok=True)
    return False


def acquire(path: str | os.PathLike, *, timeout_s: float = DEFAULT_TIMEOUT_S, shard: str | None = None) -> LockResult:
    """Try once (no waiting) to take the lock at `path`; see the module doc for stale locks."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    took_over = None
    for _ in range(3):   # create; or take over a dead holder's lock and create again
        token = secrets.token_hex(8)
        info = {"host": host, "pid": os.getpid(), "boot_id": _boot_id(), "time": time.time(), "shard": shard,
                "token": token}
        if _create(path, info):
            return LockResult(path, True, took_over=took_over, token=token)
        holder = read_lock(path)
        if holder is None:
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue   # released meanwhile: try again
            # a creator that died between create and write leaves an empty file: report it, never ignore
            return LockResult(path, False, holder={"host": None, "pid": None, "time": mtime},
                              stale=time.time() - mtime > UNREADABLE_GRACE_S)
        if holder.get("host") == host and not holder_alive(holder):
            if _take_over(path, holder):
                log.warning("%s: taking over the lock of pid %s on this host (that process is gone)",
                            path, holder.get("pid"))
                took_over = holder
            continue
        age = time.time() - float(holder.get("time", 0))
        stale = holder.get("host") != host and age > timeout_s
        return LockResult(path, False, holder=holder, stale=stale)
    holder = read_lock(path) or {}
    return LockResult(path, False, holder=holder)
