"""`medssl <command>`: a thin argparse layer over the package's functions.

Each sub-command lives in `medssl/commands/<name>.py` with `register(subparsers)`; heavy
imports (torch, pydicom) happen inside the command, so `medssl --help` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys

from medssl import __version__
from medssl.errors import MedsslError

#: Sub-command modules in the order the data flows; missing ones are skipped.
COMMAND_MODULES = (
    "manifest", "split", "import_budgets", "cache", "inspect", "augment", "pretrain", "export_backbone",
    "finetune", "evaluate", "analyze", "export", "study", "demo", "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medssl",
        description="Self-supervised pretraining and label-efficiency studies for medical images. "
                    "Data flows: manifest -> split -> cache -> pretrain -> finetune/evaluate -> study.",
        epilog="Commands that read a config take --config FILE and --set KEY=VALUE [KEY=VALUE ...] "
               "(repeatable; give positional arguments before --set, or end its list with --). "
               "`medssl COMMAND --help` shows examples.",
    )
    parser.add_argument("--version", action="version", version=f"medssl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and full tracebacks for system errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"medssl.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"medssl.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


#: What to do about an OSError, by errno (the message names the path; this says the fix).
_OS_ERROR_HINTS = {
    errno.ENOSPC: "the disk is full: free space or choose an output folder on another disk",
    errno.EDQUOT: "the disk quota is exhausted: free space or choose another output folder",
    errno.EACCES: "permission denied: choose a folder you can write to (or fix its permissions)",
    errno.EPERM: "operation not permitted: choose a folder you can write to (or fix its permissions)",
    errno.EROFS: "the file system is read-only: choose a writable output folder",
    errno.ENOENT: "no such file or folder: check the path (and that the data are mounted)",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.EISDIR: "the path is a folder where a file was expected: check the path",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n) or use fewer workers",
    errno.ENAMETOOLONG: "the path is too long: choose a shorter path",
    errno.EIO: "input/output error: the disk or network file system failed; check it and rerun",
}


def _os_error(e: BaseException) -> OSError | None:
    """The OSError an exception was explicitly raised from (`raise X from oserror`), if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__  # not __context__: an error raised while handling one may be a plain bug
    return None


def os_error_message(e: OSError) -> str:
    """One line: the path(s), the system's reason, and what to do."""
    paths = " -> ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    # an OSError re-raised from a DataLoader worker carries the worker's traceback as its message
    reason = e.strerror or (lines[-1] if lines else type(e).__name__)
    hint = _OS_ERROR_HINTS.get(e.errno, "check the path and rerun")
    return f"{paths + ': ' if paths else ''}{reason} ({hint})"


def _quiet_third_party() -> None:
    """Lightning logs hardware/tip banners at INFO through its own handler (so twice with ours) and
    emits deprecation chatter from its internals: keep medssl's own progress readable; -v shows all."""
    import warnings

    # Lightning sets the level of "lightning.pytorch" itself when it is imported (after this runs),
    # so quiet the child loggers that emit the banners; their own level is checked first.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch.accelerators.cuda", "lightning.pytorch.callbacks.model_summary",
                 "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"lightning\..*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def main(argv: list[str] | None = None) -> int:
    """Run a sub-command. Exit codes: 0 ok, 2 a medssl error (bad input/config), 1 a system error
    (disk full, permissions, missing path; one line, no traceback unless -v), 130 interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:
        _quiet_third_party()
    try:
        return int(args.func(args) or 0)
    except MedsslError as e:
        print(f"medssl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medssl {args.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, MemoryError) as e:
        if args.verbose:
            raise
        if isinstance(e, MemoryError):
            print(f"medssl {args.command}: error: out of memory (use a smaller trainer.batch_size, "
                  "cache.size or fewer workers)", file=sys.stderr)
        else:
            print(f"medssl {args.command}: error: {os_error_message(e)}", file=sys.stderr)
        return 1
    except Exception as e:
        # A library wrapped a system error (e.g. a DataLoader worker's OSError): report that one.
        cause = _os_error(e)
        if cause is None or args.verbose:
            raise
        print(f"medssl {args.command}: error: {os_error_message(cause)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
