"""Atomic artefact writes: write to a temp file beside the target, fsync, rename.

A reader never sees a half-written file under the final name; a killed writer leaves at
most a `*.tmp` file that the next run ignores and overwrites.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from medssl.errors import OutputError


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path in the target's directory; on success fsync it and rename onto target.

    The caller writes the file at the yielded path (any library that accepts a path). On an
    exception the temp file is removed and the target is left untouched.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as e:
        raise OutputError(f"cannot write {target}: {_mkdir_reason(target, e)}. "
                          "Choose a writable output directory.") from e
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        hint = "the disk is full; free space or choose another output directory" \
            if e.errno == errno.ENOSPC else "check the output directory"
        raise OutputError(f"cannot write {target}: {e.strerror or e} ({hint})") from e
    except Exception as e:
        # Libraries report a full disk in their own words (torch.save: "RuntimeError: unexpected
        # pos"); name the real cause when the target's file system has (almost) no room left.
        free = _free_bytes(target.parent)
        tmp.unlink(missing_ok=True)
        if free is not None and free < _LOW_SPACE:
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise OutputError(f"cannot write {target}: only {free / 2**20:.1f} MiB free on its disk, so the "
                              f"disk is most likely full ({type(e).__name__}: {first}); free space or choose "
                              "another output directory") from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _mkdir_reason(target: Path, e: OSError) -> str:
    """Why the target's folder cannot be made: "X is a file, not a folder" beats EEXIST/ENOTDIR."""
    for parent in target.parents:
        if parent.exists():
            return e.strerror or str(e) if parent.is_dir() else f"{parent} is a file, not a folder"
    return e.strerror or str(e)


#: Below this much free space a failed write is reported as a full disk.
_LOW_SPACE = 64 << 20


def _free_bytes(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return None
    return st.f_bavail * st.f_frsize


def write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text(target: str | os.PathLike, text: str) -> Path:
    return write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike, obj, *, indent: int = 2) -> Path:
    return write_text(target, json.dumps(obj, indent=indent, sort_keys=True, default=str) + "\n")


def write_table(target: str | os.PathLike, df) -> Path:
    """Write a pandas DataFrame as CSV, gzipped CSV or Parquet (by suffix), atomically, without the index."""
    target = Path(target)
    with atomic_path(target) as tmp:
        if target.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            # the temp name ends in .tmp, so pandas cannot infer compression from it
            df.to_csv(tmp, index=False, compression="gzip" if target.suffix == ".gz" else None)
    return target
